"""One canonical frame for a zoo's models, and the one rule that picks its reference.

``zoo align``, the generators' training data and the memorization diagnostics all put a zoo's weights into
one permutation frame. They share :func:`choose_reference` (a choice made on TRAINING-split metrics only:
the test split is for reported numbers, never for a choice) and :func:`canonical_frame` (the store's
canonical weights when ``zoo align`` wrote them, else weights aligned here by Git Re-Basin).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from zoo.errors import ZooError
from zoo.layout import Layout
from zoo.rebasin.align import align_flat, choose_reference
from zoo.store import Zoo

MODES = ("auto", "store", "align", "raw")


@dataclass
class Frame:
    """Weights of some models in one frame, and how they got there."""

    weights: torch.Tensor  # [n, P], rows in the order of the ids asked for
    mode: str  # "store" (``zoo align``'s canonical weights), "aligned" (aligned here) or "raw"
    reference_id: int | None  # the model every other was aligned to (None: raw, or unknown for a stored frame)


def stored_reference(z: Zoo, layout_key: str, ids: Sequence[int]) -> int | None:
    """``zoo align``'s reference for these models of one layout: one id among ``ids``, else None."""
    table = z.table("alignment")
    if table is None:
        return None
    refs = table[(table["layout"] == layout_key) & table["model_id"].isin(list(ids))]["reference_id"].unique()
    return int(refs[0]) if len(refs) == 1 and int(refs[0]) in set(int(i) for i in ids) else None


def canonical_frame(
    z: Zoo,
    layout: Layout,
    ids: np.ndarray,
    raw: torch.Tensor,
    models: pd.DataFrame,
    mode: str = "auto",
    *,
    checkpoint: int = -1,
    seed: int = 0,
) -> Frame:
    """The weights ``raw`` [n, P] of models ``ids`` (sorted; one layout of the zoo ``z``) in one canonical frame.

    ``mode``: "store" reads ``zoo align``'s canonical weights (a ZooError when it wrote none for this
    checkpoint); "align" aligns ``raw`` here to :func:`choose_reference` over ``models`` (the rows a caller may
    choose among, e.g. its training split); "auto" is "store" when the zoo has them, else "align"; "raw"
    leaves the weights as trained.
    """
    if mode not in MODES:
        raise ZooError(f"canonical must be one of {list(MODES)}, got {mode!r}")
    ids = np.asarray(ids, dtype=np.int64)
    if mode == "raw":
        return Frame(raw, "raw", None)
    if mode in ("auto", "store"):
        try:
            weights = z.weights(ids.tolist(), checkpoint=checkpoint, canonical=True)
        except ZooError:
            if mode == "store":
                raise
        else:
            key = next((k for k, v in z.layouts.items() if v is layout or v.to_json() == layout.to_json()), None)
            return Frame(weights, "store", None if key is None else stored_reference(z, key, ids))
    ref = choose_reference(models)
    aligned, _ = align_flat(layout, raw[int(np.searchsorted(ids, ref))], raw, seed=seed)
    return Frame(aligned, "aligned", ref)
