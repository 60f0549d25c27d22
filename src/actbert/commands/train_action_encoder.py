"""``actbert train-action-encoder``: train the 3D CNN on mined verbs and report held-out verb accuracy."""

from __future__ import annotations

import argparse

HELP = "train the action encoder (3D ResNet) on verbs mined from narrations; report held-out top-1 verb accuracy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from actbert.text.verbs import DEFAULT_MIN_COUNT

    parser.add_argument("--data", required=True, help="benchmark folder (videos/, narrations.json, splits.json[, ground_truth.json])")
    parser.add_argument("--out", required=True, help="output folder (config.json, model.safetensors, action_vocab.json, eval.json)")
    parser.add_argument("--preset", default=None, choices=["paper"],
                        help="settings of a named recipe; options given explicitly override it. paper: paper 4.1 "
                             "(r3d_18, 32 frames at 8 FPS, 224 px, SGD lr 1e-3, batch 16, lr / 10 after 10%% of the run; "
                             "pass Kinetics weights with --init-weights; what still differs: docs/extraction.md)")
    # defaults None: action_encoder.ACTION_DEFAULTS, or the preset's values
    parser.add_argument("--arch", default=None, choices=["narrow", "r3d_18", "r2plus1d_18"], help="default narrow")
    parser.add_argument("--init-weights", default=None, help="local torchvision Kinetics state dict (.pth/.pt/.safetensors) of --arch")
    parser.add_argument("--epochs", type=int, default=None, help="default 5")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    parser.add_argument("--batch-size", type=int, default=None, help="default 16")
    parser.add_argument("--lr", type=float, default=None, help="default 1e-3")
    parser.add_argument("--optimizer", default=None, choices=["adam", "sgd"], help="default adam")
    parser.add_argument("--weight-decay", type=float, default=None, help="default 1e-4")
    parser.add_argument("--schedule", default=None, choices=["cosine", "constant", "step"],
                        help="learning-rate schedule over the run's steps (default cosine; step: lr / 10 after 10%% of them)")
    parser.add_argument("--num-frames", type=int, default=None, help="frames per clip window (default and paper: 32)")
    parser.add_argument("--fps", type=float, default=None, help="frame rate of the clip window (default and paper: 8)")
    parser.add_argument("--clip-size", type=int, default=None, help="side of the square crop in pixels (default 112; paper: 224)")
    parser.add_argument("--narrations", default=None, help="caption.json-style narrations (default: DATA/narrations.json)")
    parser.add_argument("--vocab", default=None, help="existing action_vocab.json (default: mine the training videos' narrations)")
    parser.add_argument("--min-count", type=int, default=DEFAULT_MIN_COUNT,
                        help="minimum clip count of a verb when mining the vocabulary (without --vocab; as mine-verbs)")
    parser.add_argument("--holdout-fraction", type=float, default=0.2, help="videos held out when the benchmark has no val/test split")
    parser.add_argument("--cache", default=None, help="folder for decoded clip windows (.npy) reused across runs")
    parser.add_argument("--no-flip", action="store_true", help="no random horizontal flips during training")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, clip order and augmentation")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")


def run(args: argparse.Namespace) -> int:
    from actbert.video.action_encoder import action_settings
    from actbert.video.action_training import train_action_encoder_on_benchmark

    settings = action_settings(
        args.preset, arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
        weight_decay=args.weight_decay, schedule=args.schedule, num_frames=args.num_frames, fps=args.fps, clip_size=args.clip_size,
    )
    train_action_encoder_on_benchmark(
        args.data, args.out, init_weights=args.init_weights, max_steps=args.max_steps, vocab=args.vocab,
        min_count=args.min_count, holdout_fraction=args.holdout_fraction, cache=args.cache, flip=not args.no_flip,
        seed=args.seed, device=args.device, threads=args.threads, resume=args.resume, preset=args.preset,
        narrations=args.narrations, **settings,
    )
    return 0
