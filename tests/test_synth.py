"""The synthetic benchmark: determinism, splits, annotation ids, decodable videos, weak alignment."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from actbert.data.synth.generate import SIZES, _rng, generate_benchmark
from actbert.data.synth.world import ACTIONS, build_world
from actbert.video.decode import frames_at_fps, probe

# files whose bytes must be a function of (size, seed) alone
TEXT_FILES = [
    "meta.json",
    "narrations.json",
    "objects.json",
    "ground_truth.json",
    "splits.json",
    "annotations/youcook2/youcookii_annotations_trainval.json",
    "annotations/msrvtt/MSRVTT_JSFUSION_test.csv",
    "annotations/msrvtt/MSRVTT_train.9k.csv",
    "annotations/msrvtt/MSRVTT_data.json",
    "annotations/msrvtt/MSR_MC_test.csv",
    "annotations/lsmdc/LSMDC16_FIB_train.csv",
    "annotations/lsmdc/LSMDC16_FIB_test.csv",
    "annotations/coin/COIN.json",
    "annotations/crosstask/crosstask_release/tasks_primary.txt",
    "annotations/crosstask/crosstask_release/videos.csv",
]


def _load(root: Path, name: str):
    return json.loads((root / name).read_text())


def _all_files(root: Path) -> dict[str, bytes]:
    """Every non-video file of a benchmark folder, by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix != ".mp4"}


def _narration_verb_forms() -> set[str]:
    forms = set()
    for action in ACTIONS:
        for verb in action.narration_verbs:
            forms |= {verb.base, verb.third, verb.ing, verb.past}
    return forms


def _mentions_action_verb(text: str, forms: set[str]) -> bool:
    padded = f" {text} "
    return any(f" {form} " in padded for form in forms)


@pytest.fixture(scope="module")
def synth_tiny_copy(synth_tiny, tmp_path_factory) -> Path:
    """A second, independent generation with the same size and seed as ``synth_tiny``."""
    root = tmp_path_factory.mktemp("synth_tiny_again")
    generate_benchmark("tiny", 0, root, progress=False)
    return root


def test_same_seed_gives_identical_files(synth_tiny, synth_tiny_copy):
    first, second = _all_files(synth_tiny), _all_files(synth_tiny_copy)
    for name in TEXT_FILES:
        assert name in first, f"benchmark lacks {name}"
    assert sorted(first) == sorted(second)
    differing = [name for name in first if first[name] != second[name]]
    assert differing == []
    # the videos too: same ids, same decoded pixels (encoder bytes are not part of the contract)
    ids = sorted(p.name for p in (synth_tiny / "videos").glob("*.mp4"))
    assert ids == sorted(p.name for p in (synth_tiny_copy / "videos").glob("*.mp4"))
    for name in ids[:3] + ids[-2:]:
        a = frames_at_fps(synth_tiny / "videos" / name, fps=2.0)
        b = frames_at_fps(synth_tiny_copy / "videos" / name, fps=2.0)
        np.testing.assert_array_equal(a.frames, b.frames)


def test_different_seed_differs_on_disk(synth_tiny, tmp_path):
    generate_benchmark("tiny", 1, tmp_path, progress=False)
    for name in ("narrations.json", "objects.json", "ground_truth.json"):
        assert (tmp_path / name).read_bytes() != (synth_tiny / name).read_bytes(), name
    assert _load(tmp_path, "meta.json")["seed"] == 1


def test_no_split_leakage(synth_tiny):
    splits = _load(synth_tiny, "splits.json")
    assert set(splits) == {"pretrain", "train", "val", "test"}
    pretrain = set(splits["pretrain"])
    assert pretrain and splits["val"] and splits["test"]
    assert not pretrain & set(splits["val"])
    assert not pretrain & set(splits["test"])
    assert not set(splits["val"]) & set(splits["test"])
    assert set(splits["train"]) <= pretrain
    # downstream held-out annotations only name held-out videos
    youcook = _load(synth_tiny, "annotations/youcook2/youcookii_annotations_trainval.json")["database"]
    coin = _load(synth_tiny, "annotations/coin/COIN.json")["database"]
    assert {v for v, e in youcook.items() if e["subset"] == "validation"} <= set(splits["test"])
    assert {v for v, e in coin.items() if e["subset"] == "testing"} <= set(splits["test"])
    with open(synth_tiny / "annotations/msrvtt/MSRVTT_JSFUSION_test.csv", newline="") as handle:
        jsfusion = [row["video_id"] for row in csv.DictReader(handle)]
    assert jsfusion and set(jsfusion) <= set(splits["test"])


def _annotation_ids(root: Path) -> dict[str, set[str]]:
    ann = root / "annotations"
    ids: dict[str, set[str]] = {}
    ids["youcook2"] = set(_load(root, "annotations/youcook2/youcookii_annotations_trainval.json")["database"])
    ids["coin"] = set(_load(root, "annotations/coin/COIN.json")["database"])
    data = _load(root, "annotations/msrvtt/MSRVTT_data.json")
    ids["msrvtt_data"] = {v["video_id"] for v in data["videos"]} | {s["video_id"] for s in data["sentences"]}
    for name, delimiter, column in (("MSRVTT_JSFUSION_test.csv", ",", "video_id"), ("MSRVTT_train.9k.csv", ",", "video_id"),
                                    ("MSR_MC_test.csv", "\t", "video_id")):
        with open(ann / "msrvtt" / name, newline="") as handle:
            ids[name] = {row[column] for row in csv.DictReader(handle, delimiter=delimiter)}
    for split in ("train", "test"):
        with open(ann / "lsmdc" / f"LSMDC16_FIB_{split}.csv", newline="") as handle:
            ids[f"lsmdc_{split}"] = {row[0] for row in csv.reader(handle, delimiter="\t")}
    crosstask = ann / "crosstask" / "crosstask_release"
    with open(crosstask / "videos.csv", newline="") as handle:
        ids["crosstask_videos"] = {row[1] for row in csv.reader(handle)}
    ids["crosstask_annotations"] = {p.stem.split("_", 1)[1] for p in (crosstask / "annotations").glob("*.csv")}
    for name in ("narrations.json", "objects.json", "ground_truth.json"):
        ids[name] = set(_load(root, name))
    ids["splits"] = {v for vs in _load(root, "splits.json").values() for v in vs}
    return ids


def test_every_annotation_id_has_a_video(synth_tiny):
    videos = {p.stem for p in (synth_tiny / "videos").glob("*.mp4")}
    assert len(videos) == _load(synth_tiny, "meta.json")["num_videos"]
    for source, ids in _annotation_ids(synth_tiny).items():
        assert ids, f"{source} names no video"
        assert ids <= videos, f"{source}: ids without a video: {sorted(ids - videos)}"
    # and every video is narrated, boxed and in some split
    assert set(_load(synth_tiny, "narrations.json")) == videos
    assert set(_load(synth_tiny, "objects.json")) == videos


def test_videos_decode_and_match_meta(synth_tiny):
    meta = _load(synth_tiny, "meta.json")
    truth = _load(synth_tiny, "ground_truth.json")
    total = 0
    for video_id, entry in sorted(truth.items()):
        path = synth_tiny / "videos" / f"{video_id}.mp4"
        info = probe(path)
        assert (info.width, info.height) == (meta["width"], meta["height"]), video_id
        assert info.fps == pytest.approx(meta["fps"])
        assert info.num_frames == round(entry["duration"] * meta["fps"]), video_id
        assert info.duration == pytest.approx(entry["duration"], abs=1.0 / meta["fps"])
        total += info.num_frames
    assert total == meta["num_frames"]
    # a full decode of one video at 1 FPS: one frame per second of the meta's size, real content
    video_id = sorted(truth)[0]
    decoded = frames_at_fps(synth_tiny / "videos" / f"{video_id}.mp4", fps=1.0)
    assert decoded.frames.shape == (int(np.ceil(truth[video_id]["duration"])), meta["height"], meta["width"], 3)
    assert decoded.frames.std() > 5  # not a blank frame
    objects = _load(synth_tiny, "objects.json")[video_id]
    assert [e["time"] for e in objects] == list(range(len(decoded.frames)))


def test_narrations_are_weakly_aligned(synth_tiny):
    narrations = _load(synth_tiny, "narrations.json")
    truth = _load(synth_tiny, "ground_truth.json")
    forms = _narration_verb_forms()
    steps = unnarrated = 0
    for video_id, entry in truth.items():
        segments = list(zip(narrations[video_id]["start"], narrations[video_id]["end"]))
        assert segments, video_id
        assert all(0 <= s < e <= entry["duration"] + 0.01 for s, e in segments)
        assert all(e1 <= s2 + 1e-6 for (_, e1), (s2, _) in zip(segments, segments[1:])), "segments overlap"
        for step in entry["steps"]:
            steps += 1
            if not any(s < step["end"] and e > step["start"] for s, e in segments):
                unnarrated += 1
    # some steps have no narration at all, but most do
    assert 0 < unnarrated < steps / 2
    lines = [t for entry in narrations.values() for t in entry["text"]]
    off_topic = [t for t in lines if not _mentions_action_verb(t, forms)]
    on_topic = [t for t in lines if _mentions_action_verb(t, forms)]
    assert off_topic and on_topic
    assert len(on_topic) > len(off_topic) / 2
    # narrations are ASR-like: lower case, no sentence punctuation
    assert all(t == t.lower() and "." not in t for t in lines)


def test_demo_world_is_rich():
    spec = SIZES["demo"]
    world = build_world(_rng(0, 0), spec.num_tasks, *spec.task_steps)
    assert len(world.object_names) >= 12 and len(world.action_names) >= 12
    used_objects = {o for task in world.tasks for _, o in task.steps}
    used_verbs = {v for task in world.tasks for v, _ in task.steps}
    assert len(used_objects) >= 12
    assert len(used_verbs) >= 12
    # neither the verb nor the object alone identifies a step
    objects_per_verb = {v: {o for t in world.tasks for vv, o in t.steps if vv == v} for v in used_verbs}
    assert sum(len(objs) >= 2 for objs in objects_per_verb.values()) >= len(used_verbs) // 2
    assert len(world.tasks) == spec.num_tasks
    assert all(spec.task_steps[0] <= len(t.steps) <= spec.task_steps[1] for t in world.tasks)
    assert len({t.name for t in world.tasks}) == len(world.tasks)
