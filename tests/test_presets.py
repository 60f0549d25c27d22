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


def test_a_folder_named_like_a_preset_does_not_hide_it(tmp_path, monkeypatch):
    from actbert.models.registry import preset_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()  # e.g. a run or data folder called "tiny" where the command runs
    assert preset_path("tiny").name == "tiny.yaml" and preset_path("tiny").is_file()
    (tmp_path / "mine").write_text("model: {}\n")
    assert preset_path("mine") == tmp_path.joinpath("mine").relative_to(tmp_path)  # a file is taken as it is
