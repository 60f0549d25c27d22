"""The shared pair scorer: every task that ranks (text, video) pairs scores them here.

Retrieval (every query x every clip), multiple-choice video QA (every question x its candidates)
and step localization (every candidate moment x every step label) all reduce to a list of
:class:`~actbert.models.processing.Item` rows scored by the model's ``pair_scores`` capability,
in batches, on the model's device, in fp32, bf16 autocast or bf16 weights (``dtype``: ``fp32`` |
``bf16`` | ``bf16-weights``, :mod:`actbert.utils.precision`; the last casts the model once per call).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from actbert.models.interface import device_of, require
from actbert.models.processing import Item, processor_for
from actbert.tasks.common import batched
from actbert.utils.precision import inference_precision


@torch.no_grad()
def score_items(
    model: Any,
    assembler: Any,
    items: Sequence[Item],
    batch_size: int = 64,
    dtype: str = "fp32",
    use_regions: bool = True,
    task: str = "scoring",
    progress: bool = True,
) -> np.ndarray:
    """``pair_scores`` of every item (a video part + its text): float32 ``[N]``, in item order."""
    require(model, ["pair_scores"], task)
    model.eval()
    processor = processor_for(model, assembler)
    device = device_of(model)
    scores = np.empty(len(items), np.float32)
    bar = tqdm(total=len(items), desc=f"{task} scores", unit="pair", leave=False, disable=not progress)
    done = 0
    with inference_precision(model, dtype, device.type):
        for chunk in batched(list(items), batch_size):
            batch = processor.batch(chunk, use_regions=use_regions).to(device)
            scores[done : done + len(chunk)] = model.pair_scores(batch).float().cpu().numpy()
            done += len(chunk)
            bar.update(len(chunk))
    bar.close()
    return scores


__all__ = ["score_items"]
