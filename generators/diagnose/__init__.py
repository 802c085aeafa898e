"""Memorization diagnostics of generated weights (``zoo diagnose``): :func:`diagnose` measures samples and
baselines against their training zoo (``report.py``); distances and error overlaps (``distances.py``),
baselines built without training (``baselines.py``), the text table (``table.py``) and the plots
(``plots.py``) sit beside it; INR zoos are measured by PSNR instead (``inr_report.py``, ``inr.py``). It imports no
generator method: it reads zoos of samples."""

from generators.diagnose.distances import iou_matrix, max_iou, nearest_l2, permutation_nn
from generators.diagnose.inr_report import diagnose_inr, nearest_psnr
from generators.diagnose.plots import write_plots
from generators.diagnose.report import compare_with_noise, diagnose
from generators.diagnose.sets import TrainSet, load_train
from generators.diagnose.table import TRAIN, inr_table, method_rows, summary_table

__all__ = [
    "diagnose",
    "diagnose_inr",
    "inr_table",
    "nearest_psnr",
    "load_train",
    "TrainSet",
    "TRAIN",
    "compare_with_noise",
    "method_rows",
    "summary_table",
    "write_plots",
    "iou_matrix",
    "max_iou",
    "nearest_l2",
    "permutation_nn",
]
