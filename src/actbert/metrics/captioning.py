"""Captioning metrics through pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr (ActBERT 4.2.2, Table 1).

``caption_metrics(hypotheses, references)`` takes ``{clip_id: generated caption}`` and
``{clip_id: [reference captions]}`` (same keys) and returns ``CaptionScores``:

* ``scores``: ``{"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}`` on the
  paper's scale — BLEU, METEOR and ROUGE-L ×100, CIDEr as is (Table 1 reports CIDEr 0.65);
  BLEU is corpus-level (pycocoevalcap ``Bleu``, "closest" reference length for the brevity
  penalty), ROUGE-L (β = 1.2) and METEOR 1.5 are averaged over clips, CIDEr is CIDEr-D with
  document frequencies from the given references.
* ``notes``: what did not run as usual. Captions are tokenized with the Stanford PTB tokenizer
  (Java) like the COCO evaluation; without Java the fallback is a lower-case word tokenizer
  (``simple_tokenize``) and a note says so. METEOR needs Java too: when Java is missing or the
  METEOR process fails or times out, ``"METEOR"`` is absent from ``scores`` (``None`` in
  ``to_dict()``), a warning is issued, a note explains it, and the other metrics are reported.
* ``tokenizer``: ``"ptb"`` or ``"simple"``.

The METEOR Java subprocess is always shut down (stdin closed, process killed and reaped, pipes
closed) before ``caption_metrics`` returns, also on failure.
"""

from __future__ import annotations

import math
import re
import shutil
import threading
import warnings
from dataclasses import dataclass, field
from typing import Hashable, Mapping, Sequence

from .errors import MetricInputError

METRIC_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class CaptionScores:
    scores: dict[str, float]
    notes: tuple[str, ...] = ()
    tokenizer: str = "ptb"
    num_captions: int = 0
    # hypothesis key -> that caption's CIDEr (document frequencies of the whole set; the corpus
    # CIDEr is their mean): the per-item outcomes of metrics.statistics
    cider_per_item: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """All metric names (``None`` where a metric could not be computed) + notes + tokenizer."""
        out: dict[str, object] = {name: self.scores.get(name) for name in METRIC_NAMES}
        out.update(notes=list(self.notes), tokenizer=self.tokenizer, num_captions=self.num_captions)
        return out


def simple_tokenize(text: str) -> str:
    """Lower-case words and numbers (apostrophe contractions kept), punctuation dropped."""
    return " ".join(_WORD.findall(text.lower()))


def java_available() -> bool:
    return shutil.which("java") is not None


def _check_inputs(hypotheses: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> list:
    if not hypotheses:
        raise MetricInputError("hypotheses: empty; captioning metrics need at least one caption")
    if set(hypotheses) != set(references):
        missing = [k for k in hypotheses if k not in references][:5]
        extra = [k for k in references if k not in hypotheses][:5]
        raise MetricInputError(f"references: keys differ from hypotheses (no references for {missing}, no hypothesis for {extra})")
    keys = list(hypotheses)
    for key in keys:
        if not isinstance(hypotheses[key], str):
            raise MetricInputError(f"hypotheses[{key!r}]: expected a string, got {type(hypotheses[key]).__name__}")
        refs = references[key]
        if isinstance(refs, str) or not isinstance(refs, Sequence) or len(refs) == 0:
            raise MetricInputError(f"references[{key!r}]: expected a non-empty list of strings")
        for ref in refs:
            if not isinstance(ref, str) or not ref.strip():
                raise MetricInputError(f"references[{key!r}]: every reference must be a non-empty string, got {ref!r}")
    return keys


def _tokenize(hypotheses, references, keys, notes: list[str], tokenizer: str):
    """``(res, gts, name)`` with res = {i: [hyp]}, gts = {i: [refs...]} keyed by position."""
    if tokenizer not in ("auto", "ptb", "simple"):
        raise ValueError(f"tokenizer must be 'auto', 'ptb' or 'simple', got {tokenizer!r}")
    raw_res = {i: [hypotheses[k].replace("\n", " ")] for i, k in enumerate(keys)}
    raw_gts = {i: [r.replace("\n", " ") for r in references[k]] for i, k in enumerate(keys)}
    if tokenizer != "simple":
        if java_available():
            try:
                from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

                ptb = PTBTokenizer()
                res = ptb.tokenize({i: [{"caption": c} for c in v] for i, v in raw_res.items()})
                gts = ptb.tokenize({i: [{"caption": c} for c in v] for i, v in raw_gts.items()})
                if set(res) == set(raw_res) and all(len(gts[i]) == len(raw_gts[i]) for i in raw_gts):
                    return res, gts, "ptb"
                notes.append("PTB tokenizer returned incomplete output; fell back to the simple lower-case tokenizer")
            except Exception as exc:  # a broken Java install must not cost the other metrics
                notes.append(f"PTB tokenizer failed ({exc}); fell back to the simple lower-case tokenizer")
        else:
            notes.append("Java not found: PTB tokenizer replaced by the simple lower-case tokenizer")
    res = {i: [simple_tokenize(c) for c in v] for i, v in raw_res.items()}
    gts = {i: [simple_tokenize(c) for c in v] for i, v in raw_gts.items()}
    return res, gts, "simple"


def _close_meteor(scorer) -> None:
    """Shut the METEOR Java process down now (pycocoevalcap only does it in ``__del__``)."""
    lock = getattr(scorer, "lock", None)
    if lock is not None and lock.locked():
        lock.release()  # compute_score left it held after a failure; __del__ would deadlock on it
    process = getattr(scorer, "meteor_p", None)
    if process is None:
        return
    for stream in (process.stdin,):
        try:
            stream.close()
        except Exception:
            pass
    if process.poll() is None:
        process.kill()
    try:
        process.wait(timeout=10)
    except Exception:
        pass
    for stream in (process.stdout, process.stderr):
        try:
            stream.close()
        except Exception:
            pass


def _meteor(gts, res, timeout_s: float) -> tuple[float | None, str | None]:
    if not java_available():
        return None, "METEOR not computed: Java not found (METEOR 1.5 is a Java program)"
    try:
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
    except Exception as exc:
        return None, f"METEOR not computed: could not start METEOR ({exc})"
    # a hung JVM must not hang the evaluation: killing it makes the pending read return EOF
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        scorer.meteor_p.kill()

    watchdog = threading.Timer(timeout_s, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        # METEOR's stdio protocol cannot take an empty hypothesis; one placeholder token scores ~0
        safe_res = {i: [h[0] if h[0].strip() else "<empty>"] for i, h in res.items()}
        score, _ = scorer.compute_score(gts, safe_res)
        if not math.isfinite(score):
            raise ValueError(f"non-finite score {score}")
        return float(score), None
    except Exception as exc:
        reason = f"timed out after {timeout_s:g} s" if timed_out.is_set() else f"failed ({exc!r})"
        return None, f"METEOR not computed: the METEOR process {reason}"
    finally:
        watchdog.cancel()
        _close_meteor(scorer)


def caption_metrics(
    hypotheses: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    meteor: bool = True,
    tokenizer: str = "auto",
    meteor_timeout_s: float = 300.0,
) -> CaptionScores:
    """Score generated captions against references (see the module docstring for scales)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    keys = _check_inputs(hypotheses, references)
    notes: list[str] = []
    res, gts, tokenizer_used = _tokenize(hypotheses, references, keys, notes, tokenizer)

    scores: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for n, value in enumerate(bleu, start=1):
        scores[f"BLEU-{n}"] = 100.0 * float(value)
    if meteor:
        value, note = _meteor(gts, res, meteor_timeout_s)
        if value is None:
            notes.append(note)
            warnings.warn(note, RuntimeWarning, stacklevel=2)
        else:
            scores["METEOR"] = 100.0 * value
    else:
        notes.append("METEOR not computed: disabled by the caller")
    rouge, _ = Rouge().compute_score(gts, res)
    scores["ROUGE-L"] = 100.0 * float(rouge)
    cider, per_item = Cider().compute_score(gts, res)
    scores["CIDEr"] = float(cider)
    ordered = {name: scores[name] for name in METRIC_NAMES if name in scores}
    # compute_score lists the per-item scores in gts' key order (positions into ``keys``)
    cider_per_item = {keys[i]: float(v) for i, v in zip(gts.keys(), per_item)}
    return CaptionScores(ordered, tuple(notes), tokenizer_used, len(keys), cider_per_item)
