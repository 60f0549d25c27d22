"""Clips for training and evaluating the action encoder: decoded windows + mined-verb targets.

A clip is one narration segment. Its input is a window of ``num_frames`` frames at ``fps`` centred on
the segment (``actbert.video.decode.clip_windows``); its target is the L1-normalised indicator of the
in-vocabulary verbs of its narration. Clips whose narration has no in-vocabulary verb are left out.
Each video is decoded once (one pass for all its windows) and the windows are kept in memory for all
epochs; with ``cache_dir`` they are also stored as ``.npy`` (no pickle) and reused by later runs.

Held-out evaluation never uses clips of training videos: ``benchmark_video_splits`` takes the
benchmark's pretrain split for training and its val/test videos for evaluation, or, without a
splits file, holds out a seeded fraction of whole videos.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import random
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from actbert.text.verbs import ActionVocabulary, Clip, NarrationSet
from actbert.utils.io import atomic_write_bytes, read_json

__all__ = ["ActionClipSet", "benchmark_video_splits", "find_video", "ground_truth_actions", "build_action_clips"]


@dataclasses.dataclass
class ActionClipSet:
    """Clips with an in-vocabulary verb, their decoded windows and targets.

    clips:      list[Clip] (C)
    verbs:      list[list[str]] mined verbs of each clip (all, in-vocabulary or not)
    targets:    float32 [C, V] L1-normalised
    windows:    uint8 [C, T, S, S, 3]
    gt_actions: list[str | None] ground-truth action of each clip (synthetic benchmark), or None
    failures:   list[dict] videos that could not be used ({video_id, error})
    """

    clips: list[Clip]
    verbs: list[list[str]]
    targets: np.ndarray
    windows: np.ndarray
    gt_actions: list[str | None]
    failures: list[dict]

    def __len__(self) -> int:
        return len(self.clips)

    def video_ids(self) -> list[str]:
        return list(dict.fromkeys(c.video_id for c in self.clips))


def benchmark_video_splits(
    data_dir: str | os.PathLike, holdout_fraction: float = 0.2, seed: int = 0,
    narrations_path: str | os.PathLike | None = None,
) -> tuple[list[str], list[str], str]:
    """(train video ids, held-out video ids, how they were chosen) for a benchmark folder.

    With ``splits.json``: train = its ``pretrain`` list, held out = its ``val`` + ``test`` videos not in
    pretrain. Without one (or if that leaves nothing held out): a seeded ``holdout_fraction`` of the
    narrated videos is held out whole. ``narrations_path``: default ``data_dir/narrations.json``.
    """
    data_dir = Path(data_dir)
    narrations_path = Path(narrations_path) if narrations_path else data_dir / "narrations.json"
    narrations = read_json(narrations_path, "narrations file")
    narrated = sorted(narrations) if isinstance(narrations, Mapping) else []
    splits_path = data_dir / "splits.json"
    if splits_path.exists():
        splits = read_json(splits_path, "splits file")
        if not isinstance(splits, Mapping) or not isinstance(splits.get("pretrain"), list):
            raise ValueError(f"{splits_path}: field 'pretrain' must be a list of video ids")
        train = [str(v) for v in splits["pretrain"]]
        train_set = set(train)
        held = [str(v) for name in ("val", "test") for v in splits.get(name, []) or [] if str(v) not in train_set]
        held = list(dict.fromkeys(v for v in held if v in narrations))
        if held:
            return train, held, f"{splits_path.name}: pretrain vs val+test"
    if len(narrated) < 2:
        raise ValueError(f"{narrations_path}: need at least 2 narrated videos to hold some out")
    order = list(narrated)
    random.Random(seed).shuffle(order)
    n_held = min(len(order) - 1, max(1, int(round(holdout_fraction * len(order)))))
    return sorted(order[n_held:]), sorted(order[:n_held]), f"{n_held} of {len(order)} videos held out (seed {seed})"


def find_video(video_dir: str | os.PathLike, video_id: str) -> Path:
    """``video_dir/<id>.mp4``, or any ``<id>.*`` file; the .mp4 path (missing) if none exists."""
    video_dir = Path(video_dir)
    path = video_dir / f"{video_id}.mp4"
    if path.exists():
        return path
    others = sorted(p for p in video_dir.glob(f"{video_id}.*") if p.is_file())
    return others[0] if others else path


def ground_truth_actions(steps: Sequence[Mapping], clips: Sequence[Clip]) -> list[str | None]:
    """The ground-truth verb of each clip: the step containing the clip centre, else the step that
    overlaps the clip most, else None. steps: [{"verb", "start", "end", ...}]."""
    out: list[str | None] = []
    for clip in clips:
        best, best_overlap = None, 0.0
        for step in steps:
            start, end = float(step["start"]), float(step["end"])
            if start <= clip.center < end:
                best = step["verb"]
                break
            overlap = min(end, clip.end) - max(start, clip.start)
            if overlap > best_overlap:
                best, best_overlap = step["verb"], overlap
        out.append(best)
    return out


def _cache_path(cache_dir: Path, video_id: str, centers: Sequence[float], num_frames: int, fps: float, size: int) -> Path:
    key = hashlib.sha1(repr((video_id, [round(c, 4) for c in centers], num_frames, fps, size)).encode()).hexdigest()[:16]
    return cache_dir / f"{video_id}.{key}.npy"


def _decode_windows(path: Path, centers: list[float], num_frames: int, fps: float, size: int, cache_dir: Path | None, video_id: str) -> np.ndarray:
    from actbert.video.decode import clip_windows

    cached = _cache_path(cache_dir, video_id, centers, num_frames, fps, size) if cache_dir is not None else None
    if cached is not None and cached.exists():
        windows = np.load(cached, allow_pickle=False)
        if windows.shape == (len(centers), num_frames, size, size, 3) and windows.dtype == np.uint8:
            return windows
    windows = clip_windows(path, centers, num_frames=num_frames, fps=fps, size=size)
    if cached is not None:
        buffer = io.BytesIO()
        np.save(buffer, windows, allow_pickle=False)
        atomic_write_bytes(cached, buffer.getvalue())
    return windows


def build_action_clips(
    video_dir: str | os.PathLike,
    narrations: NarrationSet,
    clip_verbs: Sequence[Sequence[str]],
    vocab: ActionVocabulary,
    num_frames: int,
    fps: float,
    clip_size: int,
    ground_truth: Mapping | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    desc: str = "decoding clips",
) -> ActionClipSet:
    """Decode the windows of every clip with an in-vocabulary verb.

    clip_verbs: mined verbs aligned with ``narrations.clips``. A video that fails to decode is skipped
    and listed in ``failures`` (the rest go on).
    """
    from tqdm import tqdm

    from actbert.video.decode import VideoDecodeError

    if len(clip_verbs) != len(narrations.clips):
        raise ValueError(f"clip_verbs has {len(clip_verbs)} entries for {len(narrations.clips)} clips")
    cache = Path(cache_dir) if cache_dir is not None else None
    per_video: dict[str, list[tuple[Clip, list[str]]]] = {}
    for clip, verbs in zip(narrations.clips, clip_verbs):
        if any(v in vocab for v in verbs):
            per_video.setdefault(clip.video_id, []).append((clip, list(verbs)))

    clips: list[Clip] = []
    verbs_out: list[list[str]] = []
    windows: list[np.ndarray] = []
    gt: list[str | None] = []
    failures: list[dict] = []
    for video_id, items in tqdm(per_video.items(), desc=desc, unit="video", disable=not progress):
        path = find_video(video_dir, video_id)
        centers = [c.center for c, _ in items]
        try:
            video_windows = _decode_windows(path, centers, num_frames, fps, clip_size, cache, video_id)
        except VideoDecodeError as exc:
            failures.append({"video_id": video_id, "error": str(exc)})
            continue
        video_clips = [c for c, _ in items]
        clips.extend(video_clips)
        verbs_out.extend(v for _, v in items)
        windows.append(video_windows)
        entry = ground_truth.get(video_id) if ground_truth is not None else None
        if isinstance(entry, Mapping) and isinstance(entry.get("steps"), list):
            gt.extend(ground_truth_actions(entry["steps"], video_clips))
        else:
            gt.extend([None] * len(video_clips))
    stacked = np.concatenate(windows) if windows else np.zeros((0, num_frames, clip_size, clip_size, 3), np.uint8)
    return ActionClipSet(clips, verbs_out, vocab.targets_many(verbs_out), stacked, gt, failures)
