"""Video question answering (ActBERT 4.2.6): MSR-VTT multiple choice (Table 5) and LSMDC
fill-in-the-blank (Table 6). Primary metric of both: ``accuracy`` (percent).

**Multiple choice** (``MSR_MC_test.csv``, JSFusion's 2,990-question release): each test video comes
with five captions, one of them true. As in the paper, each (video, candidate) pair goes through
ActBERT and the matching head (the "linear classifier upon the output feature",
``model.match_score``) scores it; the choice is the candidate with the highest score. Ties are
pessimistic: a question counts as correct only if the true candidate scores *strictly* higher than
all four others (``actbert.metrics.multiple_choice_correct``) -- a model that scores all five alike
gets 0, not 20 %. The recorded ``chosen`` index is the lowest-index maximum.

**Fill in the blank** (``LSMDC16_FIB_{train,test}.csv``): the blank ``_____`` of the sentence
becomes ``[MASK]`` and the masked-language-model head predicts the missing word from the text and
the clip. Answers are words and a word may be several WordPiece pieces, so a candidate word ``w``
of ``n`` pieces is scored with ``n`` consecutive ``[MASK]``s as the mean log-probability of its
pieces (one forward pass per distinct piece count, shared by all candidates of that length). The
candidates are the distinct answers of the *training* file (the answer vocabulary, as FIB
baselines use): the test answer's own length is never looked at. A test answer outside that
vocabulary cannot be predicted (the record's ``answer_coverage`` is the resulting upper bound).
Accuracy is exact match after lower-casing (``fill_in_blank_accuracy``); a tie at the top score
counts as wrong (the prediction is recorded as ``"a|b"``, which matches no answer).

**Fine-tuning** (``finetune``): one model for both formats, trained jointly -- each step adds

* the matching loss on MSR-VTT training captions (true pairs + ``negatives`` captions of other
  training videos each; retrieval's :func:`~actbert.tasks.retrieval.matching_batch`; paper: "we
  fine-tune the pre-trained ActBERT on the MSR-VTT training set", lr 1e-4, Adam), and
* the masked-word cross-entropy on the FIB training questions (the blank filled with one
  ``[MASK]`` per piece of the answer, the targets its pieces).

``settings.subtasks`` restricts both fine-tuning and evaluation to one format; a format whose
annotation files are missing is skipped.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from actbert.config import AT_LEAST_ONE, Range
from actbert.data import readers
from actbert.metrics.accuracy import fill_in_blank_accuracy, multiple_choice_correct, normalize_answer
from actbert.data.clips import ClipAssembler
from actbert.models.interface import device_of, require
from actbert.models.processing import Item, VideoRef, processor_for
from actbert.tasks.common import Benchmark, TaskError, batched, make_record, on_device
from actbert.train.finetune import TrainLog, train_loop
from actbert.tasks.retrieval import matching_batch, msrvtt_training_pairs
from actbert.tasks.scoring import score_items
from actbert.utils.precision import autocast

TASK = "videoqa"
PRIMARY = "accuracy"
SUBTASKS = ("multiple_choice", "fill_in_blank")
REQUIRES = {"multiple_choice": ("pair_scores",), "fill_in_blank": ("masked_tokens",)}
_BLANK = re.compile(r"_{3,}")


@dataclass
class VideoQASettings:
    # numeric settings not named here must be >= 0 (checked by tasks.registry)
    RANGES: ClassVar[dict[str, Range]] = {"batch_size": AT_LEAST_ONE, "train_batch": AT_LEAST_ONE, "fib_batch": AT_LEAST_ONE,
              "max_answer_pieces": AT_LEAST_ONE}
    batch_size: int = 64  # rows per forward pass when scoring
    dtype: str = "fp32"  # fp32 | bf16 (autocast)
    device: str = "auto"  # auto (a GPU if there is one) | cpu | cuda | cuda:N
    max_questions: int = 0  # 0 = all test questions; else the first N (budgeted runs say so)
    use_regions: bool = True
    subtasks: list[str] = field(default_factory=lambda: list(SUBTASKS))
    # joint fine-tuning: each step = one matching batch (MSR-VTT train) + one FIB batch (LSMDC train)
    steps: int = 60
    lr: float = 1e-4  # paper (multiple choice): 1e-4, Adam
    train_batch: int = 8  # true MSR-VTT pairs per step (each with `negatives` mismatched captions)
    negatives: int = 1
    fib_batch: int = 8  # FIB training questions per step
    max_answer_pieces: int = 4  # longer answers are not used for training and never predicted
    seed: int = 0


def _check_subtasks(settings: VideoQASettings) -> list[str]:
    unknown = [s for s in settings.subtasks if s not in SUBTASKS]
    if unknown:
        raise TaskError(f"videoqa settings: unknown subtask(s) {unknown}; known: {list(SUBTASKS)}")
    return list(settings.subtasks)


# ----------------------------------------------------------------------------- multiple choice


def choice_scores(model: Any, assembler: ClipAssembler, items: Sequence[readers.MultipleChoiceItem], batch_size: int = 64, dtype: str = "fp32", use_regions: bool = True, progress: bool = True) -> np.ndarray:
    """``pair_scores`` of every (video, candidate) pair: float32 ``[N, C]``."""
    C = len(items[0].candidates)
    if any(len(it.candidates) != C for it in items):
        raise TaskError("multiple choice: questions have different numbers of candidates")
    rows = [Item(VideoRef(it.video_id), cand) for it in items for cand in it.candidates]
    return score_items(model, assembler, rows, batch_size, dtype, use_regions, "multiple choice", progress).reshape(len(items), C)


def evaluate_multiple_choice(model: Any, assembler: ClipAssembler, bench: Benchmark, settings: VideoQASettings, variant: str = "", protocol_suffix: str = "zero-shot") -> dict:
    start = time.perf_counter()
    path = bench.require(bench.msrvtt_mc, "MSR-VTT multiple choice")
    items = readers.read_multiple_choice(path)
    keep = [it for it in items if it.video_id in assembler]
    skipped = [{"video_id": it.video_id, "key": it.key, "error": "not in the feature store"} for it in items if it.video_id not in assembler]
    if settings.max_questions:
        keep = keep[: settings.max_questions]
    if not keep:
        raise TaskError(f"{path}: no question's video has features in {assembler.store_name}")
    scores = choice_scores(model, assembler, keep, settings.batch_size, settings.dtype, settings.use_regions)
    answers = np.asarray([it.answer for it in keep], np.int64)
    correct = multiple_choice_correct(scores, answers)
    notes = ["ties count as wrong (the true candidate must score strictly highest)"]
    if settings.max_questions:
        notes.append(f"limited to the first {len(keep)} questions (max_questions={settings.max_questions})")
    if skipped:
        notes.append(f"{len(skipped)} question(s) skipped: no features")
    if not settings.use_regions:
        notes.append("without region cues")
    return make_record(
        TASK,
        "msrvtt",
        f"multiple choice, {protocol_suffix}",
        {"accuracy": float(100.0 * correct.mean())},
        PRIMARY,
        variant=variant,
        settings=asdict(settings),
        seconds=time.perf_counter() - start,
        notes=notes,
        extra={
            "questions": [it.key or it.video_id for it in keep],
            "answers": answers.tolist(),
            "chosen": scores.argmax(axis=1).tolist(),  # lowest index among equal maxima
            "correct": correct.tolist(),
            "scores": scores.round(5).tolist(),
            "skipped": skipped,
        },
    )


# ----------------------------------------------------------------------------- fill in the blank


def blank_pieces(tokenizer: Any, item: readers.BlankItem, num_masks: int, mask_id: int) -> list[int]:
    """The sentence as word-piece ids with its blank replaced by ``num_masks`` x ``mask_id``."""
    match = _BLANK.search(item.sentence)
    if match is None:
        raise TaskError(f"fill-in-the-blank: video {item.video_id!r}: no blank '_____' in sentence {item.sentence!r}")
    left, right = item.sentence[: match.start()], item.sentence[match.end() :]
    return tokenizer.encode(left) + [mask_id] * num_masks + tokenizer.encode(right)


def fib_batch(processor: Any, items: Sequence[readers.BlankItem], num_masks: Sequence[int], use_regions: bool, where: str = "fill-in-the-blank"):
    """Rows for ``items`` with ``num_masks[i]`` masks each -> (the model's batch, mask positions bool ``[B, Lt]``).

    Raises ``TaskError`` if truncation cut a mask (the sentence is too long for the text budget).
    """
    tok = processor.tokenizer
    rows = [Item(VideoRef(it.video_id, it.start, it.end), tuple(blank_pieces(tok, it, n, tok.mask_id))) for it, n in zip(items, num_masks)]
    batch = processor.batch(rows, use_regions=use_regions)
    masks = processor.mask_positions(batch)
    counts = masks.sum(dim=1).tolist()
    for it, n, got in zip(items, num_masks, counts):
        if got != n:
            raise TaskError(f"{where}: video {it.video_id!r}: sentence {it.sentence!r} lost its blank to text truncation ({got} of {n} masks kept)")
    return batch, masks


def blank_logits(model: Any, batch, masks: torch.Tensor) -> torch.Tensor:
    """Masked-token logits at the mask positions, row-major: ``[N_masks, vocab]``."""
    return model.masked_token_logits(on_device(batch, model), masks.to(device_of(model)))


@dataclass
class AnswerVocabulary:
    """Candidate answers (lower-cased, distinct, sorted) grouped by their number of pieces."""

    words: list[str]
    pieces: list[list[int]]

    @classmethod
    def from_answers(cls, tokenizer: Any, answers: Sequence[str], max_pieces: int) -> "AnswerVocabulary":
        words, pieces = [], []
        for w in sorted({normalize_answer(a) for a in answers}):
            ids = tokenizer.encode(w)
            if 1 <= len(ids) <= max_pieces:
                words.append(w)
                pieces.append(ids)
        return cls(words, pieces)

    def lengths(self) -> list[int]:
        return sorted({len(p) for p in self.pieces})


@torch.no_grad()
def candidate_scores(model: Any, assembler: ClipAssembler, items: Sequence[readers.BlankItem], vocab: AnswerVocabulary, batch_size: int = 64, dtype: str = "fp32", use_regions: bool = True, progress: bool = True) -> np.ndarray:
    """Mean piece log-probability of every candidate word in every blank: float32 ``[N, K]``."""
    require(model, REQUIRES["fill_in_blank"], "fill-in-the-blank")
    model.eval()
    processor = processor_for(model, assembler)
    if not vocab.words:
        raise TaskError("fill-in-the-blank: the answer vocabulary is empty")
    scores = np.full((len(items), len(vocab.words)), -np.inf, np.float32)
    by_len = {n: [k for k, p in enumerate(vocab.pieces) if len(p) == n] for n in vocab.lengths()}
    rows = [(q, n) for q in range(len(items)) for n in by_len]
    bar = tqdm(total=len(rows), desc="fill-in-the-blank scores", unit="row", leave=False, disable=not progress)
    for chunk in batched(rows, batch_size):
        batch, masks = fib_batch(processor, [items[q] for q, _ in chunk], [n for _, n in chunk], use_regions)
        with autocast(dtype, device_of(model).type):
            logp = F.log_softmax(blank_logits(model, batch, masks).float(), dim=-1).cpu()  # [sum n, V]
        offset = 0
        for q, n in chunk:
            rows_logp = logp[offset : offset + n]  # [n, V]
            offset += n
            cand = torch.tensor([vocab.pieces[k] for k in by_len[n]], dtype=torch.long)  # [Kn, n]
            s = rows_logp[torch.arange(n)[None, :], cand].mean(dim=1)  # [Kn]
            scores[q, by_len[n]] = s.numpy()
        bar.update(len(chunk))
    bar.close()
    return scores


def pick_answers(scores: np.ndarray, words: Sequence[str]) -> list[str]:
    """The top candidate per question; a tie at the top gives ``"w1|w2"`` (never an exact match)."""
    out = []
    for row in np.asarray(scores):
        top = np.flatnonzero(row == row.max())
        out.append("|".join(words[i] for i in top))
    return out


def evaluate_fill_in_blank(model: Any, assembler: ClipAssembler, bench: Benchmark, settings: VideoQASettings, variant: str = "", protocol_suffix: str = "zero-shot") -> dict:
    start = time.perf_counter()
    train_items = readers.read_fill_in_blank(bench.require(bench.lsmdc("train"), "LSMDC fill-in-the-blank train"))
    test_path = bench.require(bench.lsmdc("test"), "LSMDC fill-in-the-blank test")
    items = readers.read_fill_in_blank(test_path)
    keep = [it for it in items if it.video_id in assembler]
    skipped = [{"video_id": it.video_id, "sentence": it.sentence, "error": "not in the feature store"} for it in items if it.video_id not in assembler]
    if settings.max_questions:
        keep = keep[: settings.max_questions]
    if not keep:
        raise TaskError(f"{test_path}: no question's video has features in {assembler.store_name}")
    vocab = AnswerVocabulary.from_answers(assembler.tokenizer, [it.answer for it in train_items], settings.max_answer_pieces)
    scores = candidate_scores(model, assembler, keep, vocab, settings.batch_size, settings.dtype, settings.use_regions)
    predictions = pick_answers(scores, vocab.words)
    answers = [it.answer for it in keep]
    accuracy = fill_in_blank_accuracy(predictions, answers)
    known = set(vocab.words)
    coverage = 100.0 * float(np.mean([normalize_answer(a) in known for a in answers]))
    notes = [
        f"candidates: the {len(vocab.words)} distinct training answers of <= {settings.max_answer_pieces} pieces; "
        f"{coverage:.1f}% of test answers are among them (accuracy upper bound)",
        "a tie at the top score counts as wrong",
    ]
    if settings.max_questions:
        notes.append(f"limited to the first {len(keep)} questions (max_questions={settings.max_questions})")
    if skipped:
        notes.append(f"{len(skipped)} question(s) skipped: no features")
    if not settings.use_regions:
        notes.append("without region cues")
    return make_record(
        TASK,
        "lsmdc",
        f"fill-in-the-blank, {protocol_suffix}",
        {"accuracy": accuracy},
        PRIMARY,
        variant=variant,
        settings=asdict(settings),
        seconds=time.perf_counter() - start,
        notes=notes,
        extra={
            "answer_coverage": coverage,
            "sentences": [it.sentence for it in keep],
            "answers": answers,
            "predictions": predictions,
            # per question, the accuracy's own test (metrics.statistics reads it)
            "correct": [normalize_answer(p) == normalize_answer(a) for p, a in zip(predictions, answers)],
            "examples": [{"video_id": it.video_id, "sentence": it.sentence, "answer": it.answer, "prediction": p} for it, p in list(zip(keep, predictions))[:5]],
            "skipped": skipped,
        },
    )


# ----------------------------------------------------------------------------- fine-tuning


@dataclass
class QATrainLog(TrainLog):
    """Joint loss per step (``losses``) and its two parts."""

    parts: dict[str, list[float]] = field(default_factory=dict)


def fib_training_items(bench: Benchmark, assembler: ClipAssembler, max_pieces: int) -> list[tuple[readers.BlankItem, list[int]]]:
    """(question, answer pieces) for every FIB training question with features and a short enough answer."""
    path = bench.require(bench.lsmdc("train"), "LSMDC fill-in-the-blank train")
    out = []
    for it in readers.read_fill_in_blank(path):
        pieces = assembler.tokenizer.encode(normalize_answer(it.answer))
        if it.video_id in assembler and 1 <= len(pieces) <= max_pieces:
            out.append((it, pieces))
    if not out:
        raise TaskError(f"{path}: no training question has features in {assembler.store_name} and an answer of 1..{max_pieces} pieces")
    return out


def fib_loss(model: Any, processor: Any, questions: Sequence[tuple[readers.BlankItem, list[int]]], use_regions: bool) -> torch.Tensor:
    """Mean cross-entropy of the answer pieces at the masks (one mask per piece)."""
    batch, masks = fib_batch(processor, [q for q, _ in questions], [len(p) for _, p in questions], use_regions, "fill-in-the-blank train")
    targets = torch.tensor([i for _, p in questions for i in p], dtype=torch.long, device=device_of(model))
    return F.cross_entropy(blank_logits(model, batch, masks).float(), targets)


def finetune(model: Any, assembler: ClipAssembler, bench: Benchmark, settings: VideoQASettings) -> QATrainLog:
    """Joint fine-tuning of the whole model on MSR-VTT matching + LSMDC FIB (module docstring)."""
    subtasks = _check_subtasks(settings)
    pairs = fib = None
    if "multiple_choice" in subtasks and bench.msrvtt_train_ids.exists() and bench.msrvtt_data.exists():
        pairs = msrvtt_training_pairs(bench, assembler)
    if "fill_in_blank" in subtasks and bench.lsmdc("train").exists():
        fib = fib_training_items(bench, assembler, settings.max_answer_pieces)
    if pairs is None and fib is None:
        raise TaskError(f"{bench.root}: no training files for {subtasks} (MSR-VTT train 9k + data JSON, LSMDC FIB train)")
    if pairs is not None:
        require(model, REQUIRES["multiple_choice"], TASK)
    if fib is not None:
        require(model, REQUIRES["fill_in_blank"], TASK)
    processor = processor_for(model, assembler)
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    parts: dict[str, list[float]] = {}

    def loss_at(step: int) -> torch.Tensor:
        total = []
        with autocast(settings.dtype, device_of(model).type):
            if pairs is not None:
                b, labels = matching_batch(processor, pairs, rng, settings.train_batch, settings.negatives, settings.use_regions)
                match = model.pair_loss(on_device(b, model), labels)
                parts.setdefault("match", []).append(match.item())
                total.append(match)
            if fib is not None:
                idx = rng.choice(len(fib), size=min(settings.fib_batch, len(fib)), replace=False)
                blank = fib_loss(model, processor, [fib[i] for i in idx], settings.use_regions)
                parts.setdefault("fill_in_blank", []).append(blank.item())
                total.append(blank)
        return sum(total)

    log = train_loop(model.parameters(), loss_at, settings.steps, settings.lr, desc="videoqa fine-tune", modules=[model])
    return QATrainLog(losses=log.losses, seconds=log.seconds, parts=parts)


# ----------------------------------------------------------------------------- entry point


def evaluate(model: Any, assembler: ClipAssembler, bench: Benchmark, settings: VideoQASettings, variant: str = "", finetuned: bool = False) -> list[dict]:
    """Records for each subtask whose test file exists (multiple choice: MSR-VTT; FIB: LSMDC)."""
    subtasks = _check_subtasks(settings)
    suffix = "fine-tuned" if finetuned else "zero-shot"
    records = []
    if "multiple_choice" in subtasks and bench.msrvtt_mc.exists():
        records.append(evaluate_multiple_choice(model, assembler, bench, settings, variant, suffix))
    if "fill_in_blank" in subtasks and bench.lsmdc("test").exists():
        records.append(evaluate_fill_in_blank(model, assembler, bench, settings, variant, suffix))
    if not records:
        raise TaskError(f"{bench.root}: none of the video QA test files exist ({bench.msrvtt_mc}, {bench.lsmdc('test')})")
    return records
