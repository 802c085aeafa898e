"""What a diagnosis compares: the training zoo's models in one frame (:class:`TrainSet`) and the groups of
weights set beside them (:class:`Method`: a samples zoo or a baseline), shared by the accuracy report
(:mod:`generators.diagnose.report`) and the INR report (:mod:`generators.diagnose.inr_report`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import zoo
from generators.diagnose.distances import align_to
from generators.diagnose.table import TRAIN
from zoo.datasets import Dataset
from zoo.errors import ZooError
from zoo.layout import Layout
from zoo.rebasin import canonical_frame

# good: test_acc >= this percentile of the training models' test_acc
# Default samples per baseline: the largest samples zoo's size up to this many. Baselines are yardsticks
# summarized by means and fractions (their standard error at 1,000 samples is ~3% of their spread); five
# baselines of 10,000 would be 50,000 more models to evaluate, align and search against the training zoo.
BASELINE_CAP = 1000


# ---------------------------------------------------------------------------------------------------- training side
@dataclass
class TrainSet:
    """The training zoo's done models of one layout: raw and canonical weights, the reference, test errors."""

    path: str
    layout_key: str
    layout: Layout
    ids: np.ndarray  # [m] model ids
    raw: torch.Tensor  # [m, P]
    canonical: torch.Tensor  # [m, P] aligned to ``reference``
    reference_id: int
    reference: torch.Tensor  # [P] the frame samples are aligned to
    canonical_mode: str  # "store" (``zoo align``'s weights) or "aligned" (aligned here)
    dataset: Dataset
    seed: int = 0

    def align(self, weights: torch.Tensor) -> torch.Tensor:
        """Flat weights [n, P] permuted into the training models' canonical frame (same functions)."""
        return align_to(self.layout, self.reference, weights, self.seed)


def as_zoo(z: str | Path | zoo.Zoo) -> zoo.Zoo:
    return z if isinstance(z, zoo.Zoo) else zoo.open(str(z))


def load_train(
    train_zoo: str | Path | zoo.Zoo,
    layout: Layout | None = None,
    canonical: str = "auto",
    seed: int = 0,
    data_root: str | None = None,
) -> TrainSet:
    """The done models of the training zoo (of ``layout`` when given) at their last checkpoint, in one frame.

    ``canonical``: "store" uses the zoo's canonical weights and ``zoo align``'s reference; "align" aligns here
    to the model with the best training accuracy; "auto" is "store" when the zoo has them, else "align".
    ``data_root``: where the zoo's data on disk is now, if it moved (``Zoo.dataset``).
    """
    if canonical not in ("auto", "store", "align"):
        raise ZooError(f"canonical must be auto, store or align, got {canonical!r}")
    z = as_zoo(train_zoo)
    models = z.models
    done = models[models["status"] == "done"]
    if layout is None:
        keys = sorted(set(done["layout"]))
        if len(keys) != 1:
            raise ZooError(f"the training zoo's done models span layouts {keys}; diagnose one layout at a time")
        key = keys[0]
    else:
        key = next((k for k, v in z.layouts.items() if v.to_json() == layout.to_json()), None)
        if key is None:
            raise ZooError(
                f"the samples' layout ({layout.arch.get('name', 'net')}, {layout.size} values) is not a "
                f"layout of the training zoo {z.path!r} (it holds {sorted(z.layouts)})"
            )
    sel = done[done["layout"] == key]
    if len(sel) < 2:
        raise ZooError(f"the training zoo has {len(sel)} done model(s) of layout {key}; diagnostics need at least 2")
    ids = np.sort(sel["model_id"].to_numpy(dtype=np.int64))
    lay = z.layouts[key]
    name = str(sel["dataset"].iloc[0]) if "dataset" in sel else None
    data = z.dataset(name, data_root=data_root)
    raw = z.weights(ids.tolist())
    if not torch.isfinite(raw).all():
        raise ZooError("some done training models have non-finite weights")
    frame = None
    if canonical in ("auto", "store"):
        try:
            frame = canonical_frame(z, lay, ids, raw, sel, "store")
        except ZooError:
            pass
        if frame is not None and frame.reference_id is None:  # a frame without its reference cannot align samples
            frame = None
        if frame is None and canonical == "store":
            raise ZooError(
                f"the training zoo has no canonical weights of layout {key} for its last checkpoints:"
                f" run `zoo align {z.path}` (or use canonical=align)"
            )
    if frame is None:
        frame = canonical_frame(z, lay, ids, raw, sel, "align", seed=seed)
    mode, canon, ref_id = frame.mode, frame.weights, int(frame.reference_id)
    reference = (canon if mode == "store" else raw)[int(np.searchsorted(ids, ref_id))].clone()
    return TrainSet(str(z.path), key, lay, ids, raw, canon, int(ref_id), reference, mode, data, seed)


# ---------------------------------------------------------------------------------------------------- samples side
@dataclass
class Method:
    """One group of samples to diagnose: a samples zoo, or a baseline built from the training zoo."""

    name: str
    kind: str  # "samples" | "baseline"
    weights: torch.Tensor  # [n_finite, P]
    ids: np.ndarray  # [n_finite] model ids (row numbers for baselines)
    total: int  # samples including those with no finite weights
    provenance: str  # zoo path or baseline description
    recalibrate: bool = False


def sample_method(z: zoo.Zoo, train_layout: Layout | None, name: str | None) -> tuple[Method, Layout]:
    """The done, finite-weight models of a samples zoo (one layout) as a Method."""
    models = z.models
    keys = sorted(set(models["layout"]))
    if len(keys) != 1:
        raise ZooError(f"samples zoo {z.path!r} holds several layouts {keys}; diagnose one layout at a time")
    layout = z.layouts[keys[0]]
    if train_layout is not None and layout.to_json() != train_layout.to_json():
        raise ZooError(f"samples zoo {z.path!r} has a different layout from the other samples zoos")
    done = np.sort(models.loc[models["status"] == "done", "model_id"].to_numpy(dtype=np.int64))
    W = z.weights(done.tolist()) if len(done) else torch.empty(0, layout.size)
    finite = torch.isfinite(W).all(1).numpy()
    gen = z.attrs.get("generator") or {}
    label = name or (gen.get("name") if isinstance(gen, Mapping) else None) or Path(z.path.rstrip("/")).stem
    return Method(str(label), "samples", W[torch.from_numpy(finite)], done[finite], len(models), z.path), layout


def unique_names(methods: list[Method]) -> None:
    """Make method names unique: samples zoos of one generator become ``dwf:<zoo name>``, then numbered;
    'train' stays reserved for the training models."""
    counts: dict[str, int] = {}
    for m in methods:
        counts[m.name] = counts.get(m.name, 0) + 1
    for m in methods:
        if m.kind == "samples" and (counts[m.name] > 1 or m.name == TRAIN):
            m.name = f"{m.name}:{Path(m.provenance.rstrip('/')).stem}"
    seen: dict[str, int] = {TRAIN: 1}
    for m in methods:
        base = m.name
        if base in seen:
            seen[base] += 1
            m.name = f"{base}-{seen[base]}"
        seen.setdefault(m.name, 1)


def json_default(x: Any) -> Any:
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    raise TypeError(f"not JSON serializable: {type(x).__name__}")
