"""Input processing: the part of a model family that turns feature-store clips + text into its batch.

Tasks describe what they want scored in model-agnostic terms -- an :class:`Item` is a
:class:`VideoRef` (a video, a time span or a list of 1 FPS frames) plus optional text (a
sentence, or word-piece ids such as a blanked sentence) -- and hand a list of items to the
model's processor, which lays them out as that model needs (ActBERT: three aligned streams;
PaddleVideo: its MSR-VTT test layout). A family's :class:`Processor` subclass is its model
class's ``processor_class``; :func:`processor_for` builds one for a model.

The store side is shared: :class:`~actbert.data.clips.ClipAssembler` resolves a ``VideoRef`` to
units (:class:`~actbert.data.corpus.VideoClips`: per unit one action feature and one frame's
regions) and keeps the tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from actbert.errors import ActBertError


@dataclass(frozen=True)
class VideoRef:
    """What part of a video an item stands for.

    ``frames`` (1 FPS frame indices) -> one unit per frame; otherwise ``[start, end]`` seconds
    (``None`` = from the start / to the end; both None = the whole video) -> the store clips of
    that span.
    """

    video_id: str
    start: float | None = None
    end: float | None = None
    frames: tuple[int, ...] | None = None

    @classmethod
    def of_frames(cls, video_id: str, frames: Sequence[int] | np.ndarray) -> "VideoRef":
        return cls(video_id, frames=tuple(int(f) for f in frames))


@dataclass(frozen=True)
class Item:
    """One input row: a video part and its text (a sentence, word-piece ids, or None = no text)."""

    video: VideoRef
    text: str | tuple[int, ...] | None = None


class Processor:
    """Base of the families' input processing (module docstring).

    ``assembler``: the :class:`~actbert.data.clips.ClipAssembler` (store + tokenizer);
    ``config``: the model's config. Subclasses implement :meth:`batch`.
    """

    def __init__(self, assembler: Any, config: Any):
        self.assembler = assembler
        self.config = config

    @property
    def tokenizer(self) -> Any:
        return self.assembler.tokenizer

    def batch(self, items: Sequence[Item], use_regions: bool = True) -> Any:
        """The model's batch for ``items`` (row i = item i); ``use_regions=False``: no region cues."""
        raise NotImplementedError

    def mask_positions(self, batch: Any) -> torch.Tensor:
        """``[B, Lt]`` bool: the text positions that hold the tokenizer's ``[MASK]``."""
        raise NotImplementedError(f"{type(self).__name__} has no text [MASK] positions")

    @classmethod
    def pretraining_data(cls, source: Any) -> Any:
        """The family's pretraining dataset + collator (:mod:`actbert.models.pretraining_data`).

        Default: ActBERT's clip-window samples collated by :meth:`pretraining_collator`. Override
        to sample differently; ``source`` is a :class:`~actbert.models.pretraining_data.PretrainSource`.
        """
        from actbert.models.pretraining_data import clip_window_data

        return clip_window_data(cls, source)

    @classmethod
    def pretraining_collator(cls, config: Any, tokenizer: Any, pad_to: tuple[int, int, int] | None = None) -> Any:
        """Clip-window samples (data/samples.py) -> the model's pretraining batch (used by the default data)."""
        raise NotImplementedError(f"{cls.__name__} has no pretraining collator; override pretraining_data or add one")


def processor_for(model: Any, assembler: Any) -> Processor:
    """The model's own processor over ``assembler`` (a model without one is an error)."""
    cls = getattr(model, "processor_class", None)
    if cls is None:
        raise ActBertError(f"{type(model).__name__} has no processor_class; it cannot take feature-store inputs")
    return cls(assembler, getattr(model, "config", None))


__all__ = ["Item", "Processor", "VideoRef", "processor_for"]
