"""Typed configs: one dataclass per config (group) is the single source of each key's type, default, range and doc.

A schema's fields are declared with :func:`key` (default = the YAML file's, a rule from :mod:`zoo.app.checks`, a
one-line doc). Building one (``validate(Schema, values)``) refuses unknown keys and checks every value in
``__post_init__``: the first bad value is one ZooError line (the CLI exits 2), before anything is written.
``--help`` lists the same fields (:func:`help_rows`), and a test holds each YAML's defaults equal to its schema's.

Why validated in Python after Hydra composes rather than as YAML files extending ConfigStore schemas: OmegaConf
(2.3) coerces (``hidden='3'`` -> 3), has no ranges (a schema's rules would run in ``__post_init__`` through
``OmegaConf.to_object`` anyway), no unions with containers (``checkpoints: -1 | [..] | all``, ``trainer.logger:
csv | [..] | false``, ``trainer.devices: 1 | auto | [0, 1]``) and reports a bad value in several lines after
composing. Checking the composed dict keeps every YAML file, recipe and override as it is (a new recipe needs no
schema line), keeps the one-line messages, and passes the dict on unchanged (config hashes of built zoos stay).
The schemas are also Hydra structured configs: each names its place (``class DwfConfig(Schema, group="generator",
name="dwf")``) and :func:`store` puts them in Hydra's ConfigStore as ``schema/<group>/<name>``, so a user's own
YAML can extend one (``defaults: [/schema/generator/dwf@_here_, _self_]``) and be typed by OmegaConf while composing.
A schema with ``FLAGS = True`` names the command-line flags in its errors instead (``zoo diagnose --k 0``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, TypeVar

from zoo.app.checks import Rule, optional, typed
from zoo.errors import ZooError

S = TypeVar("S", bound="Schema")
STORED: dict[tuple[str, str], type[Schema]] = {}  # (group, name) -> schema: what store() puts in the ConfigStore


def key(default: Any, rule: Rule | None = None, doc: str = "") -> Any:
    """A schema field: its default (the YAML file's), the rule its value must pass and its one-line doc."""
    meta = {"rule": rule, "help": doc}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(schema: type[Schema], doc: str = "") -> Any:
    """A nested mapping checked by its own schema (``early_stopping:``, ``data:``); default: that schema's."""
    return dataclasses.field(default_factory=schema, metadata={"rule": None, "help": doc, "schema": schema})


def group(doc: str) -> Any:
    """A config group's slot (``generator:``, ``recipe:``): a mapping that its chosen YAML file fills and its own
    schema checks; left out of the defaults (the YAML's ``defaults:`` list chooses it) and of the keys in --help."""
    rule = optional(typed(Mapping, f"a mapping ({doc})"))  # null: not composed here (a part checked alone)
    return dataclasses.field(default=None, metadata={"rule": rule, "help": doc, "group": True})


@dataclasses.dataclass(frozen=True)
class Schema:
    """Base of the typed configs: building one checks every field's value by its rule, then :meth:`relations`."""

    WHERE: ClassVar[str] = ""  # how keys are named in errors and --help: "generator.", "landscape.phases."
    OPEN: ClassVar[bool] = False  # True: keys beyond the fields pass (e.g. any lightning.Trainer argument) ...
    ALSO: ClassVar[Mapping[str, Rule]] = {}  # ... checked by these rules when given (keys the YAML does not set)
    FLAGS: ClassVar[bool] = False  # True: errors name the command-line flag (--n-baseline 0), not the key

    @classmethod
    def invalid(cls, name: str, value: Any, expected: str) -> ZooError:
        """The one-line error of a value that breaks its rule, naming the key (or the flag, ``FLAGS``)."""
        if cls.FLAGS:
            return ZooError(f"--{name.replace('_', '-')} {value!r} is invalid: expected {expected}")
        return ZooError(f"{cls.WHERE}{name}={value!r} is invalid: expected {expected}")

    def __init_subclass__(cls, group: str | None = None, name: str | None = None, **kwargs: Any) -> None:
        """``group``/``name``: where :func:`store` puts the schema in Hydra's ConfigStore (schema/<group>/<name>)."""
        super().__init_subclass__(**kwargs)
        if group is not None and name is not None:
            STORED[(group, name)] = cls

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            nested = f.metadata.get("schema")
            if nested is not None:
                if not isinstance(value, (Mapping, nested)):
                    raise self.invalid(f.name, value, "a mapping")
                if isinstance(value, Mapping):  # checked here; the field keeps the mapping as given
                    validate(nested, value)
                continue
            rule = f.metadata.get("rule")
            expected = rule(value) if rule is not None else None
            if expected:
                raise self.invalid(f.name, value, expected)
        self.relations()

    def relations(self) -> None:
        """What one key's rule cannot see (``beta_start < beta_end``): raise a one-line ZooError."""


def validate(schema: type[S], values: Mapping[str, Any]) -> S:
    """``values`` as a ``schema``: unknown keys (unless the schema is open) and bad values are one-line ZooErrors."""
    if not isinstance(values, Mapping):
        raise ZooError(f"{schema.WHERE.rstrip('.') or 'config'}={values!r} is invalid: expected a mapping")
    names = [f.name for f in dataclasses.fields(schema)]
    unknown = sorted(set(values) - set(names))
    if unknown and not schema.OPEN:
        raise ZooError(f"unknown key {schema.WHERE}{unknown[0]} (known: {', '.join(sorted(names))})")
    for name in unknown:
        rule = schema.ALSO.get(name)
        expected = rule(values[name]) if rule is not None else None
        if expected:
            raise schema.invalid(name, values[name], expected)
    return schema(**{k: v for k, v in values.items() if k in names})


def defaults(schema: type[Schema]) -> dict[str, Any]:
    """The schema's defaults as the plain dict its YAML file holds (nested sections as dicts)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(schema):
        if f.metadata.get("group"):
            continue
        if f.metadata.get("schema") is not None:
            out[f.name] = defaults(f.metadata["schema"])
        elif f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def yaml_value(value: Any) -> str:
    """A default as an override writes it: ``null``, ``true``, ``[8, 16]``, ``{p: 0.5}``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def flag(schema: type[Schema], name: str) -> dict[str, Any]:
    """``default`` and ``help`` of an argparse flag that fills field ``name`` (its doc, then its default)."""
    f = next(f for f in dataclasses.fields(schema) if f.name == name)
    default = defaults(schema)[name]
    return {"default": default, "help": f"{f.metadata.get('help', '')} (default: {yaml_value(default)})"}


def help_rows(schema: type[Schema], prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(dotted key, type, default as YAML writes it, doc) of every field, nested sections' keys dotted."""
    for f in dataclasses.fields(schema):
        nested = f.metadata.get("schema")
        if f.metadata.get("group"):
            continue
        if nested is not None:
            yield from help_rows(nested, f"{prefix}{f.name}.")
            continue
        default = defaults(schema)[f.name]
        yield f"{prefix}{f.name}", str(f.type), yaml_value(default), f.metadata.get("help", "")


def store() -> None:
    """Put every schema defined so far (the imported packages') in Hydra's ConfigStore as schema/<group>/<name>."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf  # only here: loading and sampling a generator import its schema, not OmegaConf

    cs = ConfigStore.instance()
    for (group, name), schema in STORED.items():
        node = OmegaConf.structured(schema)
        OmegaConf.set_readonly(node, False)  # frozen dataclasses: a YAML extending one sets its own values
        cs.store(group=f"schema/{group}" if group else "schema", name=name, node=node)
