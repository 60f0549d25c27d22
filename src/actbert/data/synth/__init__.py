"""The built-in synthetic instructional-video benchmark (``actbert synth``).

``world`` (objects, actions, tasks, words) → ``render`` (frames, mp4) and ``narration`` (ASR-like
narrations, human captions) → ``annotations`` (downstream files in the real datasets' formats),
driven by ``generate.generate_benchmark``.
"""

# (no `from __future__ import annotations` here: it would shadow the `annotations` submodule)
from .generate import SIZES, BenchmarkInfo, generate_benchmark

__all__ = ["SIZES", "BenchmarkInfo", "generate_benchmark"]
