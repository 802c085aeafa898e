"""Dataset embeddings from a few labelled examples per class: a Set Transformer over per-class example sets.

A task is given as ``support [B, C, S, F]``: for each of B tasks, C classes (in label order) with S examples
(``shots``) of F features each. Each class's S examples are one set (ISAB with inducing points, then PMA to
one vector: invariant to the order of the shots). The C class vectors become tokens tagged with a learned
embedding of their label; a self-attention block lets each see the others, and the tokens are placed by
their label (concatenated in label order) and mapped linearly to the embedding [B, E]. A task is a set of
(label, examples) pairs: the order in which they are listed changes nothing, but the label is kept because
output unit k of the generated classifier answers label k, so swapping which digit carries which label is a
different task and must give a different embedding. Placing class vectors by label, rather than pooling them
(a PMA over the tokens, tried first), makes the embedding additive over classes: with ~200 training tasks
the pooled version memorized task combinations and generalized worse to unseen ones. Shapes: see ``forward``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

import zoo
from zoo.errors import ZooError


class MAB(nn.Module):
    """Multihead attention block of the Set Transformer, pre-norm: H = X + MHA(LN(X), LN(Y)), out = H + rFF(LN(H)).

    (Post-norm, as published, let a PMA seed's LayerNorm wash out the set it pooled: embeddings collapsed to a
    constant on the toy tasks.)"""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_x, self.ln_y, self.ln_h = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x [N, n, d] attends to y [N, m, d] -> [N, n, d]."""
        y = self.ln_y(y)
        h = x + self.attn(self.ln_x(x), y, y, need_weights=False)[0]
        return h + self.ff(self.ln_h(h))


class ISAB(nn.Module):
    """Induced set attention: m learned inducing points attend to the set, the set attends back (O(n m))."""

    def __init__(self, dim: int, heads: int, inducing: int):
        super().__init__()
        self.points = nn.Parameter(torch.randn(1, inducing, dim) * dim**-0.5)
        self.mab1, self.mab2 = MAB(dim, heads), MAB(dim, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, n, d] -> [N, n, d], permutation-equivariant over the n elements."""
        h = self.mab1(self.points.expand(x.shape[0], -1, -1), x)
        return self.mab2(x, h)


class PMA(nn.Module):
    """Pooling by multihead attention: k learned seeds attend to the set -> [N, k, d], order-invariant."""

    def __init__(self, dim: int, heads: int, seeds: int = 1):
        super().__init__()
        self.seeds = nn.Parameter(torch.randn(1, seeds, dim) * dim**-0.5)
        self.mab = MAB(dim, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mab(self.seeds.expand(x.shape[0], -1, -1), x)


class DatasetEncoder(nn.Module):
    """Set Transformer embedding of a classification task from ``shots`` examples per class."""

    def __init__(
        self, features: int, classes: int, hidden: int = 128, embed_dim: int = 128, heads: int = 4, inducing: int = 32
    ):
        super().__init__()
        self.features, self.classes = int(features), int(classes)
        self.embed = nn.Sequential(nn.Linear(features, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.within = ISAB(hidden, heads, inducing)
        self.class_pool = PMA(hidden, heads, 1)
        self.label = nn.Embedding(classes, hidden)
        self.across = MAB(hidden, heads)
        self.out = nn.Sequential(nn.LayerNorm(hidden * classes), nn.Linear(hidden * classes, embed_dim))

    def class_vectors(self, support: torch.Tensor) -> torch.Tensor:
        """support [B, C, S, F] -> one vector per class [B, C, hidden] (invariant to the order of the shots)."""
        b, c, s, f = support.shape
        h = self.embed(support.reshape(b * c, s, f))
        pooled = self.class_pool(self.within(h))[:, 0] + h.mean(1)  # attention pool + DeepSets mean path
        return pooled.reshape(b, c, -1)

    def forward(self, support: torch.Tensor) -> torch.Tensor:
        """support [B, C, S, F] (classes in label order) -> task embedding [B, embed_dim]."""
        if support.ndim != 4 or support.shape[1] != self.classes or support.shape[3] != self.features:
            raise ZooError(
                f"support set of shape {tuple(support.shape)} does not fit the dataset encoder: expected"
                f" [tasks, {self.classes} classes, shots, {self.features} features]"
            )
        tokens = self.class_vectors(support) + self.label.weight[None]
        tokens = self.across(tokens, tokens)
        return self.out(tokens.flatten(1))  # tokens in label order


def check_task(dataset: zoo.Dataset, features: int, classes: int, shots: int, input_shape: tuple | None = None) -> None:
    """One-line errors for a dataset the generator cannot be conditioned on (kind, input size, classes, shots)."""
    name = dataset.name
    if dataset.kind != "classification":
        raise ZooError(f"dataset {name!r} is a {dataset.kind} task; this generator makes classifiers")
    shape = tuple(dataset.input_shape)
    n_features = int(torch.tensor(shape).prod()) if shape else 1
    if n_features != features or (input_shape is not None and shape != tuple(input_shape)):
        want = tuple(input_shape) if input_shape is not None else (features,)
        raise ZooError(f"dataset {name!r} has inputs of shape {shape}, but the zoo's architecture takes {want}")
    if dataset.num_outputs != classes:
        raise ZooError(
            f"dataset {name!r} has {dataset.num_outputs} classes, but the zoo's architecture has {classes} outputs"
        )
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < 1:
        raise ZooError(f"shots must be a positive integer (examples per class), got {shots!r}")
    counts = torch.bincount(dataset.y_train, minlength=classes)
    short = [k for k in range(classes) if int(counts[k]) < shots]
    if short:
        k = short[0]
        raise ZooError(f"dataset {name!r}: class {k} has {int(counts[k])} training examples, fewer than {shots} shots")


class ClassPools:
    """Training examples of several tasks grouped by class, padded: draws support sets fast for a batch, on the
    device the pools were moved to (:meth:`to`); the random draws are made on the CPU, so a seed draws the same
    support sets on every device."""

    def __init__(self, datasets: list[zoo.Dataset], classes: int):
        longest = 1
        groups = []
        for d in datasets:
            X = d.X_train.reshape(len(d.X_train), -1)
            per = [X[d.y_train == k] for k in range(classes)]
            groups.append(per)
            longest = max(longest, max(len(p) for p in per))
        f = groups[0][0].shape[1] if groups else 0
        self.X = torch.zeros(len(datasets), classes, longest, f)  # [T, C, Nmax, F]
        self.counts = torch.zeros(len(datasets), classes, dtype=torch.int64)
        for t, per in enumerate(groups):
            for k, p in enumerate(per):
                self.X[t, k, : len(p)] = p
                self.counts[t, k] = len(p)
        self.fewest = int(self.counts.min()) if self.counts.numel() else 0  # checked here, not per draw on a GPU

    def to(self, device: torch.device | str) -> ClassPools:
        """These pools on ``device`` (themselves when already there)."""
        device = torch.device(device)
        if self.X.device == device:
            return self
        moved = copy.copy(self)
        moved.X, moved.counts = self.X.to(device), self.counts.to(device)
        return moved

    def draw(self, tasks: torch.Tensor, shots: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Support sets [B, C, shots, F] for task indices [B] (on the pools' device): ``shots`` distinct training
        examples per class."""
        if self.fewest < shots:
            raise ZooError(f"a class has {self.fewest} training examples, fewer than {shots} shots")
        tasks = tasks.to(self.X.device)
        counts = self.counts[tasks]  # [B, C]
        keys = torch.rand(*counts.shape, self.X.shape[2], generator=generator).to(self.X.device)  # CPU draws
        slot = torch.arange(self.X.shape[2], device=self.X.device)
        keys[slot[None, None] >= counts[..., None]] = 2.0  # padding is never drawn
        idx = keys.topk(shots, dim=2, largest=False).indices  # [B, C, S]
        x = self.X[tasks]  # [B, C, Nmax, F]
        return torch.gather(x, 2, idx[..., None].expand(-1, -1, -1, x.shape[3]))


def support_set(dataset: zoo.Dataset, classes: int, shots: int, generator: torch.Generator) -> torch.Tensor:
    """[1, C, shots, F] training examples of one dataset, drawn without replacement with ``generator``."""
    return ClassPools([dataset], classes).draw(torch.zeros(1, dtype=torch.int64), shots, generator)
