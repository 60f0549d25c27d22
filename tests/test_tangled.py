"""The tangled block equals a naive re-implementation written from the paper's equations.

The reference below shares no code with the model: per-sample, per-head loops, explicit
concatenation of the stacked keys/values, explicit softmax with -inf masking, explicit BERT
layer arithmetic, all in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from actbert.models.layers import TransformerLayer
from actbert.models.actbert.tangled import TangledBlock

torch.set_num_threads(1)

DT, DV, HT, HV = 24, 16, 3, 2  # text width/heads, visual width/heads (different on purpose)


def linear(x, module):
    return x @ module.weight.double().T + module.bias.double()


def naive_attention(queries, keys, values, keep, heads):
    """queries [Lq, D], keys/values [Lk, D], keep [Lk] bool -> [Lq, D] (one sample)."""
    width = queries.shape[1] // heads
    outputs = []
    for h in range(heads):
        cols = slice(h * width, (h + 1) * width)
        if not bool(keep.any()):  # nothing to attend to; such rows are masked downstream
            outputs.append(torch.zeros(queries.shape[0], width, dtype=queries.dtype))
            continue
        scores = queries[:, cols] @ keys[:, cols].T / math.sqrt(width)
        scores = scores.masked_fill(~keep[None, :], float("-inf"))
        weights = torch.exp(scores - scores.max(dim=1, keepdim=True).values)
        weights = weights / weights.sum(dim=1, keepdim=True)
        outputs.append(weights @ values[:, cols])
    return torch.cat(outputs, dim=1)


def naive_layer_norm(x, module):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + module.eps) * module.weight.double() + module.bias.double()


def naive_bert_layer(x, keep, layer: TransformerLayer, heads, extra_keys=None, extra_values=None, extra_keep=None):
    """One post-LN BERT layer whose self-attention keys/values get the stacked extra pairs."""
    attn = layer.attention.self
    q, k, v = linear(x, attn.query), linear(x, attn.key), linear(x, attn.value)
    if extra_keys is not None:
        k = torch.cat([k, extra_keys], dim=0)
        v = torch.cat([v, extra_values], dim=0)
        keep = torch.cat([keep, extra_keep], dim=0)
    context = naive_attention(q, k, v, keep, heads)
    h = naive_layer_norm(x + linear(context, layer.attention.output.dense), layer.attention.output.LayerNorm)
    inner = F.gelu(linear(h, layer.intermediate.dense))
    return naive_layer_norm(h + linear(inner, layer.output.dense), layer.output.LayerNorm)


def naive_tangled(block, layers, text, action, region, text_keep, action_keep, region_keep):
    text_layer, action_layer, region_layer = layers
    out_t, out_a, out_r = [], [], []
    for b in range(text.shape[0]):
        h_w, h_a, h_r = text[b].double(), action[b].double(), region[b].double()
        wc, rc = block.word_context, block.region_context
        c_w = naive_attention(linear(h_a, wc.query), linear(h_w, wc.key), linear(h_w, wc.value), text_keep[b], HV)
        c_r = naive_attention(linear(h_a, rc.query), linear(h_r, rc.key), linear(h_r, rc.value), region_keep[b], HV)
        # stacked pairs are indexed by action positions; a row with no words / no regions adds none
        w_keep = action_keep[b] & text_keep[b].any()
        r_keep = action_keep[b] & region_keep[b].any()
        k_w, v_w = linear(c_w, block.word_key), linear(c_w, block.word_value)
        k_r, v_r = linear(c_r, block.region_key), linear(c_r, block.region_value)
        out_t.append(naive_bert_layer(h_w, text_keep[b], text_layer, HT, k_r, v_r, r_keep))
        out_a.append(naive_bert_layer(h_a, action_keep[b], action_layer, HV, k_w, v_w, w_keep))
        out_r.append(naive_bert_layer(h_r, region_keep[b], region_layer, HV, k_w, v_w, w_keep))
    return torch.stack(out_t), torch.stack(out_a), torch.stack(out_r)


def keep_mask(lengths, total):
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


@pytest.fixture()
def block_and_layers():
    torch.manual_seed(0)
    block = TangledBlock(DT, DV, HV).eval()
    layers = (TransformerLayer(DT, HT, 40).eval(), TransformerLayer(DV, HV, 32).eval(), TransformerLayer(DV, HV, 32).eval())
    # non-trivial LayerNorm affine parameters so the reference checks them too
    for module in [*layers]:
        for name, p in module.named_parameters():
            if "LayerNorm" in name:
                p.data.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
    return block, layers


def test_tangled_block_matches_naive_reference_with_padding(block_and_layers):
    block, layers = block_and_layers
    torch.manual_seed(1)
    b, lt, la, lr = 3, 7, 4, 6
    text, action, region = torch.randn(b, lt, DT), torch.randn(b, la, DV), torch.randn(b, lr, DV)
    text_keep = keep_mask([7, 5, 3], lt)
    action_keep = keep_mask([4, 2, 3], la)
    region_keep = keep_mask([6, 4, 0], lr)  # last row: no regions at all
    with torch.no_grad():
        got = block(text, action, region, text_keep, action_keep, region_keep, *layers)
        want = naive_tangled(block, layers, text, action, region, text_keep, action_keep, region_keep)
    for name, g, w in zip(("text", "action", "region"), got, want):
        assert torch.isfinite(g).all(), name
        torch.testing.assert_close(g.double(), w, atol=1e-5, rtol=1e-5, msg=f"{name} stream differs from the reference")


def test_stacked_context_changes_every_stream(block_and_layers):
    """The cross-modal pairs are really used: each stream's output depends on the other modalities."""
    block, layers = block_and_layers
    torch.manual_seed(2)
    text, action, region = torch.randn(2, 5, DT), torch.randn(2, 3, DV), torch.randn(2, 4, DV)
    masks = (torch.ones(2, 5, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 4, dtype=torch.bool))
    with torch.no_grad():
        base = block(text, action, region, *masks, *layers)
        other_region = block(text, action, torch.randn(2, 4, DV), *masks, *layers)
        other_text = block(torch.randn(2, 5, DT), action, region, *masks, *layers)
    assert (base[0] - other_region[0]).abs().max() > 1e-3  # regions reach words through c_r
    assert (base[1] - other_text[1]).abs().max() > 1e-3  # words reach actions through c_w
    assert (base[2] - other_text[2]).abs().max() > 1e-3  # words reach regions through c_w
    # ... and a plain layer ignores them
    plain_text = layers[0](text, masks[0])
    assert (base[0] - plain_text).abs().max() > 1e-3


def test_no_region_stream_equals_fully_padded_regions(block_and_layers):
    block, layers = block_and_layers
    torch.manual_seed(3)
    text, action, region = torch.randn(2, 5, DT), torch.randn(2, 3, DV), torch.randn(2, 4, DV)
    text_keep, action_keep = keep_mask([5, 3], 5), keep_mask([3, 2], 3)
    with torch.no_grad():
        padded = block(text, action, region, text_keep, action_keep, torch.zeros(2, 4, dtype=torch.bool), *layers)
        absent = block(text, action, None, text_keep, action_keep, None, layers[0], layers[1], None)
    assert absent[2] is None
    torch.testing.assert_close(padded[0], absent[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(padded[1], absent[1], atol=1e-6, rtol=0)
    assert torch.isfinite(padded[2]).all()
