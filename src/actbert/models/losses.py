"""Losses shared by the model families (and the action encoder).

Each averages over its valid rows and is exactly 0 -- not NaN -- when there are none, so a batch
without targets for one task still backpropagates (``zero_like`` keeps the graph).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def zero_like(reference: torch.Tensor) -> torch.Tensor:
    """A scalar 0 that stays in the autograd graph of ``reference`` (so backward always works)."""
    return reference.sum().float() * 0.0


def _valid_mean(values: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    if valid is None:
        return values.mean()
    return (values * valid).sum() / valid.sum().clamp(min=1)


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """logits ``[N, V]``, labels ``[N]``, valid ``[N]`` bool -> mean CE over valid (0 if none)."""
    return _valid_mean(F.cross_entropy(logits.float(), labels, reduction="none"), valid)


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """``-sum_c t_c log softmax(z)_c`` per row, averaged over ``valid`` rows (all rows if None).

    logits/targets ``[..., C]`` (targets L1-normalised, e.g. mined-verb distributions), valid ``[...]``.
    """
    ce = -(targets.float() * F.log_softmax(logits.float(), dim=-1)).sum(-1)
    return _valid_mean(ce, valid)


def kl_to_targets(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """logits/targets ``[B, L, K]``, valid ``[B, L]`` -> mean over valid of ``KL(targets || softmax(logits))``."""
    kl = F.kl_div(F.log_softmax(logits.float(), dim=-1), targets.float(), reduction="none").sum(-1)
    return _valid_mean(kl, valid)


def info_nce(text: torch.Tensor, video: torch.Tensor, scale: torch.Tensor | float, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over ``N`` matched pairs (CLIP's loss): row ``i`` of ``text [N, D]`` and of
    ``video [N, D]`` are a pair, every other row of the batch a negative.

    ``logits = scale * cos(text_i, video_j)`` ``[N, N]``; the loss is the mean of the text->video
    and video->text cross-entropies with target ``i`` for row ``i``. ``exclude [N, N]`` bool marks
    off-diagonal pairs to leave out of both softmaxes (e.g. two rows from the same video, which are
    not negatives of each other); the diagonal is never excluded. Exactly 0 for ``N < 2`` (no
    negatives to contrast with).
    """
    if text.shape[0] < 2:
        return zero_like(text) + zero_like(video)
    logits = scale * F.normalize(text.float(), dim=-1) @ F.normalize(video.float(), dim=-1).T  # [N, N]
    if exclude is not None:
        eye = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(exclude.to(logits.device) & ~eye, float("-inf"))
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def hard_negative_indices(similarity: torch.Tensor, exclude: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """For each row ``i`` of ``similarity [N, M]`` (logits, higher = closer), one column ``j != i``
    drawn with probability ``softmax_j(similarity[i])`` over the allowed columns -> ``[N]`` long
    (ALBEF's hard-negative mining; ``N <= M``, column ``i`` is row ``i``'s own pair).

    ``exclude [N, M]`` bool marks further columns that are not negatives of the row (the same
    video). A row left with no allowed column falls back to any column but its own; ``M < 2`` is
    an error (no negative exists).
    """
    n, m = similarity.shape
    if m < 2:
        raise ValueError(f"hard negatives need at least 2 columns, got a [{n}, {m}] similarity")
    own = torch.zeros(n, m, dtype=torch.bool, device=similarity.device)
    own[torch.arange(n), torch.arange(n)] = True
    banned = own if exclude is None else own | exclude.to(similarity.device)
    banned = torch.where(banned.all(dim=1, keepdim=True), own, banned)  # nothing left: anything but itself
    logits = similarity.detach().float().masked_fill(banned, float("-inf"))
    probs = torch.softmax(logits, dim=1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(similarity.device)


__all__ = ["hard_negative_indices", "info_nce", "kl_to_targets", "masked_lm_loss", "soft_target_cross_entropy", "zero_like"]
