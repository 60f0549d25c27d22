"""Numerical parity with an original implementation: compare a family's numbers with a reference folder.

A reference folder (``/work/shared/fixtures/<name>``) holds an upstream model's weights, inputs and
what the upstream code computed from them. Each family with such a folder has a module
``actbert.models.<family>.parity`` exposing ``fixture_comparisons(folder)``, which rebuilds the model
from the folder's own files (so any folder of that layout works: other sizes, seeds, layer counts,
lengths) and yields ``(name, kind, ours, reference)``. This module compares them:

==========  ==========================================================================
kind        passes when
==========  ==========================================================================
``output``  ``max |ours - ref| <= 1e-4`` (intermediate activations, ids and masks too)
``loss``    ``|ours - ref| <= 1e-5``
``grad``    ``max |ours - ref| / max |ref| <= 1e-3``
==========  ==========================================================================

A shape mismatch always fails. ``actbert check-parity FAMILY DIR`` prints :func:`format_report`
and exits 1 when anything fails.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from actbert.errors import ActBertError

TOLERANCES: dict[str, float] = {"output": 1e-4, "loss": 1e-5, "grad": 1e-3}
# family name on the command line -> module with fixture_comparisons
FAMILIES: dict[str, str] = {
    "paddle": "actbert.models.paddlevideo.parity",
    "vlm": "actbert.models.vlm.parity",
    "hero": "actbert.models.hero.parity",
}


class ParityError(ActBertError):
    """A parity check that cannot run (unknown family, unreadable folder, bad comparison kind)."""


@dataclass(frozen=True)
class Comparison:
    name: str
    kind: str  # output | loss | grad
    diff: float  # absolute (output, loss) or relative to max |ref| (grad); inf on a shape mismatch
    tolerance: float
    shape: tuple[int, ...]
    reference_shape: tuple[int, ...]

    @property
    def passed(self) -> bool:
        return self.shape == self.reference_shape and self.diff <= self.tolerance


@dataclass
class ParityReport:
    family: str
    folder: str
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def failed(self) -> list[Comparison]:
        return [c for c in self.comparisons if not c.passed]

    @property
    def passed(self) -> bool:
        return bool(self.comparisons) and not self.failed

    def worst(self, kind: str, count: int = 5) -> list[Comparison]:
        rows = [c for c in self.comparisons if c.kind == kind]
        return sorted(rows, key=lambda c: (c.passed, -c.diff))[:count]


def compare(name: str, kind: str, ours: np.ndarray, reference: np.ndarray) -> Comparison:
    """One comparison under ``kind``'s rule (module docstring)."""
    if kind not in TOLERANCES:
        raise ParityError(f"{name}: unknown comparison kind {kind!r}; expected one of {sorted(TOLERANCES)}")
    ours, reference = np.asarray(ours), np.asarray(reference)
    if ours.shape != reference.shape:
        diff = math.inf
    elif reference.size == 0:
        diff = 0.0
    else:
        a, b = ours.astype(np.float64), reference.astype(np.float64)
        diff = float(np.abs(a - b).max())
        if kind == "grad":
            scale = float(np.abs(b).max())
            diff = diff / scale if scale > 0 else diff
        if not math.isfinite(diff):
            diff = math.inf
    return Comparison(name, kind, diff, TOLERANCES[kind], tuple(ours.shape), tuple(reference.shape))


def family_module(family: str):
    if family not in FAMILIES:
        raise ParityError(f"unknown family {family!r} for a parity check; known: {sorted(FAMILIES)}")
    try:
        module = importlib.import_module(FAMILIES[family])
    except ImportError as exc:
        raise ParityError(f"family {family!r}: its parity module {FAMILIES[family]} is not available ({exc})") from exc
    if not callable(getattr(module, "fixture_comparisons", None)):
        raise ParityError(f"family {family!r}: {FAMILIES[family]} has no fixture_comparisons(folder)")
    return module


def compare_all(rows: Iterable[tuple[str, str, np.ndarray, np.ndarray]], family: str = "", folder: str = "") -> ParityReport:
    report = ParityReport(family, folder)
    for name, kind, ours, reference in rows:
        report.comparisons.append(compare(name, kind, ours, reference))
    return report


def check_parity(family: str, folder: str | Path) -> ParityReport:
    """Run ``family``'s comparisons on ``folder`` and return the report (raises on an unreadable folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ParityError(f"{folder}: not a folder")
    return compare_all(family_module(family).fixture_comparisons(folder), family, str(folder))


def format_report(report: ParityReport, top: int = 5) -> str:
    """The worst ``top`` differences per kind, the counts and the verdict."""
    lines = [f"parity {report.family} on {report.folder}: {len(report.comparisons)} comparisons"]
    for kind, tol in TOLERANCES.items():
        rows = [c for c in report.comparisons if c.kind == kind]
        if not rows:
            continue
        bad = sum(not c.passed for c in rows)
        rule = "relative" if kind == "grad" else "absolute"
        lines.append(f"  {kind} ({len(rows)}, {rule} tolerance {tol:g}): {'all pass' if not bad else f'{bad} FAIL'}")
        for c in report.worst(kind, top):
            shape = "" if c.shape == c.reference_shape else f"  shape {list(c.shape)} vs reference {list(c.reference_shape)}"
            lines.append(f"    {'ok  ' if c.passed else 'FAIL'} {c.diff:.3e}  {c.name}{shape}")
    lines.append("PASS" if report.passed else ("FAIL" if report.comparisons else "FAIL (nothing compared)"))
    return "\n".join(lines)


__all__ = [
    "Comparison",
    "FAMILIES",
    "ParityError",
    "ParityReport",
    "TOLERANCES",
    "check_parity",
    "compare",
    "compare_all",
    "family_module",
    "format_report",
]
