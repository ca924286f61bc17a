"""Interleaved timing for the benchmark scripts: every callable warmed up once, then run in
turn ``repeats`` times, so machine noise hits all of them alike; medians in seconds."""

from __future__ import annotations

import time

import numpy as np


def timed(runs: dict, repeats: int) -> dict:
    for f in runs.values():
        f()
    times = {k: [] for k in runs}
    for _ in range(repeats):
        for k, f in runs.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}
