"""One CLI style: the shared options (zoo, out, overwrite, threads, seed) are written the same way for every
command, today's spellings still work, and the other style elsewhere is a one-line hint (exit 2), not a lexer
error or a traceback."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

import zoo
from tests.conftest import run_cli
from zoo.app.config import CONF_DIR
from zoo.app.style import SHARED, hydra_shared_keys, normalize
from zoo.commands.main import main as zoo_main
from zoo.errors import ZooError


@pytest.mark.parametrize(
    ("command", "argv", "parsed"),
    [
        (
            "build",
            ["--out", "x.zarr", "--overwrite", "--threads=2", "recipe=tiny"],
            ["out=x.zarr", "overwrite=true", "threads=2", "recipe=tiny"],
        ),
        ("build", ["out=x.zarr", "overwrite=true"], ["out=x.zarr", "overwrite=true"]),  # today's spelling unchanged
        ("fit", ["generator=dwf", "--zoo=z.zarr", "--seed", "3"], ["generator=dwf", "zoo=z.zarr", "seed=3"]),
        ("train", ["-m", "encoder=mlp,nfn", "--zoo", "z.zarr"], ["-m", "encoder=mlp,nfn", "zoo=z.zarr"]),
        (
            "sample",
            ["run", "out=s.zarr", "overwrite=true", "seed=2", "-n", "5"],
            ["run", "--out", "s.zarr", "--overwrite", "--seed", "2", "-n", "5"],
        ),
        ("sample", ["run", "overwrite=false", "--out", "s.zarr"], ["run", "--out", "s.zarr"]),
        ("diagnose", ["s.zarr", "zoo=t.zarr"], ["s.zarr", "--train", "t.zarr"]),
        ("diagnose", ["s.zarr", "--train", "t.zarr", "--out", "d"], ["s.zarr", "--train", "t.zarr", "--out", "d"]),
        ("nowcast", ["run", "zoo=z.zarr", "out=o.zarr"], ["run", "--zoo", "z.zarr", "--out", "o.zarr"]),
        ("info", ["zoo=z.zarr", "--json"], ["z.zarr", "--json"]),
        ("align", ["--zoo", "z.zarr", "threads=1"], ["z.zarr", "--threads", "1"]),
        (
            "landscape",
            ["z.zarr", "landscape.points=5", "weird=path=x"],
            ["z.zarr", "landscape.points=5", "weird=path=x"],
        ),
    ],
)
def test_both_spellings_of_the_shared_options_reach_the_command(command, argv, parsed):
    assert normalize(command, argv) == parsed


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["build", "--recipe", "tiny"], "write recipe=tiny instead of --recipe"),
        (["align", "z.zarr", "overwrite=true"], "zoo align has no overwrite setting"),
        (["info", "z.zarr", "out=x"], "zoo info has no out setting"),
        (["sample", "run", "overwrite=maybe"], "write overwrite=true or overwrite=false"),
        (["sample", "run", "zoo=z.zarr"], "zoo sample reads no zoo"),
        (["info", "zoo=a.zarr", "zoo=b.zarr"], "reads one zoo"),
    ],
)
def test_the_other_style_where_it_is_not_accepted_is_a_one_line_hint(argv, hint, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert zoo_main(argv) == 2
    err = capsys.readouterr().err
    assert hint in err and err.count("\n") == 1 and "Traceback" not in err and "Lexer" not in err
    assert list(tmp_path.iterdir()) == []  # refused before anything is written


def test_zoo_build_with_option_style_out_builds_there(tmp_path, capsys):
    """``zoo build --out X`` (a lexer error before) builds into X, as ``out=X`` does; ``zoo info zoo=X`` reads it."""
    out = tmp_path / "t.zarr"
    assert (
        zoo_main(["build", "--out", str(out), "recipe=tiny", "recipe.widths=[8]", "recipe.seeds=1", "progress=false"])
        == 0
    )
    assert len(zoo.open(str(out))) == 1
    capsys.readouterr()
    assert zoo_main(["info", f"zoo={out}"]) == 0
    assert str(out) in capsys.readouterr().out


@pytest.mark.parametrize("command", ["align", "sample", "diagnose", "nowcast", "lcsc"])
def test_every_command_runs_one_torch_thread_by_default(command, capsys):
    """The same threads default for every command (build/train/fit/landscape: ``threads: 1`` in their configs)."""
    assert zoo_main([command, "--help"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("--threads"))
    assert "(default: 1)" in line, line


def test_python_api_threads_apply_to_the_call_only():
    """``torch_threads`` (generators.diagnose's ``threads=``, default 1) sets torch's count for the block and
    restores it after, on an error too; a bad count is a one-line error."""
    import inspect

    import torch

    import generators
    from zoo.app.runtime import THREADS, torch_threads
    from zoo.errors import ZooError

    assert inspect.signature(generators.diagnose).parameters["threads"].default == THREADS == 1
    before = torch.get_num_threads()
    other = 2 if before != 2 else 3
    with torch_threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(other):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with torch_threads(0):
        assert torch.get_num_threads() == before
    for bad in (-1, 1.5, True):
        with pytest.raises(ZooError, match="threads must be"), torch_threads(bad):
            pass


def test_python_api_runs_on_one_thread_unless_told(monkeypatch):
    """The library's entry points that run torch (zoo.build's training, wsl.train, generators.fit_config,
    Generator.sample and sample_zoo) default to 1 thread like the commands, even for a config without a threads
    key, and restore the caller's count after; threads=null/0 leaves it."""
    import importlib
    import inspect

    import torch
    from torch import nn

    import generators
    import wsl.train
    import zoo.training.build
    from generators.base import Generator
    from generators.d2nwg.model import D2NWG
    from zoo.app.config import compose
    from zoo.app.runtime import THREADS

    seen: list[int] = []

    def record(*_a, **_k):
        seen.append(torch.get_num_threads())
        return {}

    before = torch.get_num_threads()
    other = 3 if before != 3 else 2
    torch.set_num_threads(other)
    try:
        monkeypatch.setattr(wsl.train, "_train", record)
        monkeypatch.setattr(importlib.import_module("generators.fit"), "_fit", record)  # the module, not fit()
        monkeypatch.setattr(zoo.training.build, "_train_and_write", record)
        for command, run in (("train", wsl.train.train), ("fit", generators.fit_config)):
            cfg = compose(command, ["zoo=never-read.zarr"])
            run({k: v for k, v in cfg.items() if k != "threads"})  # a config without threads: 1
            run({**cfg, "threads": None})  # null: torch's setting
        cfg = compose("build", ["recipe=tiny"])
        zoo.training.build.train_and_write("z.zarr", {k: v for k, v in cfg.items() if k != "threads"}, None, None, 0)

        stub = type("Stub", (), {})()
        stub.layout = zoo.layout_of(nn.Linear(2, 2))
        stub.sample_flat = lambda n, seed, condition, device: (record() and None) or (torch.zeros(n, 6), None)
        assert len(Generator.sample(stub, 2)) == 2
        Generator.sample(stub, 2, threads=0)
        assert seen == [1, other, 1, other, 1, 1, other] and torch.get_num_threads() == other
    finally:
        torch.set_num_threads(before)
    for method in (Generator.sample, Generator.sample_zoo, D2NWG.sample_zoo):
        assert inspect.signature(method).parameters["threads"].default == THREADS == 1
        assert inspect.signature(method).parameters["device"].default == "cpu"  # zoo sample --device's default


@pytest.mark.parametrize("command", ["build", "train", "fit"])
def test_device_is_spelled_and_checked_alike_on_every_command_that_runs_models(command, capsys, tmp_path, monkeypatch):
    """--device / device= on build, train and fit: cpu, cuda, cuda:N or auto; another spelling, or cuda where torch
    sees no GPU, is one line and exit 2 before anything is written (this machine has no GPU, so cuda is refused)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    base = {"build": ["recipe=tiny"], "train": ["zoo=z.zarr"], "fit": ["zoo=z.zarr"]}[command]
    for device, words in (
        (["--device", "cuda"], "device=cuda was asked for but torch sees no CUDA GPU"),
        (["device=cuda:1"], "device=cuda:1 was asked for but torch sees no CUDA GPU"),
        (["--device=gpu"], "device='gpu' is invalid: expected cpu, cuda, cuda:N or auto"),
    ):
        assert zoo_main([command, *base, "--out", "run", *device]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
        assert list(tmp_path.iterdir()) == []


def test_device_settings_map_to_torch_and_lightning(monkeypatch):
    """resolve_device: auto is the GPU only when torch sees one; cuda:N past the GPUs torch sees is refused;
    with_device sets a run's trainer.accelerator and devices (null leaves them)."""
    import torch

    from zoo.app.runtime import lightning_device, resolve_device, with_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device("cpu") == torch.device("cpu")
    assert lightning_device("auto") == ("cpu", 1)
    cfg = {"device": None, "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 3}}
    assert with_device(cfg) == cfg
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda:1")
    assert with_device({**cfg, "device": "cuda:1"})["trainer"] == {
        "accelerator": "gpu",
        "devices": [1],
        "max_epochs": 3,
    }
    assert lightning_device("cuda") == ("gpu", 1)
    with pytest.raises(ZooError, match=r"device=cuda:2: torch sees 2 CUDA GPU\(s\), cuda:0..cuda:1"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("command", ["build", "train", "fit"])
def test_cfg_job_prints_the_composed_config_and_runs_nothing(command, capsys, tmp_path, monkeypatch):
    """``--cfg job`` (Hydra's flag; also ``--cfg=job``, ``-c job``) prints the config the command would run as YAML,
    the same as composing its overrides, and writes nothing; ``--cfg hydra`` shows Hydra's own config (these
    commands are Hydra apps: their run folder is their out=, no outputs/); another --cfg value is one line."""
    from omegaconf import OmegaConf

    from zoo.app.config import compose

    monkeypatch.chdir(tmp_path)
    per_command = {"build": ["recipe=tiny", "recipe.seeds=3"], "train": ["zoo=z.zarr", "encoder=nfn"]}
    args = per_command.get(command, ["zoo=z.zarr"])
    for flag in (["--cfg", "job"], ["--cfg=job"], ["-c", "job"]):
        rc, out, err = run_cli(capsys, command, *args, *flag, "--out", "run")
        assert rc == 0, err
        assert OmegaConf.to_container(OmegaConf.create(out)) == compose(command, [*args, "out=run"])
    assert list(tmp_path.iterdir()) == []
    rc, out, err = run_cli(capsys, command, *args, "--cfg", "hydra")
    hydra = OmegaConf.create(out).hydra
    assert rc == 0 and hydra.run.dir == "." and hydra.output_subdir is None and hydra.job_logging.root is None
    rc, _, err = run_cli(capsys, command, *args, "--cfg", "nope")
    assert rc == 2 and "give --cfg job, --cfg hydra or --cfg all" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


SIX = ("zoo", "out", "overwrite", "threads", "seed", "device")


def test_every_command_takes_each_shared_option_or_says_why_not_in_its_help(capsys):
    """All fifteen commands: each of the six shared options is a setting of the command (an option, a config key or
    its zoo argument) or named, with the reason, in the one last line of its --help; writing one it does not take is
    a one-line hint with that reason."""
    from zoo.app.style import NOT_TAKEN, OPTIONS, SHARED
    from zoo.commands.main import commands

    assert set(SIX) == set(SHARED)
    names = list(commands())
    assert len(names) == 15
    for name in names:
        rc, out, _ = run_cli(capsys, name, "--help")
        assert rc == 0
        missing = NOT_TAKEN.get(name, {})
        last = out.rstrip().splitlines()[-1]
        for key in SIX:
            if key in missing:
                assert last.startswith(f"shared options zoo {name} does not take:") and f"--{key}" in last, name
                continue
            takes_zoo = key == "zoo" and OPTIONS.get(name, ((), None))[1] is not None
            assert takes_zoo or f"--{key}" in out or f"\n  {key}=" in out or f"\n  {key} " in out, (name, key)
        if name in OPTIONS:  # the argparse commands: the other style of a missing option names the reason
            for key in set(missing) - {"zoo"}:
                rc, _, err = run_cli(capsys, name, "x", f"{key}=1")
                assert rc == 2 and missing[key] in err and err.count("\n") == 1, (name, key, err)


@pytest.mark.parametrize(
    ("command", "argv", "parsed"),
    [
        ("landscape", ["z.zarr", "--threads", "2", "--seed=3"], ["z.zarr", "threads=2", "seed=3"]),
        ("landscape", ["z.zarr", "threads=2"], ["z.zarr", "threads=2"]),  # its own override, as written
        ("sample", ["run", "device=cpu", "--out", "s.zarr"], ["run", "--device", "cpu", "--out", "s.zarr"]),
        ("align", ["z.zarr", "device=auto"], ["z.zarr", "--device", "auto"]),
    ],
)
def test_shared_options_reach_overrides_and_device_in_both_spellings(command, argv, parsed):
    assert normalize(command, argv) == parsed


@pytest.mark.parametrize("command", ["build", "train", "fit"])
def test_hydra_commands_shared_options_are_their_configs_top_level_keys(command):
    """``--out X`` etc. become overrides only for keys the command's YAML has: the style table and conf agree."""
    top = OmegaConf.load(CONF_DIR / f"{command}.yaml")
    assert hydra_shared_keys(command) == tuple(k for k in SHARED if k in top)
