"""Retrieval at gallery scale: the three modes on one 1,000 x 1,000 gallery, and the cost curve to 100,000 clips.

In one run, on one synthetic gallery (MSR-VTT 1k-A size: 1,000 captions, 1,000 clips, caption i
<-> clip i), through the library's own paths (``tasks.retrieval.gallery_scores``,
``tasks.index``, ``tasks.scoring``):

* **modes** -- time per query and R@1/5/10, MedR for ``exhaustive`` (every pair through the pair
  scorer), ``bi-encoder`` (the faiss shortlist order) and ``two-stage`` for each ``--ks``.
  Exhaustive costs ``T x V`` pair scores, so it runs on the first ``--exhaustive-queries``
  captions (A) against all 1,000 clips, and every mode is also reported on that same subset;
  two-stage runs each k on the first ``--two-stage-queries`` (B; 0 = all) and the ``--full-ks``
  on all queries;
* **scaling** -- for galleries of ``--scale`` clips (default to 100,000): clip embedding time,
  faiss index build (flat and HNSW), shortlist time per query (top ``max(--ks)``), the overlap of
  HNSW's shortlist with the exact one, and rerank time per query for each k, measured on
  ``--rerank-queries`` queries (a rerank scores k pairs whatever the gallery size). Sizes above
  ``--embed-max`` extrapolate the embedding time linearly and index the embedded vectors
  repeated with jitter (the output says so).

The gallery is a *planted* feature store written by this script: every clip has a caption
"<verb> the <adjective> <object>" (distinct across the 1,000 gallery clips) and features made of
fixed random embeddings of those three words plus noise, in each stream (clip action feature,
regions, per-second features). A model fresh from its preset is then fine-tuned briefly on
``--train-clips`` other clips of the same store with the retrieval task's own matching loop
(``tasks.retrieval.finetune_matching``, the model's ``pair_loss``), so quality means something
(chance: R@10 = 1 %). ``--model DIR`` takes a saved model instead (then ``--train-steps 0``
keeps it as it is; its feature widths must equal ``--action-dim`` / ``--region-dim``).

    python benchmarks/retrieval.py --family vlm --out /tmp/retrieval_bench            # the full run
    python benchmarks/retrieval.py --family hero --gallery 200 --scale 1000 10000 --out /tmp/rb
    python benchmarks/retrieval.py --family actbert --preset small --out /tmp/rb      # needs ActBERT embeddings

Writes ``OUT/retrieval_benchmark.json`` (every number) and ``OUT/retrieval_benchmark.png`` and
prints the tables. Figures depend on the machine and on whatever else runs on it: quote ratios
from one run, with that caveat.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from actbert.data.clips import ClipAssembler
from actbert.data.store import FeatureStore, FeatureStoreWriter, StoreSchema, VideoFeatures
from actbert.metrics.retrieval import ground_truth_ranks, retrieval_metrics
from actbert.models import registry as model_registry
from actbert.models.interface import capabilities_of
from actbert.models.processing import Item, VideoRef
from actbert.tasks import index as gindex
from actbert.tasks import registry as task_registry
from actbert.tasks import retrieval as ret
from actbert.tasks.scoring import score_items
from actbert.utils.io import atomic_write_json

# single WordPiece tokens of the default tokenizer; 20 x 12 x 30 = 7,200 distinct captions
VERBS = ["cut", "wash", "peel", "pour", "stir", "fry", "boil", "mix", "slice", "grate",
         "press", "fold", "roll", "shake", "heat", "drop", "lift", "open", "close", "clean"]
ADJECTIVES = ["red", "green", "small", "large", "hot", "cold", "fresh", "dry", "white", "black", "soft", "hard"]
OBJECTS = ["onion", "tomato", "potato", "carrot", "apple", "lemon", "egg", "bread", "cheese", "butter",
           "rice", "pasta", "fish", "chicken", "milk", "water", "oil", "sugar", "salt", "pepper",
           "bowl", "pan", "knife", "plate", "cup", "bottle", "box", "bag", "board", "towel"]
CLIP_SECONDS = 2  # each clip spans two seconds (two 1 FPS frames, two per-second features)
FAMILY_PRESETS = {"vlm": "vlm_tiny", "hero": "hero_tiny", "actbert": "tiny"}


# ----------------------------------------------------------------------------- the planted store


def caption(words: Sequence[int]) -> str:
    v, a, o = words
    return f"{VERBS[v]} the {ADJECTIVES[a]} {OBJECTS[o]}"


def write_gallery_store(root: str | os.PathLike, videos: dict[str, np.ndarray], action_dim: int = 64, region_dim: int = 64,
                        max_regions: int = 3, noise: float = 0.5, seed: int = 0) -> FeatureStore:
    """A feature store whose video ``vid`` has one clip per row of ``videos[vid]`` (int ``[C, 3]``:
    verb, adjective, object), each ``CLIP_SECONDS`` long, back to back.

    Per clip, from fixed random word embeddings (``seed``) plus ``noise`` x N(0, 1): action feature =
    verb + adjective + object (one table per stream); region 0 of each frame = adjective + object, the
    other regions random objects; per-second feature = verb + adjective + object (another table).
    """
    rng = np.random.default_rng(seed)
    tables = {
        "action": [rng.standard_normal((len(w), action_dim)).astype(np.float32) for w in (VERBS, ADJECTIVES, OBJECTS)],
        "second": [rng.standard_normal((len(w), action_dim)).astype(np.float32) for w in (VERBS, ADJECTIVES, OBJECTS)],
        "region": [rng.standard_normal((len(w), region_dim)).astype(np.float32) for w in (ADJECTIVES, OBJECTS)],
    }
    schema = StoreSchema(action_dim=action_dim, region_dim=region_dim, num_region_classes=len(OBJECTS), num_actions=len(VERBS),
                         region_classes=list(OBJECTS), action_vocab=list(VERBS), max_regions=max_regions, second_features=True)
    writer = FeatureStoreWriter(root, schema)
    for n, (video_id, words) in enumerate(videos.items()):
        r = np.random.default_rng([seed, 1, n])
        words = np.asarray(words, np.int64).reshape(-1, 3)
        c = len(words)
        v, a, o = words[:, 0], words[:, 1], words[:, 2]
        act = sum(t[i] for t, i in zip(tables["action"], (v, a, o)))
        frame_words = np.repeat(words, CLIP_SECONDS, axis=0)  # [F, 3]: frame k belongs to clip k // CLIP_SECONDS
        f = len(frame_words)
        sec = sum(t[i] for t, i in zip(tables["second"], frame_words.T))
        labels = r.integers(0, len(OBJECTS), size=(f, max_regions))
        labels[:, 0] = frame_words[:, 2]
        regions = tables["region"][1][labels]
        regions[:, 0] += tables["region"][0][frame_words[:, 1]]
        probs = np.full((f, max_regions, len(OBJECTS)), 0.1 / (len(OBJECTS) - 1), np.float32)
        np.put_along_axis(probs, labels[..., None], 0.9, axis=2)
        xy = r.uniform(0.0, 0.6, size=(f, max_regions, 2))
        wh = r.uniform(0.1, 0.4, size=(f, max_regions, 2))
        locations = np.concatenate([xy, xy + wh, wh[..., :1] * wh[..., 1:]], axis=2).astype(np.float32)
        targets = np.zeros((c, len(VERBS)), np.float32)
        targets[np.arange(c), v] = 1.0
        starts = np.arange(c, dtype=np.float64) * CLIP_SECONDS
        writer.write(video_id, VideoFeatures(
            clip_times=np.stack([starts, starts + CLIP_SECONDS], axis=1),
            action_features=(act + noise * r.standard_normal(act.shape)).astype(np.float32),
            action_targets=targets,
            frame_times=np.arange(f, dtype=np.float64),
            region_features=(regions + noise * r.standard_normal(regions.shape)).astype(np.float32),
            region_boxes=(locations[..., :4] * 100.0).astype(np.float32),
            region_locations=locations,
            region_class_probs=probs,
            region_counts=np.full(f, max_regions, np.int64),
            second_times=np.arange(f, dtype=np.float64) + 0.5,
            second_features=(sec + noise * r.standard_normal(sec.shape)).astype(np.float32),
        ))
    return FeatureStore(root)


def distinct_words(n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, 3]`` distinct (verb, adjective, object) triples."""
    total = len(VERBS) * len(ADJECTIVES) * len(OBJECTS)
    if n > total:
        raise SystemExit(f"--gallery {n}: at most {total} distinct captions")
    flat = rng.choice(total, size=n, replace=False)
    return np.stack(np.unravel_index(flat, (len(VERBS), len(ADJECTIVES), len(OBJECTS))), axis=1)


def random_words(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.stack([rng.integers(0, len(w), n) for w in (VERBS, ADJECTIVES, OBJECTS)], axis=1)


# ----------------------------------------------------------------------------- the model


def build_model(args: argparse.Namespace, store: FeatureStore, tokenizer: Any) -> Any:
    if args.model:
        from actbert.models.pretrained import from_pretrained

        return from_pretrained(args.model)
    preset = args.preset or FAMILY_PRESETS[args.family]
    config = model_registry.load_model_config(preset, args.model_set)
    cls = model_registry.resolve_architecture(config.architecture)
    config = cls.fill_config_from_data(config, store.schema, tokenizer)
    torch.manual_seed(args.seed)
    return model_registry.create_model(config, verbose=False)


def train(model: Any, assembler: ClipAssembler, pairs: list[tuple[str, str]], args: argparse.Namespace) -> dict:
    if args.train_steps <= 0:
        return {"steps": 0}
    log = ret.finetune_matching(model, assembler, pairs, args.train_steps, args.lr, args.train_batch, 1, True, args.seed, "benchmark fine-tune",
                                contrastive=args.contrastive)
    model.eval()
    return log.summary()


# ----------------------------------------------------------------------------- measurements


def timed(fn, *a, **kw) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - start


def metrics_of(scores: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    m = retrieval_metrics(scores, gt)
    return {key: float(m[key]) for key in ("R@1", "R@5", "R@10", "MedR")}


def run_modes(model: Any, assembler: ClipAssembler, gallery: ret.Gallery, args: argparse.Namespace) -> dict:
    """Every mode on ``gallery``; exhaustive on its first ``n_ex`` queries; all metrics also on that subset."""
    n_ex = min(args.exhaustive_queries, len(gallery.queries))
    n_two = min(args.two_stage_queries or len(gallery.queries), len(gallery.queries))
    n_ex = min(n_ex, n_two)

    def first(n: int) -> ret.Gallery:
        return ret.Gallery(gallery.dataset, gallery.protocol, gallery.queries[:n], gallery.clips, gallery.gt_index[:n], [])

    subset = first(n_ex)
    exhaustive_ranks = None
    base = {"batch_size": args.batch_size, "dtype": args.dtype}
    rows = []

    def record(mode: str, k: int | None, scores: np.ndarray, seconds: float, queries: int) -> None:
        row = {"mode": mode, "k": k, "queries": queries, "seconds": seconds, "seconds_per_query": seconds / queries,
               "subset": metrics_of(scores[:n_ex], gallery.gt_index[:n_ex])}
        if queries >= n_two:
            row["two_stage_subset"] = metrics_of(scores[:n_two], gallery.gt_index[:n_two])
        if queries == len(gallery.queries):
            row["all"] = metrics_of(scores, gallery.gt_index)
        ranks = ground_truth_ranks(scores[:n_ex], gallery.gt_index[:n_ex])
        if exhaustive_ranks is not None:
            # a finer comparison than R@10 on few queries: queries whose ground truth keeps exhaustive's rank
            row["same_rank_as_exhaustive"] = float(np.mean(ranks == exhaustive_ranks))
            row["mean_rank_change_vs_exhaustive"] = float(np.mean(ranks - exhaustive_ranks))
        rows.append(row)
        print(f"  {mode:<10} k={k if k is not None else '-':<4} {seconds:8.1f} s  ({queries} queries)  "
              f"R@10 subset {row['subset']['R@10']:.1f}" + (f", all {row['all']['R@10']:.1f}" if "all" in row else ""), flush=True)

    # warm-up (kernel selection, allocator, the store's first reads) outside every timing
    warm = [Item(VideoRef(c.video_id, c.start, c.end), q) for c, q in zip(gallery.clips[:args.batch_size], gallery.queries)]
    score_items(model, assembler, warm, args.batch_size, args.dtype, True, "warm-up", False)
    if "embeddings" in capabilities_of(model):
        gindex.embed_clips(model, assembler, gallery.clips[:args.batch_size], args.batch_size, args.dtype)
    print(f"modes on {len(gallery.queries)} x {len(gallery.clips)} (exhaustive on the first {n_ex} queries)", flush=True)
    settings = task_registry.make_settings("retrieval", dict(base, mode="exhaustive"))
    scores, sec = timed(ret.gallery_scores, model, assembler, subset, settings)
    record("exhaustive", None, scores, sec, n_ex)
    exhaustive = scores
    exhaustive_ranks = ground_truth_ranks(scores, gallery.gt_index[:n_ex])
    if "embeddings" in capabilities_of(model):
        settings = task_registry.make_settings("retrieval", dict(base, mode="bi-encoder"))
        scores, sec = timed(ret.gallery_scores, model, assembler, gallery, settings)
        record("bi-encoder", None, scores, sec, len(gallery.queries))
        runs = [(k, n_two) for k in args.ks] + [(k, len(gallery.queries)) for k in args.full_ks if n_two < len(gallery.queries)]
        for k, n in runs:
            settings = task_registry.make_settings("retrieval", dict(base, mode="two-stage", k=k))
            scores, sec = timed(ret.gallery_scores, model, assembler, first(n), settings)
            record("two-stage", k, scores, sec, n)
            # the subset's reranked pairs are exhaustive's pair scores: a check that both paths agree
            top = np.argsort(-scores[:n_ex], axis=1, kind="stable")[:, :min(k, len(gallery.clips))]
            rows[-1]["max_abs_diff_vs_exhaustive_on_shortlist"] = float(np.abs(
                np.take_along_axis(scores[:n_ex], top, 1) - np.take_along_axis(exhaustive, top, 1)).max())
    else:
        print(f"  {type(model).__name__} has no 'embeddings' capability: bi-encoder and two-stage skipped", flush=True)
    return {"exhaustive_queries": n_ex, "two_stage_queries": n_two, "rows": rows}


def run_scaling(model: Any, assembler: ClipAssembler, all_clips: list[gindex.GalleryClip], texts: list[str], args: argparse.Namespace) -> dict:
    """Embedding, index build, shortlist and rerank cost for the first N clips of the scaling store."""
    k_max = max(args.ks)
    rows = []
    q_all, q_sec = timed(gindex.embed_texts, model, assembler, texts, all_clips[0], args.batch_size, args.dtype)
    text_per_query = q_sec / len(texts)
    vectors = np.zeros((0, q_all.shape[1]), np.float32)
    embed_total = 0.0
    done = 0
    jitter = np.random.default_rng([args.seed, 3])
    for n in sorted(args.scale):
        clips = all_clips[:n]
        real = min(n, args.embed_max)
        if real > done:
            new, sec = timed(gindex.embed_clips, model, assembler, clips[done:real], args.batch_size, args.dtype)
            vectors = np.concatenate([vectors, new]) if len(vectors) else new
            embed_total += sec
            done = real
        row = {"clips": n, "embedded_clips": done, "embed_seconds": embed_total * n / done, "embed_clips_per_s": done / embed_total,
               "embed_extrapolated": n > done, "text_seconds_per_query": text_per_query}
        index_vectors = vectors[:n]
        if n > done:
            # the embedded vectors repeated, each copy jittered (0.05 x the mean norm): faiss's cost depends on
            # N and the width; HNSW's overlap on such near-duplicates is not a real-embedding figure
            reps = np.resize(vectors, (n, vectors.shape[1]))
            scale = 0.05 * float(np.linalg.norm(vectors, axis=1).mean()) / np.sqrt(vectors.shape[1])
            index_vectors = (reps + scale * jitter.standard_normal(reps.shape)).astype(np.float32)
            index_vectors[:done] = vectors
            if gindex.normalized_for(model):
                index_vectors /= np.linalg.norm(index_vectors, axis=1, keepdims=True)
        exact_ids = None
        for kind in args.kinds:
            built, build_sec = timed(gindex.build_index, model, assembler, clips, kind, vectors=index_vectors)
            (_, ids), search_sec = timed(built.search, q_all, k_max)
            entry = {"build_seconds": build_sec, "shortlist_seconds_per_query": search_sec / len(q_all), "k": k_max}
            if kind == "flat":
                exact_ids = ids
            elif exact_ids is not None:
                entry["overlap_with_flat"] = {str(k): float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(ids, exact_ids)]))
                                              for k in args.ks if k <= k_max}
            row[kind] = entry
            if kind == args.kinds[0]:
                row["rerank"] = rerank_cost(model, assembler, built, ids, texts, args)
        rows.append(row)
        print(f"  {n:>7} clips: embed {embed_total:7.1f} s, " + ", ".join(
            f"{kind} build {row[kind]['build_seconds']:.2f} s / shortlist {1e3 * row[kind]['shortlist_seconds_per_query']:.2f} ms"
            for kind in args.kinds) + f", rerank k={k_max} {row['rerank'][str(k_max)]:.2f} s/query"
            + (" (embedding extrapolated, index on tiled vectors)" if row["embed_extrapolated"] else ""), flush=True)
    return {"queries": len(texts), "k_shortlist": k_max, "rows": rows,
            "note": ("rerank measured on the first --rerank-queries queries of each gallery size (k pairs each, through score_items); "
                     f"sizes above --embed-max={args.embed_max}: embedding time extrapolated linearly from the embedded clips, "
                     "the index built on those vectors repeated with jitter")}


def rerank_cost(model: Any, assembler: ClipAssembler, built: gindex.GalleryIndex, ids: np.ndarray, texts: list[str], args: argparse.Namespace) -> dict:
    """Seconds per query to score its top k clips with ``pair_scores``, for each k."""
    n = min(args.rerank_queries, len(texts))
    out = {}
    for k in args.ks:
        items = [Item(VideoRef(built.clips[i].video_id, built.clips[i].start, built.clips[i].end), texts[t]) for t in range(n) for i in ids[t, :k]]
        _, sec = timed(score_items, model, assembler, items, args.batch_size, args.dtype, True, "rerank", False)
        out[str(k)] = sec / n
    return out


# ----------------------------------------------------------------------------- report


def print_tables(result: dict) -> None:
    modes = result["modes"]
    n_ex, n_two = modes["exhaustive_queries"], modes["two_stage_queries"]
    g = result["gallery"]

    def cells(m: dict | None) -> str:
        return f"{m['R@1']:.1f} / {m['R@5']:.1f} / {m['R@10']:.1f} | {m['MedR']:.1f}" if m else "- | -"

    print(f"\n{result['model']['architecture']}: {g['queries']} queries x {g['clips']} clips (chance R@10 {g['chance_R@10']:.1f}); exhaustive on the first "
          f"{n_ex} queries (A), two-stage on the first {n_two} (B); metrics on A, on B and on all queries where the mode ran them")
    print("| mode | k | queries timed | s / query | total s | R@1 / R@5 / R@10 (A) | MedR (A) | same rank as exhaustive (A) "
          "| R@1 / R@5 / R@10 (B) | MedR (B) | R@1 / R@5 / R@10 (all) | MedR (all) |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---|---:|---|---:|")
    for r in modes["rows"]:
        same = f"{100 * r['same_rank_as_exhaustive']:.0f} %" if "same_rank_as_exhaustive" in r else "-"
        print(f"| {r['mode']} | {r['k'] or '-'} | {r['queries']} | {r['seconds_per_query']:.4f} | {r['seconds']:.1f} | "
              f"{cells(r['subset'])} | {same} | {cells(r.get('two_stage_subset'))} | {cells(r.get('all'))} |")
    ex = modes["rows"][0]
    full = ex["seconds_per_query"] * result["gallery"]["queries"]
    print(f"exhaustive for all {result['gallery']['queries']} queries at the measured rate: {full:.0f} s "
          f"({ex['queries'] * result['gallery']['clips'] / ex['seconds']:.0f} pairs/s)")
    scaling = result.get("scaling")
    if scaling:
        kinds = [k for k in ("flat", "hnsw") if k in scaling["rows"][0]]
        print(f"\nscaling (shortlist top {scaling['k_shortlist']} for {scaling['queries']} queries; rerank measured per query)")
        head = "| clips | embed s | clips/s | " + " | ".join(f"{k} build s | {k} shortlist ms/query" for k in kinds)
        head += " | HNSW overlap@k | " + " | ".join(f"rerank k={k} s/query" for k in scaling["rows"][0]["rerank"]) + " |"
        print(head)
        print("|" + "---:|" * (head.count("|") - 1))
        for r in scaling["rows"]:
            cells = [f"{r['clips']:,}", f"{r['embed_seconds']:.1f}", f"{r['embed_clips_per_s']:.0f}"]
            for k in kinds:
                cells += [f"{r[k]['build_seconds']:.2f}", f"{1e3 * r[k]['shortlist_seconds_per_query']:.2f}"]
            ov = r.get("hnsw", {}).get("overlap_with_flat")
            cells.append(", ".join(f"{k}: {v:.2f}" for k, v in ov.items()) if ov else "-")
            cells += [f"{v:.3f}" for v in r["rerank"].values()]
            print("| " + " | ".join(cells) + " |")
        last = scaling["rows"][-1]
        for kind in kinds:
            for k, rr in last["rerank"].items():
                per = last["text_seconds_per_query"] + last[kind]["shortlist_seconds_per_query"] + rr
                print(f"cost per query at {last['clips']:,} clips, {kind}, k={k}: {per:.3f} s "
                      f"(text {last['text_seconds_per_query'] * 1e3:.1f} ms + shortlist {last[kind]['shortlist_seconds_per_query'] * 1e3:.2f} ms + rerank {rr:.3f} s)")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from actbert.utils.plotting import save_png

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    for r in result["modes"]["rows"]:
        label = r["mode"] + (f" k={r['k']}" if r["k"] else "")
        ax.scatter(r["seconds_per_query"], r["subset"]["R@10"], s=30)
        ax.annotate(label, (r["seconds_per_query"], r["subset"]["R@10"]), fontsize=8, xytext=(4, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per query (1,000 clips)")
    ax.set_ylabel(f"R@10 on the first {result['modes']['exhaustive_queries']} queries")
    ax.set_title(f"modes, {result['model']['architecture']}")
    ax.grid(alpha=0.3)
    scaling = result.get("scaling")
    ax = axes[1]
    if scaling:
        n = [r["clips"] for r in scaling["rows"]]
        for kind in ("flat", "hnsw"):
            if kind in scaling["rows"][0]:
                ax.plot(n, [r[kind]["shortlist_seconds_per_query"] for r in scaling["rows"]], "o-", label=f"{kind} shortlist")
        for k in scaling["rows"][0]["rerank"]:
            ax.plot(n, [r["rerank"][k] for r in scaling["rows"]], "s--", label=f"rerank k={k}", alpha=0.7)
        ax.plot(n, [r["text_seconds_per_query"] for r in scaling["rows"]], "^:", label="encode query")
        ax.plot(n, [r["embed_seconds"] / 1000.0 for r in scaling["rows"]], "x-", label="embed gallery / 1000")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("gallery clips")
        ax.set_ylabel("seconds per query")
        ax.set_title("cost per query vs gallery size")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="vlm", choices=sorted(FAMILY_PRESETS), help="model family (its tiny preset unless --preset)")
    p.add_argument("--preset", default="", help="model preset (default: the family's tiny one)")
    p.add_argument("--model", default="", help="a saved model folder instead of a fresh preset")
    p.add_argument("--save-model", default="", help="save the (fine-tuned) model to this folder")
    p.add_argument("--model-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override of the preset's model section, e.g. embed_dim=64 (ActBERT's embedding heads)")
    p.add_argument("--contrastive", type=float, default=0.0,
                   help="fine-tuning: weight of the model's InfoNCE mixed into the matching loss (retrieval setting 'contrastive')")
    p.add_argument("--out", required=True, help="folder for the store, the JSON and the PNG")
    p.add_argument("--gallery", type=int, default=1000, help="queries = clips of the modes' gallery")
    p.add_argument("--exhaustive-queries", type=int, default=50, help="queries scored exhaustively (against every clip)")
    p.add_argument("--ks", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--two-stage-queries", type=int, default=0, help="queries of the two-stage runs (0: all)")
    p.add_argument("--full-ks", type=int, nargs="*", default=[16], help="two-stage k also run on all queries when --two-stage-queries is less")
    p.add_argument("--embed-max", type=int, default=100000,
                   help="scaling: clips embedded for real; larger sizes index the embedded vectors tiled with jitter, embedding time extrapolated")
    p.add_argument("--scale", type=int, nargs="*", default=[1000, 10000, 100000], help="gallery sizes of the scaling curve (none: skip)")
    p.add_argument("--kinds", nargs="+", default=["flat", "hnsw"], choices=list(gindex.KINDS))
    p.add_argument("--scale-queries", type=int, default=200, help="queries searched at each scaling size")
    p.add_argument("--rerank-queries", type=int, default=5, help="queries reranked at each scaling size (per k)")
    p.add_argument("--train-clips", type=int, default=2000, help="training clips (other videos of the same store)")
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64, help="rows per forward pass when scoring and embedding")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--noise", type=float, default=0.5)
    p.add_argument("--action-dim", type=int, default=64)
    p.add_argument("--region-dim", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    from actbert.text.tokenizer import load_tokenizer

    tokenizer = load_tokenizer()
    started = time.perf_counter()

    # one store: the gallery's videos (one clip each), the training videos, the scaling videos
    gallery_words = distinct_words(args.gallery, rng)
    videos = {f"g{i:05d}": gallery_words[i : i + 1] for i in range(args.gallery)}
    train_words = random_words(args.train_clips, rng)
    videos.update({f"t{i:05d}": train_words[i : i + 1] for i in range(args.train_clips)})
    per_video = 100
    scale_max = max(args.scale) if args.scale else 0
    n_scale_videos = -(-scale_max // per_video)
    scale_words = random_words(n_scale_videos * per_video, rng).reshape(n_scale_videos, per_video, 3)
    videos.update({f"s{i:05d}": scale_words[i] for i in range(n_scale_videos)})
    store_dir = out / "store"
    if (store_dir / "schema.json").exists():
        import shutil

        shutil.rmtree(store_dir)
    store, store_sec = timed(write_gallery_store, store_dir, videos, args.action_dim, args.region_dim, noise=args.noise, seed=args.seed)
    assembler = ClipAssembler(store, tokenizer)
    print(f"store: {len(videos)} videos ({args.gallery} gallery, {args.train_clips} training, {n_scale_videos} x {per_video} scaling clips) "
          f"in {store_sec:.1f} s", flush=True)

    model = build_model(args, store, tokenizer)
    pairs = [(f"t{i:05d}", caption(w)) for i, w in enumerate(train_words)]
    train_log, train_sec = timed(train, model, assembler, pairs, args)
    print(f"model: {type(model).__name__} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters), "
          f"fine-tuned {train_log.get('steps', 0)} steps in {train_sec:.0f} s: {train_log}", flush=True)
    model.eval()
    if args.save_model:
        model.save_pretrained(args.save_model)  # --model DIR reuses it (with --train-steps 0, as it is)

    clips = [ret.Clip(f"g{i:05d}", 0.0, float(CLIP_SECONDS), f"g{i:05d}") for i in range(args.gallery)]
    gallery = ret.Gallery("synthetic", "planted 1k-A-size gallery", [caption(w) for w in gallery_words], clips, np.arange(args.gallery), [])
    with torch.no_grad():
        modes = run_modes(model, assembler, gallery, args)
    result: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/retrieval.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
        "model": {"architecture": gindex.architecture_of(model), "class": type(model).__name__, "preset": args.preset or FAMILY_PRESETS[args.family],
                  "from": args.model or "fresh preset", "parameters": sum(p.numel() for p in model.parameters()),
                  "capabilities": sorted(capabilities_of(model)), "train": train_log, "train_seconds": train_sec},
        "gallery": {"queries": args.gallery, "clips": args.gallery, "noise": args.noise, "chance_R@10": 100.0 * min(10, args.gallery) / args.gallery},
        "settings": {"batch_size": args.batch_size, "dtype": args.dtype, "ks": args.ks, "model_set": args.model_set,
                     "contrastive": args.contrastive, "train_steps": args.train_steps, "train_batch": args.train_batch, "lr": args.lr},
        "modes": modes,
    }
    if args.scale and "embeddings" in capabilities_of(model):
        scale_clips = [gindex.GalleryClip(f"s{v:05d}", float(j * CLIP_SECONDS), float((j + 1) * CLIP_SECONDS))
                       for v in range(n_scale_videos) for j in range(per_video)]
        flat = scale_words.reshape(-1, 3)
        texts = [caption(flat[i]) for i in np.random.default_rng([args.seed, 2]).choice(len(flat), size=args.scale_queries, replace=False)]
        print(f"scaling to {scale_max:,} clips ({args.scale_queries} queries)", flush=True)
        with torch.no_grad():
            result["scaling"] = run_scaling(model, assembler, scale_clips, texts, args)
    result["total_seconds"] = time.perf_counter() - started
    atomic_write_json(out / "retrieval_benchmark.json", result)
    plot(result, out / "retrieval_benchmark.png")
    print_tables(result)
    print(f"\nwrote {out / 'retrieval_benchmark.json'} and {out / 'retrieval_benchmark.png'} ({result['total_seconds']:.0f} s in all)")
    return result


if __name__ == "__main__":
    main()
