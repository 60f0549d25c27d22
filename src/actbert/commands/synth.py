"""``actbert synth``: generate the built-in synthetic instructional-video benchmark."""

from __future__ import annotations

import argparse

HELP = "generate the synthetic narrated-video benchmark (videos, narrations, downstream annotations)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from actbert.data.synth.generate import SIZES

    parser.add_argument("--size", choices=sorted(SIZES), default="demo", help="tiny (tests), demo (CPU demo), bench (actbert compare: test splits sized for 95%% intervals of <= 5 points) or full")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same benchmark")
    parser.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from actbert.data.synth import generate_benchmark

    info = generate_benchmark(args.size, args.seed, args.out)
    print(info.summary())
    return 0
