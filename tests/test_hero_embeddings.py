"""HERO's ``embeddings`` capability (query vector, one vector per video) and the retrieval modes on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from actbert.models.hero import HeroForPretraining
from actbert.models.interface import capabilities_of
from actbert.models.processing import Item, VideoRef, processor_for
from actbert.tasks import index as gindex
from actbert.tasks import registry
from actbert.tasks import retrieval as ret

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(synth_tiny, tmp_path_factory):
    from helpers_planted_store import write_planted_store
    from test_hero import tiny_config

    from actbert.data.clips import ClipAssembler
    from actbert.tasks.common import Benchmark
    from actbert.text.tokenizer import load_tokenizer

    store = write_planted_store(synth_tiny, tmp_path_factory.mktemp("hero_embeddings") / "store")
    tokenizer = load_tokenizer()
    config = HeroForPretraining.fill_config_from_data(
        tiny_config(vocab_size=30524, mask_token_id=103, pad_token_id=0, cls_token_id=101, sep_token_id=102), store.schema, tokenizer)
    torch.manual_seed(0)
    model = HeroForPretraining(config).eval()
    assembler = ClipAssembler(store, tokenizer)
    gallery = ret.youcook2_gallery(Benchmark(synth_tiny), assembler, max_queries=8)
    return model, assembler, gallery


def settings(**kw):
    return registry.make_settings("retrieval", {"batch_size": 4, **kw})


def test_shapes_unit_length_and_each_side_alone(setup):
    model, assembler, gallery = setup
    assert "embeddings" in capabilities_of(model)
    proc = processor_for(model, assembler)
    items = [Item(VideoRef(c.video_id, c.start, c.end), q) for c, q in zip(gallery.clips[:3], gallery.queries[:3])]
    with torch.no_grad():
        batch = proc.batch(items)
        text, video = model.encode_text(batch), model.encode_video(batch)
        assert text.shape == video.shape == (3, model.config.hidden_size)
        torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
        torch.testing.assert_close(video.norm(dim=-1), torch.ones(3))
        # the video vector does not read the text, the text vector does not read the video
        no_text = model.encode_video(proc.batch([Item(it.video) for it in items]))
        other_video = model.encode_text(proc.batch([Item(items[0].video, it.text) for it in items]))
    torch.testing.assert_close(no_text, video, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(other_video, text, rtol=1e-5, atol=1e-6)


def test_video_vector_is_the_mean_unit_frame_state(setup):
    """By hand from HERO's per-second Temporal outputs (``unit_states``, one clip per forward)."""
    model, assembler, gallery = setup
    proc = processor_for(model, assembler)
    with torch.no_grad():
        for c in gallery.clips[:3]:
            batch = proc.batch([Item(VideoRef(c.video_id, c.start, c.end))])
            states, valid = model.unit_states(batch)
            frames = states[0][valid[0]].numpy().astype(np.float64)
            frames /= np.linalg.norm(frames, axis=1, keepdims=True)
            mean = frames.mean(axis=0)
            np.testing.assert_allclose(model.encode_video(batch)[0].numpy(), mean / np.linalg.norm(mean), rtol=1e-4, atol=1e-5)


def test_one_second_clips_the_bi_encoder_is_hero_s_own_score(setup):
    """With one frame per clip the mean is the max: cosine of the two vectors = ``pair_scores`` (VR)."""
    model, assembler, gallery = setup
    video = gallery.clips[0].video_id
    clips = [ret.Clip(video, float(s), float(s) + 1.0) for s in range(4)]
    one = ret.Gallery("hand", "one-second clips", list(gallery.queries[:4]), clips, np.arange(4), [])
    sims = ret.gallery_scores(model, assembler, one, settings(mode="bi-encoder"))
    exhaustive = ret.gallery_scores(model, assembler, one, settings(factored=False))
    np.testing.assert_allclose(sims, exhaustive, rtol=1e-4, atol=1e-5)


def test_factored_scores_are_the_pair_scores(setup):
    """HERO's VR score factors (query vector; unit frames, max cosine): one pass per query and per clip
    gives every pair's pair_scores, across batches whose clips have different frame counts."""
    model, assembler, gallery = setup
    assert "factored_scores" in capabilities_of(model)
    frames = [len(model.score_video(processor_for(model, assembler).batch([Item(VideoRef(c.video_id, c.start, c.end))]))[1][0])
              for c in gallery.clips]
    assert len(set(frames)) > 1  # batches pad to different widths
    pairs = ret.gallery_scores(model, assembler, gallery, settings(factored=False))
    factored = ret.gallery_scores(model, assembler, gallery, settings())
    np.testing.assert_allclose(factored, pairs, rtol=1e-5, atol=1e-5)
    # and it is not the bi-encoder's mean-frame similarity
    assert np.abs(ret.gallery_scores(model, assembler, gallery, settings(mode="bi-encoder")) - pairs).max() > 1e-3


def test_factored_step_localization_is_every_pair(setup):
    """Step localization with HERO: the [C, K] matrix from C + K passes is every pair's pair_scores."""
    from actbert.tasks import step_localization as sl

    model, assembler, gallery = setup
    steps = ["crack the egg", "stir the pot", "slice the bread"]
    for units in ("clips", "seconds"):
        pairwise = registry.make_settings("step_localization", {"batch_size": 4, "units": units, "factored": False})
        candidates, _ = sl.candidates(assembler, gallery.clips[0].video_id, pairwise)
        pairs = sl.step_scores(model, assembler, candidates, steps, pairwise)
        factored = sl.step_scores(model, assembler, candidates, steps, registry.make_settings(
            "step_localization", {"batch_size": 4, "units": units}))
        assert pairs.shape == factored.shape == (len(candidates), len(steps)) and len(candidates) > 1
        np.testing.assert_allclose(factored, pairs, rtol=1e-5, atol=1e-5)
        assert np.abs(pairs - pairs.mean()).max() > 1e-3


def test_two_stage_with_k_the_gallery_size_is_exhaustive(setup):
    model, assembler, gallery = setup
    exhaustive = ret.gallery_scores(model, assembler, gallery, settings(factored=False))
    full = ret.gallery_scores(model, assembler, gallery, settings(mode="two-stage", k=len(gallery.clips)))
    np.testing.assert_array_equal(full, exhaustive)
    short = ret.gallery_scores(model, assembler, gallery, settings(mode="two-stage", k=2))
    sims = ret.gallery_scores(model, assembler, gallery, settings(mode="bi-encoder"))
    for t in range(len(gallery.queries)):
        top = set(np.argsort(-sims[t], kind="stable")[:2])
        assert set(np.argsort(-short[t], kind="stable")[:2]) == top


def test_index_round_trip(setup, tmp_path):
    model, assembler, gallery = setup
    built = gindex.build_index(model, assembler, gallery.clips)
    q = gindex.embed_texts(model, assembler, gallery.queries, gallery.clips[0])
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, rtol=1e-5)
    sims, ids = built.search(q, 3)
    folder = built.save(tmp_path / "idx")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["architecture"] == "hero" and manifest["normalized"] is True and manifest["dim"] == model.config.hidden_size
    loaded = gindex.load_index(folder, model, assembler)
    sims2, ids2 = loaded.search(q, 3)
    np.testing.assert_array_equal(ids2, ids)
    np.testing.assert_allclose(sims2, sims, rtol=1e-6)
    # the search's best similarity is the best cosine of the two vectors over the gallery
    v = gindex.embed_clips(model, assembler, gallery.clips)
    np.testing.assert_allclose(sims[:, 0], (q @ v.T).max(axis=1), rtol=1e-5, atol=1e-6)
