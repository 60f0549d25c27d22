"""The package's error classes: one base, :class:`ActBertError`, for every bad-input error.

An error's message names the file (or video, or config source) and the field, in one line, so a
batch job can report it and go on. ``ActBertError`` is a ``ValueError`` so callers that catch
``ValueError`` keep working.
"""

from __future__ import annotations


class ActBertError(ValueError):
    """Base of every bad-input error in the package (message names the file and the field)."""


class CheckpointError(ActBertError):
    """A model folder, checkpoint or weights file that cannot be loaded (names the file and the key).

    One class for all of them: ``save_pretrained`` folders, text (BERT) checkpoints, PaddleVideo
    checkpoints, training checkpoints, and a folder of another model than the one asked for.
    """


class CapabilityError(ActBertError):
    """A task asked a model for something it does not provide (names the model and the capability)."""


__all__ = ["ActBertError", "CapabilityError", "CheckpointError"]
