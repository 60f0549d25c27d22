"""metrics.statistics on hand-computed cases: bootstrap intervals, seed spread, paired tests, the
separation rule, degenerate inputs, and per-item outcomes recovered from results records."""

from __future__ import annotations

import math

import numpy as np
import pytest

from actbert.metrics import MetricInputError
from actbert.metrics.captioning import caption_metrics
from actbert.metrics.statistics import (
    Interval,
    bootstrap_interval,
    item_outcomes,
    mean_of_group_ratios,
    paired_bootstrap,
    permutation_test,
    ratio_of_sums,
    seed_spread,
    separation,
    sign_test,
)
from actbert.metrics.step_localization import StepLocalizationVideo, crosstask_recall


def _hand_quantile(values: list[float], q: float) -> float:
    """The 'linear' sample quantile written out: position q * (n - 1) in the sorted draws."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def test_bootstrap_matches_a_hand_loop_with_the_same_draws():
    sample = [0.0, 100.0, 100.0, 0.0, 100.0, 0.0, 0.0, 100.0, 100.0, 100.0]
    got = bootstrap_interval(sample, resamples=500, seed=7)
    rng = np.random.default_rng(7)
    draws = []
    for _ in range(500):  # a plain loop: one resample at a time, the mean by hand
        pick = rng.integers(0, len(sample), size=len(sample))
        draws.append(sum(sample[i] for i in pick) / len(sample))
    assert got.estimate == pytest.approx(60.0)
    assert got.low == pytest.approx(_hand_quantile(draws, 0.025))
    assert got.high == pytest.approx(_hand_quantile(draws, 0.975))
    assert got.n == 10 and got.level == 0.95


def test_bootstrap_of_two_items_spans_the_exact_bootstrap_distribution():
    # the bootstrap distribution of the mean of {0, 100} is 0 / 50 / 100 with probability 1/4, 1/2, 1/4:
    # its 2.5% and 97.5% quantiles are 0 and 100
    got = bootstrap_interval([0.0, 100.0], resamples=2000, seed=0)
    assert (got.low, got.estimate, got.high) == (0.0, 50.0, 100.0)


def test_bootstrap_agrees_with_scipy_percentile_bootstrap():
    from scipy.stats import bootstrap

    sample = np.random.default_rng(3).normal(10.0, 2.0, size=40)
    ours = bootstrap_interval(sample, resamples=20000, seed=1)
    theirs = bootstrap((sample,), np.mean, n_resamples=20000, method="percentile", random_state=2).confidence_interval
    se = sample.std(ddof=1) / math.sqrt(len(sample))
    assert abs(ours.low - theirs.low) < 0.1 * se and abs(ours.high - theirs.high) < 0.1 * se


def test_accuracy_half_width_at_400_items_is_within_five_points():
    # the bench size's target: a proportion near 50% over 400 items -> about 1.96 * sqrt(.25 / 400) = 4.9 points
    items = np.array([100.0] * 200 + [0.0] * 200)
    got = bootstrap_interval(items, seed=0)
    assert 4.0 < got.half_width <= 5.2


def test_degenerate_items():
    same = bootstrap_interval([40.0] * 25)
    assert (same.low, same.estimate, same.high, same.half_width) == (40.0, 40.0, 40.0, 0.0)
    one = bootstrap_interval([70.0])
    assert (one.low, one.high, one.n) == (70.0, 70.0, 1)
    diff = paired_bootstrap([50.0] * 5, [50.0] * 5)
    assert (diff.low, diff.high) == (0.0, 0.0) and separation(diff) == "not separated"
    assert sign_test([1, 0, 1], [1, 0, 1]).p_value == 1.0
    assert permutation_test([1, 0, 1], [1, 0, 1]).p_value == 1.0
    with pytest.raises(MetricInputError, match="outcomes"):
        bootstrap_interval([])
    with pytest.raises(MetricInputError, match="same items"):
        paired_bootstrap([1.0, 2.0], [1.0])


def test_ratio_statistics_resample_videos():
    rows = np.array([[8.0, 10.0], [1.0, 10.0], [30.0, 40.0]])  # (correct frames, frames) per video
    assert ratio_of_sums(rows) == pytest.approx(100.0 * 39 / 60)
    got = bootstrap_interval(rows, ratio_of_sums, seed=0)
    assert got.estimate == pytest.approx(65.0)
    # every resample is a multiset of the three videos: the extremes are all-video-2 (10%) and all-video-1 (80%)
    assert 10.0 <= got.low < got.estimate < got.high <= 80.0
    groups = np.array([[0, 1, 2], [0, 1, 2], [1, 3, 4]], dtype=float)  # (task, hits, steps)
    assert mean_of_group_ratios(groups) == pytest.approx((50.0 + 75.0) / 2)


def test_seed_spread_t_interval_by_hand():
    got = seed_spread([1.0, 2.0, 3.0])
    assert got.mean == 2.0 and got.std == pytest.approx(1.0)
    half = 4.302652729911275 / math.sqrt(3)  # t_{0.975, 2}
    assert (got.interval.low, got.interval.high) == (pytest.approx(2.0 - half), pytest.approx(2.0 + half))
    single = seed_spread([5.0])
    assert single.std == 0.0 and single.interval.half_width == 0.0 and "one seed" in single.interval.method


def test_sign_test_exact_binomial():
    a = [1] * 8 + [0] * 2 + [1] * 5
    b = [0] * 8 + [1] * 2 + [1] * 5
    got = sign_test(a, b)
    assert (got.wins, got.losses, got.ties) == (8, 2, 5)
    assert got.p_value == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert got.method == "exact"


def test_permutation_test_exact_enumeration():
    # differences 1, 2, 3: |sums| of the 8 sign patterns are 6, 4, 2, 0, 0, 2, 4, 6 -> p = 2/8
    got = permutation_test([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert got.p_value == pytest.approx(0.25) and got.method == "exact"
    big = permutation_test(np.ones(40), np.zeros(40), resamples=999, seed=0)
    assert big.method == "monte-carlo" and big.p_value == pytest.approx(1 / 1000)


def test_paired_bootstrap_cancels_shared_item_difficulty():
    # item difficulty varies a lot, A is B + 5 on every item: the marginal intervals overlap, the paired one does not
    base = np.random.default_rng(0).uniform(0.0, 100.0, size=60)
    a, b = base + 5.0, base
    ia, ib = bootstrap_interval(a), bootstrap_interval(b)
    assert ia.low < ib.high  # marginal intervals overlap
    diff = paired_bootstrap(a, b)
    assert diff.low == pytest.approx(5.0) and diff.high == pytest.approx(5.0)
    assert separation(diff) == "better" and separation(paired_bootstrap(b, a)) == "worse"


def test_separation_rule():
    assert separation(Interval(1.0, 0.5, 3.0, 0.95, "x", 10)) == "better"
    assert separation(Interval(0.5, -1.0, 2.0, 0.95, "x", 10)) == "not separated"
    assert separation(Interval(-2.0, -3.0, -1.0, 0.95, "x", 10)) == "worse"
    # seeds that do not agree keep a separated item interval from counting
    assert separation(Interval(1.0, 0.5, 3.0, 0.95, "x", 10), [2.0, 2.1, 1.9]) == "better"
    # mean 2, std 1: the t-interval 2 +- 4.303 / sqrt(3) = [-0.48, 4.48] still holds 0
    assert separation(Interval(1.0, 0.5, 3.0, 0.95, "x", 10), [1.0, 2.0, 3.0]) == "not separated"
    assert separation(Interval(1.0, 0.5, 3.0, 0.95, "x", 10), [3.0, -1.0, 1.0]) == "not separated"
    assert separation(Interval(1.0, 0.5, 3.0, 0.95, "x", 10), [-2.0, -2.1, -1.9]) == "not separated"


# ----------------------------------------------------------------------------- records -> items


def test_item_outcomes_of_each_task_reproduce_the_metric():
    ret = item_outcomes({"task": "retrieval", "primary": "R@5", "ranks": [1, 6, 3, 10], "queries": ["a", "b", "c", "d"]})
    assert ret.rows.tolist() == [100.0, 0.0, 100.0, 0.0] and ret.value() == 50.0

    mc = item_outcomes({"task": "videoqa", "primary": "accuracy", "correct": [True, False, False, True]})
    assert mc.value() == 50.0
    fib = item_outcomes({"task": "videoqa", "primary": "accuracy", "predictions": ["Door", "cat"], "answers": ["door", "dog"]})
    assert fib.rows.tolist() == [100.0, 0.0]

    seg = item_outcomes({"task": "segmentation", "primary": "frame_accuracy", "videos": [
        {"video_id": "v1", "predicted": [0, 1, 1, 2], "target": [0, 1, 2, 2]},
        {"video_id": "v2", "predicted": [3, 3], "target": [0, 3]}]})
    assert seg.value() == pytest.approx(100.0 * 4 / 6)
    assert seg.item_value(seg.rows).tolist() == [0.75, 0.5]

    videos = [
        StepLocalizationVideo("t1", "a", np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0.5, 2.5]), [(0, 0.0, 1.0), (1, 0.0, 1.0)]),
        StepLocalizationVideo("t1", "b", np.array([[1.0], [0.0]]), np.array([0.5, 2.5]), [(0, 0.0, 1.0)]),
        StepLocalizationVideo("t2", "c", np.array([[0.0], [1.0]]), np.array([0.5, 2.5]), [(0, 0.0, 1.0)]),
    ]
    from actbert.metrics.step_localization import video_step_hits

    details = [{"task": v.task_id, "video_id": v.video_id, "hits": video_step_hits(v)[0], "steps": video_step_hits(v)[1]} for v in videos]
    step = item_outcomes({"task": "step_localization", "primary": "recall", "videos": details})
    assert step.value() == pytest.approx(crosstask_recall(videos)["recall"])  # (2/3 + 0) / 2 tasks


def test_per_caption_cider_averages_to_the_corpus_cider():
    hyps = {"a": "cut the onion", "b": "pour the milk", "c": "stir the soup slowly"}
    refs = {"a": ["cut an onion"], "b": ["pour milk into the bowl"], "c": ["fry the fish"]}
    scores = caption_metrics(hyps, refs, meteor=False, tokenizer="simple")
    items = item_outcomes({"task": "captioning", "primary": "CIDEr", "cider_per_item": scores.cider_per_item})
    assert set(scores.cider_per_item) == set(hyps)
    assert items.value() == pytest.approx(scores.scores["CIDEr"])
    assert scores.cider_per_item["c"] < scores.cider_per_item["a"]


def test_item_outcomes_names_the_missing_field():
    with pytest.raises(MetricInputError, match="'ranks'"):
        item_outcomes({"task": "retrieval", "primary": "R@5", "dataset": "msrvtt"})
    with pytest.raises(MetricInputError, match="hits"):
        item_outcomes({"task": "step_localization", "primary": "recall", "videos": [{"task": "t", "video_id": "v"}]})


def test_group_bootstrap_of_one_group_is_the_plain_bootstrap():
    from actbert.metrics.statistics import bootstrap_groups, paired_bootstrap_groups

    x = np.random.default_rng(5).uniform(0, 100, size=30)
    y = x - 3.0
    one = bootstrap_groups([(x, np.mean)], seed=4)
    plain = bootstrap_interval(x, seed=4)
    assert (one.low, one.high) == (pytest.approx(plain.low), pytest.approx(plain.high))
    # two datasets, A = B + 3 on both: the mean difference is exactly 3 in every resample
    diff = paired_bootstrap_groups([(x, y, np.mean), (x[:10], y[:10], np.mean)])
    assert (diff.estimate, diff.low, diff.high) == (pytest.approx(3.0), pytest.approx(3.0), pytest.approx(3.0))
    two = bootstrap_groups([(np.full(5, 10.0), np.mean), (np.full(7, 30.0), np.mean)])
    assert (two.estimate, two.low, two.high) == (20.0, 20.0, 20.0)


def test_vectorised_draws_equal_the_loop():
    rows = np.random.default_rng(2).integers(1, 20, size=(15, 2)).astype(float)
    rows[:, 0] = np.minimum(rows[:, 0], rows[:, 1])
    fast = bootstrap_interval(rows, ratio_of_sums, resamples=300, seed=9)
    slow = bootstrap_interval(rows, lambda r: ratio_of_sums(r) + 0.0, resamples=300, seed=9)  # not the fast path
    assert (fast.low, fast.high) == (pytest.approx(slow.low), pytest.approx(slow.high))
    x = rows[:, 0]
    assert bootstrap_interval(x, seed=3).high == pytest.approx(bootstrap_interval(x, lambda r: float(np.mean(r)), seed=3).high)
