"""Text-to-video retrieval metrics: R@K, median rank and mean rank (ActBERT 4.2.5, Table 4/5).

Input: a similarity matrix ``[num_texts, num_videos]`` (higher = more similar) and, per text, the
index of its ground-truth video (default: text ``i`` ↔ video ``i``, the 1k-A / YouCook2 protocol).

Rank of the ground truth (1-based, pessimistic): ``1 + #{j != gt : s[j] >= s[gt]}``. A tie with
another video therefore never flatters the score: a model that gives every video the same score
ranks every ground truth last.

Returned values (percent for recalls, as in the paper's tables)::

    {"R@1": %, "R@5": %, "R@10": %, "MedR": median rank, "MeanR": mean rank, "num_queries": N}

NaN scores, an empty matrix or a ground-truth index outside ``[0, num_videos)`` raise
``MetricInputError`` (a ``ValueError``); ``+inf`` / ``-inf`` are ordinary (extreme) scores.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import MetricInputError


def ground_truth_ranks(similarity: np.ndarray, gt_index: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Pessimistic 1-based rank of each text's ground-truth video: int64 ``[num_texts]``."""
    sims = np.asarray(similarity, dtype=np.float64)
    if sims.ndim != 2:
        raise MetricInputError(f"similarity: expected a 2-D [num_texts, num_videos] matrix, got shape {sims.shape}")
    num_texts, num_videos = sims.shape
    if num_texts == 0 or num_videos == 0:
        raise MetricInputError(f"similarity: empty matrix of shape {sims.shape}; retrieval needs at least one text and one video")
    if np.isnan(sims).any():
        rows = np.unique(np.nonzero(np.isnan(sims))[0])
        raise MetricInputError(f"similarity: NaN scores in text row(s) {rows[:10].tolist()}")
    if gt_index is None:
        if num_texts != num_videos:
            raise MetricInputError(f"gt_index: required when the matrix is not square (shape {sims.shape})")
        gt = np.arange(num_texts)
    else:
        gt = np.asarray(gt_index)
        if gt.shape != (num_texts,) or not np.issubdtype(gt.dtype, np.integer):
            raise MetricInputError(f"gt_index: expected {num_texts} integer indices, got shape {gt.shape} dtype {gt.dtype}")
        bad = np.nonzero((gt < 0) | (gt >= num_videos))[0]
        if bad.size:
            raise MetricInputError(f"gt_index: text {int(bad[0])} points to video {int(gt[bad[0]])}, outside 0..{num_videos - 1}")
    true_scores = sims[np.arange(num_texts), gt][:, None]  # [T, 1]
    # >= counts the ground truth itself once, so the count is already 1 + (others with score >= true)
    return (sims >= true_scores).sum(axis=1).astype(np.int64)


def retrieval_metrics(
    similarity: np.ndarray, gt_index: Sequence[int] | np.ndarray | None = None, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """R@K for each K in ``ks`` (percent), ``MedR``, ``MeanR`` and ``num_queries``."""
    return rank_metrics(ground_truth_ranks(similarity, gt_index), ks)


def rank_metrics(ranks: Sequence[int] | np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """:func:`retrieval_metrics` from the ground-truth ranks ``[num_texts]`` themselves (1-based)."""
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or ranks.size == 0 or (ranks < 1).any():
        raise MetricInputError(f"ranks: expected a non-empty 1-D array of 1-based ranks, got shape {ranks.shape}")
    results: dict[str, float] = {f"R@{k}": float(100.0 * np.mean(ranks <= k)) for k in ks}
    results["MedR"] = float(np.median(ranks))
    results["MeanR"] = float(np.mean(ranks))
    results["num_queries"] = int(ranks.size)
    return results
