"""A small object classifier for the "given boxes" region route.

When boxes come with the data (the synthetic benchmark's ``objects.json``) the region features
still need an appearance descriptor and a class distribution, as a detector would give. This module
supplies both with a small CNN trained on crops of those boxes: the pooled embedding of its
backbone is the region feature ``[R, D]`` and its softmax over the benchmark's object classes is the
class distribution ``[R, K]``. Everything is local, so the demo needs no outside weights.

Crops are cut with ``torchvision.ops.roi_align`` straight from the frame (same code at training and
extraction time, so the two cannot drift apart). Saved as one safetensors file whose metadata holds
the config and class names (no pickle).
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


def _collect_crops(data_dir: Path, video_ids: Sequence[str], objects: dict, class_index: dict[str, int], crop_size: int,
                   progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """All labelled box crops of the given videos: ([N, 3, S, S], labels [N], failed video ids)."""
    from tqdm import tqdm

    from actbert.video.decode import VideoDecodeError, frames_at_fps

    crops, labels, failed = [], [], []
    for vid in tqdm(video_ids, desc="object crops", disable=not progress, file=sys.stderr):
        path = data_dir / "videos" / f"{vid}.mp4"
        try:
            decoded = frames_at_fps(path, fps=1.0)
        except VideoDecodeError:
            failed.append(vid)
            continue
        per_frame = boxes_for_frames(objects.get(vid, []), decoded.times, decoded.width, decoded.height, max_regions=None)
        frames = frames_tensor(decoded.frames)
        boxes = [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b, _ in per_frame]
        crops.append(crop_boxes(frames, boxes, crop_size))
        for _, names in per_frame:
            for name in names:
                if name not in class_index:
                    raise ObjectClassifierError(f"{data_dir / 'objects.json'}: video {vid!r}: unknown object label {name!r}")
                labels.append(class_index[name])
    if not crops:
        return torch.zeros((0, 3, crop_size, crop_size)), torch.zeros(0, dtype=torch.long), failed
    return torch.cat(crops), torch.as_tensor(labels, dtype=torch.long), failed


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
) -> TrainResult:
    """Train on box crops of a benchmark folder (``meta.json``, ``objects.json``, ``videos/``).

    Augmentation: box jitter (up to 10% of the box size) and horizontal flips, so the classifier
    does not rely on pixel-exact boxes. Returns the model and held-out crop accuracy.
    """
    from tqdm import tqdm

    from actbert.utils.io import read_json

    data_dir = Path(data_dir)
    meta = read_json(data_dir / "meta.json", "benchmark meta")
    class_names = list(meta.get("objects") or [])
    if not class_names:
        raise ObjectClassifierError(f"{data_dir / 'meta.json'}: field 'objects' is missing or empty")
    objects = read_json(data_dir / "objects.json", "object boxes")
    video_ids = sorted(p.stem for p in (data_dir / "videos").glob("*.mp4"))
    train_ids, heldout_ids = _split_videos(data_dir, [v for v in video_ids if v in objects])
    class_index = {name: i for i, name in enumerate(class_names)}
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)

    # train crops are cut on the fly with jittered boxes; keep frames + boxes for that
    train_frames, train_boxes, train_labels = [], [], []
    from actbert.video.decode import VideoDecodeError, frames_at_fps

    for vid in tqdm(train_ids, desc="decode train videos", disable=not progress, file=sys.stderr):
        try:
            decoded = frames_at_fps(data_dir / "videos" / f"{vid}.mp4", fps=1.0)
        except VideoDecodeError:
            continue
        per_frame = boxes_for_frames(objects.get(vid, []), decoded.times, decoded.width, decoded.height, max_regions=None)
        for frame, (boxes, names) in zip(decoded.frames, per_frame):
            if not names:
                continue
            train_frames.append(frame)
            train_boxes.append(np.asarray(boxes, np.float32).reshape(-1, 4))
            train_labels.append([class_index[n] for n in names])
    if not train_frames:
        raise ObjectClassifierError(f"{data_dir}: no labelled boxes in the training videos")
    frames_t = frames_tensor(np.stack(train_frames))
    labels_t = torch.as_tensor([l for ls in train_labels for l in ls], dtype=torch.long)
    frame_of_box = torch.as_tensor([i for i, ls in enumerate(train_labels) for _ in ls], dtype=torch.long)
    boxes_t = torch.from_numpy(np.concatenate(train_boxes))
    heldout_crops, heldout_labels, _ = _collect_crops(data_dir, heldout_ids, objects, class_index, crop_size, progress)

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
            boxes = boxes + (torch.rand(boxes.shape, generator=generator) - 0.5) * 0.2 * size
            rois = torch.cat([frame_of_box[idx, None].float(), boxes], dim=1)
            crops = roi_align(frames_t, rois, output_size=(crop_size, crop_size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
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
    train_plain = crop_boxes(frames_t, [boxes_t[frame_of_box == i] for i in range(len(train_frames))], crop_size)
    return TrainResult(
        model=model,
        train_crops=len(labels_t),
        heldout_crops=len(heldout_labels),
        heldout_accuracy=_accuracy(model, heldout_crops, heldout_labels),
        train_accuracy=_accuracy(model, train_plain, labels_t),
        heldout_videos=heldout_ids,
    )


def train_and_save_object_classifier(data: str | os.PathLike, out: str | os.PathLike, epochs: int = 6,
                                     batch_size: int = 128, lr: float = 3e-3, crop_size: int = 32, embed_dim: int = 128,
                                     seed: int = 0, progress: bool = True) -> tuple[Path, dict]:
    """``train_object_classifier`` on the benchmark folder ``data``, then ``save_object_classifier`` to
    ``out`` with the run's facts (crop counts, accuracies) in its metadata; returns (saved path, facts)."""
    result = train_object_classifier(data, epochs=epochs, batch_size=batch_size, lr=lr, crop_size=crop_size,
                                     embed_dim=embed_dim, seed=seed, progress=progress)
    facts = result.facts()
    return save_object_classifier(result.model, out, extra=facts), facts
