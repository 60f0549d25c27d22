"""Masking statistics of the pretraining targets (data/masking.py) on many draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actbert.models.actbert.processing import Collator
from actbert.data.corpus import Corpus
from actbert.data.masking import IGNORE_INDEX, MaskingConfig, mask_tokens
from actbert.data.random_features import RandomCorpusSpec, write_random_corpus
from actbert.data.samples import PretrainDataset, SampleBuilder, SpecialTokens
from actbert.data.store import FeatureStore
from actbert.text.tokenizer import load_tokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def specials():
    return SpecialTokens.from_tokenizer(load_tokenizer())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, specials):
    root = tmp_path_factory.mktemp("masking_corpus")
    store, narrations = write_random_corpus(root, RandomCorpusSpec(
        num_videos=6, clips_per_video=12, action_dim=8, region_dim=8, num_actions=10, num_region_classes=9, seed=1))
    corpus = Corpus(FeatureStore(store), narrations, load_tokenizer())
    builder = SampleBuilder(corpus, specials, clips_per_sample=10, max_text_len=96)
    return PretrainDataset(corpus, builder, MaskingConfig(negative_probability=0.0), seed=4, samples_per_video=100)


def within(rate: float, expected: float, n: int, sigmas: float = 5.0) -> bool:
    return abs(rate - expected) <= sigmas * np.sqrt(expected * (1 - expected) / n)


def test_word_masking_rate_and_80_10_10_rule(specials):
    rng = np.random.default_rng(0)
    n = 200_000
    ids = rng.integers(1000, 30000, size=n)
    eligible = rng.random(n) < 0.9  # the rest stand for [CLS]/[SEP]/[PAD]
    new_ids, labels = mask_tokens(ids, eligible, rng, MaskingConfig(), specials)
    chosen = labels != IGNORE_INDEX
    assert not chosen[~eligible].any() and np.array_equal(new_ids[~eligible], ids[~eligible])
    assert within(chosen.sum() / eligible.sum(), 0.15, int(eligible.sum()))
    assert np.array_equal(labels[chosen], ids[chosen])  # the label is the original word piece
    k = int(chosen.sum())
    to_mask = new_ids[chosen] == specials.mask_id
    unchanged = new_ids[chosen] == ids[chosen]
    to_random = ~to_mask & ~unchanged
    assert within(to_mask.mean(), 0.8, k) and within(to_random.mean(), 0.1, k, 6) and within(unchanged.mean(), 0.1, k, 6)
    replaced = new_ids[chosen][to_random]
    assert not np.isin(replaced, list(specials.special_ids)).any()
    assert replaced.min() >= 0 and replaced.max() < specials.vocab_size
    assert replaced.max() - replaced.min() > 20_000  # drawn from the whole vocabulary, not a corner of it


def test_visual_masking_rates_zeroed_features_and_no_targets_on_specials(dataset, specials):
    unmasked = PretrainDataset(dataset.corpus, dataset.builder, MaskingConfig(
        mlm_probability=0, action_mask_probability=0, region_mask_probability=0, negative_probability=0),
        seed=dataset.seed, samples_per_video=dataset.samples_per_video)
    words = chosen_words = actions = masked_actions = regions = masked_regions = 0
    for i in range(len(dataset)):
        s, plain = dataset[i], unmasked[i]  # same rng stream -> same window, only masking differs
        assert np.array_equal(s.region_token_ids, plain.region_token_ids)
        # words: never a target at [CLS]/[SEP]
        assert (s.mlm_labels[s.text_special] == IGNORE_INDEX).all()
        words += int((~s.text_special).sum())
        chosen_words += int((s.mlm_labels != IGNORE_INDEX).sum())
        # actions: targets only at [ACT] positions with a verb, masked features zero, others intact
        is_act = s.action_token_ids == specials.act_id
        has_verb = s.action_targets.sum(1) > 0
        assert not s.action_target_mask[~(is_act & has_verb)].any()
        assert not s.action_features[s.action_target_mask].any()
        keep = ~s.action_target_mask
        np.testing.assert_array_equal(s.action_features[keep], plain.action_features[keep])
        actions += int((is_act & has_verb).sum())
        masked_actions += int(s.action_target_mask.sum())
        # regions: targets only at [REGION], masked features zero, box locations kept
        is_region = s.region_token_ids == specials.region_id
        assert not s.region_target_mask[~is_region].any()
        assert not s.region_features[s.region_target_mask].any()
        np.testing.assert_array_equal(s.region_locations, plain.region_locations)
        keep = ~s.region_target_mask
        np.testing.assert_array_equal(s.region_features[keep], plain.region_features[keep])
        regions += int(is_region.sum())
        masked_regions += int(s.region_target_mask.sum())
    assert within(chosen_words / words, 0.15, words)
    assert within(masked_actions / actions, 0.15, actions)
    assert within(masked_regions / regions, 0.15, regions)


def test_no_targets_on_padding_after_collation(dataset, specials):
    samples = [dataset[i] for i in range(0, 60, 3)]
    batch = Collator(specials.pad_id)(samples)
    assert (batch.mlm_labels[~batch.text_mask] == IGNORE_INDEX).all()
    assert not batch.action_target_mask[~batch.action_mask].any()
    assert not batch.region_target_mask[~batch.region_mask].any()
    assert not batch.region_features[~batch.region_mask].any() and not batch.action_features[~batch.action_mask].any()
    assert (batch.mlm_labels != IGNORE_INDEX).any() and batch.region_target_mask.any()


def test_masking_rates_follow_the_config_and_depend_only_on_seed_epoch_index(dataset):
    heavy = PretrainDataset(dataset.corpus, dataset.builder, MaskingConfig(
        mlm_probability=0.5, action_mask_probability=1.0, region_mask_probability=0.0, negative_probability=0.0),
        seed=dataset.seed, samples_per_video=10)
    s = heavy[3]
    assert s.action_target_mask.sum() == (s.action_targets.sum(1) > 0).sum() and not s.region_target_mask.any()
    a, b = dataset[7], dataset[7]
    assert np.array_equal(a.mlm_labels, b.mlm_labels) and np.array_equal(a.region_target_mask, b.region_target_mask)
    dataset.set_epoch(1)
    try:
        c = dataset[7]
    finally:
        dataset.set_epoch(0)
    assert not (np.array_equal(a.mlm_labels, c.mlm_labels) and np.array_equal(a.region_target_mask, c.region_target_mask))
