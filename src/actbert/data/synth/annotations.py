"""Writers of the downstream annotation files, each in its real dataset's own format.

Paths and columns follow docs/architecture.md ("Synthetic benchmark layout"), which mirrors the
public releases: YouCook2 ``youcookii_annotations_trainval.json``, MSR-VTT JSFusion / 9k / data
JSON / multiple choice, LSMDC fill-in-the-blank, COIN ``COIN.json`` and CrossTask's release folder.
All writes are atomic; CSVs are written with the stdlib ``csv`` module and "\\n" line ends.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from actbert.utils.io import atomic_write_json, atomic_write_text

from .world import Task


@dataclass
class RecipeVideo:
    """A long multi-step video used by YouCook2, COIN and CrossTask."""

    video_id: str
    split: str  # train | val | test
    task: Task
    duration: float
    steps: list[tuple[str, str, float, float]]  # (verb, object, start, end)
    sentences: list[str]  # one human caption per step


@dataclass
class ClipVideo:
    """A short one- or two-step video used by MSR-VTT and LSMDC."""

    video_id: str
    split: str
    duration: float
    steps: list[tuple[str, str]]
    captions: list[str]  # human captions (first: the JSFusion test sentence)
    mc_candidates: list[str] = field(default_factory=list)  # five, test clips only
    mc_answer: int = -1
    fib: list[tuple[str, str]] = field(default_factory=list)  # (sentence with _____, answer)


def _csv_text(rows: Iterable[Sequence], delimiter: str = ",", header: Sequence[str] | None = None) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    for row in rows:
        writer.writerow(row)
    return buffer.getvalue()


def write_youcook2(root: Path, recipes: list[RecipeVideo], tasks: list[Task]) -> Path:
    """train → "training", test → "validation" (YouCook2's evaluation subset); val videos are left out."""
    subset = {"train": "training", "test": "validation"}
    database = {}
    for video in recipes:
        if video.split not in subset:
            continue
        database[video.video_id] = {
            "duration": video.duration,
            "subset": subset[video.split],
            "recipe_type": video.task.task_id,
            "annotations": [
                {"id": i, "segment": [start, end], "sentence": sentence}
                for i, ((_, _, start, end), sentence) in enumerate(zip(video.steps, video.sentences))
            ],
            "video_url": f"synthetic://video/{video.video_id}",
        }
    path = root / "annotations" / "youcook2" / "youcookii_annotations_trainval.json"
    atomic_write_json(path, {"database": database})
    return path


def coin_step_ids(tasks: list[Task]) -> dict[str, str]:
    """Step label → COIN step id (str), numbered by first appearance over the tasks."""
    ids: dict[str, str] = {}
    for task in tasks:
        for verb, obj in task.steps:
            ids.setdefault(Task.step_label(verb, obj), str(len(ids) + 1))
    return ids


def write_coin(root: Path, recipes: list[RecipeVideo], tasks: list[Task]) -> Path:
    """train → "training", test → "testing"; ``recipe_type`` is the task's index, ``class`` its name."""
    subset = {"train": "training", "test": "testing"}
    ids = coin_step_ids(tasks)
    task_index = {t.task_id: i for i, t in enumerate(tasks)}
    database = {}
    for video in recipes:
        if video.split not in subset:
            continue
        database[video.video_id] = {
            "recipe_type": task_index[video.task.task_id],
            "class": video.task.name,
            "subset": subset[video.split],
            "start": 0.0,
            "end": video.duration,
            "duration": video.duration,
            "video_url": f"synthetic://video/{video.video_id}",
            "annotation": [
                {"id": ids[Task.step_label(verb, obj)], "segment": [start, end], "label": Task.step_label(verb, obj)}
                for verb, obj, start, end in video.steps
            ],
        }
    path = root / "annotations" / "coin" / "COIN.json"
    atomic_write_json(path, {"database": database})
    return path


def write_crosstask(root: Path, recipes: list[RecipeVideo], tasks: list[Task]) -> Path:
    """tasks_primary.txt, videos.csv (every recipe video, all splits) and one step CSV per video."""
    base = root / "annotations" / "crosstask" / "crosstask_release"
    blocks = []
    for task in tasks:
        labels = ",".join(Task.step_label(v, o) for v, o in task.steps)
        blocks.append(f"{task.task_id}\n{task.name}\nsynthetic://task/{task.task_id}\n{len(task.steps)}\n{labels}\n\n")
    atomic_write_text(base / "tasks_primary.txt", "".join(blocks))
    atomic_write_text(base / "videos.csv", _csv_text(
        (video.task.task_id, video.video_id, f"synthetic://video/{video.video_id}") for video in recipes))
    for video in recipes:
        order = {step: i + 1 for i, step in enumerate(video.task.steps)}
        rows = [(order[(verb, obj)], f"{start:.2f}", f"{end:.2f}") for verb, obj, start, end in video.steps]
        atomic_write_text(base / "annotations" / f"{video.task.task_id}_{video.video_id}.csv", _csv_text(rows))
    return base


def write_msrvtt(root: Path, clips: list[ClipVideo]) -> Path:
    """JSFusion test CSV (first caption of each test clip), 9k train list, data JSON, multiple choice."""
    base = root / "annotations" / "msrvtt"
    split_name = {"train": "train", "val": "validate", "test": "test"}
    tests = [c for c in clips if c.split == "test"]
    atomic_write_text(base / "MSRVTT_JSFUSION_test.csv", _csv_text(
        ((f"ret{i}", f"msr{c.video_id}", c.video_id, c.captions[0]) for i, c in enumerate(tests)),
        header=("key", "vid_key", "video_id", "sentence")))
    atomic_write_text(base / "MSRVTT_train.9k.csv", _csv_text(
        ((c.video_id,) for c in clips if c.split == "train"), header=("video_id",)))
    videos, sentences = [], []
    for i, clip in enumerate(clips):
        videos.append({"video_id": clip.video_id, "id": i, "start time": 0.0, "end time": clip.duration,
                       "split": split_name[clip.split], "category": 0, "url": f"synthetic://video/{clip.video_id}"})
        for caption in clip.captions:
            sentences.append({"video_id": clip.video_id, "caption": caption, "sen_id": len(sentences)})
    atomic_write_json(base / "MSRVTT_data.json", {"videos": videos, "sentences": sentences})
    atomic_write_text(base / "MSR_MC_test.csv", _csv_text(
        ((f"mc{i}", f"msr{c.video_id}", c.video_id, *c.mc_candidates, c.mc_answer) for i, c in enumerate(tests)),
        delimiter="\t", header=("key", "vid_key", "video_id", "a1", "a2", "a3", "a4", "a5", "answer")))
    return base


def write_lsmdc(root: Path, clips: list[ClipVideo]) -> Path:
    """LSMDC16_FIB_{train,test}.csv: video_id, start, end, sentence with _____, answer (tab, no header)."""
    base = root / "annotations" / "lsmdc"
    for split in ("train", "test"):
        rows = [(c.video_id, "0.00", f"{c.duration:.2f}", sentence, answer)
                for c in clips if c.split == split for sentence, answer in c.fib]
        atomic_write_text(base / f"LSMDC16_FIB_{split}.csv", _csv_text(rows, delimiter="\t"))
    return base
