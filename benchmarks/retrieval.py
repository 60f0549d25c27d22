"""Exhaustive cross-encoder retrieval throughput: (text, video) pairs scored per second.

ActBERT retrieval scores every (query, clip) pair of a gallery with the matching head
(``model.match_score``; ``actbert.tasks.retrieval.score_matrix``), so a T-query, V-clip gallery
costs T x V forward passes. This script times those forward passes for the ``small`` preset (the
demo's model) in fp32 and under bf16 autocast, on batches laid out like retrieval inputs: a query
of ``--words`` word pieces against a clip of ``--clips`` units, each ``[ACT]`` + ``--regions``
regions (defaults: a YouCook2 segment of the synthetic benchmark). Weights are random (speed does
not depend on them); batch assembly from the feature store is not included.

    python benchmarks/retrieval.py
    python benchmarks/retrieval.py --batch-size 128 --pairs 2048 --threads 2

The figures depend on the machine and on whatever else runs on it; quote them with that caveat.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from actbert.models.actbert import random_batch
from actbert.models.registry import create_model
from actbert.train.config import load_pretrain_config


def autocast(dtype: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")


@torch.no_grad()
def time_scoring(model, batches, dtype: str, repeats: int) -> list[float]:
    """Seconds to score all ``batches`` once, for each of ``repeats`` passes (after one warm-up)."""
    with autocast(dtype):
        model.match_score(batches[0])  # warm-up: kernel selection, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            with autocast(dtype):
                scores = model.match_score(batch)
        times.append(time.perf_counter() - start)
        assert torch.isfinite(scores.float()).all()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--pairs", type=int, default=512, help="pairs per timed pass (a 16 x 32 gallery by default)")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per forward pass (RetrievalSettings.batch_size)")
    parser.add_argument("--words", type=int, default=10, help="word pieces of a query")
    parser.add_argument("--clips", type=int, default=2, help="units ([ACT] + regions) of a gallery clip")
    parser.add_argument("--regions", type=int, default=5, help="regions per unit")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best is reported")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    cfg = load_pretrain_config(args.preset, ["data.random=true", "model.text_init=null"]).model
    torch.manual_seed(0)
    model = create_model(cfg, heads=True, verbose=False).eval()
    params = sum(p.numel() for p in model.parameters())
    sizes = [args.batch_size] * (args.pairs // args.batch_size) + ([args.pairs % args.batch_size] if args.pairs % args.batch_size else [])
    batches = [random_batch(cfg, batch_size=n, clips=args.clips, words_per_clip=args.words, regions_per_clip=args.regions,
                            with_targets=False, seed=i) for i, n in enumerate(sizes)]
    print(f"preset {args.preset} ({params / 1e6:.1f} M parameters), {torch.get_num_threads()} thread(s), "
          f"{args.pairs} pairs per pass in batches of {args.batch_size}; query {args.words} pieces, "
          f"clip {args.clips} x ([ACT] + {args.regions} regions)")
    rows = {}
    for dtype in args.dtypes:
        times = time_scoring(model, batches, dtype, args.repeats)
        best = min(times)
        rows[dtype] = {"pairs_per_s": args.pairs / best, "best_s": best, "median_s": statistics.median(times)}
    print()
    print("| dtype | pairs/s (best pass) | best pass s | median pass s | vs fp32 |")
    print("| --- | --- | --- | --- | --- |")
    base = rows.get("fp32", {}).get("pairs_per_s")
    for dtype, r in rows.items():
        ratio = f"{r['pairs_per_s'] / base:.2f}x" if base else "-"
        print(f"| {dtype} | {r['pairs_per_s']:.1f} | {r['best_s']:.2f} | {r['median_s']:.2f} | {ratio} |")
    gallery = 1000
    for dtype, r in rows.items():
        print(f"{dtype}: a {gallery} x {gallery} gallery (MSR-VTT 1k-A) would take {gallery * gallery / r['pairs_per_s'] / 3600:.1f} h at this rate")


if __name__ == "__main__":
    main()
