"""Region features: up to R (= 5) object regions per 1 FPS frame, from one of two routes.

Both routes return the same record per frame (``FrameRegions``), so everything downstream is
indifferent to where the boxes came from:

- ``DetectorRegions``: a torchvision Faster R-CNN. Boxes with score >= 0.4, at most 5 per frame
  (paper 4.1). For each final box, its feature is the box-head output (1024-d for torchvision's
  heads) obtained by re-pooling the *final* box through ``roi_heads.box_roi_pool`` + ``box_head``
  (the detector itself only keeps features of proposals), and its class distribution is the
  softmax of ``box_predictor`` on that feature. Weights come from a local file or torchvision's
  cache and are never downloaded. Any torchvision-layout Faster R-CNN state dict loads: the layout
  is read from the file (:func:`detector_layout`: ResNet-50/101/152 FPN with the v1 two-layer box
  head, or ``fasterrcnn_resnet50_fpn_v2``; the class count from its classifier), and its class
  names come with it (``classes``: a JSON list or a text file with one name per line, index 0 =
  background; by default ``WEIGHTS.classes.json`` / ``WEIGHTS.classes.txt`` beside the weights;
  COCO's 91 names for a 91-class file without one).

  The paper's detector is not torchvision's COCO R50-FPN: 4.1 uses a Faster R-CNN with a
  ResNet-101 backbone trained on Visual Genome (as ViLBERT), while 3.2.1 takes the class
  distribution "under the COCO vocabulary". The default file (COCO R50-FPN, the one detector
  torchvision ships weights for) is therefore a substitute; a Visual Genome ResNet-101 detector in
  torchvision's layout loads the same way, with its class list.
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
    "DetectorLayout",
    "detector_layout",
    "read_class_names",
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


@dataclasses.dataclass(frozen=True)
class DetectorLayout:
    """What a torchvision Faster R-CNN state dict is: backbone depth, box-head version, class count."""

    depth: int = 50  # ResNet depth of the FPN backbone (50, 101, 152)
    version: int = 1  # 1: fasterrcnn_resnet50_fpn's two-layer MLP box head; 2: fasterrcnn_resnet50_fpn_v2
    num_classes: int = 91  # including background (index 0)


_LAYER3_BLOCKS = {6: 50, 23: 101, 36: 152}  # ResNet depth by its layer3 block count


def detector_layout(state: Mapping[str, Any], source: str = "state dict") -> DetectorLayout:
    """The :class:`DetectorLayout` of a torchvision Faster R-CNN state dict (raises for any other file)."""
    cls = state.get("roi_heads.box_predictor.cls_score.weight")
    if cls is None or not any(k.startswith("backbone.body.") for k in state):
        raise DetectorWeightsError(f"{source}: not fasterrcnn weights in torchvision's layout (no "
                                   "'roi_heads.box_predictor.cls_score.weight' / 'backbone.body.*' tensors)")
    blocks = {int(k.split(".")[3]) for k in state if k.startswith("backbone.body.layer3.")}
    depth = _LAYER3_BLOCKS.get(len(blocks))
    if depth is None:
        raise DetectorWeightsError(f"{source}: backbone with {len(blocks)} layer3 blocks is not a ResNet-50/101/152")
    version = 2 if "roi_heads.box_head.0.0.weight" in state else 1
    if version == 2 and depth != 50:
        raise DetectorWeightsError(f"{source}: a v2 box head on a ResNet-{depth} is not a torchvision detector")
    return DetectorLayout(depth, version, int(cls.shape[0]))


def read_class_names(path: str | os.PathLike) -> list[str]:
    """A detector's class names: a JSON list, or a text file with one name per line (index 0 = background)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DetectorWeightsError(f"{path}: cannot read the class list ({exc})") from exc
    if path.suffix == ".json":
        import json

        try:
            names = json.loads(text)
        except ValueError as exc:
            raise DetectorWeightsError(f"{path}: not JSON ({exc})") from exc
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DetectorWeightsError(f"{path}: expected a JSON list of class names")
        return names
    return [line.strip() for line in text.splitlines() if line.strip()]


def _build_detector(layout: DetectorLayout, **kwargs):
    from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn, fasterrcnn_resnet50_fpn_v2
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    if layout.version == 2:
        return fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=layout.num_classes, **kwargs)
    if layout.depth == 50:
        return fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=layout.num_classes, **kwargs)
    backbone = resnet_fpn_backbone(backbone_name=f"resnet{layout.depth}", weights=None, trainable_layers=3)
    return FasterRCNN(backbone, num_classes=layout.num_classes, **kwargs)


def _sidecar_classes(path: Path) -> Path | None:
    for suffix in (".classes.json", ".classes.txt"):
        candidate = path.with_name(path.stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def load_detector(weights: str | os.PathLike | None = None, random_init: bool = False,
                  classes: str | os.PathLike | Sequence[str] | None = None, **kwargs):
    """A torchvision Faster R-CNN in eval mode, weights from a local file (module docstring).

    weights: a .pth (read with ``torch.load(weights_only=True)``) or .safetensors state dict of any
    layout :func:`detector_layout` knows; None looks in torchvision's cache
    (``torch.hub.get_dir()/checkpoints``) for the COCO R50-FPN file. ``classes``: the class names
    (a list, or a file for :func:`read_class_names`); None: ``WEIGHTS.classes.json|txt`` beside the
    weights, else COCO's names when the file has 91 classes. ``random_init`` builds an untrained
    COCO-layout detector (tests, throughput). ``kwargs`` go to the torchvision constructor. The
    model gets a ``class_names`` attribute.
    """
    if random_init:
        model = _build_detector(DetectorLayout(), **kwargs)
        model.class_names = list(classes) if isinstance(classes, (list, tuple)) else coco_class_names()
        return model.eval()
    path = Path(weights) if weights is not None else _default_cache_path()
    state = _load_state_dict(path)
    layout = detector_layout(state, str(path))
    model = _build_detector(layout, **kwargs)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DetectorWeightsError(
            f"{path}: not fasterrcnn weights of the layout {layout} ({len(missing)} missing tensors e.g. "
            f"{missing[:3]}, {len(unexpected)} unexpected e.g. {unexpected[:3]})"
        )
    if classes is None:
        classes = _sidecar_classes(path)
    if classes is None:
        if layout.num_classes != 91:
            raise DetectorWeightsError(
                f"{path}: a detector with {layout.num_classes} classes needs its class list: pass classes= "
                f"(JSON list or one name per line) or put {path.stem}.classes.json / .classes.txt beside it")
        names = coco_class_names()
    else:
        names = list(classes) if isinstance(classes, (list, tuple)) else read_class_names(classes)
    if len(names) != layout.num_classes:
        raise DetectorWeightsError(f"{path}: the class list has {len(names)} names, the detector {layout.num_classes} "
                                   "classes (background included)")
    model.class_names = names
    return model.eval()


def coco_class_names() -> list[str]:
    """The detector's 91 COCO label names (index 0 = background, 'N/A' for unused ids)."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    return list(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])


class DetectorRegions:
    """Faster R-CNN regions: score >= ``score_threshold``, at most ``max_regions`` boxes per frame.

    Class names: the model's ``class_names`` (set by :func:`load_detector`), else COCO's.

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
        self._class_names = list(getattr(model, "class_names", None) or coco_class_names())

    @classmethod
    def from_weights(cls, weights: str | os.PathLike | None = None, random_init: bool = False,
                     classes: str | os.PathLike | Sequence[str] | None = None, **kwargs) -> "DetectorRegions":
        return cls(load_detector(weights, random_init=random_init, classes=classes), **kwargs)

    @property
    def feature_dim(self) -> int:
        return int(self.model.roi_heads.box_predictor.cls_score.in_features)

    @property
    def class_names(self) -> list[str]:
        return self._class_names

    @torch.no_grad()
    def detect(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """images float [B, 3, H, W] in [0, 1] -> per image {"boxes" [n, 4] source pixels,
        "features" [n, Dr] (1024 for torchvision's heads), "class_probs" [n, K] (91 for COCO), "scores" [n]},
        n <= max_regions."""
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
