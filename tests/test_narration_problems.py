"""Narration problems are skipped per segment and reported, in every stage that reads narrations.

A bad segment (start > end, not a number, empty text) drops that segment only -- its video keeps
the good ones; a malformed entry (a field missing) drops its video only; a segment past the video's
end is skipped or clamped at extraction, and a store clip past it is skipped in pretraining. Each
one is listed with the file, the video, the segment index and stage "narrations".
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch

from actbert.data.corpus import Corpus, Narration, load_narrations
from actbert.data.store import FeatureStore, FeatureStoreWriter
from actbert.text.verbs import read_narrations

sys.path.insert(0, os.path.dirname(__file__))
from test_second_features import VIDEO_FPS, StubEncoder, StubMiner, StubRegions, write_level_video  # noqa: E402
from test_store import make_features, make_schema  # noqa: E402

torch.set_num_threads(1)

# video "a": segment 1 ends before it starts; "b": no 'end' field; "c": fine
NARRATIONS = {
    "a": {"start": [0.0, 5.0, 8.0], "end": [4.0, 3.0, 10.0], "text": ["cut the onion", "pour the milk", "stir it"]},
    "b": {"start": [0.0], "text": ["fry the egg"]},
    "c": {"start": [1.0], "end": [2.0], "text": ["whisk"]},
}


def write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_a_bad_segment_drops_only_itself_in_mine_verbs_and_extract(tmp_path):
    narrations = read_narrations(write(tmp_path / "narrations.json", NARRATIONS))
    by_video = narrations.by_video()
    assert [c.index for c in by_video["a"]] == [0, 2] and [c.text for c in by_video["a"]] == ["cut the onion", "stir it"]
    assert "b" not in by_video and [c.index for c in by_video["c"]] == [0]
    problems = {(f["video_id"], f.get("index")): f["error"] for f in narrations.failures}
    assert set(problems) == {("a", 1), ("b", None)}
    assert "narrations.json: video 'a': segment 1 has start=5.0 end=3.0" in problems[("a", 1)]
    assert "narrations.json: video 'b': missing field 'end'" in problems[("b", None)]


def test_pretraining_narrations_skip_bad_segments_and_entries(tmp_path):
    path = write(tmp_path / "narrations.json", NARRATIONS)
    loaded = load_narrations(path)  # used to raise at the first bad segment: the whole file lost
    assert sorted(loaded) == ["a", "c"]
    np.testing.assert_array_equal(loaded["a"].start, [0.0, 8.0])
    np.testing.assert_array_equal(loaded["a"].end, [4.0, 10.0])
    assert loaded["a"].text == ["cut the onion", "stir it"]
    by_key = {(p["video_id"], p.get("index")): p for p in loaded.problems}
    assert set(by_key) == {("a", 1), ("b", None)}
    for p in loaded.problems:
        assert p["file"] == str(path) and p["stage"] == "narrations" and str(path) in p["error"]


@pytest.fixture(scope="module")
def tokenizer():
    from actbert.text.tokenizer import load_tokenizer

    return load_tokenizer()


def test_corpus_keeps_the_video_of_a_bad_segment_and_reports_it(tmp_path, tokenizer):
    writer = FeatureStoreWriter(tmp_path / "store", make_schema())
    for video_id in ("a", "c"):
        feats = make_features(clips=2, frames=12)
        feats.clip_times = np.array([[0.0, 4.0], [8.0, 10.0]])
        writer.write(video_id, feats)
    corpus = Corpus(FeatureStore(tmp_path / "store"), write(tmp_path / "narrations.json", NARRATIONS), tokenizer,
                    video_ids=["a", "c"], region_frames="nearest")
    good, failures = corpus.check()
    assert good == ["a", "c"]
    clips = corpus["a"]
    assert clips.tokens == [tokenizer.encode("cut the onion"), tokenizer.encode("stir it")]
    # "c": the clip [0, 4) overlaps the segment [1, 2); [8, 10) has none
    assert corpus["c"].tokens == [tokenizer.encode("whisk"), []]
    # the bad segment of "a" is reported; "b" is not one of this corpus's videos
    assert [(f["video_id"], f.get("index"), f.get("stage")) for f in failures] == [("a", 1, "narrations")]


def test_corpus_skips_store_clips_past_the_videos_end(tmp_path, tokenizer):
    feats = make_features(clips=3, frames=5)  # 1 FPS frames at 0..4 s: the video ends by 5 s
    feats.clip_times = np.array([[0.0, 2.0], [2.0, 4.5], [6.0, 8.0]])
    FeatureStoreWriter(tmp_path / "store", make_schema()).write("v", feats)
    narrations = {"v": Narration(np.array([0.0, 2.0, 6.0]), np.array([2.0, 4.5, 8.0]), ["cut", "pour", "stir"])}
    corpus = Corpus(FeatureStore(tmp_path / "store"), narrations, tokenizer, region_frames="nearest")
    clips = corpus["v"]
    np.testing.assert_array_equal(clips.clip_times, [[0.0, 2.0], [2.0, 4.5]])
    np.testing.assert_array_equal(clips.action_features, np.asarray(feats.action_features)[:2])
    assert clips.tokens == [tokenizer.encode("cut"), tokenizer.encode("pour")]
    good, failures = corpus.check()
    assert good == ["v"] and len(failures) == 1
    assert failures[0]["index"] == 2 and failures[0]["stage"] == "narrations"
    assert "clip 2 starts at 6 s, after the video's end" in failures[0]["error"]


def test_pretraining_runs_past_a_bad_narration_line(tmp_path):
    from actbert.data.random_features import RandomCorpusSpec, write_random_corpus
    from actbert.train.config import load_pretrain_config
    from actbert.train.loop import train

    store_dir, narrations_path = write_random_corpus(tmp_path / "data", RandomCorpusSpec(num_videos=6, clips_per_video=5))
    narrations = json.loads(narrations_path.read_text())
    ids = sorted(narrations)
    first = narrations[ids[0]]
    first["start"].append(first["end"][-1] + 5.0)  # one HowTo100M-style bad line: ends before it starts
    first["end"].append(first["end"][-1] + 1.0)
    first["text"].append("stir the pot")
    del narrations[ids[1]]["end"]
    bad = write(tmp_path / "bad_narrations.json", narrations)
    cfg = load_pretrain_config("tiny", ["data.random=false", f"data.store={store_dir}", f"data.narrations={bad}",
                                        "train.progress=false", "train.max_steps=2", "train.batch_size=2",
                                        "train.checkpoint_every=0"])
    summary = train(cfg, tmp_path / "run")  # used to stop at the bad line
    assert summary is not None
    reported = json.loads((tmp_path / "run" / "data_failures.json").read_text())
    keyed = {(f["video_id"], f.get("index")): f for f in reported}
    bad_index = len(first["text"]) - 1
    assert (ids[0], bad_index) in keyed and keyed[(ids[0], bad_index)]["stage"] == "narrations"
    assert (ids[0], None) not in keyed  # the video of the bad line is used
    assert (ids[1], None) in keyed  # the entry without 'end': its video is skipped ...
    assert any("missing field 'end'" in f["error"] for f in reported if f["video_id"] == ids[1])  # ... saying why


def test_extract_skips_or_clamps_segments_past_the_end_and_keeps_the_good_ones(tmp_path):
    from actbert.video.extract import END_TOLERANCE_S, extract_videos

    write_level_video(tmp_path / "videos" / "v.mp4", 21)  # 21 frames at 4 FPS: 5.25 s
    duration = 21 / VIDEO_FPS
    narrations = {"v": {"start": [0.0, 1.0, 3.0, 6.0, 2.0, 4.0],
                        "end": [1.5, 3.0, 9.0, 8.0, 1.0, duration + END_TOLERANCE_S / 2],
                        "text": ["we cut it", "now pour", "cut more", "pour again", "bad line", "rounded end"]}}
    write(tmp_path / "narrations.json", narrations)
    encoder = StubEncoder()
    report = extract_videos(tmp_path / "videos", tmp_path / "store", encoder, encoder.vocab, StubRegions(),
                            narrations_path=tmp_path / "narrations.json", verb_miner=StubMiner(), progress=False)
    assert report.written == ["v"] and report.failed == []
    record = FeatureStore(tmp_path / "store")["v"]
    # segment 2 clamped to the end, 3 (starts after the end) and 4 (ends before it starts) skipped,
    # 5 (a rounding past the end) kept as it is
    np.testing.assert_array_equal(record.clip_times, [[0.0, 1.5], [1.0, 3.0], [3.0, duration],
                                                      [4.0, duration + END_TOLERANCE_S / 2]])
    problems = {p["index"]: p for p in report.narration_problems}
    assert sorted(problems) == [2, 3, 4]
    assert "clamped to 5.25 s" in problems[2]["error"] and "segment skipped" in problems[3]["error"]
    assert "start=2.0 end=1.0" in problems[4]["error"]
    on_disk = json.loads((tmp_path / "store" / "failures.json").read_text())
    assert sorted(f["index"] for f in on_disk if f["stage"] == "narrations") == [2, 3, 4]
    assert all(f["file"] == str(tmp_path / "narrations.json") for f in on_disk)
