"""Region features: up to R (= 5) object regions per 1 FPS frame, from one of two routes.

Both routes return the same record per frame (``FrameRegions``), so everything downstream is
indifferent to where the boxes came from:

- ``DetectorRegions``: torchvision Faster R-CNN (ResNet-50 FPN, COCO's 91-entry label space, as the
  paper allows a detector trained elsewhere). Boxes with score >= 0.4, at most 5 per frame. For each
  final box, its feature is the 1024-d box-head output obtained by re-pooling the *final* box through
  ``roi_heads.box_roi_pool`` + ``box_head`` (the detector itself only keeps features of proposals),
  and its class distribution is the softmax of ``box_predictor`` on that feature.
  Weights come from a local file or torchvision's cache and are never downloaded.
- ``GivenBoxRegions``: boxes and labels supplied with the data (the synthetic benchmark's
  ``objects.json``); features and class distribution come from the small ``ObjectClassifier``.

Per region: location = (x1/W, y1/H, x2/W, y2/H, box area / frame area), W, H the source frame size;
boxes are in source-frame pixels. Rows past ``count`` are zero padding.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from actbert.errors import ActBertError
from actbert.video.boxes import RegionInputError, boxes_for_frames, crop_boxes, frames_tensor
from actbert.video.decode import DecodedFrames

__all__ = [
    "FrameRegions",
    "RegionInputError",
    "DetectorWeightsError",
    "box_locations",
    "pack_frame",
    "stack_frames",
    "boxes_for_frames",
    "GivenBoxRegions",
    "DetectorRegions",
    "COCO_WEIGHTS_FILE",
    "load_detector",
]

COCO_WEIGHTS_FILE = "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"  # torchvision's cache name for COCO_V1
_COCO_WEIGHTS_URL = "https://download.pytorch.org/models/" + COCO_WEIGHTS_FILE


class DetectorWeightsError(ActBertError):
    """Detector weights missing or unusable; the message says how to obtain them."""


@dataclasses.dataclass
class FrameRegions:
    """Regions of one frame, padded to R rows.

    features    float32 [R, Dr]
    boxes       float32 [R, 4]  pixels x1, y1, x2, y2
    locations   float32 [R, 5]  x1/W, y1/H, x2/W, y2/H, area/(W*H)
    class_probs float32 [R, K]
    count       int             valid rows (<= R)
    """

    features: np.ndarray
    boxes: np.ndarray
    locations: np.ndarray
    class_probs: np.ndarray
    count: int


def box_locations(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """boxes [n, 4] pixels -> [n, 5] (x1/W, y1/H, x2/W, y2/H, area/(W*H))."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scale = np.array([width, height, width, height], np.float32)
    area = (boxes[:, 2] - boxes[:, 0]).clip(min=0) * (boxes[:, 3] - boxes[:, 1]).clip(min=0)
    return np.concatenate([boxes / scale, (area / float(width * height))[:, None]], axis=1).astype(np.float32)


def pack_frame(features: np.ndarray, boxes: np.ndarray, class_probs: np.ndarray, width: int, height: int,
               max_regions: int = 5) -> FrameRegions:
    """Pad n <= max_regions regions (features [n, Dr], boxes [n, 4], class_probs [n, K]) to R rows."""
    features = np.asarray(features, np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    class_probs = np.asarray(class_probs, np.float32)
    n = len(boxes)
    if n > max_regions or len(features) != n or len(class_probs) != n:
        raise ValueError(f"pack_frame: {n} boxes, {len(features)} features, {len(class_probs)} class rows (max {max_regions})")
    out = FrameRegions(
        features=np.zeros((max_regions, features.shape[-1]), np.float32),
        boxes=np.zeros((max_regions, 4), np.float32),
        locations=np.zeros((max_regions, 5), np.float32),
        class_probs=np.zeros((max_regions, class_probs.shape[-1]), np.float32),
        count=n,
    )
    out.features[:n], out.boxes[:n], out.class_probs[:n] = features, boxes, class_probs
    out.locations[:n] = box_locations(boxes, width, height)
    return out


def stack_frames(frames: Sequence[FrameRegions], max_regions: int, feature_dim: int, num_classes: int) -> dict[str, np.ndarray]:
    """Per-frame records -> the store's region arrays ([F, R, ...] and counts [F])."""
    if not frames:
        return {
            "region_features": np.zeros((0, max_regions, feature_dim), np.float32),
            "region_boxes": np.zeros((0, max_regions, 4), np.float32),
            "region_locations": np.zeros((0, max_regions, 5), np.float32),
            "region_class_probs": np.zeros((0, max_regions, num_classes), np.float32),
            "region_counts": np.zeros((0,), np.int64),
        }
    return {
        "region_features": np.stack([f.features for f in frames]),
        "region_boxes": np.stack([f.boxes for f in frames]),
        "region_locations": np.stack([f.locations for f in frames]),
        "region_class_probs": np.stack([f.class_probs for f in frames]),
        "region_counts": np.array([f.count for f in frames], np.int64),
    }


class GivenBoxRegions:
    """Regions from given boxes (``objects.json``) described by a trained ``ObjectClassifier``.

    objects: {video_id: [{"time", "boxes", "labels"}, ...]} (the benchmark's objects.json).
    """

    def __init__(self, classifier, objects: Mapping[str, Sequence[Mapping[str, Any]]], max_regions: int = 5,
                 source: str = "objects.json"):
        self.classifier = classifier.eval()
        self.objects = objects
        self.max_regions = max_regions
        self.source = source

    @property
    def feature_dim(self) -> int:
        return self.classifier.feature_dim

    @property
    def class_names(self) -> list[str]:
        return list(self.classifier.config.class_names)

    def __call__(self, video_id: str, decoded: DecodedFrames) -> list[FrameRegions]:
        entries = self.objects.get(video_id, [])
        per_frame = boxes_for_frames(entries, decoded.times, decoded.width, decoded.height, self.max_regions,
                                     source=f"{self.source}[{video_id!r}]")
        if decoded.frames.shape[1:3] != (decoded.height, decoded.width):
            raise ValueError("GivenBoxRegions needs frames at the source resolution (frames_at_fps(size=None))")
        boxes = [torch.from_numpy(b) for b, _ in per_frame]
        crops = crop_boxes(frames_tensor(decoded.frames), boxes, self.classifier.config.crop_size)
        emb, probs = self.classifier.describe(crops)
        emb, probs = emb.numpy(), probs.numpy()
        out, k = [], 0
        for b, _ in per_frame:
            n = len(b)
            out.append(pack_frame(emb[k : k + n], b, probs[k : k + n], decoded.width, decoded.height, self.max_regions))
            k += n
        return out


def _default_cache_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / COCO_WEIGHTS_FILE


def _how_to_get_weights(looked_at: str) -> str:
    return (
        f"Faster R-CNN weights not found ({looked_at}). Nothing is downloaded at run time. On a machine "
        f"with internet access run\n  python -c \"import torchvision; torchvision.models.detection."
        f"fasterrcnn_resnet50_fpn(weights='COCO_V1')\"\n(or fetch {_COCO_WEIGHTS_URL}), then copy "
        f"{COCO_WEIGHTS_FILE} into {_default_cache_path().parent} or pass --detector-weights FILE "
        "(.pth state dict or .safetensors). Or use `--regions given` with an object classifier."
    )


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise DetectorWeightsError(_how_to_get_weights(str(path)))
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same explanation
        raise DetectorWeightsError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise DetectorWeightsError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    return state


def load_detector(weights: str | os.PathLike | None = None, random_init: bool = False, **kwargs):
    """torchvision ``fasterrcnn_resnet50_fpn`` in eval mode, weights from a local file.

    weights: a .pth (read with ``torch.load(weights_only=True)``) or .safetensors state dict; None
    looks in torchvision's cache (``torch.hub.get_dir()/checkpoints``). ``random_init`` builds an
    untrained detector (tests, throughput). ``kwargs`` go to the torchvision constructor.
    """
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91, **kwargs)
    if not random_init:
        path = Path(weights) if weights is not None else _default_cache_path()
        state = _load_state_dict(path)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise DetectorWeightsError(
                f"{path}: not fasterrcnn_resnet50_fpn COCO weights ({len(missing)} missing tensors e.g. "
                f"{missing[:3]}, {len(unexpected)} unexpected e.g. {unexpected[:3]})"
            )
    return model.eval()


def coco_class_names() -> list[str]:
    """The detector's 91 COCO label names (index 0 = background, 'N/A' for unused ids)."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    return list(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])


class DetectorRegions:
    """Faster R-CNN regions: score >= ``score_threshold``, at most ``max_regions`` boxes per frame.

    ``min_size``/``max_size``: the detector's input resize (torchvision defaults 800/1333).
    """

    def __init__(self, model, score_threshold: float = 0.4, max_regions: int = 5, batch_size: int = 2,
                 min_size: int | None = None, max_size: int | None = None, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.max_regions = max_regions
        self.batch_size = batch_size
        roi = self.model.roi_heads
        roi.score_thresh = score_threshold
        roi.detections_per_img = max_regions
        if min_size is not None:
            self.model.transform.min_size = (min_size,)
        if max_size is not None:
            self.model.transform.max_size = max_size
        self._class_names = coco_class_names()

    @classmethod
    def from_weights(cls, weights: str | os.PathLike | None = None, random_init: bool = False, **kwargs) -> "DetectorRegions":
        return cls(load_detector(weights, random_init=random_init), **kwargs)

    @property
    def feature_dim(self) -> int:
        return int(self.model.roi_heads.box_head.fc7.out_features)

    @property
    def class_names(self) -> list[str]:
        return self._class_names

    @torch.no_grad()
    def detect(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """images float [B, 3, H, W] in [0, 1] -> per image {"boxes" [n, 4] source pixels,
        "features" [n, 1024], "class_probs" [n, 91], "scores" [n]}, n <= max_regions."""
        model = self.model
        images = images.to(self.device)
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        image_list, _ = model.transform(list(images))
        features = model.backbone(image_list.tensors)
        proposals, _ = model.rpn(image_list, features)
        detections, _ = model.roi_heads(features, proposals, image_list.image_sizes)
        # re-pool the final boxes (in the resized image's coordinates) through the box head
        final_boxes = [d["boxes"] for d in detections]
        pooled = model.roi_heads.box_roi_pool(features, final_boxes, image_list.image_sizes)
        box_features = model.roi_heads.box_head(pooled)
        class_logits, _ = model.roi_heads.box_predictor(box_features)
        probs = torch.softmax(class_logits, dim=-1)
        detections = model.transform.postprocess(detections, image_list.image_sizes, original_sizes)
        out, k = [], 0
        for det in detections:
            n = len(det["boxes"])
            out.append({"boxes": det["boxes"].cpu(), "scores": det["scores"].cpu(),
                        "features": box_features[k : k + n].cpu(), "class_probs": probs[k : k + n].cpu()})
            k += n
        return out

    def __call__(self, video_id: str, decoded: DecodedFrames) -> list[FrameRegions]:
        height, width = decoded.frames.shape[1:3]
        sx, sy = decoded.width / width, decoded.height / height  # back to source pixels if resized
        scale = torch.tensor([sx, sy, sx, sy])
        out: list[FrameRegions] = []
        for i in range(0, len(decoded.frames), self.batch_size):
            for det in self.detect(frames_tensor(decoded.frames[i : i + self.batch_size])):
                out.append(pack_frame(det["features"].numpy(), (det["boxes"] * scale).numpy(),
                                      det["class_probs"].numpy(), decoded.width, decoded.height, self.max_regions))
        return out
