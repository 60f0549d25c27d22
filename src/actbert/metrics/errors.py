"""The error every metric raises for unusable input (empty, NaN, wrong shape, index out of range)."""

from __future__ import annotations

from actbert.errors import ActBertError


class MetricInputError(ActBertError):
    """Metric input that has no meaningful score: names the argument and what is wrong."""
