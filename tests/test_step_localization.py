"""Zero-shot action step localization on the synthetic CrossTask files (tasks/step_localization.py)."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from helpers_planted_store import tiny_model, write_planted_store
from actbert.data import readers
from actbert.data.store import FeatureStore
from actbert.tasks import step_localization as sl
from actbert.data.clips import ClipAssembler
from actbert.tasks.common import Benchmark, TaskError
from actbert.text.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def store(synth_tiny, tmp_path_factory):
    return write_planted_store(synth_tiny, tmp_path_factory.mktemp("step_localization") / "store")


@pytest.fixture(scope="module")
def assembler(store, tokenizer):
    return ClipAssembler(store, tokenizer)


@pytest.fixture(scope="module")
def release(synth_tiny):
    return readers.read_crosstask(Benchmark(synth_tiny).crosstask)


def test_candidate_moments(assembler):
    video = "recipe0001"
    frames = assembler.frame_times(video)
    units, times = sl.candidates(assembler, video, sl.StepLocalizationSettings(context=2))
    assert len(units) == len(frames)
    np.testing.assert_allclose(times, np.minimum(frames + 0.5, assembler.duration(video)))
    for f, u in enumerate(units):
        unit_times = assembler.units(u).clip_times
        assert frames[f] in unit_times[:, 0]  # the candidate's own frame is in its window
        assert len(unit_times) == min(len(frames), f + 3) - max(0, f - 2)
    units, times = sl.candidates(assembler, video, sl.StepLocalizationSettings(units="clips"))
    np.testing.assert_allclose(times, assembler.clip_times(video).mean(axis=1))
    with pytest.raises(TaskError, match="units"):
        sl.candidates(assembler, video, sl.StepLocalizationSettings(units="frames"))


def _oracle_scores(release, sign):
    """A step_scores stand-in: from each candidate's units (their time span) and each step's label."""
    gt = {}
    for (task_id, video_id), ann in release.annotations.items():
        steps = release.tasks[task_id].steps
        for k, start, end in ann.steps:
            gt.setdefault((video_id, steps[k]), (start + end) / 2.0)
    seen = []

    def step_scores(model, assembler, units, steps, settings):
        scores = np.zeros((len(units), len(steps)), np.float32)
        for c, u in enumerate(units):
            moment = float(assembler.units(u).clip_times.mean())
            for k, label in enumerate(steps):
                seen.append(label)
                target = gt.get((u.video_id, label))
                if target is not None:
                    scores[c, k] = -sign * abs(moment - target)
        return scores

    return step_scores, seen


@pytest.mark.parametrize("units", ["seconds", "clips"])
def test_oracle_scores_give_full_recall_and_inverse_gives_none(monkeypatch, synth_tiny, assembler, release, units):
    bench = Benchmark(synth_tiny)
    settings = sl.StepLocalizationSettings(units=units)
    oracle, seen = _oracle_scores(release, +1)
    monkeypatch.setattr(sl, "step_scores", oracle)
    record = sl.evaluate(None, assembler, bench, settings)[0]
    assert record["task"] == "step_localization" and record["dataset"] == "crosstask" and record["primary"] == "recall"
    distinct = sum(len({k for k, _, _ in ann.steps}) for ann in release.annotations.values())
    assert record["metrics"]["num_steps"] == distinct
    assert record["metrics"]["num_videos"] == len(release.annotations)
    assert record["metrics"]["num_tasks"] == len(release.tasks)
    assert set(seen) == {s for t in release.tasks.values() for s in t.steps}  # the step labels are the texts
    if units == "seconds":  # 1 s candidates land inside every (>= 3 s) ground-truth interval
        assert record["metrics"]["recall"] == pytest.approx(100.0)
    else:  # narration clips are coarser: most, not necessarily all
        assert record["metrics"]["recall"] >= 50.0
    assert set(record["per_task"]) == set(release.tasks)
    for video in record["videos"]:
        assert len(video["predicted_times"]) == len(release.tasks[video["task"]].steps)

    inverse, _ = _oracle_scores(release, -1)
    monkeypatch.setattr(sl, "step_scores", inverse)
    worst = sl.evaluate(None, assembler, bench, settings)[0]
    assert worst["metrics"]["recall"] < record["metrics"]["recall"]
    if units == "seconds":
        assert worst["metrics"]["recall"] <= 20.0


def test_tiny_model_end_to_end_and_without_region_cues(synth_tiny, store, tokenizer, assembler):
    bench = Benchmark(synth_tiny)
    model = tiny_model(store, tokenizer)
    full = sl.evaluate(model, assembler, bench, sl.StepLocalizationSettings(), variant="tiny")[0]
    assert full["variant"] == "tiny"
    # recall by hand from the release's annotations (Zhukov et al.): a step is a hit when its predicted time
    # lies in one of its ground-truth intervals; per task hits / annotated steps, then the mean over tasks
    release = readers.read_crosstask(bench.crosstask)
    hits, totals = {}, {}
    for video in full["videos"]:
        ann = release.annotations[(video["task"], video["video_id"])]
        for k in sorted({k for k, _, _ in ann.steps}):
            t = video["predicted_times"][k]
            hit = any(start <= t <= end for j, start, end in ann.steps if j == k)
            hits[video["task"]] = hits.get(video["task"], 0) + hit
            totals[video["task"]] = totals.get(video["task"], 0) + 1
    assert len(full["videos"]) == len(release.annotations)
    assert full["metrics"]["recall"] == pytest.approx(np.mean([100.0 * hits[t] / totals[t] for t in totals]))
    no_regions = sl.evaluate(model, assembler, bench, sl.StepLocalizationSettings(use_regions=False))[0]
    assert "without region cues" in no_regions["notes"] and "without region cues" not in full["notes"]

    # scores of the "w/o region cues" variant do not depend on the regions at all; the full model's do
    class NoisyRegions:
        def __init__(self, inner):
            self.inner, self.root, self.schema = inner, inner.root, inner.schema

        def video_ids(self):
            return self.inner.video_ids()

        def __contains__(self, video_id):
            return video_id in self.inner

        def __getitem__(self, video_id):
            f = self.inner[video_id]
            rng = np.random.default_rng(3)
            return dataclasses.replace(f, region_features=rng.standard_normal(f.region_features.shape).astype(np.float32))

    noisy = ClipAssembler(NoisyRegions(store), tokenizer)
    steps = ["cut bowl", "shake lime"]
    for use_regions in (False, True):
        settings = sl.StepLocalizationSettings(use_regions=use_regions)
        a = sl.step_scores(model, assembler, sl.candidates(assembler, "recipe0001", settings)[0], steps, settings)
        b = sl.step_scores(model, noisy, sl.candidates(noisy, "recipe0001", settings)[0], steps, settings)
        assert a.shape == (len(assembler.frame_times("recipe0001")), 2)
        if use_regions:
            assert np.abs(a - b).max() > 1e-7  # a random tiny model scores nearly alike, but not regardless of regions
        else:
            np.testing.assert_array_equal(a, b)
    # batching does not change the scores
    settings = sl.StepLocalizationSettings(batch_size=3)
    units = sl.candidates(assembler, "recipe0001", settings)[0]
    np.testing.assert_allclose(
        sl.step_scores(model, assembler, units, steps, settings),
        sl.step_scores(model, assembler, units, steps, dataclasses.replace(settings, batch_size=64)),
        atol=1e-5,
    )


def test_missing_features_skipped_missing_release_named(synth_tiny, store, tokenizer, release, tmp_path, monkeypatch):
    first = next(iter(release.annotations))[1]
    partial = tmp_path / "store"
    shutil.copytree(store.root, partial)
    (partial / "videos" / f"{first}.safetensors").unlink()
    monkeypatch.setattr(sl, "step_scores", lambda model, assembler, units, steps, settings: np.zeros((len(units), len(steps))))
    record = sl.evaluate(None, ClipAssembler(FeatureStore(partial), tokenizer), Benchmark(synth_tiny), sl.StepLocalizationSettings())[0]
    assert [s["video_id"] for s in record["skipped"]] == [first]
    assert record["metrics"]["num_videos"] == len(release.annotations) - 1
    assert record["metrics"]["recall"] == 0.0  # all-equal scores never count as hits
    with pytest.raises(TaskError, match="crosstask_release"):
        sl.evaluate(None, ClipAssembler(store, tokenizer), Benchmark(tmp_path), sl.StepLocalizationSettings())
