"""Given boxes: matching ``objects.json`` entries to frames, and cutting box crops from frames.

Shared by the "given boxes" region route (``regions.GivenBoxRegions``) and the training of its
crop classifier (``object_classifier``): both cut crops with the same code, so training and
extraction cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torchvision.ops import roi_align

from actbert.errors import ActBertError

__all__ = ["RegionInputError", "boxes_for_frames", "crop_boxes", "frames_tensor"]


class RegionInputError(ActBertError):
    """Bad box input (objects.json entry) for a video; names the source and the field."""


def boxes_for_frames(entries: Sequence[Mapping[str, Any]], times: np.ndarray, width: int, height: int,
                     max_regions: int | None = 5, source: str = "objects.json") -> list[tuple[np.ndarray, list[str]]]:
    """Match given-box entries ``{"time", "boxes", "labels"}`` to frame times.

    Each frame takes the entry nearest in time (within half a second; none -> no boxes). Boxes are
    clipped to the frame, boxes under 1 px wide or high are dropped, and the first ``max_regions``
    are kept (all when None). Returns per frame (boxes float32 [n, 4], labels [n]).
    """
    parsed: list[tuple[float, np.ndarray, list[str]]] = []
    for i, entry in enumerate(entries):
        where = f"{source}[{i}]"
        try:
            t = float(entry["time"])
            boxes = np.asarray(entry["boxes"], np.float32).reshape(-1, 4) if len(entry["boxes"]) else np.zeros((0, 4), np.float32)
            labels = [str(x) for x in entry["labels"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise RegionInputError(f"{where}: needs 'time', 'boxes' [[x1,y1,x2,y2],...] and 'labels' ({exc})") from exc
        if len(labels) != len(boxes):
            raise RegionInputError(f"{where}: {len(boxes)} boxes but {len(labels)} labels")
        if not np.isfinite(boxes).all():
            raise RegionInputError(f"{where}, field 'boxes': NaN/inf coordinates")
        parsed.append((t, boxes, labels))
    entry_times = np.array([p[0] for p in parsed], np.float64)
    out = []
    for t in np.asarray(times, np.float64):
        if len(parsed) == 0:
            out.append((np.zeros((0, 4), np.float32), []))
            continue
        j = int(np.abs(entry_times - t).argmin())
        if abs(entry_times[j] - t) > 0.5:
            out.append((np.zeros((0, 4), np.float32), []))
            continue
        _, boxes, labels = parsed[j]
        boxes = boxes.copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        keep = [k for k in range(len(boxes)) if boxes[k, 2] - boxes[k, 0] >= 1 and boxes[k, 3] - boxes[k, 1] >= 1]
        if max_regions is not None:
            keep = keep[:max_regions]
        out.append((boxes[keep], [labels[k] for k in keep]))
    return out


def frames_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [F, H, W, 3] -> float [F, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)


def crop_boxes(frames: torch.Tensor, boxes: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """Resampled box crops.

    frames: float [F, 3, H, W] in [0, 1]; boxes: F tensors [n_f, 4] (pixels x1, y1, x2, y2)
    -> [sum n_f, 3, size, size], in frame order then box order.
    """
    boxes = [b.to(dtype=frames.dtype) for b in boxes]
    if sum(len(b) for b in boxes) == 0:
        return frames.new_zeros((0, 3, size, size))
    return roi_align(frames, boxes, output_size=(size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
