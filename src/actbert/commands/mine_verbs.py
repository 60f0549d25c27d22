"""``actbert mine-verbs``: build the action vocabulary from narrations (paper 3.2.1)."""

from __future__ import annotations

import argparse

HELP = "mine verbs from narrations (spaCy) and write the action vocabulary (action_vocab.json)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from actbert.text.verbs import DEFAULT_MIN_COUNT

    parser.add_argument("--narrations", required=True, help="HowTo100M caption.json-style narrations file")
    parser.add_argument("--min-count", type=int, default=DEFAULT_MIN_COUNT,
                        help="keep verbs seen in at least this many clips (a few videos: 1 or 2)")
    parser.add_argument("--out", required=True, help="output action_vocab.json")
    parser.add_argument(
        "--videos-split",
        default=None,
        help="mine only the videos of this split of splits.json (e.g. pretrain); default: all videos",
    )
    parser.add_argument("--splits", default=None, help="splits.json (default: next to the narrations file)")
    parser.add_argument("--strict", action="store_true", help="stop at the first malformed entry instead of skipping it")
    parser.add_argument("--stop-verbs", default="default",
                        help="verbs never taken as actions: default (auxiliaries + discourse verbs such as go, let, want: "
                             "this library's choice; the paper keeps 'go'), auxiliary (auxiliaries only), none, or a "
                             "comma-separated list")


def run(args: argparse.Namespace) -> int:
    from actbert.text.verbs import mine_action_vocabulary

    mine_action_vocabulary(args.narrations, args.out, min_count=args.min_count, videos_split=args.videos_split,
                           splits=args.splits, strict=args.strict, stop_verbs=args.stop_verbs)
    return 0
