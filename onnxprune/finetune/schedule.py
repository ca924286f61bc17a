"""Learning-rate schedules: linear warm-up, then constant, cosine decay to ``min_ratio`` of
the peak, linear decay, or step decay (× ``gamma`` at each third of the run)."""

from __future__ import annotations

import math

from ..errors import BadArgumentError

SCHEDULES = ("cosine", "linear", "step", "constant")


def learning_rate(step: int, total: int, peak: float, schedule: str = "cosine", warmup: int = 0,
                  min_ratio: float = 0.0, gamma: float = 0.1) -> float:
    """The rate for optimizer step ``step`` (0-based) of ``total``."""
    if schedule not in SCHEDULES:
        raise BadArgumentError(f"unknown learning-rate schedule '{schedule}' (choose from {', '.join(SCHEDULES)})")
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    span = max(total - warmup, 1)
    t = min(max(step - warmup, 0) / span, 1.0)
    if schedule == "constant":
        return peak
    if schedule == "cosine":
        return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
    if schedule == "linear":
        return peak * (min_ratio + (1 - min_ratio) * (1 - t))
    return peak * gamma ** min(int(t * 3), 2)  # step: full, ×gamma, ×gamma² over thirds
