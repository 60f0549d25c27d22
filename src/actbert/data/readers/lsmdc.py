"""LSMDC 2016 movie fill-in-the-blank reader (MovieFIB, Maharaj et al. 2017; ActBERT 4.2.1).

Tab separated, no header, one question per line, quoting off (sentences contain bare quotes).
Two layouts are accepted, told apart by the number of fields:

* 5 fields (the synthetic benchmark's ``LSMDC16_FIB_{train,test}.csv``)::

      video_id  start  end  sentence-with-_____  answer

* 8 fields (the LSMDC16 release ``LSMDC16_annos_{training,val,test}_FIB.csv``, built from the
  LSMDC clip annotations)::

      clip_name  start_aligned  end_aligned  start_extracted  end_extracted  sentence  blanked-sentence  answer

  ``start``/``end`` are the aligned times; the original sentence is kept in ``full_sentence``.

Times are seconds (``12.5``) or LSMDC clock stamps ``hh.mm.ss.fff`` (``00.01.02.500`` = 62.5 s).
The blanked sentence must contain the blank ``_____`` (a run of at least three underscores);
the answer must be a non-empty word.

``read_fill_in_blank(path) -> list[BlankItem(video_id, start, end, sentence, answer, full_sentence)]``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from .errors import ReaderError, check_interval, csv_rows, csv_text

BLANK = "_____"
_BLANK_PATTERN = re.compile(r"_{3,}")
_CLOCK = re.compile(r"^(\d+)\.(\d{1,2})\.(\d{1,2})\.(\d+)$")


@dataclass(frozen=True)
class BlankItem:
    video_id: str
    start: float
    end: float
    sentence: str  # contains the blank "_____"
    answer: str
    full_sentence: str | None = None


def parse_lsmdc_time(text: str) -> float:
    """``"12.5"`` → 12.5; ``"00.01.02.500"`` (hours.minutes.seconds.fraction) → 62.5.

    Raises ``ValueError`` for anything else (the reader turns it into a ``ReaderError``).
    """
    text = text.strip()
    match = _CLOCK.match(text)
    if match:
        hours, minutes, seconds, fraction = match.groups()
        if int(minutes) >= 60 or int(seconds) >= 60:
            raise ValueError(f"bad clock time {text!r}")
        return int(hours) * 3600 + int(minutes) * 60 + int(seconds) + int(fraction) / 10 ** len(fraction)
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite time {text!r}")
    return value


def _time(path, text: str, line: int, column: str) -> float:
    try:
        return parse_lsmdc_time(text)
    except ValueError:
        raise ReaderError(path, f"line {line}, column {column!r}", f"expected seconds or hh.mm.ss.fff, got {text!r}") from None


def read_fill_in_blank(path: str | os.PathLike) -> list[BlankItem]:
    items = []
    for line, row in csv_rows(path, "\t"):
        if len(row) == 5:
            video_id, start_text, end_text, sentence, answer = row
            full_sentence = None
        elif len(row) == 8:
            video_id, start_text, end_text, _, _, full_sentence, sentence, answer = row
            full_sentence = full_sentence.strip()
        else:
            raise ReaderError(
                path, f"line {line}", f"expected 5 fields (video_id, start, end, sentence, answer) or the 8-field LSMDC16 layout, got {len(row)}"
            )
        video_id = csv_text(path, video_id, line, "video_id")
        start = _time(path, start_text, line, "start")
        end = _time(path, end_text, line, "end")
        check_interval(path, start, end, f"line {line}")
        sentence = csv_text(path, sentence, line, "sentence")
        if not _BLANK_PATTERN.search(sentence):
            raise ReaderError(path, f"line {line}, column 'sentence'", f"no blank {BLANK!r} in {sentence!r}")
        answer = csv_text(path, answer, line, "answer")
        items.append(BlankItem(video_id, start, end, sentence, answer, full_sentence))
    if not items:
        raise ReaderError(path, "", "no questions in file")
    return items
