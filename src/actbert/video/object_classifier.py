"""A small object classifier for the "given boxes" region route.

When boxes come with the data (the synthetic benchmark's ``objects.json``) the region features
still need an appearance descriptor and a class distribution, as a detector would give. This module
supplies both with a small CNN trained on crops of those boxes: the pooled embedding of its
backbone is the region feature ``[R, D]`` and its softmax over the benchmark's object classes is the
class distribution ``[R, K]``. Everything is local, so the demo needs no outside weights.

Crops are cut with ``torchvision.ops.roi_align`` straight from the frame (same code at training and
extraction time, so the two cannot drift apart). Saved as one safetensors file whose metadata holds
the config and class names (no pickle).

Training data (``train_object_classifier``): ``DATA/videos/`` (any extension ``extract`` reads, any
mix of resolutions), ``DATA/objects.json`` (given boxes, docs/architecture.md) and, optionally,
``DATA/splits.json`` (train on ``pretrain``, hold out ``val``; else every 5th video is held out).
The class list, in this order of precedence: ``classes`` (names, or a ``.txt`` file with one per
line, or a ``.json`` list); ``DATA/meta.json``'s ``objects`` (the synthetic benchmark's); else every
label of ``objects.json``, sorted.

Crops are streamed: the videos are decoded one at a time, and each training box keeps only a
*context patch* -- the box widened by the jitter range (``JITTER`` of its size on every side),
resampled to ``PATCH_SCALE x crop_size`` pixels and kept as uint8 (12 KB per box at the default
crop size; 100,000 boxes: 1.2 GB) -- from which every epoch's jittered crops are cut. No frame is
kept past its video, so memory does not grow with the videos' length or resolution.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation, roi_align

from actbert.errors import ActBertError
from actbert.utils.io import atomic_save_file
from actbert.video.boxes import boxes_for_frames, crop_boxes, frames_tensor

__all__ = [
    "ObjectClassifierConfig",
    "ObjectClassifier",
    "ObjectClassifierError",
    "crop_boxes",
    "class_list",
    "save_object_classifier",
    "load_object_classifier",
    "TrainResult",
    "train_object_classifier",
    "train_and_save_object_classifier",
]

_FORMAT = "actbert-object-classifier"


class ObjectClassifierError(ActBertError):
    """A classifier file that cannot be used (missing, wrong format, wrong tensors)."""


@dataclasses.dataclass
class ObjectClassifierConfig:
    class_names: list[str]
    crop_size: int = 32  # crops are resampled to crop_size x crop_size
    widths: tuple[int, ...] = (32, 64, 128)  # channels of the stride-2 conv stages
    embed_dim: int = 128  # region feature size

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class ObjectClassifier(nn.Module):
    """Crops [N, 3, S, S] (RGB in [0, 1]) -> embedding [N, D] -> logits [N, K]."""

    def __init__(self, config: ObjectClassifierConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        channels = 3
        for width in config.widths:
            layers.append(Conv2dNormActivation(channels, width, kernel_size=3, stride=2))
            layers.append(Conv2dNormActivation(width, width, kernel_size=3, stride=1))
            channels = width
        self.backbone = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Linear(channels, config.embed_dim), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(config.embed_dim, config.num_classes)
        # per-channel input normalisation, fixed
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1), persistent=False)

    @property
    def feature_dim(self) -> int:
        return self.config.embed_dim

    def embedding(self, crops: torch.Tensor) -> torch.Tensor:
        """crops [N, 3, S, S] in [0, 1] -> [N, D] (global-average-pooled backbone, projected)."""
        x = self.backbone((crops - self.mean) / self.std)
        return self.embed(x.mean(dim=(2, 3)))

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """crops [N, 3, S, S] -> logits [N, K]."""
        return self.classifier(self.embedding(crops))

    @torch.no_grad()
    def describe(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedding [N, D], class probabilities [N, K]) in eval mode."""
        was_training = self.training
        self.eval()
        emb = self.embedding(crops)
        probs = torch.softmax(self.classifier(emb), dim=-1)
        self.train(was_training)
        return emb, probs


def save_object_classifier(model: ObjectClassifier, path: str | os.PathLike, extra: dict | None = None) -> Path:
    config = dataclasses.asdict(model.config)
    config["widths"] = list(config["widths"])
    metadata = {"format": _FORMAT, "config": json.dumps(config), "extra": json.dumps(extra or {})}
    return atomic_save_file(model.state_dict(), path, metadata=metadata)


def load_object_classifier(path: str | os.PathLike) -> ObjectClassifier:
    """Load a classifier saved by ``save_object_classifier`` (safetensors; no pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise ObjectClassifierError(
            f"{path}: object classifier not found; train one with "
            "`actbert train-object-classifier --data BENCHMARK_DIR --out FILE`"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ObjectClassifierError(f"{path}: not a safetensors file ({exc})") from exc
    if metadata.get("format") != _FORMAT:
        raise ObjectClassifierError(f"{path}: metadata 'format' is {metadata.get('format')!r}, expected {_FORMAT!r}")
    try:
        raw = json.loads(metadata["config"])
        raw["widths"] = tuple(raw["widths"])
        config = ObjectClassifierConfig(**raw)
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ObjectClassifierError(f"{path}: metadata 'config' is unusable ({exc})") from exc
    model = ObjectClassifier(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ObjectClassifierError(f"{path}: tensors do not match the config (missing {missing}, unexpected {unexpected})")
    model.eval()
    return model


@dataclasses.dataclass
class TrainResult:
    model: ObjectClassifier
    train_crops: int
    heldout_crops: int
    heldout_accuracy: float
    train_accuracy: float
    heldout_videos: list[str]

    def facts(self) -> dict:
        """What the saved file's metadata records about this training run."""
        return {
            "train_crops": self.train_crops,
            "heldout_crops": self.heldout_crops,
            "train_accuracy": round(self.train_accuracy, 4),
            "heldout_accuracy": round(self.heldout_accuracy, 4),
            "heldout_videos": len(self.heldout_videos),
        }


JITTER = 0.1  # training boxes move by up to this fraction of their size, each coordinate on its own
PATCH_SCALE = 2  # a context patch has PATCH_SCALE * crop_size pixels a side


def class_list(data_dir: str | os.PathLike, objects: dict, classes: str | os.PathLike | Sequence[str] | None = None,
               objects_path: str | os.PathLike | None = None) -> list[str]:
    """The classifier's class names (module docstring: ``classes``, else ``meta.json``, else ``objects.json``)."""
    from actbert.utils.io import read_json

    data_dir = Path(data_dir)
    if classes is not None:
        if isinstance(classes, (str, os.PathLike)) and Path(classes).is_file():
            path = Path(classes)
            names = read_json(path, "class list") if path.suffix == ".json" else path.read_text().splitlines()
            if not isinstance(names, list):
                raise ObjectClassifierError(f"{path}: a class list must be a JSON list of names (or a .txt file, one per line)")
        else:
            names = str(classes).split(",") if isinstance(classes, (str, os.PathLike)) else list(classes)
        names = [str(n).strip() for n in names if str(n).strip()]
        source = f"classes {classes!s}"
    elif (data_dir / "meta.json").is_file():
        names = list(read_json(data_dir / "meta.json", "benchmark meta").get("objects") or [])
        source = f"{data_dir / 'meta.json'}: field 'objects'"
    else:
        names = sorted({str(label) for entries in objects.values() if isinstance(entries, list)
                        for entry in entries if isinstance(entry, dict) for label in entry.get("labels", [])})
        source = f"{objects_path or data_dir / 'objects.json'}: field 'labels'"
    if len(names) < 2:
        raise ObjectClassifierError(f"{source}: {len(names)} object class(es); a classifier needs two or more "
                                    "(give them with --classes NAME,NAME,... or a file)")
    if len(set(names)) != len(names):
        raise ObjectClassifierError(f"{source}: repeated class names")
    return names


def _decode_boxes(path: Path, entries: Sequence[dict], source: str):
    """(frames float [F, 3, H, W], per-frame (boxes float32 [n, 4], labels)) of one video, or None if it does not decode."""
    from actbert.video.decode import VideoDecodeError, frames_at_fps

    try:
        decoded = frames_at_fps(path, fps=1.0)
    except VideoDecodeError:
        return None
    per_frame = boxes_for_frames(entries, decoded.times, decoded.width, decoded.height, max_regions=None, source=source)
    return frames_tensor(decoded.frames), per_frame


def _label_ids(names: Sequence[str], class_index: dict[str, int], objects_path: Path, vid: str) -> list[int]:
    for name in names:
        if name not in class_index:
            raise ObjectClassifierError(f"{objects_path}: video {vid!r}: label {name!r} is not one of the "
                                        f"{len(class_index)} classes (add it with --classes, or fix the label)")
    return [class_index[n] for n in names]


def context_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes [N, 4] widened by ``JITTER`` of their size on every side: every jittered box lies inside."""
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + torch.tensor([-1.0, -1.0, 1.0, 1.0]) * JITTER * size


def _collect_patches(videos: dict[str, Path], video_ids: Sequence[str], objects: dict, class_index: dict[str, int],
                     crop_size: int, objects_path: Path, progress: bool = True):
    """Context patches of every labelled box of the given videos, streamed video by video.

    Returns (patches uint8 [N, 3, P, P], boxes float32 [N, 4] in patch pixels, labels int64 [N],
    failed video ids); P = ``PATCH_SCALE * crop_size``.
    """
    from tqdm import tqdm

    side = PATCH_SCALE * crop_size
    patches, boxes_in_patch, labels, failed = [], [], [], []
    for vid in tqdm(video_ids, desc="object crops (train)", disable=not progress, file=sys.stderr):
        got = _decode_boxes(videos[vid], objects.get(vid, []), f"{objects_path}[{vid!r}]")
        if got is None:
            failed.append(vid)
            continue
        frames, per_frame = got
        for f, (boxes, names) in enumerate(per_frame):
            if not names:
                continue
            labels.extend(_label_ids(names, class_index, objects_path, vid))
            box = torch.from_numpy(np.asarray(boxes, np.float32).reshape(-1, 4))
            outer = context_boxes(box)
            patch = roi_align(frames[f : f + 1], [outer], output_size=(side, side), spatial_scale=1.0, sampling_ratio=2,
                              aligned=True)
            patches.append(patch.mul(255.0).round_().clamp_(0, 255).to(torch.uint8))
            scale = side / (outer[:, 2:] - outer[:, :2]).repeat(1, 2)
            boxes_in_patch.append((box - outer[:, :2].repeat(1, 2)) * scale)
        del frames
    if not patches:
        return (torch.zeros((0, 3, side, side), dtype=torch.uint8), torch.zeros((0, 4)), torch.zeros(0, dtype=torch.long),
                failed)
    return torch.cat(patches), torch.cat(boxes_in_patch), torch.as_tensor(labels, dtype=torch.long), failed


def _collect_crops(videos: dict[str, Path], video_ids: Sequence[str], objects: dict, class_index: dict[str, int],
                   crop_size: int, objects_path: Path, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Every labelled box crop of the given videos as extraction cuts it: ([N, 3, S, S], labels [N], failed ids)."""
    from tqdm import tqdm

    crops, labels, failed = [], [], []
    for vid in tqdm(video_ids, desc="object crops (held out)", disable=not progress, file=sys.stderr):
        got = _decode_boxes(videos[vid], objects.get(vid, []), f"{objects_path}[{vid!r}]")
        if got is None:
            failed.append(vid)
            continue
        frames, per_frame = got
        crops.append(crop_boxes(frames, [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b, _ in per_frame],
                                crop_size))
        for _, names in per_frame:
            labels.extend(_label_ids(names, class_index, objects_path, vid))
    if not crops:
        return torch.zeros((0, 3, crop_size, crop_size)), torch.zeros(0, dtype=torch.long), failed
    return torch.cat(crops), torch.as_tensor(labels, dtype=torch.long), failed


def _patch_crops(patches: torch.Tensor, boxes: torch.Tensor, crop_size: int) -> torch.Tensor:
    """Crops [N, 3, S, S] in [0, 1] of ``boxes`` [N, 4] (patch pixels), box i from patch i."""
    rois = torch.cat([torch.arange(len(boxes), dtype=torch.float32)[:, None], boxes], dim=1)
    return roi_align(patches.float().div_(255.0), rois, output_size=(crop_size, crop_size), spatial_scale=1.0,
                     sampling_ratio=2, aligned=True)


def _accuracy(model: ObjectClassifier, crops: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> float:
    if len(labels) == 0:
        return float("nan")
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(labels), batch_size):
            correct += int((model(crops[i : i + batch_size]).argmax(-1) == labels[i : i + batch_size]).sum())
    return correct / len(labels)


def _split_videos(data_dir: Path, video_ids: list[str]) -> tuple[list[str], list[str]]:
    """Train on the pretraining split, hold out the validation split (else every 5th video)."""
    splits_path = data_dir / "splits.json"
    if splits_path.exists():
        from actbert.utils.io import read_json

        splits = read_json(splits_path, "splits")
        train = sorted(set(splits.get("pretrain", [])) & set(video_ids))
        heldout = sorted(set(splits.get("val", [])) & set(video_ids) - set(train))
        if train and heldout:
            return train, heldout
    ordered = sorted(video_ids)
    heldout = ordered[::5]
    return [v for v in ordered if v not in set(heldout)], heldout


def train_object_classifier(
    data_dir: str | os.PathLike,
    epochs: int = 6,
    batch_size: int = 128,
    lr: float = 3e-3,
    crop_size: int = 32,
    embed_dim: int = 128,
    seed: int = 0,
    progress: bool = True,
    classes: str | os.PathLike | Sequence[str] | None = None,
    objects: str | os.PathLike | None = None,
) -> TrainResult:
    """Train on box crops of a folder with ``videos/`` and ``objects.json`` (module docstring).

    ``classes``: the class names (or a file of them; default: ``meta.json``'s ``objects``, else the
    labels of ``objects.json``); ``objects``: the boxes file (default ``DATA/objects.json``).
    Augmentation: box jitter (up to ``JITTER`` of the box size) and horizontal flips, so the
    classifier does not rely on pixel-exact boxes. Returns the model and held-out crop accuracy.
    """
    from tqdm import tqdm

    from actbert.utils.io import read_json
    from actbert.video.extract import list_videos

    data_dir = Path(data_dir)
    objects_path = Path(objects) if objects else data_dir / "objects.json"
    boxes_by_video = read_json(objects_path, "object boxes")
    if not isinstance(boxes_by_video, dict):
        raise ObjectClassifierError(f"{objects_path}: expected {{video_id: [{{time, boxes, labels}}, ...]}}")
    class_names = class_list(data_dir, boxes_by_video, classes, objects_path)
    videos = list_videos(data_dir / "videos")
    train_ids, heldout_ids = _split_videos(data_dir, [v for v in sorted(videos) if v in boxes_by_video])
    class_index = {name: i for i, name in enumerate(class_names)}
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)

    patches, boxes_t, labels_t, _ = _collect_patches(videos, train_ids, boxes_by_video, class_index, crop_size,
                                                     objects_path, progress)
    if len(labels_t) == 0:
        raise ObjectClassifierError(f"{objects_path}: no labelled boxes in the training videos ({len(train_ids)} of "
                                    f"{len(videos)} in {data_dir / 'videos'})")
    heldout_crops, heldout_labels, _ = _collect_crops(videos, heldout_ids, boxes_by_video, class_index, crop_size,
                                                      objects_path, progress)

    model = ObjectClassifier(ObjectClassifierConfig(class_names, crop_size=crop_size, embed_dim=embed_dim))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(labels_t) + batch_size - 1) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 1))
    bar = tqdm(total=steps, desc="train object classifier", disable=not progress, file=sys.stderr)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(labels_t), generator=generator)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            boxes = boxes_t[idx]
            size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
            boxes = boxes + (torch.rand(boxes.shape, generator=generator) - 0.5) * 2 * JITTER * size
            crops = _patch_crops(patches[idx], boxes, crop_size)
            flip = torch.rand(len(idx), generator=generator) < 0.5
            crops[flip] = crops[flip].flip(-1)
            loss = nn.functional.cross_entropy(model(crops), labels_t[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    with torch.no_grad():  # the training boxes as given (no jitter), from their patches, 512 at a time
        correct = sum(int((model(_patch_crops(patches[i : i + 512], boxes_t[i : i + 512], crop_size)).argmax(-1)
                           == labels_t[i : i + 512]).sum()) for i in range(0, len(labels_t), 512))
    train_accuracy = correct / len(labels_t)
    return TrainResult(
        model=model,
        train_crops=len(labels_t),
        heldout_crops=len(heldout_labels),
        heldout_accuracy=_accuracy(model, heldout_crops, heldout_labels),
        train_accuracy=float(train_accuracy),
        heldout_videos=heldout_ids,
    )


def train_and_save_object_classifier(data: str | os.PathLike, out: str | os.PathLike, epochs: int = 6,
                                     batch_size: int = 128, lr: float = 3e-3, crop_size: int = 32, embed_dim: int = 128,
                                     seed: int = 0, progress: bool = True,
                                     classes: str | os.PathLike | Sequence[str] | None = None,
                                     objects: str | os.PathLike | None = None) -> tuple[Path, dict]:
    """``train_object_classifier`` on the folder ``data``, then ``save_object_classifier`` to ``out``
    with the run's facts (crop counts, accuracies) in its metadata; returns (saved path, facts)."""
    result = train_object_classifier(data, epochs=epochs, batch_size=batch_size, lr=lr, crop_size=crop_size,
                                     embed_dim=embed_dim, seed=seed, progress=progress, classes=classes, objects=objects)
    facts = result.facts()
    return save_object_classifier(result.model, out, extra=facts), facts
