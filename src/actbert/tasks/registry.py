"""The five downstream tasks behind one interface, for ``actbert finetune|evaluate`` and the demo.

Every task module follows one pattern (``actbert.tasks.retrieval`` is the model): a
``<Task>Settings`` dataclass, ``finetune(model, assembler, bench, settings)`` and
``evaluate(model, assembler, bench, settings, variant="") -> list[record]``. They differ only in
what fine-tuning leaves behind, and this module absorbs that:

* retrieval / videoqa: the fine-tuned model itself (``evaluate(..., finetuned=True)`` labels the
  protocol "fine-tuned");
* captioning: a :class:`~actbert.tasks.captioning.Captioner` (model + decoder), returned in the log;
* segmentation: the model with a ``segmentation_head`` attached;
* step_localization: no fine-tuning (the paper scores it zero-shot with the matching head).

``save_finetuned`` / ``load_for_evaluation`` keep a fine-tuned model on disk in a folder that
``from_pretrained`` reads (plus the task's extra parts: the caption decoder, the frame classifier).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence


from actbert.config import ConfigError
from actbert.data.clips import ClipAssembler
from actbert.tasks.common import TASK_NAMES, Benchmark, TaskError

SETTINGS_CLASSES = {
    "retrieval": "RetrievalSettings",
    "captioning": "CaptioningSettings",
    "videoqa": "VideoQASettings",
    "segmentation": "SegmentationSettings",
    "step_localization": "StepLocalizationSettings",
}
HEAD_FILE = "segmentation_head.safetensors"


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
    model: Any  # what evaluate() takes: the model, a Captioner, the model + segmentation head
    log: Any  # the task's TrainLog (losses, seconds) or None (no fine-tuning)


def finetune(task: str, model: Any, assembler: ClipAssembler, bench: Benchmark, settings: Any) -> FinetuneResult:
    module = task_module(task)
    if not hasattr(module, "finetune"):
        return FinetuneResult(model, None)
    log = module.finetune(model, assembler, bench, settings)
    if task == "captioning":
        return FinetuneResult(log.captioner, log)
    return FinetuneResult(model, log)


def evaluate(task: str, model: Any, assembler: ClipAssembler, bench: Benchmark, settings: Any, variant: str = "", finetuned: bool = False) -> list[dict]:
    module = task_module(task)
    if task == "captioning":
        from actbert.tasks.captioning import Captioner

        if not isinstance(model, Captioner):
            raise TaskError("captioning: evaluation needs a fine-tuned captioner (run `actbert finetune captioning` first, "
                            "then `actbert evaluate captioning --model OUT/model`)")
    kwargs = {}
    if "finetuned" in inspect.signature(module.evaluate).parameters:
        kwargs["finetuned"] = finetuned
    return module.evaluate(model, assembler, bench, settings, variant=variant, **kwargs)


# ----------------------------------------------------------------------------- on disk


def save_finetuned(task: str, model: Any, out_dir: str | os.PathLike) -> Path:
    """``out_dir`` = a ``save_pretrained`` folder (+ the task's extra parts), readable by
    :func:`load_for_evaluation`."""
    out = Path(out_dir)
    if task == "captioning":
        from actbert.tasks.captioning import save_captioner

        return save_captioner(model, out)
    if task == "segmentation":
        from actbert.tasks.segmentation import HEAD_ATTRIBUTE
        from actbert.utils.io import atomic_save_file, atomic_write_json

        head = getattr(model, HEAD_ATTRIBUTE)
        delattr(model, HEAD_ATTRIBUTE)  # the encoder folder holds only the architecture's own tensors
        try:
            model.save_pretrained(out)
        finally:
            setattr(model, HEAD_ATTRIBUTE, head)
        atomic_save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, out / HEAD_FILE)
        atomic_write_json(out / "segmentation_head.json", {"step_ids": list(head.labels.step_ids), "names": list(head.labels.names)})
        return out
    model.save_pretrained(out)
    return out


def load_for_evaluation(task: str, model_dir: str | os.PathLike, bench: Benchmark | None = None) -> Any:
    """The model ``evaluate`` needs from ``model_dir`` (a pretrained or a fine-tuned folder)."""
    from actbert.models.pretrained import CONFIG_NAME
    from actbert.tasks.common import load_model

    model_dir = Path(model_dir)
    if task == "captioning":
        from actbert.tasks.captioning import load_captioner

        if not (model_dir / "decoder.json").is_file():
            raise TaskError(f"{model_dir}: not a fine-tuned captioner (no decoder); run `actbert finetune captioning` first")
        return load_captioner(model_dir)
    if not (model_dir / CONFIG_NAME).is_file():
        raise TaskError(f"{model_dir}: not a model folder (no {CONFIG_NAME}; expected save_pretrained output)")
    model = load_model(model_dir).eval()
    if task == "segmentation":
        model = _attach_segmentation_head(model, model_dir)
    return model


def _attach_segmentation_head(model: Any, model_dir: Path) -> Any:
    from safetensors.torch import load_file

    from actbert.tasks.segmentation import HEAD_ATTRIBUTE, FrameClassifier, LabelSpace
    from actbert.utils.io import read_json

    path = model_dir / HEAD_FILE
    if not path.is_file():
        raise TaskError(f"{model_dir}: no {HEAD_FILE} (a segmentation model comes from `actbert finetune segmentation`)")
    info = read_json(model_dir / "segmentation_head.json", "segmentation labels")
    labels = LabelSpace(tuple(info["step_ids"]), tuple(info["names"]))
    head = FrameClassifier(int(model.unit_state_dim), labels)
    state = load_file(str(path))
    try:
        head.load_state_dict(state)
    except RuntimeError as exc:
        raise TaskError(f"{path}: does not fit the model's frame classifier ({exc})") from exc
    setattr(model, HEAD_ATTRIBUTE, head.eval())
    return model


def build_assembler(store_dir: str | os.PathLike, model: Any = None, max_units: int = 10) -> ClipAssembler:
    """Feature store + the MiniLM WordPiece tokenizer -> :class:`ClipAssembler`."""
    from actbert.data.store import FeatureStore
    from actbert.text.tokenizer import load_tokenizer

    store_dir = Path(store_dir)
    if not (store_dir / "schema.json").is_file():
        raise TaskError(f"{store_dir}: not a feature store (no schema.json; run `actbert extract`)")
    store = FeatureStore(store_dir)
    if model is not None:
        cfg = getattr(model.model if type(model).__name__ == "Captioner" else model, "config", None)
        schema = store.schema
        for field_name, want in (("action_feature_dim", schema.action_dim), ("region_feature_dim", schema.region_dim)):
            have = getattr(cfg, field_name, None)
            if have is not None and int(have) != int(want):
                raise TaskError(f"{store_dir / 'schema.json'}: {field_name} of the store is {want}, the model expects {have}")
    return ClipAssembler(store, load_tokenizer(), max_units=max_units)
