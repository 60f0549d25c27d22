"""Text-video clip retrieval (ActBERT 4.2.5, Table 4): R@1, R@5, R@10, median rank.

ActBERT is a cross-encoder: a text and a video are scored together, by the matching head on the
[CLS] output (``model.match_score``). Retrieval therefore scores *every* (query, clip) pair of the
gallery -- ``T x V`` forward passes, done in batches (``bf16`` autocast optional) -- and ranks the
clips of each query by that score (ties are pessimistic, E1's metric).

Protocols:

* **YouCook2** (validation clips, following TVJE/HowTo100M): every annotated segment of a
  validation video is a clip; its sentence is the query; the gallery is all such clips.
* **MSR-VTT 1k-A** (JSFusion test CSV): text ``i`` <-> video ``i`` of ``MSRVTT_JSFUSION_test.csv``;
  a clip is the whole test video.

Zero-shot uses the pretrained matching head as is. Fine-tuning (``finetune``) trains the whole
model on the MSR-VTT training split (``MSRVTT_train.9k.csv`` videos, captions from
``MSRVTT_data.json``) with the matching loss: each step takes ``batch_size`` true pairs and, for
each, ``negatives`` captions of other training videos (drawn from the same batch when it is large
enough, else at random), binary cross-entropy on the logits. With ``contrastive`` = c > 0 (a model
with the ``embeddings`` capability and a ``contrastive_loss``, e.g. ActBERT with ``embed_dim > 0``)
the loss is ``(1 - c) * matching + c * InfoNCE`` over ``batch_size`` true pairs of distinct videos
(c = 1: the contrastive loss alone). A model whose config sets ``hard_negatives`` (ActBERT) draws
its matching negatives from the embedding similarity (``hard_negative_pairs``) instead of at random.

Modes (``mode``): ``exhaustive`` (the default, the paper's protocol) scores every pair as above;
``bi-encoder`` ranks by the similarity of the model's separate embeddings (the ``embeddings``
capability, an exact faiss index, :mod:`actbert.tasks.index`); ``two-stage`` shortlists the top
``k`` clips of each query by the embeddings and reranks them with ``pair_scores`` -- ``T x k``
forward passes instead of ``T x V``; clips outside the shortlist rank below it, in embedding
order. With ``k`` = the gallery size, two-stage is the exhaustive ranking.

A model whose pair scores factor into a text part and a video part (the ``factored_scores``
capability; VLM: the dot product of the separately pooled text and video, HERO: the max over frames
of cos(query, frame)) gets the exhaustive matrix from one pass per query and one per clip, ``T + V``
instead of ``T x V`` -- the same scores up to float rounding (``factored``; false: every pair
through ``pair_scores``).

Sub-galleries (``gallery_size`` = G > 0, off by default): the clips, in the gallery's order, are cut
into ``round(V / G)`` consecutive blocks of nearly equal size (``np.array_split``) and each query is
ranked among the clips of its own block only -- ``V x G`` pairs instead of ``V x V``, for budgets
where the cross-encoder cannot score every pair (the comparison benchmark, ``actbert compare``).
Consecutive rather than random blocks keep a YouCook2 segment's hardest distractors, the other
segments of its own video, in its block. Recalls are then "among about G candidates", not the
paper's numbers; every record says so in its notes and ``gallery_blocks``.

Any model with the ``pair_scores`` capability runs here; its own processor lays out the pairs
(a converted PaddleVideo checkpoint gets PaddleVideo's MSR-VTT test layout,
:mod:`actbert.models.paddlevideo.processing`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from actbert.config import AT_LEAST_ONE, FRACTION, Range
from actbert.data import readers
from actbert.metrics.retrieval import ground_truth_ranks, rank_metrics
from actbert.data.clips import ClipAssembler
from actbert.models.interface import device_of, factorizes, require
from actbert.models.processing import Item, VideoRef, processor_for
from actbert.tasks.common import Benchmark, TaskError, make_record
from actbert.train.finetune import TrainLog, train_loop
from actbert.tasks import index
from actbert.tasks.scoring import factored_score_matrix as score_factored
from actbert.tasks.scoring import score_items

TASK = "retrieval"
PRIMARY = "R@5"
REQUIRES = ("pair_scores",)
MODES = ("exhaustive", "bi-encoder", "two-stage")


@dataclass
class RetrievalSettings:
    # numeric settings not named here must be >= 0 (checked by tasks.registry)
    RANGES: ClassVar[dict[str, Range]] = {"batch_size": AT_LEAST_ONE, "train_batch": AT_LEAST_ONE, "k": AT_LEAST_ONE,
                                          "contrastive": FRACTION}
    batch_size: int = 64  # pairs per forward pass when scoring
    # exhaustive: pair_scores of every (query, clip) | bi-encoder: the embedding similarity |
    # two-stage: the top k clips by the embeddings, reranked by pair_scores (module docstring)
    mode: str = "exhaustive"
    k: int = 16  # two-stage shortlist length per query
    dtype: str = "fp32"  # fp32 | bf16 (autocast)
    device: str = "auto"  # auto (a GPU if there is one) | cpu | cuda | cuda:N
    max_queries: int = 0  # 0 = the whole gallery; else the first N clips (budgeted runs say so)
    # 0 = every query against the whole gallery (the paper's protocol); G > 0: the gallery is cut into
    # consecutive blocks of about G clips and each query is ranked within its own block (module docstring)
    gallery_size: int = 0
    # a model whose pair scores factor (factored_scores: VLM, HERO): the T x V matrix from T + V passes (module docstring)
    factored: bool = True
    use_regions: bool = True
    # fine-tuning (MSR-VTT training split)
    steps: int = 60
    lr: float = 5e-5
    train_batch: int = 8
    negatives: int = 1
    # the fine-tuning losses: (1 - contrastive) * matching + contrastive * InfoNCE (0 = matching alone,
    # the paper's; 1 = InfoNCE alone); > 0 needs the embeddings (ActBERT: model.embed_dim > 0)
    contrastive: float = 0.0
    seed: int = 0


# A gallery entry: the span of a video (``None`` = from the start / to the end); the index's own
# entry type, so a gallery and its saved index describe clips alike.
Clip = index.GalleryClip


@dataclass
class Gallery:
    dataset: str
    protocol: str
    queries: list[str]  # [T]
    clips: list[Clip]  # [V]
    gt_index: np.ndarray  # int64 [T]
    skipped: list[dict[str, str]]


def _keep_available(dataset: str, protocol: str, queries, clips, assembler: ClipAssembler, max_queries: int) -> Gallery:
    """Drop pairs whose video has no features (reported), then cut to ``max_queries``."""
    keep_q, keep_c, skipped = [], [], []
    for q, c in zip(queries, clips):
        if c.video_id in assembler:
            keep_q.append(q)
            keep_c.append(c)
        else:
            skipped.append({"video_id": c.video_id, "error": "not in the feature store"})
    if max_queries and len(keep_q) > max_queries:
        keep_q, keep_c = keep_q[:max_queries], keep_c[:max_queries]
    if not keep_q:
        raise TaskError(f"{dataset}: no {protocol} clip has features in {assembler.store_name}")
    return Gallery(dataset, protocol, keep_q, keep_c, np.arange(len(keep_q)), skipped)


def youcook2_gallery(bench: Benchmark, assembler: ClipAssembler, max_queries: int = 0) -> Gallery:
    """YouCook2 validation clips: one clip and one query per annotated segment."""
    videos = readers.read_youcook2(bench.require(bench.youcook2, "YouCook2"), subset="validation")
    segments = readers.youcook2_segments(videos)
    clips = [Clip(s.video_id, s.start, s.end, f"{s.video_id}#{s.segment_id}") for s in segments]
    return _keep_available("youcook2", "validation clips", [s.sentence for s in segments], clips, assembler, max_queries)


def msrvtt_gallery(bench: Benchmark, assembler: ClipAssembler, max_queries: int = 0) -> Gallery:
    """MSR-VTT 1k-A: text i <-> video i of the JSFusion test CSV."""
    pairs = readers.read_jsfusion_test(bench.require(bench.msrvtt_test, "MSR-VTT JSFusion test"))
    clips = [Clip(p.video_id, name=p.video_id) for p in pairs]
    return _keep_available("msrvtt", "1k-A", [p.sentence for p in pairs], clips, assembler, max_queries)


def score_matrix(
    model: Any,
    assembler: ClipAssembler,
    queries: Sequence[str],
    clips: Sequence[Clip],
    batch_size: int = 64,
    dtype: str = "fp32",
    use_regions: bool = True,
    progress: bool = True,
    factored: bool = True,
) -> np.ndarray:
    """``pair_scores`` of every (query, clip) pair: float32 ``[T, V]`` (the exhaustive cross-encoder);
    with ``factored`` and a model with ``factored_scores``, from one pass per query and per clip
    instead (the same scores, module docstring)."""
    if factored and factorizes(model):
        refs = [VideoRef(c.video_id, c.start, c.end) for c in clips]
        texts = [Item(refs[0], q) for q in queries] if refs else []
        return score_factored(model, assembler, texts, [Item(r) for r in refs], batch_size, dtype, use_regions, TASK, progress)
    refs = [VideoRef(c.video_id, c.start, c.end) for c in clips]
    items = [Item(refs[v], queries[t]) for t in range(len(queries)) for v in range(len(clips))]
    scores = score_items(model, assembler, items, batch_size, dtype, use_regions, TASK, progress)
    return scores.reshape(len(queries), len(clips))


def check_mode(settings: RetrievalSettings) -> None:
    if settings.mode not in MODES:
        raise TaskError(f"retrieval setting 'mode': must be one of {', '.join(MODES)}, got {settings.mode!r}")


def embedding_scores(model: Any, assembler: ClipAssembler, queries: Sequence[str], clips: Sequence[Clip], settings: RetrievalSettings) -> tuple[np.ndarray, np.ndarray]:
    """The bi-encoder: (similarity ``[T, V]`` float32, clip rows by similarity ``[T, V]`` int64), from an
    exact faiss index over the clips' ``encode_video`` and the queries' ``encode_text``."""
    require(model, ["embeddings"], f"{TASK} (mode={settings.mode})")
    gallery_index = index.build_index(model, assembler, clips, "flat", settings.batch_size, settings.dtype, settings.use_regions)
    q = index.embed_texts(model, assembler, queries, clips[0], settings.batch_size, settings.dtype, settings.use_regions)
    sims, order = gallery_index.search(q, len(clips))
    full = np.empty_like(sims)
    np.put_along_axis(full, order, sims, axis=1)
    return full, order


def two_stage_scores(model: Any, assembler: ClipAssembler, queries: Sequence[str], clips: Sequence[Clip], settings: RetrievalSettings) -> np.ndarray:
    """``[T, V]``: the top ``k`` clips of each query by the embeddings, rescored by ``pair_scores``
    (the shared pair scorer); every clip outside the shortlist ranks below all of it, in embedding order."""
    sims, order = embedding_scores(model, assembler, queries, clips, settings)
    k = min(settings.k, len(clips))
    # clip order within a shortlist is irrelevant to the ranking; clip-index order makes k = V score
    # exactly the items (and batches) of the exhaustive path
    shortlist = np.sort(order[:, :k], axis=1)
    refs = [VideoRef(c.video_id, c.start, c.end) for c in clips]
    items = [Item(refs[v], queries[t]) for t in range(len(queries)) for v in shortlist[t]]
    pair = score_items(model, assembler, items, settings.batch_size, settings.dtype, settings.use_regions, TASK).reshape(len(queries), k)
    floor = pair.min(axis=1, keepdims=True) - 1.0
    # outside the shortlist: below the floor, ordered by similarity (<= 0 offsets from the best outsider)
    inside = np.zeros(sims.shape, bool)
    np.put_along_axis(inside, shortlist, True, axis=1)
    outside = np.where(inside, -np.inf, sims)
    best_out = outside.max(axis=1, keepdims=True) if k < len(clips) else np.zeros((len(queries), 1), np.float32)
    scores = (floor + (sims - best_out)).astype(np.float32)
    np.put_along_axis(scores, shortlist, pair, axis=1)
    return scores


def gallery_scores(model: Any, assembler: ClipAssembler, gallery: Gallery, settings: RetrievalSettings) -> np.ndarray:
    """``[T, V]`` scores of the gallery under ``settings.mode`` (higher = better)."""
    check_mode(settings)
    if settings.mode == "bi-encoder":
        return embedding_scores(model, assembler, gallery.queries, gallery.clips, settings)[0]
    if settings.mode == "two-stage":
        return two_stage_scores(model, assembler, gallery.queries, gallery.clips, settings)
    return score_matrix(model, assembler, gallery.queries, gallery.clips, settings.batch_size, settings.dtype, settings.use_regions,
                        factored=settings.factored)


def gallery_blocks(num_clips: int, gallery_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each sub-gallery: ``round(V / G)`` consecutive, nearly equal blocks (at
    least one; ``gallery_size`` 0 or >= V = the whole gallery)."""
    if gallery_size <= 0 or gallery_size >= num_clips:
        return [(0, num_clips)]
    bounds = np.cumsum([0] + [len(b) for b in np.array_split(np.arange(num_clips), max(1, round(num_clips / gallery_size)))])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def block_ranks(model: Any, assembler: ClipAssembler, gallery: Gallery, settings: RetrievalSettings) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Each query's rank within its sub-gallery ``[T]`` and its top 5 clips ``[T, <=5]`` (gallery
    indices), scoring ``settings.mode`` block by block (one block: the whole gallery). Several
    blocks need text ``i`` <-> clip ``i``."""
    blocks = gallery_blocks(len(gallery.clips), settings.gallery_size)
    identity = len(gallery.clips) == len(gallery.queries) and np.array_equal(gallery.gt_index, np.arange(len(gallery.queries)))
    if len(blocks) > 1 and not identity:
        raise TaskError(f"{gallery.dataset}: retrieval setting 'gallery_size' needs one query per clip (text i <-> clip i)")
    ranks, top = [], []
    for a, b in blocks:
        part = gallery if len(blocks) == 1 else Gallery(gallery.dataset, gallery.protocol, gallery.queries[a:b], gallery.clips[a:b], np.arange(b - a), [])
        scores = gallery_scores(model, assembler, part, settings)
        ranks.append(ground_truth_ranks(scores, part.gt_index))
        top.append(a + np.argsort(-scores, axis=1, kind="stable")[:, :5])
    width = min(t.shape[1] for t in top)
    return np.concatenate(ranks), np.concatenate([t[:, :width] for t in top]), blocks


def evaluate_gallery(model: Any, assembler: ClipAssembler, gallery: Gallery, settings: RetrievalSettings, variant: str = "", protocol_suffix: str = "zero-shot") -> dict:
    """Score a gallery (whole, or in sub-galleries with ``gallery_size``) and turn it into a results
    record (plus per-query ranks)."""
    start = time.perf_counter()
    ranks, top5, blocks = block_ranks(model, assembler, gallery, settings)
    metrics = rank_metrics(ranks)
    notes = []
    if len(blocks) > 1:
        sizes = sorted({b - a for a, b in blocks})
        notes.append(f"ranked within {len(blocks)} consecutive sub-galleries of {'-'.join(map(str, sizes))} clips "
                     f"(gallery_size={settings.gallery_size}), not against the whole gallery of {len(gallery.clips)}")
    if settings.mode == "exhaustive" and settings.factored and factorizes(model):
        notes.append("factored scores: one pass per query and per clip (score_text, score_video), the pair scores' own similarity")
    if settings.mode == "bi-encoder":
        notes.append("mode=bi-encoder: ranked by the embedding similarity (encode_text . encode_video, exact faiss index)")
    elif settings.mode == "two-stage":
        notes.append(f"mode=two-stage: top k={min(settings.k, len(gallery.clips))} clips by the embeddings, reranked by pair_scores")
    if settings.max_queries:
        notes.append(f"gallery limited to the first {len(gallery.queries)} clips (max_queries={settings.max_queries})")
    if gallery.skipped:
        notes.append(f"{len(gallery.skipped)} clip(s) skipped: no features")
    if not settings.use_regions:
        notes.append("without region cues")
    notes.extend(getattr(processor_for(model, assembler), "notes", ()))
    return make_record(
        TASK,
        gallery.dataset,
        f"{gallery.protocol}, {protocol_suffix}",
        metrics,
        PRIMARY,
        variant=variant,
        settings=asdict(settings),
        seconds=time.perf_counter() - start,
        notes=notes,
        extra={
            "queries": gallery.queries,
            "clips": [c.name or c.video_id for c in gallery.clips],
            "clip_videos": [c.video_id for c in gallery.clips],
            "ranks": ranks.tolist(),
            "top5": top5.tolist(),
            "gallery_blocks": [list(b) for b in blocks],
            "skipped": gallery.skipped,
        },
    )


# ----------------------------------------------------------------------------- fine-tuning


def msrvtt_training_pairs(bench: Benchmark, assembler: ClipAssembler) -> list[tuple[str, str]]:
    """(video_id, caption) for every caption of a training-split video that has features."""
    train_ids = set(readers.read_train_ids(bench.require(bench.msrvtt_train_ids, "MSR-VTT train 9k")))
    data = readers.read_msrvtt_data(bench.require(bench.msrvtt_data, "MSR-VTT data"))
    pairs = [(c.video_id, c.caption) for c in data.captions if c.video_id in train_ids and c.video_id in assembler]
    if len(set(v for v, _ in pairs)) < 2:
        raise TaskError(f"{bench.msrvtt_data}: fewer than 2 training videos with captions and features (matching needs negatives)")
    return pairs


def matching_batch(processor: Any, pairs: Sequence[tuple[str, str]], rng: np.random.Generator, size: int, negatives: int, use_regions: bool):
    """``size`` true pairs + ``negatives`` mismatched captions each -> (the model's batch, labels [B])."""
    idx = rng.choice(len(pairs), size=min(size, len(pairs)), replace=len(pairs) < size)
    items, labels = [], []
    for i in idx:
        video_id, caption = pairs[i]
        video = VideoRef(video_id)
        items.append(Item(video, caption))
        labels.append(1.0)
        for _ in range(negatives):
            # in-batch negatives first (another chosen pair's caption), random ones when the batch has none
            others = [j for j in idx if pairs[j][0] != video_id]
            j = int(rng.choice(others)) if others else int(rng.integers(len(pairs)))
            while pairs[j][0] == video_id:
                j = int(rng.integers(len(pairs)))
            items.append(Item(video, pairs[j][1]))
            labels.append(0.0)
    return processor.batch(items, use_regions=use_regions), torch.tensor(labels)


def distinct_video_batch(processor: Any, pairs: Sequence[tuple[str, str]], rng: np.random.Generator, size: int, use_regions: bool):
    """Up to ``size`` true pairs of distinct videos (one random caption each) -> the model's batch:
    the rows of a contrastive batch, where two captions of one video would be false negatives."""
    by_video: dict[str, list[str]] = {}
    for video_id, caption in pairs:
        by_video.setdefault(video_id, []).append(caption)
    videos = sorted(by_video)
    chosen = rng.choice(len(videos), size=min(size, len(videos)), replace=False)
    items = [Item(VideoRef(videos[i]), by_video[videos[i]][int(rng.integers(len(by_video[videos[i]])))]) for i in chosen]
    return processor.batch(items, use_regions=use_regions)


def check_contrastive(model: Any, contrastive: float) -> None:
    """A model that can take the contrastive fine-tuning loss, or a :class:`TaskError` saying why not."""
    if contrastive > 0:
        require(model, ["embeddings"], f"{TASK} fine-tuning (contrastive={contrastive:g})")
        if not callable(getattr(model, "contrastive_loss", None)):
            raise TaskError(f"retrieval setting 'contrastive': {type(model).__name__} has no contrastive_loss(batch); use contrastive=0")


def finetune_matching(model: Any, assembler: ClipAssembler, pairs: Sequence[tuple[str, str]], steps: int, lr: float, batch: int, negatives: int, use_regions: bool, seed: int, desc: str,
                      contrastive: float = 0.0) -> TrainLog:
    """Train the whole model over ``pairs`` (video_id, text): the matching loss (``pair_loss``; hard
    negatives when the model's config sets ``hard_negatives``), mixed with the model's
    ``contrastive_loss`` at weight ``contrastive`` (module docstring)."""
    check_contrastive(model, contrastive)
    rng = np.random.default_rng(seed)
    processor = processor_for(model, assembler)
    device = device_of(model)
    hard = bool(getattr(getattr(model, "config", None), "hard_negatives", False)) and callable(getattr(model, "hard_negative_pairs", None))

    def loss_at(step: int) -> torch.Tensor:
        if contrastive == 0 and not hard:  # the paper's fine-tuning, draw for draw as before
            b, labels = matching_batch(processor, pairs, rng, batch, negatives, use_regions)
            return model.pair_loss(b.to(device), labels)
        positives = distinct_video_batch(processor, pairs, rng, batch, use_regions).to(device)
        loss = model.contrastive_loss(positives) * contrastive if contrastive > 0 else 0.0
        if contrastive < 1:
            if hard and positives.batch_size >= 2:
                b, labels = model.hard_negative_pairs(positives)
            else:
                b, labels = matching_batch(processor, pairs, rng, batch, negatives, use_regions)
            loss = loss + (1 - contrastive) * model.pair_loss(b.to(device), labels)
        return loss

    return train_loop(model.parameters(), loss_at, steps, lr, desc=desc, modules=[model])


def finetune(model: Any, assembler: ClipAssembler, bench: Benchmark, settings: RetrievalSettings) -> TrainLog:
    """Fine-tune on the MSR-VTT training split (paper "ActBERT +FT"): the model's ``pair_loss``
    (and ``contrastive_loss`` with ``settings.contrastive > 0``)."""
    require(model, REQUIRES, TASK)
    check_contrastive(model, settings.contrastive)
    pairs = msrvtt_training_pairs(bench, assembler)
    torch.manual_seed(settings.seed)
    return finetune_matching(
        model, assembler, pairs, settings.steps, settings.lr, settings.train_batch, settings.negatives, settings.use_regions, settings.seed, "retrieval fine-tune",
        contrastive=settings.contrastive,
    )


def evaluate(model: Any, assembler: ClipAssembler, bench: Benchmark, settings: RetrievalSettings, variant: str = "", finetuned: bool = False, datasets: Sequence[str] = ("youcook2", "msrvtt")) -> list[dict]:
    """Records for each dataset in ``datasets`` whose annotation files exist."""
    check_mode(settings)
    records = []
    suffix = "fine-tuned" if finetuned else "zero-shot"
    for name in datasets:
        if name == "youcook2":
            if not bench.youcook2.exists():
                continue
            gallery = youcook2_gallery(bench, assembler, settings.max_queries)
        elif name == "msrvtt":
            if not bench.msrvtt_test.exists():
                continue
            gallery = msrvtt_gallery(bench, assembler, settings.max_queries)
        else:
            raise TaskError(f"retrieval: unknown dataset {name!r} (youcook2, msrvtt)")
        records.append(evaluate_gallery(model, assembler, gallery, settings, variant, suffix))
    if not records:
        raise TaskError(f"{bench.root}: neither the YouCook2 nor the MSR-VTT annotation files exist")
    return records
