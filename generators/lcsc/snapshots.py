"""LCSC for the platform's own generators: combine a generator's saved training snapshots, LCSC's own setting.

A run folder from ``zoo fit`` keeps raw generator weights every few steps (``snapshots/step-*.safetensors``).
The search (:mod:`generators.lcsc.search`) looks for coefficients alpha over those snapshots, generator weights
= sum alpha_i W_i, whose fixed set of samples (fixed seeds) has the best mean accuracy on a validation split
carved from the source dataset's TRAINING split (loss breaks ties); the test split is read only afterwards,
for the report. Compared: the run's shipped weights (EMA of the best validation epoch), the last snapshot,
EMA and uniform averages over the snapshots (chosen on validation) and LCSC. ``save`` writes a run folder
that ``generators.load`` and ``zoo sample`` read like any other.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

import zoo
from generators.base import Generator
from generators.lcsc.search import GENERATOR_SEARCH, Search, SearchConfig, metric_names, run_searches, validation_view
from generators.registry import (
    CONFIG_FILE,
    INCOMPLETE_FILE,
    SNAPSHOT_DIR,
    WEIGHTS_FILE,
    load,
    owned_run,
    snapshots,
    write_atomic,
)
from zoo.app.progress import Progress
from zoo.app.runtime import resolve_device
from zoo.errors import ZooError
from zoo.store.lock import writing

LCSC_FILE = "lcsc.json"
RUN_FILES = (CONFIG_FILE, WEIGHTS_FILE, LCSC_FILE, INCOMPLETE_FILE)  # all an LCSC run folder holds


def _snapshot_states(run_dir: Path, steps: list[int]) -> list[dict[str, torch.Tensor]]:
    """The raw generator state dicts saved at ``steps``; an unreadable one is a one-line error naming it."""
    states = []
    for s in steps:
        path = run_dir / SNAPSHOT_DIR / f"step-{s:07d}.safetensors"
        try:
            states.append(load_file(str(path)))
        except (SafetensorError, OSError) as e:
            raise ZooError(f"snapshot {str(path)!r} is unreadable ({' '.join(str(e).split())[:120]})") from None
    if any(st.keys() != states[0].keys() for st in states):
        raise ZooError(f"the snapshots in {str(run_dir / SNAPSHOT_DIR)!r} do not all hold the same weights")
    return states


def check_run_out(run_dir: str | Path, out: str | Path, overwrite: bool) -> None:
    """Refuse an LCSC run folder ``out`` before any search: a file, the run it reads, an existing folder without
    ``overwrite``, or, even with it, a folder holding anything LCSC does not write (a user's files stay); a folder
    another writer holds is refused now rather than after the search (the save takes the lock again)."""
    out_p = Path(out)
    with writing(str(out_p), "zoo lcsc"):
        pass
    if out_p.exists() and not out_p.is_dir():
        raise ZooError(f"--out {str(out)!r} is a file, not a run folder")
    if out_p.exists() and out_p.resolve() == Path(run_dir).resolve():
        raise ZooError(f"--out {str(out)!r} is the run LCSC reads; choose another folder")
    entries = sorted(p.name for p in out_p.iterdir()) if out_p.is_dir() else []
    if not entries:
        return
    if not overwrite:
        raise ZooError(f"{str(out)!r} already exists; pass --overwrite to replace it")
    foreign = [e for e in entries if e not in RUN_FILES and not (e.startswith(".") and e.endswith(".tmp"))]
    if foreign:
        raise ZooError(
            f"{str(out)!r} is not an LCSC run folder (it holds {foreign[:5]}); --overwrite replaces only an LCSC "
            "run folder: choose another --out"
        )


class SnapshotCombiner:
    """Generator weights sum alpha_i W_i over snapshots, and the mean metrics of their fixed-seed samples."""

    def __init__(
        self,
        g: Generator,
        states: list[dict[str, torch.Tensor]],
        samples: int,
        sample_seed: int,
        device: torch.device | None = None,
    ):
        self.g, self.samples, self.sample_seed = g, int(samples), int(sample_seed)
        self.device = device  # where samples are drawn and scored (None: where the generator is)
        first = states[0]
        self.floats = {
            k: torch.stack([s[k] for s in states]).to(torch.float64) for k, v in first.items() if v.is_floating_point()
        }
        self.fixed = {k: v for k, v in states[-1].items() if not v.is_floating_point()}

    def state(self, alpha: np.ndarray) -> dict[str, torch.Tensor]:
        """The generator state dict sum_i alpha_i W_i (integer entries from the last snapshot)."""
        a = torch.as_tensor(np.asarray(alpha, dtype=np.float64))
        out = {k: torch.tensordot(a, v, dims=1).to(torch.float32) for k, v in self.floats.items()}
        return {**out, **self.fixed}

    def sample(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """[samples, P] networks of the generator with ``state`` (seeded: the same draws for every candidate)."""
        self.g.load_state_dict(state)
        flat, _ = self.g.sample_flat(self.samples, seed=self.sample_seed, device=self.device)
        return flat

    def metrics(self, flats: list[torch.Tensor], data: zoo.Dataset) -> dict[str, np.ndarray]:
        """Per candidate (one [samples, P] each): mean test-part loss and score of its samples (non-finite: worst)."""
        loss_name, score_name = metric_names(data)
        w = torch.cat(flats)
        finite = torch.isfinite(w).all(1)
        loss = torch.full((len(w),), float("inf"), dtype=torch.float64)
        score = torch.zeros(len(w), dtype=torch.float64)
        if finite.any():
            res = zoo.evaluate(self.g.layout, w[finite].to(self.device or w.device), data, split="test")
            loss[finite] = res[loss_name].cpu()
            score[finite] = torch.nan_to_num(res[score_name], nan=0.0).cpu()
        k = self.samples
        squash = (loss / (1 + loss)).nan_to_num(1.0).view(-1, k).mean(1)  # in [0, 1]; inf -> 1
        return {
            "loss": loss.view(-1, k).mean(1).numpy(),
            "score": score.view(-1, k).mean(1).numpy(),
            "squashed_loss": squash.numpy(),
        }


@dataclass
class GeneratorLCSC:
    """What :func:`lcsc_generator` found: snapshot steps, coefficients, metrics per method, the merged state."""

    run: str
    steps: list[int]
    coefficients: list[float]
    results: dict  # method -> {"val_<score>", "test_<score>", "val_loss", "test_loss", extra}
    settings: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict, repr=False)
    seconds: float = 0.0

    def save(self, out: str | Path) -> Path:
        """Write a run folder (config.json, model.safetensors = the LCSC weights, lcsc.json) that ``load`` reads,
        owned like a fit's (:func:`generators.registry.owned_run`: the lock, ``INCOMPLETE`` until the last file)."""
        g = load(self.run)
        g.load_state_dict(self.state)
        record = {k: v for k, v in asdict(self).items() if k != "state"}
        with owned_run(out, "zoo lcsc") as run:
            (run.path / LCSC_FILE).unlink(missing_ok=True)
            g.save(run.path)
            write_atomic(run.path / LCSC_FILE, json.dumps(record, indent=2))
        return Path(out)


def lcsc_generator(
    run_dir: str | Path,
    config: SearchConfig = GENERATOR_SEARCH,
    samples: int = 16,
    sample_seed: int = 0,
    seed: int = 0,
    val_fraction: float = 0.2,
    val_seed: int = 0,
    upto: int | None = None,
    progress: bool = False,
    device: str = "cpu",
) -> GeneratorLCSC:
    """Search coefficients over a run's snapshots (those up to step ``upto``) maximizing its samples' val accuracy;
    ``progress``: a display over fitness evaluations (at most ``config.max_evals``); ``device``: where the
    candidates' samples are drawn and scored (the random draws stay on the CPU)."""
    dev = resolve_device(str(device))  # cuda without a GPU: one line before anything is read
    t0 = time.perf_counter()
    run = Path(run_dir)
    g = load(run)
    if not isinstance(g, Generator):
        raise ZooError(f"LCSC combines a sampling generator's snapshots; {str(run)!r} holds a {g.name} run")
    steps = snapshots(run)
    if upto is not None:
        steps = [s for s in steps if s <= int(upto)]
    if len(steps) < 2:
        raise ZooError(
            f"LCSC needs at least 2 generator snapshots in {str(run / SNAPSHOT_DIR)!r}, found {len(steps)}"
            " (fit with snapshot_every_n_steps > 0 and enough steps)"
        )
    if not isinstance(samples, int) or samples < 1:
        raise ZooError(f"samples must be a positive integer, got {samples!r}")
    config.check(len(steps))
    data = g.dataset()
    val = validation_view(data, val_fraction, val_seed)
    shipped = {k: v.clone() for k, v in g.state_dict().items()}
    comb = SnapshotCombiner(g, _snapshot_states(run, steps), samples, sample_seed, dev)
    tie = 1.0 / (10.0 * len(val.X_test))

    def fitness(idx: np.ndarray, alphas: np.ndarray) -> np.ndarray:
        m = comb.metrics([comb.sample(comb.state(a)) for a in alphas], val)
        return -m["score"] + tie * m["squashed_loss"]

    search = Search(len(steps), config, seed=int(seed))
    with Progress(config.max_evals, "evaluations (at most)", prefix="zoo lcsc", enabled=progress) as bar:
        run_searches(
            [search], fitness, on_round=lambda ss: bar.update(ss[0].evaluations - bar.n, generation=ss[0].generation)
        )
    ema, uni = search.best_seed("ema"), search.best_seed("uniform")
    states = {
        "shipped": shipped,
        "last": comb.state(search.seeds[0]),
        "ema": comb.state(ema[1]),
        "uniform": comb.state(uni[1]),
        "lcsc": comb.state(search.best[1]),
    }
    flats = {m: comb.sample(s) for m, s in states.items()}
    loss_name, score_name = metric_names(data)
    results = {m: {} for m in states}
    for split, d in (("val", val), ("test", data)):
        res = comb.metrics(list(flats.values()), d)
        for j, m in enumerate(states):
            results[m][f"{split}_{score_name}"] = float(res["score"][j])
            results[m][f"{split}_{loss_name}"] = float(res["loss"][j])
    results["ema"]["decay"], results["uniform"]["k"] = float(ema[0]), int(uni[0])
    results["lcsc"].update(evaluations=int(search.evaluations), generations=int(search.generation))
    g.load_state_dict(shipped)
    settings = {
        "samples": int(samples),
        "sample_seed": int(sample_seed),
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "val_seed": int(val_seed),
        "val_samples": int(len(val.X_test)),
        "search": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
    }
    return GeneratorLCSC(
        str(run), steps, [float(x) for x in search.best[1]], results, settings, states["lcsc"], time.perf_counter() - t0
    )
