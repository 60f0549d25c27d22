"""``actbert build-visual-vocab``: VideoBERT's visual vocabulary from a pretraining config's split."""

from __future__ import annotations

import argparse
import json

HELP = "fit VideoBERT's visual vocabulary (hierarchical k-means over 1.5 s clips) on the pretraining split and tokenise it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="a videobert preset (videobert-tiny|small|base) or YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set data.store=runs/store (repeatable)")
    parser.add_argument("--out", required=True, help="vocabulary folder (visual_vocab.safetensors/.json, tokens/); "
                                                     "pass it to pretraining as --set model.visual_vocab=OUT")
    parser.add_argument("--depth", type=int, default=None, help="levels d (default: model.vocab_depth)")
    parser.add_argument("--branching", type=int, default=None, help="clusters per level k (default: model.vocab_branching)")
    parser.add_argument("--seed", type=int, default=None, help="k-means seed (default: train.seed)")
    parser.add_argument("--videos", default=None, help="folder of <video_id>.mp4: also draw OUT/visual_words.png")
    parser.add_argument("--no-tokenize", action="store_true", help="only fit and save the vocabulary")


def run(args: argparse.Namespace) -> int:
    from actbert.models.videobert.visual_vocab import build_visual_vocab
    from actbert.train.config import load_pretrain_config

    cfg = load_pretrain_config(args.config, [o for o in args.overrides if not o.startswith("model.visual_vocab=")])
    report = build_visual_vocab(cfg, args.out, args.depth, args.branching, args.seed, args.videos, not args.no_tokenize)
    print(json.dumps(report, indent=1))
    return 0
