"""``actbert mine-verbs``: build the action vocabulary from narrations (paper 3.2.1)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "mine verbs from narrations (spaCy) and write the action vocabulary (action_vocab.json)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--narrations", required=True, help="HowTo100M caption.json-style narrations file")
    parser.add_argument("--min-count", type=int, default=5, help="keep verbs seen in at least this many clips")
    parser.add_argument("--out", required=True, help="output action_vocab.json")
    parser.add_argument(
        "--videos-split",
        default=None,
        help="mine only the videos of this split of splits.json (e.g. pretrain); default: all videos",
    )
    parser.add_argument("--splits", default=None, help="splits.json (default: next to the narrations file)")
    parser.add_argument("--strict", action="store_true", help="stop at the first malformed entry instead of skipping it")


def run(args: argparse.Namespace) -> int:
    from actbert.text.verbs import ActionVocabulary, VerbMiner, count_clip_verbs, read_narrations
    from actbert.utils.io import atomic_write_json, read_json

    narrations_path = Path(args.narrations)
    video_ids = None
    if args.videos_split:
        splits_path = Path(args.splits) if args.splits else narrations_path.parent / "splits.json"
        splits = read_json(splits_path, "splits file")
        if not isinstance(splits, dict) or args.videos_split not in splits:
            known = ", ".join(sorted(splits)) if isinstance(splits, dict) else "none"
            raise ValueError(f"{splits_path}: no split {args.videos_split!r} (known: {known})")
        video_ids = splits[args.videos_split]
    narrations = read_narrations(narrations_path, video_ids=video_ids, strict=args.strict)
    if not narrations.clips:
        raise ValueError(f"{narrations_path}: no usable narration segments")

    miner = VerbMiner()
    clip_verbs = miner.verbs_many([c.text for c in narrations.clips], progress=True)
    vocab = ActionVocabulary.build(count_clip_verbs(clip_verbs), min_count=args.min_count)
    out = vocab.save(args.out)

    covered = sum(1 for verbs in clip_verbs if any(v in vocab for v in verbs))
    coverage = covered / len(clip_verbs)
    print(f"videos: {len(narrations.video_ids())}  clips: {len(narrations.clips)}")
    print(f"action vocabulary: {len(vocab)} verbs (min count {args.min_count}) -> {out}")
    print(f"coverage: {covered}/{len(clip_verbs)} clips ({100 * coverage:.1f}%) have an in-vocabulary verb")
    if len(vocab):
        top = ", ".join(f"{v} ({vocab.counts[v]})" for v in vocab.verbs[:10])
        print(f"most frequent: {top}")
    if narrations.failures:
        failures_path = out.with_name(out.stem + "_failures.json")
        atomic_write_json(failures_path, narrations.failures)
        print(f"skipped {len(narrations.failures)} bad narration entries; see {failures_path}")
    return 0
