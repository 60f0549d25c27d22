"""Frame-level action segmentation accuracy (COIN, ActBERT 4.2.3 Table 2).

Inputs are integer label arrays, one label per frame: either one array ``[F]`` for all frames or a
sequence of per-video arrays (each prediction array must match its target array's length).

* frame accuracy = correct frames / counted frames (percent), pooled over all videos, as in
  COIN / ActBERT;
* per-class accuracy = for each ground-truth class, the share of its frames predicted correctly
  (percent), and their unweighted mean (``mean_class_accuracy``).

Frames are not counted when their target is negative (padding, e.g. ``-100``) or equals
``ignore_label`` (pass the background label to score only step frames). Predicting the ignored
label on a counted frame is simply wrong.

Empty input, or no counted frame at all, raises ``MetricInputError``.
"""

from __future__ import annotations


import numpy as np

from .errors import MetricInputError


def _flatten(name: str, arrays) -> list[np.ndarray]:
    if isinstance(arrays, np.ndarray) and arrays.ndim == 1:
        arrays = [arrays]
    out = []
    for index, array in enumerate(arrays):
        array = np.asarray(array)
        if array.ndim != 1:
            raise MetricInputError(f"{name}[{index}]: expected a 1-D label array, got shape {array.shape}")
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise MetricInputError(f"{name}[{index}]: expected integer labels, got dtype {array.dtype}")
        out.append(array.astype(np.int64))
    return out


def _counted(predictions, targets, ignore_label: int | None) -> tuple[np.ndarray, np.ndarray]:
    preds = _flatten("predictions", predictions)
    targs = _flatten("targets", targets)
    if len(preds) != len(targs):
        raise MetricInputError(f"predictions: {len(preds)} videos but targets has {len(targs)}")
    for index, (p, t) in enumerate(zip(preds, targs)):
        if p.shape != t.shape:
            raise MetricInputError(f"predictions[{index}]: {p.size} frames but targets[{index}] has {t.size}")
    if not preds or sum(t.size for t in targs) == 0:
        raise MetricInputError("targets: no frames")
    pred = np.concatenate(preds)
    target = np.concatenate(targs)
    keep = target >= 0
    if ignore_label is not None:
        keep &= target != ignore_label
    if not keep.any():
        raise MetricInputError(f"targets: every frame is padding or the ignored label {ignore_label}")
    return pred[keep], target[keep]


def frame_accuracy(predictions, targets, ignore_label: int | None = None) -> float:
    pred, target = _counted(predictions, targets, ignore_label)
    return float(100.0 * np.mean(pred == target))


def per_class_accuracy(predictions, targets, ignore_label: int | None = None) -> dict[int, float]:
    """``{class: percent of its frames predicted correctly}`` for each class present in the targets."""
    pred, target = _counted(predictions, targets, ignore_label)
    return {int(c): float(100.0 * np.mean(pred[target == c] == c)) for c in np.unique(target)}


def segmentation_metrics(predictions, targets, ignore_label: int | None = None) -> dict[str, object]:
    """``{"frame_accuracy": %, "mean_class_accuracy": %, "per_class": {class: %}, "num_frames": n}``."""
    pred, target = _counted(predictions, targets, ignore_label)
    per_class = {int(c): float(100.0 * np.mean(pred[target == c] == c)) for c in np.unique(target)}
    return {
        "frame_accuracy": float(100.0 * np.mean(pred == target)),
        "mean_class_accuracy": float(np.mean(list(per_class.values()))),
        "per_class": per_class,
        "num_frames": int(target.size),
    }
