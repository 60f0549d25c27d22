"""``actbert train-object-classifier``: the small crop classifier of the "given boxes" region route."""

from __future__ import annotations

import argparse
import json

HELP = "train the object classifier on box crops of a benchmark (objects.json) for --regions given"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True,
                        help="folder with videos/ and objects.json (given boxes); splits.json optional: train on "
                             "'pretrain', hold out 'val' (else every 5th video)")
    parser.add_argument("--objects", default=None, help="given boxes (default: DATA/objects.json)")
    parser.add_argument("--classes", default=None,
                        help="object classes: NAME,NAME,... or a file (.txt one per line, .json list); default: "
                             "DATA/meta.json's 'objects' when there is one, else every label of objects.json, sorted")
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
                                                  seed=args.seed, classes=args.classes, objects=args.objects)
    print(f"object classifier -> {out}")
    print(json.dumps(facts))
    return 0
