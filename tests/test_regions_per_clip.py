"""Regions per clip (paper 4.1: regions at 1 FPS over the clip): every frame of a clip by default,
a cap per clip, and the centre frame alone one setting away. Expected values from the store's own
arrays and the clip times, selected by hand here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actbert.config import ConfigError
from actbert.data.corpus import Corpus, CorpusError, clip_frames, region_rows
from actbert.data.masking import MaskingConfig
from actbert.data.random_features import RandomCorpusSpec, write_random_corpus
from actbert.data.samples import SampleBuilder, SpecialTokens
from actbert.data.store import FeatureStore
from actbert.text.tokenizer import load_tokenizer
from actbert.train.config import load_pretrain_config

torch.set_num_threads(1)
RPF = 3  # regions kept per frame in these tests (the store holds up to 4)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    spec = RandomCorpusSpec(num_videos=3, clips_per_video=6, action_dim=8, region_dim=6, num_actions=5,
                            num_region_classes=7, max_regions=4, seed=11)
    store_dir, narrations = write_random_corpus(tmp_path_factory.mktemp("regions_per_clip"), spec)
    return FeatureStore(store_dir), narrations


def expected_regions(feats, frames: list[int], cap: int) -> np.ndarray:
    """The store's region features of ``frames``, at most RPF per frame, at most ``cap`` in all."""
    rows = []
    for f in frames:
        n = min(int(feats.region_counts[f]), RPF)
        rows.extend(np.asarray(feats.region_features[f, :n]))
    rows = rows[:cap] if cap else rows
    return np.asarray(rows, np.float32).reshape(-1, np.asarray(feats.region_features).shape[-1])


def test_clip_frames_by_hand():
    times = np.arange(0.0, 12.0)  # frames at 0, 1, ..., 11 s
    assert clip_frames(times, 3.0, 7.0).tolist() == [3, 4, 5, 6]  # [start, end)
    assert clip_frames(times, 3.2, 3.9).tolist() == [4]  # no frame inside: the nearest to the centre 3.55
    assert clip_frames(times, 3.0, 7.0, "nearest", 1).tolist() == [5]  # centre 5.0
    assert clip_frames(times, 3.0, 7.0, "nearest", 2).tolist() == [4, 5]  # 5, then 4 (tie 4 / 6: the earlier)
    assert clip_frames(times, 0.0, 11.0, max_frames=3).tolist() == [0, 5, 10]  # first, middle, last
    assert clip_frames(times, 0.0, 12.0, max_frames=4).tolist() == [0, 4, 7, 11]


def test_every_frame_of_the_clip_by_default(store, tokenizer):
    fs, narrations = store
    corpus = Corpus(fs, narrations, tokenizer, max_regions_per_frame=RPF)
    assert corpus.region_frames == "all"
    video = corpus.video_ids[1]
    clips, feats = corpus[video], fs[video]
    times = np.asarray(feats.frame_times)
    for c, (start, end) in enumerate(clips.clip_times):
        frames = [int(f) for f in np.nonzero((times >= start) & (times < end))[0]]
        assert len(frames) >= 3  # the random corpus' clips last 3-6 s
        want = expected_regions(feats, frames, 0)
        got = clips.region_features[c][clips.region_valid[c]]
        np.testing.assert_array_equal(got, want)
        assert clips.frame_slots[c] == len(frames)
        # frame slot of each region: 0, 0, 0, 1, 1, ... as the frames come
        slot = [j for j, f in enumerate(frames) for _ in range(min(int(feats.region_counts[f]), RPF))]
        assert clips.region_frame[c][clips.region_valid[c]].tolist() == slot


def test_cap_thins_frames_evenly_and_centre_frame_is_one_setting_away(store, tokenizer):
    fs, narrations = store
    capped = Corpus(fs, narrations, tokenizer, max_regions_per_frame=RPF, max_regions_per_clip=5)
    assert capped.regions_per_clip == 5 and capped.max_frames_per_clip == 2  # ceil(5 / 3)
    video = capped.video_ids[0]
    clips, feats = capped[video], fs[video]
    times = np.asarray(feats.frame_times)
    for c, (start, end) in enumerate(clips.clip_times):
        inside = [int(f) for f in np.nonzero((times >= start) & (times < end))[0]]
        frames = [inside[0], inside[-1]]  # two frames kept: the first and the last of the clip
        np.testing.assert_array_equal(clips.region_features[c][clips.region_valid[c]], expected_regions(feats, frames, 5))
        assert clips.region_valid[c].sum() <= 5

    centre = Corpus(fs, narrations, tokenizer, max_regions_per_frame=RPF, region_frames="nearest")
    assert centre.regions_per_clip == RPF
    clips = centre[video]
    assert clips.frame_slots is None
    for c, (start, end) in enumerate(clips.clip_times):
        frame = int(np.argmin(np.abs(times - (start + end) / 2)))
        np.testing.assert_array_equal(clips.region_features[c][clips.region_valid[c]], expected_regions(feats, [frame], 0))

    with pytest.raises(CorpusError, match="max_regions_per_clip"):
        Corpus(fs, narrations, tokenizer).regions_per_clip  # every frame, no cap: no fixed width
    with pytest.raises(CorpusError, match="region_frames"):
        Corpus(fs, narrations, tokenizer, region_frames="centre")


def test_region_positions_number_the_windows_frames_in_time_order(store, tokenizer):
    fs, narrations = store
    corpus = Corpus(fs, narrations, tokenizer, max_regions_per_frame=RPF)
    builder = SampleBuilder(corpus, SpecialTokens.from_tokenizer(tokenizer), clips_per_sample=3, max_text_len=96)
    video = corpus.video_ids[2]
    clips, feats = corpus[video], fs[video]
    times = np.asarray(feats.frame_times)
    sample = builder.build(clips, 1, 3)
    want_pos, want_seg, frame_number = [], [], 0
    for i, c in enumerate(range(1, 4)):
        start, end = clips.clip_times[c]
        frames = np.nonzero((times >= start) & (times < end))[0]
        for j, f in enumerate(frames):
            n = min(int(feats.region_counts[f]), RPF)
            want_pos += [frame_number + j] * n
            want_seg += [i] * n
        want_pos.append(frame_number + len(frames) - 1)  # the clip's [SEP] takes its last frame's id
        want_seg.append(i)
        frame_number += len(frames)
    assert sample.region_position_ids.tolist() == want_pos
    assert sample.region_segment_ids.tolist() == want_seg
    assert (sample.region_token_ids == tokenizer.sep_id).sum() == 3


def test_presets_default_to_every_frame_with_a_cap_and_fixed_shapes_need_one():
    for preset, cap in (("base", 25), ("small", 20), ("tiny", 10)):
        d = load_pretrain_config(preset, ["data.random=true"]).data
        assert (d.region_frames, d.max_regions_per_clip, d.max_regions_per_frame) == ("all", cap, 5)
    old = load_pretrain_config("small", ["data.random=true", "data.region_frames=nearest"]).data
    assert (old.region_frames, old.frames_per_clip) == ("nearest", 1)
    with pytest.raises(ConfigError, match="max_regions_per_clip"):
        load_pretrain_config("tiny", ["data.fixed_shapes=true", "data.max_regions_per_clip=0"])
    load_pretrain_config("tiny", ["data.fixed_shapes=true"])  # the cap gives the fixed width


def test_fixed_shapes_pad_to_the_cap(store, tokenizer):
    from actbert.data.samples import PretrainDataset

    fs, narrations = store
    corpus = Corpus(fs, narrations, tokenizer, max_regions_per_frame=RPF, max_regions_per_clip=5)
    builder = SampleBuilder(corpus, SpecialTokens.from_tokenizer(tokenizer), clips_per_sample=4, max_text_len=96)
    no_masking = MaskingConfig(mlm_probability=0, action_mask_probability=0, region_mask_probability=0, negative_probability=0)
    dataset = PretrainDataset(corpus, builder, no_masking, seed=0, samples_per_video=1)
    assert max(len(dataset[i].region_token_ids) for i in range(len(dataset))) <= 4 * (5 + 1)


def _rows_one_frame_at_a_time(frames, counts, per_frame, slots):
    """The rule written out as a loop: each clip fills its slots frame by frame, a frame's first regions first."""
    out = []
    for clip, clip_frames_ in enumerate(frames):
        used = 0
        for slot, f in enumerate(clip_frames_):
            n = min(int(counts[f]), per_frame, slots - used)
            out += [(int(f), r, slot, clip) for r in range(n)]
            used += n
    return out


@pytest.mark.parametrize("per_frame,slots", [(5, 25), (3, 7), (2, 1), (4, 100)])
def test_region_rows_of_a_window_follow_the_frame_by_frame_rule(per_frame, slots):
    rng = np.random.default_rng(per_frame * 100 + slots)
    counts = rng.integers(0, 6, size=60)  # frames with 0..5 regions
    frames = [np.sort(rng.choice(60, size=int(k), replace=False)) for k in rng.integers(1, 8, size=12)]
    got = list(zip(*(a.tolist() for a in region_rows(frames, counts, per_frame, slots))))
    assert got == _rows_one_frame_at_a_time(frames, counts, per_frame, slots)
    # a cap that cuts a frame short: the first 5 regions of the clip are frame 0's 4 and frame 1's first
    frame, region, slot, clip = region_rows([np.array([0, 1, 2])], np.array([4, 4, 4]), 4, 5)
    assert frame.tolist() == [0, 0, 0, 0, 1] and region.tolist() == [0, 1, 2, 3, 0] and slot.tolist() == [0] * 4 + [1]
    assert clip.tolist() == [0] * 5
