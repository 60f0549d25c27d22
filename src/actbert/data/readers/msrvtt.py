"""MSR-VTT readers: the JSFusion retrieval test split, the 9k training split, the caption JSON and
the multiple-choice test (ActBERT 4.2.1: 1,000 text-video pairs for retrieval, 2,990 multiple-choice
questions, both following JSFusion, Yu et al. 2018).

Formats and what each returns:

* ``MSRVTT_JSFUSION_test.csv`` — comma separated, header ``key,vid_key,video_id,sentence``, one
  caption per test clip (``ret0,msr9770,video9770,a person is connecting something to system``).
  ``read_jsfusion_test(path) -> list[RetrievalPair(key, vid_key, video_id, sentence)]``; the video
  ids must be unique (text i ↔ video i is the ground truth of the 1k-A protocol).
* ``MSRVTT_train.9k.csv`` — header ``video_id``, one id per line.
  ``read_train_ids(path) -> list[str]``.
* ``MSRVTT_data.json`` — ``{"videos": [{"video_id", "start time", "end time", "split", ...}],
  "sentences": [{"video_id", "caption", "sen_id"}, ...]}`` (extra keys such as ``url``,
  ``category``, ``id``, ``info`` are ignored).
  ``read_msrvtt_data(path) -> MsrvttData(videos: dict[id, MsrvttVideo(video_id, start, end, split)],
  captions: list[MsrvttCaption(video_id, caption, sen_id)])``; every caption's video must exist.
* ``MSR_MC_test.csv`` — tab separated with the header
  ``key  vid_key  video_id  a1  a2  a3  a4  a5  answer`` (columns found by name, in any order);
  ``answer`` is the 0-based index of the true caption among ``a1..a5`` (JSFusion's release).
  ``read_multiple_choice(path) -> list[MultipleChoiceItem(video_id, candidates, answer, key, vid_key)]``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import (
    ReaderError,
    check_field_count,
    check_interval,
    csv_int,
    csv_rows,
    csv_text,
    header_index,
    json_key,
    json_number,
    json_text,
    load_json,
    require_key,
    require_type,
)

NUM_CHOICES = 5
_MC_COLUMNS = ("key", "vid_key", "video_id") + tuple(f"a{i}" for i in range(1, NUM_CHOICES + 1)) + ("answer",)


@dataclass(frozen=True)
class RetrievalPair:
    key: str
    vid_key: str
    video_id: str
    sentence: str


@dataclass(frozen=True)
class MsrvttVideo:
    video_id: str
    start: float
    end: float
    split: str


@dataclass(frozen=True)
class MsrvttCaption:
    video_id: str
    caption: str
    sen_id: int


@dataclass(frozen=True)
class MsrvttData:
    videos: dict[str, MsrvttVideo]
    captions: list[MsrvttCaption]

    def captions_of(self, video_id: str) -> list[str]:
        return [c.caption for c in self.captions if c.video_id == video_id]


@dataclass(frozen=True)
class MultipleChoiceItem:
    """One question: ``candidates`` (5 captions) for ``video_id``; ``answer`` = 0-based true index."""

    video_id: str
    candidates: tuple[str, ...]
    answer: int
    key: str = ""
    vid_key: str = ""


def read_jsfusion_test(path: str | os.PathLike) -> list[RetrievalPair]:
    rows = csv_rows(path, ",")
    first = next(rows, None)
    if first is None:
        raise ReaderError(path, "", "empty file (expected header key,vid_key,video_id,sentence)")
    header_line, header = first
    columns = header_index(path, header, ("key", "vid_key", "video_id", "sentence"), header_line)
    pairs: list[RetrievalPair] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        check_field_count(path, row, len(header), line)
        fields = {name: csv_text(path, row[index], line, name) for name, index in columns.items()}
        video_id = fields["video_id"]
        if video_id in seen:
            raise ReaderError(path, f"line {line}, column 'video_id'", f"duplicate video id {video_id!r} (first on line {seen[video_id]})")
        seen[video_id] = line
        pairs.append(RetrievalPair(fields["key"], fields["vid_key"], video_id, fields["sentence"]))
    if not pairs:
        raise ReaderError(path, "", "no rows after the header")
    return pairs


def read_train_ids(path: str | os.PathLike) -> list[str]:
    rows = csv_rows(path, ",")
    first = next(rows, None)
    if first is None:
        raise ReaderError(path, "", "empty file (expected header video_id)")
    header_line, header = first
    column = header_index(path, header, ("video_id",), header_line)["video_id"]
    ids = []
    for line, row in rows:
        check_field_count(path, row, len(header), line)
        ids.append(csv_text(path, row[column], line, "video_id"))
    return ids


def read_msrvtt_data(path: str | os.PathLike) -> MsrvttData:
    data = load_json(path)
    require_type(path, data, dict, "<root>")
    videos: dict[str, MsrvttVideo] = {}
    video_list = require_type(path, require_key(path, data, "videos", ""), list, "videos")
    for index, entry in enumerate(video_list):
        where = json_key("videos", index)
        require_type(path, entry, dict, where)
        video_id = json_text(path, require_key(path, entry, "video_id", where), json_key(where, "video_id"))
        start = json_number(path, require_key(path, entry, "start time", where), json_key(where, "start time"))
        end = json_number(path, require_key(path, entry, "end time", where), json_key(where, "end time"))
        check_interval(path, start, end, where)
        split = json_text(path, require_key(path, entry, "split", where), json_key(where, "split"))
        if video_id in videos:
            raise ReaderError(path, json_key(where, "video_id"), f"duplicate video id {video_id!r}")
        videos[video_id] = MsrvttVideo(video_id, start, end, split)
    captions = []
    sentence_list = require_type(path, require_key(path, data, "sentences", ""), list, "sentences")
    for index, entry in enumerate(sentence_list):
        where = json_key("sentences", index)
        require_type(path, entry, dict, where)
        video_id = json_text(path, require_key(path, entry, "video_id", where), json_key(where, "video_id"))
        if video_id not in videos:
            raise ReaderError(path, json_key(where, "video_id"), f"caption for unknown video {video_id!r}")
        caption = json_text(path, require_key(path, entry, "caption", where), json_key(where, "caption"))
        sen_id = require_type(path, require_key(path, entry, "sen_id", where), int, json_key(where, "sen_id"))
        captions.append(MsrvttCaption(video_id, caption.strip(), sen_id))
    return MsrvttData(videos, captions)


def read_multiple_choice(path: str | os.PathLike) -> list[MultipleChoiceItem]:
    rows = csv_rows(path, "\t")
    first = next(rows, None)
    if first is None:
        raise ReaderError(path, "", "empty file (expected a tab-separated header " + " ".join(_MC_COLUMNS) + ")")
    header_line, header = first
    columns = header_index(path, header, _MC_COLUMNS, header_line)
    items = []
    for line, row in rows:
        check_field_count(path, row, len(header), line)
        fields = {name: row[index] for name, index in columns.items()}
        candidates = tuple(csv_text(path, fields[f"a{i}"], line, f"a{i}") for i in range(1, NUM_CHOICES + 1))
        answer = csv_int(path, fields["answer"], line, "answer")
        if not 0 <= answer < NUM_CHOICES:
            raise ReaderError(path, f"line {line}, column 'answer'", f"answer index {answer} outside 0..{NUM_CHOICES - 1}")
        items.append(
            MultipleChoiceItem(
                video_id=csv_text(path, fields["video_id"], line, "video_id"),
                candidates=candidates,
                answer=answer,
                key=fields["key"].strip(),
                vid_key=fields["vid_key"].strip(),
            )
        )
    if not items:
        raise ReaderError(path, "", "no rows after the header")
    return items
