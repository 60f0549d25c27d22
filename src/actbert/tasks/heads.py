"""Task heads: the parts a downstream task trains on top of a model, kept and reloaded with it.

Fine-tuning leaves either the model alone (retrieval, VideoQA) or the model plus heads it added
(segmentation: a frame classifier; captioning: a caption decoder). The second is a
:class:`FinetunedModel` -- the model and a name -> :class:`TaskHead` table -- the one thing that
``save_finetuned`` / ``load_for_evaluation`` (tasks/registry.py) write and read for every task.

On disk a fine-tuned folder is the model's own ``save_pretrained`` folder (so ``from_pretrained``
and every other task read it as the plain model) plus::

    heads.json          {"format": "actbert-task-heads", "version": 1,
                         "heads": {name: {"kind": kind, "config": {...}}}}
    heads.safetensors   every head's tensors as "<name>.<parameter>"

A head class declares its ``kind`` (the key of :data:`HEAD_KINDS`), a JSON-able ``head_config()``
and ``from_head_config(config)``; loading builds heads only from :data:`HEAD_KINDS` (a name in a
file never chooses arbitrary code) and refuses tensors that do not fit.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch
import torch.nn as nn

from actbert.tasks.common import TaskError
from actbert.utils.io import atomic_save_file, atomic_write_json, read_json

HEADS_CONFIG = "heads.json"
HEADS_WEIGHTS = "heads.safetensors"
HEADS_FORMAT = "actbert-task-heads"
HEADS_VERSION = 1

# kind -> "module:Class" (imported on first use)
HEAD_KINDS: dict[str, str] = {
    "frame_classifier": "actbert.tasks.segmentation:FrameClassifier",
    "caption_decoder": "actbert.tasks.captioning:CaptionDecoder",
}


class TaskHead(nn.Module):
    """Base of the task heads: ``kind`` names the class in :data:`HEAD_KINDS`."""

    kind: ClassVar[str]

    def head_config(self) -> dict[str, Any]:
        """JSON-able: everything :meth:`from_head_config` needs to rebuild the head (not its weights)."""
        raise NotImplementedError

    @classmethod
    def from_head_config(cls, config: Mapping[str, Any]) -> "TaskHead":
        raise NotImplementedError


def register_head(kind: str, cls_or_path: type | str) -> None:
    """Add a head class (or its ``"module:Class"`` path) under ``kind``."""
    HEAD_KINDS[kind] = cls_or_path if isinstance(cls_or_path, str) else f"{cls_or_path.__module__}:{cls_or_path.__qualname__}"


def head_class(kind: str, where: str) -> type:
    if kind not in HEAD_KINDS:
        raise TaskError(f"{where}: unknown head kind {kind!r}; known: {', '.join(sorted(HEAD_KINDS))}")
    module, _, name = HEAD_KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


class FinetunedModel(nn.Module):
    """A model plus the heads a task trained on it: ``model`` (the registered architecture) and
    ``heads`` (an ``nn.ModuleDict``, name -> :class:`TaskHead`). Tasks that need a head ask for it
    with :meth:`head`; every other task uses :func:`base_model`."""

    def __init__(self, model: nn.Module, heads: Mapping[str, TaskHead]):
        super().__init__()
        self.model = model
        self.heads = nn.ModuleDict(dict(heads))

    @property
    def config(self) -> Any:
        return getattr(self.model, "config", None)

    def head(self, name: str, task: str) -> TaskHead:
        if name not in self.heads:
            raise TaskError(f"{task}: the model has no {name!r} head (has: {', '.join(self.heads) or 'none'}); "
                            f"run `actbert finetune {task}` first")
        return self.heads[name]

    def save_pretrained(self, out_dir: str | os.PathLike) -> Path:
        """The model's ``save_pretrained`` folder + ``heads.safetensors`` + ``heads.json`` (written last)."""
        out = Path(out_dir)
        self.model.save_pretrained(out)
        tensors = {f"{name}.{k}": v.detach().cpu().contiguous() for name, head in self.heads.items() for k, v in head.state_dict().items()}
        atomic_save_file(tensors, out / HEADS_WEIGHTS)
        atomic_write_json(out / HEADS_CONFIG, {
            "format": HEADS_FORMAT, "version": HEADS_VERSION,
            "heads": {name: {"kind": head.kind, "config": head.head_config()} for name, head in self.heads.items()},
        })
        return out


def base_model(model: Any) -> Any:
    """The registered architecture inside ``model`` (itself when it has no heads)."""
    return model.model if isinstance(model, FinetunedModel) else model


def heads_of(model: Any) -> dict[str, TaskHead]:
    return dict(model.heads) if isinstance(model, FinetunedModel) else {}


def with_heads(model: Any, **heads: TaskHead) -> FinetunedModel:
    """``model`` (plain or fine-tuned) with ``heads`` added (a head of the same name is replaced)."""
    return FinetunedModel(base_model(model), {**heads_of(model), **heads})


def load_heads(model_dir: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, TaskHead]:
    """The heads saved in ``model_dir`` (empty when it holds none)."""
    from safetensors.torch import load_file

    root = Path(model_dir)
    config_path = root / HEADS_CONFIG
    if not config_path.is_file():
        return {}
    info = read_json(config_path, "task heads")
    if not isinstance(info, dict) or info.get("format") != HEADS_FORMAT:
        raise TaskError(f"{config_path}: field 'format' must be {HEADS_FORMAT!r}")
    if info.get("version") != HEADS_VERSION:
        raise TaskError(f"{config_path}: field 'version' is {info.get('version')!r}; this version reads {HEADS_VERSION}")
    weights_path = root / HEADS_WEIGHTS
    try:
        tensors = load_file(str(weights_path), device=str(device))
    except FileNotFoundError:
        raise TaskError(f"{weights_path}: not found ({config_path} lists heads)") from None
    heads: dict[str, TaskHead] = {}
    for name, entry in (info.get("heads") or {}).items():
        where = f"{config_path}: heads.{name}"
        if not isinstance(entry, dict) or "kind" not in entry:
            raise TaskError(f"{where}: missing field 'kind'")
        cls = head_class(entry["kind"], where)
        try:
            head = cls.from_head_config(entry.get("config") or {})
        except (TypeError, KeyError, ValueError) as exc:
            raise TaskError(f"{where}.config: cannot build a {entry['kind']} ({exc})") from None
        prefix = name + "."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            head.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise TaskError(f"{weights_path}: tensors of head {name!r} do not fit its config ({first})") from None
        heads[name] = head.to(device).eval()
    return heads


__all__ = [
    "FinetunedModel",
    "HEAD_KINDS",
    "HEADS_CONFIG",
    "HEADS_WEIGHTS",
    "TaskHead",
    "base_model",
    "head_class",
    "heads_of",
    "load_heads",
    "register_head",
    "with_heads",
]
