"""Train the action encoder on a benchmark folder and report held-out verb accuracy (paper 4.1).

``train_action_encoder_on_benchmark(data, out, ...)`` is the whole run behind
``actbert train-action-encoder``: split the videos (train / held out), mine the verbs of their
narrations (or load a vocabulary), decode the clip windows, train (``action_encoder.
train_action_encoder``), reload the saved encoder and score it on the held-out clips. It writes into
``out`` the encoder folder, ``eval.json`` (the returned report), ``loss.png`` and, when entries were
skipped, ``failures.json``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from actbert.errors import ActBertError
from actbert.text.verbs import DEFAULT_MIN_COUNT

__all__ = ["train_action_encoder_on_benchmark", "plot_action_loss"]


def train_action_encoder_on_benchmark(
    data: str | os.PathLike,
    out: str | os.PathLike,
    arch: str = "narrow",
    init_weights: str | os.PathLike | None = None,
    epochs: int = 5,
    max_steps: int | None = None,
    batch_size: int = 16,
    lr: float = 1e-3,
    optimizer: str = "adam",
    weight_decay: float = 1e-4,
    schedule: str = "cosine",
    num_frames: int = 32,
    fps: float = 8.0,
    clip_size: int = 112,
    vocab: str | os.PathLike | None = None,
    min_count: int = DEFAULT_MIN_COUNT,
    holdout_fraction: float = 0.2,
    cache: str | os.PathLike | None = None,
    flip: bool = True,
    seed: int = 0,
    device: str = "cpu",
    threads: int | None = None,
    resume: bool = False,
    preset: str | None = None,
    narrations: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train on ``data`` (``videos/``, ``narrations.json``, ``splits.json`` [, ``ground_truth.json``])
    into ``out``; returns the ``eval.json`` report (held-out metrics, history, settings, seconds).

    ``vocab``: an existing ``action_vocab.json`` (default: mine the training videos' narrations,
    keeping verbs of at least ``min_count`` clips). ``holdout_fraction``: videos held out when the
    benchmark has no val/test split. ``cache``: folder of decoded windows reused across runs.
    ``threads``: torch CPU threads (None/0: torch's choice). ``resume`` continues a run in ``out``.
    ``preset``: the name of the preset the settings came from (``action_encoder.action_settings``;
    recorded in ``eval.json``; ``"paper"`` without ``init_weights`` logs that the paper starts from
    Kinetics weights). ``narrations``: the narrations file (default ``data/narrations.json``).
    """
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

    lr, fps, weight_decay, holdout_fraction = float(lr), float(fps), float(weight_decay), float(holdout_fraction)
    init_weights = None if init_weights is None else str(init_weights)
    # keyed by the command's option names: what eval.json has always recorded
    settings = {
        "data": str(data), "out": str(out), "arch": arch, "init_weights": init_weights, "epochs": epochs,
        "max_steps": max_steps, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
        "weight_decay": weight_decay, "schedule": schedule, "num_frames": num_frames, "fps": fps,
        "clip_size": clip_size, "vocab": None if vocab is None else str(vocab), "min_count": min_count,
        "holdout_fraction": holdout_fraction, "cache": None if cache is None else str(cache), "no_flip": not flip,
        "seed": seed, "device": device, "threads": threads, "resume": resume, "preset": preset,
        **({} if narrations is None else {"narrations": str(narrations)}),
    }
    if preset == "paper" and init_weights is None:
        log("warning: the paper preset without --init-weights: the paper initialises the 3D ResNet from Kinetics-400 "
            "(docs/extraction.md says how to get torchvision's r3d_18 Kinetics weights); this run starts from random weights")
    began = time.time()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    data, out = Path(data), Path(out)
    narrations_path = Path(narrations) if narrations else data / "narrations.json"
    train_ids, eval_ids, how = benchmark_video_splits(data, holdout_fraction, seed, narrations_path)
    log(f"videos: {len(train_ids)} train, {len(eval_ids)} held out ({how})")

    train_narr = read_narrations(narrations_path, video_ids=train_ids)
    eval_narr = read_narrations(narrations_path, video_ids=eval_ids)
    vocabulary = ActionVocabulary.load(vocab) if vocab else None
    # a given vocabulary's own stop list, so that clips get the verbs the vocabulary was mined with
    miner = VerbMiner.for_vocabulary(vocabulary) if vocabulary is not None else VerbMiner()
    train_verbs = miner.verbs_many([c.text for c in train_narr.clips], progress=True)
    eval_verbs = miner.verbs_many([c.text for c in eval_narr.clips], progress=True)
    if vocabulary is None:
        vocabulary = ActionVocabulary.build(count_clip_verbs(train_verbs), min_count=min_count)
    if len(vocabulary) < 2:
        raise ActBertError(f"{narrations_path}: only {len(vocabulary)} verb(s) reach --min-count {min_count}; nothing to classify")
    log(f"action vocabulary: {len(vocabulary)} verbs: {', '.join(vocabulary.verbs[:20])}{' ...' if len(vocabulary) > 20 else ''}")

    gt_path = data / "ground_truth.json"
    ground_truth = read_json(gt_path, "ground truth") if gt_path.exists() else None
    window = dict(num_frames=num_frames, fps=fps, clip_size=clip_size, ground_truth=ground_truth, cache_dir=cache)
    decode_start = time.time()
    train_set = build_action_clips(data / "videos", train_narr, train_verbs, vocabulary, desc="decoding train clips", **window)
    eval_set = build_action_clips(data / "videos", eval_narr, eval_verbs, vocabulary, desc="decoding held-out clips", **window)
    decode_s = time.time() - decode_start
    log(f"clips with an in-vocabulary verb: {len(train_set)} train, {len(eval_set)} held out (decoded in {decode_s:.1f} s)")
    if len(train_set) == 0 or len(eval_set) == 0:
        raise ActBertError(f"{data}: no usable clips ({len(train_set)} train, {len(eval_set)} held out)")

    cfg = ActionTrainConfig(
        arch=arch,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        schedule=schedule,
        num_frames=num_frames,
        fps=fps,
        clip_size=clip_size,
        flip=flip,
        seed=seed,
        device=device,
    )
    model = build_action_encoder(arch, len(vocabulary), init_weights=init_weights)
    if model.init_report is not None:
        log(f"init weights: {model.init_report.summary()}")
    train_start = time.time()
    history = train_action_encoder(
        model,
        train_set.windows,
        train_set.targets,
        vocabulary,
        cfg,
        out,
        extra_config={"init_weights": init_weights, "data": str(data)},
        resume=resume,
    )
    train_s = time.time() - train_start

    encoder = load_action_encoder(out, device=device)
    metrics = evaluate_action_predictions(
        encoder.predict(eval_set.windows), eval_set.targets, train_set.targets, vocabulary, eval_set.gt_actions, train_set.gt_actions
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
        "settings": settings,
        "seconds": {"decode": round(decode_s, 1), "train": round(train_s, 1), "total": round(time.time() - began, 1)},
    }
    atomic_write_json(out / "eval.json", report)
    failures = train_narr.failures + eval_narr.failures + train_set.failures + eval_set.failures
    if failures:
        atomic_write_json(out / "failures.json", failures)
        log(f"skipped {len(failures)} bad narration entries / videos; see {out / 'failures.json'}")
    plot_action_loss(history, out / "loss.png")

    log(
        f"held-out top-1 verb accuracy: {metrics['top1_verb_accuracy']:.3f} on {metrics['num_clips']} clips "
        f"(chance: uniform {metrics['chance_uniform']:.3f}, majority '{metrics['majority_verb']}' {metrics['chance_majority']:.3f}; "
        f"train {metrics['train_top1_verb_accuracy']:.3f})"
    )
    if "top1_gt_action_accuracy" in metrics:
        log(
            f"held-out top-1 ground-truth action accuracy: {metrics['top1_gt_action_accuracy']:.3f} "
            f"(chance: uniform {metrics['gt_chance_uniform']:.3f}, majority {metrics['gt_chance_majority']:.3f}; "
            f"narration names the true action in {metrics['gt_narration_ceiling']:.3f})"
        )
    log(f"saved {out} (decode {decode_s:.0f} s, train {train_s:.0f} s, total {time.time() - began:.0f} s)")
    return report


def plot_action_loss(history: list[dict], path: Path) -> None:
    """``loss.png``: the training loss per epoch (nothing when there is no history)."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("soft-target cross-entropy")
    ax.set_title("action encoder training loss")
    fig.tight_layout()
    from actbert.utils.plotting import save_png

    save_png(fig, path)
