"""Weight-space learning: data module, augmentations and encoders over zoo weights.

ds = wsl.ZooDataset("data/zoos/mlp-digits.zarr", checkpoint=-1, target="test_accuracy")  # a torch Dataset
dm = wsl.WeightDataModule("data/zoos/mlp-digits.zarr", target="test_accuracy", augment={"permute": {"p": 1}})
zoo train encoder=graph task=test_accuracy zoo=data/zoos/mlp-digits.zarr      # CLI (wsl.cli)
p = wsl.load("data/runs/graph-test_accuracy-mlp-digits"); p.predict(zoo.open(path))
"""

from wsl.augment import Augmenter
from wsl.data import Normalizer, WeightDataModule, ZooDataset
from wsl.encoders import ENCODERS, build_encoder
from wsl.lit import WeightModel
from wsl.predict import Predictor, load
from wsl.space import WeightSpace
from wsl.targets import TARGETS, target_spec

__all__ = [
    "Augmenter",
    "Normalizer",
    "WeightDataModule",
    "ZooDataset",
    "ENCODERS",
    "build_encoder",
    "WeightModel",
    "Predictor",
    "load",
    "WeightSpace",
    "TARGETS",
    "target_spec",
]
