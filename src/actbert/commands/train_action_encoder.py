"""``actbert train-action-encoder``: train the 3D CNN on mined verbs and report held-out verb accuracy."""

from __future__ import annotations

import argparse

HELP = "train the action encoder (3D ResNet) on verbs mined from narrations; report held-out top-1 verb accuracy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="benchmark folder (videos/, narrations.json, splits.json[, ground_truth.json])")
    parser.add_argument("--out", required=True, help="output folder (config.json, model.safetensors, action_vocab.json, eval.json)")
    parser.add_argument("--arch", default="narrow", choices=["narrow", "r3d_18", "r2plus1d_18"])
    parser.add_argument("--init-weights", default=None, help="local torchvision Kinetics state dict (.pth/.pt/.safetensors) of --arch")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--schedule", default="cosine", choices=["cosine", "constant"], help="learning-rate schedule over the run's steps")
    parser.add_argument("--num-frames", type=int, default=32, help="frames per clip window (paper: 32)")
    parser.add_argument("--fps", type=float, default=8.0, help="frame rate of the clip window (paper: 8)")
    parser.add_argument("--clip-size", type=int, default=112, help="side of the square crop in pixels")
    parser.add_argument("--vocab", default=None, help="existing action_vocab.json (default: mine the training videos' narrations)")
    parser.add_argument("--min-count", type=int, default=2, help="minimum clip count of a verb when mining the vocabulary")
    parser.add_argument("--holdout-fraction", type=float, default=0.2, help="videos held out when the benchmark has no val/test split")
    parser.add_argument("--cache", default=None, help="folder for decoded clip windows (.npy) reused across runs")
    parser.add_argument("--no-flip", action="store_true", help="no random horizontal flips during training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")


def run(args: argparse.Namespace) -> int:
    from actbert.video.action_training import train_action_encoder_on_benchmark

    train_action_encoder_on_benchmark(
        args.data, args.out, arch=args.arch, init_weights=args.init_weights, epochs=args.epochs, max_steps=args.max_steps,
        batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, weight_decay=args.weight_decay,
        schedule=args.schedule, num_frames=args.num_frames, fps=args.fps, clip_size=args.clip_size, vocab=args.vocab,
        min_count=args.min_count, holdout_fraction=args.holdout_fraction, cache=args.cache, flip=not args.no_flip,
        seed=args.seed, device=args.device, threads=args.threads, resume=args.resume,
    )
    return 0
