"""``actbert search --model DIR --store STORE --query TEXT``: the top clips of a feature store for a text."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "search a feature store's clips with a text query (embedding shortlist from a saved faiss index, reranked by the pair scorer)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="model folder (save_pretrained output) with the embeddings capability")
    parser.add_argument("--store", type=Path, required=True, help="feature store folder: the gallery is every clip of every video")
    parser.add_argument("--query", required=True, help="the text to search for")
    parser.add_argument("--index", type=Path, default=None, help="index folder (default STORE/index/<architecture>; built and saved there when absent)")
    parser.add_argument("--k", type=int, default=10, help="clips to print")
    parser.add_argument("--shortlist", type=int, default=64, help="clips shortlisted by the embeddings before reranking (at least --k)")
    parser.add_argument("--mode", choices=("two-stage", "bi-encoder"), default="two-stage", help="rerank the shortlist by pair scores, or rank by the embeddings only")
    parser.add_argument("--kind", choices=("flat", "hnsw"), default="flat", help="index built when none is saved: exact, or approximate for large galleries")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the index even when one is saved")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per forward pass")


def run(args: argparse.Namespace) -> int:
    from actbert.errors import ActBertError
    from actbert.tasks import index, registry

    if args.k < 1 or args.shortlist < 1 or args.batch_size < 1:
        print("actbert search: --k, --shortlist and --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        model = registry.load_for_evaluation("retrieval", args.model)
        assembler = registry.build_assembler(args.store, model)
        gallery = index.open_index(model, assembler, args.index, args.kind, args.rebuild, args.batch_size)
        hits = index.search(model, assembler, gallery, args.query, args.k, args.shortlist, args.mode == "two-stage", args.batch_size)
    except (ActBertError, FileNotFoundError) as exc:
        print(f"actbert search: {exc}", file=sys.stderr)
        return 1
    print(f"{'rank':>4}  {'video_id':<24} {'start':>8} {'end':>8} {'score':>10}")
    for rank, hit in enumerate(hits, 1):
        start = "" if hit.clip.start is None else f"{hit.clip.start:.2f}"
        end = "" if hit.clip.end is None else f"{hit.clip.end:.2f}"
        print(f"{rank:>4}  {hit.clip.video_id:<24} {start:>8} {end:>8} {hit.score:>10.4f}")
    return 0
