"""One progress display for every long step: a tqdm bar in a terminal, a short line every few seconds in a log.

A log (stderr not a terminal) gets a line only when at least ``interval`` seconds and 1% of the total have
passed since the last one, plus a final line, so any step writes at most about 100 lines however many
models it trains; nested bars (one per Lightning population) never appear. ``lightning_progress`` is the
same display as a Lightning callback over epochs, with the validation metric.
"""

from __future__ import annotations

import math
import sys
import time
from typing import IO, Any

INTERVAL = 5.0  # seconds between lines in a log
MIN_FRACTION = 0.01  # and at least this share of the total between them (bounds a long run's lines to ~100)


def is_terminal(stream: IO | None = None) -> bool:
    """Whether ``stream`` (default stderr) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a file
        return False


def _duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


class Progress:
    """Progress of one long step over ``total`` units (None: unknown).

    In a terminal: one tqdm bar. Otherwise: ``[prefix] desc 120/300 (40%) in 12 s, about 18 s left; k v``
    at most every ``interval`` seconds (and 1% of the total) and at the end. ``enabled=False`` shows nothing.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        *,
        prefix: str = "",
        unit: str | None = None,
        enabled: bool = True,
        stream: IO | None = None,
        interval: float | None = None,
        eta: bool = True,
    ):
        self.total = None if total is None else int(total)
        self.eta = bool(eta)  # False for steps of unequal length (a time-left guess would mislead)
        self.desc, self.prefix, self.enabled = desc, prefix, bool(enabled)
        self.stream = sys.stderr if stream is None else stream
        self.interval = INTERVAL if interval is None else float(interval)
        self.n = 0  # whole units done (shown); fractional updates accumulate in ``exact``
        self.exact = 0.0
        self.postfix: dict[str, Any] = {}
        self.lines = 0  # lines written in log mode
        self.t0 = self._last = time.perf_counter()
        self._last_n = 0
        self._closed = False
        self.terminal = self.enabled and is_terminal(self.stream)
        self._bar = None
        if self.terminal:
            from tqdm.auto import tqdm

            label = f"{prefix}: {desc}" if prefix else desc
            self._bar = tqdm(
                total=self.total,
                desc=label,
                unit=unit or (desc.split()[-1] if desc else "it"),
                file=self.stream,
                dynamic_ncols=True,
                leave=True,
            )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)

    def update(self, n: float = 1, **postfix: Any) -> None:
        """Advance by ``n`` units (fractions add up: a population's epochs advance its models); keyword
        arguments replace the shown values (loss, metric, ...)."""
        self.exact += n
        whole = int(self.exact + 1e-9)
        step, self.n = whole - self.n, whole
        self.postfix.update(postfix)
        if not self.enabled:
            return
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix({k: _fmt(v) for k, v in self.postfix.items()}, refresh=False)
            self._bar.update(step)
            return
        now = time.perf_counter()
        step_ok = self.total is None or self.total <= 0 or (self.n - self._last_n) >= MIN_FRACTION * self.total
        if now - self._last >= self.interval and step_ok and (self.total is None or self.n < self.total):
            self._line(now)

    def set_postfix(self, **postfix: Any) -> None:
        """Replace shown values without advancing."""
        self.update(0, **postfix)

    def write(self, message: str) -> None:
        """A message line that does not break the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)
            self.lines += 1

    def _line(self, now: float, final: str = "") -> None:
        elapsed = now - self.t0
        head = f"[{self.prefix}] " if self.prefix else ""
        if self.total:
            pct = 100.0 * self.n / self.total
            text = f"{head}{self.desc} {self.n:,}/{self.total:,} ({pct:.0f}%) in {_duration(elapsed)}"
            if not final and self.eta and 0 < self.n < self.total:
                text += f", about {_duration(elapsed / self.n * (self.total - self.n))} left"
        else:
            text = f"{head}{self.desc} {self.n:,} in {_duration(elapsed)}"
        if final:
            text += f", {final}"
        if self.postfix:
            text += "; " + ", ".join(f"{k} {_fmt(v)}" for k, v in self.postfix.items())
        print(text, file=self.stream, flush=True)
        self.lines += 1
        self._last, self._last_n = now, self.n

    def close(self, failed: bool = False, note: str = "") -> None:
        """End the display: the bar stays on screen; a log gets its final line (with ``note``, if any)."""
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        if self._bar is not None:
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.close()
            return
        self._line(time.perf_counter(), final="interrupted" if failed else (note or "done"))


def lightning_progress(
    desc: str = "epochs",
    prefix: str = "",
    monitor: str | None = None,
    enabled: bool = True,
    stream: IO | None = None,
    interval: float | None = None,
):
    """A Lightning callback showing a :class:`Progress` over epochs with the training loss and the
    validation metrics (``monitor`` first); use with ``enable_progress_bar=False``."""
    import lightning as L

    class EpochProgress(L.Callback):
        def __init__(self):
            self.progress: Progress | None = None

        def on_train_start(self, trainer, pl_module) -> None:
            total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
            self.progress = Progress(
                total,
                desc,
                prefix=prefix,
                unit="epoch",
                enabled=enabled and trainer.is_global_zero,
                stream=stream,
                interval=interval,
            )

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if self.progress is not None:
                self.progress.update(1, **_epoch_metrics(trainer.callback_metrics, monitor))

        def on_train_end(self, trainer, pl_module) -> None:
            if self.progress is not None:
                stopped = trainer.max_epochs and 0 < trainer.current_epoch < trainer.max_epochs
                self.progress.close(note="stopped early" if stopped else "")

        def on_exception(self, trainer, pl_module, exception) -> None:
            if self.progress is not None:
                self.progress.close(failed=True)

    return EpochProgress()


def _epoch_metrics(metrics: dict, monitor: str | None) -> dict[str, float]:
    """The shown values of an epoch: the monitored metric, the other validation metrics, the training loss."""
    out: dict[str, float] = {}
    names = [monitor] if monitor else []
    names += sorted(k for k in metrics if k.startswith("val/") and k != monitor)[:2]
    names += [k for k in ("train/loss", "train_loss", "loss") if k in metrics][:1]
    for k in names:
        if k in metrics:
            try:
                out[k] = float(metrics[k])
            except (TypeError, ValueError):
                continue
    return out
