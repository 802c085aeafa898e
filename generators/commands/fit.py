"""``zoo fit generator=NAME zoo=PATH [overrides]``: fit a weight generator and write its run folder.

It composes ``conf/fit.yaml`` with ``conf/generator/<NAME>.yaml`` (Hydra overrides; ``trainer.*``
keys go to the Lightning Trainer) and writes the run folder (``zoo sample`` samples it).
"""

from __future__ import annotations

import json

from generators.fit import FitConfig, fit_config
from generators.registry import get
from zoo.app.config import cfg_request, compose, config_yaml, help_text
from zoo.app.trainer import checked_overrides

FIT_USAGE = """usage: zoo fit generator=NAME zoo=PATH [out=DIR] [key=value ...]
  generators: {generators}
  e.g. zoo fit generator=dwf zoo=data/zoos/dwf-mlp-digits.zarr out=data/runs/dwf generator.condition=learning_rate
       zoo fit generator=dwf zoo=Z.zarr generator.canonical=false trainer.max_epochs=10
  configs: conf/fit.yaml, conf/generator/"""


def main(argv: list[str]) -> int:
    """fit a weight generator on a zoo (Hydra overrides)"""
    if not argv or argv[0] in ("-h", "--help"):
        print(
            help_text(
                "fit",
                FIT_USAGE.splitlines()[0],
                [e.strip().removeprefix("e.g. ") for e in FIT_USAGE.splitlines()[2:-1]],
                FitConfig,
                {"generator": lambda name: get(name).schema},
            )
        )
        return 0 if argv else 2
    argv, show = cfg_request(argv)
    cfg = compose("fit", checked_overrides(argv, "fit", ("generator",)))
    if show:  # --cfg job: the composed config, nothing run
        print(config_yaml(cfg))
        return 0
    g = fit_config(cfg)
    summary = json.loads((g.run_dir / "summary.json").read_text())
    print(
        f"zoo fit: {summary['generator']} on {summary['zoo']} ({summary['train_models']} train / "
        f"{summary['val_models']} val models, weights {summary['canonical']}): {summary['steps']} steps in "
        f"{summary['fit_seconds']:.1f}s, best {summary['monitor']} {summary['best_score']:.4g}\n"
        f"run in {summary['out']} (model.safetensors, summary.json, metrics.csv); next: "
        + summary.get("next", f"zoo sample {summary['out']} -n 100 --out data/zoos/{summary['generator']}-samples.zarr")
    )
    return 0
