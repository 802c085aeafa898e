"""Per-model hyperparameters drawn from distributions a recipe names (``recipe.hparams``): random-search zoos.

The Small-CNN-Zoo protocol (Unterthiner et al. 2020) trains every model with its own independently drawn
hyperparameters, which gives the wide spread of accuracies (many near chance) that makes accuracy prediction
from weights a real task. A recipe says so with a mapping, one entry per hyperparameter::

    hparams:
      optimizer: {choice: [sgd, adam, rmsprop]}
      learning_rate: {log_uniform: [5.0e-4, 5.0e-2]}
      dropout: {uniform: [0.0, 0.7]}
      activation: relu                      # a plain value: every model gets it

Distributions: ``{log_uniform: [low, high]}`` (0 < low <= high), ``{uniform: [low, high]}`` (low <= high),
``{choice: [a, b, ...]}`` (each equally likely) or a constant. Names (:data:`HPARAMS`): ``optimizer``
(sgd | adam | adamw | rmsprop), ``learning_rate``, ``weight_decay`` (L2: ``weight_decay * w`` added to the
gradient, torch's ``weight_decay``), ``batch_size``, ``activation`` (zoo.arch.ACTIVATIONS), ``init``
(:data:`INITS`), ``init_std``, ``dropout`` (in [0, 1)) and ``train_fraction`` (in (0, 1]). A name the
mapping leaves out keeps the recipe's value (its grid list collapses to the first entry).

Every draw is a pure function of (name, model id, seed) through sha256, so each hyperparameter is independent
of the others and of every other model, and the same config gives the same zoo. The drawn values are
columns of the models table, where encoders can predict them (wsl.targets).

What a drawn value does to training (zoo.training.population_module):
- ``init``/``init_std``, THE INIT RULE (:func:`init_state`): ``default`` is PyTorch's default
  initialization of the module under ``torch.manual_seed(seed)``; ``truncated_normal`` draws every weight
  (conv kernels, dense matrix) from N(0, init_std^2) truncated to +-2 init_std (TensorFlow's
  ``TruncatedNormal``, the protocol's), ``he_normal`` from N(0, 2 / fan_in), ``glorot_uniform`` from
  U(+-sqrt(6 / (fan_in + fan_out))); with these three every bias is zero (the protocol's ``b_init: zero``)
  and BatchNorm keeps weight 1, bias 0. The weights are drawn in the module's parameter order from one
  generator seeded with ``seed``: a pure function of the model's seed and spec.
- ``dropout``: each model's own rate after every conv activation, its masks drawn from its own generator
  (:func:`dropout_seed`), so they never depend on the other models of its population.
- ``train_fraction``: each model trains on its own random subset of ``max(1, round(f * n_train))`` training
  samples (:func:`train_subset`, from its seed). An epoch is one pass over the model's OWN subset, as in
  the protocol: ``max(1, size // batch_size)`` steps in a fresh order of the subset. The models of a
  population step together for as many steps as the longest subset needs; a model whose epoch is done sits
  the remaining steps out (weights, BatchNorm statistics, optimizer state and its Adam/RMSprop step count
  untouched). Populations are formed from models sorted by fraction, so few steps are sat out.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from zoo.arch import ACTIVATIONS, build_model
from zoo.errors import ZooError

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
INITS = ("default", "truncated_normal", "he_normal", "glorot_uniform")
DISTRIBUTIONS = ("log_uniform", "uniform", "choice")
NUMERIC = {  # name -> (low, high, low_open, high_open, kind)
    "learning_rate": (0.0, math.inf, True, True, float),
    "weight_decay": (0.0, math.inf, False, True, float),
    "init_std": (0.0, math.inf, True, True, float),
    "dropout": (0.0, 1.0, False, True, float),
    "train_fraction": (0.0, 1.0, True, False, float),
    "batch_size": (1, math.inf, False, True, int),
}
CATEGORICAL = {"optimizer": OPTIMIZERS, "activation": tuple(ACTIVATIONS), "init": INITS}
HPARAMS = (*NUMERIC, *CATEGORICAL)


def _uniform01(name: str, model_id: int, seed: int) -> float:
    """A number in [0, 1) that depends only on (name, model id, seed)."""
    digest = hashlib.sha256(f"hparam/{name}/{int(seed)}/{int(model_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


def _seed_of(tag: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{tag}/{int(seed)}".encode()).digest()[:4], "little")


def dropout_seed(seed: int) -> int:
    """The seed of a model's dropout masks: a pure function of its seed, apart from its data-order generator."""
    return _seed_of("dropout", seed)


def subset_seed(seed: int) -> int:
    """The seed of a model's training subset (``train_fraction``): a pure function of its seed."""
    return _seed_of("train_subset", seed)


def _in_range(name: str, v: Any) -> bool:
    lo, hi, lo_open, hi_open, kind = NUMERIC[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        return False
    if kind is int and int(v) != v:
        return False
    return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)


def _range_text(name: str) -> str:
    lo, hi, lo_open, hi_open, kind = NUMERIC[name]
    what = "an integer" if kind is int else "a number"
    return f"{what} in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def check_hparams(hparams: Any) -> dict[str, Any]:
    """``recipe.hparams`` as a plain dict, or a one-line ZooError naming the entry that is wrong."""
    if not isinstance(hparams, Mapping):
        raise ZooError(f"recipe.hparams={hparams!r} is invalid: expected a mapping of hyperparameter -> distribution")
    out: dict[str, Any] = {}
    for name, dist in hparams.items():
        where = f"recipe.hparams.{name}"
        if name not in HPARAMS:
            raise ZooError(f"unknown hyperparameter {where} (known: {', '.join(HPARAMS)})")
        if isinstance(dist, Mapping):
            if len(dist) > 1:
                raise ZooError(
                    f"{where}={dict(dist)!r} names {len(dist)} distributions: give one (a command-line override"
                    f" merges into the recipe's: replace it with ~{where} +{where}={{...}})"
                )
            if len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
                raise ZooError(
                    f"{where}={dict(dist)!r} is invalid: expected one of {{log_uniform: [low, high]}},"
                    " {uniform: [low, high]}, {choice: [values]} or a plain value"
                )
            kind, args = next(iter(dist.items()))
            args = list(args) if isinstance(args, (list, tuple)) else [args]
            if kind == "choice":
                if not args:
                    raise ZooError(f"{where}.choice is empty: expected at least one value")
                for v in args:
                    _check_value(name, v, where)
            else:
                if name in CATEGORICAL:
                    raise ZooError(f"{where}.{kind} is invalid: {name} is categorical, use {{choice: [...]}}")
                if len(args) != 2:
                    raise ZooError(f"{where}.{kind}={args!r} is invalid: expected [low, high]")
                lo, hi = args
                for v in args:
                    _check_value(name, v, where)
                if lo > hi:
                    raise ZooError(f"{where}.{kind}={args!r} is invalid: low {lo} > high {hi}")
                if kind == "log_uniform" and lo <= 0:
                    raise ZooError(f"{where}.log_uniform={args!r} is invalid: both bounds must be positive")
            out[name] = {kind: args}
        else:
            _check_value(name, dist, where)
            out[name] = dist
    return out


def _check_value(name: str, v: Any, where: str) -> None:
    if name in CATEGORICAL:
        if v not in CATEGORICAL[name]:
            raise ZooError(f"{where} value {v!r} is invalid: expected one of {list(CATEGORICAL[name])}")
    elif not _in_range(name, v):
        raise ZooError(f"{where} value {v!r} is invalid: expected {_range_text(name)}")


def draw(hparams: Mapping[str, Any], model_id: int, seed: int) -> dict[str, Any]:
    """One model's value of every hyperparameter in ``hparams`` (checked by :func:`check_hparams`)."""
    out: dict[str, Any] = {}
    for name, dist in hparams.items():
        if not isinstance(dist, Mapping):
            out[name] = dist
            continue
        kind, args = next(iter(dist.items()))
        u = _uniform01(name, model_id, seed)
        if kind == "choice":
            v = args[min(int(u * len(args)), len(args) - 1)]
        elif kind == "uniform":
            v = args[0] + u * (args[1] - args[0])
        else:
            lo, hi = math.log(args[0]), math.log(args[1])
            v = math.exp(lo + u * (hi - lo))
        if name in NUMERIC:
            v = int(v) if NUMERIC[name][4] is int and kind == "choice" else float(v)
        out[name] = v
    return out


def train_subset(n_train: int, fraction: float, seed: int) -> torch.Tensor:
    """A model's training subset: ``max(1, round(fraction * n_train))`` sorted indices, drawn from its seed
    (all of them, in order, for fraction 1)."""
    if fraction >= 1.0:
        return torch.arange(int(n_train))
    g = torch.Generator().manual_seed(subset_seed(seed))
    size = max(1, int(round(fraction * n_train)))
    return torch.randperm(int(n_train), generator=g)[:size].sort().values


def init_state(spec: Mapping, seed: int, init: str = "default", init_std: float = 0.05) -> dict[str, torch.Tensor]:
    """The initialization of a model under THE INIT RULE (module docstring), independent of global state."""
    if init not in INITS:
        raise ZooError(f"init {init!r} is invalid: expected one of {list(INITS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        module = build_model(spec)
        if init != "default":
            g = torch.Generator().manual_seed(int(seed))
            with torch.no_grad():
                for m in module.modules():
                    if isinstance(m, (nn.Conv2d, nn.Linear)):
                        _init_weight(m.weight, init, init_std, g)
                        if m.bias is not None:
                            m.bias.zero_()
        return {k: v.clone() for k, v in module.state_dict().items()}


def _init_weight(w: torch.Tensor, init: str, std: float, g: torch.Generator) -> None:
    fan_in = w[0].numel()
    fan_out = w.shape[0] * w[0, 0].numel() if w.dim() > 2 else w.shape[0]
    if init == "glorot_uniform":
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w.uniform_(-bound, bound, generator=g)
        return
    s = float(std) if init == "truncated_normal" else math.sqrt(2.0 / fan_in)
    if init == "he_normal":
        w.normal_(0.0, s, generator=g)
        return
    # truncated to +-2 std by redrawing the values outside (TensorFlow's TruncatedNormal)
    w.normal_(0.0, s, generator=g)
    bad = w.abs() > 2 * s
    while bad.any():
        w[bad] = torch.empty(int(bad.sum()), dtype=w.dtype).normal_(0.0, s, generator=g)
        bad = w.abs() > 2 * s
