"""CrossTask action step localization recall (Zhukov et al. 2019; ActBERT 4.2.1 and 4.2.4, Table 3).

Definition used here (Zhukov et al.'s evaluation, stated in ActBERT as "the number of step
assignments that fall into the ground-truth interval, divided by the total number of steps in
the video"):

1. For a video of task ``T`` with ``K`` steps, the model scores every clip against every step:
   ``step_scores [C, K]``; ``clip_times [C]`` is the time (seconds) each clip stands for (its centre).
2. Each step ``k`` is assigned to one moment: the clip with the highest score for ``k``.
3. Only steps that occur in the video's ground truth are scored. Step ``k`` is a hit if its
   assigned time ``t`` lies inside any ground-truth interval of ``k``: ``start <= t <= end``.
   Ties never flatter: if several clips share the top score, ``k`` is a hit only if *all* of them
   lie inside ground-truth intervals of ``k`` (a model that scores every clip alike gets no
   credit unless the step spans the whole video).
4. Recall of a task = (hits summed over its videos) / (number of distinct ground-truth steps summed
   over its videos). The reported recall is the unweighted mean over tasks (each task counts once,
   however many videos it has). All recalls are percent.

A task whose videos have no ground-truth step at all is left out of the mean (listed in
``tasks_without_steps``). NaN scores, mismatched shapes, step indices outside ``[0, K)`` or no
scorable step at all raise ``MetricInputError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .errors import MetricInputError


@dataclass(frozen=True)
class StepLocalizationVideo:
    """One video's scores and ground truth. ``gt_steps``: ``(step_index0, start, end)`` seconds."""

    task_id: str
    video_id: str
    step_scores: np.ndarray  # [C, K]
    clip_times: np.ndarray  # [C]
    gt_steps: Sequence[tuple[int, float, float]]


def video_step_hits(video: StepLocalizationVideo) -> tuple[int, int]:
    """``(hits, number of distinct ground-truth steps)`` for one video."""
    scores = np.asarray(video.step_scores, dtype=np.float64)
    times = np.asarray(video.clip_times, dtype=np.float64)
    where = f"video {video.video_id!r} (task {video.task_id!r})"
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise MetricInputError(f"{where}: step_scores must be a non-empty [num_clips, num_steps] matrix, got shape {scores.shape}")
    if times.shape != (scores.shape[0],):
        raise MetricInputError(f"{where}: clip_times has shape {times.shape}, expected ({scores.shape[0]},)")
    if np.isnan(scores).any() or np.isnan(times).any():
        raise MetricInputError(f"{where}: NaN in step_scores or clip_times")
    num_steps = scores.shape[1]
    intervals: dict[int, list[tuple[float, float]]] = {}
    for step, start, end in video.gt_steps:
        if not 0 <= int(step) < num_steps:
            raise MetricInputError(f"{where}: ground-truth step {step} outside 0..{num_steps - 1}")
        if end < start:
            raise MetricInputError(f"{where}: ground-truth step {step} ends ({end}) before it starts ({start})")
        intervals.setdefault(int(step), []).append((float(start), float(end)))
    hits = 0
    for step, spans in intervals.items():
        column = scores[:, step]
        top_times = times[column == column.max()]
        inside = np.zeros(top_times.shape, dtype=bool)
        for start, end in spans:
            inside |= (top_times >= start) & (top_times <= end)
        hits += int(inside.all())
    return hits, len(intervals)


def crosstask_recall(videos: Iterable[StepLocalizationVideo]) -> dict[str, object]:
    """``{"recall": % (mean over tasks), "per_task": {task: %}, "num_tasks", "num_videos",
    "num_steps", "num_hits", "tasks_without_steps": [...]}``."""
    hits: dict[str, int] = {}
    totals: dict[str, int] = {}
    num_videos = 0
    for video in videos:
        video_hits, video_steps = video_step_hits(video)
        hits[video.task_id] = hits.get(video.task_id, 0) + video_hits
        totals[video.task_id] = totals.get(video.task_id, 0) + video_steps
        num_videos += 1
    if num_videos == 0:
        raise MetricInputError("videos: empty; recall of zero videos is undefined")
    per_task = {task: 100.0 * hits[task] / totals[task] for task in sorted(totals) if totals[task] > 0}
    if not per_task:
        raise MetricInputError("videos: no ground-truth step in any video")
    return {
        "recall": float(np.mean(list(per_task.values()))),
        "per_task": per_task,
        "num_tasks": len(per_task),
        "num_videos": num_videos,
        "num_steps": int(sum(totals.values())),
        "num_hits": int(sum(hits.values())),
        "tasks_without_steps": sorted(task for task, total in totals.items() if total == 0),
    }
