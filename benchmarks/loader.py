"""Samples/s of the pretraining data path (store -> samples -> masking -> collate) beside what a trainer consumes.

The data path is the training loop's own (``actbert.train.loop.build_pretrain_data`` and its loader) at
the ``base`` preset's layout (10 clips per sample, every 1 FPS frame of a clip up to 25 regions,
256 text positions, 2048-d action and region features, 1601 region classes), read from

* a per-video feature store of HowTo100M-like videos written here with random features
  (``--clips`` clips of 4 s per video -- HowTo100M averages 111 clips and 6.5 min), and
* the same store packed into tar shards (``actbert pack``; data/shards.py),

each **cold** (every file of the store / shards evicted from the page cache first with
``posix_fadvise(POSIX_FADV_DONTNEED)``, which needs no root and leaves other users' cache alone) and
**warm** (every file read once before), with 0..N DataLoader workers. Beside them, in the same run:
the trainer's consumption (``benchmarks/train_step.py``'s timed base step on this machine) and the
rate one H100/H200 needs at the counted FLOPs per base sample (``--gpu-peak-tflops``, ``--mfu``).

    python benchmarks/loader.py --root /tmp/data/bench --videos 110 --samples 96 --workers 0 1 2
    python benchmarks/loader.py --root /tmp/data/bench --videos 24 --samples 48 --workers 0 --no-step  # quick look
    python benchmarks/loader.py ... --profile 25   # also profile the data path (cProfile, top 25 by own time)

The store is kept in ``--root`` between runs (``--clean`` deletes it at the end). Rates depend on the
machine and on what else runs on it: compare rows of one run, quote ratios.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

BASE_DIMS = {"action_dim": 2048, "region_dim": 2048, "num_actions": 1000, "num_region_classes": 1601, "max_regions": 5}
WORDS = "now next then cut pour mix stir the bowl pan onion garlic oil water slowly carefully into a small pot".split()


def make_store(root: Path, videos: int, clips: int, seed: int = 0) -> tuple[Path, Path]:
    """A base-layout store of ``videos`` videos x ``clips`` 4-s clips (random features) + narrations."""
    from actbert.data.store import FeatureStore, FeatureStoreWriter, StoreSchema, VideoFeatures

    store, narrations = root / "store", root / "narrations.json"
    if narrations.exists() and len(FeatureStore(store)) == videos:
        return store, narrations
    d = BASE_DIMS
    schema = StoreSchema(action_dim=d["action_dim"], region_dim=d["region_dim"], num_region_classes=d["num_region_classes"],
                         num_actions=d["num_actions"], region_classes=[f"c{i}" for i in range(d["num_region_classes"])],
                         action_vocab=[f"v{i}" for i in range(d["num_actions"])], max_regions=d["max_regions"])
    writer = FeatureStoreWriter(store, schema)
    rng = np.random.default_rng(seed)
    texts = {}
    for v in range(videos):
        video_id = f"video{v:05d}"
        frames = clips * 4
        starts = np.arange(clips) * 4.0
        targets = np.zeros((clips, d["num_actions"]), np.float32)
        targets[np.arange(clips), rng.integers(0, d["num_actions"], clips)] = 1.0
        probs = rng.random((frames, d["max_regions"], d["num_region_classes"]), dtype=np.float32)
        boxes = np.sort(rng.random((frames, d["max_regions"], 4), dtype=np.float32) * 300, axis=-1)
        writer.write(video_id, VideoFeatures(
            clip_times=np.stack([starts, starts + 4.0], 1), action_features=rng.standard_normal((clips, d["action_dim"]), np.float32),
            action_targets=targets, frame_times=np.arange(frames, dtype=np.float64) + 0.5,
            region_features=rng.standard_normal((frames, d["max_regions"], d["region_dim"]), np.float32),
            region_boxes=boxes, region_locations=rng.random((frames, d["max_regions"], 5), dtype=np.float32),
            region_class_probs=probs / probs.sum(-1, keepdims=True),
            region_counts=rng.integers(1, d["max_regions"] + 1, frames)))
        texts[video_id] = {"start": starts.tolist(), "end": (starts + 4.0).tolist(),
                           "text": [" ".join(rng.choice(WORDS, int(rng.integers(5, 16)))) for _ in range(clips)]}
        print(f"  wrote {v + 1}/{videos} videos", end="\r", file=sys.stderr)
    narrations.write_text(json.dumps(texts))
    print(file=sys.stderr)
    return store, narrations


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def evict(folder: Path) -> None:
    """Drop every file of ``folder`` from the page cache (fsync is not needed: the files are clean)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def release(data) -> None:
    """Let go of every record and shard the data path holds mapped (the corpus's cache of videos, a shard
    stream's videos and shard maps): a page that a live memory map still maps is not dropped by
    :func:`evict`, so a cold row must release them first."""
    dataset = data.dataset
    for holder, name in ((getattr(dataset, "corpus", None), "_cache"), (dataset, "_videos"),
                         (getattr(dataset, "index", None), "_handles")):  # store videos; shard videos and maps
        held = getattr(holder, name, None)
        if held is not None:
            held.clear()
    gc.collect()  # records held only by reference cycles go now, not at the collector's next run


def warm(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                while handle.read(1 << 24):
                    pass


def config(store: Path | None, shards: Path | None, narrations: Path, extra: list[str]):
    from actbert.train.config import load_pretrain_config

    source = f"data.shards={shards}" if shards else f"data.store={store}"
    return load_pretrain_config("base", ["data.random=false", source, f"data.narrations={narrations}", "model.text_init=null",
                                         "train.progress=false", *extra])


def build(cfg, run_dir: Path):
    """The loop's data path: (dataset, loader factory) exactly as ``actbert.train.loop.train`` builds them."""
    from actbert.data.collate import ResumableDistributedSampler, make_loader
    from actbert.data.shards import ShardStream
    from actbert.train.loop import build_pretrain_data

    start = time.perf_counter()
    data = build_pretrain_data(cfg, run_dir)
    built_s = time.perf_counter() - start
    t = cfg.train

    def loader(workers: int, epoch: int):
        data.dataset.set_epoch(epoch)
        if isinstance(data.dataset, ShardStream):
            data.dataset.set_start(0)
            return data.dataset.loader(workers)
        release(data)  # what check() or the last epoch left in the corpus's cache would hide the read
        sampler = ResumableDistributedSampler(data.dataset, 1, 0, shuffle=True, seed=t.seed, chunk_size=t.batch_size)
        sampler.set_epoch(epoch)
        return make_loader(data.dataset, t.batch_size, data.collator, sampler, workers, t.seed)

    return data, loader, built_s


def _count(batches, limit: int = 0) -> tuple[int, float, float]:
    """(samples, wall seconds, CPU seconds of this process) of iterating ``batches``, stopping once
    ``limit`` samples have come (0: all of them)."""
    start, start_cpu, n = time.perf_counter(), time.process_time(), 0
    for batch in batches:
        n += int(batch.input_ids.shape[0])
        if limit and n >= limit:
            break
    return n, time.perf_counter() - start, time.process_time() - start_cpu


def time_loader(loader, samples: int, batch_size: int) -> tuple[float, int, float]:
    """(samples/s, samples, samples per CPU-second of this process) over the first ``samples`` samples
    (worker start-up included: it is part of each epoch). The CPU-time rate is the one a dedicated core
    would give, on a shared machine; it means something without workers only (theirs is not counted)."""
    n, wall, cpu = _count(loader, samples)
    if not n:
        raise SystemExit(f"loader.py: the epoch gave no batch of {batch_size} (too few videos for the batch: raise --videos)")
    return n / wall, n, n / max(cpu, 1e-9)


def time_epochs(make, workers: int, first_epoch: int, epochs: int, before_each) -> tuple[float, int, float]:
    """Like :func:`time_loader` over ``epochs`` whole epochs (``before_each()`` runs untimed before each:
    the cold rows evict the files again), after one untimed epoch that pays the one-off costs."""
    _count(make(workers, first_epoch))
    n, wall, cpu = 0, 0.0, 0.0
    for e in range(epochs):
        before_each()
        counted = _count(make(workers, first_epoch + 1 + e))
        n, wall, cpu = n + counted[0], wall + counted[1], cpu + counted[2]
    return n / wall, n, n / max(cpu, 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="/tmp/actbert-loader-bench", help="where the store and shards are written (kept)")
    parser.add_argument("--videos", type=int, default=110, help="110: 3.5 GB of store + 3.5 GB of shards")
    parser.add_argument("--clips", type=int, default=111, help="clips per video (HowTo100M: 111 on average)")
    parser.add_argument("--shard-size", type=int, default=16, help="videos per shard")
    parser.add_argument("--samples", type=int, default=96, help="samples timed per row")
    parser.add_argument("--epochs", type=int, default=0,
                        help="time this many whole epochs per row instead of --samples (after an untimed one; cold rows "
                             "evict before each): longer rows for a noisy machine")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sources", nargs="+", default=["store", "shards"], choices=["store", "shards"])
    parser.add_argument("--caches", nargs="+", default=["cold", "warm"], choices=["cold", "warm"])
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE", help="data-path config overrides")
    parser.add_argument("--corpus-cache", type=int, default=0, metavar="N",
                        help="videos the per-video corpus keeps (default: its own, 256). A number well below --videos "
                             "stands for a corpus far larger than the cache, as HowTo100M's 1.2M videos are: a drawn "
                             "negative's video is then hardly ever cached")
    parser.add_argument("--no-step", action="store_true", help="skip the trainer's step timing")
    parser.add_argument("--step-threads", type=int, default=1)
    parser.add_argument("--step-device", default="cpu", help="where the trainer's step is timed: cpu | cuda | auto")
    parser.add_argument("--gpu-peak-tflops", type=float, default=989.0, help="dense bf16 peak of one H100/H200 SXM")
    parser.add_argument("--mfu", type=float, default=0.4, help="model FLOP utilisation assumed for the GPU rate")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile each source warm (0 workers), print the top N")
    parser.add_argument("--clean", action="store_true", help="delete the store and shards at the end")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)  # the data path is single-threaded per process; workers are the parallelism
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    store, narrations = make_store(root, args.videos, args.clips)
    shards = root / "shards"
    if "shards" in args.sources and not (shards / "index.json").exists():
        from actbert.data.shards import pack_store

        start = time.perf_counter()
        pack_store(store, shards, args.shard_size)
        print(f"packed in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    sizes = {"store": folder_bytes(store), "shards": folder_bytes(shards) if shards.exists() else 0}
    extra = [f"train.batch_size={args.batch_size}", "data.samples_per_video=1", *args.overrides]
    print(f"{args.videos} videos x {args.clips} clips: store {sizes['store'] / 2**30:.2f} GiB; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}", file=sys.stderr)

    rows = []
    for source in args.sources:
        folder = shards if source == "shards" else store
        evict(folder)
        cfg = config(store, shards if source == "shards" else None, narrations, extra)
        data, make, built_s = build(cfg, root / "run")
        corpus = getattr(data.dataset, "corpus", None)
        if args.corpus_cache and source == "store" and corpus is not None:
            corpus._cache_size = args.corpus_cache
        print(f"{source}: data path built in {built_s:.1f} s", file=sys.stderr)
        epoch = 0
        for cache in args.caches:
            for workers in args.workers:
                if cache == "cold":
                    release(data)
                    evict(folder)
                else:
                    warm(folder)
                epoch += 1  # another epoch: other windows and masks, the same cost
                if args.epochs:
                    again = (lambda: (release(data), evict(folder))) if cache == "cold" else (lambda: None)
                    rate, n, per_cpu = time_epochs(make, workers, epoch, args.epochs, again)
                    epoch += args.epochs
                else:
                    rate, n, per_cpu = time_loader(make(workers, epoch), args.samples, args.batch_size)
                rows.append({"source": source, "cache": cache, "workers": workers, "samples": n, "samples_per_s": rate,
                             "samples_per_cpu_s": per_cpu if workers == 0 else None})
                print(f"  {source:6s} {cache:4s} workers={workers}: {rate:8.1f} samples/s", file=sys.stderr)
        if args.profile:
            import cProfile
            import pstats

            warm(folder)
            profiler = cProfile.Profile()
            profiler.enable()
            time_loader(make(0, epoch + 1), args.samples, args.batch_size)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)

    step = None
    if not args.no_step:
        sys.path.insert(0, str(Path(__file__).parent))
        from train_step import bench_preset

        torch.set_num_threads(args.step_threads)
        from actbert.tasks.common import resolve_device

        step = bench_preset("base", "bf16", args.batch_size, steps=2, warmup=1,
                            device=resolve_device(args.step_device, "--step-device"))
    gflop_per_sample = step["gflop_per_step"] / step["batch"] if step else None
    gpu_rate = args.gpu_peak_tflops * 1e3 * args.mfu / gflop_per_sample if step else None

    per_row = f"{args.epochs} epochs per row" if args.epochs else f"{args.samples} samples per row"
    print(f"\nstore {sizes['store'] / 2**30:.2f} GiB ({args.videos} videos x {args.clips} clips), shards "
          f"{sizes['shards'] / 2**30:.2f} GiB; batch {args.batch_size}; {per_row}")
    print("| source | page cache | workers | samples/s | samples per CPU-second (no workers) |")
    print("|---|---|---|---|---|")
    for r in rows:
        cpu = f"{r['samples_per_cpu_s']:.1f}" if r["samples_per_cpu_s"] is not None else "-"
        print(f"| {r['source']} | {r['cache']} | {r['workers']} | {r['samples_per_s']:.1f} | {cpu} |")
    if step:
        where = "this CPU" if step["device"] == "cpu" else step["device"]
        print(f"\ntrainer, {where} ({args.step_threads} thread, base bf16, batch {step['batch']}): {step['samples_per_s']:.2f} "
              f"samples/s ({step['step_s']:.2f} s/step); counted {gflop_per_sample:.0f} GFLOP per sample (forward + backward)")
        print(f"one GPU at {args.gpu_peak_tflops:.0f} TFLOP/s bf16 peak and {100 * args.mfu:.0f}% MFU: "
              f"{gpu_rate:.0f} samples/s; 5x that: {5 * gpu_rate:.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "sizes": sizes, "step": step and {k: v for k, v in step.items()
                                                                                               if k != "profile"},
                                               "gflop_per_sample": gflop_per_sample, "gpu_rate": gpu_rate}, indent=1))
    if args.clean:
        import shutil

        shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
