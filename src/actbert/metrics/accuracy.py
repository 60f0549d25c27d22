"""Video question answering accuracy (ActBERT 4.2.6): MSR-VTT multiple choice and LSMDC
fill-in-the-blank. Both return percent.

* ``multiple_choice_accuracy(scores [N, C], answers [N])``: a question counts as correct only if
  the true candidate's score is strictly higher than every other candidate's (ties never flatter:
  a model that scores all five captions alike gets 0, not 20 %).
* ``fill_in_blank_accuracy(predictions, answers)``: exact match after lower-casing and stripping
  surrounding whitespace (``" Door "`` == ``"door"``; ``"doors"`` != ``"door"``).

Empty inputs, NaN scores, length mismatches and answer indices outside ``[0, C)`` raise
``MetricInputError``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import MetricInputError


def multiple_choice_correct(scores: np.ndarray, answers: Sequence[int] | np.ndarray) -> np.ndarray:
    """Per question, bool ``[N]``: the true candidate strictly outscores all others."""
    scores = np.asarray(scores, dtype=np.float64)
    answers = np.asarray(answers)
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise MetricInputError(f"scores: expected a non-empty [num_questions, num_candidates] matrix, got shape {scores.shape}")
    if np.isnan(scores).any():
        raise MetricInputError(f"scores: NaN in question(s) {np.unique(np.nonzero(np.isnan(scores))[0])[:10].tolist()}")
    if answers.shape != (scores.shape[0],) or not np.issubdtype(answers.dtype, np.integer):
        raise MetricInputError(f"answers: expected {scores.shape[0]} integer indices, got shape {answers.shape} dtype {answers.dtype}")
    bad = np.nonzero((answers < 0) | (answers >= scores.shape[1]))[0]
    if bad.size:
        raise MetricInputError(f"answers: question {int(bad[0])} has answer {int(answers[bad[0]])}, outside 0..{scores.shape[1] - 1}")
    true_scores = scores[np.arange(scores.shape[0]), answers][:, None]
    # the true candidate is itself >= its own score, so exactly one hit means it wins outright
    return (scores >= true_scores).sum(axis=1) == 1


def multiple_choice_accuracy(scores: np.ndarray, answers: Sequence[int] | np.ndarray) -> float:
    return float(100.0 * np.mean(multiple_choice_correct(scores, answers)))


def normalize_answer(text: str) -> str:
    return text.strip().lower()


def fill_in_blank_accuracy(predictions: Sequence[str], answers: Sequence[str]) -> float:
    if len(predictions) != len(answers):
        raise MetricInputError(f"predictions: {len(predictions)} predictions for {len(answers)} answers")
    if len(answers) == 0:
        raise MetricInputError("answers: empty; accuracy of zero questions is undefined")
    for index, value in enumerate(list(predictions) + list(answers)):
        if not isinstance(value, str):
            side = "predictions" if index < len(predictions) else "answers"
            raise MetricInputError(f"{side}: expected strings, got {type(value).__name__}")
    hits = sum(normalize_answer(p) == normalize_answer(a) for p, a in zip(predictions, answers))
    return 100.0 * hits / len(answers)
