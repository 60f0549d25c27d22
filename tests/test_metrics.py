"""Downstream metrics on hand-computed cases, including ties, empty and malformed inputs."""

from __future__ import annotations

import math
import subprocess
import threading

import numpy as np
import pytest

from actbert.metrics import (
    MetricInputError,
    StepLocalizationVideo,
    caption_metrics,
    crosstask_recall,
    fill_in_blank_accuracy,
    frame_accuracy,
    ground_truth_ranks,
    markdown_row,
    markdown_table,
    multiple_choice_accuracy,
    per_class_accuracy,
    retrieval_metrics,
    segmentation_metrics,
    simple_tokenize,
    video_step_hits,
)
from actbert.metrics import captioning

# ---------------------------------------------------------------------------------------------
# retrieval


def test_retrieval_ranks_are_pessimistic_on_ties():
    sims = np.array(
        [
            [0.9, 0.1, 0.5],  # gt 0 is best → rank 1
            [0.3, 0.3, 0.2],  # gt 1 ties with video 0 → rank 2, not 1
            [0.7, 0.8, 0.6],  # gt 2 is worst → rank 3
        ]
    )
    assert ground_truth_ranks(sims).tolist() == [1, 2, 3]
    result = retrieval_metrics(sims)
    assert result["R@1"] == pytest.approx(100 / 3)
    assert result["R@5"] == 100.0 and result["R@10"] == 100.0
    assert result["MedR"] == 2.0 and result["MeanR"] == 2.0 and result["num_queries"] == 3
    # a constant scorer ranks every ground truth last
    flat = retrieval_metrics(np.zeros((4, 4)))
    assert flat["R@1"] == 0.0 and flat["MedR"] == 4.0


def test_retrieval_recall_at_k_boundaries_and_explicit_gt():
    # 3 texts over 12 videos; the ground truths land on ranks 10, 11 and 1
    sims = np.tile(np.arange(12, 0, -1, dtype=float), (3, 1))  # video j has score 12 - j
    gt = np.array([9, 10, 0])
    assert ground_truth_ranks(sims, gt).tolist() == [10, 11, 1]
    result = retrieval_metrics(sims, gt)
    assert result["R@1"] == pytest.approx(100 / 3)
    assert result["R@5"] == pytest.approx(100 / 3)
    assert result["R@10"] == pytest.approx(200 / 3)
    assert result["MedR"] == 10.0 and result["MeanR"] == pytest.approx(22 / 3)
    # -inf is an ordinary (lowest) score; a +inf ground truth wins unless another +inf ties it
    sims = np.array([[np.inf, 1.0, -np.inf], [np.inf, np.inf, 0.0]])
    assert ground_truth_ranks(sims, np.array([0, 1])).tolist() == [1, 2]


@pytest.mark.parametrize(
    "sims, gt, fragment",
    [
        (np.array([[1.0, np.nan], [0.0, 1.0]]), None, "NaN"),
        (np.zeros((0, 5)), None, "empty"),
        (np.zeros((2, 3)), None, "not square"),
        (np.zeros((2, 3)), np.array([0, 3]), "outside 0..2"),
        (np.zeros((2, 3)), np.array([0.0, 1.0]), "integer"),
        (np.zeros((2, 3)), np.array([0]), "expected 2"),
        (np.zeros(3), None, "2-D"),
    ],
)
def test_retrieval_rejects_bad_input(sims, gt, fragment):
    with pytest.raises(MetricInputError, match=fragment):
        retrieval_metrics(sims, gt)


# ---------------------------------------------------------------------------------------------
# question answering accuracy


def test_multiple_choice_accuracy_ties_count_as_wrong():
    scores = np.array(
        [
            [0.9, 0.1, 0.2, 0.3, 0.4],  # answer 0 wins → correct
            [0.5, 0.5, 0.1, 0.1, 0.1],  # answer 1 tied with 0 → wrong
            [0.1, 0.2, 0.3, 0.4, 0.5],  # answer 4 wins → correct
            [1.0, 2.0, 3.0, 4.0, 5.0],  # answer 0 loses → wrong
        ]
    )
    assert multiple_choice_accuracy(scores, [0, 1, 4, 0]) == 50.0
    assert multiple_choice_accuracy(np.ones((3, 5)), [0, 1, 2]) == 0.0
    with pytest.raises(MetricInputError, match="outside 0..4"):
        multiple_choice_accuracy(scores, [0, 1, 5, 0])
    with pytest.raises(MetricInputError, match="NaN"):
        multiple_choice_accuracy(np.array([[np.nan, 1.0]]), [0])
    with pytest.raises(MetricInputError, match="non-empty"):
        multiple_choice_accuracy(np.zeros((0, 5)), [])
    with pytest.raises(MetricInputError, match="expected 4 integer"):
        multiple_choice_accuracy(scores, [0, 1])


def test_fill_in_blank_accuracy_exact_match_after_normalisation():
    predictions = [" Chops", "door", "doors", "SOMEONE"]
    answers = ["chops", "Door ", "door", "someone"]
    assert fill_in_blank_accuracy(predictions, answers) == 75.0
    with pytest.raises(MetricInputError, match="empty"):
        fill_in_blank_accuracy([], [])
    with pytest.raises(MetricInputError, match="2 predictions for 1"):
        fill_in_blank_accuracy(["a", "b"], ["a"])
    with pytest.raises(MetricInputError, match="strings"):
        fill_in_blank_accuracy([3], ["a"])


# ---------------------------------------------------------------------------------------------
# segmentation


def test_frame_accuracy_per_class_and_background():
    target = np.array([0, 0, 1, 1, 1, 2, -100])
    pred = np.array([0, 1, 1, 1, 0, 2, 5])  # the padded last frame is never counted
    assert frame_accuracy(pred, target) == pytest.approx(400 / 6)
    assert per_class_accuracy(pred, target) == pytest.approx({0: 50.0, 1: 200 / 3, 2: 100.0})
    result = segmentation_metrics(pred, target)
    assert result["num_frames"] == 6
    assert result["mean_class_accuracy"] == pytest.approx((50 + 200 / 3 + 100) / 3)
    # ignoring background 0 scores frames 2..5 only: 3 of 4 right
    assert frame_accuracy(pred, target, ignore_label=0) == 75.0
    assert 0 not in per_class_accuracy(pred, target, ignore_label=0)
    # per-video lists pool the frames exactly like one long array
    assert frame_accuracy([pred[:3], pred[3:]], [target[:3], target[3:]]) == pytest.approx(400 / 6)


def test_segmentation_rejects_bad_input():
    with pytest.raises(MetricInputError, match="3 frames but targets"):
        frame_accuracy([np.array([0, 1, 2])], [np.array([0, 1])])
    with pytest.raises(MetricInputError, match="ignored label"):
        frame_accuracy(np.array([1, 1]), np.array([0, -100]), ignore_label=0)
    with pytest.raises(MetricInputError, match="no frames"):
        frame_accuracy([], [])
    with pytest.raises(MetricInputError, match="integer labels"):
        frame_accuracy(np.array([0.0, 1.0]), np.array([0, 1]))
    with pytest.raises(MetricInputError, match="2 videos"):
        frame_accuracy([np.array([0]), np.array([1])], [np.array([0])])


# ---------------------------------------------------------------------------------------------
# CrossTask step localization recall


def crosstask_case():
    v1 = StepLocalizationVideo(
        "A",
        "v1",
        step_scores=np.array(
            [
                # step0 step1 step2
                [0.1, 0.0, 0.5],
                [0.9, 0.0, 0.5],
                [0.2, 0.1, 0.5],
                [0.0, 0.3, 0.5],
                [0.0, 0.8, 0.5],
            ]
        ),
        clip_times=np.array([0.5, 1.5, 2.5, 3.5, 4.5]),
        # step0 → t=1.5 inside (1, 2): hit; step1 → t=4.5 outside (2, 3): miss;
        # step2 all tied, clips 0.5..4.5 not all inside (3, 4): miss
        gt_steps=[(0, 1.0, 2.0), (1, 2.0, 3.0), (2, 3.0, 4.0)],
    )
    v2 = StepLocalizationVideo(
        "A",
        "v2",
        step_scores=np.array([[9.0, 0.2, 0.0], [0.0, 0.2, 0.0], [0.0, 0.2, 1.0]]),
        clip_times=np.array([1.0, 2.0, 3.0]),
        # step0 absent from the ground truth (not scored); step1 all tied but every clip lies in
        # (0, 10): hit, counted once despite two intervals; step2 → t=3.0 on the closed end: hit
        gt_steps=[(1, 0.0, 10.0), (1, 20.0, 30.0), (2, 2.5, 3.0)],
    )
    v3 = StepLocalizationVideo("B", "v3", np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([0.0, 1.0]), [(0, 0.5, 0.9)])
    v4 = StepLocalizationVideo("C", "v4", np.array([[1.0]]), np.array([0.0]), [])
    return [v1, v2, v3, v4]


def test_crosstask_recall_hand_computed():
    v1, v2, v3, v4 = crosstask_case()
    assert video_step_hits(v1) == (1, 3)
    assert video_step_hits(v2) == (2, 2)
    assert video_step_hits(v3) == (0, 1)
    result = crosstask_recall([v1, v2, v3, v4])
    assert result["per_task"] == pytest.approx({"A": 60.0, "B": 0.0})  # A: 3 hits / 5 steps
    assert result["recall"] == pytest.approx(30.0)  # mean over tasks, not 3/6 over videos
    assert (result["num_tasks"], result["num_videos"], result["num_steps"], result["num_hits"]) == (2, 4, 6, 3)
    assert result["tasks_without_steps"] == ["C"]


def test_crosstask_recall_rejects_bad_input():
    v1 = crosstask_case()[0]
    with pytest.raises(MetricInputError, match="empty"):
        crosstask_recall([])
    with pytest.raises(MetricInputError, match="no ground-truth step"):
        crosstask_recall([crosstask_case()[3]])
    bad = StepLocalizationVideo("A", "x", v1.step_scores, v1.clip_times, [(3, 0.0, 1.0)])
    with pytest.raises(MetricInputError, match="step 3 outside 0..2"):
        crosstask_recall([bad])
    nan_scores = v1.step_scores.copy()
    nan_scores[0, 0] = np.nan
    with pytest.raises(MetricInputError, match="NaN"):
        video_step_hits(StepLocalizationVideo("A", "x", nan_scores, v1.clip_times, v1.gt_steps))
    with pytest.raises(MetricInputError, match="clip_times"):
        video_step_hits(StepLocalizationVideo("A", "x", v1.step_scores, v1.clip_times[:2], v1.gt_steps))


# ---------------------------------------------------------------------------------------------
# captioning


def test_bleu_rouge_hand_computed_with_brevity_penalty():
    # hyp 6 words, ref 7: p1 = 6/6, p2 = 4/5, p3 = 3/4, p4 = 2/3, BP = exp(1 - 7/6)
    scores = caption_metrics({"c": "the cat sat on the mat"}, {"c": ["the cat sat on the red mat"]}, meteor=False, tokenizer="simple")
    bp = math.exp(1 - 7 / 6)
    assert scores.scores["BLEU-1"] == pytest.approx(100 * bp, abs=1e-4)
    assert scores.scores["BLEU-3"] == pytest.approx(100 * bp * (1 * 0.8 * 0.75) ** (1 / 3), abs=1e-4)
    assert scores.scores["BLEU-4"] == pytest.approx(100 * bp * (1 * 0.8 * 0.75 * 2 / 3) ** (1 / 4), abs=1e-4)
    # ROUGE-L: LCS 6, P = 1, R = 6/7, beta = 1.2
    p, r, beta2 = 1.0, 6 / 7, 1.2**2
    assert scores.scores["ROUGE-L"] == pytest.approx(100 * (1 + beta2) * p * r / (r + beta2 * p))
    assert "METEOR" not in scores.scores and scores.to_dict()["METEOR"] is None
    assert scores.tokenizer == "simple" and any("disabled" in note for note in scores.notes)


def test_caption_identical_and_disjoint_without_java():
    hyps = {1: "a man slices an onion on a board", 2: "the dog runs across the park"}
    refs = {1: ["a man slices an onion on a board"], 2: ["blue sky over quiet water today"]}
    identical = caption_metrics({1: hyps[1]}, {1: refs[1]}, meteor=False, tokenizer="simple")
    assert identical.scores["BLEU-4"] == pytest.approx(100.0)
    assert identical.scores["ROUGE-L"] == pytest.approx(100.0)
    disjoint = caption_metrics({2: hyps[2]}, {2: refs[2]}, meteor=False, tokenizer="simple")
    assert disjoint.scores["BLEU-1"] < 1e-6 and disjoint.scores["BLEU-4"] < 1e-6
    assert disjoint.scores["ROUGE-L"] == 0.0
    both = caption_metrics(hyps, refs, meteor=False, tokenizer="simple")
    assert both.scores["CIDEr"] > 0.5  # the matched clip scores, the disjoint one adds 0
    assert caption_metrics({2: hyps[2], 3: "x y"}, {2: refs[2], 3: ["z w"]}, meteor=False, tokenizer="simple").scores["CIDEr"] == 0.0


def test_caption_metrics_rejects_bad_input():
    with pytest.raises(MetricInputError, match="empty"):
        caption_metrics({}, {})
    with pytest.raises(MetricInputError, match="keys differ"):
        caption_metrics({"a": "x"}, {"b": ["x"]})
    with pytest.raises(MetricInputError, match="non-empty list"):
        caption_metrics({"a": "x"}, {"a": []})
    with pytest.raises(MetricInputError, match="non-empty list"):
        caption_metrics({"a": "x"}, {"a": "x"})
    with pytest.raises(MetricInputError, match="non-empty string"):
        caption_metrics({"a": "x"}, {"a": ["  "]})


def test_simple_tokenizer():
    assert simple_tokenize("The Cat, sat -- on the MAT. Don't!") == "the cat sat on the mat don't"


def test_without_java_falls_back_and_says_so(monkeypatch):
    monkeypatch.setattr(captioning, "java_available", lambda: False)
    with pytest.warns(RuntimeWarning, match="Java not found"):
        scores = caption_metrics({"a": "A man, cuts bread."}, {"a": ["a man cuts bread"]})
    assert scores.tokenizer == "simple"
    assert "METEOR" not in scores.scores
    assert scores.scores["BLEU-4"] == pytest.approx(100.0)
    assert any("PTB tokenizer replaced" in n for n in scores.notes)
    assert any("METEOR not computed: Java not found" in n for n in scores.notes)


class _FakeMeteor:
    """Stands in for pycocoevalcap's Meteor: a real child process, a lock, a failing score."""

    instances: list = []

    def __init__(self):
        self.meteor_p = subprocess.Popen(["sleep", "60"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lock = threading.Lock()
        _FakeMeteor.instances.append(self)

    def compute_score(self, gts, res):
        self.lock.acquire()  # like pycocoevalcap, which never releases it on failure
        line = self.meteor_p.stdout.readline()  # blocks until the process dies
        return float(line.strip()), []


def test_meteor_hang_is_killed_and_reported(monkeypatch):
    import pycocoevalcap.meteor.meteor as meteor_module

    monkeypatch.setattr(meteor_module, "Meteor", _FakeMeteor)
    monkeypatch.setattr(captioning, "java_available", lambda: True)
    _FakeMeteor.instances.clear()
    with pytest.warns(RuntimeWarning, match="timed out"):
        scores = caption_metrics({"a": "a man cuts bread"}, {"a": ["a man cuts bread"]}, tokenizer="simple", meteor_timeout_s=0.5)
    assert "METEOR" not in scores.scores and scores.scores["BLEU-4"] == pytest.approx(100.0)
    (fake,) = _FakeMeteor.instances
    assert fake.meteor_p.poll() is not None  # the child was reaped
    assert fake.meteor_p.stdin.closed and fake.meteor_p.stdout.closed
    assert not fake.lock.locked()


def test_real_java_ptb_tokenizer_and_meteor(monkeypatch):
    if not captioning.java_available():
        pytest.skip("Java not installed: METEOR / PTB tokenizer cannot run (fallback covered above)")
    import pycocoevalcap.meteor.meteor as meteor_module

    created = []

    class RecordingMeteor(meteor_module.Meteor):
        def __init__(self):
            super().__init__()
            created.append(self)

    monkeypatch.setattr(meteor_module, "Meteor", RecordingMeteor)
    hyps = {"same": "A man slices an onion, on a board.", "other": "the dog runs across the park"}
    refs = {"same": ["a man slices an onion on a board"], "other": ["blue sky over quiet water today"]}
    scores = caption_metrics(hyps, refs)
    assert scores.tokenizer == "ptb" and scores.notes == ()
    # PTB tokenization lower-cases and drops punctuation, so "same" matches its reference exactly
    assert 0.0 < scores.scores["METEOR"] < 100.0
    assert scores.scores["ROUGE-L"] == pytest.approx(50.0)  # mean of 100 and 0
    assert set(scores.to_dict()) >= {"BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "notes"}
    (meteor,) = created
    assert meteor.meteor_p.poll() is not None  # the Java process is gone once the call returns
    single = caption_metrics({"same": hyps["same"]}, {"same": refs["same"]})
    assert single.scores["METEOR"] > 95.0 and single.scores["BLEU-4"] == pytest.approx(100.0)


# ---------------------------------------------------------------------------------------------
# Markdown table


def test_markdown_table_rendering():
    rows = {
        "ActBERT": {"R@1": 8.6, "MedR": 23, "METEOR": None, "per_class": {1: 2.0}, "notes": ["x"]},
        "baseline": {"R@1": 4.2, "MedR": 54, "METEOR": 11.55},
    }
    table = markdown_table(rows, row_header="method")
    assert table == (
        "| method | R@1 | MedR | METEOR |\n"
        "| --- | --- | --- | --- |\n"
        "| ActBERT | 8.60 | 23 | – |\n"
        "| baseline | 4.20 | 54 | 11.55 |\n"
    )
    assert markdown_table([{"a": 1.23456, "b": "x|y"}], digits=3) == "| a | b |\n| --- | --- |\n| 1.235 | x\\|y |\n"
    assert markdown_row(["R@1", float("nan"), True]) == "| R@1 | NaN | yes |"
