"""HERO's three encoders on the shared transformer layers: Cross-modal, Temporal, query.

Module and parameter names are upstream's (``model/encoder.py``, ``model/embed.py``), so an
upstream ``state_dict`` loads by name. Two LayerNorm epsilons coexist, as upstream: **1e-12** in
every transformer layer (``RobertaModelConfig``'s default, :data:`~actbert.models.layers.LAYER_NORM_EPS`)
and **1e-5** in every embedding LayerNorm, projection and head (:data:`EMBED_EPS`). Attention masks
are additive ``(1 - m) * -10000`` (:data:`MASKED_VALUE`), as upstream.

Every ``forward`` takes an optional ``capture`` dict that receives named intermediate
activations (the names of the reference fixture's ``intermediates.npz``), for parity checks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from actbert.models.hero.configuration import HeroConfig
from actbert.models.layers import SelfAttentionBlock, TransformerLayer, additive_attention_mask

EMBED_EPS = 1e-5  # embeddings, frame/query projections, heads (upstream FusedLayerNorm(eps=1e-5))
MASKED_VALUE = -10000.0  # upstream's additive attention mask and mask_logits value


def mask_logits(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x * m + (1 - m) * -1e4`` (upstream ``mask_logits``; padded entries hold exactly -1e4)."""
    mask = mask.to(x.dtype)
    return x * mask + (1.0 - mask) * MASKED_VALUE


def _put(capture: dict | None, name: str, value: torch.Tensor) -> None:
    if capture is not None:
        capture[name] = value


class LinearLayer(nn.Module):
    """``relu(Linear(Dropout(LayerNorm_1e-5(x))))``: upstream ``LinearLayer`` (``net.0`` dropout, ``net.1`` linear)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float):
        super().__init__()
        self.LayerNorm = nn.LayerNorm(in_dim, eps=EMBED_EPS)
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.net(self.LayerNorm(x)))


class Pooler(nn.Module):
    """``tanh(dense(x[:, 0]))`` (BERT's pooler; HERO's pretraining losses never use it)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x[:, 0]))


class Encoder(nn.Module):
    """A stack of post-LN BERT layers under upstream's name ``encoder.layer.N``."""

    def __init__(self, hidden: int, heads: int, intermediate: int, layers: int, dropout: float, attention_dropout: float):
        super().__init__()
        self.layer = nn.ModuleList(
            TransformerLayer(hidden, heads, intermediate, dropout, attention_dropout, "gelu", MASKED_VALUE) for _ in range(layers)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor, capture: dict | None = None, prefix: str = "") -> torch.Tensor:
        for i, layer in enumerate(self.layer):
            x = layer(x, mask)
            _put(capture, f"{prefix}layer_{i}", x)
        return x


class SubEmbeddings(nn.Module):
    """Token embedding: ``LN(word[id] + pos[p] + type[row])``; upstream ``SubEmbeddings``.

    Positions are the batch's ``pos_ids`` (from 0, not RoBERTa's padding_idx+1 offset); the token
    type is always one row (``config.token_type_row``, upstream 1). ``padding_idx`` only blocks
    the PAD row's gradient: the lookup returns the row as stored.
    """

    def __init__(self, config: HeroConfig):
        super().__init__()
        h = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, h, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, h)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, h)
        self.LayerNorm = nn.LayerNorm(h, eps=EMBED_EPS)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.token_type_row = config.token_type_row

    def type_embedding(self) -> torch.Tensor:
        """``[1, 1, D]``: the one token-type row every text and frame embedding adds."""
        return self.token_type_embeddings.weight[self.token_type_row].view(1, 1, -1)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids) + self.type_embedding()
        return self.dropout(self.LayerNorm(x))


class ImageEmbeddings(nn.Module):
    """Frame embedding in the Cross-modal Transformer; upstream ``ImageEmbeddings``.

    ``LN(img_linear(img_LayerNorm(feat + mask_embedding[m])) + pos[k] + type)``: the first
    LayerNorm is over the raw feature; ``k`` is the frame's index within its subtitle. With an MFM
    mask, ``mask_embedding`` row 1 is added to masked frames and row 0 to every other one (row 0 is
    not forced to zero; ``padding_idx=0`` only blocks its gradient).
    """

    def __init__(self, config: HeroConfig):
        super().__init__()
        h, dv = config.hidden_size, config.vfeat_dim
        self.img_linear = nn.Linear(dv, h)
        self.img_LayerNorm = nn.LayerNorm(dv, eps=EMBED_EPS)
        self.position_embeddings = nn.Embedding(config.max_frm_seq_len, h)
        self.mask_embedding = nn.Embedding(2, dv, padding_idx=0)
        self.LayerNorm = nn.LayerNorm(h, eps=EMBED_EPS)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, feats: torch.Tensor, pos_ids: torch.Tensor, type_embedding: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        if masks is not None:
            feats = feats + self.mask_embedding(masks.long())
        x = self.img_linear(self.img_LayerNorm(feats)) + self.position_embeddings(pos_ids) + type_embedding
        return self.dropout(self.LayerNorm(x))


class LMHead(nn.Module):
    """``LN_1e-5(gelu(dense(x))) @ E^T + bias`` with the decoder tied to the word embeddings."""

    def __init__(self, config: HeroConfig, word_embeddings: nn.Parameter):
        super().__init__()
        h = config.hidden_size
        self.dense = nn.Linear(h, h)
        self.LayerNorm = nn.LayerNorm(h, eps=EMBED_EPS)
        self.decoder = nn.Linear(h, word_embeddings.shape[0], bias=False)
        self.decoder.weight = word_embeddings
        self.bias = nn.Parameter(torch.zeros(word_embeddings.shape[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.LayerNorm(F.gelu(self.dense(x)))) + self.bias


class CrossModalTransformer(nn.Module):
    """Each subtitle with its frames -> contextual states (upstream ``CrossModalTrm``).

    ``forward`` takes one row per subtitle: frames ``[S, K, Dv]`` and tokens ``[S, Ls]``, gathered
    to the compact layout ``[S, Lf, D]`` by ``gather_index``; without frames it encodes text only
    (the VSM query path). Returns the last layer ``[S, L, D]``.
    """

    def __init__(self, config: HeroConfig):
        super().__init__()
        h = config.hidden_size
        self.embeddings = SubEmbeddings(config)
        self.img_embeddings = ImageEmbeddings(config)
        self.encoder = Encoder(h, config.cross_heads, config.cross_intermediate_size, config.cross_layers,
                               config.hidden_dropout, config.attention_dropout)
        self.pooler = Pooler(h)
        self.lm_head = LMHead(config, self.embeddings.word_embeddings.weight)

    def embed(
        self,
        input_ids: torch.Tensor,
        pos_ids: torch.Tensor,
        v_feats: torch.Tensor | None = None,
        v_pos_ids: torch.Tensor | None = None,
        gather_index: torch.Tensor | None = None,
        v_masks: torch.Tensor | None = None,
        capture: dict | None = None,
        prefix: str = "",
    ) -> torch.Tensor:
        txt = self.embeddings(input_ids, pos_ids)
        _put(capture, f"{prefix}txt_emb", txt)
        if v_feats is None:
            _put(capture, f"{prefix}embedding_output", txt)
            return txt
        img = self.img_embeddings(v_feats, v_pos_ids, self.embeddings.type_embedding(), v_masks)
        _put(capture, f"{prefix}img_emb", img)
        index = gather_index.unsqueeze(-1).expand(-1, -1, txt.shape[-1])
        out = torch.gather(torch.cat([img, txt], dim=1), 1, index)
        _put(capture, f"{prefix}embedding_output", out)
        return out

    def forward(
        self,
        input_ids: torch.Tensor,
        pos_ids: torch.Tensor,
        attn_masks: torch.Tensor,
        v_feats: torch.Tensor | None = None,
        v_pos_ids: torch.Tensor | None = None,
        gather_index: torch.Tensor | None = None,
        v_masks: torch.Tensor | None = None,
        capture: dict | None = None,
        prefix: str = "cross_",
    ) -> torch.Tensor:
        x = self.embed(input_ids, pos_ids, v_feats, v_pos_ids, gather_index, v_masks, capture, prefix)
        out = self.encoder(x, attn_masks, capture, prefix)
        _put(capture, f"{prefix}sequence_output", out)
        return out


class FrameEmbeddings(nn.Module):
    """``LN_1e-5(x + pos[0..L-1])``: the Temporal Transformer's input (no type, no projection),
    and the query encoder's position step (upstream ``FrameEmbeddings`` / ``QueryFeatEmbeddings``)."""

    def __init__(self, num_positions: int, hidden: int, dropout: float):
        super().__init__()
        self.position_embeddings = nn.Embedding(num_positions, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=EMBED_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(x.shape[1], device=x.device)
        return self.dropout(self.LayerNorm(x + self.position_embeddings(pos)[None]))


class TemporalTransformer(nn.Module):
    """``[B, Nv, D]`` frame states over the whole video -> ``[B, Nv, D]`` (upstream ``TemporalTrm``)."""

    def __init__(self, config: HeroConfig):
        super().__init__()
        h = config.hidden_size
        self.embeddings = FrameEmbeddings(config.max_frames, h, config.hidden_dropout)
        self.encoder = Encoder(h, config.temporal_heads, config.temporal_intermediate_size, config.temporal_layers,
                               config.hidden_dropout, config.attention_dropout)
        self.pooler = Pooler(h)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, capture: dict | None = None, prefix: str = "temporal_") -> torch.Tensor:
        emb = self.embeddings(x)
        _put(capture, f"{prefix}emb", emb)
        out = self.encoder(emb, mask, capture, prefix)
        _put(capture, f"{prefix}output", out)
        return out


class QueryEncoder(nn.Module):
    """A query's cross-modal text states ``[Q, Lq, D]`` -> one vector ``[Q, D]`` (upstream ``QueryFeatEncoder``).

    ``relu(Linear(LN(x)))`` -> ``LN(x + pos)`` -> one BERT attention block (no FFN) -> a learned
    scalar score per token (``modular_vector_mapping``), masked, softmax over tokens -> weighted sum.
    """

    def __init__(self, config: HeroConfig):
        super().__init__()
        h = config.hidden_size
        self.query_input_proj = LinearLayer(h, h, config.hidden_dropout)
        self.query_pos_embed = FrameEmbeddings(config.query_max_positions, h, config.hidden_dropout)
        self.query_self_attention = SelfAttentionBlock(h, config.query_heads, config.hidden_dropout, config.attention_dropout, MASKED_VALUE)
        self.modular_vector_mapping = nn.Linear(h, 1, bias=False)

    def forward(self, states: torch.Tensor, mask: torch.Tensor, capture: dict | None = None, prefix: str = "query_") -> torch.Tensor:
        x = self.query_input_proj(states)
        _put(capture, f"{prefix}input_proj", x)
        x = self.query_pos_embed(x)
        _put(capture, f"{prefix}pos_embed", x)
        x = self.query_self_attention(x, mask)
        _put(capture, f"{prefix}self_attention", x)
        scores = mask_logits(self.modular_vector_mapping(x), mask.unsqueeze(2))  # [Q, Lq, 1]
        weights = torch.softmax(scores, dim=1)
        return torch.einsum("qlm,qld->qmd", weights, x)[:, 0]


__all__ = [
    "CrossModalTransformer",
    "EMBED_EPS",
    "LinearLayer",
    "MASKED_VALUE",
    "QueryEncoder",
    "TemporalTransformer",
    "additive_attention_mask",
    "mask_logits",
]
