"""``actbert train-object-classifier``: the small crop classifier of the "given boxes" region route."""

from __future__ import annotations

import argparse
import json

HELP = "train the object classifier on box crops of a benchmark (objects.json) for --regions given"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="benchmark folder (meta.json, objects.json, videos/, splits.json)")
    parser.add_argument("--out", required=True, help="output file (.safetensors)")
    parser.add_argument("--epochs", type=int, default=6, help="passes over the region crops")
    parser.add_argument("--batch-size", type=int, default=128, help="crops per optimiser step")
    parser.add_argument("--lr", type=float, default=3e-3, help="learning rate (AdamW)")
    parser.add_argument("--crop-size", type=int, default=32, help="crops are resampled to this square size")
    parser.add_argument("--embed-dim", type=int, default=128, help="region feature size")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation and crop order")


def run(args: argparse.Namespace) -> int:
    from actbert.video.object_classifier import train_and_save_object_classifier

    out, facts = train_and_save_object_classifier(args.data, args.out, epochs=args.epochs, batch_size=args.batch_size,
                                                  lr=args.lr, crop_size=args.crop_size, embed_dim=args.embed_dim,
                                                  seed=args.seed)
    print(f"object classifier -> {out}")
    print(json.dumps(facts))
    return 0
