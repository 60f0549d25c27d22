"""Intervals and paired tests for the downstream metrics: how sure a number is, and when two models differ.

Everything here works on **per-item outcomes**: one row per test item (a query, a question, a
caption, a video), from which the task's metric is a function (``statistic``). The rows of every
task's primary metric are recovered from its results record by :func:`item_outcomes`:

============== ====================== =========================================================
task           item                   row -> metric
============== ====================== =========================================================
retrieval      a query                ``100 * [rank <= 5]``; R@5 = mean
videoqa        a question             ``100 * correct``; accuracy = mean (multiple choice, FIB)
captioning     a caption              its own CIDEr (document frequencies of the whole test set);
                                      corpus CIDEr = mean (pycocoevalcap averages the same way)
segmentation   a video                ``(correct frames, frames)``; frame accuracy = 100 * sum / sum
step loc.      a video                ``(task, hits, steps)``; recall = mean over tasks of
                                      100 * sum hits / sum steps (CrossTask's definition)
============== ====================== =========================================================

Segmentation and step localization resample **videos**, not frames or steps: the frames of one
video are not independent draws (a model that misreads one video misreads many of its frames), so
a frame-level bootstrap would claim a width the data do not have (a cluster bootstrap).

Procedures (all with a fixed seed, so a report is reproducible):

* :func:`bootstrap_interval` -- the percentile bootstrap: ``resamples`` draws of ``n`` rows with
  replacement, the statistic of each, and the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles
  (numpy's linear interpolation) of those statistics.
* :func:`seed_spread` -- the spread over training seeds: mean, sample standard deviation and the
  Student-t interval ``mean +- t_{(1+level)/2, k-1} * std / sqrt(k)``.
* :func:`paired_bootstrap` -- two models on the same items: the same resampled rows for both, the
  percentile interval of ``statistic(a) - statistic(b)``.
* :func:`sign_test` -- exact two-sided sign test on the items where the two differ (for 0/1 items
  this is the exact McNemar test): ``p = min(1, 2 * P[Bin(m, 1/2) <= min(wins, losses)])``.
* :func:`permutation_test` -- paired sign-flip test of the mean difference; exact (every one of
  the ``2^m`` sign patterns) for ``m <= EXACT_PERMUTATION_MAX`` non-zero differences, else
  ``resamples`` random patterns (reported as ``monte-carlo``).

**The separation rule** (:func:`separation`). Model A is called *better* than B on a task only
when the 95% interval of the *paired difference* A - B excludes 0 -- and, with two or more seeds,
also the t-interval over seeds of the per-seed differences excludes 0 with the same sign
(otherwise "not separated"; the mirror case is "worse"). Why the difference, not two overlapping
marginal intervals: both models are scored on the same items, so most item-to-item variation is
shared and cancels in the difference; asking two marginal 95% intervals not to overlap is a
test at roughly the 0.6% level that ignores this pairing and calls real differences "noise".
Why the seed condition too: the item bootstrap holds the trained weights fixed; a difference that
flips sign between training seeds is not a property of the model family, however many items
agree within one seed. With one seed the report says that only item variation was measured.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .accuracy import normalize_answer
from .errors import MetricInputError

__all__ = [
    "LEVEL",
    "RESAMPLES",
    "SEED",
    "EXACT_PERMUTATION_MAX",
    "Interval",
    "SeedSpread",
    "TestResult",
    "ItemOutcomes",
    "bootstrap_interval",
    "seed_spread",
    "paired_bootstrap",
    "bootstrap_groups",
    "paired_bootstrap_groups",
    "sign_test",
    "permutation_test",
    "separation",
    "item_outcomes",
    "mean_of_rows",
    "ratio_of_sums",
    "mean_of_group_ratios",
]

LEVEL = 0.95
RESAMPLES = 2000
SEED = 0
EXACT_PERMUTATION_MAX = 16

Statistic = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class Interval:
    """A point estimate with its ``level`` interval ``[low, high]`` (``method`` says how)."""

    estimate: float
    low: float
    high: float
    level: float
    method: str
    n: int  # items (bootstrap) or seeds (t)

    @property
    def half_width(self) -> float:
        return 0.5 * (self.high - self.low)

    def excludes(self, value: float = 0.0) -> bool:
        return self.low > value or self.high < value

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "half_width": self.half_width}


@dataclass(frozen=True)
class SeedSpread:
    """Mean, sample std (ddof 1; 0 for one seed) and the t-interval of one number over seeds."""

    values: tuple[float, ...]
    mean: float
    std: float
    interval: Interval

    def to_dict(self) -> dict[str, Any]:
        return {"values": list(self.values), "mean": self.mean, "std": self.std, "interval": self.interval.to_dict()}


@dataclass(frozen=True)
class TestResult:
    """A paired test: ``wins`` / ``losses`` = items where A is above / below B; two-sided p."""

    name: str
    p_value: float
    wins: int
    losses: int
    ties: int
    method: str  # exact | monte-carlo

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- statistics of rows


def mean_of_rows(rows: np.ndarray) -> float:
    """``[n]`` -> the mean (retrieval hits, QA correctness, per-caption CIDEr)."""
    return float(np.mean(rows))


def ratio_of_sums(rows: np.ndarray) -> float:
    """``[n, 2]`` ``(numerator, denominator)`` -> ``100 * sum / sum`` (frame accuracy over videos)."""
    return float(100.0 * rows[:, 0].sum() / rows[:, 1].sum())


def mean_of_group_ratios(rows: np.ndarray) -> float:
    """``[n, 3]`` ``(group, hits, total)`` -> mean over the groups present of ``100 * sum hits / sum
    total`` (CrossTask recall: per task, then the unweighted mean over tasks); groups whose total is
    0 are left out, as the metric does."""
    groups = rows[:, 0]
    values = []
    for g in np.unique(groups):
        mask = groups == g
        total = rows[mask, 2].sum()
        if total > 0:
            values.append(100.0 * rows[mask, 1].sum() / total)
    return float(np.mean(values)) if values else float("nan")


# ----------------------------------------------------------------------------- intervals


def _as_rows(outcomes: Any, where: str) -> np.ndarray:
    rows = np.asarray(outcomes, dtype=np.float64)
    if rows.ndim not in (1, 2) or rows.shape[0] == 0:
        raise MetricInputError(f"{where}: expected a non-empty [items] or [items, k] array, got shape {rows.shape}")
    if not np.isfinite(rows).all():
        raise MetricInputError(f"{where}: non-finite outcome in row(s) {np.nonzero(~np.isfinite(rows).reshape(len(rows), -1).all(axis=1))[0][:10].tolist()}")
    return rows


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise MetricInputError(f"level: must lie in (0, 1), got {level}")


def _resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """``[resamples, n]`` row indices drawn with replacement (``numpy.random.default_rng(seed)``)."""
    if resamples < 1:
        raise MetricInputError(f"resamples: must be >= 1, got {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _percentile_interval(estimate: float, draws: np.ndarray, level: float, method: str, n: int) -> Interval:
    low, high = np.quantile(draws, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return Interval(float(estimate), float(low), float(high), level, method, n)


def _draws(rows: np.ndarray, statistic: Statistic, idx: np.ndarray) -> np.ndarray:
    """``statistic`` of every resample ``rows[idx[r]]``; the two sum-based statistics vectorised
    (the same numbers as the loop, at bench sizes ~100x faster)."""
    if statistic is mean_of_rows or statistic is np.mean:
        return rows[idx].mean(axis=1) if rows.ndim == 1 else np.array([statistic(rows[i]) for i in idx])
    if statistic is ratio_of_sums:
        picked = rows[idx]  # [R, n, 2]
        return 100.0 * picked[..., 0].sum(axis=1) / picked[..., 1].sum(axis=1)
    return np.array([statistic(rows[i]) for i in idx])


def bootstrap_interval(outcomes: Any, statistic: Statistic = mean_of_rows, resamples: int = RESAMPLES,
                       level: float = LEVEL, seed: int = SEED) -> Interval:
    """Percentile bootstrap interval of ``statistic`` over the rows of ``outcomes`` ([n] or [n, k]).

    One item gives the degenerate interval ``[x, x]`` (nothing to resample: ``n`` says so); all
    items equal give ``[x, x]`` too, which is what the data say, not a claim of certainty.
    """
    _check_level(level)
    rows = _as_rows(outcomes, "outcomes")
    estimate = statistic(rows)
    draws = _draws(rows, statistic, _resample_indices(len(rows), resamples, seed))
    return _percentile_interval(estimate, draws[np.isfinite(draws)], level, "percentile bootstrap", len(rows))


def _t_quantile(p: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(p, dof))


def seed_spread(values: Sequence[float], level: float = LEVEL) -> SeedSpread:
    """Mean, std and t-interval of one metric over training seeds (one seed: a zero-width interval
    with ``method`` saying that no seed spread was measured)."""
    _check_level(level)
    vals = np.asarray(list(values), dtype=np.float64)
    if vals.ndim != 1 or len(vals) == 0 or not np.isfinite(vals).all():
        raise MetricInputError(f"values: expected one finite number per seed, got {list(values)!r}")
    mean = float(vals.mean())
    if len(vals) == 1:
        return SeedSpread(tuple(vals.tolist()), mean, 0.0, Interval(mean, mean, mean, level, "one seed: no spread", 1))
    std = float(vals.std(ddof=1))
    half = _t_quantile((1.0 + level) / 2.0, len(vals) - 1) * std / math.sqrt(len(vals))
    return SeedSpread(tuple(vals.tolist()), mean, std, Interval(mean, mean - half, mean + half, level, "student t over seeds", len(vals)))


def paired_bootstrap(a: Any, b: Any, statistic: Statistic = mean_of_rows, resamples: int = RESAMPLES,
                     level: float = LEVEL, seed: int = SEED) -> Interval:
    """Percentile interval of ``statistic(a) - statistic(b)``, both resampled on the same rows
    (``a`` and ``b``: the two models' outcomes on the same items, in the same order)."""
    _check_level(level)
    ra, rb = _as_rows(a, "a"), _as_rows(b, "b")
    if ra.shape != rb.shape:
        raise MetricInputError(f"b: shape {rb.shape} differs from a's {ra.shape}; a paired comparison needs the same items")
    estimate = statistic(ra) - statistic(rb)
    idx = _resample_indices(len(ra), resamples, seed)
    draws = _draws(ra, statistic, idx) - _draws(rb, statistic, idx)
    return _percentile_interval(estimate, draws[np.isfinite(draws)], level, "paired percentile bootstrap", len(ra))


def bootstrap_groups(groups: Sequence[tuple[Any, Statistic]], resamples: int = RESAMPLES, level: float = LEVEL,
                     seed: int = SEED) -> Interval:
    """Interval of the mean over groups of each group's statistic (a task's mean over its datasets:
    retrieval's YouCook2 and MSR-VTT rows), each group's items resampled on their own (group ``g``
    with seed ``seed + g``). One group: :func:`bootstrap_interval`."""
    _check_level(level)
    if not groups:
        raise MetricInputError("groups: empty")
    rows = [_as_rows(r, f"groups[{g}]") for g, (r, _) in enumerate(groups)]
    estimate = float(np.mean([stat(r) for r, (_, stat) in zip(rows, groups)]))
    draws = np.zeros(resamples)
    for g, (r, (_, stat)) in enumerate(zip(rows, groups)):
        draws += _draws(r, stat, _resample_indices(len(r), resamples, seed + g))
    draws /= len(groups)
    return _percentile_interval(estimate, draws[np.isfinite(draws)], level, "percentile bootstrap (mean over datasets)", sum(len(r) for r in rows))


def paired_bootstrap_groups(groups: Sequence[tuple[Any, Any, Statistic]], resamples: int = RESAMPLES, level: float = LEVEL,
                            seed: int = SEED) -> Interval:
    """:func:`paired_bootstrap` of the mean over groups: per group, A and B on the same resampled
    items (group ``g`` with seed ``seed + g``); the difference of the group means."""
    _check_level(level)
    if not groups:
        raise MetricInputError("groups: empty")
    estimate, draws, n = 0.0, np.zeros(resamples), 0
    for g, (a, b, stat) in enumerate(groups):
        ra, rb = _as_rows(a, f"groups[{g}].a"), _as_rows(b, f"groups[{g}].b")
        if ra.shape != rb.shape:
            raise MetricInputError(f"groups[{g}].b: shape {rb.shape} differs from a's {ra.shape}; a paired comparison needs the same items")
        estimate += stat(ra) - stat(rb)
        idx = _resample_indices(len(ra), resamples, seed + g)
        draws += _draws(ra, stat, idx) - _draws(rb, stat, idx)
        n += len(ra)
    draws /= len(groups)
    return _percentile_interval(estimate / len(groups), draws[np.isfinite(draws)], level,
                                "paired percentile bootstrap (mean over datasets)", n)


def _item_differences(a: Any, b: Any, item_value: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray:
    ra, rb = _as_rows(a, "a"), _as_rows(b, "b")
    if ra.shape != rb.shape:
        raise MetricInputError(f"b: shape {rb.shape} differs from a's {ra.shape}; a paired test needs the same items")
    if item_value is None:
        if ra.ndim != 1:
            raise MetricInputError("item_value: needed for [items, k] outcomes (what one item's score is)")
        return ra - rb
    return item_value(ra) - item_value(rb)


def sign_test(a: Any, b: Any, item_value: Callable[[np.ndarray], np.ndarray] | None = None) -> TestResult:
    """Exact two-sided sign test of paired items (McNemar's exact test for 0/1 outcomes).

    ``item_value`` maps ``[n, k]`` rows to one score per item (e.g. a video's frame accuracy).
    No item differs: p = 1.
    """
    d = _item_differences(a, b, item_value)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    m = wins + losses
    if m == 0:
        return TestResult("sign", 1.0, 0, 0, len(d), "exact")
    k = min(wins, losses)
    tail = sum(math.comb(m, i) for i in range(k + 1)) / 2.0**m
    return TestResult("sign", min(1.0, 2.0 * tail), wins, losses, len(d) - m, "exact")


def permutation_test(a: Any, b: Any, item_value: Callable[[np.ndarray], np.ndarray] | None = None,
                     resamples: int = 10000, seed: int = SEED) -> TestResult:
    """Paired sign-flip permutation test of the mean item difference (two-sided).

    p = share of sign patterns whose |mean| is >= the observed |mean| (exact enumeration for at
    most ``EXACT_PERMUTATION_MAX`` non-zero differences; else ``resamples`` random patterns with
    the observed one counted, ``(hits + 1) / (resamples + 1)``).
    """
    d = _item_differences(a, b, item_value)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    nz = d[d != 0]
    if len(nz) == 0:
        return TestResult("permutation", 1.0, 0, 0, len(d), "exact")
    observed = abs(nz.sum())
    tol = 1e-9 * max(1.0, observed)
    if len(nz) <= EXACT_PERMUTATION_MAX:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(nz))))
        sums = np.abs(signs @ nz)
        return TestResult("permutation", float(np.mean(sums >= observed - tol)), wins, losses, len(d) - len(nz), "exact")
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(resamples, len(nz)))
    hits = int((np.abs(signs @ nz) >= observed - tol).sum())
    return TestResult("permutation", (hits + 1) / (resamples + 1), wins, losses, len(d) - len(nz), "monte-carlo")


def separation(difference: Interval, seed_differences: Sequence[float] = (), level: float = LEVEL) -> str:
    """``"better"`` / ``"worse"`` / ``"not separated"`` for A - B (the module docstring's rule).

    ``difference``: the paired bootstrap interval of A - B over items; ``seed_differences``: A - B
    of each training seed (two or more also require their t-interval to exclude 0, same sign).
    """
    if not difference.excludes(0.0):
        return "not separated"
    sign = 1.0 if difference.low > 0 else -1.0
    if len(seed_differences) >= 2:
        spread = seed_spread(seed_differences, level).interval
        if not spread.excludes(0.0) or (spread.low > 0) != (sign > 0):
            return "not separated"
    return "better" if sign > 0 else "worse"


# ----------------------------------------------------------------------------- records -> rows


@dataclass(frozen=True)
class ItemOutcomes:
    """One record's per-item rows, their ids (for pairing), the statistic that gives the metric,
    and ``item_value`` (rows -> one score per item) for the sign and permutation tests."""

    metric: str
    ids: tuple[str, ...]
    rows: np.ndarray
    statistic: Statistic
    item_value: Callable[[np.ndarray], np.ndarray] | None = None

    def value(self) -> float:
        return self.statistic(self.rows)

    def aligned(self, ids: Sequence[str]) -> np.ndarray:
        """The rows in the order of ``ids`` (every id must be here)."""
        where = {i: k for k, i in enumerate(self.ids)}
        missing = [i for i in ids if i not in where]
        if missing:
            raise MetricInputError(f"ids: item {missing[0]!r} is not among this record's {len(self.ids)} items")
        return self.rows[[where[i] for i in ids]]


def _per_video_accuracy(rows: np.ndarray) -> np.ndarray:
    return rows[:, 0] / np.maximum(rows[:, 1], 1.0)


def _per_video_recall(rows: np.ndarray) -> np.ndarray:
    return rows[:, 1] / np.maximum(rows[:, 2], 1.0)


def item_outcomes(record: Mapping[str, Any]) -> ItemOutcomes:
    """Per-item rows of a results record's primary metric (module docstring's table).

    Raises ``MetricInputError`` naming the record and field when the record lacks them.
    """
    task, primary = record.get("task"), record.get("primary")
    where = f"record {task}/{record.get('dataset')} ({record.get('protocol')})"

    def need(key: str) -> Any:
        if key not in record:
            raise MetricInputError(f"{where}: field {key!r}: missing, so its per-item outcomes cannot be recovered")
        return record[key]

    if task == "retrieval":
        if primary != "R@5":
            raise MetricInputError(f"{where}: primary {primary!r}: only R@5 has per-item outcomes here")
        ranks = np.asarray(need("ranks"), dtype=np.float64)
        ids = tuple(f"{k}:{q}" for k, q in enumerate(record.get("queries") or [""] * len(ranks)))
        return ItemOutcomes(primary, ids, 100.0 * (ranks <= 5), mean_of_rows)
    if task == "videoqa":
        if "correct" in record:
            correct = np.asarray(record["correct"], dtype=np.float64)
        else:  # fill-in-the-blank records written before "correct" was kept
            correct = np.array([normalize_answer(p) == normalize_answer(a) for p, a in zip(need("predictions"), need("answers"))], dtype=np.float64)
        return ItemOutcomes(primary, tuple(str(k) for k in range(len(correct))), 100.0 * correct, mean_of_rows)
    if task == "captioning":
        per_item = need("cider_per_item")
        names = sorted(per_item)
        return ItemOutcomes(primary, tuple(names), np.array([per_item[n] for n in names], dtype=np.float64), mean_of_rows)
    if task == "segmentation":
        videos = need("videos")
        rows = np.array([[float(np.sum(np.asarray(v["predicted"]) == np.asarray(v["target"]))), float(len(v["target"]))] for v in videos])
        return ItemOutcomes(primary, tuple(v["video_id"] for v in videos), rows, ratio_of_sums, _per_video_accuracy)
    if task == "step_localization":
        videos = need("videos")
        if videos and "hits" not in videos[0]:
            raise MetricInputError(f"{where}: field 'videos[].hits': missing (a record from before per-video hits were kept)")
        tasks = sorted({v["task"] for v in videos})
        rows = np.array([[float(tasks.index(v["task"])), float(v["hits"]), float(v["steps"])] for v in videos])
        return ItemOutcomes(primary, tuple(f"{v['task']}/{v['video_id']}" for v in videos), rows, mean_of_group_ratios, _per_video_recall)
    raise MetricInputError(f"{where}: field 'task': no per-item outcomes for task {task!r}")
