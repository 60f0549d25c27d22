"""``actbert compare``: model families on one benchmark, one budget, one set of features, with intervals.

- ``profiles``: what sizes a comparison (``CompareProfile``, ``PROFILES``), its pretraining runs
  and report rows (``runs``, ``rows``), where it writes (``ComparePaths``, ``RunPaths``);
- ``pipeline``: the stages (``run_compare``; the data, pretraining and task stages are the demo's);
- ``report``: result files -> intervals, paired comparisons, ``OUT/report.md`` / ``report.json`` / plots.
"""

from actbert.compare.pipeline import CompareError, count_step_flops, run_compare
from actbert.compare.profiles import FAMILIES, PROFILES, ComparePaths, CompareProfile, Row, rows, runs
from actbert.compare.report import write_report

__all__ = ["FAMILIES", "PROFILES", "CompareError", "ComparePaths", "CompareProfile", "Row", "count_step_flops",
           "rows", "run_compare", "runs", "write_report"]
