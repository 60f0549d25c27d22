"""``actbert pretrain``: pretrain any registered model family on a feature store + narrations (or random features)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

HELP = "pretrain a model (ActBERT, PaddleVideo, VLM, HERO, VideoBERT) from a preset; torchrun for several processes/nodes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from actbert.models.registry import PRESET_DIR

    presets = ", ".join(sorted(p.stem.replace("_", "-") for p in PRESET_DIR.glob("*.yaml")))
    parser.add_argument("--config", default=None,
                        help=f"a preset name ({presets}) or a YAML file; with --resume defaults to RUN_DIR/config.yaml")
    parser.epilog = (f"Config keys: the sections model / data / optim / train of any preset (see {PRESET_DIR} and "
                     "docs/pretraining.md); an unknown key is an error naming it. Add --debug for the traceback of an error.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=1e-4 --set data.random=true (repeatable)")
    parser.add_argument("--out", default="runs/pretrain", help="run folder: checkpoints, metrics.jsonl/png, model/")
    parser.add_argument("--resume", action="store_true",
                        help="continue from RUN_DIR's newest checkpoint that verifies (same data order required)")
    parser.add_argument("--overwrite", action="store_true",
                        help="RUN_DIR already holds a run: remove its checkpoints, metrics and model, and start over")


def run(args: argparse.Namespace) -> int:
    from actbert.train.config import load_pretrain_config
    from actbert.train.loop import train

    config_path = args.config
    if config_path is None:
        saved = Path(args.out) / "config.yaml"
        if not (args.resume and saved.exists()):
            raise SystemExit("actbert pretrain: --config is required (or --resume with an existing RUN_DIR/config.yaml)")
        config_path = saved
    cfg = load_pretrain_config(config_path, args.overrides)
    if args.resume and args.overwrite:
        raise SystemExit("actbert pretrain: --resume and --overwrite exclude each other")
    summary = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: summary[k] for k in ("steps", "interrupted", "first", "last", "model_dir")}, indent=1))
    return 0
