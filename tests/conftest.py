"""Shared test fixtures.

``synth_tiny``: the built-in synthetic benchmark at its ``tiny`` size (24 short videos, a few seconds to
generate), made once per test session and shared read-only by every test module that needs real
videos, narrations or annotation files. Tests that write must copy what they change.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _few_threads():
    # CI has 2 cores; one thread keeps the suite's timings stable and comparable.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synth_tiny(tmp_path_factory) -> Path:
    """Root folder of ``actbert synth --size tiny --seed 0`` (layout: docs/architecture.md)."""
    from actbert.data.synth.generate import generate_benchmark

    root = tmp_path_factory.mktemp("synth_tiny")
    generate_benchmark("tiny", 0, root, progress=False)
    return root
