"""Action segmentation on the synthetic COIN files (tasks/segmentation.py, ActBERT 4.2.3)."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from helpers_planted_store import tiny_model as planted_tiny_model
from helpers_planted_store import write_planted_store
from actbert.data import readers
from actbert.data.store import FeatureStore
from actbert.tasks import segmentation as seg
from actbert.data.clips import ClipAssembler
from actbert.models.processing import Item, VideoRef, processor_for
from actbert.tasks.common import Benchmark, TaskError
from actbert.text.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def store(synth_tiny, tmp_path_factory):
    return write_planted_store(synth_tiny, tmp_path_factory.mktemp("segmentation") / "store")


@pytest.fixture(scope="module")
def assembler(store, tokenizer):
    return ClipAssembler(store, tokenizer)


@pytest.fixture(scope="module")
def new_model(store, tokenizer):
    return lambda seed=0: planted_tiny_model(store, tokenizer, seed)


class ScrambledRegions:
    """The same store with every region feature and location replaced by noise."""

    def __init__(self, store):
        self.store, self.root, self.schema = store, store.root, store.schema

    def video_ids(self):
        return self.store.video_ids()

    def __contains__(self, video_id):
        return video_id in self.store

    def __getitem__(self, video_id):
        feats = self.store[video_id]
        rng = np.random.default_rng(7)
        return dataclasses.replace(
            feats,
            region_features=rng.standard_normal(feats.region_features.shape).astype(np.float32),
            region_locations=rng.uniform(0, 1, feats.region_locations.shape).astype(np.float32),
        )


def test_labels_are_coin_steps_per_frame_with_background(synth_tiny, assembler):
    coin = readers.read_coin(Benchmark(synth_tiny).coin)
    labels = seg.label_space(coin)
    assert labels.names[0] == "background" and labels.step_ids[0] is None
    all_ids = {s.step_id for v in coin for s in v.steps}
    assert set(labels.step_ids[1:]) == all_ids and len(labels) == len(all_ids) + 1
    assert [int(i) for i in labels.step_ids[1:]] == sorted(int(i) for i in all_ids)  # numeric order, not "10" < "2"
    video = next(v for v in coin if v.subset == "testing")
    times = assembler.frame_times(video.video_id)
    got = seg.frame_labels(video, times, labels)
    # by hand: the step whose [start, end) holds the frame time, else background
    index = labels.index()
    for t, label in zip(times, got):
        inside = [s for s in video.steps if s.start <= t < s.end]
        assert label == (index[inside[0].step_id] if inside else 0)
    assert (got == 0).any() and (got > 0).any()


@pytest.mark.parametrize(
    "num, window, stride, expected",
    [(14, 10, 5, [0, 4]), (25, 10, 5, [0, 5, 10, 15]), (20, 10, 5, [0, 5, 10]), (6, 10, 5, [0]), (10, 10, 3, [0])],
)
def test_window_starts_cover_every_frame_and_end_at_the_end(num, window, stride, expected):
    starts = seg.window_starts(num, window, stride)
    assert starts == expected
    covered = np.zeros(num, bool)
    for s in starts:
        covered[s : s + window] = True
    assert covered.all() and starts[-1] + window >= num


def test_evaluate_needs_finetuned_head(synth_tiny, assembler, new_model):
    with pytest.raises(TaskError, match="finetune"):
        seg.evaluate(new_model(), assembler, Benchmark(synth_tiny), seg.SegmentationSettings())


def test_finetune_learns_and_evaluate_records_frame_accuracy(synth_tiny, assembler, new_model):
    bench = Benchmark(synth_tiny)
    untrained = seg.finetune(new_model(), assembler, bench, seg.SegmentationSettings(steps=0)).model
    before = seg.evaluate(untrained, assembler, bench, seg.SegmentationSettings(), variant="untrained")[0]

    model = new_model()
    settings = seg.SegmentationSettings(steps=60, lr=1e-3, head_lr=1e-2, window=6, stride=3)
    log = seg.finetune(model, assembler, bench, settings)
    assert np.mean(log.losses[-10:]) < 0.6 * np.mean(log.losses[:10])
    assert log.model.model is model and set(log.model.heads) == {seg.HEAD}  # the encoder + its new head
    record = seg.evaluate(log.model, assembler, bench, settings, variant="ft")[0]

    assert record["task"] == "segmentation" and record["dataset"] == "coin" and record["primary"] == "frame_accuracy"
    assert record["variant"] == "ft" and record["settings"]["window"] == 6
    testing = {v.video_id for v in readers.read_coin(bench.coin, subset="testing")}
    assert {v["video_id"] for v in record["videos"]} == testing  # the testing subset, every frame
    n_frames = sum(len(assembler.frame_times(v)) for v in testing)
    assert record["metrics"]["num_frames"] == n_frames
    # the metric is the share of frames whose prediction equals the COIN step annotated at the frame's time
    # (labels by hand from the annotation file: the step whose [start, end) holds the time, else background)
    labels = seg.label_space(readers.read_coin(bench.coin))
    index, by_id = labels.index(), {v.video_id: v for v in readers.read_coin(bench.coin, subset="testing")}
    hits = []
    for v in record["videos"]:
        steps = by_id[v["video_id"]].steps
        for t, p in zip(assembler.frame_times(v["video_id"]), v["predicted"]):
            inside = [st for st in steps if st.start <= t < st.end]
            hits.append(p == (index[inside[0].step_id] if inside else 0))
    assert len(hits) == n_frames
    assert record["metrics"]["frame_accuracy"] == pytest.approx(100 * np.mean(hits))
    # the planted features make the steps learnable: fine-tuning beats the random classifier clearly
    assert record["metrics"]["frame_accuracy"] >= before["metrics"]["frame_accuracy"] + 20


def test_overlapping_windows_are_averaged(synth_tiny, assembler, new_model):
    model = seg.finetune(new_model(), assembler, Benchmark(synth_tiny), seg.SegmentationSettings(steps=0)).model
    head = model.heads[seg.HEAD]
    video = "recipe0001"
    num = len(assembler.frame_times(video))
    settings = seg.SegmentationSettings(window=6, stride=2)
    probs = seg.predict_video(model, assembler, video, settings)
    assert probs.shape == (num, len(head.labels))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # by hand: run each window alone, average where windows overlap
    acc, hits = np.zeros_like(probs), np.zeros(num)
    one = dataclasses.replace(settings, stride=10**6)
    for s in seg.window_starts(num, 6, 2):
        frames = np.arange(s, s + 6)
        with torch.no_grad():
            batch = processor_for(model.model, assembler).batch([Item(VideoRef.of_frames(video, frames))])
            feats, valid = model.model.unit_states(batch)
            assert valid.all()
            acc[frames] += torch.softmax(head.linear(feats), -1)[0].numpy()  # eval mode: dropout is the identity
        hits[frames] += 1
    assert (hits > 1).any()
    np.testing.assert_allclose(probs, acc / hits[:, None], atol=1e-5)
    assert one.stride > num  # a single-window run covers only the first window + the end-aligned one
    assert seg.window_starts(num, 6, one.stride) == [0, num - 6]


def test_without_region_cues_ignores_regions(synth_tiny, store, tokenizer, new_model):
    bench = Benchmark(synth_tiny)
    plain, scrambled = ClipAssembler(store, tokenizer), ClipAssembler(ScrambledRegions(store), tokenizer)
    model = seg.finetune(new_model(), plain, bench, seg.SegmentationSettings(steps=0)).model
    for use_regions in (False, True):
        settings = seg.SegmentationSettings(use_regions=use_regions)
        a = seg.predict_video(model, plain, "recipe0001", settings)
        b = seg.predict_video(model, scrambled, "recipe0001", settings)
        if use_regions:
            assert not np.allclose(a, b, atol=1e-4)  # the full model does look at the regions
        else:
            np.testing.assert_array_equal(a, b)
    record = seg.evaluate(model, plain, bench, seg.SegmentationSettings(use_regions=False))[0]
    assert "without region cues" in record["notes"]


def test_missing_features_are_skipped_and_missing_file_is_named(synth_tiny, store, tokenizer, new_model, tmp_path):
    bench = Benchmark(synth_tiny)
    model = seg.finetune(new_model(), ClipAssembler(store, tokenizer), bench, seg.SegmentationSettings(steps=0)).model
    testing = [v.video_id for v in readers.read_coin(bench.coin, subset="testing")]
    partial = tmp_path / "store"
    shutil.copytree(store.root, partial)
    (partial / "videos" / f"{testing[0]}.safetensors").unlink()
    record = seg.evaluate(model, ClipAssembler(FeatureStore(partial), tokenizer), bench, seg.SegmentationSettings())[0]
    assert [s["video_id"] for s in record["skipped"]] == [testing[0]]
    assert [v["video_id"] for v in record["videos"]] == testing[1:]
    with pytest.raises(TaskError, match="COIN.json"):
        seg.evaluate(model, ClipAssembler(store, tokenizer), Benchmark(tmp_path), seg.SegmentationSettings())
