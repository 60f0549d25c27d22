"""``ReaderError`` and the small field checks every benchmark reader shares.

A malformed annotation file must fail with a message a person can act on: the file, where in it
(``line 7, column 'answer'`` for CSV, a key path such as ``database.abc.annotations[2].segment``
for JSON) and what is wrong. The helpers below raise exactly that.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from actbert.errors import ActBertError


class ReaderError(ActBertError):
    """A benchmark annotation file is missing, unreadable or malformed.

    Attributes: ``path`` (the file), ``where`` (``"line 3, column 'start'"`` or a JSON key path;
    empty for whole-file problems) and ``reason``.
    """

    def __init__(self, path: str | os.PathLike, where: str, reason: str):
        self.path = str(path)
        self.where = where
        self.reason = reason
        location = f"{self.path}: {where}" if where else self.path
        super().__init__(f"{location}: {reason}")


# ---------------------------------------------------------------------------------------------
# JSON


def load_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a missing file or a syntax error becomes a ``ReaderError``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReaderError(path, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReaderError(path, "", f"cannot read file ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReaderError(path, f"line {exc.lineno}, column {exc.colno}", f"invalid JSON ({exc.msg})") from None


def json_key(key_path: str, key: str | int) -> str:
    """Extend a JSON key path: ``json_key("database.abc", "annotations")`` → ``database.abc.annotations``,
    ``json_key("x.annotations", 2)`` → ``x.annotations[2]``."""
    if isinstance(key, int):
        return f"{key_path}[{key}]"
    return f"{key_path}.{key}" if key_path else key


def require_key(path: str | os.PathLike, obj: dict, key: str, key_path: str) -> Any:
    """``obj[key]`` or a ``ReaderError`` naming ``key_path.key``."""
    if key not in obj:
        raise ReaderError(path, json_key(key_path, key), "missing key")
    return obj[key]


def require_type(path: str | os.PathLike, value: Any, expected: type | tuple[type, ...], key_path: str) -> Any:
    """Check ``isinstance(value, expected)`` (``bool`` never counts as a number)."""
    names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
    if isinstance(value, bool) and bool not in (expected if isinstance(expected, tuple) else (expected,)):
        raise ReaderError(path, key_path, f"expected {names}, got bool")
    if not isinstance(value, expected):
        raise ReaderError(path, key_path, f"expected {names}, got {type(value).__name__}")
    return value


def json_number(path: str | os.PathLike, value: Any, key_path: str) -> float:
    """A finite JSON number (int or float) as ``float``."""
    require_type(path, value, (int, float), key_path)
    if not math.isfinite(value):
        raise ReaderError(path, key_path, f"expected a finite number, got {value!r}")
    return float(value)


def json_text(path: str | os.PathLike, value: Any, key_path: str, allow_empty: bool = False) -> str:
    require_type(path, value, str, key_path)
    if not allow_empty and not value.strip():
        raise ReaderError(path, key_path, "empty text")
    return value


def json_interval(path: str | os.PathLike, value: Any, key_path: str) -> tuple[float, float]:
    """A ``[start, end]`` pair of finite numbers with ``0 <= start <= end``."""
    require_type(path, value, (list, tuple), key_path)
    if len(value) != 2:
        raise ReaderError(path, key_path, f"expected [start, end], got {len(value)} values")
    start = json_number(path, value[0], json_key(key_path, 0))
    end = json_number(path, value[1], json_key(key_path, 1))
    check_interval(path, start, end, key_path)
    return start, end


# ---------------------------------------------------------------------------------------------
# CSV / text


def check_interval(path: str | os.PathLike, start: float, end: float, where: str) -> None:
    if start < 0:
        raise ReaderError(path, where, f"negative start time {start}")
    if end < start:
        raise ReaderError(path, where, f"end {end} is before start {start}")


def read_text_lines(path: str | os.PathLike) -> list[str]:
    """All lines of a UTF-8 text file without their line endings."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return handle.read().splitlines()
    except FileNotFoundError:
        raise ReaderError(path, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReaderError(path, "", f"cannot read file ({exc})") from None


def csv_rows(path: str | os.PathLike, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """``(line_number, fields)`` for each non-blank row (1-based physical line of the row's start).

    Tab-separated benchmark files are read with quoting off: their sentences contain bare quotes.
    """
    lines = read_text_lines(path)
    if delimiter == "\t":
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield number, line.split("\t")
        return
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    while True:
        start_line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ReaderError(path, f"line {start_line}", f"malformed CSV ({exc})") from None
        if row and any(field.strip() for field in row):
            yield start_line, row


def csv_float(path: str | os.PathLike, text: str, line: int, column: str) -> float:
    """A finite float from a CSV field."""
    try:
        value = float(text)
    except ValueError:
        raise ReaderError(path, f"line {line}, column {column!r}", f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ReaderError(path, f"line {line}, column {column!r}", f"expected a finite number, got {text!r}")
    return value


def csv_int(path: str | os.PathLike, text: str, line: int, column: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ReaderError(path, f"line {line}, column {column!r}", f"expected an integer, got {text!r}") from None


def csv_text(path: str | os.PathLike, text: str, line: int, column: str) -> str:
    text = text.strip()
    if not text:
        raise ReaderError(path, f"line {line}, column {column!r}", "empty field")
    return text


def header_index(path: str | os.PathLike, header: Sequence[str], required: Sequence[str], line: int = 1) -> dict[str, int]:
    """Map each required column name to its position in ``header``; a missing one → ``ReaderError``."""
    names = [name.strip() for name in header]
    missing = [name for name in required if name not in names]
    if missing:
        raise ReaderError(path, f"line {line}", f"header lacks column(s) {missing}; found {names}")
    return {name: names.index(name) for name in required}


def check_field_count(path: str | os.PathLike, row: Sequence[str], expected: int | Sequence[int], line: int) -> None:
    allowed = (expected,) if isinstance(expected, int) else tuple(expected)
    if len(row) not in allowed:
        wanted = " or ".join(str(n) for n in allowed)
        raise ReaderError(path, f"line {line}", f"expected {wanted} fields, got {len(row)}")
