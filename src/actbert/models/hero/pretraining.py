"""HERO's pretraining heads and losses (upstream ``model/model.py`` and ``model/pretrain.py``).

* MLM on the Cross-modal output (only the masked positions go through the LM head), CE averaged
  over the masked tokens.
* MFM: ``feat_regress`` (Linear -> GELU -> LN -> Linear) on the Temporal output at the masked
  frames. **NCE**: the positives are the *raw input features* of every masked frame of the batch
  (not passed through any network), the negatives the head's outputs at every non-masked
  position of the padded ``[B, Nv]`` grid -- padded frames included; plain dot products,
  temperature ``nce_temp``. **MFFR**: the training loss is the mean over masked frames of the L2
  distance (``sqrt`` of the summed squared error, as pretrain.py), not the squared distance.
* FOM: Linear(D -> 2D) -> GELU -> LN -> Linear(2D -> ``max_clip_len``) on every position of the
  shuffled temporal output; CE over the positions whose target is not -1.
* VSM: local start/end logits (query-frame dot products through two 1-d convolutions, masked
  after the convolution) and global video scores (max over frames of the cosine); hinge (or lse)
  ranking losses against the other videos of the batch and the queries of the other videos.

The loss functions take tensors and return tensors so each can be checked on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from actbert.models.hero.encoders import EMBED_EPS


class FrameFeatureRegression(nn.Module):
    """``[N, D] -> [N, Dv]``: upstream ``FrameFeatureRegression`` (``net.{0: Linear, 1: GELU, 2: LN, 3: Linear}``)."""

    def __init__(self, hidden: int, feat_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=EMBED_EPS), nn.Linear(hidden, feat_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPLayer(nn.Module):
    """``[N, D] -> [N, C]``: Linear(D -> 2D) -> GELU -> LN_1e-5 -> Linear(2D -> C) (upstream ``MLPLayer``, the FOM head)."""

    def __init__(self, hidden: int, out_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(hidden, hidden * 2)
        self.LayerNorm = nn.LayerNorm(hidden * 2, eps=EMBED_EPS)
        self.linear_2 = nn.Linear(hidden * 2, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.LayerNorm(F.gelu(self.linear_1(x))))


# ----------------------------------------------------------------------------------------------
# Losses


def mfm_nce_logits(prediction: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """prediction ``[M, Dv]``, targets ``[M, Dv]`` (raw features), negatives ``[N, Dv]`` -> float32 ``[M, M + N]``."""
    return torch.cat([prediction @ targets.t(), prediction @ negatives.t()], dim=1).float()


def mfm_nce_loss(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``[M, M + N]`` -> ``[M]`` per masked frame: CE whose target is the frame's own column (the diagonal)."""
    targets = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits / temperature, targets, reduction="none")


def mffr_loss(prediction: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[M, Dv]`` x2 -> (element-wise squared error ``[M, Dv]`` as upstream returns it,
    training loss ``[]`` = mean over frames of the L2 distance, as pretrain.py reduces it)."""
    squared = F.mse_loss(prediction, targets, reduction="none")
    if squared.shape[0] == 0:
        return squared, prediction.sum() * 0.0
    return squared, torch.sqrt(squared.sum(dim=1)).mean()


def ranking_loss(pos: torch.Tensor, neg: torch.Tensor, margin: float, kind: str) -> torch.Tensor:
    """``max(0, margin + neg - pos)`` (hinge) or ``log(1 + exp(neg - pos))`` (lse), element-wise."""
    if kind == "hinge":
        return torch.clamp(margin + neg - pos, min=0)
    return torch.log1p(torch.exp(neg - pos))


def _sorted_negatives(scores: torch.Tensor, is_positive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise negatives of ``scores [R, C]`` sorted descending (positives dropped) and their validity ``[R, C]``."""
    filled = scores.masked_fill(is_positive, float("-inf"))
    ordered, _ = torch.sort(filled, dim=1, descending=True)
    count = (~is_positive).sum(dim=1, keepdim=True)
    valid = torch.arange(scores.shape[1], device=scores.device)[None] < count
    return torch.where(valid, ordered, torch.zeros_like(ordered)), valid


def _hard_weights(valid: torch.Tensor, pool: int, weight: float) -> torch.Tensor:
    """Upstream's hard-negative weighting over sorted negatives: the first ``pool`` get ``weight``, the rest 0.1."""
    w = torch.full(valid.shape, 0.1, device=valid.device)
    w[:, :pool] = weight
    return w


@dataclass
class VideoLevelLoss:
    neg_ctx: torch.Tensor  # [Q] per query (mean over its negative videos)
    neg_q: torch.Tensor  # [Q] per query (mean over the queries of other videos)


def video_level_loss(
    scores: torch.Tensor,
    q_vidx: torch.Tensor,
    margin: float = 0.1,
    kind: str = "hinge",
    hard_pool_size: int | None = None,
    hard_neg_weight: float = 10.0,
) -> VideoLevelLoss:
    """VSM's global ranking terms per query (upstream ``get_video_level_loss`` with ``use_all_neg``).

    ``scores [Q, V]`` (query x video), ``q_vidx [Q]`` the video of each query. For query q of video
    v: ``neg_ctx`` = mean over the other videos v' of ``loss(S[q,v], S[q,v'])``; ``neg_q`` = mean
    over the queries q' of other videos of ``loss(S[q,v], S[q',v])``. With ``hard_pool_size`` the
    negatives are sorted descending and weighted ``hard_neg_weight`` for the first ``hard_pool_size``,
    0.1 for the rest, before the mean (upstream's hard negatives). Upstream needs the same number of
    queries per video (it reshapes by ``Q / V``); this form gives the same numbers then and also
    handles unequal counts. One video only: both terms are 0, as upstream.
    """
    n_q, n_v = scores.shape
    q_vidx = q_vidx.long()
    if n_v <= 1:
        zero = scores.sum() * 0.0
        return VideoLevelLoss(zero.expand(n_q), zero.expand(n_q))
    pos = scores[torch.arange(n_q, device=scores.device), q_vidx]  # [Q]
    videos = torch.arange(n_v, device=scores.device)
    # negative videos of each query
    own_video = videos[None, :] == q_vidx[:, None]  # [Q, V]
    neg, valid = _sorted_negatives(scores, own_video)
    ctx = ranking_loss(pos[:, None], neg, margin, kind)
    if hard_pool_size is not None:
        ctx = ctx * _hard_weights(valid, hard_pool_size, hard_neg_weight)
    ctx = (ctx * valid).sum(1) / valid.sum(1).clamp(min=1)
    # negative queries of each query's video
    own_query = q_vidx[None, :] == videos[:, None]  # [V, Q]
    neg_v, valid_v = _sorted_negatives(scores.t(), own_query)  # [V, Q]
    neg, valid = neg_v[q_vidx], valid_v[q_vidx]  # [Q, Q]
    qry = ranking_loss(pos[:, None], neg, margin, kind)
    if hard_pool_size is not None:
        qry = qry * _hard_weights(valid, hard_pool_size, hard_neg_weight)
    qry = (qry * valid).sum(1) / valid.sum(1).clamp(min=1)
    return VideoLevelLoss(ctx, qry)


__all__ = [
    "FrameFeatureRegression",
    "MLPLayer",
    "VideoLevelLoss",
    "mffr_loss",
    "mfm_nce_logits",
    "mfm_nce_loss",
    "ranking_loss",
    "video_level_loss",
]
