"""YouCook2 reader: ``youcookii_annotations_trainval.json`` (the official release format).

File layout::

    {"database": {video_id: {"duration": s, "subset": "training" | "validation",
                             "recipe_type": "113", "video_url": ... (ignored),
                             "annotations": [{"id": 0, "segment": [start, end], "sentence": "..."}]}}}

Returns ``YouCook2Video`` records, each with its ``Segment`` list (one captioned clip each). Used
for text-video clip retrieval (validation clips) and captioning (train on "training", report on
"validation"), ActBERT 4.2.1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

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

SUBSETS = ("training", "validation", "testing")


@dataclass(frozen=True)
class Segment:
    """One annotated clip: ``start``/``end`` in seconds of video ``video_id``, its caption."""

    video_id: str
    start: float
    end: float
    sentence: str
    segment_id: int = 0


@dataclass(frozen=True)
class YouCook2Video:
    video_id: str
    duration: float
    subset: str
    recipe_type: str
    segments: tuple[Segment, ...]


def read_youcook2(path: str | os.PathLike, subset: str | None = None) -> list[YouCook2Video]:
    """Read the annotation JSON; ``subset`` ("training" / "validation") keeps only that split.

    Segments are checked: ``0 <= start <= end``, non-empty sentence, and ``end`` may not exceed
    the video's duration by more than one second (annotation rounding).
    """
    if subset is not None and subset not in SUBSETS:
        raise ValueError(f"unknown YouCook2 subset {subset!r}; expected one of {SUBSETS}")
    data = load_json(path)
    require_type(path, data, dict, "<root>")
    database = require_type(path, require_key(path, data, "database", ""), dict, "database")
    videos = []
    for video_id, entry in database.items():
        where = json_key("database", video_id)
        require_type(path, entry, dict, where)
        duration = json_number(path, require_key(path, entry, "duration", where), json_key(where, "duration"))
        video_subset = json_text(path, require_key(path, entry, "subset", where), json_key(where, "subset"))
        if video_subset not in SUBSETS:
            raise ReaderError(path, json_key(where, "subset"), f"unknown subset {video_subset!r}; expected one of {SUBSETS}")
        recipe = require_key(path, entry, "recipe_type", where)
        require_type(path, recipe, (str, int), json_key(where, "recipe_type"))
        annotations = require_type(path, require_key(path, entry, "annotations", where), list, json_key(where, "annotations"))
        segments = []
        for index, annotation in enumerate(annotations):
            item = json_key(json_key(where, "annotations"), index)
            require_type(path, annotation, dict, item)
            segment_id = require_type(path, require_key(path, annotation, "id", item), int, json_key(item, "id"))
            start, end = json_interval(path, require_key(path, annotation, "segment", item), json_key(item, "segment"))
            if end > duration + 1.0:
                raise ReaderError(path, json_key(item, "segment"), f"segment end {end} is past the video duration {duration}")
            sentence = json_text(path, require_key(path, annotation, "sentence", item), json_key(item, "sentence"))
            segments.append(Segment(str(video_id), start, end, sentence.strip(), segment_id))
        if subset is None or video_subset == subset:
            videos.append(YouCook2Video(str(video_id), duration, video_subset, str(recipe), tuple(segments)))
    return videos


def youcook2_segments(videos: Iterable[YouCook2Video]) -> list[Segment]:
    """All segments of ``videos`` in file order (the retrieval / captioning clip list)."""
    return [segment for video in videos for segment in video.segments]
