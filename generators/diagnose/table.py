"""A diagnose report as text: one flat row per method and the aligned table ``zoo diagnose`` prints."""

from __future__ import annotations

from collections.abc import Mapping

TRAIN = "train"  # method name of the training models themselves


def _pct(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None else f"{x:.{digits}%}"


def method_rows(report: Mapping) -> list[dict]:
    """One flat row per method (the columns a benchmark table shows): name, n, test_acc mean, nn_l2 mean over
    the training models' median train_nn_l2, max_iou mean, good_and_novel; training models first."""
    med = report["train_nn_l2_median"]
    rows = []
    for name, r in report["methods"].items():
        nn = r.get("nn_l2") or r.get("train_nn_l2")
        rows.append(
            {
                "method": name,
                "kind": r["kind"],
                "n": r["n"],
                "test_acc": r["test_acc"]["mean"],
                "test_acc_std": r["test_acc"]["std"],
                "nn_l2": nn["mean"],
                "nn_l2_over_train_median": nn["mean"] / med if nn["mean"] is not None and med > 0 else None,
                "nn_l2_raw": (r.get("nn_l2_raw") or r.get("train_nn_l2_raw"))["mean"],
                "max_iou": r["max_iou"]["mean"],
                "good_and_novel": r["good_and_novel"],
                "noise_max_iou_at_equal_acc": r.get("noise_max_iou_at_equal_acc"),
                "more_novel_than_noise": r.get("more_novel_than_noise"),
            }
        )
    return rows


def _versus(row: Mapping) -> str:
    """'0.868 (more novel)' / '0.868 (less novel)' / '' for the table's noise comparison column."""
    at = row.get("noise_max_iou_at_equal_acc")
    if at is None:
        return "-" if "noise_max_iou_at_equal_acc" in row and row["kind"] != "baseline" else ""
    return f"{at:.3f} ({'more' if row['more_novel_than_noise'] else 'less'} novel)"


def summary_table(report: Mapping) -> str:
    """The per-method numbers as an aligned text table (what ``zoo diagnose`` prints); an INR report's PSNRs
    (generators.diagnose.inr_report)."""
    if report.get("kind") == "inr":
        return inr_table(report)
    w = max([14, *(len(name) for name in report["methods"])])
    head = (
        f"{'method':<{w}} {'n':>5} {'test_acc':>15} {'nn_l2':>15} {'nn_l2/med':>9} {'nn_l2_raw':>11} "
        f"{'max_iou':>15} {'good&novel':>10} {'noise max_iou at its acc':>24}"
    )
    lines = [head, "-" * len(head)]

    def ms(s: Mapping, fmt: str = ".4f") -> str:
        return "n/a" if s["mean"] is None else f"{s['mean']:{fmt}}±{s['std']:{fmt}}"

    def num(x: float | None, fmt: str) -> str:
        return "n/a" if x is None else format(x, fmt)

    for row, r in zip(method_rows(report), report["methods"].values()):
        nn = r.get("nn_l2") or r.get("train_nn_l2")
        lines.append(
            f"{row['method']:<{w}} {row['n']:>5} {ms(r['test_acc']):>15} {ms(nn, '.3g'):>15} "
            f"{num(row['nn_l2_over_train_median'], '.3f'):>9} {num(row['nn_l2_raw'], '.3g'):>11} "
            f"{ms(r['max_iou'], '.3f'):>15} {_pct(row['good_and_novel'], 1):>10} {_versus(row):>24}"
        )
    bar = report.get("novelty_bar")
    if bar is not None:
        lines.append(bar["note"])
    budget = report.get("budget")
    if budget and budget.get("reduced"):  # big networks: fewer baseline networks than the defaults
        lines.append(budget["note"])
    return "\n".join(lines)


def novelty_bar(methods: Mapping[str, Mapping]) -> dict | None:
    """Whether this zoo sets a novelty bar: its training models are themselves more novel than noise at their
    accuracy (independently trained models are; models that share an initialization may not be). When they are
    not, "more novel than noise" says little about a generator's samples. None without a noise frontier."""
    verdict = methods.get(TRAIN, {}).get("more_novel_than_noise")
    if verdict is None:
        return None
    note = (
        "novelty bar: the training models are more novel than noise at their accuracy, so beating noise means something"
        if verdict
        else "novelty bar: the training models are NO more novel than noise at their accuracy (a shared"
        " initialization, or too few test errors to tell models apart): here, more or less novel than noise says"
        " little; use independently initialized models and a larger test set"
    )
    return {"training_models_more_novel_than_noise": bool(verdict), "note": note}


def inr_table(report: Mapping) -> str:
    """The per-method PSNRs and distances of an INR report as an aligned text table (what ``zoo diagnose``
    prints): psnr to the data, psnr to the nearest training render, nn_l2, nn_l2 over the training median."""
    w = max([14, *(len(name) for name in report["methods"])])
    head = (
        f"{'method':<{w}} {'n':>5} {'psnr_data dB':>13} {'psnr_render dB':>15} {'nn_l2':>15} {'nn_l2/med':>9} "
        f"{'nearer than train':>17}"
    )
    lines = [head, "-" * len(head)]
    med = report["train_nn_l2_median"]

    def ms(s: Mapping, fmt: str) -> str:
        return "n/a" if s["mean"] is None else f"{s['mean']:{fmt}}±{s['std']:{fmt}}"

    for name, r in report["methods"].items():
        nn = r.get("nn_l2") or r["train_nn_l2"]
        ratio = "n/a" if nn["mean"] is None or med <= 0 else f"{nn['mean'] / med:.3f}"
        share = r["nearer_than_train"]
        lines.append(
            f"{name:<{w}} {r['n']:>5} {ms(r['psnr_data'], '.1f'):>13} {ms(r['psnr_render'], '.1f'):>15} "
            f"{ms(nn, '.3g'):>15} {ratio:>9} {'n/a' if share is None else f'{share:.1%}':>17}"
        )
    lines.append(
        f"train row: psnr_data is each INR's fit to its own image, psnr_render and nn_l2 its nearest OTHER training"
        f" INR; nearer than train: psnr_render above the training INRs' median"
        f" ({report['thresholds']['train_psnr_render_median']:.1f} dB)"
    )
    return "\n".join(lines)
