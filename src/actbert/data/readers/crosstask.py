"""CrossTask reader: the ``crosstask_release`` folder (Zhukov et al. 2019; ActBERT 4.2.4).

Layout::

    crosstask_release/tasks_primary.txt   blocks separated by a blank line:
                                             task id / task name / url / number of steps /
                                             comma-separated step names
    crosstask_release/videos.csv          task_id,video_id,url   (no header)
    crosstask_release/annotations/<task_id>_<video_id>.csv
                                          step,start,end         (no header; step is 1-based)

Returns:

* ``read_tasks(path) -> dict[task_id, CrossTaskTask(task_id, name, steps: tuple[str, ...], url)]``
  (the number of step names must equal the declared count);
* ``read_videos(path) -> list[CrossTaskVideo(task_id, video_id, url)]``;
* ``read_annotation(path, task_id, video_id, num_steps) -> CrossTaskAnnotation(task_id, video_id,
  steps: tuple[(step_index0, start, end), ...])`` — step indices are converted to 0-based and
  checked against ``num_steps``;
* ``read_crosstask(release_dir, tasks_file="tasks_primary.txt", videos_file="videos.csv")
  -> CrossTaskRelease(tasks, videos, annotations: dict[(task_id, video_id), CrossTaskAnnotation],
  unannotated: list[CrossTaskVideo])`` — videos of tasks not in ``tasks_file`` are skipped
  (the release lists related-task videos too); videos without an annotation file are listed in
  ``unannotated``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ReaderError, check_field_count, check_interval, csv_float, csv_int, csv_rows, csv_text, read_text_lines


@dataclass(frozen=True)
class CrossTaskTask:
    task_id: str
    name: str
    steps: tuple[str, ...]
    url: str = ""


@dataclass(frozen=True)
class CrossTaskVideo:
    task_id: str
    video_id: str
    url: str = ""


@dataclass(frozen=True)
class CrossTaskAnnotation:
    task_id: str
    video_id: str
    steps: tuple[tuple[int, float, float], ...]  # (step_index0, start, end) seconds


@dataclass
class CrossTaskRelease:
    tasks: dict[str, CrossTaskTask]
    videos: list[CrossTaskVideo]
    annotations: dict[tuple[str, str], CrossTaskAnnotation]
    unannotated: list[CrossTaskVideo] = field(default_factory=list)


def read_tasks(path: str | os.PathLike) -> dict[str, CrossTaskTask]:
    lines = read_text_lines(path)
    tasks: dict[str, CrossTaskTask] = {}
    index = 0
    while index < len(lines):
        if not lines[index].strip():
            index += 1
            continue
        block_start = index + 1  # 1-based line number of the task id
        block = []
        while index < len(lines) and lines[index].strip():
            block.append(lines[index].strip())
            index += 1
        if len(block) != 5:
            raise ReaderError(
                path, f"line {block_start}", f"task block has {len(block)} lines; expected 5 (id, name, url, number of steps, steps)"
            )
        task_id, name, url, count_text, steps_text = block
        count = csv_int(path, count_text, block_start + 3, "number of steps")
        steps = tuple(step.strip() for step in steps_text.split(","))
        if any(not step for step in steps):
            raise ReaderError(path, f"line {block_start + 4}", "empty step name")
        if len(steps) != count:
            raise ReaderError(path, f"line {block_start + 4}", f"{len(steps)} step names but the block declares {count}")
        if task_id in tasks:
            raise ReaderError(path, f"line {block_start}", f"duplicate task id {task_id!r}")
        tasks[task_id] = CrossTaskTask(task_id, name, steps, url)
    if not tasks:
        raise ReaderError(path, "", "no task blocks in file")
    return tasks


def read_videos(path: str | os.PathLike) -> list[CrossTaskVideo]:
    videos = []
    for line, row in csv_rows(path, ","):
        check_field_count(path, row, (2, 3), line)
        task_id = csv_text(path, row[0], line, "task_id")
        video_id = csv_text(path, row[1], line, "video_id")
        videos.append(CrossTaskVideo(task_id, video_id, row[2].strip() if len(row) > 2 else ""))
    return videos


def read_annotation(path: str | os.PathLike, task_id: str, video_id: str, num_steps: int) -> CrossTaskAnnotation:
    steps = []
    for line, row in csv_rows(path, ","):
        check_field_count(path, row, 3, line)
        step = csv_int(path, row[0], line, "step")
        if not 1 <= step <= num_steps:
            raise ReaderError(path, f"line {line}, column 'step'", f"step {step} outside 1..{num_steps} (1-based) for task {task_id!r}")
        start = csv_float(path, row[1], line, "start")
        end = csv_float(path, row[2], line, "end")
        check_interval(path, start, end, f"line {line}")
        steps.append((step - 1, start, end))
    return CrossTaskAnnotation(task_id, video_id, tuple(steps))


def annotation_path(release_dir: str | os.PathLike, task_id: str, video_id: str) -> Path:
    return Path(release_dir) / "annotations" / f"{task_id}_{video_id}.csv"


def read_crosstask(
    release_dir: str | os.PathLike, tasks_file: str = "tasks_primary.txt", videos_file: str = "videos.csv"
) -> CrossTaskRelease:
    release_dir = Path(release_dir)
    tasks = read_tasks(release_dir / tasks_file)
    videos = [video for video in read_videos(release_dir / videos_file) if video.task_id in tasks]
    annotations: dict[tuple[str, str], CrossTaskAnnotation] = {}
    unannotated = []
    for video in videos:
        path = annotation_path(release_dir, video.task_id, video.video_id)
        if not path.exists():
            unannotated.append(video)
            continue
        annotations[(video.task_id, video.video_id)] = read_annotation(path, video.task_id, video.video_id, len(tasks[video.task_id].steps))
    return CrossTaskRelease(tasks, videos, annotations, unannotated)
