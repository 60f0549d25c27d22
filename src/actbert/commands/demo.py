"""``actbert demo --out DIR [--quick] [--seed N]``: the whole pipeline on the synthetic benchmark."""

from __future__ import annotations

import argparse

HELP = "run everything on the synthetic benchmark: features, pretraining, five tasks x three variants, report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="run folder (re-running resumes: finished stages are skipped)")
    parser.add_argument("--quick", action="store_true", help="tiny benchmark and budgets (a smoke run of a few minutes)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the benchmark, training and fine-tuning")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice, all cores)")


def run(args: argparse.Namespace) -> int:
    from actbert.demo import run_demo

    report = run_demo(args.out, quick=args.quick, seed=args.seed, threads=args.threads)
    print(f"report: {report}")
    return 0
