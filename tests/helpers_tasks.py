"""The five downstream tasks run on one model, as every family's test does it (tests only).

``run_all_task(task, model, assembler, bench, folder)`` fine-tunes (where the task does), evaluates
through the registry, checks each record's named primary metric, and -- with ``folder`` -- saves
the fine-tuned model, loads it back and checks that it reproduces every metric.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

# budgets small enough for a CPU test, large enough to touch every code path
TASK_SETTINGS = {
    "retrieval": ["steps=2", "train_batch=4", "max_queries=6", "batch_size=16"],
    "captioning": ["steps=2", "train_batch=4", "max_clips=3", "meteor=false", "beam_size=1", "layers=1", "heads=2", "max_caption_len=6"],
    "videoqa": ["steps=2", "train_batch=2", "fib_batch=2", "max_questions=4"],
    "segmentation": ["steps=2", "train_batch=2", "max_videos=1"],
    "step_localization": ["units=clips", "max_videos=1"],
}
TASKS = list(TASK_SETTINGS)


def run_task(task: str, model: Any, assembler: Any, bench: Any, folder: Path | None = None,
             extra: list[str] | tuple[str, ...] = ()) -> tuple[Any, list[dict]]:
    """(the model evaluate took, its records); asserts as the module docstring says."""
    from actbert.tasks import registry

    settings = registry.make_settings(task, [*TASK_SETTINGS[task], *extra])
    finetuned = registry.has_finetune(task)
    if finetuned:
        torch.manual_seed(0)
        model = registry.finetune(task, model, assembler, bench, settings).model
    records = registry.evaluate(task, model, assembler, bench, settings, finetuned=finetuned)
    primary = registry.task_module(task).PRIMARY
    assert records and all(r["task"] == task and r["primary"] == primary for r in records)
    for r in records:
        value = r["metrics"][primary]
        assert isinstance(value, (int, float)) and math.isfinite(value), r["metrics"]
        assert 0.0 <= value <= (10.0 if primary == "CIDEr" else 100.0), (primary, value)
    if folder is not None:
        registry.save_finetuned(task, model, folder)
        again = registry.evaluate(task, registry.load_for_evaluation(task, folder), assembler, bench, settings, finetuned=finetuned)
        assert [r["metrics"] for r in again] == [r["metrics"] for r in records]
    return model, records
