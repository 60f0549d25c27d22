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


__all__ = ["kl_to_targets", "masked_lm_loss", "soft_target_cross_entropy", "zero_like"]
