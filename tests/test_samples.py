"""Corpus, sample layout, truncation, collation and DataLoader determinism (random-feature corpus)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

from actbert.data.collate import ResumableDistributedSampler, make_loader
from actbert.models.actbert.processing import Collator
from actbert.data.corpus import Corpus, CorpusError, align_text_to_clips, load_narrations, nearest_frames
from actbert.data.masking import MaskingConfig
from actbert.data.random_features import RandomCorpusSpec, write_random_corpus
from actbert.data.samples import PretrainDataset, SampleBuilder, SpecialTokens, draw_sample, truncate_sentences
from actbert.data.store import FeatureStore
from actbert.text.tokenizer import load_tokenizer
from actbert.utils.io import atomic_write_json, read_json

torch.set_num_threads(1)
NO_MASKING = MaskingConfig(mlm_probability=0, action_mask_probability=0, region_mask_probability=0, negative_probability=0)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def random_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("random_corpus")
    spec = RandomCorpusSpec(num_videos=6, clips_per_video=12, action_dim=8, region_dim=12, num_actions=10,
                            num_region_classes=9, max_regions=4, seed=3)
    return write_random_corpus(root, spec)


@pytest.fixture(scope="module")
def corpus(random_corpus, tokenizer):
    store_dir, narrations = random_corpus
    # the layout tests below use one frame per clip (the centre frame); every frame of a clip, the
    # default: tests/test_regions_per_clip.py
    return Corpus(FeatureStore(store_dir), narrations, tokenizer, region_frames="nearest")


def test_corpus_aligns_each_clip_with_its_narration(corpus, random_corpus, tokenizer):
    narrations = read_json(random_corpus[1])
    video_id = corpus.video_ids[2]
    clips = corpus[video_id]
    assert clips.num_clips == 12
    for c in range(clips.num_clips):
        assert clips.tokens[c] == tokenizer.encode(narrations[video_id]["text"][c])
    # regions come from the frame nearest the clip centre: the random corpus puts the step's object first
    store = FeatureStore(random_corpus[0])
    feats = store[video_id]
    for c in range(clips.num_clips):
        frame = nearest_frames(feats.frame_times, clips.clip_times[c].mean(), 1)[0]
        n = int(feats.region_counts[frame])
        assert clips.region_valid[c].sum() == n
        np.testing.assert_array_equal(clips.region_features[c, :n], np.asarray(feats.region_features[frame, :n]))


def test_alignment_by_segment_centre():
    narration = load_narrations_from({"v": {"start": [0.0, 4.0, 5.0, 20.0], "end": [4.0, 5.0, 8.0, 21.0], "text": "a b c d".split()}})["v"]
    clip_times = np.array([[0.0, 4.5], [4.5, 9.0], [9.0, 12.0], [19.0, 22.0]])
    assert align_text_to_clips(clip_times, narration) == [[0], [1, 2], [], [3]]


def test_alignment_matches_the_rule_clip_by_clip_on_random_segments():
    # The rule of the module docstring, written here pair by pair: segments centred in [start, end)
    # in time order (start, then file order); none: the nearest centre (first in file order) if it
    # overlaps the clip. Ties, equal starts, empty and inverted clips and NaN clip ends all occur.
    from actbert.data.corpus import Narration

    def by_rule(clip, start, end):
        centres = [(s + e) / 2 for s, e in zip(start, end)]
        inside = sorted((i for i, m in enumerate(centres) if clip[0] <= m < clip[1]), key=lambda i: (start[i], i))
        if not inside and centres:
            mid = (clip[0] + clip[1]) / 2
            distance = [abs(m - mid) for m in centres]
            nearest = distance.index(min(distance)) if not np.isnan(mid) else 0
            if start[nearest] < clip[1] and end[nearest] > clip[0]:
                inside = [nearest]
        return inside

    rng = np.random.default_rng(7)
    for trial in range(200):
        segments = int(rng.integers(0, 12))
        start = rng.integers(0, 30, segments).astype(np.float64)  # whole seconds: many ties
        end = start + rng.integers(0, 6, segments)
        clips = np.sort(rng.integers(0, 36, (int(rng.integers(1, 10)), 2)), axis=1).astype(np.float64)
        if trial % 5 == 0:
            clips[0] = clips[0, ::-1] + [1.0, 0.0]  # inverted
        if trial % 7 == 0:
            clips[-1, 1] = np.nan
        narration = Narration(start, end, ["x"] * segments)
        got = align_text_to_clips(clips, narration)
        want = [by_rule(clip.tolist(), start.tolist(), end.tolist()) for clip in clips]
        assert got == want, (trial, clips, start, end)


def load_narrations_from(data, tmp=None):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "narrations.json"
    atomic_write_json(path, data)
    return load_narrations(path)


def test_bad_narrations_and_missing_videos_name_file_and_video(corpus, random_corpus, tokenizer, tmp_path):
    store = FeatureStore(random_corpus[0])
    bad = tmp_path / "narrations.json"
    atomic_write_json(bad, {"v": {"start": [0, 1], "end": [1], "text": ["a", "b"]}})
    loaded = load_narrations(bad)  # a malformed entry drops its video, reported, not the whole file
    assert "v" not in loaded and len(loaded.problems) == 1
    assert re.search(r"narrations\.json.*'v'.*different lengths", loaded.problems[0]["error"])
    narrations = read_json(random_corpus[1])
    del narrations[corpus.video_ids[0]]
    partial = tmp_path / "partial.json"
    atomic_write_json(partial, narrations)
    c = Corpus(store, partial, tokenizer, video_ids=corpus.video_ids + ["nosuchvideo"])
    with pytest.raises(CorpusError, match=r"partial\.json.*has no narration"):
        c[corpus.video_ids[0]]
    with pytest.raises(CorpusError, match=str(random_corpus[0]) + r".*'nosuchvideo'.*not in the feature store"):
        c["nosuchvideo"]
    good, failures = c.check()  # batch building skips and reports them
    assert good == corpus.video_ids[1:]
    assert [f["video_id"] for f in failures] == [corpus.video_ids[0], "nosuchvideo"]


def test_truncation_trims_longest_sentence_first_and_keeps_one_piece():
    assert truncate_sentences([10, 2, 5], 9) == [4, 2, 3]
    assert truncate_sentences([3, 4], 20) == [3, 4]
    assert truncate_sentences([5, 0, 5], 2) == [1, 0, 1]
    with pytest.raises(ValueError):
        truncate_sentences([5, 5], 1)


def test_sample_layout(corpus, tokenizer):
    sp = SpecialTokens.from_tokenizer(tokenizer)
    builder = SampleBuilder(corpus, sp, clips_per_sample=5, max_text_len=200)
    clips = corpus[corpus.video_ids[0]]
    s = builder.build(clips, start=3, size=5)
    n = 5
    # text: [CLS] s1 [SEP] ... s5 [SEP], segment = clip index, positions running
    expected = [sp.cls_id]
    for c in range(3, 8):
        expected += clips.tokens[c] + [sp.sep_id]
    assert s.input_ids.tolist() == expected
    assert s.text_position_ids.tolist() == list(range(len(expected)))
    sep_at = np.nonzero(s.input_ids == sp.sep_id)[0]
    assert len(sep_at) == n and s.text_special.sum() == n + 1
    assert s.text_segment_ids[0] == 0 and s.text_segment_ids[sep_at].tolist() == list(range(n))
    assert np.all(np.diff(s.text_segment_ids) >= 0)
    # actions: [ACT] x n, [SEP]; features of clips 3..7, zero at [SEP]
    assert s.action_token_ids.tolist() == [sp.act_id] * n + [sp.sep_id]
    assert s.action_segment_ids.tolist() == [0, 1, 2, 3, 4, 4] and s.action_position_ids.tolist() == list(range(n + 1))
    np.testing.assert_array_equal(s.action_features[:n], clips.action_features[3:8])
    assert not s.action_features[n].any()
    # regions: each clip's valid regions then [SEP]; segment and position = clip index (1 frame per clip)
    counts = clips.region_valid[3:8].sum(axis=1)
    assert len(s.region_token_ids) == counts.sum() + n
    assert (s.region_token_ids == sp.sep_id).sum() == n
    expected_seg = np.concatenate([[i] * (k + 1) for i, k in enumerate(counts)])
    assert s.region_segment_ids.tolist() == expected_seg.tolist() == s.region_position_ids.tolist()
    assert not s.region_features[s.region_token_ids == sp.sep_id].any()
    real = s.region_token_ids == sp.region_id
    np.testing.assert_allclose(s.region_targets[real].sum(axis=1), 1.0, atol=1e-5)
    assert s.match_label == 1.0 and s.text_video_id == s.video_id


def test_text_truncation_in_samples(corpus, tokenizer):
    sp = SpecialTokens.from_tokenizer(tokenizer)
    builder = SampleBuilder(corpus, sp, clips_per_sample=10, max_text_len=30)
    s = builder.build(corpus[corpus.video_ids[1]], 0, 10)
    assert len(s.input_ids) == 30
    words_per_clip = np.bincount(s.text_segment_ids[~s.text_special], minlength=10)
    assert words_per_clip.min() >= 1
    with pytest.raises(ValueError, match="max_text_len"):
        SampleBuilder(corpus, sp, clips_per_sample=10, max_text_len=20)


def test_negatives_take_text_from_another_video(corpus, tokenizer):
    sp = SpecialTokens.from_tokenizer(tokenizer)
    ds = PretrainDataset(corpus, SampleBuilder(corpus, sp, 10, 96), MaskingConfig(negative_probability=1.0), seed=1)
    for i in range(len(ds)):
        s = ds[i]
        assert s.match_label == 0.0 and s.text_video_id != s.video_id
    with pytest.raises(CorpusError, match="at least 2 videos"):
        PretrainDataset(corpus, SampleBuilder(corpus, sp, 10, 96), MaskingConfig(), video_ids=corpus.video_ids[:1])


class _EveryRowsTargets(SampleBuilder):
    """The builder as it was: every region row's class distribution read before masking, none zeroed."""

    def build(self, clips, start, size, text_from=None, region_targets=True):
        return super().build(clips, start, size, text_from, region_targets=True)

    def masked_region_targets(self, sample, clips, start, size):
        return sample


@pytest.mark.parametrize("frames", ["nearest", "all"])
def test_pretraining_samples_read_class_distributions_at_masked_regions_only(random_corpus, tokenizer, frames):
    """draw_sample reads the detector's class distributions after masking, at the masked rows: the same
    sample as reading every row before masking, with the other rows' targets zero (no loss reads them)."""
    store_dir, narrations = random_corpus
    corpus = Corpus(FeatureStore(store_dir), narrations, tokenizer, region_frames=frames)
    sp = SpecialTokens.from_tokenizer(tokenizer)
    masking = MaskingConfig(region_mask_probability=0.4, negative_probability=0.5)
    ids = corpus.video_ids
    text_of = lambda j: corpus[ids[j]]  # noqa: E731
    masked_rows = unmasked_rows = 0
    for i in range(10):
        clips = corpus[ids[i % len(ids)]]
        args = (masking, np.random.default_rng([7, i]), clips, i % len(ids), len(ids), text_of)
        got = draw_sample(SampleBuilder(corpus, sp, 5, 96), *args)
        args = (masking, np.random.default_rng([7, i]), clips, i % len(ids), len(ids), text_of)
        ref = draw_sample(_EveryRowsTargets(corpus, sp, 5, 96), *args)
        for f in dataclasses.fields(got):
            if f.name != "region_targets":
                assert np.array_equal(getattr(got, f.name), getattr(ref, f.name)), (i, f.name)
        mask = got.region_target_mask
        real = got.region_token_ids == sp.region_id
        np.testing.assert_array_equal(got.region_targets[mask], ref.region_targets[mask])
        np.testing.assert_allclose(ref.region_targets[mask].sum(axis=1), 1.0, atol=1e-5)
        assert not got.region_targets[~mask].any() and got.region_targets.dtype == np.float32
        masked_rows += int(mask.sum())
        unmasked_rows += int((real & ~mask).sum())
    assert masked_rows > 0 and unmasked_rows > 0


class _ShortenedVideos:
    """The corpus, with some videos cut to their first ``keep`` clips (videos of unequal length)."""

    def __init__(self, corpus, short_ids, keep):
        self._corpus, self._short, self._keep = corpus, set(short_ids), keep

    def __getattr__(self, name):
        return getattr(self._corpus, name)

    def __getitem__(self, video_id):
        clips = self._corpus[video_id]
        if video_id not in self._short:
            return clips
        k = self._keep
        per_clip = ("clip_times", "action_features", "action_targets", "region_features", "region_locations",
                    "region_class_probs", "region_valid", "region_frame")
        return dataclasses.replace(clips, tokens=clips.tokens[:k], **{f: getattr(clips, f)[:k] for f in per_clip})


def test_negatives_have_as_many_sentences_as_clips(corpus, tokenizer):
    """A negative from a shorter video must not be recognisable by counting sentences."""
    sp = SpecialTokens.from_tokenizer(tokenizer)
    mixed = _ShortenedVideos(corpus, corpus.video_ids[::2], keep=3)
    ds = PretrainDataset(mixed, SampleBuilder(mixed, sp, 10, 200), MaskingConfig(negative_probability=0.5), seed=4,
                         samples_per_video=8)
    shapes = {0.0: set(), 1.0: set()}
    for i in range(len(ds)):
        s = ds[i]
        sentences = int((s.input_ids == sp.sep_id).sum())
        actions = int((s.action_token_ids == sp.act_id).sum())
        assert sentences == actions, (i, s.match_label, sentences, actions)
        shapes[s.match_label].add(actions)
    assert shapes[0.0] == shapes[1.0] == {3, 10}  # both labels come in both lengths


def test_collate_pads_to_batch_max_or_fixed(corpus, tokenizer):
    sp = SpecialTokens.from_tokenizer(tokenizer)
    ds = PretrainDataset(corpus, SampleBuilder(corpus, sp, 10, 96), MaskingConfig(), seed=0, samples_per_video=2)
    samples = [ds[i] for i in range(4)]
    batch = Collator(sp.pad_id)(samples)
    lt = max(len(s.input_ids) for s in samples)
    lr = max(len(s.region_token_ids) for s in samples)
    assert batch.input_ids.shape == (4, lt) and batch.region_features.shape == (4, lr, 12)
    assert batch.action_targets.shape == (4, 11, 10) and batch.region_targets.shape == (4, lr, 9)
    for i, s in enumerate(samples):
        assert batch.text_mask[i].sum() == len(s.input_ids)
        assert (batch.input_ids[i, len(s.input_ids):] == sp.pad_id).all()
        assert (batch.mlm_labels[i, len(s.input_ids):] == -100).all()
        assert not batch.region_target_mask[i, len(s.region_token_ids):].any()
        assert torch.equal(batch.region_features[i, : len(s.region_token_ids)], torch.from_numpy(s.region_features))
    assert batch.match_labels.tolist() == [s.match_label for s in samples]
    fixed = Collator(sp.pad_id, pad_to=(96, 11, 50))(samples)
    assert fixed.input_ids.shape == (4, 96) and fixed.region_token_ids.shape == (4, 50)
    with pytest.raises(ValueError, match="does not fit"):
        Collator(sp.pad_id, pad_to=(10, 11, 50))(samples)


def _batches(ds, workers, epoch, start=0):
    ds.set_epoch(epoch)
    sampler = ResumableDistributedSampler(ds, 1, 0, shuffle=True, seed=5)
    sampler.set_epoch(epoch)
    sampler.set_start(start)
    loader = make_loader(ds, 3, Collator(0), sampler, num_workers=workers, seed=5)
    return list(loader)


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(_tensors(a), _tensors(b))) and a.video_ids == b.video_ids


def _tensors(batch):
    return [v for v in vars(batch).values() if isinstance(v, torch.Tensor)]


def test_dataloader_is_deterministic_across_workers_and_resume(corpus, tokenizer):
    sp = SpecialTokens.from_tokenizer(tokenizer)
    ds = PretrainDataset(corpus, SampleBuilder(corpus, sp, 10, 96), MaskingConfig(), seed=11, samples_per_video=2)
    two_workers_a = _batches(ds, 2, epoch=1)
    two_workers_b = _batches(ds, 2, epoch=1)
    in_process = _batches(ds, 0, epoch=1)
    assert len(two_workers_a) == 4
    assert all(_same(a, b) for a, b in zip(two_workers_a, two_workers_b))
    assert all(_same(a, b) for a, b in zip(two_workers_a, in_process))
    # resuming after two batches yields the remaining ones exactly
    resumed = _batches(ds, 0, epoch=1, start=6)
    assert all(_same(a, b) for a, b in zip(in_process[2:], resumed)) and len(resumed) == 2
    # another epoch draws other windows / masks / order
    other = _batches(ds, 0, epoch=2)
    assert not all(_same(a, b) for a, b in zip(in_process, other))


def test_random_corpus_scene_keeps_the_videos_own_objects(random_corpus):
    """Every region of a video shows one of the video's steps_per_video objects (so a masked region is
    predictable from context), and the first region of each frame is the object its narration names."""
    store_dir, narrations_path = random_corpus
    store, narrations = FeatureStore(store_dir), read_json(narrations_path)
    objects = store.schema.region_classes
    for video_id in store.video_ids():
        video = store[video_id]
        valid = np.arange(video.region_class_probs.shape[1])[None, :] < np.asarray(video.region_counts)[:, None]
        shown = np.asarray(video.region_class_probs).argmax(-1)[valid]
        assert len(set(shown.tolist())) <= RandomCorpusSpec().steps_per_video
        ends = np.asarray(video.clip_times)[:, 1]
        first = np.asarray(video.region_class_probs)[:, 0].argmax(-1)
        for t, label in zip(np.asarray(video.frame_times), first):
            clip = min(int(np.searchsorted(ends, t, side="right")), len(ends) - 1)
            assert narrations[video_id]["text"][clip].endswith(objects[label]) or f" {objects[label]} " in narrations[video_id]["text"][clip]


def _poison(store_dir, video_id, field, index):
    """Rewrite one record of a store with NaN at ``field[index]`` (the store's writer refuses NaN, so
    this is the damage a file can take after extraction)."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    path = FeatureStore(store_dir).path_for(video_id)
    with safe_open(str(path), "np") as f:
        arrays, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    arrays[field] = arrays[field].copy()
    arrays[field][index] = np.nan
    save_file(arrays, str(path), metadata=meta)


@pytest.mark.parametrize("field", ["action_features", "action_targets"])
def test_nan_in_a_videos_actions_is_named_by_check_and_by_the_sample_that_reads_it(random_corpus, tokenizer, tmp_path,
                                                                                    field):
    import shutil

    store_dir, narrations = random_corpus
    poisoned = tmp_path / "store"
    shutil.copytree(store_dir, poisoned)
    corpus = Corpus(FeatureStore(poisoned), narrations, tokenizer)
    bad = corpus.video_ids[2]
    _poison(poisoned, bad, field, (4, 0))
    good, failures = corpus.check()
    assert bad not in good and len(good) == len(corpus.video_ids) - 1
    (failure,) = [f for f in failures if f["video_id"] == bad]
    assert str(poisoned) in failure["error"] and f"field {field!r} contains NaN" in failure["error"]
    # a sample reads its window's rows: the window over clip 4 names the record and the field; others build
    builder = SampleBuilder(corpus, SpecialTokens.from_tokenizer(tokenizer), 3, 96)
    clips = corpus[bad]
    with pytest.raises(CorpusError, match=rf"{re.escape(str(poisoned))}: video '{bad}': field '{field}' contains NaN"):
        builder.build(clips, 3, 3)
    assert np.isfinite(builder.build(clips, 5, 3).action_features).all()


@pytest.mark.parametrize("field", ["action_features", "region_features"])
def test_nan_in_a_record_is_named_by_the_tasks_clip_assembler(random_corpus, tokenizer, tmp_path, field):
    """The downstream tasks read whole videos through ClipAssembler: the same damage is its error,
    naming the store, the video and the field; the other videos still load."""
    import shutil

    from actbert.data.clips import ClipAssembler, ClipsError

    store_dir, _ = random_corpus
    poisoned = tmp_path / "store"
    shutil.copytree(store_dir, poisoned)
    store = FeatureStore(poisoned)
    bad, good = sorted(store.video_ids())[:2]
    _poison(poisoned, bad, field, (1, 0))
    assembler = ClipAssembler(store, tokenizer)
    with pytest.raises(ClipsError, match=rf"video '{bad}': field '{field}' contains NaN or infinity"):
        assembler.video(bad)
    assert np.isfinite(assembler.video(good).region_features).all()
