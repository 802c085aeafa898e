"""``zoo fit`` checks every key of its config before anything is read or written (issue 27): a bad value is one
line naming the key, the value and what is allowed, exit 2, no run folder (every shipped key has a typed field:
tests/zoo/app/test_schema.py)."""

from __future__ import annotations

import pytest

import generators
from generators.fit import check_fit_config, compose_fit, generator_names
from zoo.commands.main import main as cli_main
from zoo.errors import ZooError

BAD = [
    # the cases of issue 27 (tracebacks, or accepted silently)
    ("dwf", "generator.hidden=abc", "generator.hidden='abc' is invalid: expected an integer >= 1"),
    ("dwf", "generator.lr=-1", "generator.lr=-1 is invalid: expected a finite number > 0"),
    ("dwf", "generator.batch_size=0", "generator.batch_size=0 is invalid: expected an integer >= 1"),
    ("dwf", "steps_per_epoch=0", "steps_per_epoch=0 is invalid: expected an integer >= 1"),
    ("dwf", "trainer.max_epochs=abc", "trainer.max_epochs='abc' is invalid: expected an integer >= 1, -1 (no limit)"),
    ("dwf", "threads=-1", "threads=-1 is invalid: expected an integer >= 1 or null"),
    ("dwf", "seed=abc", "seed='abc' is invalid: expected an integer >= 0"),
    (
        "dwf",
        "generator.canonical=maybe",
        "generator.canonical='maybe' is invalid: expected one of ['auto', true, false]",
    ),
    ("dwf", "generator.pca_variance=2", "generator.pca_variance=2 is invalid: expected a finite number > 0 and <= 1"),
    ("dwf", "generator.sigma=nan", "generator.sigma=nan is invalid: expected a finite number >= 0"),
    # more of the run settings
    ("dwf", "seed=-1", "seed=-1 is invalid"),
    ("dwf", "threads=1.5", "threads=1.5 is invalid"),
    ("dwf", "monitor=val/acc", "monitor='val/acc' is invalid: expected one of ['auto', 'val/loss'"),
    ("dwf", "snapshot_every_n_steps=-5", "snapshot_every_n_steps=-5 is invalid: expected an integer >= 0"),
    ("dwf", "early_stopping.patience=-1", "early_stopping.patience=-1 is invalid"),
    ("dwf", "early_stopping.min_delta=inf", "early_stopping.min_delta=inf is invalid"),
    ("dwf", "trainer.max_epochs=0", "trainer.max_epochs=0 is invalid"),
    ("dwf", "trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0 is invalid"),
    ("dwf", "trainer.enable_progress_bar=maybe", "trainer.enable_progress_bar='maybe' is invalid: expected true or"),
    ("dwf", "trainer.logger=wandb", "trainer.logger='wandb' is invalid: expected csv, tensorboard, a list of them"),
    ("dwf", "trainer.deterministic=sometimes", "trainer.deterministic='sometimes' is invalid"),
    ("dwf", "zoo=123", "zoo=123 is invalid: expected a path"),
    ("dwf", "+nope=1", "unknown key nope"),
    ("dwf", "trainer.min_epochs=0", "trainer.min_epochs=0 is invalid"),  # not in fit.yaml, still checked
    # DeepWeightFlow
    ("dwf", "+generator.nope=1", "unknown key generator.nope"),
    ("dwf", "generator.canonical=1", "generator.canonical=1 is invalid"),  # 1 is not true
    ("dwf", "generator.pca=yes", "generator.pca='yes' is invalid: expected one of ['auto', true, false]"),
    ("dwf", "generator.normalize=zscore", "generator.normalize='zscore' is invalid: expected one of ['coordinate',"),
    ("dwf", "generator.ode_method=heun", "generator.ode_method='heun' is invalid: expected one of ['euler',"),
    ("dwf", "generator.ode_steps=0", "generator.ode_steps=0 is invalid"),
    ("dwf", "generator.source_scale=0", "generator.source_scale=0 is invalid: expected a finite number > 0"),
    ("dwf", "generator.val_fraction=1", "generator.val_fraction=1 is invalid: expected a finite number > 0 and < 1"),
    ("dwf", "generator.dropout=1", "generator.dropout=1 is invalid: expected a finite number >= 0 and < 1"),
    ("dwf", "generator.ema_decay=1.5", "generator.ema_decay=1.5 is invalid"),
    ("dwf", "generator.betas=[0.9]", "generator.betas=[0.9] is invalid: expected a list of 2 values"),
    ("dwf", "generator.lr=inf", "generator.lr=inf is invalid"),
    ("dwf", "generator.checkpoint=last", "generator.checkpoint='last' is invalid: expected an integer"),
    ("dwf", "generator.condition=1", "generator.condition=1 is invalid: expected a string or null"),
    # D2NWG
    ("d2nwg", "generator.shots=0", "generator.shots=0 is invalid"),
    ("d2nwg", "generator.beta_schedule=cosine", "generator.beta_schedule='cosine' is invalid: expected one of"),
    ("d2nwg", "generator.residual=maybe", "generator.residual='maybe' is invalid: expected true or false"),
    ("d2nwg", "generator.guidance=-1", "generator.guidance=-1 is invalid"),
    ("d2nwg", "generator.chunk_size=-1", "generator.chunk_size=-1 is invalid"),
    ("d2nwg", "generator.vae_lr=nan", "generator.vae_lr=nan is invalid"),
    ("d2nwg", "generator.canonical=maybe", "generator.canonical='maybe' is invalid"),
    ("d2nwg", "generator.beta_start=0.1", "generator.beta_start=0.1 is invalid: expected < generator.beta_end"),
    ("d2nwg", "generator.ddim_steps=2000", "generator.ddim_steps=2000 is invalid: expected <= generator.timesteps"),
    ("d2nwg", "generator.heads=3", "generator.heads=3 is invalid: expected a divisor of generator.encoder_hidden"),
    # KNOWN
    ("known", "generator.history=1", "generator.history=1 is invalid: expected an integer >= 2"),
    ("known", "generator.loss=huber", "generator.loss='huber' is invalid: expected one of ['mae', 'mse']"),
    ("known", "generator.bound_quantile=0", "generator.bound_quantile=0 is invalid"),
    ("known", "generator.max_epochs=0", "generator.max_epochs=0 is invalid"),
    ("known", "generator.val_fraction=0", "generator.val_fraction=0 is invalid"),
    ("known", "generator.lr=-1", "generator.lr=-1 is invalid"),
]


@pytest.mark.parametrize("name, override, message", BAD, ids=[f"{n}:{o}" for n, o, _ in BAD])
def test_bad_fit_settings_are_one_line_before_anything_is_written(tmp_path, capsys, name, override, message):
    out = tmp_path / "run"
    # the zoo does not exist: the config check comes before the zoo is opened, and before the run folder
    argv = ["fit", f"generator={name}", f"zoo={tmp_path / 'no.zarr'}", f"out={out}", override]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not out.exists() and not (tmp_path / "run.lock").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_python_api_is_checked_too(tmp_path):
    with pytest.raises(ZooError, match=r"generator.hidden='abc' is invalid"):
        generators.fit("dwf", str(tmp_path / "no.zarr"), out=str(tmp_path / "run"), hidden="abc")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", generator_names())
def test_shipped_configs_pass(name):
    check_fit_config(compose_fit(name, "z.zarr"))


@pytest.mark.parametrize(
    "override",
    ["generator.canonical=true", "generator.pca=false", "threads=null", "trainer.max_epochs=-1", "generator.sigma=0"],
)
def test_allowed_values_pass(override):
    check_fit_config(compose_fit("dwf", "z.zarr", hydra_overrides=[override]))
