"""The fine-tuning loop the downstream tasks share (beside :mod:`actbert.train.loop`, the pretraining one).

``train_loop(parameters, loss_at, steps, lr)``: AdamW with linear warm-up then linear decay to 0
(``utils.schedule.lr_factor``), gradient clipping, a progress bar; ``loss_at(step)`` builds a batch
and returns its loss, so each task keeps only what it trains on. A non-finite loss stops the run
with an error naming the step.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from actbert.errors import ActBertError
from actbert.utils.schedule import lr_factor


@dataclass
class TrainLog:
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    model: Any = None  # what the task's evaluate takes after fine-tuning (set by the task; None = the model given)

    def summary(self) -> dict[str, Any]:
        first = float(np.mean(self.losses[: max(1, len(self.losses) // 10)])) if self.losses else None
        last = float(np.mean(self.losses[-max(1, len(self.losses) // 10) :])) if self.losses else None
        return {"steps": len(self.losses), "first_loss": first, "last_loss": last, "seconds": round(self.seconds, 2)}


def train_loop(
    parameters: Iterable[torch.nn.Parameter] | Iterable[dict],
    loss_at: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    weight_decay: float = 0.01,
    warmup: float = 0.1,
    grad_clip: float = 1.0,
    desc: str = "fine-tune",
    modules: Sequence[torch.nn.Module] = (),
) -> TrainLog:
    """AdamW with linear warm-up then linear decay to 0 (``utils.schedule.lr_factor``); ``loss_at(step)`` builds a batch and returns its loss.

    ``modules`` are put in train mode for the loop and back to eval mode after it.
    """
    params = list(parameters)
    log = TrainLog()
    if steps <= 0:
        return log
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warm = max(1, int(round(warmup * steps)))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warm, steps, "linear", 0.0))
    flat = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    for m in modules:
        m.train()
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=desc, leave=False, disable=not sys.stderr.isatty())
    for step in bar:
        loss = loss_at(step)
        if not torch.isfinite(loss):
            raise ActBertError(f"{desc}: loss became {loss.item()} at step {step} (lower the learning rate)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(flat, grad_clip)
        optimizer.step()
        schedule.step()
        log.losses.append(float(loss.item()))
        bar.set_postfix(loss=f"{log.losses[-1]:.3f}")
    for m in modules:
        m.eval()
    log.seconds = time.perf_counter() - start
    return log


__all__ = ["TrainLog", "train_loop"]
