"""Parameter layouts: the exact map between a state dict and one flat float32 vector.

A layout is derived from a module's ``state_dict()`` (never written by hand): every floating-point
parameter and buffer, and integer buffers such as BatchNorm's ``num_batches_tracked`` (exact in float32
below 2**24), in ``state_dict`` order. It serializes to JSON so a store can rebuild modules from it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from zoo.arch import build_model
from zoo.errors import ZooError


@dataclass(frozen=True)
class Entry:
    """One tensor of the state dict: where it sits in the flat vector and how to restore it."""

    name: str
    shape: tuple[int, ...]
    offset: int
    dtype: str  # torch dtype name without the "torch." prefix, e.g. "float32", "int64"
    kind: str  # "parameter" or "buffer"

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def stop(self) -> int:
        return self.offset + self.numel


@dataclass(frozen=True)
class Layout:
    """Ordered entries of a state dict; ``size`` is the flat vector length P."""

    entries: tuple[Entry, ...]
    arch: Mapping = field(default_factory=dict)  # the architecture spec that builds the module

    @property
    def size(self) -> int:
        return self.entries[-1].stop if self.entries else 0

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def __getitem__(self, name: str) -> Entry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(name)

    def parameter_mask(self) -> torch.Tensor:
        """Boolean [P] mask of trainable parameters (buffers such as running stats excluded)."""
        mask = torch.zeros(self.size, dtype=torch.bool)
        for e in self.entries:
            if e.kind == "parameter":
                mask[e.offset : e.stop] = True
        return mask

    # ------------------------------------------------------------------ conversion
    def flatten(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """state dict -> [P] float32 vector; raises ZooError on missing names or wrong shapes."""
        return self.flatten_batch({k: v.unsqueeze(0) for k, v in state.items()})[0]

    def flatten_batch(self, states: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Stacked state dict (each tensor [n, *shape]) -> [n, P] float32."""
        missing = [e.name for e in self.entries if e.name not in states]
        extra = sorted(set(states) - set(self.names))
        if missing or extra:
            raise ZooError(f"state dict does not match the layout: missing {missing}, unexpected {extra}")
        n = next(iter(states.values())).shape[0]
        out = torch.empty(n, self.size, dtype=torch.float32)
        for e in self.entries:
            t = states[e.name]
            if tuple(t.shape[1:]) != e.shape or t.shape[0] != n:
                raise ZooError(f"tensor {e.name!r} has shape {tuple(t.shape[1:])}, layout expects {e.shape}")
            out[:, e.offset : e.stop] = t.detach().reshape(n, -1).to(torch.float32)
        return out

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """[P] vector -> state dict with the original dtypes and shapes."""
        return {k: v[0] for k, v in self.unflatten_batch(flat.unsqueeze(0)).items()}

    def unflatten_batch(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """[n, P] -> stacked state dict (each tensor [n, *shape]); float tensors are views of ``flat``."""
        if flat.ndim != 2 or flat.shape[1] != self.size:
            raise ZooError(f"weights of shape {tuple(flat.shape)} do not fit this layout: expected [n, {self.size}]")
        n = flat.shape[0]
        out = {}
        for e in self.entries:
            t = flat[:, e.offset : e.stop].reshape(n, *e.shape)
            dtype = getattr(torch, e.dtype)
            out[e.name] = t if dtype == torch.float32 else t.to(dtype)
        return out

    # ------------------------------------------------------------------ serialization
    def to_json(self) -> dict:
        return {
            "arch": dict(self.arch),
            "entries": [
                {"name": e.name, "shape": list(e.shape), "offset": e.offset, "dtype": e.dtype, "kind": e.kind}
                for e in self.entries
            ],
        }

    @classmethod
    def from_json(cls, d: Mapping) -> Layout:
        entries = tuple(
            Entry(x["name"], tuple(int(s) for s in x["shape"]), int(x["offset"]), x["dtype"], x["kind"])
            for x in d["entries"]
        )
        return cls(entries, dict(d.get("arch", {})))

    def key(self) -> str:
        """Short stable name: architecture name plus a hash of names, shapes and dtypes."""
        sig = json.dumps([[e.name, list(e.shape), e.dtype] for e in self.entries]).encode()
        return f"{self.arch.get('name', 'net')}-{hashlib.sha256(sig).hexdigest()[:10]}"

    def build(self) -> nn.Module:
        """A fresh module of this layout's architecture (weights random; load a state dict next)."""
        return build_model(self.arch)


_EXACT_IN_FLOAT32 = (torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32)


def layout_of(module: nn.Module, arch: Mapping | None = None) -> Layout:
    """Derive the layout of a module from its state dict (parameters and buffers)."""
    param_names = {n for n, _ in module.named_parameters()}
    entries, offset = [], 0
    for name, t in module.state_dict().items():
        if t.dtype not in _EXACT_IN_FLOAT32:
            raise ZooError(f"tensor {name!r} has dtype {t.dtype}, which a float32 layout cannot hold exactly")
        e = Entry(
            name,
            tuple(t.shape),
            offset,
            str(t.dtype).removeprefix("torch."),
            "parameter" if name in param_names else "buffer",
        )
        entries.append(e)
        offset = e.stop
    return Layout(tuple(entries), dict(arch or {}))
