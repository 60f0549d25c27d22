"""The shared pair scorer: every task that ranks (text, video) pairs scores them here.

Retrieval (every query x every clip), multiple-choice video QA (every question x its candidates)
and step localization (every candidate moment x every step label) all reduce to a list of
:class:`~actbert.models.processing.Item` rows scored by the model's ``pair_scores`` capability,
in batches, on the model's device, in fp32, bf16 autocast or bf16 weights (``dtype``: ``fp32`` |
``bf16`` | ``bf16-weights``, :mod:`actbert.utils.precision`; the last casts the model once per call).
A model whose scores factor into a text part and a video part (``factored_scores``: VLM, HERO) can
score a whole text x video matrix from one pass per text and per video (:func:`factored_score_matrix`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from actbert.models.interface import device_of, factored_similarity, require
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


@torch.no_grad()
def factored_score_matrix(
    model: Any,
    assembler: Any,
    texts: Sequence[Item],
    videos: Sequence[Item],
    batch_size: int = 64,
    dtype: str = "fp32",
    use_regions: bool = True,
    task: str = "scoring",
    progress: bool = True,
) -> np.ndarray:
    """``pair_scores`` of every (text, video) pair, float32 ``[T, V]``, for a model with the
    ``factored_scores`` capability: one ``score_text`` pass per text row and one ``score_video`` per
    video row, then :func:`~actbert.models.interface.factored_similarity`. ``texts`` are rows with a
    text (any video: the model does not read it there); ``videos`` rows with a video part."""
    require(model, ["factored_scores"], task)
    model.eval()
    processor = processor_for(model, assembler)
    device = device_of(model)
    text_parts, video_parts, valid_parts = [], [], []
    bar = tqdm(total=len(texts) + len(videos), desc=f"{task} texts + videos", unit="row", leave=False, disable=not progress)
    with inference_precision(model, dtype, device.type):
        for chunk in batched(list(texts), batch_size):
            text_parts.append(model.score_text(processor.batch(chunk, use_regions=use_regions).to(device)).float().cpu())
            bar.update(len(chunk))
        for chunk in batched(list(videos), batch_size):
            vectors, valid = model.score_video(processor.batch(chunk, use_regions=use_regions).to(device))
            video_parts.append(vectors.float().cpu())
            valid_parts.append(valid.bool().cpu())
            bar.update(len(chunk))
    bar.close()
    if not text_parts or not video_parts:
        return np.zeros((len(texts), len(videos)), np.float32)
    # batches pad their videos to their own longest: pad every batch to the longest of all
    width = max(v.shape[1] for v in video_parts)
    vectors = torch.cat([torch.nn.functional.pad(v, (0, 0, 0, width - v.shape[1])) for v in video_parts])
    valid = torch.cat([torch.nn.functional.pad(m, (0, width - m.shape[1])) for m in valid_parts])
    return factored_similarity(torch.cat(text_parts), vectors, valid).numpy()


__all__ = ["factored_score_matrix", "score_items"]
