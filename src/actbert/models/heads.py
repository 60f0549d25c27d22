"""Prediction heads shared by the model families.

:class:`PredictionHead` is BERT's prediction head on a token state -- ``decoder(transform(x))``
with ``transform = LayerNorm(act(dense(x)))`` -- used for ActBERT's masked action / region
classification and PaddleVideo's ``imagePredictions`` / ``actionPredictions`` (same parameter
names, so checkpoints map by renaming only).
"""

from __future__ import annotations

import torch
from torch import nn

from actbert.models.layers import PredictionTransform


class PredictionHead(nn.Module):
    """``[..., D] -> [..., num_classes]``: prediction transform + linear decoder."""

    def __init__(self, hidden: int, num_classes: int, activation: str = "gelu"):
        super().__init__()
        self.transform = PredictionTransform(hidden, activation)
        self.decoder = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x))


__all__ = ["PredictionHead"]
