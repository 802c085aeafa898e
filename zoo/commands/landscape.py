"""``zoo landscape PATH [key=value ...]`` and ``zoo phases PATH --out DIR [key=value ...]``.

Settings: conf/landscape/default.yaml, then the zoo's recipe ``landscape:`` block, then overrides with the
same keys, dotted for cut-offs: ``probes=64 phases.mc_tol=0.05``.
"""

from __future__ import annotations

import argparse
import json

from omegaconf import OmegaConf

from zoo.app.args import ArgumentParser, parse
from zoo.app.config import doc_lines
from zoo.app.schema import help_rows
from zoo.errors import ZooError
from zoo.landscape.compute import LandscapeConfig, compute_landscape, landscape_cells, resolve_config
from zoo.landscape.plot import phase_diagram
from zoo.store import open as open_zoo


def parse_overrides(items: list[str]) -> dict:
    """key=value strings (dotted for nesting) -> nested dict with YAML-typed values."""
    bad = [s for s in items if "=" not in s or s.startswith("=")]
    if bad:
        raise ZooError(f"overrides must look like key=value, got {bad}")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(items), resolve=True)
    except Exception as e:  # omegaconf grammar errors: report in one line
        raise ZooError(f"bad override {items}: {' '.join(str(e).split())}") from None


def _config(z, overrides: list[str]) -> dict:
    """Defaults, then the zoo's own recipe ``landscape:`` block (if it was built with one), then overrides."""
    recipe = dict((z.config.get("recipe") or {}).get("landscape") or {})
    merged = OmegaConf.merge(OmegaConf.create(recipe), OmegaConf.create(parse_overrides(overrides)))
    return resolve_config(OmegaConf.to_container(merged, resolve=True))


def _keys_epilog(cutoffs_only: bool = False) -> str:
    """Every key of conf/landscape/default.yaml with its type, default and doc (its typed config)."""
    lines = [
        "keys of conf/landscape/default.yaml (defaults; the zoo recipe's landscape: block, then KEY=VALUE"
        " override them):"
    ]
    for k, kind, v, doc in help_rows(LandscapeConfig):
        if not cutoffs_only or k.startswith("phases."):
            lines += doc_lines(f"  {k}={v}", f"({kind}) {doc}")
    return "\n".join(lines)


def main_landscape(argv: list[str]) -> int:
    """compute loss-landscape metrics and phases"""
    p = ArgumentParser(
        prog="zoo landscape",
        description="compute loss-landscape metrics and phases of a zoo",
        epilog=_keys_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", help="zoo store (local path or fsspec URL)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of conf/landscape/default.yaml")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    a = parse(p, argv, intermixed=True)
    if a is None:  # --help
        return 0
    resolve_config(parse_overrides(a.overrides))  # bad keys fail before the zoo is opened
    z = open_zoo(a.path)
    cfg = _config(z, a.overrides)
    df = compute_landscape(z, cfg, progress=not a.quiet)
    counts = df["phase"].replace("", "unlabelled").value_counts().to_dict()
    times = {k: round(v, 2) for k, v in df.attrs["timings"].items()}
    print(
        f"zoo {a.path}: landscape of {int(df['train_loss'].notna().sum())} models written (table 'landscape');"
        f" phases per model {counts}; seconds {times}"
    )
    stem = a.path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".zarr")
    print(f"next: zoo phases {a.path} --out data/runs/phases-{stem}   (phases.png + phases.json)")
    return 0


def main_phases(argv: list[str]) -> int:
    """draw the phase diagram of a zoo (PNG + JSON)"""
    p = ArgumentParser(
        prog="zoo phases",
        description="draw a zoo's phase diagram (PNG + JSON)",
        epilog=_keys_epilog(cutoffs_only=True),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", help="zoo store with landscape metrics (run `zoo landscape PATH` first)")
    p.add_argument("--out", required=True, help="folder for phases.png and phases.json")
    p.add_argument("--name", default="phases", help="file stem (default: phases)")
    p.add_argument("overrides", nargs="*", help="cut-off overrides, e.g. phases.mc_tol=0.05")
    a = parse(p, argv, intermixed=True)
    if a is None:  # --help
        return 0
    resolve_config(parse_overrides(a.overrides))
    z = open_zoo(a.path)
    cfg = _config(z, a.overrides)
    cells, h_cut = landscape_cells(z, cfg)
    extra = {"zoo": z.path, "recipe": (z.config.get("recipe") or {}).get("name"), "hessian_threshold": h_cut}
    png, js = phase_diagram(cells, a.out, cfg["phases"], extra, name=a.name)
    data = json.loads(js.read_text())
    print(
        f"wrote {png} and {js}: {len(cells)} cells, phases {data['phase_counts']},"
        f" marginal {len(data['marginal_cells'])} (interval crosses a cut-off: hatched)"
    )
    return 0
