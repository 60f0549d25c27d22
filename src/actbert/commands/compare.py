"""``actbert compare --models actbert vlm ... --size bench --seeds 3 --out DIR``: the comparison table with intervals."""

from __future__ import annotations

import argparse

HELP = "pretrain several model families on the same features and budget, run the five tasks, report intervals and paired tests"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from actbert.compare.profiles import FAMILIES, PROFILES

    parser.add_argument("--models", nargs="+", default=list(FAMILIES), choices=FAMILIES, help="model families to compare")
    parser.add_argument("--size", default="bench", choices=sorted(PROFILES), help="comparison profile: bench (the table) or tiny (tests)")
    parser.add_argument("--seeds", type=int, default=3, help="pretraining + fine-tuning seeds per family")
    parser.add_argument("--steps", type=int, default=0,
                        help="pretraining steps of every family (0: the profile's; bench: 1000)")
    parser.add_argument("--ablation-seeds", type=int, default=1, help="seeds of the ActBERT ablation rows (0: none)")
    parser.add_argument("--no-ablations", action="store_true", help="leave out ActBERT's ablations")
    parser.add_argument("--out", default="runs/compare", help="run folder (re-running resumes: finished stages are skipped)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice, all cores)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="(run, seed) units at once, each a worker process with --threads threads (0: cores / jobs)")
    parser.add_argument("--report-only", action="store_true", help="rebuild OUT/report.md from what OUT holds")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from actbert.compare import ComparePaths, run_compare, write_report

    if args.report_only:
        print(f"report: {write_report(ComparePaths(Path(args.out)))}")
        return 0
    report = run_compare(args.out, models=args.models, size=args.size, seeds=args.seeds,
                         ablations=not args.no_ablations and args.ablation_seeds > 0,
                         ablation_seeds=args.ablation_seeds, threads=args.threads, jobs=args.jobs, steps=args.steps)
    print(f"report: {report}")
    return 0
