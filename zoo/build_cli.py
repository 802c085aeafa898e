"""``zoo build [hydra overrides]``: compose conf/build.yaml and build the zoo."""
from __future__ import annotations

import json

from .build import build
from .config import compose
from .errors import ZooError
from .store import summarize


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: zoo build [key=value ...]\n  e.g. zoo build out=data/zoos/x.zarr recipe.widths=[8,16]"
              " recipe.seeds=2 recipe.epochs=5\n  configs: conf/build.yaml, conf/recipe/*.yaml (recipe=NAME)")
        return 0
    cfg = compose("build", argv)
    if str(cfg.get("out", "")).startswith("memory://"):
        raise ZooError(f"out={cfg['out']} is an in-memory store that vanishes when this command exits;"
                       " build into a path or a persistent fsspec URL (memory:// works from Python)")
    z = build(cfg)
    s = summarize(z)
    print(f"zoo {s['path']}: {s['models']} models, {s['done']} done, {s['diverged']} diverged,"
          f" {s['pending']} pending; {s['score']} {s['score_min']} .. {s['score_max']}")
    return 0 if s["pending"] == 0 else 1


if __name__ == "__main__":
    print(json.dumps(compose("build", [])))
