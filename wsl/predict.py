"""Load a trained encoder in one call and predict for a zoo or a single state dict.

    p = wsl.load("data/runs/graph-test_accuracy-mlp-digits")   # run folder or .ckpt file
    p.predict(zoo.open(path))           # DataFrame: model_id, checkpoint, prediction
    p.predict_state_dict(model.state_dict())

Checkpoints are read with ``torch.load(weights_only=True)``; hyperparameters are plain types.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from wsl.data import Normalizer, open_zoo
from wsl.lit import WeightModel
from zoo import Zoo
from zoo.errors import ZooError

CHECKPOINT_NAME = "best.ckpt"
CONFIG_FILE = "config.json"  # save_pretrained's hub layout: {"encoder": "wsl", "hyper_parameters": {...}}
WEIGHTS_FILE = "model.safetensors"


def load_model(path: str | os.PathLike) -> WeightModel:
    """WeightModel (eval mode) from a run folder (its ``best.ckpt``) or a checkpoint file."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise ZooError(f"no trained encoder at {str(path)!r} (expected a run folder with {CHECKPOINT_NAME} or a .ckpt)")
    ckpt = torch.load(p, map_location="cpu", weights_only=True)
    if "hyper_parameters" not in ckpt or "state_dict" not in ckpt:
        raise ZooError(f"{str(p)!r} is not a wsl encoder checkpoint")
    model = WeightModel(**dict(ckpt["hyper_parameters"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


class Predictor:
    """A trained encoder with its weight space, normalization and target."""

    def __init__(self, model: WeightModel):
        self.model = model
        self.space = model.space
        self.target = model.target
        stats = model.hparams["normalizer"]
        self.normalizer = Normalizer(self.space, stats["mean"], stats["std"])

    @torch.no_grad()
    def predict_padded(self, w: torch.Tensor, layout: torch.Tensor) -> np.ndarray:
        """Raw padded weights [n, P] -> predictions (floats, or class labels for classification)."""
        out = self.model(self.normalizer(w, layout), layout)
        if self.target.kind == "regression":
            return out.numpy()
        return np.asarray(self.target.classes, dtype=object)[out.argmax(1).numpy()]

    def predict(
        self,
        z: str | os.PathLike | Zoo,
        model_ids: Sequence[int] | None = None,
        checkpoint: int = -1,
        canonical: bool = False,
        batch_size: int = 256,
    ) -> pd.DataFrame:
        """Predictions for models of a zoo (default: every trained model) at one checkpoint index."""
        z = open_zoo(z)
        models = z.models
        if model_ids is None:
            models = models[models["status"] != "pending"] if "status" in models else models
        else:
            ids = [int(i) for i in model_ids]
            unknown = sorted(set(ids) - set(models["model_id"].tolist()))
            if unknown:
                raise ZooError(f"model ids {unknown[:5]} are not in this zoo")
            models = models.set_index("model_id").loc[ids].reset_index()
        rows = []
        for key, group in models.groupby("layout", sort=True):
            k = self.space.add_layout(z.layouts[key])
            ids = group["model_id"].tolist()
            for i in range(0, len(ids), batch_size):
                chunk = ids[i : i + batch_size]
                w = self.space.pad(z.weights(chunk, checkpoint=checkpoint, canonical=canonical), k)
                pred = self.predict_padded(w, torch.full((len(chunk),), k, dtype=torch.long))
                rows.append(pd.DataFrame({"model_id": chunk, "checkpoint": checkpoint, "prediction": pred}))
        return pd.concat(rows).set_index("model_id").loc[models["model_id"].tolist()].reset_index()

    def predict_state_dict(self, state: Mapping[str, torch.Tensor]) -> Any:
        """Prediction for one network given as a state dict of this encoder's architecture family."""
        layout = self.space.layout_of_state_dict(state)
        k = self.space.add_layout(layout)
        w = self.space.pad(layout.flatten(dict(state))[None], k)
        return self.predict_padded(w, torch.tensor([k]))[0]

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write the encoder in the Hugging Face layout, ``config.json`` (its hyperparameters: plain JSON) and
        ``model.safetensors``, into ``save_directory`` (made if missing); ``Predictor.from_pretrained`` reads it."""
        from safetensors.torch import save_file

        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        try:
            config = json.dumps({"encoder": "wsl", "hyper_parameters": dict(self.model.hparams)}, indent=2)
        except TypeError as e:
            raise ZooError(f"the encoder's hyperparameters are not plain JSON ({e})") from None
        state = {k: v.detach().contiguous().clone() for k, v in self.model.state_dict().items()}
        save_file(state, str(out / WEIGHTS_FILE))
        (out / CONFIG_FILE).write_text(config)
        return out

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike) -> Predictor:
        """A Predictor from a local folder written by ``save_pretrained`` (or a ``zoo train`` run folder with
        ``best.ckpt``); nothing is downloaded and nothing is unpickled."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(pretrained_model_name_or_path).expanduser()
        if not path.is_dir():
            raise ZooError(f"from_pretrained reads a local folder and {str(path)!r} is none (nothing is downloaded)")
        if not (path / CONFIG_FILE).is_file():
            return load(path)
        try:
            meta = json.loads((path / CONFIG_FILE).read_text())
            if meta.get("encoder") != "wsl":
                raise KeyError("encoder")
            model = WeightModel(**dict(meta["hyper_parameters"]))
            model.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ZooError(
                f"{str(path / CONFIG_FILE)!r} is not a wsl encoder config ({e.__class__.__name__}: {e})"
            ) from None
        except (SafetensorError, FileNotFoundError, RuntimeError) as e:
            raise ZooError(
                f"{str(path / WEIGHTS_FILE)!r} does not hold this encoder's weights ({str(e)[:200]})"
            ) from None
        return cls(model.eval())


def load(path: str | os.PathLike) -> Predictor:
    """One call from a run folder (or checkpoint) to a ready Predictor."""
    return Predictor(load_model(path))
