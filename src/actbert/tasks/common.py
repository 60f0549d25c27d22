"""Shared parts of the five downstream tasks (ActBERT 4.2): benchmark paths, model loading and
results (JSON + a Markdown row).

**Inputs.** A task describes its items as :class:`~actbert.models.processing.Item` (a video
part + text); the store side (:class:`~actbert.data.clips.ClipAssembler`) resolves video parts to
units and the model's own processor (``processor_for(model, assembler)``) lays them out as its
batch. Tasks never look inside a batch; they ask the model for capabilities
(:mod:`actbert.models.interface`).

**Models.** ``load_model(dir)`` reads a ``save_pretrained`` folder; ``fresh_model(dir_or_config)``
builds the same architecture without pretraining (text stream initialised as the config says,
MiniLM for the small preset; visual streams random) -- the "no pretraining" baseline.

**Results.** ``write_results(out_dir, record)`` writes ``<name>.json`` and ``<name>.md`` (a
one-row Markdown table). A record is a flat dict: ``task``, ``dataset``, ``protocol``,
``variant``, ``metrics`` (name -> number or None), ``primary`` (the metric the demo compares),
``settings``, ``seconds``, ``notes``.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from actbert.errors import ActBertError
from actbert.utils.io import atomic_write_json, atomic_write_text

TASK_NAMES = ("retrieval", "captioning", "videoqa", "segmentation", "step_localization")


class TaskError(ActBertError):
    """A downstream item or file that cannot be used (names the file / video and the field)."""


# ----------------------------------------------------------------------------- benchmark paths


@dataclass(frozen=True)
class Benchmark:
    """Where the annotation files of a benchmark folder live (architecture.md, synthetic layout).

    ``root`` may hold any subset of the five datasets; each property names the release file.
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def _file(self, *parts: str) -> Path:
        return self.root.joinpath("annotations", *parts)

    @property
    def youcook2(self) -> Path:
        return self._file("youcook2", "youcookii_annotations_trainval.json")

    @property
    def msrvtt_test(self) -> Path:
        return self._file("msrvtt", "MSRVTT_JSFUSION_test.csv")

    @property
    def msrvtt_train_ids(self) -> Path:
        return self._file("msrvtt", "MSRVTT_train.9k.csv")

    @property
    def msrvtt_data(self) -> Path:
        return self._file("msrvtt", "MSRVTT_data.json")

    @property
    def msrvtt_mc(self) -> Path:
        return self._file("msrvtt", "MSR_MC_test.csv")

    def lsmdc(self, split: str) -> Path:
        return self._file("lsmdc", f"LSMDC16_FIB_{split}.csv")

    @property
    def coin(self) -> Path:
        return self._file("coin", "COIN.json")

    @property
    def crosstask(self) -> Path:
        return self._file("crosstask", "crosstask_release")

    def require(self, path: Path, what: str) -> Path:
        if not path.exists():
            raise TaskError(f"{path}: {what} annotation file not found under benchmark {self.root}")
        return path


# ----------------------------------------------------------------------------- models


def load_model(model_dir: str | os.PathLike, device: str | torch.device = "cpu"):
    """An ``ActBertForPretraining`` (any registered architecture) from a ``save_pretrained`` folder."""
    from actbert.models.pretrained import from_pretrained

    return from_pretrained(model_dir, map_location=device)


def read_model_config(model_dir: str | os.PathLike) -> Any:
    """The config dataclass saved in ``model_dir/config.json`` (architecture from the registry)."""
    from actbert.models.pretrained import read_saved_config

    return read_saved_config(model_dir)


def fresh_model(config_or_dir: Any, seed: int = 0, device: str | torch.device = "cpu"):
    """The same architecture without pretraining: the text stream initialised as the config says
    (``text_init``: MiniLM for the small preset), the visual streams and heads random."""
    from actbert.models.registry import create_model

    config = read_model_config(config_or_dir) if isinstance(config_or_dir, (str, os.PathLike)) else config_or_dir
    torch.manual_seed(seed)
    return create_model(config, heads=True, verbose=False).to(device).eval()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


DEVICES = "auto | cpu | cuda | cuda:N"


def resolve_device(name: str, where: str = "device") -> torch.device:
    """A task's ``device`` setting: ``auto`` = the first GPU if there is one, else the CPU."""
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise TaskError(f"{where}: expected {DEVICES}, got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise TaskError(f"{where}: expected {DEVICES}, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TaskError(f"{where}: {name!r} asked for, but no CUDA device is available (use device=cpu or auto)")
    return device


def on_device(batch: Any, model: Any) -> Any:
    """``batch`` moved to the device of ``model``'s parameters (batches have ``.to(device)``)."""
    from actbert.models.interface import device_of

    return batch.to(device_of(model))


def batched(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# ----------------------------------------------------------------------------- results


def _name_part(text: str) -> str:
    """``text`` as a file-name part: letters, digits, ``_``, ``.`` and ``-`` only (spaces, commas, slashes ->
    one ``-``), so result files need no quoting in shells, CSV lists or ``--out`` globs."""
    return re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9_.\-]", "-", str(text))).strip("-.")


def result_name(record: Mapping[str, Any]) -> str:
    """``task_dataset_protocol_variant`` of a record, e.g. ``retrieval_msrvtt_1k-A-zero-shot_pretrained``."""
    parts = [record["task"], record.get("dataset", ""), record.get("protocol", ""), record.get("variant", "")]
    return "_".join(_name_part(p) for p in parts if _name_part(p))


def result_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """The flat row a table shows: identification columns, then the metrics."""
    row: dict[str, Any] = {
        "variant": record.get("variant", ""),
        "task": record["task"],
        "dataset": record.get("dataset", ""),
        "protocol": record.get("protocol", ""),
    }
    row.update(record.get("metrics", {}))
    return row


def write_results(out_dir: str | os.PathLike, record: Mapping[str, Any]) -> tuple[Path, Path]:
    """``out_dir/<name>.json`` (the record) and ``out_dir/<name>.md`` (a one-row Markdown table)."""
    from actbert.metrics.table import markdown_table

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = result_name(record)
    json_path = atomic_write_json(out / f"{name}.json", dict(record))
    md_path = atomic_write_text(out / f"{name}.md", markdown_table([result_row(record)]))
    return json_path, md_path


def make_record(
    task: str,
    dataset: str,
    protocol: str,
    metrics: Mapping[str, Any],
    primary: str,
    variant: str = "",
    settings: Mapping[str, Any] | None = None,
    seconds: float = 0.0,
    notes: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    if primary not in metrics:
        raise KeyError(f"primary metric {primary!r} is not among {sorted(metrics)}")
    record = {
        "task": task,
        "dataset": dataset,
        "protocol": protocol,
        "variant": variant,
        "metrics": dict(metrics),
        "primary": primary,
        "settings": dict(settings or {}),
        "seconds": round(float(seconds), 2),
        "notes": list(notes),
    }
    if extra:
        record.update(extra)
    return record
