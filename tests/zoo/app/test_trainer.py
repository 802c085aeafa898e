"""trainer.logger as Lightning users write it (csv by default, tensorboard on request, false for none) and the
warnings hidden while a run fits: Lightning's named advice only, never a blanket filter."""

import importlib.util
import os
import warnings

import pytest
from lightning.pytorch.loggers import CSVLogger

from zoo.app.trainer import make_logger, make_trainer, quiet_fit
from zoo.errors import ZooError


def test_make_logger_follows_trainer_logger(tmp_path):
    for default in (None, True, "csv", ["csv", "csv"]):
        loggers = make_logger(default, tmp_path)
        assert isinstance(loggers, list) and len(loggers) == 1 and isinstance(loggers[0], CSVLogger)
        assert os.path.normpath(loggers[0].log_dir) == str(tmp_path)  # metrics.csv right in the run folder
    for off in (False, "false", "none"):
        assert make_logger(off, tmp_path) is False
    for bad in ("wandb-ish", 3, [], ["csv", "nope"]):
        with pytest.raises(ZooError, match="bad trainer.logger") as e:
            make_logger(bad, tmp_path)
        assert "\n" not in str(e.value)
    if any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
        assert type(make_logger("tensorboard", tmp_path)[0]).__name__ == "TensorBoardLogger"
    else:
        with pytest.raises(ZooError, match="pip install tensorboard"):
            make_logger(["csv", "tensorboard"], tmp_path)
    assert make_trainer({"max_epochs": 1, "logger": False}, tmp_path, []).logger is None
    assert os.path.normpath(make_trainer({"max_epochs": 1}, tmp_path, []).logger.log_dir) == str(tmp_path)


def test_quiet_fit_hides_named_advice_only():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_fit():
            warnings.warn(
                "The 'train_dataloader' does not have many workers which may be a bottleneck.",
                UserWarning,
                stacklevel=1,
            )
            warnings.warn("something the user must see", UserWarning, stacklevel=1)
            warnings.warn("an API goes away", DeprecationWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something the user must see", "an API goes away"]
