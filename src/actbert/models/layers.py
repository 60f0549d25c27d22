"""Shared transformer building blocks used by every model in the project.

Module names follow BERT's (``attention.self.query``, ``attention.output.LayerNorm``,
``intermediate.dense``, ``output.dense`` ...) so that Hugging Face BERT checkpoints and
PaddleVideo's ActBERT checkpoints map onto them by renaming only.

Shapes: ``B`` batch, ``L`` sequence length, ``H`` heads, ``d`` head width, ``D`` model width.
Masks passed in are "keep" masks: ``[B, L]`` with 1/True for real positions, 0/False for padding.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-12


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU, as in BERT."""
    return F.gelu(x)


ACTIVATIONS = {"gelu": gelu, "relu": F.relu, "tanh": torch.tanh}


def additive_attention_mask(keep: torch.Tensor, dtype: torch.dtype, masked_value: float | None = None) -> torch.Tensor:
    """``[B, L]`` keep mask -> ``[B, 1, 1, L]`` additive mask (0 keep, ``masked_value`` drop).

    ``masked_value`` defaults to the dtype's most negative finite value, so padded keys get exactly
    zero attention weight (a fully padded row still gives finite, uniform weights).
    """
    if masked_value is None:
        masked_value = torch.finfo(dtype).min
    keep = keep.to(dtype)
    return ((1.0 - keep) * masked_value)[:, None, None, :]


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[B, L, H*d]`` -> ``[B, H, L, d]``."""
    b, length, width = x.shape
    return x.view(b, length, num_heads, width // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[B, H, L, d]`` -> ``[B, L, H*d]``."""
    b, h, length, d = x.shape
    return x.transpose(1, 2).reshape(b, length, h * d)


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, additive_mask: torch.Tensor | None, dropout_p: float = 0.0
) -> torch.Tensor:
    """Scaled dot-product attention through PyTorch's fused kernel.

    q ``[B, H, Lq, d]``, k/v ``[B, H, Lk, d]``, additive_mask ``[B, 1, 1, Lk]`` (or broadcastable
    to ``[B, H, Lq, Lk]``) -> ``[B, H, Lq, d]``. Scale is 1/sqrt(d).
    """
    if additive_mask is not None:
        additive_mask = additive_mask.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=additive_mask, dropout_p=dropout_p)


class MultiHeadAttention(nn.Module):
    """Multi-head attention whose keys/values may be extended by extra, already-projected pairs.

    ``query`` projects the query stream, ``key``/``value`` the key-value stream. ``extra_keys`` /
    ``extra_values`` ``[B, Le, hidden]`` are *stacked* after the stream's own keys/values along the
    sequence axis, with their own keep mask ``extra_mask`` ``[B, Le]`` -- this is how the tangled
    transformer injects cross-modal context (ActBERT 3.2.2).

    ``masked_value`` is the additive score for padded keys (default: the dtype's most negative
    value; PaddleVideo's ActBERT uses -10000.0, see :func:`additive_attention_mask`).

    Returns the merged context ``[B, Lq, hidden]`` (before any output projection).
    """

    def __init__(
        self,
        query_dim: int,
        kv_dim: int,
        hidden: int,
        num_heads: int,
        dropout: float = 0.0,
        masked_value: float | None = None,
    ):
        super().__init__()
        self.masked_value = masked_value
        if hidden % num_heads:
            raise ValueError(f"attention width {hidden} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.hidden = hidden
        self.dropout = dropout
        self.query = nn.Linear(query_dim, hidden)
        self.key = nn.Linear(kv_dim, hidden)
        self.value = nn.Linear(kv_dim, hidden)

    def forward(
        self,
        query_states: torch.Tensor,
        key_value_states: torch.Tensor,
        key_mask: torch.Tensor,
        extra_keys: torch.Tensor | None = None,
        extra_values: torch.Tensor | None = None,
        extra_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        k = self.key(key_value_states)
        v = self.value(key_value_states)
        mask = key_mask
        if extra_keys is not None:
            if extra_values is None or extra_mask is None:
                raise ValueError("extra_keys needs extra_values and extra_mask")
            k = torch.cat([k, extra_keys], dim=1)
            v = torch.cat([v, extra_values], dim=1)
            mask = torch.cat([key_mask.to(extra_mask.dtype), extra_mask], dim=1)
        q = split_heads(self.query(query_states), self.num_heads)
        k = split_heads(k, self.num_heads)
        v = split_heads(v, self.num_heads)
        add_mask = additive_attention_mask(mask, q.dtype, self.masked_value)
        context = attend(q, k, v, add_mask, self.dropout if self.training else 0.0)
        return merge_heads(context)


class ResidualOutput(nn.Module):
    """``LayerNorm(residual + dropout(dense(x)))``: BERT's ``attention.output`` / ``output`` block."""

    def __init__(self, in_dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.dense = nn.Linear(in_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(x)))


class Intermediate(nn.Module):
    """``act(dense(x))``: the first half of BERT's feed-forward block."""

    def __init__(self, hidden: int, intermediate: int, activation: str = "gelu"):
        super().__init__()
        self.dense = nn.Linear(hidden, intermediate)
        self.activation = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(x))


class SelfAttentionBlock(nn.Module):
    """BERT ``attention`` module: ``self`` (multi-head) + ``output`` (dense, residual, LayerNorm)."""

    def __init__(
        self,
        hidden: int,
        num_heads: int,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        masked_value: float | None = None,
    ):
        super().__init__()
        self.self = MultiHeadAttention(hidden, hidden, hidden, num_heads, attention_dropout, masked_value)
        self.output = ResidualOutput(hidden, hidden, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, **extra_kv) -> torch.Tensor:
        return self.output(self.self(x, x, mask, **extra_kv), x)


class TransformerLayer(nn.Module):
    """A post-LayerNorm BERT layer: ``[B, L, D] -> [B, L, D]``.

    Parameter names match Hugging Face ``BertLayer`` (``attention.self.query`` ...,
    ``intermediate.dense``, ``output.dense``, ``output.LayerNorm``). Extra keys/values
    (see :class:`MultiHeadAttention`) may be passed through ``extra_kv``.
    """

    def __init__(
        self,
        hidden: int,
        num_heads: int,
        intermediate: int,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation: str = "gelu",
        masked_value: float | None = None,
    ):
        super().__init__()
        self.attention = SelfAttentionBlock(hidden, num_heads, dropout, attention_dropout, masked_value)
        self.intermediate = Intermediate(hidden, intermediate, activation)
        self.output = ResidualOutput(intermediate, hidden, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, **extra_kv) -> torch.Tensor:
        h = self.attention(x, mask, **extra_kv)
        return self.output(self.intermediate(h), h)


class PredictionTransform(nn.Module):
    """``LayerNorm(act(dense(x)))``: BERT's prediction-head transform."""

    def __init__(self, hidden: int, activation: str = "gelu"):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.activation = ACTIVATIONS[activation]
        self.LayerNorm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.activation(self.dense(x)))


def init_bert_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT initialisation: normal(0, std) for Linear/Embedding, zeros for biases, ones for LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, 0.0, std)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


__all__ = [
    "ACTIVATIONS",
    "Intermediate",
    "LAYER_NORM_EPS",
    "MultiHeadAttention",
    "PredictionTransform",
    "ResidualOutput",
    "SelfAttentionBlock",
    "TransformerLayer",
    "additive_attention_mask",
    "attend",
    "gelu",
    "init_bert_weights",
    "merge_heads",
    "split_heads",
]
