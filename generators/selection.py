"""Model selection that does not reward copying: a generator's samples must be good AND new.

Selecting a generator's epoch on its samples' training-split accuracy alone (``val/sample_train_acc``)
rewards reproducing the training models: on a 128-seed MNIST MLP zoo that criterion kept rising while the
held-out models' flow-matching loss tripled, and the samples it picked sat at 0.12x the training models'
nearest-neighbour distance. Here a sample counts only when it is new, on validation data only:

- *good*: the sample's TRAINING-split accuracy reaches the 5th percentile of the real models' (training and
  validation models, measured once on the training split);
- *novel*: its L2 distance over trainable parameters, in the generator's frame, to the nearest TRAINING
  model is at least the median of that distance for the held-out VALIDATION models, real networks the
  generator never saw: the distance at which a trained model is new.

``val/novel_acc`` (what ``zoo fit`` follows by default) is the samples' mean training-split accuracy, each
discounted by how close it sits to a training model: accuracy x min(1, nearest distance / the novelty
distance). A copy earns 0, a sample as far from the training models as a held-out model earns its whole
accuracy, noise far from every model earns only its low accuracy. It is continuous, so a run whose samples
are never fully novel still has a best epoch: the one whose samples trade the least closeness for accuracy
(a share of novel samples alone stayed 0 at every validation on the dwf-mlp-mnist zoo and picked the first).
``val/good_novel`` is the share both good and novel (``zoo diagnose``'s ``good_and_novel``, on training data).
The test split is never read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

import zoo
from zoo.datasets import Dataset
from zoo.errors import ZooError
from zoo.layout import Layout

GOOD_PERCENTILE = 5.0  # good: training-split accuracy >= this percentile of the real models' (as zoo diagnose)
NOVEL_QUANTILE = 0.5  # novel: nearest-training distance >= this quantile of the validation models' own


def nearest_distance(a: torch.Tensor, b: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """[n] L2 distance of each row of ``a`` [n, D] to its nearest row of ``b`` [m, D], in row chunks."""
    out = [torch.cdist(a[i : i + chunk].double(), b.double()).min(1).values for i in range(0, len(a), chunk)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


@dataclass
class NoveltyReference:
    """What a sample is measured against: the training models' parameters and the two thresholds."""

    layout: Layout
    train_params: torch.Tensor  # [n_train, P_params] in the generator's frame
    good_acc: float  # training-split accuracy a good sample reaches
    novel_l2: float  # nearest-training distance a novel sample reaches
    dataset: Dataset

    @classmethod
    def from_models(cls, layout: Layout, train: torch.Tensor, val: torch.Tensor, dataset: Dataset) -> NoveltyReference:
        """Thresholds from the training and validation models (flat weights [n, P], one frame), training split only."""
        if dataset.kind != "classification":
            raise ZooError("val/good_novel needs a classification zoo (accuracy); use monitor=val/loss")
        if len(train) < 1 or len(val) < 1:
            raise ZooError("val/good_novel needs at least one training and one validation model")
        mask = layout.parameter_mask()
        acc = zoo.evaluate(layout, torch.cat([train, val]), dataset, split="train")["acc"].numpy()
        val_nn = nearest_distance(val[:, mask], train[:, mask]).numpy()
        return cls(
            layout=layout,
            train_params=train[:, mask].contiguous(),
            good_acc=float(np.percentile(acc, GOOD_PERCENTILE)),
            novel_l2=float(np.quantile(val_nn, NOVEL_QUANTILE)),
            dataset=dataset,
        )

    def score(self, samples: torch.Tensor) -> dict[str, float]:
        """For flat samples [k, P]: mean training-split accuracy, the novel share, the accuracy discounted by
        closeness to the training models, the good-and-novel share, and the samples' median nearest distance
        over the novelty distance. Non-finite samples count as neither good nor novel and earn 0."""
        k = len(samples)
        finite = torch.isfinite(samples).all(1)
        acc = torch.zeros(k, dtype=torch.float64)
        nn = torch.zeros(k, dtype=torch.float64)
        if finite.any():
            ok = samples[finite]
            acc[finite] = zoo.evaluate(self.layout, ok, self.dataset, split="train")["acc"]
            nn[finite] = nearest_distance(ok[:, self.layout.parameter_mask()], self.train_params)
        novel = finite & (nn >= self.novel_l2)
        good = finite & (acc >= self.good_acc)
        ratio = float(nn[finite].median()) / self.novel_l2 if finite.any() and self.novel_l2 > 0 else 0.0
        return {
            "sample_train_acc": float(acc.mean()),
            "sample_novel": float(novel.double().mean()),
            "novel_acc": float((acc * (nn / self.novel_l2).clamp(max=1.0)).mean()) if self.novel_l2 > 0 else 0.0,
            "good_novel": float((good & novel).double().mean()),
            "sample_nn_over_val": ratio,
        }
