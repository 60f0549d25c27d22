"""Numerical parity of the ``paddlevideo`` architecture with PaddleVideo's ActBERT (reference fixture).

The fixture (tests/fixtures/paddle_actbert_small, see its README) holds the outputs, loss terms,
gradients and intermediate activations of the original Paddle implementation on CPU for a small
random model. Tolerances: outputs 1e-4 absolute, loss terms 1e-5, gradients 1e-3 relative to the
largest reference entry (the fixture itself is within 7e-6 of float64).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from actbert.models.paddlevideo.convert import load_paddle_checkpoint, to_paddle_layout
from actbert.models.paddlevideo.modeling import (
    PADDLE_MASKED_VALUE,
    matched_probability,
    nearest_resize,
    paddle_cross_entropy,
    paddlevideo_pretraining_loss,
)

torch.set_num_threads(1)

FIXTURE = Path(__file__).parent / "fixtures" / "paddle_actbert_small"
META = json.loads((FIXTURE / "config.json").read_text())
LOSS = json.loads((FIXTURE / "loss.json").read_text())
OUTPUT_ATOL = 1e-4
LOSS_ATOL = 1e-5
GRAD_RTOL = 1e-3


def _npz(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURE / name, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


INPUTS = _npz("inputs.npz")


def _inputs() -> list[torch.Tensor]:
    return [torch.from_numpy(INPUTS[k]) for k in META["forward_argument_order"]]


def _labels() -> list[torch.Tensor]:
    return [torch.from_numpy(INPUTS[k]) for k in META["loss_argument_order"][4:]]


@pytest.fixture(scope="module", params=["model.pdparams", "weights.npz"])
def model(request):
    model, report = load_paddle_checkpoint(FIXTURE / request.param, META["kwargs"])
    assert report.unused == [] and report.missing == []
    return model


def _max_abs(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def test_outputs_and_intermediates_match_paddle(model):
    capture: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        out = model(*_inputs(), capture=capture)
    reference = _npz("outputs.npz")
    diffs = {k: _max_abs(getattr(out, k), reference[k]) for k in META["forward_outputs"]}
    print("max |output - paddle|:", diffs)
    for name, diff in diffs.items():
        assert getattr(out, name).shape == reference[name].shape
        assert diff < OUTPUT_ATOL, (name, diff)
    # Every captured intermediate matches too (this is where a mismatch would first show).
    intermediates = _npz("intermediates.npz")
    assert set(intermediates) <= set(capture)
    first_bad = [k for k in META["intermediates_keys"] if _max_abs(capture[k], intermediates[k]) >= OUTPUT_ATOL]
    assert not first_bad, first_bad


def test_loss_and_gradients_match_paddle(model):
    model.zero_grad(set_to_none=True)
    out = model(*_inputs())
    loss = paddlevideo_pretraining_loss(out, *_labels())
    expected = {"total": LOSS["total"], **LOSS["components"]}
    diffs = {k: abs(float(getattr(loss, k).detach()) - v) for k, v in expected.items()}
    print("|loss - paddle|:", diffs)
    for name, diff in diffs.items():
        assert diff < LOSS_ATOL, (name, diff)
    loss.total.backward()
    grads = to_paddle_layout(model, {n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    reference = _npz("grads.npz")
    rel = {k: _max_abs(grads[k], ref) / float(np.abs(ref).max()) for k, ref in reference.items()}
    print("max |grad - paddle| / max |paddle grad|:", rel)
    for name, ref in reference.items():
        assert grads[name].shape == ref.shape, name  # Paddle layout ([in, out] for Linear)
        assert rel[name] < GRAD_RTOL, (name, rel[name])
    # value_av exists but is never used upstream: no gradient, exactly the parameters Paddle lists.
    no_grad = sorted(n for n, p in model.named_parameters() if p.grad is None)
    assert no_grad == sorted(LOSS["params_without_grad"])
    model.zero_grad(set_to_none=True)


def test_tied_decoder_is_one_parameter(model):
    emb = model.bert.embeddings.word_embeddings.weight
    assert "cls.predictions.decoder_weight" not in dict(model.named_parameters())
    with torch.no_grad():
        before = model(*_inputs()).prediction_scores_t
        saved = emb[5].clone()
        emb[5] += 1.0  # changing the embedding row changes the decoder column for id 5
        after = model(*_inputs()).prediction_scores_t
        emb[5] = saved
    valid = torch.from_numpy(INPUTS["attention_mask"]).bool()
    token_5 = torch.from_numpy(INPUTS["input_txt"]) == 5
    column_change = (after[..., 5] - before[..., 5])[valid & ~token_5].abs()
    assert column_change.min() > 1e-3  # every position's logit for id 5 moved through the decoder


def test_padding_id_embeds_to_zero_and_row0_only_feeds_decoder(model):
    """Paddle's padding_idx=0: id 0 embeds to zeros whatever row 0 holds; row 0 is still decoder column 0."""
    text = torch.from_numpy(INPUTS["input_txt"])
    assert (text == 0).any()
    table = model.bert.embeddings.word_embeddings.weight
    assert table[0].norm() > 1.0  # row 0 itself is not zero
    with torch.no_grad():
        base_capture, moved_capture = {}, {}
        base = model(*_inputs(), capture=base_capture)
        saved = table[0].clone()
        table[0] += 3.0
        moved = model(*_inputs(), capture=moved_capture)
        table[0] = saved
    # The encoder never sees row 0 ...
    assert torch.equal(base_capture["emb_t"], moved_capture["emb_t"])
    assert torch.equal(base.seq_relationship_score, moved.seq_relationship_score)
    assert torch.equal(base.prediction_scores_t[..., 1:], moved.prediction_scores_t[..., 1:])
    # ... but the tied decoder does (logit column 0 moves everywhere).
    assert (moved.prediction_scores_t[..., 0] - base.prediction_scores_t[..., 0]).abs().min() > 1e-3


def test_padded_action_feature_changes_valid_text_outputs(model):
    """Upstream quirk: the injected action terms are not masked, so padded action slots leak."""
    inputs = _inputs()
    action_mask = inputs[7]
    sample, slot = [int(i) for i in (action_mask == 0).nonzero()[0]]
    changed = [t.clone() for t in inputs]
    changed[1][sample, slot] += 5.0
    with torch.no_grad():
        base = model(*inputs)
        moved = model(*changed)
    text_valid = inputs[5][sample].bool()
    text_change = (moved.prediction_scores_t[sample] - base.prediction_scores_t[sample])[text_valid].abs().max()
    match_change = (moved.seq_relationship_score[sample] - base.seq_relationship_score[sample]).abs().max()
    assert text_change > 1e-3
    assert match_change > 1e-5
    # Other samples are untouched.
    others = torch.arange(inputs[0].shape[0]) != sample
    assert torch.equal(moved.prediction_scores_t[others], base.prediction_scores_t[others])


def test_nearest_resize_matches_paddle_index_maps():
    maps = META["tangled_interp_index_maps"]
    source = torch.arange(3, dtype=torch.float32)[None, :, None]  # [1, La=3, 1]
    assert nearest_resize(source, 12)[0, :, 0].long().tolist() == maps["action_to_text"]
    assert nearest_resize(source, 9)[0, :, 0].long().tolist() == maps["action_to_region"]


def test_paddle_cross_entropy_denominator_counts_ignored_positions():
    logits = torch.zeros(10, 1000)
    labels = torch.full((10,), -1)
    labels[3], labels[7] = 4, 9
    assert math.isclose(float(paddle_cross_entropy(logits, labels)), 2 * math.log(1000) / 10, rel_tol=1e-6)
    assert float(paddle_cross_entropy(logits, torch.full((10,), -1))) == 0.0
    # The fixture's mlm term: sum NLL / (B * Lt), not / number of masked tokens.
    den = LOSS["denominators"]["mlm"]
    assert den["paddle_uses"] == INPUTS["masked_lm_labels"].size


def test_matched_probability_is_class0_softmax(model):
    with torch.no_grad():
        out = model(*_inputs())
        prob = model.matched_probability(*_inputs())
    expected = torch.softmax(out.seq_relationship_score, dim=-1)[:, 0]
    assert torch.allclose(prob, expected)
    assert torch.allclose(matched_probability(out.seq_relationship_score), expected)
    # Masks are Paddle's additive -10000.
    assert PADDLE_MASKED_VALUE == -10000.0
