"""WeightDataModule: batches of (weights, target) from a zoo, split by model id, normalized per tensor.

A sample is one (model, checkpoint); all checkpoints of a model land in one split (seeded shuffle of
model ids). Weights of every layout are padded into one WeightSpace. Reads are vectorized: the whole
selection is loaded into an in-memory tensor when it fits (``cache``), otherwise each batch is one
``z.weights`` read (batches are then grouped by layout and checkpoint). Per-tensor mean/std are fitted
on the training split only and applied once to the cache; augmentations run on raw weights (a
training batch is de-normalized, augmented and normalized again).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

import zoo
from wsl.augment import Augmenter, augment_config
from wsl.space import WeightSpace
from wsl.targets import TargetSpec, target_spec, targets
from zoo.errors import ZooError
from zoo.query import select

SPLITS = ("train", "val", "test")


class Normalizer:
    """Affine normalization ``(w - mean) / std`` on real entries (padding stays 0), per tensor or per entry.

    ``per="tensor"`` (the default): one mean and std per tensor. ``per="entry"``: one per weight position over the
    training models, as DWSNets normalizes its INR sets. Per tensor keeps a model's fixed pattern: in a zoo whose
    models share an initialization (INR sets) that pattern is the same for every model and the per-model signal is
    a few percent of it (first SIREN layer: 0.019 per-entry spread vs 0.31 per tensor), which permutation-invariant
    encoders pool into near-constants; per entry removes the shared pattern and scales what differs to unit size.
    Per-entry statistics are not permutation-symmetric: use them where the models share a frame.
    """

    def __init__(self, space: WeightSpace, mean: Sequence[float], std: Sequence[float]):
        self.space = space
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        if len(self.mean) == space.size and len(self.std) == space.size:
            self.per = "entry"
            self._mean, self._std = torch.tensor(self.mean), torch.tensor(self.std)
        elif len(self.mean) == len(space.slots) and len(self.std) == len(space.slots):
            self.per = "tensor"
            counts = torch.tensor([s.numel for s in space.slots])
            self._mean = torch.tensor(self.mean).repeat_interleave(counts)
            self._std = torch.tensor(self.std).repeat_interleave(counts)
        else:
            raise ZooError(
                f"normalizer statistics of length {len(self.mean)}/{len(self.std)} fit neither the space's "
                f"{len(space.slots)} tensors nor its {space.size} entries"
            )

    @classmethod
    def fit(
        cls, space: WeightSpace, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], per: str = "tensor"
    ) -> Normalizer:
        """Statistics over the real entries of every tensor (``per="tensor"``) or of every weight position
        (``per="entry"``; a position no training model has gets mean 0, std 1) in ``(w [n, P], layout [n])``."""
        if per not in ("tensor", "entry"):
            raise ZooError(f"data.normalize must be tensor or entry, got {per!r}")
        if per == "entry":
            e0, e1, e2 = (torch.zeros(space.size, dtype=torch.float64) for _ in range(3))
            for w, layout in batches:
                m = space.mask(layout).double()
                v = w.double() * m
                e0 += m.sum(0)
                e1 += v.sum(0)
                e2 += (v * v).sum(0)
            if not (e0 > 0).any():
                raise ZooError("cannot fit the normalization: the training split is empty")
            n = e0.clamp(min=1)
            mean = e1 / n
            std = (e2 / n - mean**2).clamp(min=0).sqrt()
            std = torch.where(std > 1e-8, std, torch.ones_like(std))
            return cls(space, mean.tolist(), std.tolist())
        k = len(space.slots)
        s0, s1, s2 = (
            torch.zeros(k, dtype=torch.float64),
            torch.zeros(k, dtype=torch.float64),
            torch.zeros(k, dtype=torch.float64),
        )
        for w, layout in batches:
            m = space.mask(layout)
            for j, s in enumerate(space.slots):
                v, mm = w[:, s.offset : s.stop].double(), m[:, s.offset : s.stop]
                s0[j] += mm.sum()
                s1[j] += (v * mm).sum()
                s2[j] += (v * v * mm).sum()
        if (s0 == 0).any():
            raise ZooError("cannot fit the normalization: the training split is empty")
        mean = s1 / s0
        std = (s2 / s0 - mean**2).clamp(min=0).sqrt()
        std = torch.where(std > 1e-8, std, torch.ones_like(std))
        return cls(space, mean.tolist(), std.tolist())

    def __call__(self, w: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        """[n, P] raw padded -> normalized (padded entries stay 0)."""
        dev = w.device
        out = (w - self._mean.to(dev)).div_(self._std.to(dev))
        return out.masked_fill_(~self.space.mask(layout), 0.0)

    def inverse(self, w: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        """Normalized -> raw padded weights."""
        dev = w.device
        out = (w * self._std.to(dev)).add_(self._mean.to(dev))
        return out.masked_fill_(~self.space.mask(layout), 0.0)

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std}


class _Samples(Dataset):
    """Indexed by a list of sample rows: returns the whole batch at once (one read)."""

    def __init__(self, dm: WeightDataModule, rows: np.ndarray):
        self.dm, self.rows = dm, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: Sequence[int]) -> dict:
        return self.dm.batch(self.rows[np.asarray(idx)])


class _GroupedBatches(torch.utils.data.Sampler):
    """Batches whose samples share a layout and checkpoint (one store read each); order seeded per epoch."""

    def __init__(self, groups: np.ndarray, batch_size: int, shuffle: bool, seed: int):
        self.groups, self.batch_size, self.shuffle, self.seed, self.epoch = groups, batch_size, shuffle, seed, 0

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        out = []
        for g in np.unique(self.groups):
            members = np.nonzero(self.groups == g)[0]
            if self.shuffle:
                members = rng.permutation(members)
            out += [members[i : i + self.batch_size].tolist() for i in range(0, len(members), self.batch_size)]
        if self.shuffle:
            out = [out[i] for i in rng.permutation(len(out))]
        return out

    def __iter__(self):
        batches = self._batches()
        self.epoch += 1
        return iter(batches)

    def __len__(self) -> int:
        return len(self._batches())


def open_zoo(zoo_or_path: str | os.PathLike | zoo.Zoo) -> zoo.Zoo:
    """A zoo, opened when given as a path."""
    if isinstance(zoo_or_path, (str, os.PathLike)):
        return zoo.open(zoo_or_path)
    return zoo_or_path


def checkpoint_indices(z: zoo.Zoo, spec: int | Sequence[int] | str) -> list[int]:
    """Sorted checkpoint indices of ``spec`` (an index, a list of indices, negative from the end, or "all")."""
    c = len(z.checkpoint_epochs)
    if isinstance(spec, str):
        if spec != "all":
            raise ZooError(f"data.checkpoints must be an index, a list of indices or 'all', got {spec!r}")
        return list(range(c))
    if isinstance(spec, bool) or not isinstance(spec, (int, np.integer, list, tuple)):
        raise ZooError(f"checkpoints must be an index, a list of indices or 'all', got {spec!r}")
    idx = [int(spec)] if isinstance(spec, (int, np.integer)) else [int(i) for i in spec]
    bad = [i for i in idx if not -c <= i < c]
    if bad or not idx:
        raise ZooError(
            f"checkpoints {bad or idx} out of range: this zoo has {c} checkpoints (epochs {z.checkpoint_epochs})"
        )
    return sorted({i % c for i in idx})


def select_samples(
    z: zoo.Zoo, target: TargetSpec, checkpoints: int | Sequence[int] | str, query: str | None = None
) -> pd.DataFrame:
    """One row per (done model, checkpoint) the selection keeps: model_id, checkpoint, layout, target."""
    models = z.models
    if "status" in models:
        models = models[models["status"] == "done"]
    if query:
        models = select(models, str(query), "data.query")
    if models.empty:
        raise ZooError("no trained (status done) model matches the selection")
    ck = checkpoint_indices(z, checkpoints)
    samples = pd.DataFrame(
        {"model_id": np.repeat(models["model_id"].to_numpy(), len(ck)), "checkpoint": np.tile(ck, len(models))}
    )
    samples = samples.merge(models[["model_id", "layout"]], on="model_id")
    return targets(z, target, samples)


class ZooDataset(Dataset):
    """A zoo's weights and one target as a plain torch ``Dataset``: item i is (the stored flat weights [P] of the
    i-th done model at ``checkpoint``, its target), for any training loop (``WeightDataModule`` adds splits,
    normalization, padding and augmentation on top of the same selection).

    ``zoo``: a path or an opened Zoo; ``checkpoint``: an index (negative from the end); ``target``: a name or
    mapping of ``wsl.targets`` (``test_accuracy``, ...); ``query``: a filter over the models table that runs no
    code. Weights are read from the store per item (raw, not normalized; ``canonical``: the re-based copy);
    a zoo of several layouts gives items of several lengths (batch them per layout, ``samples["layout"]``).
    """

    def __init__(
        self,
        zoo: str | os.PathLike | zoo.Zoo,
        checkpoint: int = -1,
        target: str | Mapping = "test_accuracy",
        canonical: bool = False,
        query: str | None = None,
    ):
        self.zoo = open_zoo(zoo)
        self.target: TargetSpec = target_spec(target)
        if isinstance(checkpoint, bool) or not isinstance(checkpoint, (int, np.integer)):
            raise ZooError(f"checkpoint must be one index (negative from the end), got {checkpoint!r}")
        self.canonical = bool(canonical)
        self.samples = select_samples(self.zoo, self.target, int(checkpoint), query).reset_index(drop=True)
        dtype = torch.float32 if self.target.kind == "regression" else torch.long  # classes: indices into .classes
        self._y = torch.as_tensor(self.samples["target"].to_numpy().copy(), dtype=dtype)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= int(i) < len(self):
            raise IndexError(f"item {i} of a ZooDataset of {len(self)}")
        row = self.samples.iloc[int(i)]
        w = self.zoo.weights([int(row["model_id"])], checkpoint=int(row["checkpoint"]), canonical=self.canonical)
        return w[0], self._y[int(i)]


class WeightDataModule(L.LightningDataModule):
    """Zoo weights and the values of one target (what the encoder predicts) as Lightning dataloaders.

    Args: ``z`` path or opened Zoo; ``target`` name or mapping (see ``wsl.targets``); ``checkpoints`` an
    index, a list of indices (negative from the end) or "all"; ``canonical`` read re-based weights;
    ``split`` fractions of model ids; ``cache`` True | False | "auto" (when the selection fits
    ``cache_limit_mb``); ``query`` a filter over the models table that runs no code (:func:`zoo.query.select`);
    ``buffers`` include BatchNorm running statistics; ``augment`` config for :class:`wsl.augment.Augmenter`;
    ``space`` reuse a trained encoder's WeightSpace (prediction); ``normalize`` "tensor" or "entry" statistics
    (:class:`Normalizer`).
    """

    def __init__(
        self,
        z: str | os.PathLike | zoo.Zoo,
        target: str | Mapping = "test_accuracy",
        checkpoints: int | Sequence[int] | str = -1,
        canonical: bool = False,
        split: Sequence[float] = (0.7, 0.15, 0.15),
        seed: int = 0,
        batch_size: int = 64,
        cache: bool | str = "auto",
        cache_limit_mb: float = 2048,
        query: str | None = None,
        buffers: bool = True,
        augment: Mapping | None = None,
        space: WeightSpace | None = None,
        normalizer: Mapping | None = None,
        normalize: str = "tensor",
    ):
        super().__init__()
        self.zoo = open_zoo(z)
        self.target: TargetSpec = target_spec(target)
        self.checkpoints, self.canonical, self.seed = checkpoints, bool(canonical), int(seed)
        self.split = [float(f) for f in split]
        if len(self.split) != 3 or min(self.split) < 0 or abs(sum(self.split) - 1) > 1e-6:
            raise ZooError(f"data.split must be three non-negative fractions summing to 1, got {list(split)}")
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ZooError(f"data.batch_size must be >= 1, got {batch_size}")
        self.cache, self.cache_limit_mb, self.query, self.buffers = cache, float(cache_limit_mb), query, bool(buffers)
        self.augment_cfg = augment
        self.space = space
        self._normalizer_dict = normalizer
        if normalize not in ("tensor", "entry"):
            raise ZooError(f"data.normalize must be tensor or entry, got {normalize!r}")
        self.normalize = normalize
        self._ready = False

    # ------------------------------------------------------------------ selection
    def _checkpoint_indices(self) -> list[int]:
        return checkpoint_indices(self.zoo, self.checkpoints)

    def _select(self) -> pd.DataFrame:
        return select_samples(self.zoo, self.target, self.checkpoints, self.query)

    def _split_ids(self, ids: np.ndarray) -> dict[int, str]:
        """Model id -> train | val | test: the zoo's stored ``split`` column when it has one (INR zoos: fixed
        by image, zoo.inr), else a ``seed``-shuffled cut by ``split`` fractions."""
        ids = np.unique(ids)
        models = self.zoo.models
        if "split" in models:
            stored = dict(zip(models["model_id"].astype(int), models["split"].astype(str)))
            known = {"train": "train", "validation": "val", "val": "val", "test": "test"}
            out = {int(i): known.get(stored[int(i)], "") for i in ids}
            bad = sorted({stored[i] for i, v in out.items() if not v})
            if bad:
                raise ZooError(f"the zoo's split column has values {bad[:3]}; expected train, validation or test")
            if not any(v == "train" for v in out.values()):
                raise ZooError("the zoo's stored split leaves no training models in this selection")
            return out
        if len(ids) < 3:
            raise ZooError(f"need at least 3 models to split into train/val/test, the selection has {len(ids)}")
        perm = np.random.default_rng(self.seed).permutation(ids)
        n_val = max(1, int(round(self.split[1] * len(ids)))) if self.split[1] > 0 else 0
        n_test = max(1, int(round(self.split[2] * len(ids)))) if self.split[2] > 0 else 0
        n_train = len(ids) - n_val - n_test
        if n_train < 1:
            raise ZooError(f"split {self.split} leaves no training models out of {len(ids)}")
        names = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
        return {int(i): s for i, s in zip(perm, names)}

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        samples = self._select()
        keys = sorted(samples["layout"].unique())
        if self.space is None:
            self.space = WeightSpace([self.zoo.layouts[k] for k in keys], buffers=self.buffers)
        index = {k: self.space.add_layout(self.zoo.layouts[k]) for k in keys}
        samples["layout_index"] = samples["layout"].map(index).astype(np.int64)
        split = self._split_ids(samples["model_id"].to_numpy())
        samples["split"] = samples["model_id"].map(split)
        self.samples = samples
        self._y = torch.as_tensor(
            samples["target"].to_numpy().copy(), dtype=torch.float32 if self.target.kind == "regression" else torch.long
        )
        self._layout = torch.as_tensor(samples["layout_index"].to_numpy().copy())
        self._group = samples.groupby(["layout", "checkpoint"]).ngroup().to_numpy()
        nbytes = len(samples) * self.space.size * 4
        self._w = self._w_canon = None
        use_cache = self.cache is True or (self.cache == "auto" and nbytes <= self.cache_limit_mb * 2**20)
        datasets = None
        if augment_config(self.augment_cfg)["mixup"]["repair"]:  # REPAIR reads each layout's training data
            models = self.zoo.models
            datasets = {}
            for k in keys:
                names = models.loc[models["layout"] == k, "dataset"].unique()
                if len(names) == 1:
                    datasets[index[k]] = self.zoo.dataset(str(names[0]))
        self.augmenter = Augmenter(self.space, self.augment_cfg, self.num_classes, self.seed, datasets)
        if use_cache:
            self._w = self._read_all(self.canonical)
            if self.augmenter.needs_canonical and not self.canonical:
                try:
                    self._w_canon = self._read_all(True)
                except ZooError:
                    self._w_canon = None  # no re-based weights in the store: mixup aligns pairs itself
        if self._normalizer_dict is not None:
            self.normalizer = Normalizer(self.space, self._normalizer_dict["mean"], self._normalizer_dict["std"])
        else:
            train = np.nonzero(samples["split"].to_numpy() == "train")[0]
            self.normalizer = Normalizer.fit(self.space, self._raw_batches(train), self.normalize)
        for cache in (self._w, self._w_canon):  # the cache holds normalized weights: a batch is one index op
            if cache is not None:
                for i in range(0, len(cache), 4096):
                    cache[i : i + 4096] = self.normalizer(cache[i : i + 4096], self._layout[i : i + 4096])
        self._ready = True

    def _read(self, rows: np.ndarray, canonical: bool) -> torch.Tensor:
        """Padded raw weights of sample rows: one store read per (layout, checkpoint) present."""
        s = self.samples
        assert self.space is not None  # set by setup()
        out = torch.zeros(len(rows), self.space.size)
        groups = self._group[rows]
        for g in np.unique(groups):
            sel = np.nonzero(groups == g)[0]
            r = rows[sel]
            ids = s["model_id"].to_numpy()[r].tolist()
            ck = int(s["checkpoint"].to_numpy()[r[0]])
            w = self.zoo.weights(ids, checkpoint=ck, canonical=canonical)
            out[sel] = self.space.pad(w, int(s["layout_index"].to_numpy()[r[0]]))
        return out

    def _read_all(self, canonical: bool) -> torch.Tensor:
        return self._read(np.arange(len(self.samples)), canonical)

    def _raw_batches(self, rows: np.ndarray) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(rows), 4096 if self._w is not None else self.batch_size):
            r = rows[i : i + (4096 if self._w is not None else self.batch_size)]
            w = self._w[torch.as_tensor(r)] if self._w is not None else self._read(r, self.canonical)
            yield w, self._layout[torch.as_tensor(r)]

    # ------------------------------------------------------------------ batches
    @property
    def num_classes(self) -> int | None:
        return len(self.target.classes) if self.target.kind == "classification" else None

    def batch(self, rows: np.ndarray) -> dict:
        """Normalized, unaugmented batch of sample rows: w [n, P], y, layout [n], row [n]."""
        r = torch.as_tensor(rows, dtype=torch.long)
        layout = self._layout[r]
        w = self._w[r] if self._w is not None else self.normalizer(self._read(rows, self.canonical), layout)
        out = {"w": w, "y": self._y[r], "layout": layout, "row": r}
        if self._w_canon is not None:
            out["w_canon"] = self._w_canon[r]
        elif self.canonical:
            out["w_canon"] = w  # already re-based
        return out

    def rows(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise ZooError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
        self.setup()
        return np.nonzero(self.samples["split"].to_numpy() == split)[0]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        rows = self.rows(split)
        ds = _Samples(self, rows)
        sampler: _GroupedBatches | BatchSampler
        if self._w is None:
            sampler = _GroupedBatches(self._group[rows], self.batch_size, shuffle, self.seed)
        else:
            base = (
                RandomSampler(ds, generator=torch.Generator().manual_seed(self.seed))
                if shuffle
                else SequentialSampler(ds)
            )
            sampler = BatchSampler(base, self.batch_size, drop_last=False)
        return DataLoader(ds, sampler=sampler, batch_size=None, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def transform(self, batch: dict, train: bool) -> dict:
        """Augment a training batch: back to raw weights, augment, normalize again."""
        batch = dict(batch)
        if train and self.augmenter.active:
            layout = batch["layout"]
            for key in ("w", "w_canon"):
                if key in batch:
                    batch[key] = self.normalizer.inverse(batch[key], layout)
            batch = self.augmenter(batch)
            batch["w"] = self.normalizer(batch["w"], layout)
        batch.pop("w_canon", None)
        return batch

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        training = self.trainer is not None and self.trainer.training
        return self.transform(batch, training)

    def iter_batches(self, split: str, augment: bool = False) -> Iterator[dict]:
        """Normalized batches of one split without a Trainer (evaluation, benchmarks)."""
        for batch in self._loader(split, augment):
            yield self.transform(batch, augment)
