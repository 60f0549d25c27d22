"""VLM's input processing: feature-store seconds + text -> MMPT's four tensors (and MTM labels).

A VLM row is MMPT's aligner output:

* ``caps [Lc]`` = ``[CLS] [SEP] w_1..w_n [SEP] [PAD]..`` with ``Lc = max_len - max_video_len`` and
  ``n <= max_len - max_video_len - 3`` word pieces; ``cmasks [Lc]`` is 1 up to and including the
  second ``[SEP]``.
* ``vfeats [max_video_len, D]`` = one global feature per second of video (the store's
  ``second_features``), zero-padded; ``vmasks`` marks the valid seconds. The video is always padded
  to ``max_video_len`` as upstream does, so positions have no gap; a longer span is thinned evenly.

Tasks hand :class:`~actbert.models.processing.Item` s to :meth:`VLMProcessor.batch`; the seconds of
an item are those whose window centre lies in its span (``ClipAssembler.second_features``), or the
listed 1 FPS frames. An item without text gets the dummy caption ``[CLS] [SEP] [SEP]`` (no words),
as VLM feeds a "dummy text token" for video-only passes.

Pretraining (:class:`Collator`): per example MMPT's ``MFMMLMAligner`` masking -- with probability
``mm_prob`` a masked modality example (then half whole-text, half whole-video), otherwise MFM-MLM
at ``mlm_probability`` / ``mfm_probability``; selected words become ``[MASK]`` (80%), a random id
(10%) or stay (10%), also in a whole-text row. :func:`mask_row` is that step on one row.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from actbert.errors import ActBertError
from actbert.models.processing import Item, Processor
from actbert.models.vlm.configuration import TEXT_LABEL_IGNORE

# per-row masking modes (the fixture's row_mode codes)
MFM_MLM, MMM_TEXT, MMM_VIDEO = 0, 1, 2


class VLMInputError(ActBertError):
    """Inputs that do not fit the VLM layout (names the input and field)."""


@dataclass
class VLMBatch:
    """MMPT's batch: ``caps``/``cmasks`` ``[B, Lc]``, ``vfeats [B, Lv, D]``, ``vmasks [B, Lv]``;
    for pretraining ``video_label [B, Lv]`` bool (masked frames) and ``text_label [B, Lc]`` (original id
    at masked words, -100 elsewhere)."""

    caps: torch.Tensor
    cmasks: torch.Tensor
    vfeats: torch.Tensor
    vmasks: torch.Tensor
    video_label: torch.Tensor | None = None
    text_label: torch.Tensor | None = None
    row_mode: torch.Tensor | None = None  # [B] int: 0 MFM-MLM, 1 whole text, 2 whole video (pretraining)

    def to(self, device: str | torch.device, non_blocking: bool = False) -> "VLMBatch":
        moved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return VLMBatch(**{k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v for k, v in moved.items()})

    def select(self, rows: torch.Tensor) -> "VLMBatch":
        """The batch of the rows where ``rows [B]`` (bool) is true."""
        moved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return VLMBatch(**{k: v[rows.to(v.device)] if isinstance(v, torch.Tensor) else v for k, v in moved.items()})

    def __len__(self) -> int:
        return int(self.caps.shape[0])

    def num_tokens(self) -> int:
        return int(self.cmasks.sum() + self.vmasks.sum())


__all__ = ["MFM_MLM", "MMM_TEXT", "MMM_VIDEO", "VLMBatch", "VLMInputError", "VLMProcessor"]


class VLMProcessor(Processor):
    """Items -> :class:`VLMBatch` (module docstring). Filled in below."""
