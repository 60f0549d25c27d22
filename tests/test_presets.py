"""The model presets have one home: the packaged ``src/actbert/configs/`` (no repo-root copy)."""

from __future__ import annotations

import importlib
from pathlib import Path

import actbert

PACKAGED = Path(actbert.__file__).resolve().parent / "configs"


def _preset_path():
    # preset_path lives with the model registry (formerly actbert.models.pretrained)
    for module in ("actbert.models.registry", "actbert.models.pretrained"):
        try:
            found = getattr(importlib.import_module(module), "preset_path", None)
        except ImportError:
            continue
        if found is not None:
            return found
    raise AssertionError("no preset_path in actbert.models")


def test_presets_are_packaged_once():
    for name in ("tiny", "small", "base"):
        assert (PACKAGED / f"{name}.yaml").is_file()
    assert not (Path(__file__).resolve().parents[1] / "configs").exists(), "repo-root configs/ is gone: one copy only"


def test_preset_path_resolves_to_the_packaged_file():
    assert _preset_path()("small").resolve() == (PACKAGED / "small.yaml").resolve()
