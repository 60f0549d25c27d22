"""The architecture registry: model families built by name (timm style), presets, ``create_model``.

``ARCHITECTURES`` maps a config's ``architecture`` field to the family's model class (the class
with pretraining heads, ``"module:Class"``, imported on first use); the class brings its
``config_class`` (:mod:`actbert.models.interface` says what a registered class provides).
``register_architecture(name, cls)`` adds one -- tests register a toy model this way
(docs/adding_a_model.md).

Presets are ``src/actbert/configs/<name>.yaml``; ``load_model_config(preset, overrides)`` reads
a preset's ``model:`` section as its architecture's config dataclass.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from actbert.config import ConfigError, apply_overrides, from_dict

# architecture name -> "module:Class" (the class with pretraining heads), imported on first use
ARCHITECTURES: dict[str, str] = {
    "actbert": "actbert.models.actbert.modeling:ActBertForPretraining",
    "paddlevideo": "actbert.models.paddlevideo.modeling:PaddleVideoActBert",
    "videobert": "actbert.models.videobert.modeling:VideoBertForPretraining",
    "hero": "actbert.models.hero.modeling:HeroForPretraining",
    "vlm": "actbert.models.vlm.modeling:VLMForPretraining",
}

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"


def list_architectures() -> list[str]:
    return sorted(ARCHITECTURES)


def register_architecture(name: str, target: str | type) -> None:
    """Register (or replace) ``name`` -> model class or ``"module:Class"``."""
    ARCHITECTURES[name] = target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"


def resolve_architecture(name: str, source: str = "config") -> type:
    """The model class registered for ``name`` (imports its module)."""
    if name not in ARCHITECTURES:
        raise ConfigError(f"{source}: unknown architecture {name!r}; registered: {sorted(ARCHITECTURES)}")
    module_name, _, class_name = ARCHITECTURES[name].partition(":")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{source}: architecture {name!r} is registered as {ARCHITECTURES[name]!r}, which cannot be imported ({exc})") from exc


# ----------------------------------------------------------------------------------------------
# Config presets


def preset_path(preset_or_path: str | os.PathLike) -> Path:
    """``"tiny"`` -> the packaged ``configs/tiny.yaml``; an existing file is returned as is (a folder that
    happens to be named like a preset, such as ``./base``, is not a config file and does not hide it)."""
    path = Path(preset_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    packaged = PRESET_DIR / f"{preset_or_path}.yaml"
    if not packaged.exists():  # family presets are named videobert-small on the command line, videobert_small.yaml on disk
        packaged = PRESET_DIR / f"{str(preset_or_path).replace('-', '_')}.yaml"
    if not packaged.exists():
        known = sorted(p.stem for p in packaged.parent.glob("*.yaml"))
        raise ConfigError(f"{preset_or_path}: neither a config file nor a preset (presets: {known})")
    return packaged


def load_model_config(preset_or_path: str | os.PathLike, overrides: Sequence[str] = ()) -> Any:
    """The ``model:`` section of a preset/YAML file as its architecture's config dataclass.

    ``overrides`` are dotted ``key=value`` strings relative to the model section (``"text_layers=4"``).
    """
    import yaml

    path = preset_path(preset_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    section = data.get("model") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: no 'model:' mapping")
    return model_config_from_dict(apply_overrides(section, overrides), f"{path}:model")


def create_model(config: Any, heads: bool = True, verbose: bool = True) -> nn.Module:
    """Build the registered model for ``config`` (with pretraining heads unless ``heads=False``)
    and load ``config.text_init`` into its text stream when set (report printed to stderr)."""
    cls = resolve_architecture(config.architecture)
    if not heads:
        cls = getattr(cls, "base_model_class", cls)
    model = cls(config)
    text_init = getattr(config, "text_init", None)
    if text_init:
        from actbert.models.text_init import load_text_weights

        report = load_text_weights(model, text_init)
        model.text_init_report = report
        if verbose:
            print(str(report), file=sys.stderr)
    return model


def model_config_from_dict(data: Any, source: str) -> Any:
    """A model section (mapping with ``architecture``, default ``"actbert"``) -> its config dataclass."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping for the model section, got {type(data).__name__}")
    model_class = resolve_architecture(data.get("architecture", "actbert"), f"{source}.architecture")
    return from_dict(model_class.config_class, data, source=source)


__all__ = [
    "ARCHITECTURES",
    "PRESET_DIR",
    "create_model",
    "list_architectures",
    "load_model_config",
    "model_config_from_dict",
    "preset_path",
    "register_architecture",
    "resolve_architecture",
]
