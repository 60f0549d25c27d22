"""``actbert check-parity FAMILY DIR``: compare a family with its original implementation on a reference folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "check numerical parity with the original code on a reference folder (paddle | vlm | hero); exit 1 beyond tolerance"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from actbert.models.parity import FAMILIES

    parser.add_argument("family", choices=sorted(FAMILIES), help="model family whose parity module runs the folder")
    parser.add_argument("folder", type=Path, help="reference folder (weights, inputs, outputs, losses, gradients), e.g. shared/fixtures/vlm_small")
    parser.add_argument("--top", type=int, default=5, help="worst differences shown per kind (default 5)")
    parser.add_argument("--json", dest="json_out", type=Path, help="also write every comparison to this JSON file")


def run(args: argparse.Namespace) -> int:
    from actbert.errors import ActBertError
    from actbert.models.parity import check_parity, format_report
    from actbert.utils.io import atomic_write_json

    try:
        report = check_parity(args.family, args.folder)
    except ActBertError as exc:
        print(f"actbert check-parity: {exc}", file=sys.stderr)
        return 2
    print(format_report(report, top=args.top))
    if args.json_out:
        atomic_write_json(args.json_out, {
            "family": report.family, "folder": report.folder, "passed": report.passed,
            "comparisons": [{"name": c.name, "kind": c.kind, "diff": c.diff if c.diff != float("inf") else None,
                             "tolerance": c.tolerance, "passed": c.passed, "shape": list(c.shape),
                             "reference_shape": list(c.reference_shape)} for c in report.comparisons],
        })
    return 0 if report.passed else 1
