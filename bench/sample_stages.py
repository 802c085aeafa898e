"""``zoo sample RUN -n 100 --metrics none``'s steps in one process, CPU seconds of each (process time: zarr's
writer threads included), one torch thread: imports, loading the run, the dataset, sampling (incl. BatchNorm
recalibration) and writing the zoo (with the table and the final open).

Rerun: OMP_NUM_THREADS=1 .venv/bin/python bench/sample_stages.py /tmp/h27/runs-lr005/simplex /tmp/samples.zarr
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

T = time.process_time


def main() -> int:
    run, out = sys.argv[1], sys.argv[2]
    t0 = T()
    import pandas  # noqa: F401  (what writing a zoo imports, counted with the imports)
    import zarr  # noqa: F401

    import generators
    import zoo.store.writer  # noqa: F401
    from zoo.app.runtime import set_threads

    set_threads(1)
    t1 = T()
    g = generators.load(run)
    t2 = T()
    g.dataset()
    t3 = T()
    sample_flat, box = type(g).sample_flat, {}

    def timed(self, *a, **k):  # noqa: ANN001, ANN202
        s = T()
        r = sample_flat(self, *a, **k)
        box["sample"] = T() - s
        return r

    type(g).sample_flat = timed  # type: ignore[method-assign]
    s = T()
    g.sample_zoo(100, out, overwrite=True, metrics=())
    t4 = T()
    print(
        f"CPU s: imports {t1 - t0:.2f}, load the run {t2 - t1:.2f}, dataset {t3 - t2:.2f}, sample 100 incl. BN "
        f"recalibration {box['sample']:.2f}, write the zoo {t4 - s - box['sample']:.2f}; process total {t4:.2f}"
        f" (load average {os.getloadavg()[0]:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
