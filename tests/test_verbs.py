"""Verb mining from narrations, the action vocabulary and per-clip targets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from actbert.text.verbs import (
    ActionVocabulary,
    NarrationError,
    VerbMiner,
    VocabularyError,
    count_clip_verbs,
    read_narrations,
)


@pytest.fixture(scope="module")
def miner():
    return VerbMiner()


def test_lemmas_of_real_sentences(miner):
    assert miner.verbs("she was cutting onions and then added salt") == ["cut", "add"]
    assert miner.verbs("now we will add the flour and mix it") == ["add", "mix"]
    # auxiliaries, modals and discourse verbs are not actions
    assert miner.verbs("let's go ahead and whisk the eggs") == ["whisk"]
    assert miner.verbs("you have to pour the water") == ["pour"]
    assert miner.verbs("I can do it") == []
    # a verb repeated in one clip is listed once
    assert miner.verbs("stir, stir and stir again") == ["stir"]


def test_batched_mining_matches_single(miner):
    texts = ["Peel the potato.", "Then slice it and fry it", "that's all for today"]
    assert miner.verbs_many(texts) == [miner.verbs(t) for t in texts]
    assert miner.verbs_many(texts)[2] == []


def test_vocabulary_min_count_order_and_targets():
    clip_verbs = [["cut", "add"], ["cut"], ["cut", "cut"], ["add"], ["fry"]]
    counts = count_clip_verbs(clip_verbs)
    assert counts["cut"] == 3  # clip frequency, not token frequency
    vocab = ActionVocabulary.build(counts, min_count=2)
    assert vocab.verbs == ["cut", "add"] and "fry" not in vocab
    both = vocab.targets(["add", "cut", "fry"])
    assert both.dtype == np.float32 and both.shape == (2,)
    np.testing.assert_allclose(both, [0.5, 0.5])
    np.testing.assert_allclose(vocab.targets(["cut"]), [1.0, 0.0])
    assert vocab.targets(["fry"]).sum() == 0  # no in-vocabulary verb: all zero (clip left out)
    targets = vocab.targets_many(clip_verbs)
    assert targets.shape == (5, 2)
    np.testing.assert_allclose(targets.sum(1), [1, 1, 1, 1, 0])
    with pytest.raises(ValueError):
        ActionVocabulary.build(counts, min_count=0)


def test_vocabulary_save_load(tmp_path):
    vocab = ActionVocabulary.build({"cut": 4, "add": 4, "stir": 2, "fry": 1}, min_count=2)
    path = vocab.save(tmp_path / "action_vocab.json")
    data = json.loads(path.read_text())
    assert data["verbs"] == ["add", "cut", "stir"] and data["counts"] == [4, 4, 2] and data["min_count"] == 2
    again = ActionVocabulary.load(path)
    assert again == vocab and again.counts == vocab.counts and again.min_count == 2
    (tmp_path / "bad.json").write_text(json.dumps({"verbs": ["a", 3]}))
    with pytest.raises(VocabularyError, match="bad.json.*'verbs'"):
        ActionVocabulary.load(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(VocabularyError, match="broken.json"):
        ActionVocabulary.load(tmp_path / "broken.json")


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_read_narrations_skips_and_reports_bad_entries(tmp_path):
    path = _write(
        tmp_path / "narrations.json",
        {
            "good": {"start": [0, 4.5], "end": [4, 9], "text": ["cut the onion", "add salt"]},
            "blank": {"start": [0, 3], "end": [3, 6], "text": ["stir", "  "]},
            "ragged": {"start": [0], "end": [1, 2], "text": ["x"]},
            "empty": {"start": [], "end": [], "text": []},
        },
    )
    narrations = read_narrations(path)
    assert [(c.video_id, c.index) for c in narrations.clips] == [("good", 0), ("good", 1), ("blank", 0)]
    assert narrations.clips[1].center == pytest.approx(6.75)
    errors = {f["video_id"]: f["error"] for f in narrations.failures}
    assert set(errors) == {"blank", "ragged", "empty"}
    assert "narrations.json" in errors["ragged"] and "'ragged'" in errors["ragged"] and "lengths" in errors["ragged"]
    assert "'text'[1] is empty" in errors["blank"]
    only = read_narrations(path, video_ids=["good", "nope"])
    assert len(only.clips) == 2 and only.failures[0]["video_id"] == "nope"
    with pytest.raises(NarrationError, match=r"narrations.json: video 'blank': field 'text'\[1\] is empty"):
        read_narrations(path, strict=True)


@pytest.mark.parametrize(
    "entry, field",
    [
        ({"start": [0], "end": [1]}, "missing field 'text'"),
        ({"start": [0], "end": [1], "text": "cut"}, "'text' must be a list"),
        ({"start": ["zero"], "end": [1], "text": ["cut"]}, r"'start'\[0\] must be a finite number"),
        ({"start": [5], "end": [1], "text": ["cut"]}, "segment 0 has start=5 end=1"),
        ({"start": [0], "end": [1], "text": [7]}, r"'text'\[0\] must be a string"),
        ("cut", "expected an object"),
    ],
)
def test_malformed_entry_errors_name_file_video_and_field(tmp_path, entry, field):
    path = _write(tmp_path / "caption.json", {"vid7": entry})
    with pytest.raises(NarrationError, match=rf"caption.json: video 'vid7'.*{field}"):
        read_narrations(path, strict=True)


def test_mine_verbs_command(tmp_path, capsys):
    from actbert.cli import main

    narr = _write(
        tmp_path / "narrations.json",
        {
            "a": {"start": [0, 4, 8], "end": [4, 8, 12], "text": ["cut the onions", "now add salt and cut", "thanks for watching"]},
            "b": {"start": [0], "end": [5], "text": ["we are cutting the carrot"]},
            "c": {"start": [0], "end": [5], "text": ["fry the egg"]},
        },
    )
    _write(tmp_path / "splits.json", {"pretrain": ["a", "b"], "test": ["c"]})
    out = tmp_path / "action_vocab.json"
    assert main(["mine-verbs", "--narrations", str(narr), "--min-count", "2", "--out", str(out), "--videos-split", "pretrain"]) == 0
    vocab = ActionVocabulary.load(out)
    assert vocab.verbs == ["cut"] and vocab.counts["cut"] == 3  # "fry" is only in the test split
    printed = capsys.readouterr().out
    assert "1 verbs" in printed and "3/4 clips (75.0%)" in printed
