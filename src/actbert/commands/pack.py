"""``actbert pack``: a feature store as tar shards for streaming pretraining (data/shards.py, docs/scale.md)."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "pack a feature store into tar shards for streamed pretraining (data.shards=OUT)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, help="the feature store folder (from `actbert extract`)")
    parser.add_argument("--out", required=True, help="the shard folder to create (index.json, index.safetensors, shard-*.tar)")
    parser.add_argument("--shard-size", type=int, default=1000,
                        help="videos per shard (every process of a run needs at least one shard of its own)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from actbert.data.shards import pack_store
    from actbert.data.store import FeatureStore

    store = FeatureStore(args.store)
    shown = [0]

    def progress(done: int, total: int) -> None:
        if done == total or done - shown[0] >= max(1, total // 20):
            shown[0] = done
            print(f"packed {done}/{total} videos", file=sys.stderr)

    out = pack_store(store, args.out, args.shard_size, progress)
    index = json.loads((Path(out) / "index.json").read_text())
    total = sum(s["bytes"] for s in index["shards"])
    print(json.dumps({"out": str(out), "videos": len(index["videos"]), "shards": len(index["shards"]),
                      "bytes": total}, indent=1))
    return 0
