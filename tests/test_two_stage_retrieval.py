"""Retrieval modes (exhaustive | bi-encoder | two-stage) and the faiss gallery index, on VLM-tiny."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from actbert.errors import ActBertError
from actbert.models import registry as model_registry
from actbert.models.interface import factored_similarity as factorized_similarity_of
from actbert.models.interface import factorizes
from actbert.models.processing import Item, VideoRef, processor_for
from actbert.models.vlm import VLMForPretraining
from actbert.tasks import index as gindex
from actbert.tasks import registry
from actbert.tasks import retrieval as ret


@pytest.fixture(scope="module")
def setup(synth_tiny, tmp_path_factory):
    from helpers_planted_store import write_planted_store

    from actbert.data.clips import ClipAssembler
    from actbert.tasks.common import Benchmark
    from actbert.text.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("two_stage")
    store = write_planted_store(synth_tiny, root / "store")
    tokenizer = load_tokenizer()
    config = VLMForPretraining.fill_config_from_data(model_registry.load_model_config("vlm_tiny"), store.schema, tokenizer)
    torch.manual_seed(0)
    model = model_registry.create_model(config, verbose=False).eval()
    assembler = ClipAssembler(store, tokenizer)
    bench = Benchmark(synth_tiny)
    gallery = ret.youcook2_gallery(bench, assembler, max_queries=8)
    return model, assembler, bench, gallery, root, tokenizer


def settings(**kw):
    return registry.make_settings("retrieval", {"batch_size": 8, **kw})


def test_two_stage_with_k_the_gallery_size_is_exhaustive(setup):
    model, assembler, _, gallery, _, _ = setup
    # every pair through pair_scores (VLM's would otherwise come from its factorized embeddings)
    exhaustive = ret.gallery_scores(model, assembler, gallery, settings(factored=False))
    full = ret.gallery_scores(model, assembler, gallery, settings(mode="two-stage", k=len(gallery.clips)))
    np.testing.assert_array_equal(full, exhaustive)
    # a short list keeps its k reranked clips on top, in pair-score order
    k = 3
    short = ret.gallery_scores(model, assembler, gallery, settings(mode="two-stage", k=k))
    sims = ret.gallery_scores(model, assembler, gallery, settings(mode="bi-encoder"))
    for t in range(len(gallery.queries)):
        top = set(np.argsort(-sims[t], kind="stable")[:k])
        ranked = list(np.argsort(-short[t], kind="stable"))
        assert set(ranked[:k]) == top
        np.testing.assert_allclose(short[t, ranked[:k]], exhaustive[t, ranked[:k]], rtol=1e-6, atol=1e-6)
        rest = ranked[k:]
        assert list(rest) == sorted(rest, key=lambda v: -sims[t, v])  # then embedding order


def test_bi_encoder_is_the_hand_computed_similarity(setup):
    model, assembler, _, gallery, _, _ = setup
    proc = processor_for(model, assembler)
    with torch.no_grad():
        # one row per forward: no batching or padding shared with the library's path
        texts = torch.cat([model.encode_text(proc.batch([Item(VideoRef(gallery.clips[0].video_id), q)])) for q in gallery.queries])
        videos = torch.cat([model.encode_video(proc.batch([Item(VideoRef(c.video_id, c.start, c.end))])) for c in gallery.clips])
    hand = (texts @ videos.T).numpy()
    sims = ret.gallery_scores(model, assembler, gallery, settings(mode="bi-encoder"))
    np.testing.assert_allclose(sims, hand, rtol=1e-4, atol=1e-4)
    assert (np.argsort(-sims, axis=1)[:, :3] == np.argsort(-hand, axis=1)[:, :3]).all()
    (record,) = [r for r in ret.evaluate(model, assembler, setup[2], settings(mode="bi-encoder", max_queries=8)) if r["dataset"] == "youcook2"]
    assert record["settings"]["mode"] == "bi-encoder" and any("mode=bi-encoder" in n for n in record["notes"])
    gt_rank = [int((hand[t] > hand[t, t]).sum() + (hand[t] == hand[t, t]).sum()) for t in range(len(hand))]
    assert record["ranks"] == gt_rank


def test_factored_scores_are_the_pair_scores(setup):
    """VLM's pair scores factor: the exhaustive matrix from one pass per query and per clip equals
    every pair run through pair_scores."""
    model, assembler, _, gallery, _, _ = setup
    assert factorizes(model)
    pairs = ret.gallery_scores(model, assembler, gallery, settings(factored=False))
    factored = ret.gallery_scores(model, assembler, gallery, settings())
    np.testing.assert_allclose(factored, pairs, rtol=1e-5, atol=1e-5)
    assert np.abs(pairs - pairs.mean()).max() > 1e-3  # the scores are not all alike
    (record,) = [r for r in ret.evaluate(model, assembler, setup[2], settings(max_queries=8)) if r["dataset"] == "youcook2"]
    assert any("factored scores" in n for n in record["notes"])
    hand_ranks = [int((pairs[t] > pairs[t, t]).sum() + (pairs[t] == pairs[t, t]).sum()) for t in range(len(pairs))]
    assert record["ranks"] == hand_ranks


def test_factored_step_localization_is_every_pair(setup):
    """Step localization's [C, K] matrix from C + K passes equals every (candidate, step) pair
    through pair_scores, for both kinds of candidate."""
    from actbert.tasks import step_localization as sl

    model, assembler, _, gallery, _, _ = setup
    assert factorizes(model)
    steps = ["crack the egg", "stir the pot", "slice the bread"]
    for units in ("clips", "seconds"):
        pairwise = registry.make_settings("step_localization", {"batch_size": 8, "units": units, "factored": False})
        candidates, _ = sl.candidates(assembler, gallery.clips[0].video_id, pairwise)
        pairs = sl.step_scores(model, assembler, candidates, steps, pairwise)
        factored = sl.step_scores(model, assembler, candidates, steps, dataclasses.replace(pairwise, factored=True))
        assert pairs.shape == factored.shape == (len(candidates), len(steps)) and len(candidates) > 1
        np.testing.assert_allclose(factored, pairs, rtol=1e-5, atol=1e-5)
        assert np.abs(pairs - pairs.mean()).max() > 1e-3


def test_factored_similarity_by_hand():
    texts = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    videos = torch.tensor([[[3.0, 1.0], [-1.0, 5.0]], [[2.0, 2.0], [9.0, 9.0]]])  # [V=2, N=2, D=2]
    valid = torch.tensor([[True, True], [True, False]])  # video 1's second vector is padding
    # text 0: max(3, -1) = 3, max(2) = 2; text 1: max(2, 10) = 10, max(4) = 4
    np.testing.assert_array_equal(factorized_similarity_of(texts, videos, valid), [[3.0, 2.0], [10.0, 4.0]])
    np.testing.assert_array_equal(factorized_similarity_of(texts, videos, valid, chunk=1), [[3.0, 2.0], [10.0, 4.0]])


def test_index_round_trip_and_refusals(setup, tmp_path):
    model, assembler, _, gallery, root, tokenizer = setup
    built = gindex.build_index(model, assembler, gallery.clips)
    q = gindex.embed_texts(model, assembler, gallery.queries, gallery.clips[0])
    sims, ids = built.search(q, 4)
    folder = built.save(tmp_path / "idx")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["architecture"] == "vlm" and manifest["dim"] == q.shape[1] and len(manifest["clips"]) == len(gallery.clips)
    loaded = gindex.load_index(folder, model, assembler)
    sims2, ids2 = loaded.search(q, 4)
    np.testing.assert_array_equal(ids2, ids)
    np.testing.assert_allclose(sims2, sims)
    assert [c.video_id for c in loaded.clips] == [c.video_id for c in gallery.clips]
    # approximate kind on this small gallery finds the exact neighbours
    hnsw = gindex.build_index(model, assembler, gallery.clips, kind="hnsw")
    hnsw.save(tmp_path / "hnsw")
    np.testing.assert_array_equal(gindex.load_index(tmp_path / "hnsw", model, assembler).search(q, 4)[1], ids)

    manifest_file = str(folder / "manifest.json")
    torch.manual_seed(1)
    other = model_registry.create_model(model.config, verbose=False)  # same config, other weights
    with pytest.raises(gindex.GalleryIndexError, match=rf"{manifest_file}: field 'weights_digest'"):
        gindex.load_index(folder, other, assembler)
    config = dataclasses.replace(model.config, num_hidden_layers=model.config.num_hidden_layers + 1)  # another model
    with pytest.raises(gindex.GalleryIndexError, match=rf"{manifest_file}: field 'config_digest'"):
        gindex.load_index(folder, model_registry.create_model(config, verbose=False), assembler)

    from helpers_planted_store import write_planted_store

    from actbert.data.clips import ClipAssembler

    narrow = ClipAssembler(write_planted_store(setup[2].root, root / "narrow", action_dim=32, region_dim=32), tokenizer)
    with pytest.raises(gindex.GalleryIndexError, match=rf"{manifest_file}: field 'store_digest'.*other feature dims"):
        gindex.load_index(folder, model, narrow)
    with pytest.raises(gindex.GalleryIndexError, match=rf"{manifest_file}: field 'dim' is {q.shape[1]}"):
        loaded.search(q[:, :-1], 2)


def test_empty_gallery_and_missing_capability(setup, tmp_path):
    model, assembler, _, gallery, _, _ = setup
    with pytest.raises(gindex.GalleryIndexError, match="field 'clips' is empty"):
        gindex.build_index(model, assembler, [])
    folder = gindex.build_index(model, assembler, gallery.clips[:2]).save(tmp_path / "idx")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["clips"] = []
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(gindex.GalleryIndexError, match=rf"{folder / 'manifest.json'}: field 'clips' is empty"):
        gindex.load_index(folder)
    with pytest.raises(gindex.GalleryIndexError, match=rf"{tmp_path / 'none' / 'manifest.json'}: no such file"):
        gindex.load_index(tmp_path / "none")
    from actbert.errors import CapabilityError

    class NoEmbeddings:  # pair scores only, like ActBERT today
        config = model.config

        def pair_scores(self, batch):
            return model.pair_scores(batch)

        def parameters(self):
            return model.parameters()

        def eval(self):
            return self

    with pytest.raises(CapabilityError, match="'embeddings'"):
        ret.gallery_scores(NoEmbeddings(), assembler, gallery, settings(mode="two-stage"))
    with pytest.raises(ActBertError, match="'mode'"):
        ret.gallery_scores(model, assembler, gallery, settings(mode="fast"))
    with pytest.raises(ActBertError, match="k"):
        settings(k=0)


def test_search_command_prints_the_reranked_top_clips(setup, tmp_path, capsys):
    from helpers_planted_store import write_planted_store

    from actbert.cli import main
    from actbert.data.clips import ClipAssembler
    from actbert.tasks.scoring import score_items

    model, _, bench, _, _, tokenizer = setup
    store = write_planted_store(bench.root, tmp_path / "store")
    assembler = ClipAssembler(store, tokenizer)
    model.save_pretrained(tmp_path / "model")
    query = "cut the onion"
    argv = ["search", "--model", str(tmp_path / "model"), "--store", str(store.root), "--query", query, "--k", "3", "--shortlist", "5"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()[1:]
    assert len(lines) == 3
    # by hand: the store's clips, the 5 nearest by the embeddings, reranked by pair_scores
    clips = [(v, float(s), float(e)) for v in store.video_ids() for s, e in assembler.video(v).clip_times]
    proc = processor_for(model, assembler)
    with torch.no_grad():
        text = model.encode_text(proc.batch([Item(VideoRef(clips[0][0], clips[0][1], clips[0][2]), query)]))[0]
        sims = [float(model.encode_video(proc.batch([Item(VideoRef(*c))]))[0] @ text) for c in clips]
    short = [clips[i] for i in np.argsort(sims)[::-1][:5]]
    scores = score_items(model, assembler, [Item(VideoRef(*c), query) for c in short], progress=False)
    expected = [short[i] for i in np.argsort(-scores, kind="stable")[:3]]
    printed = [(ln.split()[1], float(ln.split()[2]), float(ln.split()[3])) for ln in lines]
    assert [(v, round(s, 2), round(e, 2)) for v, s, e in expected] == printed
    manifest = store.root / "index" / "vlm" / "manifest.json"
    assert manifest.is_file()
    before = manifest.stat().st_mtime_ns
    assert main(argv) == 0 and manifest.stat().st_mtime_ns == before  # reused, not rebuilt
    capsys.readouterr()
    other = write_planted_store(bench.root, tmp_path / "other", action_dim=32, region_dim=32)
    assert main([*argv[:4], str(other.root), *argv[5:], "--index", str(manifest.parent)]) == 1
    assert f"{manifest}: field" in capsys.readouterr().err
