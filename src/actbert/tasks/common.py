"""Shared parts of the five downstream tasks (ActBERT 4.2): feature-store adapter, model loading,
the fine-tuning loop, and results (JSON + a Markdown row).

**From an annotated item to a model input.** Every task item names a video and (mostly) a time
span plus text: a YouCook2 segment and its sentence, an MSR-VTT clip and a candidate caption, a
CrossTask clip and a step label. The feature store keeps, per video, one action feature per
*clip* (narration segment) and regions for every 1 FPS frame. :class:`ClipAssembler` turns an item
into the units the pretraining sample builder already understands (a
:class:`~actbert.data.corpus.VideoClips`), and lets C2's :class:`~actbert.data.samples.SampleBuilder`
and :class:`~actbert.data.collate.Collator` make the rows -- so a downstream input is laid out
exactly like a pretraining input (no second builder):

* ``span_clips(video, start, end)``: the store clips whose centre lies in ``[start, end]`` (none:
  the overlapping clip nearest the span centre; no overlap: the nearest clip), at most
  ``max_units`` of them (evenly thinned); each unit = one [ACT] + the regions of its centre frame.
* ``frame_clips(video, frames)``: one unit per 1 FPS frame (action segmentation labels frames):
  the frame's regions and the action feature of the store clip covering the frame.
* ``regions=False`` gives every unit no region ("without region cues"): the region stream is then
  only the per-clip [SEP] markers, which carry no visual content.
* the text is whatever the task needs: a query sentence, a step label, a blanked sentence, or
  nothing (``[CLS] [SEP]``, action segmentation and the captioning encoder).

**Models.** ``load_model(dir)`` reads a ``save_pretrained`` folder; ``fresh_model(dir_or_config)``
builds the same architecture without pretraining (text stream initialised as the config says,
MiniLM for the small preset; visual streams random) -- the "no pretraining" baseline.

**Results.** ``write_results(out_dir, record)`` writes ``<name>.json`` and ``<name>.md`` (a
one-row Markdown table). A record is a flat dict: ``task``, ``dataset``, ``protocol``,
``variant``, ``metrics`` (name -> number or None), ``primary`` (the metric the demo compares),
``settings``, ``seconds``, ``notes``.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from actbert.data.batch import ActBertBatch
from actbert.data.collate import Collator
from actbert.data.corpus import Corpus, VideoClips, nearest_frames
from actbert.data.samples import Sample, SampleBuilder, SpecialTokens
from actbert.utils.io import atomic_write_json, atomic_write_text
from actbert.utils.schedule import lr_factor

TASK_NAMES = ("retrieval", "captioning", "videoqa", "segmentation", "step_localization")


class TaskError(ValueError):
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


# ----------------------------------------------------------------------------- store -> batches


def _float_checked(array: Any, where: str, name: str) -> np.ndarray:
    out = np.asarray(array, dtype=np.float32)
    if not np.all(np.isfinite(out)):
        raise TaskError(f"{where}: field {name!r} contains NaN or infinity")
    return out


@dataclass
class _VideoArrays:
    """One video's store record as float32 numpy (checked once, then cached)."""

    clip_times: np.ndarray  # float64 [C, 2]
    action_features: np.ndarray  # float32 [C, Da]
    action_targets: np.ndarray  # float32 [C, V]
    frame_times: np.ndarray  # float64 [F]
    region_features: np.ndarray  # float32 [F, R, Dr]
    region_locations: np.ndarray  # float32 [F, R, 5]
    region_class_probs: np.ndarray  # float32 [F, R, K]
    region_counts: np.ndarray  # int64 [F]

    @property
    def duration(self) -> float:
        ends = [float(self.clip_times[:, 1].max()) if len(self.clip_times) else 0.0]
        if len(self.frame_times):
            ends.append(float(self.frame_times[-1]) + 1.0)
        return max(ends)


class ClipAssembler:
    """Feature store + tokenizer -> :class:`ActBertBatch` rows for downstream items (module docstring).

    ``store``: a :class:`actbert.data.store.FeatureStore` (``schema``, ``__contains__``,
    ``__getitem__``); ``tokenizer``: an :class:`actbert.text.tokenizer.ActBertTokenizer`.
    """

    def __init__(
        self,
        store: Any,
        tokenizer: Any,
        max_units: int = 10,
        max_text_len: int = 48,
        max_regions_per_frame: int | None = None,
        cache_size: int = 512,
    ):
        self.store = store
        self.store_name = str(getattr(store, "root", "feature store"))
        self.tokenizer = tokenizer
        self.specials = SpecialTokens.from_tokenizer(tokenizer)
        # the Corpus only parametrises the builder (frames per clip, region limit); items are
        # assembled here because their spans are the annotations', not the narration's
        self.corpus = Corpus(store, narrations={}, tokenizer=tokenizer, max_regions_per_frame=max_regions_per_frame)
        self.max_units = int(max_units)
        self.builder = SampleBuilder(self.corpus, self.specials, clips_per_sample=self.max_units, max_text_len=max_text_len)
        self.collator = Collator(pad_id=self.specials.pad_id)
        self._cache: OrderedDict[str, _VideoArrays] = OrderedDict()
        self._cache_size = cache_size
        self._encode = lru_cache(maxsize=65536)(self._encode_uncached)

    # -- store access
    def __contains__(self, video_id: str) -> bool:
        return video_id in self.store

    def video(self, video_id: str) -> _VideoArrays:
        cached = self._cache.get(video_id)
        if cached is not None:
            self._cache.move_to_end(video_id)
            return cached
        if video_id not in self.store:
            raise TaskError(f"{self.store_name}: video {video_id!r} is not in the feature store")
        feats = self.store[video_id]
        where = f"{self.store_name}: video {video_id!r}"
        arrays = _VideoArrays(
            clip_times=np.asarray(feats.clip_times, np.float64),
            action_features=_float_checked(feats.action_features, where, "action_features"),
            action_targets=_float_checked(feats.action_targets, where, "action_targets"),
            frame_times=np.asarray(feats.frame_times, np.float64),
            region_features=_float_checked(feats.region_features, where, "region_features"),
            region_locations=_float_checked(feats.region_locations, where, "region_locations"),
            region_class_probs=_float_checked(feats.region_class_probs, where, "region_class_probs"),
            region_counts=np.asarray(feats.region_counts, np.int64),
        )
        if len(arrays.clip_times) == 0:
            raise TaskError(f"{where}: field 'clip_times' is empty (no clips to build an input from)")
        if len(arrays.frame_times) == 0:
            raise TaskError(f"{where}: field 'frame_times' is empty (no frames for regions)")
        self._cache[video_id] = arrays
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return arrays

    def duration(self, video_id: str) -> float:
        return self.video(video_id).duration

    def frame_times(self, video_id: str) -> np.ndarray:
        return self.video(video_id).frame_times

    def clip_times(self, video_id: str) -> np.ndarray:
        return self.video(video_id).clip_times

    # -- units
    def span_units(self, video_id: str, start: float | None = None, end: float | None = None) -> np.ndarray:
        """Indices of the store clips that stand for ``[start, end]`` (module docstring). int64 ``[n]``."""
        v = self.video(video_id)
        times = v.clip_times
        if start is None and end is None:
            idx = np.arange(len(times))
        else:
            s = -math.inf if start is None else float(start)
            e = math.inf if end is None else float(end)
            centres = times.mean(axis=1)
            idx = np.nonzero((centres >= s) & (centres <= e))[0]
            if idx.size == 0:
                mid = (max(s, float(times[:, 0].min())) + min(e, float(times[:, 1].max()))) / 2.0
                overlap = np.nonzero((times[:, 0] < e) & (times[:, 1] > s))[0]
                pool = overlap if overlap.size else np.arange(len(times))
                idx = pool[[int(np.argmin(np.abs(centres[pool] - mid)))]]
        if idx.size > self.max_units:
            idx = idx[np.unique(np.linspace(0, idx.size - 1, self.max_units).round().astype(int))]
        return idx.astype(np.int64)

    def _clips(self, video_id: str, unit_times: np.ndarray, action_index: np.ndarray, frame_index: np.ndarray, regions: bool) -> VideoClips:
        v = self.video(video_id)
        n = len(unit_times)
        rpf = min(self.corpus.max_regions_per_frame, v.region_features.shape[1])
        dr, k = v.region_features.shape[2], v.region_class_probs.shape[2]
        r_feat = np.zeros((n, rpf, dr), np.float32)
        r_loc = np.zeros((n, rpf, 5), np.float32)
        r_prob = np.zeros((n, rpf, k), np.float32)
        r_valid = np.zeros((n, rpf), bool)
        if regions:
            for i, f in enumerate(frame_index):
                m = int(min(v.region_counts[f], rpf))
                r_feat[i, :m] = v.region_features[f, :m]
                r_loc[i, :m] = v.region_locations[f, :m]
                r_prob[i, :m] = v.region_class_probs[f, :m]
                r_valid[i, :m] = True
        return VideoClips(
            video_id=video_id,
            clip_times=np.asarray(unit_times, np.float64),
            tokens=[[] for _ in range(n)],
            action_features=v.action_features[action_index],
            action_targets=v.action_targets[action_index],
            region_features=r_feat,
            region_locations=r_loc,
            region_class_probs=r_prob,
            region_valid=r_valid,
            region_frame=np.zeros((n, rpf), np.int64),
        )

    def span_clips(self, video_id: str, start: float | None = None, end: float | None = None, regions: bool = True) -> VideoClips:
        """The units of ``[start, end]`` (whole video if both are None)."""
        v = self.video(video_id)
        idx = self.span_units(video_id, start, end)
        frames = np.asarray([int(nearest_frames(v.frame_times, float(v.clip_times[c].mean()), 1)[0]) for c in idx], np.int64)
        return self._clips(video_id, v.clip_times[idx], idx, frames, regions)

    def covering_clip(self, video_id: str, times: np.ndarray) -> np.ndarray:
        """For each time, the store clip that contains it (nearest centre among those; else nearest centre)."""
        v = self.video(video_id)
        centres = v.clip_times.mean(axis=1)
        out = np.empty(len(times), np.int64)
        for i, t in enumerate(np.asarray(times, np.float64)):
            inside = np.nonzero((v.clip_times[:, 0] <= t) & (t <= v.clip_times[:, 1]))[0]
            pool = inside if inside.size else np.arange(len(centres))
            out[i] = pool[int(np.argmin(np.abs(centres[pool] - t)))]
        return out

    def frame_clips(self, video_id: str, frames: Sequence[int] | np.ndarray, regions: bool = True) -> VideoClips:
        """One unit per 1 FPS frame index in ``frames`` (action segmentation)."""
        v = self.video(video_id)
        frames = np.asarray(frames, np.int64)
        t = v.frame_times[frames]
        unit_times = np.stack([t, t + 1.0], axis=1)
        return self._clips(video_id, unit_times, self.covering_clip(video_id, t), frames, regions)

    # -- text and rows
    def _encode_uncached(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode(text))

    def encode(self, text: str) -> list[int]:
        return list(self._encode(text))

    def sample(self, clips: VideoClips, sentences: Sequence[str | Sequence[int]] = ()) -> Sample:
        """One row: ``[CLS] s1 [SEP] s2 [SEP] ...`` (``[CLS] [SEP]`` when ``sentences`` is empty) + the units."""
        tokens = [self.encode(s) if isinstance(s, str) else list(s) for s in sentences] or [[]]
        text = VideoClips(
            video_id=clips.video_id,
            clip_times=np.zeros((len(tokens), 2)),
            tokens=tokens,
            action_features=clips.action_features[:0],
            action_targets=clips.action_targets[:0],
            region_features=clips.region_features[:0],
            region_locations=clips.region_locations[:0],
            region_class_probs=clips.region_class_probs[:0],
            region_valid=clips.region_valid[:0],
            region_frame=clips.region_frame[:0],
        )
        sample = self.builder.build(clips, 0, clips.num_clips, text_from=(text, 0, len(tokens)))
        sample.match_label = 1.0  # set by the task where it matters
        return sample

    def collate(self, samples: Sequence[Sample]) -> ActBertBatch:
        return self.collator(samples)


# ----------------------------------------------------------------------------- models


def load_model(model_dir: str | os.PathLike, device: str | torch.device = "cpu"):
    """An ``ActBertForPretraining`` (any registered architecture) from a ``save_pretrained`` folder."""
    from actbert.models.pretrained import from_pretrained

    return from_pretrained(model_dir, map_location=device)


def read_model_config(model_dir: str | os.PathLike) -> Any:
    """The config dataclass saved in ``model_dir/config.json`` (architecture from the registry)."""
    from actbert.config import from_dict
    from actbert.models.pretrained import CONFIG_NAME, resolve_architecture
    from actbert.utils.io import read_json

    path = Path(model_dir) / CONFIG_NAME
    data = read_json(path, "model config")
    if not isinstance(data, dict) or "architecture" not in data:
        raise TaskError(f"{path}: missing key 'architecture'")
    cls = resolve_architecture(data["architecture"], f"{path}:architecture")
    return from_dict(cls.config_class, data, source=str(path))


def fresh_model(config_or_dir: Any, seed: int = 0, device: str | torch.device = "cpu"):
    """The same architecture without pretraining: the text stream initialised as the config says
    (``text_init``: MiniLM for the small preset), the visual streams and heads random."""
    from actbert.models.pretrained import create_model

    config = read_model_config(config_or_dir) if isinstance(config_or_dir, (str, os.PathLike)) else config_or_dir
    torch.manual_seed(seed)
    return create_model(config, heads=True, verbose=False).to(device).eval()


def encoder_of(model: Any) -> Any:
    """The encoder (``ActBertModel``) inside a model with heads."""
    return getattr(model, "actbert", model)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast(dtype: str | None):
    """``torch.autocast`` for ``"bf16"`` on the model's device type (CPU here), else a no-op."""
    if dtype in (None, "fp32", "float32"):
        return torch.autocast("cpu", enabled=False)
    if dtype in ("bf16", "bfloat16"):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    raise TaskError(f"--dtype: expected fp32 or bf16, got {dtype!r}")


# ----------------------------------------------------------------------------- fine-tuning loop


@dataclass
class TrainLog:
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        first = float(np.mean(self.losses[: max(1, len(self.losses) // 10)])) if self.losses else None
        last = float(np.mean(self.losses[-max(1, len(self.losses) // 10) :])) if self.losses else None
        return {"steps": len(self.losses), "first_loss": first, "last_loss": last, "seconds": round(self.seconds, 2)}


def train_loop(
    parameters: Iterable[torch.nn.Parameter] | Iterable[dict],
    loss_at: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    weight_decay: float = 0.01,
    warmup: float = 0.1,
    grad_clip: float = 1.0,
    desc: str = "fine-tune",
    modules: Sequence[torch.nn.Module] = (),
) -> TrainLog:
    """AdamW with linear warm-up then linear decay to 0 (``utils.schedule.lr_factor``); ``loss_at(step)`` builds a batch and returns its loss.

    ``modules`` are put in train mode for the loop and back to eval mode after it.
    """
    params = list(parameters)
    log = TrainLog()
    if steps <= 0:
        return log
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warm = max(1, int(round(warmup * steps)))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warm, steps, "linear", 0.0))
    flat = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    for m in modules:
        m.train()
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=desc, leave=False, disable=not sys.stderr.isatty())
    for step in bar:
        loss = loss_at(step)
        if not torch.isfinite(loss):
            raise TaskError(f"{desc}: loss became {loss.item()} at step {step} (lower the learning rate)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(flat, grad_clip)
        optimizer.step()
        schedule.step()
        log.losses.append(float(loss.item()))
        bar.set_postfix(loss=f"{log.losses[-1]:.3f}")
    for m in modules:
        m.eval()
    log.seconds = time.perf_counter() - start
    return log


def batched(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# ----------------------------------------------------------------------------- results


def result_name(record: Mapping[str, Any]) -> str:
    parts = [record["task"], record.get("dataset", ""), record.get("protocol", ""), record.get("variant", "")]
    return "_".join(p.replace("/", "-").replace(" ", "-") for p in parts if p)


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
