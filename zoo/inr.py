"""INR zoos: one SIREN per image, fitted from pixel coordinates to intensities, and their rendering.

A ``kind: inr`` recipe (zoo.training.recipe) turns an image dataset (``digits-image``, ``mnist-image``, any
classification set of [C, H, W] images with C = 1) into one model per image. Invariants:
- the inputs are the image's coordinate grid: row-major over (row, column), each coordinate in [-1, 1]
  (``coordinate_grid``); the targets are the pixel intensities in that order, as the dataset gives them
  (the named image sets are in [0, 1]), so PSNR's peak is 1: ``psnr = -10 log10(mse)``;
- images are numbered ``image_index`` over the dataset's training images then its test images;
- an INR's ``split`` is fixed by its image: the dataset's test images are ``test``; a seeded fraction
  (``recipe.validation_fraction``, drawn with ``recipe.task_seed``) of its training images is
  ``validation``, the rest ``train``. Encoders (wsl) split by this column, so no test image is ever seen.
The zoo's attribute ``inr`` records the image shape so stored INRs render without the dataset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zoo.datasets import Dataset
from zoo.errors import ZooError
from zoo.forward import population_forward
from zoo.layout import Layout
from zoo.store import Zoo

SPLITS = ("train", "validation", "test")


def coordinate_grid(height: int, width: int) -> torch.Tensor:
    """[height * width, 2] float32 (row, column) coordinates in [-1, 1], row-major: an INR's inputs."""
    if height < 1 or width < 1:
        raise ZooError(f"an image needs a positive height and width, got {height}x{width}")
    rows = torch.linspace(-1.0, 1.0, height) if height > 1 else torch.zeros(1)
    cols = torch.linspace(-1.0, 1.0, width) if width > 1 else torch.zeros(1)
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2).contiguous()


@dataclass(frozen=True)
class InrImages:
    """Every image of a dataset as INR targets, with the label and split each INR records."""

    pixels: torch.Tensor  # [n, H * W, 1] float32, row-major: the targets over ``coordinate_grid(H, W)``
    index: np.ndarray  # int64 [n]: each image's number (module docstring)
    labels: np.ndarray  # int64 [n]
    splits: np.ndarray  # str [n]: train | validation | test
    shape: tuple[int, int]  # (H, W)

    def __len__(self) -> int:
        return len(self.labels)


def inr_images(dataset: Dataset, validation_fraction: float, seed: int, max_images: int | None = None) -> InrImages:
    """The dataset's training then test images as INR targets; a seeded ``validation_fraction`` of the training
    images is the validation split (chosen by ``seed`` alone, never by the test images). ``max_images`` keeps
    about that many: the first of the training and of the test images in proportion (quick zoos, tests)."""
    if dataset.kind != "classification" or dataset.X_train.dim() != 4 or dataset.X_train.shape[1] != 1:
        raise ZooError(
            f"an INR recipe needs a labelled set of one-channel images [N, 1, H, W] (e.g. digits-image,"
            f" mnist-image); {dataset.name!r} gives {tuple(dataset.X_train.shape[1:])} ({dataset.kind})"
        )
    if not 0.0 <= float(validation_fraction) < 1.0:
        raise ZooError(f"recipe.validation_fraction must be in [0, 1), got {validation_fraction}")
    h, w = int(dataset.X_train.shape[2]), int(dataset.X_train.shape[3])
    X = torch.cat([dataset.X_train, dataset.X_test]).reshape(-1, h * w, 1).float().contiguous()
    labels = torch.cat([dataset.y_train, dataset.y_test]).numpy().astype(np.int64)
    n_tr = len(dataset.X_train)
    splits = np.array(["train"] * n_tr + ["test"] * len(dataset.X_test), dtype=object)
    n_val = int(round(float(validation_fraction) * n_tr))
    val = np.random.default_rng(int(seed)).permutation(n_tr)[:n_val]
    splits[val] = "validation"
    index = np.arange(len(labels), dtype=np.int64)
    if max_images is not None:
        if int(max_images) < 3:
            raise ZooError(f"recipe.max_images must be >= 3 (train, validation and test INRs), got {max_images}")
        n_te = len(dataset.X_test)
        keep_tr = max(1, round(int(max_images) * n_tr / (n_tr + n_te)))
        index = np.concatenate([index[: min(keep_tr, n_tr)], index[n_tr : n_tr + max(1, int(max_images) - keep_tr)]])
    return InrImages(
        pixels=X[torch.from_numpy(index)],
        index=index,
        labels=labels[index],
        splits=splits.astype(str)[index],
        shape=(h, w),
    )


def psnr(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of intensities whose peak is 1: ``-10 log10(mse)`` (inf for an exact fit)."""
    return -10.0 * torch.log10(mse)


def render_weights(layout: Layout, weights: torch.Tensor, shape: Sequence[int], chunk: int = 512) -> torch.Tensor:
    """[n, P] INR weights of ``layout`` -> [n, H, W] images: each network evaluated on the coordinate grid."""
    h, w = int(shape[0]), int(shape[1])
    if layout.arch.get("name") != "siren" or list(layout.arch.get("input_shape", [])) != [2]:
        raise ZooError(f"only INRs (siren over 2-D coordinates) render as images; this layout is {layout.key()!r}")
    if weights.ndim != 2 or weights.shape[1] != layout.size:
        raise ZooError(f"weights of shape {tuple(weights.shape)} do not fit this layout: expected [n, {layout.size}]")
    grid = coordinate_grid(h, w)
    template = layout.build().eval()
    out = torch.empty(len(weights), h, w)
    with torch.no_grad():
        for lo in range(0, len(weights), chunk):
            params = layout.unflatten_batch(weights[lo : lo + chunk].float())
            y = population_forward(template, params, {}, grid, shared_input=True)
            out[lo : lo + chunk] = y[..., 0].reshape(-1, h, w)
    return out


def image_shape(attrs: Mapping) -> tuple[int, int]:
    """The image shape an INR zoo records (its ``inr`` attribute); a ZooError for any other zoo."""
    inr = attrs.get("inr")
    if not isinstance(inr, Mapping) or "image_shape" not in inr:
        raise ZooError("this zoo holds no INRs (no 'inr' attribute): build one with a kind: inr recipe")
    h, w = (int(s) for s in inr["image_shape"])
    return h, w


def image_grid(images: torch.Tensor | np.ndarray, columns: int = 8, pad: int = 1) -> np.ndarray:
    """[n, H, W] intensities -> one uint8 [rows * (H + pad), columns * (W + pad)] grid, clipped to [0, 1]."""
    x = torch.as_tensor(images).float()
    if x.ndim != 3 or len(x) == 0:
        raise ZooError(f"an image grid needs images [n, H, W], got shape {tuple(x.shape)}")
    n, h, w = x.shape
    cols = max(1, min(int(columns), n))
    rows = -(-n // cols)
    grid = torch.zeros(rows * (h + pad) + pad, cols * (w + pad) + pad)
    for i in range(n):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top : top + h, left : left + w] = x[i].nan_to_num(0.0).clamp(0.0, 1.0)
    return (grid.numpy() * 255.0 + 0.5).astype(np.uint8)


def write_png(path: str, grid: np.ndarray, scale: int = 4) -> None:
    """Write a uint8 grayscale grid as a PNG, each pixel ``scale`` x ``scale`` (matplotlib's writer)."""
    import matplotlib.image as mpimg  # matplotlib is heavy: only when a PNG is written

    big = np.kron(grid, np.ones((scale, scale), dtype=np.uint8))
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)  # like every other output: its folder is made
        mpimg.imsave(target, big, cmap="gray", vmin=0, vmax=255)
    except (OSError, ValueError) as e:  # a folder in the way, no permission, an unknown extension
        raise ZooError(f"cannot write the PNG {path!r}: {e}") from None


def render(z: Zoo, model_ids: Sequence[int] | int, checkpoint: int = -1, canonical: bool = False) -> torch.Tensor:
    """[n, H, W] images the stored INRs ``model_ids`` draw (one layout at a time, as ``Zoo.weights`` reads)."""
    ids = np.atleast_1d(np.asarray(model_ids, dtype=np.int64))
    shape = image_shape(z.attrs)
    weights = z.weights(ids.tolist(), checkpoint=checkpoint, canonical=canonical)
    return render_weights(z.layout(int(ids[0])), weights, shape)


def grid_dataset(source: Dataset, shape: Sequence[int]) -> Dataset:
    """The data every INR of ``source`` shares: its coordinate grid as inputs (kind ``inr``; each model's own
    intensities come as PopulationSpec.targets). The targets here are zeros: only their shape matters."""
    grid = coordinate_grid(int(shape[0]), int(shape[1]))
    zeros = torch.zeros(len(grid), 1)
    return Dataset(
        name=f"{source.name}:grid",
        X_train=grid,
        y_train=zeros,
        X_test=grid,
        y_test=zeros,
        kind="inr",
        num_outputs=1,
        fingerprint=source.fingerprint,
        location=source.location,
        seed=source.seed,
    )
