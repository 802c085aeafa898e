"""Weight-space learning: data module, augmentations and encoders over zoo weights.

    dm = wsl.WeightDataModule("data/zoos/mlp-digits.zarr", task="test_accuracy", augment={"permute": {"p": 1}})
    zoo train encoder=graph task=test_accuracy zoo=data/zoos/mlp-digits.zarr      # CLI (wsl.cli)
    p = wsl.load("data/runs/graph-test_accuracy-mlp-digits"); p.predict(zoo.open(path))
"""
from .augment import Augmenter
from .data import Normalizer, WeightDataModule
from .encoders import ENCODERS, build_encoder
from .lit import WeightModel
from .predict import Predictor, load
from .space import WeightSpace
from .tasks import TASKS, task_spec

__all__ = ["Augmenter", "Normalizer", "WeightDataModule", "ENCODERS", "build_encoder", "WeightModel", "Predictor",
           "load", "WeightSpace", "TASKS", "task_spec"]
