"""ActBertModel / ActBertForPretraining on the tiny preset with random batches."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from actbert.config import ConfigError
from actbert.models.actbert import (
    ActBertConfig,
    ActBertForPretraining,
    ActBertModel,
    BatchError,
    random_batch,
)
from actbert.models.registry import load_model_config

torch.set_num_threads(1)


def tiny_config(**changes) -> ActBertConfig:
    config = load_model_config("tiny")
    return dataclasses.replace(config, hidden_dropout=0.0, attention_dropout=0.0, **changes)


@pytest.fixture(scope="module")
def model() -> ActBertForPretraining:
    torch.manual_seed(0)
    return ActBertForPretraining(tiny_config()).eval()


def pad_stream(batch, extra: int, seed: int = 0):
    """Append ``extra`` padded positions to each stream, filled with junk a model must ignore."""
    g = torch.Generator().manual_seed(seed)
    b = batch.batch_size
    changes = {}
    for stream, ids_name, length_from in (
        ("text", "input_ids", "input_ids"),
        ("action", "action_token_ids", "action_token_ids"),
        ("region", "region_token_ids", "region_token_ids"),
    ):
        for f in dataclasses.fields(batch):
            value = getattr(batch, f.name)
            if not isinstance(value, torch.Tensor) or value.dim() < 2:
                continue
            if value.shape[1] != getattr(batch, length_from).shape[1] or not (
                f.name.startswith(stream) or (stream == "text" and f.name in ("input_ids", "mlm_labels"))
            ):
                continue
            if f.name.endswith("mask"):
                tail = torch.zeros(b, extra, *value.shape[2:], dtype=value.dtype)
            elif f.name == "mlm_labels":
                tail = torch.full((b, extra), -100, dtype=value.dtype)
            elif f.name == "input_ids":
                tail = torch.randint(1000, 2000, (b, extra), generator=g)
            elif f.name.endswith("token_ids"):
                tail = torch.zeros(b, extra, dtype=value.dtype)  # [PAD]
            elif value.dtype == torch.long:
                tail = torch.randint(0, 5, (b, extra, *value.shape[2:]), generator=g)
            else:
                tail = torch.randn(b, extra, *value.shape[2:], generator=g).abs()
            changes[f.name] = torch.cat([value, tail], dim=1)
    return dataclasses.replace(batch, **changes)


def test_shapes(model):
    config = model.config
    batch = random_batch(config, batch_size=3, clips=[3, 2, 1])
    out = model(batch)
    b, lt, la, lr = 3, batch.input_ids.shape[1], batch.action_token_ids.shape[1], batch.region_token_ids.shape[1]
    enc = out.encoder
    assert enc.text.shape == (b, lt, config.text_hidden_size)
    assert enc.action.shape == (b, la, config.visual_hidden_size)
    assert enc.region.shape == (b, lr, config.visual_hidden_size)
    assert enc.pooled.shape == (b, config.text_hidden_size)
    assert out.mlm_logits.shape == (int((batch.mlm_labels != -100).sum()), config.vocab_size)
    assert out.action_logits.shape == (b, la, config.num_actions)
    assert out.region_logits.shape == (b, lr, config.num_region_classes)
    assert out.match_logits.shape == (b,)
    assert set(out.losses) == {"mlm", "action", "region", "match"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.losses.values())
    # the values of the four losses, their weighted total and the matching logit are checked against a
    # hand computation in tests/test_paper_losses.py
    assert model.mlm_head.decoder.weight is model.actbert.text_embeddings.word_embeddings.weight


def test_padding_invariance(model):
    batch = random_batch(model.config, batch_size=3, clips=[3, 2, 1], seed=1)
    padded = pad_stream(batch, extra=3)
    with torch.no_grad():
        a, p = model(batch), model(padded)
    lt, la, lr = batch.input_ids.shape[1], batch.action_token_ids.shape[1], batch.region_token_ids.shape[1]
    for name, length, mask in (
        ("text", lt, batch.text_mask),
        ("action", la, batch.action_mask),
        ("region", lr, batch.region_mask),
    ):
        real_a = getattr(a.encoder, name)[mask]
        real_p = getattr(p.encoder, name)[:, :length][mask]
        torch.testing.assert_close(real_p, real_a, atol=1e-5, rtol=0, msg=f"{name} stream changed by padding")
    torch.testing.assert_close(p.encoder.pooled, a.encoder.pooled, atol=1e-5, rtol=0)
    for key in a.losses:
        torch.testing.assert_close(p.losses[key], a.losses[key], atol=1e-5, rtol=0, msg=key)


def test_gradients_reach_all_three_streams():
    torch.manual_seed(0)
    model = ActBertForPretraining(tiny_config())
    batch = random_batch(model.config, batch_size=2, clips=[3, 2], seed=2)
    batch.match_labels = torch.tensor([1.0, 0.0])
    model(batch).loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not no_grad, f"parameters without gradient: {no_grad}"
    for prefix in ("actbert.text_embeddings.", "actbert.action_embeddings.", "actbert.region_embeddings.",
                   "actbert.text_encoder.layer.1.", "actbert.action_encoder.layer.1.", "actbert.region_encoder.layer.1.",
                   "actbert.tangled.0.", "actbert.tangled.1."):  # fmt: skip
        assert any(n.startswith(prefix) for n, _ in model.named_parameters()), prefix


def test_tiny_model_overfits_a_small_batch():
    torch.manual_seed(0)
    model = ActBertForPretraining(tiny_config(num_actions=8, num_region_classes=6)).train()
    batch = random_batch(model.config, batch_size=4, clips=[3, 3, 2, 2], seed=3)
    # one-hot-ish action targets so the soft CE minimum is near 0 and a drop is clear
    batch.action_targets = torch.nn.functional.one_hot(batch.action_targets.argmax(-1), 8).float() * (
        batch.action_token_ids == model.config.act_token_id
    )[..., None]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        out = model(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses = {k: float(v) for k, v in out.losses.items()}
        first = first or losses
    with torch.no_grad():
        last = {k: float(v) for k, v in model.eval()(batch).losses.items()}
    assert last["mlm"] < 0.05, (first, last)
    assert last["action"] < 0.1 * first["action"], (first, last)
    assert last["match"] < 0.1 * first["match"], (first, last)
    # KL to a soft target: the floor is 0, start is > 0.5 for random logits
    assert last["region"] < 0.2 * first["region"], (first, last)


def test_fully_masked_streams_are_finite(model):
    batch = random_batch(model.config, batch_size=3, clips=[2, 2, 1], seed=4)
    batch.action_mask[0] = False
    batch.region_mask[1] = False
    batch.action_target_mask[0] = False
    batch.region_target_mask[1] = False
    with torch.no_grad():
        out = model(batch)
    for tensor in (out.encoder.text, out.encoder.action, out.encoder.region, out.encoder.pooled, out.loss):
        assert torch.isfinite(tensor).all()


def test_without_regions_equals_empty_region_stream(model):
    batch = random_batch(model.config, batch_size=2, clips=[3, 2], seed=5)
    no_regions = dataclasses.replace(batch, region_mask=torch.zeros_like(batch.region_mask))
    with torch.no_grad():
        skipped = model(batch, use_regions=False)
        masked = model(no_regions)
        full = model(batch)
    assert skipped.encoder.region is None and skipped.region_logits is None
    assert float(skipped.losses["region"]) == 0.0
    torch.testing.assert_close(skipped.encoder.text, masked.encoder.text, atol=1e-5, rtol=0)
    torch.testing.assert_close(skipped.encoder.action, masked.encoder.action, atol=1e-5, rtol=0)
    # and regions do matter when present
    assert (full.encoder.text - skipped.encoder.text).abs().max() > 1e-4
    # config switch does the same as the forward flag
    model_cfg = ActBertModel(dataclasses.replace(model.config, use_regions=False)).eval()
    model_cfg.load_state_dict(model.actbert.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model_cfg(batch).text, skipped.encoder.text)


def test_masked_losses_only_for_matched_pairs(model):
    batch = random_batch(model.config, batch_size=2, clips=[2, 2], seed=6)
    batch.match_labels = torch.tensor([1.0, 0.0])
    other = dataclasses.replace(
        batch,
        mlm_labels=batch.mlm_labels.clone(),
        action_targets=batch.action_targets.clone(),
        region_targets=batch.region_targets.clone(),
    )
    # change the targets of the mismatched row only
    row = other.mlm_labels[1]
    row[row != -100] = 1234
    other.action_targets[1] = other.action_targets[1].flip(-1)
    other.region_targets[1] = other.region_targets[1].flip(-1)
    with torch.no_grad():
        a, b = model(batch), model(other)
    for key in ("mlm", "action", "region"):
        torch.testing.assert_close(a.losses[key], b.losses[key], msg=key)
    # the matched row's targets do count
    changed = dataclasses.replace(batch, mlm_labels=batch.mlm_labels.clone())
    first = changed.mlm_labels[0]
    first[first != -100] = 1234
    with torch.no_grad():
        assert abs(float(model(changed).losses["mlm"]) - float(a.losses["mlm"])) > 1e-3
    # nothing matched, or no targets at all: zero, not NaN, and backward still works
    none_matched = dataclasses.replace(batch, match_labels=torch.zeros(2))
    out = model(none_matched)
    assert all(float(out.losses[k]) == 0.0 for k in ("mlm", "action", "region"))
    assert float(out.losses["match"]) > 0
    no_targets = random_batch(model.config, batch_size=2, with_targets=False)
    out = model(no_targets)
    assert float(out.loss) == 0.0 and out.mlm_logits is None
    out.loss.backward()


def test_bad_batches_raise_clear_errors(model):
    config = model.config
    batch = random_batch(config, batch_size=2)
    wrong_dim = dataclasses.replace(batch, action_features=torch.zeros(*batch.action_features.shape[:2], 7))
    with pytest.raises(BatchError, match="action_features.*random0"):
        model(wrong_dim)
    nan = dataclasses.replace(batch, region_features=batch.region_features.clone())
    nan.region_features[0, 0, 0] = float("nan")
    with pytest.raises(BatchError, match="region_features.*NaN"):
        model(nan)
    bad_token = dataclasses.replace(batch, action_token_ids=batch.action_token_ids.clone())
    bad_token.action_token_ids[0, 0] = 2000
    with pytest.raises(BatchError, match="action_token_ids.*2000"):
        model(bad_token)
    bad_segment = dataclasses.replace(batch, region_segment_ids=batch.region_segment_ids + config.type_vocab_size)
    with pytest.raises(BatchError, match="region_segment_ids.*type_vocab_size"):
        model(bad_segment)
    short_mask = dataclasses.replace(batch, text_mask=batch.text_mask[:, :-1])
    with pytest.raises(BatchError, match="text_mask"):
        model(short_mask)


def test_config_validation(tmp_path):
    with pytest.raises(ConfigError, match="tiny.yaml:model.*'text_width'"):
        load_model_config("tiny", ["text_width=3"])
    with pytest.raises(ConfigError, match="text_tangled"):
        load_model_config("tiny", ["text_tangled=[1]"])
    with pytest.raises(ConfigError, match="action_tangled"):
        load_model_config("tiny", ["action_tangled=[1, 0]"])
    with pytest.raises(ConfigError, match="visual_num_heads"):
        load_model_config("tiny", ["visual_num_heads=5"])
    with pytest.raises(ConfigError, match="loss_weights"):
        load_model_config("tiny", ["loss_weights={nsp: 1.0}"])
    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  architecture: actbert\n  text_layers: 3\n  text_tangled: [2]\n  action_tangled: [0]\n"
                    "  region_tangled: [1]\n  action_layers: 1\n  region_layers: 2\n")  # fmt: skip
    config = load_model_config(path)
    assert config.text_layers == 3 and config.region_tangled == [1]


def test_no_tangled_layers_keeps_streams_apart():
    """K = 0: the text stream does not see the visual streams (it is plain BERT)."""
    torch.manual_seed(0)
    config = tiny_config(text_tangled=[], action_tangled=[], region_tangled=[])
    model = ActBertModel(config).eval()
    batch = random_batch(config, batch_size=2, seed=7)
    other = dataclasses.replace(batch, action_features=torch.randn_like(batch.action_features))
    with torch.no_grad():
        torch.testing.assert_close(model(batch).text, model(other).text)


def test_without_action_cues_no_output_reads_the_action_features():
    """use_actions=False ("without action cues"): every stream's output is what the same weights give
    with the action features replaced by zeros by hand, whatever the features were; the default
    model does read them (so the comparison can fail)."""
    torch.manual_seed(0)
    config = tiny_config()
    with_actions = ActBertModel(config).eval()
    without = ActBertModel(dataclasses.replace(config, use_actions=False)).eval()
    without.load_state_dict(with_actions.state_dict())
    batch = random_batch(config, batch_size=2, seed=7)
    other = dataclasses.replace(batch, action_features=torch.randn_like(batch.action_features))
    zeroed = dataclasses.replace(batch, action_features=torch.zeros_like(batch.action_features))
    with torch.no_grad():
        reference = with_actions(zeroed)
        for b in (batch, other):
            out = without(b)
            for stream in ("text", "action", "region"):
                torch.testing.assert_close(getattr(out, stream), getattr(reference, stream))
        assert not torch.allclose(with_actions(batch).text, with_actions(other).text)


def test_match_fusion_reads_the_pooled_video_and_starts_as_a_dot_product():
    torch.manual_seed(0)
    assert ActBertForPretraining(tiny_config(match_fusion="cls")).match_head.video_pooler is None
    model = ActBertForPretraining(tiny_config(match_fusion="mul")).eval()
    weight = model.match_head.classifier.weight
    assert bool((weight == weight.flatten()[0]).all()) and float(weight.flatten()[0]) > 0
    batch = random_batch(model.config, batch_size=3, clips=[3, 2, 1], seed=9)
    with torch.no_grad():
        encoded = model.actbert(batch)
        pooled_video = model.match_head.video_pooler(encoded, batch)
        dot = (encoded.pooled * pooled_video).sum(-1) * weight.flatten()[0]
        torch.testing.assert_close(model.match_score(batch), dot)

    # With no tangled layers [CLS] is blind to the video: only the fused head's logit can change
    # when the video does.
    blind = tiny_config(text_tangled=[], action_tangled=[], region_tangled=[])
    other = dataclasses.replace(batch, action_features=torch.randn_like(batch.action_features))
    for fusion, video_changes_logit in (("cls", False), ("mul", True)):
        torch.manual_seed(0)
        head = ActBertForPretraining(dataclasses.replace(blind, match_fusion=fusion)).eval()
        with torch.no_grad():
            same = torch.allclose(head.match_score(batch), head.match_score(other), atol=1e-6)
        assert same is not video_changes_logit, fusion
    with pytest.raises(ConfigError, match="match_fusion"):
        load_model_config("tiny", ["match_fusion=sum"])
