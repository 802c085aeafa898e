"""`zoo train -m`: a Hydra multirun sweep, one run folder and one summary line per job, all checked first."""

from __future__ import annotations

import json

from zoo.commands.main import main as zoo_main


def test_sweep_runs_every_job_in_its_own_folder(tiny_zoo, tmp_path, capsys):
    out = tmp_path / "sweep"
    code = zoo_main(
        [
            "train",
            "-m",
            "encoder=mlp,statnn",
            "seed=0,1",
            "task=test_accuracy",
            f"zoo={tiny_zoo.path}",
            f"out={out}",
            "trainer.max_epochs=1",
            "data.checkpoints=all",
            "threads=1",
        ]
    )
    assert code == 0, capsys.readouterr().err
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("[") and "] encoder=" in l]
    assert [l.split(":")[0] for l in lines] == [
        "[1/4] encoder=mlp seed=0",
        "[2/4] encoder=mlp seed=1",
        "[3/4] encoder=statnn seed=0",
        "[4/4] encoder=statnn seed=1",
    ]
    record = json.loads((out / "multirun.json").read_text())
    assert record["swept"] == ["encoder", "seed"] and len(record["runs"]) == 4
    folders = {r["out"] for r in record["runs"]}
    assert len(folders) == 4
    for r in record["runs"]:
        summary = json.loads((tmp_path / "sweep" / r["out"].split("/")[-1] / "summary.json").read_text())
        assert (
            f"encoder={summary['encoder']}" in r["overrides"] and f"seed={summary['config']['seed']}" in r["overrides"]
        )
    # the same sweep again is refused before any job runs: its finished runs are replaced only with overwrite=true
    before = (out / "multirun.json").read_text()
    assert zoo_main(["train", "-m", "encoder=mlp,statnn", "seed=0,1", f"zoo={tiny_zoo.path}", f"out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "already holds a run" in err and "overwrite=true" in err and "\n" not in err
    assert (out / "multirun.json").read_text() == before


def test_a_bad_choice_anywhere_fails_before_any_run(tiny_zoo, tmp_path, capsys):
    out = tmp_path / "bad"
    assert zoo_main(["train", "-m", "encoder=mlp,nope", f"zoo={tiny_zoo.path}", f"out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown encoder 'nope'" in err and "\n" not in err
    assert not out.exists()
    assert zoo_main(["train", "-m", "encoder=mlp,", "seed=range(", f"zoo={tiny_zoo.path}"]) == 2
    assert "bad sweep override" in capsys.readouterr().err
