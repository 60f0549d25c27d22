"""Pretraining speed with every 1 FPS frame of a clip (``data.region_frames: all``) vs the centre frame only.

Both settings run the real pretraining loop (``actbert.train.loop.train``: the clip-window dataset,
the collator, forward + backward of all four losses, clipping, AdamW) on the same random-feature
corpus, alternating ``--rounds`` times so both see the same machine load. Reported per setting: the
mean region-stream length of a sample (``[REGION]`` + ``[SEP]`` positions), and the training
throughput of the logged windows after the first (samples/s, from ``metrics.jsonl``); then the ratio.

    python benchmarks/regions_per_clip.py                         # small preset, 12 steps x 2 rounds
    python benchmarks/regions_per_clip.py --preset base --steps 4 --set train.batch_size=4

Figures depend on the machine and on whatever else runs on it; quote them with that caveat.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from actbert.train.config import load_pretrain_config
from actbert.train.loop import build_pretrain_data, train
from actbert.train.metrics_log import read_metrics

SETTINGS = {"centre frame (nearest, 1)": ["data.region_frames=nearest", "data.frames_per_clip=1"],
            "every frame (all, capped)": ["data.region_frames=all"]}


def region_length(preset: str, overrides: list[str], run_dir: Path, samples: int = 64) -> float:
    cfg = load_pretrain_config(preset, overrides)
    data = build_pretrain_data(cfg, run_dir)
    n = min(samples, len(data.dataset))
    return statistics.mean(len(data.dataset[i].region_token_ids) for i in range(n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], help="extra key=value overrides for both settings")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        common = ["data.random=true", f"data.random_dir={tmp / 'random'}", f"train.max_steps={args.steps}",
                  "train.log_every=2", "train.checkpoint_every=0", "train.progress=false", "train.plot_every_checkpoint=false",
                  f"train.num_threads={args.threads}", "data.num_workers=0", *args.set]
        lengths = {name: region_length(args.preset, common + extra, tmp / f"len{i}") for i, (name, extra) in enumerate(SETTINGS.items())}
        rates: dict[str, list[float]] = {name: [] for name in SETTINGS}
        for r in range(args.rounds):
            for i, (name, extra) in enumerate(SETTINGS.items()):
                out = tmp / f"run{r}_{i}"
                train(load_pretrain_config(args.preset, common + extra), out)
                records = read_metrics(out / "metrics.jsonl")[1:]  # the first window includes warm-up
                rates[name] += [rec["samples_per_s"] for rec in records]
    print(f"preset {args.preset}, {args.steps} steps x {args.rounds} rounds, {args.threads} threads")
    print("| setting | region positions per sample | samples/s (mean of windows) |")
    print("|---|---|---|")
    for name in SETTINGS:
        print(f"| {name} | {lengths[name]:.1f} | {statistics.mean(rates[name]):.2f} |")
    a, b = (statistics.mean(rates[n]) for n in SETTINGS)
    la, lb = lengths.values()
    print(f"every frame / centre frame: {lb / la:.2f}x the region positions, {b / a:.2f}x the throughput "
          f"({a / b:.2f}x the time per sample)")


if __name__ == "__main__":
    main()
