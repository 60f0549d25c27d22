"""Issue 2 end to end through the real CLI: synth -> mine-verbs -> train-action-encoder ->
train-object-classifier -> extract (two shards, given boxes) -> feature store; reruns skip finished
videos; corrupt and zero-length videos are reported while the rest is extracted.

Tiny settings throughout (4-frame 32 px clips, a few optimiser steps) so the module runs in well
under a minute on one thread. One module-scoped chain of fixtures runs each command once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from actbert.cli import main
from actbert.data.store import FeatureStore
from actbert.text.verbs import ActionVocabulary, VerbMiner, count_clip_verbs, read_narrations
from actbert.video.action_encoder import load_action_encoder
from actbert.video.object_classifier import load_object_classifier

torch.set_num_threads(1)

MIN_COUNT = 3
CLIP = ["--num-frames", "4", "--fps", "4", "--clip-size", "32"]
# one narration segment that names two actions: its target must be split 1/2 : 1/2
TWO_VERB_TEXT = "so we roll the carrot and then pour it"
BAD_VIDEOS = {"aaa_zero_length": b"", "zzz_corrupt": b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000)}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pipeline")


@pytest.fixture(scope="module")
def data(work) -> Path:
    root = work / "data"
    assert main(["synth", "--size", "tiny", "--seed", "0", "--out", str(root)]) == 0
    # a narrator who names two actions in one breath, in a pretraining video
    narrations = json.loads((root / "narrations.json").read_text())
    video_id = json.loads((root / "splits.json").read_text())["pretrain"][0]
    narrations[video_id]["text"][0] = TWO_VERB_TEXT
    (root / "narrations.json").write_text(json.dumps(narrations))
    # two broken files among the real videos
    for name, payload in BAD_VIDEOS.items():
        (root / "videos" / f"{name}.mp4").write_bytes(payload)
    return root


@pytest.fixture(scope="module")
def pretrain_clips(data):
    """Pretraining clips and their spaCy verbs, computed here independently of the commands."""
    pretrain = json.loads((data / "splits.json").read_text())["pretrain"]
    narrations = read_narrations(data / "narrations.json", video_ids=pretrain)
    return narrations.clips, VerbMiner().verbs_many([c.text for c in narrations.clips])


@pytest.fixture(scope="module")
def vocab_path(work, data) -> Path:
    out = work / "action_vocab.json"
    assert main(["mine-verbs", "--narrations", str(data / "narrations.json"), "--min-count", str(MIN_COUNT),
                 "--videos-split", "pretrain", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def encoder_dir(work, data, vocab_path) -> Path:
    out = work / "action_encoder"
    assert main(["train-action-encoder", "--data", str(data), "--out", str(out), "--arch", "narrow",
                 "--vocab", str(vocab_path), *CLIP, "--epochs", "1", "--max-steps", "3", "--batch-size", "8",
                 "--threads", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def classifier_path(work, data) -> Path:
    out = work / "objects.safetensors"
    assert main(["train-object-classifier", "--data", str(data), "--out", str(out), "--epochs", "1",
                 "--batch-size", "64", "--crop-size", "16", "--embed-dim", "24"]) == 0
    return out


def _extract(data, store, encoder_dir, classifier_path, *extra) -> int:
    return main(["extract", "--data", str(data), "--store", str(store), "--action-encoder", str(encoder_dir),
                 "--regions", "given", "--object-classifier", str(classifier_path), *extra])


@pytest.fixture(scope="module")
def store_root(work, data, encoder_dir, classifier_path) -> Path:
    from actbert.video.extract import list_videos, shard_ids

    store = work / "store"
    for i, shard in enumerate(("0/2", "1/2")):
        bad_here = set(shard_ids(list_videos(data / "videos"), i, 2)) & set(BAD_VIDEOS)
        # a shard with a bad video stores the rest and exits 1, so scripts can tell
        assert _extract(data, store, encoder_dir, classifier_path, "--shard", shard, "--dtype", "float16") == (1 if bad_here else 0)
    return store


def _good_videos(data: Path) -> list[str]:
    return sorted(p.stem for p in (data / "videos").glob("*.mp4") if p.stem not in BAD_VIDEOS)


# ---------------------------------------------------------------------------------------------


def test_mine_verbs_vocabulary(vocab_path, pretrain_clips, data):
    vocab = ActionVocabulary.load(vocab_path)
    clips, verbs = pretrain_clips
    counts = count_clip_verbs(verbs)
    expected = sorted((v for v, c in counts.items() if c >= MIN_COUNT), key=lambda v: (-counts[v], v))
    assert vocab.verbs == expected
    assert vocab.min_count == MIN_COUNT
    assert all(vocab.counts[v] >= MIN_COUNT for v in vocab.verbs)
    assert any(0 < c < MIN_COUNT for c in counts.values()), "min count must have dropped some verb"
    # every real action of the world that is narrated often enough made it in, chatter too
    assert {"roll", "pour"} <= set(vocab.verbs)
    # the two-verb segment was mined as such
    assert [v for v in verbs[0] if v in vocab] == ["roll", "pour"] and clips[0].text == TWO_VERB_TEXT


def test_train_action_encoder_report(encoder_dir, vocab_path, pretrain_clips, data):
    report = json.loads((encoder_dir / "eval.json").read_text())
    vocab = ActionVocabulary.load(vocab_path)
    _, verbs = pretrain_clips
    with_verb = sum(1 for vs in verbs if any(v in vocab for v in vs))
    assert 0 < with_verb < len(verbs)
    # clips without an in-vocabulary verb are left out of training
    assert report["train_clips"] == with_verb
    splits = json.loads((data / "splits.json").read_text())
    assert "pretrain vs val+test" in report["split"]
    assert 0 < report["eval_videos"] <= len(set(splits["val"]) | set(splits["test"]))
    # (the accuracy itself: test_action_encoder.py::test_evaluate_action_predictions_hand_computed, by hand)
    assert report["chance_uniform"] == pytest.approx(1 / len(vocab))
    assert report["history"][-1]["step"] == 3 and np.isfinite(report["history"][-1]["loss"])
    assert (encoder_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    encoder = load_action_encoder(encoder_dir)
    assert encoder.vocab == vocab and (encoder.num_frames, encoder.clip_size, encoder.feature_dim) == (4, 32, 128)


def test_object_classifier_file(classifier_path, data):
    model = load_object_classifier(classifier_path)
    meta = json.loads((data / "meta.json").read_text())
    assert model.config.class_names == meta["objects"]
    assert model.feature_dim == 24 and model.config.crop_size == 16


def test_sharded_extraction_fills_the_store(store_root, data, encoder_dir, classifier_path, vocab_path):
    store = FeatureStore(store_root)
    good = _good_videos(data)
    assert store.video_ids() == good
    schema = store.schema
    vocab = ActionVocabulary.load(vocab_path)
    assert (schema.dtype, schema.action_dim, schema.region_dim, schema.max_regions) == ("float16", 128, 24, 5)
    assert schema.action_vocab == vocab.verbs
    assert schema.region_classes == json.loads((data / "meta.json").read_text())["objects"]

    narrations = json.loads((data / "narrations.json").read_text())
    objects = json.loads((data / "objects.json").read_text())
    truth = json.loads((data / "ground_truth.json").read_text())
    two_verb_rows = 0
    for video_id in good:
        f = store[video_id]
        n_frames = int(np.ceil(truth[video_id]["duration"]))
        n_clips = len(narrations[video_id]["text"])
        assert f.clip_times.shape == (n_clips, 2)
        np.testing.assert_allclose(f.clip_times[:, 0], narrations[video_id]["start"])
        np.testing.assert_allclose(f.clip_times[:, 1], narrations[video_id]["end"])
        assert f.action_features.shape == (n_clips, 128) and f.action_features.dtype == np.float16
        assert np.isfinite(f.action_features.astype(np.float32)).all()
        assert f.action_targets.shape == (n_clips, len(vocab)) and f.action_targets.dtype == np.float32
        sums = f.action_targets.sum(1)
        assert np.all(np.isclose(sums, 1.0) | (sums == 0))
        for row in f.action_targets:  # L1-normalised: every positive entry is 1 / (number of verbs)
            positive = row[row > 0]
            np.testing.assert_allclose(positive, 1.0 / max(len(positive), 1), rtol=1e-6)
            two_verb_rows += len(positive) == 2
        np.testing.assert_array_equal(f.frame_times, np.arange(n_frames, dtype=np.float64))
        assert f.region_features.shape == (n_frames, 5, 24) and f.region_features.dtype == np.float16
        assert f.region_boxes.shape == (n_frames, 5, 4)
        assert f.region_locations.shape == (n_frames, 5, 5)
        assert f.region_class_probs.shape == (n_frames, 5, 16)
        expected_counts = [min(len(entry["boxes"]), 5) for entry in objects[video_id]]
        np.testing.assert_array_equal(f.region_counts, expected_counts)
        for frame, count in enumerate(f.region_counts):
            np.testing.assert_allclose(f.region_class_probs[frame, :count].sum(-1), 1.0, rtol=1e-4)
            assert not f.region_class_probs[frame, count:].any() and not f.region_boxes[frame, count:].any()
    assert two_verb_rows >= 1


def test_float16_store_matches_float32(store_root, work, data, encoder_dir, classifier_path):
    few = work / "few_videos"
    few.mkdir()
    picked = _good_videos(data)[:2]
    for video_id in picked:
        (few / f"{video_id}.mp4").symlink_to(data / "videos" / f"{video_id}.mp4")
    store32 = work / "store32"
    assert _extract(data, store32, encoder_dir, classifier_path, "--videos", str(few)) == 0
    full, half = FeatureStore(store32), FeatureStore(store_root)
    assert full.schema.dtype == "float32" and full.video_ids() == picked
    for video_id in picked:
        a, b = full[video_id], half[video_id]
        assert a.action_features.dtype == np.float32
        np.testing.assert_allclose(b.action_features.astype(np.float32), a.action_features, rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(b.region_features.astype(np.float32), a.region_features, rtol=2e-3, atol=2e-3)
        np.testing.assert_array_equal(b.region_boxes, a.region_boxes)
        np.testing.assert_array_equal(b.action_targets, a.action_targets)
    # the store is 16-bit on disk: the same video takes less space
    assert half.path_for(picked[0]).stat().st_size < full.path_for(picked[0]).stat().st_size


def test_bad_videos_are_reported_and_reruns_skip_done_work(store_root, data, encoder_dir, classifier_path, capsys):
    failures = json.loads((store_root / "failures.json").read_text())
    assert sorted(f["video_id"] for f in failures) == sorted(BAD_VIDEOS)
    for entry in failures:
        assert entry["stage"] == "extract"
        assert entry["file"].endswith(f"{entry['video_id']}.mp4")
        assert "VideoDecodeError" in entry["error"] and entry["video_id"] in entry["error"]

    records = {p.name: p.stat().st_mtime_ns for p in (store_root / "videos").iterdir()}
    capsys.readouterr()
    assert _extract(data, store_root, encoder_dir, classifier_path, "--shard", "0/1", "--dtype", "float16") == 1
    out = capsys.readouterr()
    summary = out.out
    good = _good_videos(data)
    assert f"{len(good)} already done" in summary and "0 written" in summary and "2 failed" in summary
    assert f"actbert extract: 2 of {len(good) + 2} video(s) failed; see {store_root / 'failures.json'}" in out.err
    assert {p.name: p.stat().st_mtime_ns for p in (store_root / "videos").iterdir()} == records
    # the bad files are reported once each, not once per run
    again = json.loads((store_root / "failures.json").read_text())
    assert sorted(f["video_id"] for f in again) == sorted(BAD_VIDEOS)

    # a store of another dtype is refused rather than mixed
    assert _extract(data, store_root, encoder_dir, classifier_path, "--dtype", "float32") == 1
    err = capsys.readouterr().err
    assert err.startswith("actbert extract: ") and "dtype" in err and len(err.strip().splitlines()) == 1
