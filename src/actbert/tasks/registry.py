"""The five downstream tasks behind one interface, for ``actbert finetune|evaluate`` and the demo.

Every task module follows one pattern (``actbert.tasks.retrieval`` is the model): a
``<Task>Settings`` dataclass, ``finetune(model, assembler, bench, settings)`` and
``evaluate(model, assembler, bench, settings, variant="") -> list[record]``. They differ only in
what fine-tuning leaves behind, and this module absorbs that:

* retrieval / videoqa: the fine-tuned model itself (``evaluate(..., finetuned=True)`` labels the
  protocol "fine-tuned");
* captioning / segmentation: the model + the head the task trained (a caption decoder, a frame
  classifier): a :class:`~actbert.tasks.heads.FinetunedModel`, the log's ``.model``;
* step_localization: no fine-tuning (the paper scores it zero-shot with the matching head).

Every task's settings have ``device`` (``auto`` / ``cpu`` / ``cuda[:N]``): the model is moved there
before the task runs, and batches follow the model. ``save_finetuned`` / ``load_for_evaluation``
keep a fine-tuned model on disk in one layout for every task: a folder that ``from_pretrained``
reads, plus the heads (tasks/heads.py).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence


from actbert.config import ConfigError, check_ranges
from actbert.data.clips import ClipAssembler
from actbert.tasks.common import TASK_NAMES, Benchmark, TaskError, resolve_device
from actbert.tasks.heads import HEADS_CONFIG, HEADS_WEIGHTS, FinetunedModel, base_model, load_heads

SETTINGS_CLASSES = {
    "retrieval": "RetrievalSettings",
    "captioning": "CaptioningSettings",
    "videoqa": "VideoQASettings",
    "segmentation": "SegmentationSettings",
    "step_localization": "StepLocalizationSettings",
}


class UnknownTaskError(TaskError):
    """A task name that is not one of :data:`TASK_NAMES`."""


def task_module(task: str):
    if task not in TASK_NAMES:
        raise UnknownTaskError(f"unknown task {task!r}; choose one of: {', '.join(TASK_NAMES)}")
    return importlib.import_module(f"actbert.tasks.{task}")


def settings_class(task: str) -> type:
    return getattr(task_module(task), SETTINGS_CLASSES[task])


def has_finetune(task: str) -> bool:
    return hasattr(task_module(task), "finetune")


def _coerce(text: str, current: Any, where: str) -> Any:
    """A ``--set`` value as the type of the field's default (bool, int, float, str, list)."""
    if isinstance(current, bool):
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {text!r}")
    try:
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: expected a {type(current).__name__}, got {text!r}") from exc
    if isinstance(current, list):
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def make_settings(task: str, overrides: Sequence[str] | Mapping[str, Any] = (), source: str = "--set") -> Any:
    """``<Task>Settings`` with ``key=value`` overrides (strings) or a mapping of typed values.

    An unknown key raises :class:`actbert.config.ConfigError` naming the key and the known ones.
    """
    cls = settings_class(task)
    settings = cls()
    names = {f.name for f in dataclasses.fields(cls)}
    items = overrides.items() if isinstance(overrides, Mapping) else [_split(o, source) for o in overrides]
    for key, value in items:
        if key not in names:
            raise ConfigError(f"{source}: unknown {task} setting {key!r}; known: {', '.join(sorted(names))}")
        current = getattr(settings, key)
        if isinstance(value, str) and not isinstance(current, str):
            value = _coerce(value, current, f"{source} {key}")
        setattr(settings, key, value)
    return validate_settings(task, settings, source)


def validate_settings(task: str, settings: Any, source: str = "settings") -> Any:
    """Every numeric setting within its range (the class's ``RANGES``; others must be >= 0) and a
    known ``device``: a ``ConfigError`` naming the key before anything runs."""
    check_ranges(settings, getattr(type(settings), "RANGES", {}), source, f"{task} setting ")
    if hasattr(settings, "device"):
        try:
            resolve_device(settings.device)
        except TaskError as exc:
            raise ConfigError(f"{source}: {task} setting {exc}") from None
    return settings


def _split(text: str, source: str) -> tuple[str, str]:
    if "=" not in text:
        raise ConfigError(f"{source}: expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def without_regions(task: str, settings: Any) -> Any | None:
    """The settings with region cues off, or ``None`` when the task never uses regions."""
    if not any(f.name == "use_regions" for f in dataclasses.fields(settings)):
        return None
    return dataclasses.replace(settings, use_regions=False)


@dataclass
class FinetuneResult:
    model: Any  # what evaluate() takes: the model, or the model + the task's heads (a FinetunedModel)
    log: Any  # the task's TrainLog (losses, seconds) or None (no fine-tuning)


def _placed(module: Any, model: Any, settings: Any) -> Any:
    """``model`` as the task takes it, on the task's ``device`` setting: a task without a head of
    its own (no ``HEAD``) gets the bare model, without heads other tasks trained."""
    if not hasattr(module, "HEAD"):
        model = base_model(model)
    device = getattr(settings, "device", None)
    return model if device is None else model.to(resolve_device(device, "device (task setting)"))


def finetune(task: str, model: Any, assembler: ClipAssembler, bench: Benchmark, settings: Any) -> FinetuneResult:
    module = task_module(task)
    if not hasattr(module, "finetune"):
        return FinetuneResult(model, None)
    validate_settings(task, settings)
    model = _placed(module, model, settings)
    log = module.finetune(model, assembler, bench, settings)
    return FinetuneResult(model if log.model is None else log.model, log)


def evaluate(task: str, model: Any, assembler: ClipAssembler, bench: Benchmark, settings: Any, variant: str = "", finetuned: bool = False) -> list[dict]:
    module = task_module(task)
    validate_settings(task, settings)
    model = _placed(module, model, settings)
    kwargs = {}
    if "finetuned" in inspect.signature(module.evaluate).parameters:
        kwargs["finetuned"] = finetuned
    return module.evaluate(model, assembler, bench, settings, variant=variant, **kwargs)


# ----------------------------------------------------------------------------- on disk


def save_finetuned(task: str, model: Any, out_dir: str | os.PathLike) -> Path:
    """``out_dir`` = the model's ``save_pretrained`` folder (+ ``heads.json`` / ``heads.safetensors``
    when fine-tuning added heads, tasks/heads.py), readable by :func:`load_for_evaluation`."""
    out = Path(out_dir)
    if not isinstance(model, FinetunedModel):
        for stale in (HEADS_CONFIG, HEADS_WEIGHTS):  # heads of an earlier run in the same folder
            (out / stale).unlink(missing_ok=True)
    model.save_pretrained(out)
    return out


def load_for_evaluation(task: str, model_dir: str | os.PathLike, bench: Benchmark | None = None, device: str = "cpu") -> Any:
    """The model ``evaluate`` needs from ``model_dir`` (a pretrained or a fine-tuned folder): the
    model, with its task heads when the folder has them."""
    from actbert.models.pretrained import CONFIG_NAME
    from actbert.tasks.common import load_model

    model_dir = Path(model_dir)
    if not (model_dir / CONFIG_NAME).is_file():
        hint = " (a captioner written by an older version: re-run `actbert finetune captioning`)" if (model_dir / "decoder.json").is_file() else ""
        raise TaskError(f"{model_dir}: not a model folder (no {CONFIG_NAME}; expected save_pretrained output){hint}")
    model = load_model(model_dir, device).eval()
    heads = load_heads(model_dir, device)
    return FinetunedModel(model, heads).eval() if heads else model


def build_assembler(store_dir: str | os.PathLike, model: Any = None, max_units: int = 10) -> ClipAssembler:
    """Feature store + the MiniLM WordPiece tokenizer -> :class:`ClipAssembler`."""
    from actbert.data.store import FeatureStore
    from actbert.text.tokenizer import load_tokenizer

    store_dir = Path(store_dir)
    if not (store_dir / "schema.json").is_file():
        raise TaskError(f"{store_dir}: not a feature store (no schema.json; run `actbert extract`)")
    store = FeatureStore(store_dir)
    if model is not None:
        cfg = getattr(base_model(model), "config", None)
        schema = store.schema
        for field_name, want in (("action_feature_dim", schema.action_dim), ("region_feature_dim", schema.region_dim)):
            have = getattr(cfg, field_name, None)
            if have is not None and int(have) != int(want):
                raise TaskError(f"{store_dir / 'schema.json'}: {field_name} of the store is {want}, the model expects {have}")
    return ClipAssembler(store, load_tokenizer(), max_units=max_units)
