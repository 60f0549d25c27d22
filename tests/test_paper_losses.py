"""An oracle for the four pretraining losses of the paper's model (``ActBertForPretraining``, paper 3.2.3).

Nothing here calls the model's loss code (``actbert.models.losses``) or its selection logic. Two
independent routes:

1. **Constructed logits.** The four heads are replaced by modules that return logits chosen here,
   on a hand-built 3-row batch (two matched pairs, one negative). The expected losses are written
   out with ``math.log`` / ``math.exp`` from the definitions: cross-entropy of the masked words;
   soft-target cross-entropy ``-sum_v t_v log softmax(z)_v`` of the masked actions (rows whose
   target is all zero skipped); ``KL(p || softmax(z)) = sum_k p_k log(p_k / q_k)`` of the masked
   regions; binary cross-entropy of the single matching logit over every row. The masked losses
   count matched rows only (module docstring of modeling.py) and are 0 when nothing is left.
2. **The real heads.** On a random batch through the untouched model, the heads' outputs are
   recomputed in numpy from the encoder states and the weights (BERT transform, tied decoder,
   the matching head's pooled product), and the four losses from those logits.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from actbert.models.actbert import ActBertForPretraining, random_batch
from actbert.models.registry import load_model_config

torch.set_num_threads(1)


def tiny_config(**changes):
    config = load_model_config("tiny")
    return dataclasses.replace(config, hidden_dropout=0.0, attention_dropout=0.0, **changes)


class Fixed(nn.Module):
    """Returns ``table`` whatever the input (kept in the graph through ``0 * input``)."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table

    def forward(self, x, *rest):
        anchor = x.text if hasattr(x, "text") else x
        return self.table + 0.0 * anchor.sum()


def log_sum_exp(values) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


# ------------------------------------------------------------------------------ 1. constructed logits


def constructed_case():
    """(model, batch, expected losses) for the hand-built batch below."""
    config = tiny_config()
    torch.manual_seed(0)
    model = ActBertForPretraining(config).eval()
    # rows: 2 clips, 2 clips, 1 clip; text [CLS] w w w [SEP] w w w [SEP]; actions [ACT] [ACT] [SEP];
    # regions [R] [R] [SEP] [R] [R] [SEP] (row 2: one clip, padded)
    batch = random_batch(config, batch_size=3, clips=[2, 2, 1], words_per_clip=3, regions_per_clip=2, seed=3)
    b, lt = batch.input_ids.shape
    la, lr = batch.action_token_ids.shape[1], batch.region_token_ids.shape[1]
    assert (lt, la, lr) == (9, 3, 6)
    V, A, K = config.vocab_size, config.num_actions, config.num_region_classes

    batch.match_labels = torch.tensor([1.0, 1.0, 0.0])
    # masked words (row-major order of the N = 4 targets): row 0 at 1 and 6, row 1 at 2, row 2 at 3 (negative)
    labels = torch.full((b, lt), -100)
    targets = [(0, 1, 2000), (0, 6, 2001), (1, 2, 2002), (2, 3, 2003)]
    for row, pos, word in targets:
        labels[row, pos] = word
    batch.mlm_labels = labels
    # MLM logits: 0 everywhere but a few chosen entries per target row
    mlm = torch.zeros(4, V)
    mlm[0, 2000], mlm[0, 5] = 2.0, 1.0  # right word highest
    mlm[1, 2001], mlm[1, 7] = -1.0, 3.0  # a wrong word highest
    mlm[2, 2002] = 0.5
    mlm[3, 2003] = 9.0  # negative row: must not count
    expected_ce = [
        log_sum_exp([2.0, 1.0] + [0.0] * (V - 2)) - 2.0,
        log_sum_exp([-1.0, 3.0] + [0.0] * (V - 2)) + 1.0,
        log_sum_exp([0.5] + [0.0] * (V - 1)) - 0.5,
    ]
    mlm_expected = sum(expected_ce) / 3

    # actions: row 0 [ACT]0 soft target (classes 0, 1 at 0.5 each), [ACT]1 masked but no verb (skipped);
    # row 1 [ACT]0 one-hot class 3, [ACT]1 not masked; row 2 [ACT]0 masked but the row is a negative
    act_t = torch.zeros(b, la, A)
    act_t[0, 0, 0], act_t[0, 0, 1] = 0.5, 0.5
    act_t[1, 0, 3] = 1.0
    act_t[1, 1, 4] = 1.0
    act_t[2, 0, 5] = 1.0
    batch.action_targets = act_t
    batch.action_target_mask = torch.tensor([[True, True, False], [True, False, False], [True, False, False]])
    act_z = torch.zeros(b, la, A)
    act_z[0, 0, 0], act_z[0, 0, 2] = 1.0, 2.0
    act_z[0, 1, 9] = 50.0  # the skipped row: would dominate if counted
    act_z[1, 0, 3], act_z[1, 0, 4] = 4.0, -2.0
    act_z[1, 1, 4] = -30.0  # unmasked
    act_z[2, 0, 5] = -30.0  # negative row
    lse00 = log_sum_exp([1.0, 0.0, 2.0] + [0.0] * (A - 3))
    ce_a0 = -(0.5 * (1.0 - lse00) + 0.5 * (0.0 - lse00))
    ce_a1 = -(4.0 - log_sum_exp([4.0, -2.0] + [0.0] * (A - 2)))
    action_expected = (ce_a0 + ce_a1) / 2

    # regions: row 0 masks region 0 (target 0.25 / 0.75 on classes 1, 2) and region 3 (uniform target);
    # row 1 masks region 1 (one-hot class 0); row 2 masks region 0 (negative)
    reg_p = torch.zeros(b, lr, K)
    reg_p[0, 0, 1], reg_p[0, 0, 2] = 0.25, 0.75
    reg_p[0, 3] = 1.0 / K
    reg_p[1, 1, 0] = 1.0
    reg_p[2, 0, 0] = 1.0
    batch.region_targets = reg_p
    mask = torch.zeros(b, lr, dtype=torch.bool)
    mask[0, 0] = mask[0, 3] = mask[1, 1] = mask[2, 0] = True
    batch.region_target_mask = mask
    reg_z = torch.zeros(b, lr, K)
    reg_z[0, 0, 2] = 1.0
    reg_z[0, 3, 0] = 2.0
    reg_z[1, 1, 0], reg_z[1, 1, 1] = -1.0, 1.0
    reg_z[2, 0, 0] = -40.0  # negative row
    lse = log_sum_exp([1.0] + [0.0] * (K - 1))
    kl_0 = 0.25 * (math.log(0.25) - (0.0 - lse)) + 0.75 * (math.log(0.75) - (1.0 - lse))
    lse = log_sum_exp([2.0] + [0.0] * (K - 1))
    kl_1 = sum((1.0 / K) * (math.log(1.0 / K) - (z - lse)) for z in [2.0] + [0.0] * (K - 1))
    lse = log_sum_exp([-1.0, 1.0] + [0.0] * (K - 2))
    kl_2 = 1.0 * (math.log(1.0) - (-1.0 - lse))
    region_expected = (kl_0 + kl_1 + kl_2) / 3

    # matching: one logit per row, binary cross-entropy against the labels, mean over all rows
    match_z = torch.tensor([2.0, -0.5, 1.5])

    def bce(z: float, y: float) -> float:
        p = 1.0 / (1.0 + math.exp(-z))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    match_expected = (bce(2.0, 1.0) + bce(-0.5, 1.0) + bce(1.5, 0.0)) / 3

    model.mlm_head = Fixed(mlm)
    model.action_head = Fixed(act_z)
    model.region_head = Fixed(reg_z)
    model.match_head = Fixed(match_z)
    expected = {"mlm": mlm_expected, "action": action_expected, "region": region_expected, "match": match_expected}
    return model, batch, expected


def test_four_losses_equal_the_hand_computation():
    model, batch, expected = constructed_case()
    out = model(batch)
    for name, value in expected.items():
        assert out.losses[name].item() == pytest.approx(value, rel=1e-5, abs=1e-6), name
    assert out.loss.item() == pytest.approx(sum(expected.values()), rel=1e-5)
    # a few of the hand values, as numbers (guards the hand computation itself against drift)
    assert expected["match"] == pytest.approx((0.126928 + 0.974077 + 1.701413) / 3, abs=1e-5)


def test_loss_weights_weigh_the_hand_computed_terms():
    model, batch, expected = constructed_case()
    weights = {"mlm": 0.5, "action": 2.0, "region": 0.0, "match": 3.0}
    model.config = dataclasses.replace(model.config, loss_weights=weights)
    out = model(batch)
    assert out.loss.item() == pytest.approx(sum(weights[k] * v for k, v in expected.items()), rel=1e-5)


def test_all_negative_batch_has_zero_masked_losses_and_backpropagates():
    model, batch, expected = constructed_case()
    batch.match_labels = torch.zeros(3)
    out = model(batch)
    assert out.losses["mlm"].item() == 0.0 and out.losses["action"].item() == 0.0 and out.losses["region"].item() == 0.0
    z = [2.0, -0.5, 1.5]
    want = sum(-math.log(1 - 1 / (1 + math.exp(-v))) for v in z) / 3
    assert out.losses["match"].item() == pytest.approx(want, rel=1e-6)
    out.loss.backward()  # the zero terms stay in the graph


# ------------------------------------------------------------------------------ 2. the real heads


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _layer_norm(x: np.ndarray, weight, bias, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * weight + bias


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _prediction_head(x: np.ndarray, transform, decoder_w, decoder_b) -> np.ndarray:
    h = _gelu(x @ _np(transform.dense.weight).T + _np(transform.dense.bias))
    h = _layer_norm(h, _np(transform.LayerNorm.weight), _np(transform.LayerNorm.bias), transform.LayerNorm.eps)
    return h @ decoder_w.T + decoder_b


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_real_heads_recomputed_from_encoder_states_and_weights():
    config = tiny_config()
    torch.manual_seed(1)
    model = ActBertForPretraining(config).eval()
    # perturb every head parameter so that no zero-initialised bias hides a wiring mistake
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("actbert."):
                p.add_(0.05 * torch.randn_like(p))
    batch = random_batch(config, batch_size=4, clips=[3, 2, 2, 1], seed=5)
    batch.action_target_mask[0, 1] = True
    batch.action_targets[0, 1] = 0.0  # a masked action without a verb in a matched row: skipped
    with torch.no_grad():
        out = model(batch)
    enc = out.encoder
    text, action, region, pooled = _np(enc.text), _np(enc.action), _np(enc.region), _np(enc.pooled)
    matched = _np(batch.match_labels) > 0.5

    # MLM: BERT transform, decoder = the word table (tied), own bias; CE at the labels of matched rows
    has = _np(batch.mlm_labels) != -100
    words = _np(model.actbert.text_embeddings.word_embeddings.weight)
    mlm_logits = _prediction_head(text[has], model.mlm_head.transform, words, _np(model.mlm_head.bias))
    np.testing.assert_allclose(_np(out.mlm_logits), mlm_logits, atol=1e-4)
    lab = _np(batch.mlm_labels)[has].astype(int)
    ce = -_log_softmax(mlm_logits)[np.arange(len(lab)), lab]
    keep = np.broadcast_to(matched[:, None], has.shape)[has]
    assert out.losses["mlm"].item() == pytest.approx(ce[keep].mean(), rel=1e-4)

    # masked actions: soft-target CE at masked positions of matched rows that have a verb
    head = model.action_head
    act_logits = _prediction_head(action, head.transform, _np(head.decoder.weight), _np(head.decoder.bias))
    np.testing.assert_allclose(_np(out.action_logits), act_logits, atol=1e-4)
    t = _np(batch.action_targets)
    act_valid = _np(batch.action_target_mask).astype(bool) & matched[:, None] & (t.sum(-1) > 0)
    assert act_valid.sum() >= 1 and (_np(batch.action_target_mask).astype(bool) & matched[:, None]).sum() > act_valid.sum()
    ce_a = -(t * _log_softmax(act_logits)).sum(-1)
    assert out.losses["action"].item() == pytest.approx(ce_a[act_valid].mean(), rel=1e-4)

    # masked regions: KL(detector || softmax) at masked positions of matched rows (0 log 0 = 0)
    head = model.region_head
    reg_logits = _prediction_head(region, head.transform, _np(head.decoder.weight), _np(head.decoder.bias))
    np.testing.assert_allclose(_np(out.region_logits), reg_logits, atol=1e-4)
    p = _np(batch.region_targets)
    q_log = _log_softmax(reg_logits)
    kl = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - q_log), 0.0).sum(-1)
    valid = _np(batch.region_target_mask).astype(bool) & matched[:, None]
    assert out.losses["region"].item() == pytest.approx(kl[valid].mean(), rel=1e-4)

    # matching ("mul" fusion): w . (tanh pooler on [CLS] * tanh(A mean h_a + R mean h_r)) + b, BCE over all rows
    vp = model.match_head.video_pooler
    am, rm = _np(batch.action_mask)[..., None], _np(batch.region_mask)[..., None]
    mean_a = (action * am).sum(1) / am.sum(1)
    mean_r = (region * rm).sum(1) / rm.sum(1)
    pooled_t = np.tanh(text[:, 0] @ _np(model.actbert.pooler.dense.weight).T + _np(model.actbert.pooler.dense.bias))
    np.testing.assert_allclose(pooled, pooled_t, atol=1e-5)
    pooled_v = np.tanh(mean_a @ _np(vp.action.weight).T + _np(vp.action.bias) + mean_r @ _np(vp.region.weight).T + _np(vp.region.bias))
    clf = model.match_head.classifier
    z = (pooled_t * pooled_v) @ _np(clf.weight)[0] + _np(clf.bias)[0]
    np.testing.assert_allclose(_np(out.match_logits), z, atol=1e-5)
    y = _np(batch.match_labels)
    bce = -(y * np.log(1 / (1 + np.exp(-z))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-z))))
    assert out.losses["match"].item() == pytest.approx(bce.mean(), rel=1e-5)
    assert out.loss.item() == pytest.approx(ce[keep].mean() + ce_a[act_valid].mean() + kl[valid].mean() + bce.mean(), rel=1e-4)
