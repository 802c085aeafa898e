"""Generated INRs as pictures: each sample's rendered image beside the training INR whose image is nearest.

A sampled INR (a SIREN over pixel coordinates, zoo.inr) has no target image: what it draws is its quality and
its novelty. :func:`nearest_renders` renders samples and training INRs on the zoo's coordinate grid and finds,
for each sample, the training INR whose rendered image is nearest (pixel L2), with the PSNR between the two (dB,
peak 1: high means the sample redraws that training image); :func:`write_nearest_png` writes them as a grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import zoo
from zoo.errors import ZooError
from zoo.inr import image_grid, image_shape, render_weights, write_png


@dataclass
class NearestRenders:
    """Rendered samples [n, H, W], their nearest training renders [n, H, W], which ones and how close."""

    samples: torch.Tensor
    nearest: torch.Tensor
    sample_ids: np.ndarray  # [n] model ids in the samples zoo
    train_ids: np.ndarray  # [n] model ids in the training zoo
    psnr: torch.Tensor  # [n] dB between each sample's image and its nearest training image


def _done(z: zoo.Zoo) -> np.ndarray:
    m = z.models
    return np.sort(m.loc[m["status"] == "done", "model_id"].to_numpy(dtype=np.int64))


def nearest_renders(samples_zoo: str | zoo.Zoo, train_zoo: str | zoo.Zoo, count: int = 16) -> NearestRenders:
    """The first ``count`` finished samples rendered, each with the training INR whose image is nearest."""
    s = samples_zoo if isinstance(samples_zoo, zoo.Zoo) else zoo.open(str(samples_zoo))
    t = train_zoo if isinstance(train_zoo, zoo.Zoo) else zoo.open(str(train_zoo))
    shape = image_shape(t.attrs)
    s_ids, t_ids = _done(s)[: max(1, int(count))], _done(t)
    if not len(s_ids) or not len(t_ids):
        raise ZooError("no finished INRs to render in the samples or the training zoo")
    s_img = render_weights(s.layout(int(s_ids[0])), s.weights(s_ids.tolist()), shape)
    t_img = render_weights(t.layout(int(t_ids[0])), t.weights(t_ids.tolist()), shape)
    a, b = s_img.reshape(len(s_img), -1).double(), t_img.reshape(len(t_img), -1).double()
    d2 = (a.square().sum(1, keepdim=True) + b.square().sum(1)[None] - 2 * a @ b.T).clamp_min(0)
    arg = d2.argmin(1)
    mse = (a - b[arg]).square().mean(1)
    return NearestRenders(s_img, t_img[arg], s_ids, t_ids[arg.numpy()], -10.0 * torch.log10(mse))


def write_nearest_png(path: str | Path, renders: NearestRenders, pairs_per_row: int = 4) -> str:
    """A PNG grid of (sample, nearest training INR) image pairs, ``pairs_per_row`` pairs to a row."""
    both = torch.stack([renders.samples, renders.nearest], 1).reshape(-1, *renders.samples.shape[1:])
    write_png(str(path), image_grid(both, columns=2 * int(pairs_per_row)), scale=6)
    return str(path)
