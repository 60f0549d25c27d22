"""Text-video clip retrieval on the synthetic YouCook2 / MSR-VTT files (tasks/retrieval.py, ActBERT 4.2.5).

The rank / recall arithmetic itself (ties, R@K boundaries) is tested in test_metrics.py; here: the
galleries, that the scores reach the metrics in the right cells, batching, "w/o region cues",
fine-tuning, and bad input.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers_planted_store import tiny_model, write_planted_store
from actbert.data import readers
from actbert.data.store import FeatureStore
from actbert.tasks import retrieval as ret
from actbert.data.clips import ClipAssembler
from actbert.models.actbert.processing import ActBertProcessor
from actbert.models.processing import processor_for
from actbert.tasks.common import Benchmark, TaskError
from actbert.text.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def store(synth_tiny, tmp_path_factory):
    return write_planted_store(synth_tiny, tmp_path_factory.mktemp("retrieval") / "store")


@pytest.fixture(scope="module")
def assembler(store, tokenizer):
    return ClipAssembler(store, tokenizer)


class TableModel:
    """Stands in for the matching head: ``score = table[query, clip]``, recognising the query by its
    decoded text and the clip by its video and first action feature."""

    def __init__(self, tokenizer, assembler, gallery, table):
        self.tokenizer, self.table = tokenizer, np.asarray(table, np.float32)
        self.query = {q: i for i, q in enumerate(gallery.queries)}
        self.clip = {}
        for j, c in enumerate(gallery.clips):
            key = (c.video_id, assembler.span_clips(c.video_id, c.start, c.end).action_features[0].tobytes())
            assert key not in self.clip, "two gallery clips with the same first unit"
            self.clip[key] = j
        self.calls = 0

    def eval(self):
        return self

    processor_class = ActBertProcessor

    def pair_scores(self, batch):
        self.calls += 1
        out = []
        for row, video_id in enumerate(batch.video_ids):
            text = self.tokenizer.decode(batch.input_ids[row][batch.text_mask[row].bool()].tolist())
            clip = self.clip[(video_id, batch.action_features[row, 0].numpy().astype(np.float32).tobytes())]
            out.append(self.table[self.query[text], clip])
        return torch.tensor(out)


def table_with_ranks(ranks, num_clips, rng):
    """A score matrix whose ground truth (diagonal) has exactly the given pessimistic ranks."""
    table = np.zeros((len(ranks), num_clips), np.float32)
    for i, r in enumerate(ranks):
        others = [j for j in range(num_clips) if j != i]
        order = rng.permutation(others)
        table[i, order[: r - 1]] = 10.0 - rng.uniform(0, 1, r - 1)  # r-1 clips above the ground truth
        table[i, i] = 5.0
        table[i, order[r - 1 :]] = rng.uniform(0, 4, num_clips - r)
    return table


def test_galleries_follow_the_protocols(synth_tiny, assembler):
    bench = Benchmark(synth_tiny)
    yc = ret.youcook2_gallery(bench, assembler)
    segments = readers.youcook2_segments(readers.read_youcook2(bench.youcook2, subset="validation"))
    assert yc.queries == [s.sentence for s in segments]  # one query per validation segment
    assert [(c.video_id, c.start, c.end) for c in yc.clips] == [(s.video_id, s.start, s.end) for s in segments]
    assert yc.gt_index.tolist() == list(range(len(segments)))
    mv = ret.msrvtt_gallery(bench, assembler)
    pairs = readers.read_jsfusion_test(bench.msrvtt_test)
    assert mv.queries == [p.sentence for p in pairs] and [c.video_id for c in mv.clips] == [p.video_id for p in pairs]
    assert all(c.start is None and c.end is None for c in mv.clips)  # whole test videos
    assert len(ret.msrvtt_gallery(bench, assembler, max_queries=2).queries) == 2


@pytest.mark.parametrize("dataset", ["youcook2", "msrvtt"])
def test_known_scores_give_known_metrics(synth_tiny, tokenizer, assembler, dataset):
    bench = Benchmark(synth_tiny)
    gallery = ret.youcook2_gallery(bench, assembler) if dataset == "youcook2" else ret.msrvtt_gallery(bench, assembler)
    n = len(gallery.queries)
    ranks = [1, n, 2, 1, n - 1, 3][:n]
    model = TableModel(tokenizer, assembler, gallery, table_with_ranks(ranks, n, np.random.default_rng(0)))
    settings = ret.RetrievalSettings(batch_size=5)
    record = ret.evaluate(model, assembler, bench, settings, variant="table", datasets=(dataset,))[0]
    assert record["dataset"] == dataset
    assert record["ranks"] == ranks
    m = record["metrics"]
    assert m["R@1"] == pytest.approx(100 * np.mean(np.array(ranks) <= 1))
    assert m["R@5"] == pytest.approx(100 * np.mean(np.array(ranks) <= 5))
    assert m["R@10"] == pytest.approx(100 * np.mean(np.array(ranks) <= 10))
    assert m["MedR"] == pytest.approx(np.median(ranks))
    assert record["primary"] == "R@5" and record["variant"] == "table" and "zero-shot" in record["protocol"]
    for i, r in enumerate(ranks):  # the ground truth sits at its rank in the stored top 5 (scores are distinct)
        assert (record["top5"][i].index(i) + 1 if i in record["top5"][i] else 6) == min(r, 6)
    assert model.calls == -(-n * n // 5)  # every (query, clip) pair scored once, in batches of 5


def test_sub_galleries_rank_each_query_within_its_block(synth_tiny, tokenizer, assembler):
    """gallery_size = G: consecutive blocks of about G clips; a query's rank counts only the clips of
    its block (computed here from the score table by hand), and only in-block pairs are scored."""
    assert ret.gallery_blocks(10, 3) == [(0, 4), (4, 7), (7, 10)]  # round(10 / 3) = 3 blocks, sizes 4, 3, 3
    assert ret.gallery_blocks(10, 0) == [(0, 10)] and ret.gallery_blocks(5, 8) == [(0, 5)]
    assert ret.gallery_blocks(9, 2) == [(0, 3), (3, 5), (5, 7), (7, 9)]  # round(4.5) = 4 (numpy rounds half to even)
    bench = Benchmark(synth_tiny)
    gallery = ret.youcook2_gallery(bench, assembler)
    n = len(gallery.queries)
    assert n >= 4, "the tiny YouCook2 gallery is too small for two blocks"
    table = np.random.default_rng(3).normal(size=(n, n)).astype(np.float32)
    model = TableModel(tokenizer, assembler, gallery, table)
    record = ret.evaluate(model, assembler, bench, ret.RetrievalSettings(batch_size=1, gallery_size=n // 2), datasets=("youcook2",))[0]
    half = round(n / (n // 2))
    blocks = [(int(b[0]), int(b[-1]) + 1) for b in np.array_split(np.arange(n), half)]
    assert record["gallery_blocks"] == [list(b) for b in blocks] and len(blocks) >= 2
    expected = []
    for a, b in blocks:
        for i in range(a, b):
            expected.append(1 + sum(1 for j in range(a, b) if j != i and table[i, j] >= table[i, i]))
    assert record["ranks"] == expected
    assert record["metrics"]["R@1"] == pytest.approx(100 * np.mean(np.array(expected) <= 1))
    assert model.calls == sum((b - a) ** 2 for a, b in blocks)  # in-block pairs only
    assert all(a <= t < b for (a, b) in blocks for i in range(a, b) for t in record["top5"][i])
    assert any("sub-galleries" in note for note in record["notes"])


def test_equal_scores_rank_every_ground_truth_last(synth_tiny, tokenizer, assembler):
    bench = Benchmark(synth_tiny)
    gallery = ret.msrvtt_gallery(bench, assembler)
    n = len(gallery.queries)
    model = TableModel(tokenizer, assembler, gallery, np.zeros((n, n)))
    record = ret.evaluate(model, assembler, bench, ret.RetrievalSettings(), datasets=("msrvtt",))[0]
    assert record["ranks"] == [n] * n and record["metrics"]["R@1"] == 0.0 and record["metrics"]["MedR"] == n


def test_tiny_model_scores_batching_and_region_cues(synth_tiny, store, tokenizer, assembler):
    model = tiny_model(store, tokenizer)
    gallery = ret.youcook2_gallery(Benchmark(synth_tiny), assembler)
    queries, clips = gallery.queries[:3], gallery.clips
    batched = ret.score_matrix(model, assembler, queries, clips, batch_size=7)
    single = ret.score_matrix(model, assembler, queries, clips, batch_size=1)
    assert batched.shape == (3, len(clips)) and np.isfinite(batched).all()
    np.testing.assert_allclose(batched, single, atol=1e-5)  # padding in a batch does not leak into a score

    class NoisyRegions:
        def __init__(self, inner):
            self.inner, self.root, self.schema = inner, inner.root, inner.schema

        def video_ids(self):
            return self.inner.video_ids()

        def __contains__(self, video_id):
            return video_id in self.inner

        def __getitem__(self, video_id):
            f = self.inner[video_id]
            noise = np.random.default_rng(5).standard_normal(f.region_features.shape).astype(np.float32)
            return dataclasses.replace(f, region_features=noise)

    noisy = ClipAssembler(NoisyRegions(store), tokenizer)
    a = ret.score_matrix(model, assembler, queries, clips, use_regions=False)
    b = ret.score_matrix(model, noisy, queries, clips, use_regions=False)
    np.testing.assert_array_equal(a, b)
    assert np.abs(ret.score_matrix(model, noisy, queries, clips) - batched).max() > 1e-7
    records = ret.evaluate(model, assembler, Benchmark(synth_tiny), ret.RetrievalSettings(use_regions=False))
    assert {r["dataset"] for r in records} == {"youcook2", "msrvtt"}
    assert all("without region cues" in r["notes"] for r in records)


def matching_loss(model, assembler, pairs, seed=123):
    """Matching BCE on a fixed set of true and mismatched pairs."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        batch, labels = ret.matching_batch(processor_for(model, assembler), pairs, rng, len(pairs), 1, True)
        return float(F.binary_cross_entropy_with_logits(model.eval().match_score(batch), labels))


def test_finetune_lowers_matching_loss(synth_tiny, store, tokenizer, assembler):
    bench = Benchmark(synth_tiny)
    pairs = ret.msrvtt_training_pairs(bench, assembler)
    train_ids = set(readers.read_train_ids(bench.msrvtt_train_ids))
    assert pairs and all(v in train_ids for v, _ in pairs)
    model = tiny_model(store, tokenizer)
    before = matching_loss(model, assembler, pairs)
    log = ret.finetune(model, assembler, bench, ret.RetrievalSettings(steps=60, lr=3e-3, train_batch=4))
    assert len(log.losses) == 60
    after = matching_loss(model, assembler, pairs)
    assert after < before - 0.05, (before, after)  # from chance (ln 2) towards separating true pairs
    record = ret.evaluate(model, assembler, bench, ret.RetrievalSettings(), finetuned=True, datasets=("msrvtt",))[0]
    assert "fine-tuned" in record["protocol"]


def test_missing_features_and_files(synth_tiny, store, tokenizer, tmp_path):
    bench = Benchmark(synth_tiny)
    pairs = readers.read_jsfusion_test(bench.msrvtt_test)
    partial = tmp_path / "store"
    shutil.copytree(store.root, partial)
    (partial / "videos" / f"{pairs[0].video_id}.safetensors").unlink()
    gallery = ret.msrvtt_gallery(bench, ClipAssembler(FeatureStore(partial), tokenizer))
    assert gallery.skipped == [{"video_id": pairs[0].video_id, "error": "not in the feature store"}]
    assert gallery.queries == [p.sentence for p in pairs[1:]]
    with pytest.raises(TaskError, match="neither"):
        ret.evaluate(None, ClipAssembler(store, tokenizer), Benchmark(tmp_path), ret.RetrievalSettings())
    with pytest.raises(TaskError, match="unknown dataset"):
        ret.evaluate(None, ClipAssembler(store, tokenizer), bench, ret.RetrievalSettings(), datasets=("howto",))
