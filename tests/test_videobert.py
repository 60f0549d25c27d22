"""VideoBERT: input layout, the three regimes' masks and labels, the model's losses and capabilities."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from actbert.data.masking import MaskingConfig
from actbert.data.store import FeatureStore, FeatureStoreWriter, StoreSchema, VideoFeatures
from actbert.models.interface import capabilities_of
from actbert.models.pretraining_data import PretrainSource
from actbert.models.processing import Item, VideoRef
from actbert.models.videobert.configuration import REGIMES, VideoBertConfig
from actbert.models.videobert.modeling import VideoBertForPretraining
from actbert.models.videobert.processing import (
    REGIME_ID,
    VideoBertDataError,
    VideoBertPretrainDataset,
    VideoBertProcessor,
    collate_rows,
    layout,
    mask_visual,
)
from actbert.models.videobert.visual_vocab import fit_visual_vocabulary, tokenize_video

DIM = 4
SECONDS = 30


def _features(rng: np.random.Generator, seconds: int, motif: np.ndarray) -> VideoFeatures:
    clip_times = np.array([[0.0, 10.0], [10.0, 20.0], [20.0, 30.0]])
    return VideoFeatures(
        clip_times=clip_times,
        action_features=rng.normal(size=(3, DIM)).astype(np.float32),
        action_targets=np.full((3, 2), 0.5, np.float32),
        frame_times=np.arange(seconds, dtype=np.float64),
        region_features=np.zeros((seconds, 1, 3), np.float32),
        region_boxes=np.zeros((seconds, 1, 4), np.float32),
        region_locations=np.zeros((seconds, 1, 5), np.float32),
        region_class_probs=np.full((seconds, 1, 2), 0.5, np.float32),
        region_counts=np.ones(seconds, np.int64),
        second_times=np.arange(seconds, dtype=np.float64) + 0.5,
        second_features=(motif[np.arange(seconds) % len(motif)] + 0.05 * rng.normal(size=(seconds, DIM))).astype(np.float32),
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 4-video store with per-second features, narrations, and a 2x2 visual vocabulary fitted on it."""
    from actbert.text.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("vb")
    schema = StoreSchema(action_dim=DIM, region_dim=3, num_region_classes=2, num_actions=2, region_classes=["a", "b"],
                         action_vocab=["cut", "pour"], max_regions=1)
    schema.second_features = True
    writer = FeatureStoreWriter(root / "store", schema)
    rng = np.random.default_rng(0)
    motif = np.array([[0, 0, 0, 0], [0, 3, 0, 0], [9, 0, 0, 0], [9, 3, 0, 0]], np.float32)
    narrations = {}
    for i in range(4):
        writer.write(f"v{i}", _features(rng, SECONDS, np.roll(motif, i, axis=0)))
        narrations[f"v{i}"] = {"start": [0.0, 10.0, 20.0], "end": [10.0, 20.0, 30.0],
                               "text": [f"first we cut the tomato {i}", "then pour the water", "now stir the bowl"]}
    writer.close() if hasattr(writer, "close") else None
    (root / "narrations.json").write_text(json.dumps(narrations))
    store = FeatureStore(root / "store")
    from actbert.data.clips import ClipAssembler

    tok = load_tokenizer()
    assembler = ClipAssembler(store, tok)
    feats = np.concatenate([
        tokenize_video.__globals__["pool_clips"](s.times, s.features)[1]
        for s in (assembler.second_features(v) for v in store.video_ids())
    ])
    vocab = fit_visual_vocabulary(feats, depth=2, branching=2, seed=0)
    vocab.save(root / "vocab")
    config = VideoBertForPretraining.fill_config_from_data(
        VideoBertConfig(hidden_size=32, num_heads=2, intermediate_size=64, num_layers=2, visual_vocab=str(root / "vocab"),
                        hidden_dropout=0.0, attention_dropout=0.0),
        store.schema, tok)
    return SimpleNamespace(root=root, store=store, tok=tok, assembler=assembler, vocab=vocab, config=config)


def _source(world, config=None, **masking):
    data = SimpleNamespace(masking=MaskingConfig(**masking), max_text_len=64, samples_per_video=8)
    return PretrainSource(world.store, world.root / "narrations.json", None, world.tok, config or world.config, data, 0)


def test_layout_by_hand():
    c = VideoBertConfig(vocab_size=30524, visual_vocab_size=16, feature_dim=4)
    ids, types, first = layout(c, [2000, 2001], [0, 5])
    # [CLS] w w [>] v0 v5 [SEP]; [>] = 30524, visual word j = 30525 + j
    assert ids.tolist() == [101, 2000, 2001, 30524, 30525, 30530, 102]
    assert types.tolist() == [0, 0, 0, 1, 1, 1, 1] and first == 4
    ids, types, first = layout(c, [2000], None)
    assert ids.tolist() == [101, 2000, 102] and types.tolist() == [0, 0, 0] and first == -1
    ids, types, first = layout(c, None, [3])
    assert ids.tolist() == [101, 30524, 30528, 102] and types.tolist() == [0, 1, 1, 1] and first == 2


def test_mask_visual_follows_bert_rule_by_hand():
    c = VideoBertConfig(vocab_size=100, visual_vocab_size=4, feature_dim=4, visual_mask_probability=0.5, mask_token_id=7)
    ids = np.array([101, 100, 101, 102, 103, 104, 102])  # [CLS] [>] v0 v1 v2 v3 [SEP] (101 is also v0 here)
    eligible = np.array([0, 0, 1, 1, 1, 1, 0], bool)
    rng = np.random.default_rng(5)
    draw = np.random.default_rng(5)
    chosen = eligible & (draw.random(7) < 0.5)
    how = draw.random(7)
    out, labels = mask_visual(ids, eligible, rng, c)
    assert (labels[chosen] == ids[chosen]).all() and (labels[~chosen] == -100).all()
    assert (out[chosen & (how < 0.8)] == 7).all()
    kept = chosen & (how >= 0.9)
    assert (out[kept] == ids[kept]).all() and (out[~chosen] == ids[~chosen]).all()
    swapped = chosen & (how >= 0.8) & (how < 0.9)
    assert ((out[swapped] >= 101) & (out[swapped] < 105)).all()


def test_regimes_layout_masks_and_alignment_labels(world):
    cfg = replace(world.config, max_subsample=1, max_sentences=1, visual_mask_probability=0.0)
    ds = VideoBertPretrainDataset(_source(world, cfg, mlm_probability=0.0, negative_probability=0.5))
    assert len(ds) == 32 and not ds.failures
    seen = set()
    vt, nxt = cfg.vocab_size, cfg.next_token_id
    for i in range(len(ds)):
        row = ds[i]
        ids = row.input_ids.tolist()
        regime = REGIMES[row.regime]
        seen.add((regime, row.align_label))
        assert ids[0] == cfg.cls_token_id and ids[-1] == cfg.sep_token_id
        assert (row.mlm_labels == -100).all()  # both mask rates are 0
        if regime == "text":
            assert nxt not in ids and max(ids) < vt and (row.token_type_ids == 0).all() and row.align_label == -1
        elif regime == "video":
            assert ids[1] == nxt and all(t > nxt for t in ids[2:-1]) and len(ids) <= cfg.video_only_tokens + 3
            assert row.token_type_ids.tolist() == [0] + [1] * (len(ids) - 1) and row.align_label == -1
        else:
            cut = ids.index(nxt)
            visual = [t - cfg.visual_offset for t in ids[cut + 1 : -1]]
            sentence = world.tok.decode(ids[1:cut])
            tokens = ds.sentences(row.video_id)
            if row.align_label == 1.0:
                # the sentence's span [s, e) decides the visual words: clips centred inside it, in order
                nar = ds.narrations[row.video_id]
                k = [j for j, t in enumerate(nar.text) if world.tok.decode(world.tok.encode(t)) == sentence][0]
                centres = tokens.clip_times.mean(1)
                inside = (centres >= nar.start[k]) & (centres < nar.end[k])
                assert visual == tokens.ids[inside].tolist()
                assert sentence.endswith(row.video_id[1:]) or "tomato" not in sentence
            else:
                assert row.align_label == 0.0
                # a random negative: the sentence comes from another video
                if "tomato" in sentence:
                    assert not sentence.endswith(row.video_id[1:])
    assert {r for r, _ in seen} == set(REGIMES)
    assert ("text_video", 0.0) in seen and ("text_video", 1.0) in seen


def test_masking_targets_per_regime(world):
    cfg = replace(world.config, visual_mask_probability=0.5)
    ds = VideoBertPretrainDataset(_source(world, cfg, mlm_probability=0.5, negative_probability=0.5))
    for i in range(len(ds)):
        row = ds[i]
        target = row.mlm_labels != -100
        labels = row.mlm_labels[target]
        regime = REGIMES[row.regime]
        if regime == "text":
            assert (labels < cfg.vocab_size).all()
        elif regime == "video":
            assert (labels >= cfg.visual_offset).all()
        elif row.align_label == 0.0:
            assert not target.any()  # cloze_on_negatives=False: misaligned pairs carry no masked targets
        # a target never sits on [CLS] / [>] / [SEP]
        assert not np.isin(row.input_ids[0], labels).any() or row.input_ids[0] == cfg.cls_token_id
        assert not target[0] and not target[-1]
    # same (seed, epoch, index) -> same row
    again = VideoBertPretrainDataset(_source(world, cfg, mlm_probability=0.5, negative_probability=0.5))
    assert again[5].input_ids.tolist() == ds[5].input_ids.tolist()


def test_forward_losses_and_alignment_loss_by_hand(world):
    torch.manual_seed(0)
    model = VideoBertForPretraining(world.config).eval()
    ds = VideoBertPretrainDataset(_source(world, mlm_probability=0.3, negative_probability=0.5))
    batch = collate_rows([ds[i] for i in range(16)], world.config.pad_token_id)
    out = model(batch)
    assert set(out.losses) == {"text_mlm", "video_mlm", "cloze", "align"}
    assert all(torch.isfinite(v) for v in out.losses.values())
    tv = (batch.regime == REGIME_ID["text_video"]) & (batch.align_labels >= 0)
    logits = out.align_logits[tv].detach().double()
    y = batch.align_labels[tv].long()
    by_hand = -(logits.log_softmax(-1)[torch.arange(len(y)), y]).mean()
    assert float(out.losses["align"].detach()) == pytest.approx(float(by_hand), rel=1e-5)
    assert float(out.loss.detach()) == pytest.approx(sum(float(v.detach()) for v in out.losses.values()), rel=1e-5)
    # frozen input embeddings (paper 4.3): no gradient reaches the tables
    out.loss.backward()
    assert model.embeddings.word_embeddings.weight.grad is None and model.embeddings.visual_embeddings.weight.grad is None
    assert model.encoder["layer"][0].attention.self.query.weight.grad is not None


def test_visual_rows_start_from_the_centroids(world):
    model = VideoBertForPretraining(world.config)
    rows = model.embeddings.visual_embeddings.weight[1:].detach().double()
    leaves = torch.from_numpy(world.vocab.leaf_centroids()).double()
    # a linear image of the centred centroids: pairwise distances keep their order
    d_rows = torch.cdist(rows, rows)
    d_leaves = torch.cdist(leaves, leaves)
    iu = torch.triu_indices(4, 4, 1)
    assert torch.corrcoef(torch.stack([d_rows[iu[0], iu[1]], d_leaves[iu[0], iu[1]]]))[0, 1] > 0.5


def test_processor_and_capabilities(world, tmp_path):
    model = VideoBertForPretraining(world.config).eval()
    assert capabilities_of(model) == {"pair_scores", "masked_tokens", "unit_states", "caption_memory"}
    proc = VideoBertProcessor(world.assembler, world.config)
    tokens = proc.sentences("v1")
    # span [3, 9): clips centred at 3.75, 5.25, 6.75, 8.25 (of [3,4.5) ... [7.5,9))
    batch = proc.batch([Item(VideoRef("v1", 3.0, 9.0), "cut the tomato")])
    ids = batch.input_ids[0].tolist()
    cut = ids.index(world.config.next_token_id)
    assert [t - world.config.visual_offset for t in ids[cut + 1 : -1]] == tokens.ids[2:6].tolist()
    assert ids[1:cut] == world.tok.encode("cut the tomato")
    assert model.pair_scores(batch).shape == (1,)
    # frame f stands for [f, f+1), centre f+0.5: 0.5 -> [0,1.5); 1.5, 2.5 -> [1.5,3); 3.5 -> [3,4.5); 4.5, 5.5 -> [4.5,6)
    fb = proc.batch([Item(VideoRef.of_frames("v1", range(6)))])
    first = fb.input_ids[0].tolist().index(world.config.next_token_id) + 1
    assert (fb.unit_index[0] - first).tolist() == [0, 1, 1, 2, 3, 3]
    states, valid = model.unit_states(fb)
    assert states.shape == (1, 6, 32) and valid.all()
    # text-less items use the paper's feature template: five [MASK] slots
    assert int(proc.mask_positions(fb).sum()) == 5
    memory, mask = model.caption_memory(fb)
    assert memory.shape == (1, 1, 64) and mask.all()
    logits = model.masked_token_logits(fb, proc.mask_positions(fb))
    assert logits.shape == (5, world.config.vocab_size)
    # save / load through the registry
    model.save_pretrained(tmp_path / "m")
    from actbert.models.pretrained import from_pretrained

    back = from_pretrained(tmp_path / "m")
    torch.testing.assert_close(back.pair_scores(batch), model.pair_scores(batch))


def test_bad_inputs_name_file_and_field(world, tmp_path):
    # a vocabulary built for another feature dimension
    schema = SimpleNamespace(action_dim=DIM + 1)
    with pytest.raises(VideoBertDataError, match=r"visual_vocab.safetensors: built for feature_dim=4.*'action_dim' is 5"):
        VideoBertForPretraining.fill_config_from_data(world.config, schema, world.tok)
    with pytest.raises(VideoBertDataError, match=r"field 'visual_vocab' is not set"):
        VideoBertForPretraining.fill_config_from_data(replace(world.config, visual_vocab=None), schema, world.tok)
    # a store without per-second features
    schema = StoreSchema(action_dim=DIM, region_dim=3, num_region_classes=2, num_actions=2, region_classes=["a", "b"],
                         action_vocab=["cut", "pour"], max_regions=1)
    writer = FeatureStoreWriter(tmp_path / "plain", schema)
    f = _features(np.random.default_rng(0), 6, np.zeros((1, DIM), np.float32))
    f.second_times = f.second_features = None
    writer.write("x", f)
    from actbert.data.clips import ClipAssembler

    proc = VideoBertProcessor(ClipAssembler(FeatureStore(tmp_path / "plain"), world.tok), world.config)
    with pytest.raises(Exception, match=r"second_features"):
        proc.batch([Item(VideoRef("x"), "cut")])
    source = replace(_source(world), store=FeatureStore(tmp_path / "plain"))
    with pytest.raises(VideoBertDataError, match=r"none of the 1 videos is usable.*second_features"):
        VideoBertPretrainDataset(source)


def test_zero_shot_template_scoring_on_a_constructed_case(world):
    """The verb comes from the first [MASK] of "now let me show you how to [MASK] the [MASK]", the object
    from the second; top-k hits count a label's words; specials never win."""
    from actbert.models.videobert import zero_shot

    tok = world.tok
    cut, pour, tomato, bowl = (tok.encode(w)[0] for w in ("cut", "pour", "tomato", "bowl"))
    proc = VideoBertProcessor(world.assembler, world.config)

    class Stub(torch.nn.Module):
        config = world.config

        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))
            self.seen = []

        def masked_token_logits(self, batch, positions):
            self.seen.append((batch, positions))
            n = int(positions.sum())
            logits = torch.zeros(n, world.config.vocab_size)
            logits[:, world.config.mask_token_id] = 100.0  # a special: must be excluded
            logits[0::2, cut], logits[0::2, pour] = 3.0, 2.0  # first slot of each row: verbs
            logits[1::2, bowl], logits[1::2, tomato] = 3.0, 2.0  # second slot: objects
            return logits

    stub = Stub()
    clips = [zero_shot.LabelledClip("v0", 0.0, 6.0, "cut", "tomato"), zero_shot.LabelledClip("v1", 3.0, 9.0, "pour", "bowl")]
    verbs, objs = zero_shot.template_logits(stub, proc, clips)
    batch, positions = stub.seen[0]
    row = batch.input_ids[0].tolist()
    template = tok.encode(world.config.zero_shot_template)
    assert row[1 : 1 + len(template)] == template and row[1 + len(template)] == world.config.next_token_id
    assert positions[0].nonzero().flatten().tolist() == [1 + template.index(103), 1 + len(template) - 1]
    assert verbs.argmax(-1).tolist() == [cut, cut] and objs.argmax(-1).tolist() == [bowl, bowl]
    # top-1: clip 0's verb cut is a hit, clip 1's pour is not; top-5 both; objects the other way round
    assert zero_shot.topk_hits(verbs, [{cut}, {pour}], 1).tolist() == [True, False]
    assert zero_shot.topk_hits(verbs, [{cut}, {pour}], 5).tolist() == [True, True]
    assert zero_shot.topk_hits(objs, [{tomato}, {bowl}], 1).tolist() == [False, True]
    # the language prior has no video: [CLS] template [SEP]
    zero_shot.template_logits(stub, proc, clips, with_video=False)
    prior = stub.seen[-1][0].input_ids[0].tolist()
    assert prior == [world.config.cls_token_id] + template + [world.config.sep_token_id]


def test_zero_shot_label_words_and_supervised_baseline():
    from actbert.models.videobert import zero_shot

    meta = {"actions": ["cut", "pick"], "objects": ["tomato"],
            "vocabulary": {"narration": {"verbs": {"cut": ["slice"], "pick": ["pick up"]}, "objects": {"tomato": ["red tomato"]}},
                           "caption": {"verbs": {"cut": ["chop"], "pick": ["lift"]}, "objects": {"tomato": ["tomatoes"]}}}}
    verbs, objects = zero_shot.label_words(meta, "meta.json")
    assert verbs == {"cut": {"cut", "slice", "chop"}, "pick": {"pick", "lift"}} and objects == {"tomato": {"tomato", "tomatoes"}}
    # separable features: a linear classifier gets them all; top-5 of 2 classes is always right
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (10, 3)), rng.normal(5, 0.1, (10, 3))])
    y = ["a"] * 10 + ["b"] * 10
    assert zero_shot.supervised_topk(x, y, x[[0, 15]], ["a", "b"]) == {"top1": 100.0, "top5": 100.0}
    assert zero_shot.supervised_topk(x, y, x[[0]], ["b"])["top1"] == 0.0
