"""ActBERT's separate text / video embeddings, the contrastive loss and hard negatives (issue 14)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from actbert.config import ConfigError
from actbert.errors import CapabilityError
from actbert.models import registry
from actbert.models.actbert import ActBertForPretraining, random_batch
from actbert.models.interface import capabilities_of, require
from actbert.models.losses import hard_negative_indices, info_nce


def tiny(**changes):
    overrides = [f"{k}={v}" for k, v in changes.items()]
    return registry.load_model_config("tiny", overrides)


def model_with_heads(seed: int = 0, **changes) -> ActBertForPretraining:
    torch.manual_seed(seed)
    return registry.create_model(tiny(embed_dim=24, **changes), verbose=False).eval()


# ------------------------------------------------------------------ the embeddings


def test_shapes_and_capability():
    model = model_with_heads()
    batch = random_batch(model.config, batch_size=3, clips=[3, 1, 2], with_targets=False)
    with torch.no_grad():
        assert model.encode_text(batch).shape == (3, 24)
        assert model.encode_video(batch).shape == (3, 24)
        assert model.encode_video(batch, use_regions=False).shape == (3, 24)
    assert "embeddings" in capabilities_of(model)
    require(model, ["embeddings"], "test")  # no error
    assert model.embeddings_normalized
    assert model.embedding_scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.embedding_heads.logit_scale.fill_(10.0)
    assert model.embedding_scale().item() == pytest.approx(100.0, rel=1e-5)  # clamped as CLIP


def test_no_heads_no_capability_and_the_same_weights_as_before():
    torch.manual_seed(0)
    plain = registry.create_model(tiny(), verbose=False)
    assert plain.embedding_heads is None
    assert "embeddings" not in capabilities_of(plain)
    with pytest.raises(CapabilityError, match="'embeddings'.*switched off"):
        require(plain, ["embeddings"], "retrieval (mode=bi-encoder)")
    batch = random_batch(plain.config, batch_size=2, with_targets=False)
    with pytest.raises(CapabilityError, match="embed_dim"):
        plain.encode_text(batch)
    assert "embedding" not in plain.parameter_groups()
    # the heads are created last: every other tensor starts exactly as without them
    heads = model_with_heads(0)
    theirs = heads.state_dict()
    for name, value in plain.state_dict().items():
        assert torch.equal(value, theirs[name]), name
    extra = sorted(set(theirs) - set(plain.state_dict()))
    assert extra and all(n.startswith("embedding_heads.") for n in extra)
    assert "embedding" in heads.parameter_groups()


def test_the_has_capability_hook_is_general():
    class Model:
        def __init__(self, on):
            self.on = on

        def pair_scores(self, batch): ...
        def encode_text(self, batch): ...
        def encode_video(self, batch): ...

        def has_capability(self, name):
            return self.on or name != "embeddings"

    assert capabilities_of(Model(True)) == {"pair_scores", "embeddings"}
    assert capabilities_of(Model(False)) == {"pair_scores"}
    assert capabilities_of(Model) == {"pair_scores", "embeddings"}  # a class is not asked
    with pytest.raises(CapabilityError, match="lacks the capability 'embeddings'"):
        require(Model(False), ["pair_scores", "embeddings"], "task")
    require(Model(False), ["pair_scores"], "task")


def test_config_refuses_the_objectives_without_heads():
    with pytest.raises(ConfigError, match="loss_weights.*embed_dim"):
        tiny(**{"loss_weights.contrastive": 1.0})
    with pytest.raises(ConfigError, match="hard_negatives"):
        tiny(hard_negatives="true")
    with pytest.raises(ConfigError, match="embed_dim"):
        tiny(embed_dim=-1)
    # absent = off, and the dict of an old config reads unchanged
    assert "contrastive" not in tiny().loss_weights


def test_the_streams_really_are_separate():
    model = model_with_heads(1)
    a = random_batch(model.config, batch_size=2, clips=[3, 2], seed=0, with_targets=False)
    b = random_batch(model.config, batch_size=2, clips=[1, 3], seed=5, with_targets=False)
    # a's text with b's video (other features, other lengths) and b's text with a's video
    a_text_b_video = type(a)(**{**a.__dict__, **{k: v for k, v in b.__dict__.items() if not k.startswith(("input_ids", "text_"))}})
    b_text_a_video = type(a)(**{**b.__dict__, **{k: v for k, v in a.__dict__.items() if not k.startswith(("input_ids", "text_"))}})
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(a_text_b_video), model.encode_text(a))
        torch.testing.assert_close(model.encode_video(a_text_b_video), model.encode_video(b))
        torch.testing.assert_close(model.encode_video(b_text_a_video), model.encode_video(a))
        torch.testing.assert_close(model.encode_text(b_text_a_video), model.encode_text(b))
        # while the cross-encoder's own text output does depend on the video (the test can fail)
        joint = model.actbert(a).text
        other = model.actbert(a_text_b_video).text
    assert not torch.allclose(joint, other, atol=1e-4)


def test_save_load_reproduces_the_embeddings(tmp_path):
    model = model_with_heads(2)
    batch = random_batch(model.config, batch_size=3, clips=[2, 3, 1], with_targets=False)
    model.save_pretrained(tmp_path / "m")
    loaded = ActBertForPretraining.from_pretrained(tmp_path / "m")
    assert loaded.config.embed_dim == 24
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(batch), model.encode_text(batch), rtol=0, atol=0)
        torch.testing.assert_close(loaded.encode_video(batch), model.encode_video(batch), rtol=0, atol=0)
        assert float(loaded.embedding_scale()) == float(model.embedding_scale())


# ------------------------------------------------------------------ InfoNCE


def test_info_nce_equals_a_hand_computation():
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 2.0]])
    video = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    scale = 5.0

    def cos(u, v):
        return sum(x * y for x, y in zip(u, v)) / math.sqrt(sum(x * x for x in u) * sum(y * y for y in v))

    t, v = text.tolist(), video.tolist()
    sim = [[scale * cos(t[i], v[j]) for j in range(3)] for i in range(3)]

    def ce(row, target, allowed):
        return -row[target] + math.log(sum(math.exp(row[j]) for j in allowed))

    t2v = sum(ce(sim[i], i, range(3)) for i in range(3)) / 3
    v2t = sum(ce([sim[j][i] for j in range(3)], i, range(3)) for i in range(3)) / 3
    assert float(info_nce(text, video, scale)) == pytest.approx((t2v + v2t) / 2, rel=1e-6)
    # rows 0 and 2 excluded from each other's softmax
    exclude = torch.zeros(3, 3, dtype=torch.bool)
    exclude[0, 2] = exclude[2, 0] = True
    allowed = {0: [0, 1], 1: [0, 1, 2], 2: [1, 2]}
    t2v = sum(ce(sim[i], i, allowed[i]) for i in range(3)) / 3
    v2t = sum(ce([sim[j][i] for j in range(3)], i, allowed[i]) for i in range(3)) / 3
    assert float(info_nce(text, video, scale, exclude)) == pytest.approx((t2v + v2t) / 2, rel=1e-6)
    # one pair: nothing to contrast, exactly 0 and still differentiable
    one = info_nce(text[:1].requires_grad_(), video[:1], scale)
    assert one.item() == 0.0
    one.backward()


def test_hard_negatives_never_pick_the_row_itself_and_follow_the_similarity():
    sim = torch.tensor([[9.0, 1.0, 2.0, 0.0], [0.5, 9.0, 0.0, 1.5], [3.0, 0.0, 9.0, 1.0], [1.0, 1.0, 1.0, 9.0]])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([hard_negative_indices(sim, generator=g) for _ in range(4000)])  # [4000, 4]
    assert not (draws == torch.arange(4)).any()
    for i in range(4):
        others = [j for j in range(4) if j != i]
        z = sum(math.exp(float(sim[i, j])) for j in others)
        expected = {j: math.exp(float(sim[i, j])) / z for j in others}
        counts = torch.bincount(draws[:, i], minlength=4).float() / len(draws)
        for j in others:
            assert float(counts[j]) == pytest.approx(expected[j], abs=0.03), (i, j)
    # excluded columns are never drawn; a row with nothing left falls back to anything but itself
    exclude = torch.zeros(4, 4, dtype=torch.bool)
    exclude[0, 2] = True
    exclude[1, [0, 2, 3]] = True
    draws = torch.stack([hard_negative_indices(sim, exclude, g) for _ in range(500)])
    assert not (draws[:, 0] == 2).any() and not (draws[:, 0] == 0).any()
    assert set(draws[:, 1].tolist()) <= {0, 2, 3} and len(set(draws[:, 1].tolist())) > 1
    with pytest.raises(ValueError, match="at least 2"):
        hard_negative_indices(torch.zeros(1, 1))


def test_pair_rows_takes_text_and_video_from_the_named_rows():
    config = tiny()
    batch = random_batch(config, batch_size=3, clips=[3, 1, 2], seed=3)
    batch.video_ids = ["x", "y", "z"]
    text_rows, video_rows = torch.tensor([0, 2, 1, 1]), torch.tensor([1, 0, 1, 2])
    paired = batch.pair_rows(text_rows, video_rows, torch.tensor([0.0, 0.0, 1.0, 0.0]))
    for n, (t, v) in enumerate(zip(text_rows.tolist(), video_rows.tolist())):
        for name in ("input_ids", "text_mask", "text_segment_ids", "text_position_ids", "mlm_labels"):
            assert torch.equal(getattr(paired, name)[n], getattr(batch, name)[t]), name
        for name in ("action_features", "action_token_ids", "action_mask", "region_features", "region_locations",
                     "region_mask", "region_segment_ids", "action_targets", "region_target_mask"):
            assert torch.equal(getattr(paired, name)[n], getattr(batch, name)[v]), name
    assert paired.video_ids == ["y", "x", "y", "z"]
    assert paired.match_labels.tolist() == [0.0, 0.0, 1.0, 0.0]
    restored = batch.restored_text_ids()
    has = batch.mlm_labels != -100
    assert has.any() and torch.equal(restored[has], batch.mlm_labels[has]) and torch.equal(restored[~has], batch.input_ids[~has])


# ------------------------------------------------------------------ the pretraining losses


def test_pretraining_contrastive_loss_and_hard_negatives():
    batch = random_batch(tiny(), batch_size=6, clips=[3, 2, 3, 1, 2, 3], seed=4)
    batch.match_labels = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    batch.video_ids = ["a", "a", "b", "c", "d", "e"]
    # off: four losses, exactly the plain model's
    torch.manual_seed(0)
    plain = registry.create_model(tiny(), verbose=False).eval()
    base = model_with_heads(0).eval()
    with torch.no_grad():
        out0, out1 = plain(batch), base(batch)
    assert list(out1.losses) == ["mlm", "action", "region", "match"]
    assert float(out1.loss) == pytest.approx(float(out0.loss), rel=1e-6)

    model = model_with_heads(0, **{"loss_weights.contrastive": 0.5, "hard_negatives": "true"}).eval()
    torch.manual_seed(7)
    with torch.no_grad():
        out = model(batch)
    assert list(out.losses) == ["mlm", "action", "region", "match", "contrastive"]
    weights = model.config.loss_weights
    assert float(out.loss) == pytest.approx(sum(weights[k] * float(v) for k, v in out.losses.items()), rel=1e-6)
    # by hand: InfoNCE over the matched rows, rows 0 and 1 (one video) not each other's negatives
    matched = torch.tensor([0, 1, 3, 4])
    positives = batch.select(matched)
    with torch.no_grad():
        text = model.encode_text(positives, restore_masked=True)
        video = model.encode_video(positives)
        exclude = torch.zeros(4, 4, dtype=torch.bool)
        exclude[0, 1] = exclude[1, 0] = True
        assert float(out.losses["contrastive"]) == pytest.approx(float(info_nce(text, video, model.embedding_scale(), exclude)), rel=1e-5)
        # the matching loss: the 4 matched pairs + a hard negative video and text for each, same draws
        torch.manual_seed(7)
        pairs, labels = model.hard_negative_pairs(positives)
        logits = model.match_score(pairs)
    assert labels.tolist() == [1.0] * 4 + [0.0] * 8
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    assert float(out.losses["match"]) == pytest.approx(float(expected), rel=1e-5)
    # the rows are re-paired matched rows: no negative pairs a row with itself or its own video
    ids = positives.video_ids
    for n in range(4, 12):
        text_row = int(torch.nonzero((positives.input_ids == pairs.input_ids[n]).all(1))[0])
        assert pairs.video_ids[n] != ids[text_row]


def test_pretraining_backward_reaches_the_heads():
    model = model_with_heads(0, **{"loss_weights.contrastive": 1.0}).train()
    batch = random_batch(model.config, batch_size=4, seed=1)
    batch.match_labels = torch.ones(4)
    model(batch).loss.backward()
    heads = model.embedding_heads
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in heads.parameters())


# ------------------------------------------------------------------ retrieval modes


@pytest.fixture(scope="module")
def planted(synth_tiny, tmp_path_factory):
    from helpers_planted_store import write_planted_store

    from actbert.data.clips import ClipAssembler
    from actbert.tasks import retrieval as ret
    from actbert.tasks.common import Benchmark
    from actbert.text.tokenizer import load_tokenizer

    store = write_planted_store(synth_tiny, tmp_path_factory.mktemp("embed") / "store")
    tokenizer = load_tokenizer()
    config = ActBertForPretraining.fill_config_from_data(tiny(embed_dim=24), store.schema, tokenizer)
    torch.manual_seed(0)
    model = registry.create_model(config, verbose=False).eval()
    assembler = ClipAssembler(store, tokenizer)
    bench = Benchmark(synth_tiny)
    return model, assembler, bench, ret.youcook2_gallery(bench, assembler, max_queries=8)


def test_two_stage_with_k_the_gallery_size_is_exhaustive_for_actbert(planted):
    from actbert.tasks import registry as tasks
    from actbert.tasks import retrieval as ret

    model, assembler, _, gallery = planted

    def settings(**kw):
        return tasks.make_settings("retrieval", {"batch_size": 8, **kw})

    exhaustive = ret.gallery_scores(model, assembler, gallery, settings())
    full = ret.gallery_scores(model, assembler, gallery, settings(mode="two-stage", k=len(gallery.clips)))
    np.testing.assert_array_equal(full, exhaustive)
    # the bi-encoder ranks by the cosine of the separate embeddings, computed here row by row
    from actbert.models.processing import Item, VideoRef, processor_for

    proc = processor_for(model, assembler)
    with torch.no_grad():
        texts = torch.cat([model.encode_text(proc.batch([Item(VideoRef(gallery.clips[0].video_id), q)])) for q in gallery.queries])
        videos = torch.cat([model.encode_video(proc.batch([Item(VideoRef(c.video_id, c.start, c.end))])) for c in gallery.clips])
    hand = (torch.nn.functional.normalize(texts, dim=-1) @ torch.nn.functional.normalize(videos, dim=-1).T).numpy()
    sims = ret.gallery_scores(model, assembler, gallery, settings(mode="bi-encoder"))
    np.testing.assert_allclose(sims, hand, rtol=1e-4, atol=1e-5)
    # unlike VLM, the cross-encoder's pair scores are not the embedding similarity
    assert not np.allclose(exhaustive, sims, atol=1e-3)


def test_finetune_with_the_contrastive_loss_and_hard_negatives(planted):
    import copy

    from actbert.models.processing import processor_for
    from actbert.tasks import registry as tasks
    from actbert.tasks import retrieval as ret

    model, assembler, bench, _ = planted
    pairs = ret.msrvtt_training_pairs(bench, assembler)
    processor = processor_for(model, assembler)
    fixed = ret.distinct_video_batch(processor, pairs, np.random.default_rng(9), 6, True)  # 4 training videos exist
    assert len(set(fixed.video_ids)) == fixed.batch_size == len({v for v, _ in pairs}) == 4

    def contrastive_loss(m):
        with torch.no_grad():
            return float(m.eval().contrastive_loss(fixed))

    # InfoNCE alone, then matching with hard negatives + InfoNCE
    alone = copy.deepcopy(model)
    before = contrastive_loss(alone)
    log = ret.finetune(alone, assembler, bench, tasks.make_settings("retrieval", {"steps": 25, "lr": 3e-3, "train_batch": 4, "contrastive": 1.0}))
    assert len(log.losses) == 25
    assert contrastive_loss(alone) < before - 0.1, (before, contrastive_loss(alone))
    mixed = copy.deepcopy(model)
    mixed.config.hard_negatives = True
    log = ret.finetune(mixed, assembler, bench, tasks.make_settings("retrieval", {"steps": 3, "lr": 1e-3, "train_batch": 4, "contrastive": 0.5}))
    assert len(log.losses) == 3 and all(np.isfinite(log.losses))
    # the setting is range-checked, and a model without embeddings is refused at once
    with pytest.raises(ConfigError, match="contrastive"):
        tasks.make_settings("retrieval", {"contrastive": 1.5})
    torch.manual_seed(0)
    plain = registry.create_model(ActBertForPretraining.fill_config_from_data(tiny(), assembler.store.schema, assembler.tokenizer), verbose=False)
    with pytest.raises(CapabilityError, match="'embeddings'"):
        ret.finetune(plain, assembler, bench, tasks.make_settings("retrieval", {"steps": 1, "contrastive": 0.5}))


def test_the_pretraining_loop_logs_the_contrastive_loss(tmp_path):
    from actbert.train.config import load_pretrain_config
    from actbert.train.loop import train
    from actbert.train.metrics_log import read_metrics

    config = load_pretrain_config("tiny", ["train.progress=false", f"data.random_dir={tmp_path / 'data'}", "train.max_steps=2",
                                           "train.checkpoint_every=0", "model.embed_dim=16", "model.loss_weights.contrastive=0.5",
                                           "model.hard_negatives=true", "optim.lr_scales.embedding=2.0"])
    train(config, tmp_path / "run")
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert len(records) == 2 and all(math.isfinite(r["contrastive"]) and r["contrastive"] > 0 for r in records)
    saved = ActBertForPretraining.from_pretrained(tmp_path / "run" / "model")
    assert saved.config.hard_negatives and saved.config.loss_weights["contrastive"] == 0.5
    assert "embeddings" in capabilities_of(saved)
