"""What a fresh process pays: ``import zoo`` and ``zoo --help``/``--version`` load no torch, pandas or zarr, and
``zoo info`` (no weights read) loads no torch, and sampling a saved generator (``generators.load(run).sample``) loads no
Lightning (it is only for fitting)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import zoo
from zoo.commands.main import main as zoo_main

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "pandas", "zarr", "lightning", "numpy")


def _run(code: str) -> subprocess.CompletedProcess:
    """``python -c code`` in a fresh process that imports this checkout's packages."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)


def _loaded(code: str) -> list[str]:
    """The heavy top-level packages in ``sys.modules`` after running ``code`` in a fresh process."""
    r = _run(f"{code}\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))")
    assert r.returncode == 0, r.stderr[-3000:]
    return eval(r.stdout.strip().splitlines()[-1])


def test_version_is_the_package_version(capsys):
    """``zoo.__version__`` is pyproject.toml's version; ``zoo --version`` prints it and exits 0."""
    declared = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert declared and zoo.__version__ == declared.group(1)
    assert zoo_main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"zoo (wszoo) {zoo.__version__}"


def test_import_zoo_loads_no_heavy_package():
    """``import zoo`` is cheap (the public names are imported on first use) and ``zoo --help`` stays so."""
    assert _loaded("import zoo") == []
    assert _loaded("from zoo.commands.main import main\nassert main(['--help']) == 0\nmain(['--version'])") == []


def test_lazy_names_are_the_real_objects():
    """The lazily exported names are the defining modules' objects, subpackages are reachable as attributes,
    and an unknown name is an AttributeError."""
    r = _run(
        "import zoo, zoo.store, zoo.layout\n"
        "assert zoo.open is zoo.store.open and zoo.Layout is zoo.layout.Layout\n"
        "import zoo.training.build as b\nassert zoo.build is b.build and zoo.rebasin.__name__ == 'zoo.rebasin'\n"
        "assert set(zoo.__all__) <= set(dir(zoo))\n"
        "try:\n    zoo.nope\nexcept AttributeError:\n    print('ok')"
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def test_zoo_info_loads_no_torch(tiny_zoo):
    """``zoo info`` reads metadata only (zoo.store.meta, through zoo.store.localread): it answers in a fresh process
    importing numpy alone, ~0.3 s of CPU instead of ~3 s (docs/startup.md), and prints the same summary as the
    torch-backed reader."""
    code = f"from zoo.commands.main import main\nassert main(['info', {tiny_zoo.path!r}, '--json']) == 0"
    r = _run(f"{code}\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))")
    assert r.returncode == 0, r.stderr[-3000:]
    summary, loaded = r.stdout.strip().splitlines()[-2:]
    assert eval(loaded) == ["numpy"]  # no torch, lightning, pandas or zarr (zoo.store.localread): ~0.3 s of CPU
    from zoo.store import summarize

    assert json.loads(summary) == summarize(tiny_zoo)  # the full reader (a ZooMeta too) agrees
    assert json.loads(summary)["layouts"] == {
        k: {"models": 2, "parameters": v.size, "arch": "mlp"} for k, v in tiny_zoo.layouts.items()
    }


def test_the_sample_command_loads_no_fitting_or_diagnosing_stack():
    """``zoo sample`` imports what sampling and writing a zoo need: not Lightning, Hydra/OmegaConf, scipy (Re-Basin,
    diagnose: ~0.75 s of CPU, only for INR zoos' nearest renders), sklearn or dask (docs/generators-resnet.md)."""
    r = _run("import generators.commands.sample, sys\nprint(sorted({m.split('.')[0] for m in sys.modules}))")
    assert r.returncode == 0, r.stderr[-3000:]
    loaded = set(eval(r.stdout.strip().splitlines()[-1]))
    assert {"torch", "generators"} <= loaded
    assert not loaded & {"lightning", "hydra", "omegaconf", "scipy", "sklearn", "dask", "matplotlib"}
