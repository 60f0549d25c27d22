"""``actbert train-action-encoder``: train the 3D CNN on mined verbs and report held-out verb accuracy."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

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
    import numpy as np
    import torch

    from actbert.text.verbs import ActionVocabulary, VerbMiner, count_clip_verbs, read_narrations
    from actbert.utils.io import atomic_write_json, read_json
    from actbert.video.action_dataset import benchmark_video_splits, build_action_clips
    from actbert.video.action_encoder import (
        ActionTrainConfig,
        build_action_encoder,
        evaluate_action_predictions,
        load_action_encoder,
        train_action_encoder,
    )

    began = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data, out = Path(args.data), Path(args.out)
    train_ids, eval_ids, how = benchmark_video_splits(data, args.holdout_fraction, args.seed)
    print(f"videos: {len(train_ids)} train, {len(eval_ids)} held out ({how})")

    narrations_path = data / "narrations.json"
    train_narr = read_narrations(narrations_path, video_ids=train_ids)
    eval_narr = read_narrations(narrations_path, video_ids=eval_ids)
    miner = VerbMiner()
    train_verbs = miner.verbs_many([c.text for c in train_narr.clips], progress=True)
    eval_verbs = miner.verbs_many([c.text for c in eval_narr.clips], progress=True)
    if args.vocab:
        vocab = ActionVocabulary.load(args.vocab)
    else:
        vocab = ActionVocabulary.build(count_clip_verbs(train_verbs), min_count=args.min_count)
    if len(vocab) < 2:
        raise ValueError(f"{narrations_path}: only {len(vocab)} verb(s) reach --min-count {args.min_count}; nothing to classify")
    print(f"action vocabulary: {len(vocab)} verbs: {', '.join(vocab.verbs[:20])}{' ...' if len(vocab) > 20 else ''}")

    gt_path = data / "ground_truth.json"
    ground_truth = read_json(gt_path, "ground truth") if gt_path.exists() else None
    window = dict(num_frames=args.num_frames, fps=args.fps, clip_size=args.clip_size, ground_truth=ground_truth, cache_dir=args.cache)
    decode_start = time.time()
    train_set = build_action_clips(data / "videos", train_narr, train_verbs, vocab, desc="decoding train clips", **window)
    eval_set = build_action_clips(data / "videos", eval_narr, eval_verbs, vocab, desc="decoding held-out clips", **window)
    decode_s = time.time() - decode_start
    print(f"clips with an in-vocabulary verb: {len(train_set)} train, {len(eval_set)} held out (decoded in {decode_s:.1f} s)")
    if len(train_set) == 0 or len(eval_set) == 0:
        raise ValueError(f"{data}: no usable clips ({len(train_set)} train, {len(eval_set)} held out)")

    cfg = ActionTrainConfig(
        arch=args.arch,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        num_frames=args.num_frames,
        fps=args.fps,
        clip_size=args.clip_size,
        flip=not args.no_flip,
        seed=args.seed,
        device=args.device,
    )
    model = build_action_encoder(args.arch, len(vocab), init_weights=args.init_weights)
    if model.init_report is not None:
        print(f"init weights: {model.init_report.summary()}")
    train_start = time.time()
    history = train_action_encoder(
        model,
        train_set.windows,
        train_set.targets,
        vocab,
        cfg,
        out,
        extra_config={"init_weights": args.init_weights, "data": str(data)},
        resume=args.resume,
    )
    train_s = time.time() - train_start

    encoder = load_action_encoder(out, device=args.device)
    metrics = evaluate_action_predictions(
        encoder.predict(eval_set.windows), eval_set.targets, train_set.targets, vocab, eval_set.gt_actions, train_set.gt_actions
    )
    subset = np.arange(min(len(train_set), 256))
    train_probs = encoder.predict(train_set.windows[subset])
    metrics["train_top1_verb_accuracy"] = float((train_set.targets[subset] > 0)[subset, train_probs.argmax(1)].mean())
    report = {
        "split": how,
        "train_videos": len(train_set.video_ids()),
        "eval_videos": len(eval_set.video_ids()),
        "train_clips": len(train_set),
        **metrics,
        "history": history,
        "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "seconds": {"decode": round(decode_s, 1), "train": round(train_s, 1), "total": round(time.time() - began, 1)},
    }
    atomic_write_json(out / "eval.json", report)
    failures = train_narr.failures + eval_narr.failures + train_set.failures + eval_set.failures
    if failures:
        atomic_write_json(out / "failures.json", failures)
        print(f"skipped {len(failures)} bad narration entries / videos; see {out / 'failures.json'}")
    _plot_loss(history, out / "loss.png")

    print(
        f"held-out top-1 verb accuracy: {metrics['top1_verb_accuracy']:.3f} on {metrics['num_clips']} clips "
        f"(chance: uniform {metrics['chance_uniform']:.3f}, majority '{metrics['majority_verb']}' {metrics['chance_majority']:.3f}; "
        f"train {metrics['train_top1_verb_accuracy']:.3f})"
    )
    if "top1_gt_action_accuracy" in metrics:
        print(
            f"held-out top-1 ground-truth action accuracy: {metrics['top1_gt_action_accuracy']:.3f} "
            f"(chance: uniform {metrics['gt_chance_uniform']:.3f}, majority {metrics['gt_chance_majority']:.3f}; "
            f"narration names the true action in {metrics['gt_narration_ceiling']:.3f})"
        )
    print(f"saved {out} (decode {decode_s:.0f} s, train {train_s:.0f} s, total {time.time() - began:.0f} s)")
    return 0


def _plot_loss(history: list[dict], path: Path) -> None:
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from actbert.utils.io import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("soft-target cross-entropy")
    ax.set_title("action encoder training loss")
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
