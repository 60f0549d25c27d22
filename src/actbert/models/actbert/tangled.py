"""The tangled transformer block (ActBERT 3.2.2): global actions guide cross-modal exchange.

One tangled block joins one layer of each stream -- words ``w``, actions ``a``, regions ``r`` --
into a single step. From the block inputs ``h_w [B, Lt, Dt]``, ``h_a [B, La, Dv]``,
``h_r [B, Lr, Dv]``::

    c_w = MultiHead(W1 h_a, W2 h_w, W3 h_w)      # action queries over words     [B, La, Dv]
    c_r = MultiHead(W4 h_a, W5 h_r, W6 h_r)      # action queries over regions   [B, La, Dv]
    (K_w, V_w) = (Wk_w c_w, Wv_w c_w)             # [B, La, Dv] each
    (K_r, V_r) = (Wk_r c_r, Wv_r c_r)             # [B, La, Dt] each

    h_w' = TransformerLayer_w(h_w, extra K/V = (K_r, V_r))   # text also sees region cues
    h_a' = TransformerLayer_a(h_a, extra K/V = (K_w, V_w))   # actions also see word cues
    h_r' = TransformerLayer_r(h_r, extra K/V = (K_w, V_w))   # regions also see word cues

"Extra K/V" means the pairs are *stacked* after the stream's own keys/values along the sequence
axis (:class:`~actbert.models.layers.MultiHeadAttention`), so each stream keeps attending to
itself and additionally to the cross-modal context; the stream layers are ordinary BERT layers,
which is why a BERT checkpoint still loads into tangled text layers.

``c_w`` and ``c_r`` are merged multi-head contexts without an output projection: the linear
layers that turn them into keys and values play that role. ``c_w``/``c_r`` are computed with the
visual stream's heads (``Dv / visual_heads`` per head) in the visual width.

Masking: padded words/regions are masked inside ``c_w``/``c_r``; the stacked ``c_w``/``c_r``
positions are indexed by action positions and inherit the ACTION keep mask. A row whose text
(or region) stream has no real position at all contributes no stacked keys -- its ``c_w``
(or ``c_r``) would be an average of padding -- so those stacked keys are masked for that row
too; this makes "no regions" exactly equal to running without the region stream.
"""

from __future__ import annotations

import torch
from torch import nn

from actbert.models.layers import MultiHeadAttention, TransformerLayer


class TangledBlock(nn.Module):
    """Cross-modal connector of one tangled layer; the three stream layers are passed in.

    Parameters: ``word_context`` (W1, W2, W3), ``region_context`` (W4, W5, W6), ``word_key`` /
    ``word_value`` (K/V from ``c_w`` for the a- and r-streams), ``region_key`` / ``region_value``
    (K/V from ``c_r`` for the w-stream).
    """

    def __init__(self, text_hidden: int, visual_hidden: int, visual_heads: int, attention_dropout: float = 0.0):
        super().__init__()
        self.word_context = MultiHeadAttention(visual_hidden, text_hidden, visual_hidden, visual_heads, attention_dropout)
        self.region_context = MultiHeadAttention(
            visual_hidden, visual_hidden, visual_hidden, visual_heads, attention_dropout
        )
        self.word_key = nn.Linear(visual_hidden, visual_hidden)
        self.word_value = nn.Linear(visual_hidden, visual_hidden)
        self.region_key = nn.Linear(visual_hidden, text_hidden)
        self.region_value = nn.Linear(visual_hidden, text_hidden)

    def forward(
        self,
        text: torch.Tensor,
        action: torch.Tensor,
        region: torch.Tensor | None,
        text_mask: torch.Tensor,
        action_mask: torch.Tensor,
        region_mask: torch.Tensor | None,
        text_layer: TransformerLayer,
        action_layer: TransformerLayer,
        region_layer: TransformerLayer | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """text ``[B, Lt, Dt]``, action ``[B, La, Dv]``, region ``[B, Lr, Dv]`` or None (no region
        stream) and their ``[B, L]`` bool keep masks -> the three updated streams (same shapes)."""
        c_w = self.word_context(action, text, text_mask)  # [B, La, Dv]
        word_keep = action_mask & text_mask.any(dim=1, keepdim=True)
        word_kv = dict(extra_keys=self.word_key(c_w), extra_values=self.word_value(c_w), extra_mask=word_keep)

        if region is not None:
            c_r = self.region_context(action, region, region_mask)  # [B, La, Dv]
            region_keep = action_mask & region_mask.any(dim=1, keepdim=True)
            text = text_layer(
                text, text_mask, extra_keys=self.region_key(c_r), extra_values=self.region_value(c_r), extra_mask=region_keep
            )
            region = region_layer(region, region_mask, **word_kv)
        else:
            text = text_layer(text, text_mask)
        action = action_layer(action, action_mask, **word_kv)
        return text, action, region


__all__ = ["TangledBlock"]
