"""Learning-rate schedules as pure functions of the optimiser step (so resumed runs follow the
same curve): shared by the pretraining loop and the action-encoder trainer."""

from __future__ import annotations

import math

from actbert.errors import ActBertError

SCHEDULES = ("linear", "cosine", "constant")


def lr_factor(step: int, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak learning rate before optimiser step ``step`` (0-based): linear
    warm-up over ``warmup`` steps, then ``schedule`` decay to ``min_ratio`` at step ``total``."""
    if schedule not in SCHEDULES:
        raise ActBertError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * (1.0 - progress)
