"""Packaged configs: a wheel carries conf/ as zoo/conf, and a wheel install (not only an editable one) builds a zoo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import zoo
from zoo.app.config import find_conf_dir

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "setup.py", "README.md", "zoo", "wsl", "generators", "conf"]


def test_conf_dir_env_override_wins(monkeypatch, tmp_path):
    """WSZOO_CONF points the CLI at another config folder; without it a checkout uses its top-level conf/."""
    monkeypatch.setenv("WSZOO_CONF", str(tmp_path))
    assert find_conf_dir() == tmp_path
    monkeypatch.delenv("WSZOO_CONF")
    assert find_conf_dir() == REPO / "conf"


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run a command, failing the test with its output when it fails."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
def test_wheel_install_builds_tiny_zoo(tmp_path):
    """Build a wheel from a copy of the sources, install it into a fresh venv, run `zoo build` outside the repo."""
    src = tmp_path / "src"  # a copy, so the build's build/ and egg-info never touch the shared checkout
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WSZOO_CONF")}
    env["OMP_NUM_THREADS"] = "1"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        tmp_path,
        env,
    )
    (wheel,) = (tmp_path / "dist").glob("wszoo-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("zoo/conf/")}
    expected = {"zoo/conf/" + p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml")}
    assert expected and shipped == expected

    # A fresh venv holding only the wheel; the dependencies come from this interpreter's site-packages through a
    # plain path in a .pth file (a path line does not run that folder's own .pth files, so the checkout's editable
    # finder stays out).
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    vpython = venv / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", str(vpython), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        tmp_path,
        env,
    )
    vsite = Path(
        _run([str(vpython), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env).strip()
    )
    (vsite / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run(
        [str(vpython), "-c", "import zoo, zoo.app.config; print(zoo.__file__); print(zoo.app.config.CONF_DIR)"],
        work,
        env,
    ).split()
    assert Path(where[0]).resolve().is_relative_to(vsite.resolve()), where
    assert not Path(where[0]).resolve().is_relative_to(REPO)
    assert Path(where[1]).resolve() == (vsite / "zoo" / "conf").resolve(), where  # the shipped configs

    out = tmp_path / "tiny.zarr"
    _run([str(venv / "bin" / "zoo"), "build", "recipe=tiny", f"out={out}", "progress=false"], work, env)
    built = zoo.open(str(out))
    assert len(built.models) == 4 and (built.models["status"] == "done").all()
    assert not (work / "data").exists()  # the out= given was used, nothing written relative to the repo layout
