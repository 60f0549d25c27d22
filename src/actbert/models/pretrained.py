"""Model folders: ``save_pretrained`` / ``from_pretrained`` (Hugging Face style: config + safetensors).

A saved model is a folder::

    config.json          the model config (dataclass fields, including "architecture")
    model.safetensors    the weights; tied weights are stored once (metadata "tied" lists the
                         aliases), metadata "model_class" names the saved class

The class comes from the registry by ``config["architecture"]`` (:mod:`actbert.models.registry`).
A class with heads may name its encoder ``base_model_class`` and the attribute holding it
``base_model_prefix``; loading the encoder class from a folder saved with heads keeps only the
prefixed encoder weights. Task heads (a segmentation classifier, a caption decoder) are saved beside
the model by :mod:`actbert.tasks.heads`.

Every problem (missing file, unknown config key, missing / unexpected / mis-shaped tensor, a folder
of another model) raises :class:`CheckpointError` naming the file and the key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from actbert.config import from_dict, to_dict
from actbert.errors import CheckpointError
from actbert.models.registry import resolve_architecture
from actbert.utils.io import atomic_save_file, atomic_write_json, read_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def _tied_aliases(model: nn.Module) -> dict[str, str]:
    """``{alias: canonical}`` for state-dict entries that are the same tensor as an earlier entry."""
    first_name: dict[int, str] = {}
    aliases = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        key = id(tensor)
        if key in first_name:
            aliases[name] = first_name[key]
        else:
            first_name[key] = name
    return aliases


def save_pretrained(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (tied weights once) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "architecture"):
        raise TypeError(f"{type(model).__name__} has no .config with an 'architecture' field; cannot save_pretrained")
    aliases = _tied_aliases(model)
    tensors = {name: t.detach().cpu() for name, t in model.state_dict().items() if name not in aliases}
    metadata = {"format": "pt", "model_class": type(model).__name__, "tied": json.dumps(aliases)}
    atomic_save_file(tensors, directory / WEIGHTS_NAME, metadata=metadata)
    atomic_write_json(directory / CONFIG_NAME, to_dict(config))
    return directory


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            return {name: handle.get_tensor(name) for name in handle.keys()}, metadata
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: weights file not found") from exc
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc


def _choose_class(registered: type, saved_name: str | None, requested: type | None, where: str = "config.json") -> type:
    if requested is not None:
        allowed = {registered, getattr(registered, "base_model_class", None)}
        if requested not in allowed and getattr(requested, "config_class", None) is not registered.config_class:
            raise CheckpointError(f"{where}: field 'architecture' names a {registered.__name__} checkpoint, which "
                                  f"{requested.__name__} cannot load (a checkpoint of another model family)")
        return requested
    base = getattr(registered, "base_model_class", None)
    if base is not None and saved_name == base.__name__:
        return base
    return registered


def from_pretrained(
    directory: str | os.PathLike, model_class: type | None = None, map_location: str | torch.device = "cpu"
) -> nn.Module:
    """Load a folder written by :func:`save_pretrained`; returns the model in eval mode.

    ``model_class`` defaults to the saved class (from the registry by ``config.json``'s
    architecture). Passing the encoder class (``ActBertModel``) on a folder saved with heads keeps
    only the encoder weights. Any missing / unexpected / mis-shaped tensor is an error.
    """
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    config = read_saved_config(directory)
    registered = resolve_architecture(config.architecture, f"{config_path}:architecture")
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: not found")
    tensors, metadata = read_safetensors(weights_path)
    cls = _choose_class(registered, metadata.get("model_class"), model_class, str(config_path))
    model = cls(config)

    prefix = getattr(registered, "base_model_prefix", None)
    base = getattr(registered, "base_model_class", None)
    if cls is base and prefix and any(name.startswith(prefix + ".") for name in tensors):
        tensors = {name[len(prefix) + 1 :]: t for name, t in tensors.items() if name.startswith(prefix + ".")}

    expected = model.state_dict()
    aliases = _tied_aliases(model)
    missing = [name for name in expected if name not in tensors and name not in aliases]
    unexpected = [name for name in tensors if name not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:8]}{' ...' if len(missing) > 8 else ''} ({len(missing)})")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''} ({len(unexpected)})")
        raise CheckpointError(f"{weights_path}: does not match {cls.__name__}: " + "; ".join(parts))
    for name, tensor in tensors.items():
        if name in aliases:
            continue
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{weights_path}: tensor '{name}' has shape {list(tensor.shape)}, "
                f"but {config_path} describes {list(expected[name].shape)}"
            )
    model.load_state_dict({k: v for k, v in tensors.items() if k not in aliases}, strict=False)
    return model.to(map_location).eval()


class PretrainedModelMixin:
    """``model.save_pretrained(dir)`` and ``Class.from_pretrained(dir)`` for model classes."""

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        return save_pretrained(self, directory)  # type: ignore[arg-type]

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu"):
        return from_pretrained(directory, model_class=cls, map_location=map_location)


def read_saved_config(directory: str | os.PathLike):
    """The config dataclass of a ``save_pretrained`` folder (its architecture from the registry)."""
    config_path = Path(directory) / CONFIG_NAME
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: not found (is {directory} a folder written by save_pretrained?)")
    try:
        data = read_json(config_path, "model config")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc
    if not isinstance(data, dict) or "architecture" not in data:
        raise CheckpointError(f"{config_path}: missing key 'architecture'")
    registered = resolve_architecture(data["architecture"], f"{config_path}:architecture")
    return from_dict(registered.config_class, data, source=str(config_path))


__all__ = [
    "CONFIG_NAME",
    "CheckpointError",
    "PretrainedModelMixin",
    "WEIGHTS_NAME",
    "from_pretrained",
    "read_safetensors",
    "read_saved_config",
    "save_pretrained",
]
