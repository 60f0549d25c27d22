"""Action segmentation on COIN (ActBERT 4.2.3, Table 2): one label per 1 FPS frame, frame accuracy.

The paper fine-tunes ActBERT "by adding a linear classifier upon the output features for dense
frame labeling" and feeds no text. Here:

* **Input.** A *window* of ``W`` consecutive 1 FPS frames of a video becomes one row with
  ``ClipAssembler.frame_clips``: one unit per frame (its [ACT] carries the action feature of the
  store clip covering the frame; its regions are the frame's detections), and the text is only
  ``[CLS] [SEP]``. ``use_regions=False`` ("ActBERT w/o region cues") gives the units no regions and
  runs the encoder without its region stream.
* **Frame feature.** The encoder's action output at the frame's [ACT] position, concatenated with
  the mean of the region outputs of that frame's [REGION] tokens (zeros without regions):
  ``[B, W, 2 * Dv]``. :class:`FrameClassifier` is one linear layer on it.
* **Labels.** The COIN step id whose segment contains the frame time, ``background`` (class 0)
  otherwise (``actbert.data.readers.frame_step_ids``). The label space is class 0 + every step id
  that occurs anywhere in ``COIN.json`` (training and testing), sorted; a testing step never seen
  in training is a class the classifier has had no example of, as in the real benchmark.
* **Fine-tuning** (:func:`finetune`): the whole encoder and the classifier, cross-entropy over all
  frames of random ``W``-frame windows of the *training* subset's videos (AdamW, warm-up + linear
  decay; the classifier gets its own, larger learning rate since it starts from scratch). The
  fine-tuned model is the encoder + the classifier as its ``frame_classifier`` head
  (:class:`~actbert.tasks.heads.FinetunedModel`, ``finetune(...).model``): :func:`evaluate` takes it,
  and ``save_finetuned`` / ``load_for_evaluation`` keep it on disk like every task's.
* **Evaluation** (:func:`evaluate`): every video of the *testing* subset with features. A video
  longer than ``W`` frames is covered by windows starting every ``stride`` frames (the last window
  is aligned to the video's end); a frame inside several windows gets the mean of their softmax
  probabilities, and its prediction is the arg-max. Frame accuracy is pooled over all frames of all
  testing videos, background frames included (COIN's and ActBERT's metric,
  ``actbert.metrics.segmentation``); the mean per-class accuracy is reported alongside.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from actbert.config import AT_LEAST_ONE, Range
from actbert.data import readers
from actbert.metrics.segmentation import segmentation_metrics
from actbert.data.clips import ClipAssembler
from actbert.data.clips import ClipsError
from actbert.models.interface import device_of, require
from actbert.models.processing import Item, VideoRef, processor_for
from actbert.tasks.common import Benchmark, TaskError, batched, make_record, on_device
from actbert.tasks.heads import FinetunedModel, TaskHead, base_model, with_heads
from actbert.train.finetune import TrainLog, train_loop
from actbert.utils.precision import autocast

TASK = "segmentation"
PRIMARY = "frame_accuracy"
BACKGROUND = "background"
HEAD = "frame_classifier"  # the fine-tuned model's head name
REQUIRES = ("unit_states",)


@dataclass
class SegmentationSettings:
    # numeric settings not named here must be >= 0 (checked by tasks.registry)
    RANGES: ClassVar[dict[str, Range]] = {"window": AT_LEAST_ONE, "stride": AT_LEAST_ONE, "batch_size": AT_LEAST_ONE, "train_batch": AT_LEAST_ONE}
    window: int = 10  # frames per input row (capped at the assembler's max_units)
    stride: int = 5  # frames between evaluation window starts (< window: overlapping windows)
    batch_size: int = 16  # windows per forward pass when evaluating
    dtype: str = "fp32"  # fp32 | bf16 (autocast)
    device: str = "auto"  # auto (a GPU if there is one) | cpu | cuda | cuda:N
    use_regions: bool = True
    max_videos: int = 0  # 0 = every testing video; else the first N (budgeted runs say so)
    # fine-tuning (training subset)
    # defaults: CPU-demo scale (the paper gives none); measured on the demo-size synthetic benchmark
    steps: int = 200
    lr: float = 3e-4  # encoder
    head_lr: float = 3e-3  # the new linear classifier
    train_batch: int = 8  # windows per step
    seed: int = 0


# ----------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class LabelSpace:
    """``names[0] == "background"``; ``step_ids[i]`` is the COIN step id of class ``i`` (``None`` for 0)."""

    step_ids: tuple[str | None, ...]
    names: tuple[str, ...]

    def index(self) -> dict[str | None, int]:
        return {s: i for i, s in enumerate(self.step_ids)}

    def __len__(self) -> int:
        return len(self.step_ids)


def _step_sort_key(step_id: str) -> tuple[int, int | str]:
    return (0, int(step_id)) if step_id.isdigit() else (1, step_id)


def label_space(videos: Sequence[readers.CoinVideo]) -> LabelSpace:
    """Background + every step id in ``videos`` (numeric ids in numeric order)."""
    names: dict[str, str] = {}
    for video in videos:
        for step in video.steps:
            names.setdefault(step.step_id, step.label)
    ids = sorted(names, key=_step_sort_key)
    return LabelSpace((None, *ids), (BACKGROUND, *(names[i] for i in ids)))


def frame_labels(video: readers.CoinVideo, frame_times: np.ndarray, labels: LabelSpace) -> np.ndarray:
    """int64 ``[F]``: the class of each 1 FPS frame (0 = background)."""
    index = labels.index()
    return np.asarray([index[s] for s in readers.frame_step_ids(video, frame_times)], np.int64)


# ----------------------------------------------------------------------------- model parts


class FrameClassifier(TaskHead):
    """Linear classifier on per-frame unit states: ``[B, W, D] -> [B, W, num_classes]``."""

    kind = "frame_classifier"

    def __init__(self, state_dim: int, labels: LabelSpace, dropout: float = 0.1):
        super().__init__()
        self.labels = labels
        self.state_dim = int(state_dim)
        self.dropout_p = float(dropout)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(state_dim, len(labels))

    def forward(self, frame_features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(frame_features))

    def head_config(self) -> dict[str, Any]:
        return {"state_dim": self.state_dim, "dropout": self.dropout_p,
                "step_ids": list(self.labels.step_ids), "names": list(self.labels.names)}

    @classmethod
    def from_head_config(cls, config: Any) -> "FrameClassifier":
        labels = LabelSpace(tuple(config["step_ids"]), tuple(config["names"]))
        return cls(int(config["state_dim"]), labels, float(config.get("dropout", 0.1)))


def frame_features(model: Any, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's per-unit states of ``batch`` (rows of per-frame units, no text): features
    ``[B, W, D]`` and valid ``[B, W]`` bool (the ``unit_states`` capability)."""
    model = base_model(model)
    return model.unit_states(on_device(batch, model))


def head_of(model: Any) -> FrameClassifier:
    if not isinstance(model, FinetunedModel):
        raise TaskError("segmentation: the model has no frame_classifier head; run segmentation.finetune(...) first")
    return model.head(HEAD, TASK)


# ----------------------------------------------------------------------------- data


@dataclass
class _Video:
    video_id: str
    labels: np.ndarray  # int64 [F]


def _videos(bench: Benchmark, assembler: ClipAssembler, subset: str, labels: LabelSpace) -> tuple[list[_Video], list[dict[str, str]]]:
    """Videos of ``subset`` that have features, with per-frame labels; the others are reported."""
    path = bench.require(bench.coin, "COIN")
    kept, skipped = [], []
    for video in readers.read_coin(path, subset=subset):
        if video.video_id not in assembler:
            skipped.append({"video_id": video.video_id, "error": "not in the feature store"})
            continue
        try:
            times = assembler.frame_times(video.video_id)
        except (TaskError, ClipsError) as exc:
            skipped.append({"video_id": video.video_id, "error": str(exc)})
            continue
        kept.append(_Video(video.video_id, frame_labels(video, times, labels)))
    return kept, skipped


def window_starts(num_frames: int, window: int, stride: int) -> list[int]:
    """Start frames of the evaluation windows covering ``[0, num_frames)``; the last ends at the end."""
    if num_frames <= window:
        return [0]
    starts = list(range(0, num_frames - window + 1, max(1, stride)))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return starts


def _window(settings: SegmentationSettings, assembler: ClipAssembler) -> int:
    if settings.window < 1 or settings.stride < 1:
        raise TaskError(f"segmentation: window ({settings.window}) and stride ({settings.stride}) must be >= 1")
    return min(settings.window, assembler.max_units)


# ----------------------------------------------------------------------------- fine-tuning


def finetune(model: Any, assembler: ClipAssembler, bench: Benchmark, settings: SegmentationSettings) -> TrainLog:
    """Fine-tune encoder + a new linear classifier on COIN's training subset (the paper's protocol).

    Returns the log with ``.model`` = the model with a new ``frame_classifier`` head (replacing
    an earlier one); pass it to :func:`evaluate`.
    """
    coin = readers.read_coin(bench.require(bench.coin, "COIN"))
    labels = label_space(coin)
    videos, _ = _videos(bench, assembler, "training", labels)
    if not videos:
        raise TaskError(f"{bench.coin}: no training video has features in {assembler.store_name}")
    encoder = base_model(model)
    require(encoder, REQUIRES, TASK)
    processor = processor_for(encoder, assembler)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    head = FrameClassifier(int(encoder.unit_state_dim), labels).to(device_of(encoder))
    width = _window(settings, assembler)

    def loss_at(step: int) -> torch.Tensor:
        rows, targets = [], []
        for v in rng.integers(len(videos), size=settings.train_batch):
            video = videos[int(v)]
            num = len(video.labels)
            start = int(rng.integers(0, max(1, num - width + 1)))
            frames = np.arange(start, min(num, start + width))
            rows.append(Item(VideoRef.of_frames(video.video_id, frames)))
            row = np.full(width, -100, np.int64)
            row[: len(frames)] = video.labels[frames]
            targets.append(row)
        feats, _ = frame_features(encoder, processor.batch(rows, use_regions=settings.use_regions))
        logits = head(feats)  # [B, W', K]
        target = torch.from_numpy(np.stack(targets))[:, : logits.shape[1]].to(logits.device)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)

    params = [
        {"params": list(encoder.parameters()), "lr": settings.lr},
        {"params": list(head.parameters()), "lr": settings.head_lr},
    ]
    # each group keeps its own base lr; train_loop's warm-up/decay schedule scales both
    log = train_loop(params, loss_at, settings.steps, settings.lr, desc="segmentation fine-tune", modules=[encoder, head])
    log.model = with_heads(encoder, **{HEAD: head})
    return log


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict_video(model: Any, assembler: ClipAssembler, video_id: str, settings: SegmentationSettings) -> np.ndarray:
    """Class probabilities of every 1 FPS frame of ``video_id``: float32 ``[F, K]`` (overlapping windows averaged)."""
    head = head_of(model)
    model.eval()
    processor = processor_for(base_model(model), assembler)
    num = len(assembler.frame_times(video_id))
    width = _window(settings, assembler)
    probs = np.zeros((num, len(head.labels)), np.float32)
    hits = np.zeros(num, np.float32)
    starts = window_starts(num, width, settings.stride)
    for chunk in batched(starts, settings.batch_size):
        frames = [np.arange(s, min(num, s + width)) for s in chunk]
        batch = processor.batch([Item(VideoRef.of_frames(video_id, f)) for f in frames], use_regions=settings.use_regions)
        with autocast(settings.dtype, device_of(head).type):
            feats, _ = frame_features(model, batch)
            p = torch.softmax(head(feats).float(), dim=-1).cpu().numpy()
        for f, row in zip(frames, p):
            probs[f] += row[: len(f)]
            hits[f] += 1.0
    return probs / hits[:, None]


def evaluate(model: Any, assembler: ClipAssembler, bench: Benchmark, settings: SegmentationSettings, variant: str = "") -> list[dict]:
    """One record: frame accuracy on COIN's testing subset (needs :func:`finetune` first)."""
    head = head_of(model)
    start_time = time.perf_counter()
    videos, skipped = _videos(bench, assembler, "testing", head.labels)
    if settings.max_videos and len(videos) > settings.max_videos:
        videos = videos[: settings.max_videos]
    if not videos:
        raise TaskError(f"{bench.coin}: no testing video has features in {assembler.store_name}")
    predictions, targets, kept = [], [], []
    for video in tqdm(videos, desc="segmentation", unit="video", leave=False):
        try:
            probs = predict_video(model, assembler, video.video_id, settings)
        except (TaskError, ClipsError) as exc:  # a bad record: skip, report, go on
            skipped.append({"video_id": video.video_id, "error": str(exc)})
            continue
        predictions.append(probs.argmax(axis=1).astype(np.int64))
        targets.append(video.labels)
        kept.append(video.video_id)
    if not kept:
        raise TaskError(f"{bench.coin}: every testing video failed ({skipped[0]['error']})")
    scores = segmentation_metrics(predictions, targets)
    metrics = {
        "frame_accuracy": scores["frame_accuracy"],
        "mean_class_accuracy": scores["mean_class_accuracy"],
        "num_frames": scores["num_frames"],
        "num_videos": len(kept),
    }
    notes = [f"windows of {_window(settings, assembler)} frames, stride {settings.stride}, overlapping windows averaged"]
    if settings.max_videos:
        notes.append(f"limited to the first {len(kept)} testing videos (max_videos={settings.max_videos})")
    if skipped:
        notes.append(f"{len(skipped)} video(s) skipped")
    if not settings.use_regions:
        notes.append("without region cues")
    return [
        make_record(
            TASK,
            "coin",
            "testing subset, fine-tuned",
            metrics,
            PRIMARY,
            variant=variant,
            settings=asdict(settings),
            seconds=time.perf_counter() - start_time,
            notes=notes,
            extra={
                "classes": list(head.labels.names),
                "class_step_ids": list(head.labels.step_ids),
                "per_class": {head.labels.names[c]: acc for c, acc in scores["per_class"].items()},
                "videos": [
                    {"video_id": v, "predicted": p.tolist(), "target": t.tolist()} for v, p, t in zip(kept, predictions, targets)
                ],
                "skipped": skipped,
            },
        )
    ]
