"""Typed configs (zoo.app.schema): every YAML default equals its schema's default, so the two cannot drift; the
defaults pass their own checks; a bad value, an unknown key or a bad nested value is one ZooError line."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
from omegaconf import OmegaConf

from zoo.app.checks import number
from zoo.app.config import CONF_DIR, group_options
from zoo.app.schema import Schema, defaults, help_rows, key, section, validate
from zoo.errors import ZooError


def _yaml(path) -> dict:
    """A YAML config as written (interpolations unresolved), without its ``defaults:`` list."""
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    cfg.pop("defaults", None)
    return cfg


def _pairs() -> list[tuple[str, type[Schema], set[str]]]:
    """(YAML file under conf/, its schema, keys of the YAML the schema leaves to another one)."""
    from generators.registry import get
    from wsl.augment import AugmentConfig
    from wsl.encoders.config import SCHEMAS
    from wsl.targets import TaskConfig
    from wsl.train import TrainConfig
    from zoo.landscape.compute import LandscapeConfig
    from zoo.training.build import BuildConfig, ExecutorConfig, RecipeConfig

    fit = importlib.import_module("generators.fit")
    out = [
        ("build.yaml", BuildConfig, set()),
        ("fit.yaml", fit.FitConfig, set()),
        ("train.yaml", TrainConfig, set()),
        ("landscape/default.yaml", LandscapeConfig, set()),
        ("recipe/default.yaml", RecipeConfig, {"landscape"}),  # the landscape group's, plus enabled
        ("executor/local.yaml", ExecutorConfig, set()),
        ("task/test_accuracy.yaml", TaskConfig, set()),
        ("augment/none.yaml", AugmentConfig, set()),
    ]
    out += [(f"generator/{n}.yaml", get(n).schema, set()) for n in group_options("generator")]
    out += [(f"encoder/{n}.yaml", SCHEMAS[n], set()) for n in group_options("encoder")]
    return out


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested mappings as dotted keys."""
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@pytest.mark.parametrize("path,schema,elsewhere", _pairs(), ids=[p for p, _, _ in _pairs()])
def test_yaml_defaults_equal_the_schema_defaults(path, schema, elsewhere):
    shipped = {k: v for k, v in _yaml(CONF_DIR / path).items() if k not in elsewhere}
    declared = _flat(defaults(schema))
    flat = _flat(shipped)
    assert set(flat) <= set(declared), f"{path}: keys without a field: {set(flat) - set(declared)}"
    assert {k: declared[k] for k in flat} == flat, f"{path}: YAML and schema defaults differ"
    # a top-level field the YAML does not set is an optional key: null (absent) by default
    absent = {k: v for k, v in declared.items() if k.split(".")[0] not in shipped and "." not in k}
    assert all(v is None for v in absent.values()), f"{path}: fields missing from the YAML: {absent}"
    validate(schema, shipped)  # the defaults pass their own checks
    for dotted, kind, _, _doc in help_rows(schema):
        assert kind, (path, dotted)


def test_every_shipped_choice_passes_its_schema():
    """Every recipe, executor, task and augmentation file (the other choices of the groups above)."""
    from wsl.augment import AugmentConfig
    from wsl.lit import LOSSES
    from wsl.targets import TaskConfig
    from zoo.training.build import ExecutorConfig, RecipeConfig

    schemas = {"recipe": RecipeConfig, "executor": ExecutorConfig, "task": TaskConfig, "augment": AugmentConfig}
    for group, schema in schemas.items():
        for name in group_options(group):
            values = {k: v for k, v in _yaml(CONF_DIR / group / f"{name}.yaml").items() if k != "landscape"}
            validate(schema, values)
    for loss in LOSSES:  # the task schema's losses are the ones training knows
        validate(TaskConfig, {"loss": loss})
    with pytest.raises(ZooError, match="task.loss='huber' is invalid"):
        validate(TaskConfig, {"loss": "huber"})


@dataclasses.dataclass(frozen=True)
class _Inner(Schema):
    WHERE = "outer.inner."
    n: int = key(2, number(int, 1), "a count")


@dataclasses.dataclass(frozen=True)
class _Outer(Schema):
    WHERE = "outer."
    OPEN = False
    lr: float = key(0.1, number(float, 0, low_open=True), "a rate")
    inner: _Inner = section(_Inner, "nested")

    def relations(self) -> None:
        if self.lr > 1:
            raise ZooError("outer.lr above 1")


@pytest.mark.parametrize(
    "values,message",
    [
        ({"lr": "abc"}, "outer.lr='abc' is invalid: expected a finite number > 0"),
        ({"nope": 1}, "unknown key outer.nope (known: inner, lr)"),
        ({"inner": {"n": 0}}, "outer.inner.n=0 is invalid: expected an integer >= 1"),
        ({"inner": {"m": 0}}, "unknown key outer.inner.m"),
        ({"inner": 3}, "outer.inner=3 is invalid: expected a mapping"),
        ({"lr": 2.0}, "outer.lr above 1"),
    ],
)
def test_bad_values_are_one_line(values, message):
    with pytest.raises(ZooError) as e:
        validate(_Outer, values)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_defaults_and_help_rows_come_from_the_fields():
    assert defaults(_Outer) == {"lr": 0.1, "inner": {"n": 2}}
    assert list(help_rows(_Outer)) == [("lr", "float", "0.1", "a rate"), ("inner.n", "int", "2", "a count")]
    assert validate(_Outer, {"inner": {"n": 5}}).lr == 0.1


def test_lcsc_search_settings_are_typed():
    """zoo lcsc's search settings (SearchConfig) check their ranges when built, before any zoo is read."""
    import dataclasses as dc

    from generators.lcsc.search import GENERATOR_SEARCH, SearchConfig

    assert dc.replace(GENERATOR_SEARCH, lower=-0.5).lower == -0.5
    for bad, message in (
        ({"population": 0}, "population=0 is invalid: expected an integer >= 2"),
        ({"crossover": 1.5}, "crossover=1.5 is invalid"),
        ({"ema_decays": (0.5, 1.0)}, "ema_decays=(0.5, 1.0) is invalid"),
    ):
        with pytest.raises(ZooError, match=message.replace("(", r"\(").replace(")", r"\)")):
            SearchConfig(**bad)


def test_diagnose_settings_are_typed(capsys):
    """zoo diagnose's settings (DiagnoseConfig): the flags' defaults and docs, and one line naming the flag."""
    from generators.diagnose.report import DiagnoseConfig
    from zoo.commands.main import main as zoo_main

    assert zoo_main(["diagnose", "--help"]) == 0
    assert "training models per average (default: 16)" in " ".join(capsys.readouterr().out.split())
    for args, message in (
        (["--k", "0"], "--k 0 is invalid: expected an integer >= 1"),
        (["--noise-drops", "1,200"], "--noise-drops [1.0, 200.0] is invalid"),
        (["--refine", "-1"], "--refine -1 is invalid"),
    ):
        assert zoo_main(["diagnose", "--train", "/no/such.zarr", "--out", "/no/such/out", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
    with pytest.raises(ZooError, match="k=0 is invalid"):
        validate(DiagnoseConfig, {"k": 0})


def test_schemas_are_in_the_config_store_and_a_yaml_can_extend_one(tmp_path, monkeypatch):
    """store() puts the typed configs in Hydra's ConfigStore (schema/<group>/<name>): a user's generator YAML that
    extends DeepWeightFlow's schema gets its defaults and OmegaConf's typing while composing (one line)."""
    import shutil

    from hydra.core.config_store import ConfigStore

    import zoo.app.config as zc

    importlib.import_module("generators.fit")  # defines the generators' and fit's schemas
    conf = tmp_path / "conf"
    shutil.copytree(zc.CONF_DIR, conf)
    (conf / "generator" / "mine.yaml").write_text(
        "defaults:\n  - /schema/generator/dwf@_here_\n  - _self_\n\nhidden: 64\n"
    )
    monkeypatch.setattr(zc, "CONF_DIR", conf)
    cfg = zc.compose("fit", ["generator=mine", "zoo=z.zarr"])
    assert cfg["generator"]["hidden"] == 64 and cfg["generator"]["ode_method"] == "rk4"  # the schema's default
    assert {"dwf.yaml", "d2nwg.yaml", "known.yaml", "simplex.yaml"} <= set(
        ConfigStore.instance().repo["schema"]["generator"]
    )
    with pytest.raises(ZooError) as e:
        zc.compose("fit", ["generator=mine", "zoo=z.zarr", "generator.hidden=abc"])
    assert "could not be converted to Integer" in str(e.value) and "\n" not in str(e.value)


def test_every_stored_schema_is_an_omegaconf_structured_config():
    from wsl.train import TrainConfig  # noqa: F401  (defines the train, encoder, task and augment schemas)
    from zoo.app.schema import STORED
    from zoo.training.build import BuildConfig  # noqa: F401  (build, recipe, executor, landscape)

    importlib.import_module("generators.fit")
    importlib.import_module("generators.lcsc.search")
    importlib.import_module("generators.diagnose.report")
    assert {("", "build"), ("", "fit"), ("", "train"), ("", "lcsc"), ("", "diagnose")} <= set(STORED)
    assert {("generator", "dwf"), ("encoder", "nfn"), ("recipe", "base"), ("landscape", "base")} <= set(STORED)
    for (group, name), schema in STORED.items():
        node = OmegaConf.to_container(OmegaConf.structured(schema))
        expected = defaults(schema) | {f.name: None for f in dataclasses.fields(schema) if f.metadata.get("group")}
        assert node == {k: list(v) if isinstance(v, tuple) else v for k, v in expected.items()}, (group, name)
