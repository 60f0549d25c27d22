"""COIN reader: ``COIN.json`` (Tang et al. 2019; ActBERT 4.2.3 action segmentation).

File layout::

    {"database": {video_id: {"recipe_type": 116, "class": "MakeCoffee",
                             "subset": "training" | "testing", "start": s, "end": s,
                             "duration": s (optional in the release), "url": ... (ignored),
                             "annotation": [{"id": "3232", "segment": [start, end], "label": "step name"}]}}}

``read_coin(path, subset=None) -> list[CoinVideo(video_id, recipe_type, class_name, subset, start,
end, duration, steps: tuple[CoinStep(step_id, start, end, label)])]``.  ``step_id`` is the
dataset-wide step id as a string (COIN writes it as a string; an int is accepted).
``duration`` is ``None`` when the file has none.

``frame_step_ids(video, times)`` labels frame times with the step whose segment contains them
(``None`` = background), the ground truth of frame-level action segmentation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

from .errors import (
    ReaderError,
    json_interval,
    json_key,
    json_number,
    json_text,
    load_json,
    require_key,
    require_type,
)

SUBSETS = ("training", "testing", "validation")


@dataclass(frozen=True)
class CoinStep:
    step_id: str
    start: float
    end: float
    label: str


@dataclass(frozen=True)
class CoinVideo:
    video_id: str
    recipe_type: int
    class_name: str
    subset: str
    start: float
    end: float
    duration: float | None
    steps: tuple[CoinStep, ...]


def read_coin(path: str | os.PathLike, subset: str | None = None) -> list[CoinVideo]:
    if subset is not None and subset not in SUBSETS:
        raise ValueError(f"unknown COIN subset {subset!r}; expected one of {SUBSETS}")
    data = load_json(path)
    require_type(path, data, dict, "<root>")
    database = require_type(path, require_key(path, data, "database", ""), dict, "database")
    videos = []
    for video_id, entry in database.items():
        where = json_key("database", video_id)
        require_type(path, entry, dict, where)
        recipe_type = require_type(path, require_key(path, entry, "recipe_type", where), int, json_key(where, "recipe_type"))
        class_name = json_text(path, require_key(path, entry, "class", where), json_key(where, "class"))
        video_subset = json_text(path, require_key(path, entry, "subset", where), json_key(where, "subset"))
        if video_subset not in SUBSETS:
            raise ReaderError(path, json_key(where, "subset"), f"unknown subset {video_subset!r}; expected one of {SUBSETS}")
        start = json_number(path, require_key(path, entry, "start", where), json_key(where, "start"))
        end = json_number(path, require_key(path, entry, "end", where), json_key(where, "end"))
        if end < start:
            raise ReaderError(path, json_key(where, "end"), f"end {end} is before start {start}")
        duration = None
        if "duration" in entry:
            duration = json_number(path, entry["duration"], json_key(where, "duration"))
        annotations = require_type(path, require_key(path, entry, "annotation", where), list, json_key(where, "annotation"))
        steps = []
        for index, annotation in enumerate(annotations):
            item = json_key(json_key(where, "annotation"), index)
            require_type(path, annotation, dict, item)
            step_id = require_type(path, require_key(path, annotation, "id", item), (str, int), json_key(item, "id"))
            step_start, step_end = json_interval(path, require_key(path, annotation, "segment", item), json_key(item, "segment"))
            if duration is not None and step_end > duration + 1.0:
                raise ReaderError(path, json_key(item, "segment"), f"segment end {step_end} is past the video duration {duration}")
            label = json_text(path, require_key(path, annotation, "label", item), json_key(item, "label"))
            steps.append(CoinStep(str(step_id).strip(), step_start, step_end, label.strip()))
        if subset is None or video_subset == subset:
            videos.append(CoinVideo(str(video_id), recipe_type, class_name, video_subset, start, end, duration, tuple(steps)))
    return videos


def frame_step_ids(video: CoinVideo, times: Sequence[float]) -> list[str | None]:
    """For each time (seconds), the id of the step whose ``[start, end)`` contains it, else ``None``.

    Overlapping segments (rare in COIN) resolve to the one that starts last, i.e. the step in
    progress most recently.
    """
    labels: list[str | None] = []
    for time in times:
        current = None
        best_start = -1.0
        for step in video.steps:
            if step.start <= time < step.end and step.start >= best_start:
                current, best_start = step.step_id, step.start
        labels.append(current)
    return labels
