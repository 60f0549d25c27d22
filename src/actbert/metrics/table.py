"""Markdown rendering of results dicts (task reports, the demo report, README tables).

``markdown_table(rows, columns=None)``: ``rows`` is ``{row name: {column: value}}`` or a list of
dicts; columns default to the union of keys in first-seen order. Numbers are printed with
``digits`` decimals (ints as ints), ``None`` / missing as ``–``; values that are not numbers,
strings or ``None`` (nested dicts, lists such as per-class results or notes) are left out of the
default columns.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Mapping, Sequence

MISSING = "–"


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, Real))


def format_value(value: Any, digits: int = 2) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, Real):
        value = float(value)
        return "NaN" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_row(cells: Sequence[Any], digits: int = 2) -> str:
    return "| " + " | ".join(format_value(cell, digits) for cell in cells) + " |"


def markdown_table(
    rows: Mapping[str, Mapping[str, Any]] | Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    digits: int = 2,
    row_header: str = "",
) -> str:
    """A GitHub-flavoured Markdown table; named rows get a first column headed ``row_header``."""
    named = isinstance(rows, Mapping)
    items = list(rows.items()) if named else [(None, row) for row in rows]
    if columns is None:
        columns = []
        for _, row in items:
            for key, value in row.items():
                if key not in columns and _is_scalar(value):
                    columns.append(key)
    header = ([row_header] if named else []) + list(columns)
    lines = [markdown_row(header), "|" + "|".join(" --- " for _ in header) + "|"]
    for name, row in items:
        cells = ([name] if named else []) + [row.get(column) for column in columns]
        lines.append(markdown_row(cells, digits))
    return "\n".join(lines) + "\n"
