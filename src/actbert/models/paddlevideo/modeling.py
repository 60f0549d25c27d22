"""PaddleVideo-compatible ActBERT (``architecture: "paddlevideo"``).

This module reproduces the forward pass and the pretraining loss of PaddleVideo's ActBERT
(``BertForMultiModalPreTraining`` + ``ActBertLoss``) so that its released weights, converted by
:mod:`actbert.models.paddlevideo.convert`, give the same numbers in PyTorch. It is a *separate*
model from the paper's tangled transformer in :mod:`actbert.models.actbert`; where the two
differ, this one follows PaddleVideo:

* Cross-modal context is *added* to the text / region keys and values (after a nearest-neighbour
  resize of the action-length context to the target length), not stacked as extra keys.
  The added terms are never masked, so padded action slots leak into text and regions.
* ``value_at`` makes both value injections; ``value_av`` exists (its weights load) but is unused.
* Padded keys get an additive score of -10000 (not -inf), pooling is Linear + ReLU on position 0
  of each stream, the matching head sees ``pooled_t * pooled_v + pooled_a`` ("mul" fusion) and is
  a 2-way classifier where class 0 means "matched".
* Text id 0 (padding) embeds to a zero vector (Paddle's ``padding_idx`` semantics); row 0 of the
  table is still used by the tied LM decoder.
* Cross-entropy losses divide by *all* label positions, ignored ones included (Paddle's
  behaviour for a negative ``ignore_index``).

Parameter names follow Paddle's module tree (``bert.encoder.c_layer.0.ent_attention.query1``...),
so the checkpoint mapping is nearly the identity (see ``convert.PADDLE_RENAMES``).

Shapes: ``B`` batch, ``Lt`` text length, ``Lv`` region slots (global slot included), ``La`` action
slots, ``Dt/Dv/Da`` stream widths, ``Db`` the connection ("bi") width.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from actbert.models.layers import (
    LAYER_NORM_EPS,
    Intermediate,
    PredictionTransform,
    ResidualOutput,
    TransformerLayer,
    additive_attention_mask,
    attend,
    init_bert_weights,
    merge_heads,
    split_heads,
)
from actbert.models.heads import PredictionHead
from actbert.models.interface import PretrainingOutput, VideoTextModel
from actbert.models.paddlevideo.configuration import (
    MATCHED_CLASS,
    PADDING_ID,
    PADDLE_MASKED_VALUE,
    PaddleVideoActBertConfig,
    PaddleVideoConfigError,
    PaddleVideoInputError,
)
from actbert.models.paddlevideo.processing import PaddleVideoBatch, PaddleVideoProcessor, matched_probability

# --------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------


class TextEmbeddings(nn.Module):
    """``LayerNorm(word + position + token_type)``: ``[B, Lt] -> [B, Lt, Dt]``.

    Id 0 embeds to zeros whatever row 0 holds (Paddle's ``padding_idx``); row 0 then gets
    gradient only through the tied LM decoder.
    """

    def __init__(self, config: PaddleVideoActBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        words = self.word_embeddings(input_ids).masked_fill((input_ids == PADDING_ID)[..., None], 0.0)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        embeddings = words + self.position_embeddings(positions)[None] + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(embeddings))


class RegionEmbeddings(nn.Module):
    """``LayerNorm(Linear(feature) + Linear(location))``: ``[B, Lv, Fv], [B, Lv, 5] -> [B, Lv, Dv]``."""

    def __init__(self, config: PaddleVideoActBertConfig):
        super().__init__()
        self.image_embeddings = nn.Linear(config.v_feature_size, config.v_hidden_size)
        self.image_location_embeddings = nn.Linear(5, config.v_hidden_size)
        self.LayerNorm = nn.LayerNorm(config.v_hidden_size, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(config.v_hidden_dropout_prob)

    def forward(self, features: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.LayerNorm(self.image_embeddings(features) + self.image_location_embeddings(locations)))


class ActionEmbeddings(nn.Module):
    """``LayerNorm(Linear(feature))``: ``[B, La, Fa] -> [B, La, Da]``."""

    def __init__(self, config: PaddleVideoActBertConfig):
        super().__init__()
        self.action_embeddings = nn.Linear(config.a_feature_size, config.a_hidden_size)
        self.LayerNorm = nn.LayerNorm(config.a_hidden_size, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(config.a_hidden_dropout_prob)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.LayerNorm(self.action_embeddings(features)))


# --------------------------------------------------------------------------------------------
# Tangled ("connection") layer
# --------------------------------------------------------------------------------------------


def nearest_resize(x: torch.Tensor, length: int) -> torch.Tensor:
    """Resize along the sequence axis by nearest neighbour: ``[B, Ls, D] -> [B, length, D]``.

    Target position ``i`` takes source position ``floor(i * Ls / length)`` (computed in float, the
    rule of both Paddle's default ``F.interpolate`` and PyTorch's ``mode="nearest"``).
    """
    return F.interpolate(x.transpose(1, 2), size=length, mode="nearest").transpose(1, 2)


class TangledAttention(nn.Module):
    """PaddleVideo's ``BertEntAttention``: three streams, action context injected by addition.

    Stream suffixes follow Paddle: ``1`` vision, ``2`` text, ``3`` action. Inputs
    ``vision [B, Lv, Dv]``, ``text [B, Lt, Dt]``, ``action [B, La, Da]`` with keep masks
    ``[B, L*]``; returns the contexts ``(vision [B, Lv, Db], text [B, Lt, Db], action [B, La, Db])``.
    """

    def __init__(self, config: PaddleVideoActBertConfig):
        super().__init__()
        bi = config.bi_hidden_size
        self.num_heads = config.bi_num_attention_heads
        self.query1 = nn.Linear(config.v_hidden_size, bi)
        self.key1 = nn.Linear(config.v_hidden_size, bi)
        self.value1 = nn.Linear(config.v_hidden_size, bi)
        self.query2 = nn.Linear(config.hidden_size, bi)
        self.key2 = nn.Linear(config.hidden_size, bi)
        self.value2 = nn.Linear(config.hidden_size, bi)
        self.query3 = nn.Linear(config.a_hidden_size, bi)
        self.key3 = nn.Linear(config.a_hidden_size, bi)
        self.value3 = nn.Linear(config.a_hidden_size, bi)
        self.key_at = nn.Linear(bi, bi)
        self.value_at = nn.Linear(bi, bi)
        self.key_av = nn.Linear(bi, bi)
        # Loaded from checkpoints but never used: upstream injects value_at(...) twice.
        self.value_av = nn.Linear(bi, bi)
        self.dropout_v = config.v_attention_probs_dropout_prob
        self.dropout_t = config.attention_probs_dropout_prob
        self.dropout_a = config.a_attention_probs_dropout_prob
        # Upstream swaps these two probabilities between the action-vision / action-text attentions.
        self.dropout_av = config.at_attention_probs_dropout_prob
        self.dropout_at = config.av_attention_probs_dropout_prob

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return split_heads(x, self.num_heads)

    def _attend(self, q, k, v, mask: torch.Tensor, dropout: float) -> torch.Tensor:
        return attend(q, k, v, mask, dropout if self.training else 0.0)

    def forward(
        self,
        vision: torch.Tensor,
        vision_mask: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        action: torch.Tensor,
        action_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        add_v = additive_attention_mask(vision_mask, vision.dtype, PADDLE_MASKED_VALUE)
        add_t = additive_attention_mask(text_mask, text.dtype, PADDLE_MASKED_VALUE)
        add_a = additive_attention_mask(action_mask, action.dtype, PADDLE_MASKED_VALUE)
        q_v, k_v, v_v = self._heads(self.query1(vision)), self._heads(self.key1(vision)), self._heads(self.value1(vision))
        q_t, k_t, v_t = self._heads(self.query2(text)), self._heads(self.key2(text)), self._heads(self.value2(text))
        q_a, k_a, v_a = self._heads(self.query3(action)), self._heads(self.key3(action)), self._heads(self.value3(action))

        # Action queries read the regions and the text: [B, La, Db] each.
        context_av = merge_heads(self._attend(q_a, k_v, v_v, add_v, self.dropout_av))
        context_at = merge_heads(self._attend(q_a, k_t, v_t, add_t, self.dropout_at))

        # Inject the action-length contexts into the other streams' keys/values by addition,
        # resized to each stream's length. No mask is applied to these terms (upstream behaviour).
        text_len, vision_len = text.shape[1], vision.shape[1]
        k_t = k_t + self._heads(nearest_resize(self.key_av(context_av), text_len))
        k_v = k_v + self._heads(nearest_resize(self.key_at(context_at), vision_len))
        v_t = v_t + self._heads(nearest_resize(self.value_at(context_av), text_len))
        v_v = v_v + self._heads(nearest_resize(self.value_at(context_at), vision_len))

        context_v = merge_heads(self._attend(q_v, k_v, v_v, add_v, self.dropout_v))
        context_t = merge_heads(self._attend(q_t, k_t, v_t, add_t, self.dropout_t))
        context_a = merge_heads(self._attend(q_a, k_a, v_a, add_a, self.dropout_a))
        return context_v, context_t, context_a


class ConnectionLayer(nn.Module):
    """PaddleVideo's ``BertConnectionLayer``: tangled attention, then per-stream output + FFN.

    ``(vision [B, Lv, Dv], text [B, Lt, Dt], action [B, La, Da])`` -> same shapes.
    """

    def __init__(self, config: PaddleVideoActBertConfig):
        super().__init__()
        c = config
        self.ent_attention = TangledAttention(c)
        # Upstream: ent_output.{dense,LayerNorm}{1,2,3}; the action block uses the text width.
        self.ent_output1 = ResidualOutput(c.bi_hidden_size, c.v_hidden_size, c.v_hidden_dropout_prob)
        self.ent_output2 = ResidualOutput(c.bi_hidden_size, c.hidden_size, c.hidden_dropout_prob)
        self.ent_output3 = ResidualOutput(c.bi_hidden_size, c.hidden_size, c.hidden_dropout_prob)
        self.v_intermediate = Intermediate(c.v_hidden_size, c.v_intermediate_size, c.v_hidden_act)
        self.v_output = ResidualOutput(c.v_intermediate_size, c.v_hidden_size, c.v_hidden_dropout_prob)
        self.t_intermediate = Intermediate(c.hidden_size, c.intermediate_size, c.hidden_act)
        self.t_output = ResidualOutput(c.intermediate_size, c.hidden_size, c.hidden_dropout_prob)
        self.a_intermediate = Intermediate(c.a_hidden_size, c.a_intermediate_size, c.a_hidden_act)
        self.a_output = ResidualOutput(c.a_intermediate_size, c.a_hidden_size, c.a_hidden_dropout_prob)

    def forward(self, vision, vision_mask, text, text_mask, action, action_mask, capture=None, prefix=""):
        ctx_v, ctx_t, ctx_a = self.ent_attention(vision, vision_mask, text, text_mask, action, action_mask)
        if capture is not None:
            capture.update({f"{prefix}ent_context_v": ctx_v, f"{prefix}ent_context_t": ctx_t, f"{prefix}ent_context_a": ctx_a})
        h_v = self.ent_output1(ctx_v, vision)
        h_t = self.ent_output2(ctx_t, text)
        h_a = self.ent_output3(ctx_a, action)
        out_v = self.v_output(self.v_intermediate(h_v), h_v)
        out_t = self.t_output(self.t_intermediate(h_t), h_t)
        out_a = self.a_output(self.a_intermediate(h_a), h_a)
        if capture is not None:
            capture.update({f"{prefix}out_v": out_v, f"{prefix}out_t": out_t, f"{prefix}out_a": out_a})
        return out_v, out_t, out_a


class Encoder(nn.Module):
    """Three single-stream BERT stacks (``layer``, ``v_layer``, ``a_layer``) and ``c_layer``.

    Schedule: for connection layer k, each stream first runs its own layers from where it
    stopped up to (excluding) its k-th entry of ``*_ent_attention_id``; then ``c_layer[k]`` runs
    on all three; after the last one each stream runs its remaining layers. Text layers below
    ``fixed_t_layer`` (vision: ``fixed_v_layer``) run without gradient, as upstream.
    """

    def __init__(self, config: PaddleVideoActBertConfig):
        super().__init__()
        c = config
        self.config = config

        def stack(n, width, heads, inter, dropout, attn_dropout, act):
            return nn.ModuleList(
                TransformerLayer(width, heads, inter, dropout, attn_dropout, act, masked_value=PADDLE_MASKED_VALUE)
                for _ in range(n)
            )

        self.layer = stack(
            c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size,
            c.hidden_dropout_prob, c.attention_probs_dropout_prob, c.hidden_act,
        )
        self.v_layer = stack(
            c.v_num_hidden_layers, c.v_hidden_size, c.v_num_attention_heads, c.v_intermediate_size,
            c.v_hidden_dropout_prob, c.v_attention_probs_dropout_prob, c.v_hidden_act,
        )
        self.a_layer = stack(
            c.a_num_hidden_layers, c.a_hidden_size, c.a_num_attention_heads, c.a_intermediate_size,
            c.a_hidden_dropout_prob, c.a_attention_probs_dropout_prob, c.a_hidden_act,
        )
        self.c_layer = nn.ModuleList(ConnectionLayer(c) for _ in range(c.num_connection_layers))

    @staticmethod
    def _run(layers, name, x, mask, start, end, fixed, capture):
        """Run ``layers[start:end]``; those below ``fixed`` without gradient."""
        for idx in range(start, end):
            if idx < fixed:
                with torch.no_grad():
                    x = layers[idx](x, mask)
            else:
                x = layers[idx](x, mask)
            if capture is not None:
                capture[f"{name}_layer_{idx}"] = x
        return x

    def forward(self, text, vision, action, text_mask, vision_mask, action_mask, capture=None):
        c = self.config
        t_start = v_start = a_start = 0
        schedule = zip(c.t_ent_attention_id, c.v_ent_attention_id, c.a_ent_attention_id)
        for k, (t_end, v_end, a_end) in enumerate(schedule):
            vision = self._run(self.v_layer, "v", vision, vision_mask, v_start, v_end, c.fixed_v_layer, capture)
            action = self._run(self.a_layer, "a", action, action_mask, a_start, a_end, 0, capture)
            text = self._run(self.layer, "t", text, text_mask, t_start, t_end, c.fixed_t_layer, capture)
            vision, text, action = self.c_layer[k](
                vision, vision_mask, text, text_mask, action, action_mask, capture, prefix=f"c{k}_"
            )
            t_start, v_start, a_start = t_end, v_end, a_end
        vision = self._run(self.v_layer, "v", vision, vision_mask, v_start, len(self.v_layer), c.fixed_v_layer, capture)
        action = self._run(self.a_layer, "a", action, action_mask, a_start, len(self.a_layer), 0, capture)
        text = self._run(self.layer, "t", text, text_mask, t_start, len(self.layer), c.fixed_t_layer, capture)
        return text, vision, action


class Pooler(nn.Module):
    """``relu(dense(x[:, 0]))``: ``[B, L, D] -> [B, Db]`` (ReLU, not BERT's tanh)."""

    def __init__(self, width: int, bi_width: int):
        super().__init__()
        self.dense = nn.Linear(width, bi_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.dense(x[:, 0]))


class PaddleVideoEncoderOutput(NamedTuple):
    sequence_output_t: torch.Tensor  # [B, Lt, Dt]
    sequence_output_v: torch.Tensor  # [B, Lv, Dv]
    sequence_output_a: torch.Tensor  # [B, La, Da]
    pooled_output_t: torch.Tensor  # [B, Db]
    pooled_output_v: torch.Tensor  # [B, Db]
    pooled_output_a: torch.Tensor  # [B, Db]


class PaddleVideoActBertModel(nn.Module):
    """PaddleVideo's ``BertModel``: embeddings, encoder, poolers (module name ``bert``)."""

    def __init__(self, config: PaddleVideoActBertConfig):
        super().__init__()
        self.embeddings = TextEmbeddings(config)
        self.v_embeddings = RegionEmbeddings(config)
        self.a_embeddings = ActionEmbeddings(config)
        self.encoder = Encoder(config)
        self.t_pooler = Pooler(config.hidden_size, config.bi_hidden_size)
        self.v_pooler = Pooler(config.v_hidden_size, config.bi_hidden_size)
        self.a_pooler = Pooler(config.a_hidden_size, config.bi_hidden_size)

    def forward(
        self, text_ids, action_feat, image_feat, image_loc, token_type_ids, text_mask, image_mask, action_mask, capture=None
    ) -> PaddleVideoEncoderOutput:
        emb_t = self.embeddings(text_ids, token_type_ids)
        emb_v = self.v_embeddings(image_feat, image_loc)
        emb_a = self.a_embeddings(action_feat)
        if capture is not None:
            capture.update({"emb_t": emb_t, "emb_v": emb_v, "emb_a": emb_a})
            for name, keep, ref in (("t", text_mask, emb_t), ("v", image_mask, emb_v), ("a", action_mask, emb_a)):
                capture[f"extended_mask_{name}"] = additive_attention_mask(keep, ref.dtype, PADDLE_MASKED_VALUE)
        seq_t, seq_v, seq_a = self.encoder(emb_t, emb_v, emb_a, text_mask, image_mask, action_mask, capture)
        out = PaddleVideoEncoderOutput(
            seq_t, seq_v, seq_a, self.t_pooler(seq_t), self.v_pooler(seq_v), self.a_pooler(seq_a)
        )
        if capture is not None:
            capture.update({k: v for k, v in out._asdict().items()})
        return out


class LMPredictionHead(nn.Module):
    """Text head: ``transform(x) @ word_embeddings.T + decoder_bias`` -> ``[B, Lt, vocab]``.

    The decoder matrix is the word-embedding table, passed in at call time so the tie is a
    single parameter (Paddle stores it under two names; the converter checks they agree).
    """

    def __init__(self, config: PaddleVideoActBertConfig):
        super().__init__()
        self.transform = PredictionTransform(config.hidden_size, config.hidden_act)
        self.decoder_bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: torch.Tensor, decoder_weight: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(x), decoder_weight, self.decoder_bias)


class PretrainingHeads(nn.Module):
    """PaddleVideo's ``BertPreTrainingHeads`` (module name ``cls``)."""

    def __init__(self, config: PaddleVideoActBertConfig):
        super().__init__()
        self.fusion_method = config.fusion_method
        self.predictions = LMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.bi_hidden_size, 2)
        self.imagePredictions = PredictionHead(config.v_hidden_size, config.v_target_size, config.v_hidden_act)
        self.actionPredictions = PredictionHead(config.a_hidden_size, config.a_target_size, config.a_hidden_act)
        self.dropout = nn.Dropout(0.1)

    def fuse(self, pooled_t: torch.Tensor, pooled_v: torch.Tensor, pooled_a: torch.Tensor) -> torch.Tensor:
        """``[B, Db]`` x3 -> ``[B, Db]``: ``t * v + a`` ("mul") or ``t + v + a`` ("sum")."""
        if self.fusion_method == "mul":
            return pooled_t * pooled_v + pooled_a
        return pooled_t + pooled_v + pooled_a


class PaddleVideoOutput(NamedTuple):
    prediction_scores_t: torch.Tensor  # [B, Lt, vocab] ([N, vocab] when upstream_forward got text_positions)
    prediction_scores_v: torch.Tensor  # [B, Lv, v_target] (slot 0 = global slot)
    prediction_scores_a: torch.Tensor  # [B, La, a_target]
    seq_relationship_score: torch.Tensor  # [B, 2]; class 0 = matched


class PaddleVideoActBert(VideoTextModel):
    """PaddleVideo's ``BertForMultiModalPreTraining`` in PyTorch.

    ``forward`` takes the upstream inputs in the upstream order:
    ``text_ids [B, Lt]`` long, ``action_feat [B, La, Fa]``, ``image_feat [B, Lv, Fv]`` (slot 0 =
    global region feature), ``image_loc [B, Lv, 5]``, ``token_type_ids [B, Lt]``, and keep masks
    ``text_mask [B, Lt]``, ``image_mask [B, Lv]``, ``action_mask [B, La]`` (1 = real).
    Pass a dict as ``capture`` to receive the intermediate activations under the names of the
    reference fixture's ``intermediates.npz`` (debugging).

    ``save_pretrained(dir)`` / ``PaddleVideoActBert.from_pretrained(dir)`` come from
    :class:`~actbert.models.pretrained.PretrainedModelMixin`.
    """

    config_class = PaddleVideoActBertConfig
    processor_class = PaddleVideoProcessor

    def __init__(self, config: PaddleVideoActBertConfig):
        super().__init__()
        self.config = config
        self.bert = PaddleVideoActBertModel(config)
        self.cls = PretrainingHeads(config)
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))

    @classmethod
    def fill_config_from_data(cls, config: PaddleVideoActBertConfig, schema, tokenizer) -> PaddleVideoActBertConfig:
        """Feature widths and target counts from the store schema, the vocabulary from the tokenizer."""
        return dataclasses.replace(
            config,
            vocab_size=tokenizer.vocab_size,
            v_feature_size=schema.region_dim,
            a_feature_size=schema.action_dim,
            v_target_size=schema.num_region_classes,
            a_target_size=schema.num_actions,
        )

    @classmethod
    def random_corpus_dims(cls, config: PaddleVideoActBertConfig) -> dict[str, int]:
        """The preset's own feature widths and target counts for ``data.random`` corpora."""
        return {"action_dim": config.a_feature_size, "region_dim": config.v_feature_size,
                "num_actions": config.a_target_size, "num_region_classes": config.v_target_size}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``matching``: the three poolers and ``seq_relationship``; ``visual``: the region and
        action embeddings and single-stream layers (not the connection layers)."""
        b = self.bert
        visual = (b.v_embeddings, b.a_embeddings, b.encoder.v_layer, b.encoder.a_layer)
        return {
            "matching": [*b.t_pooler.parameters(), *b.v_pooler.parameters(), *b.a_pooler.parameters(), *self.cls.seq_relationship.parameters()],
            "visual": [p for part in visual for p in part.parameters()],
        }

    def _check_inputs(self, text_ids, action_feat, image_feat, image_loc) -> None:
        c = self.config
        checks = (
            ("text_ids", text_ids.dim() == 2, "[B, Lt]"),
            ("action_feat", action_feat.dim() == 3 and action_feat.shape[-1] == c.a_feature_size, f"[B, La, {c.a_feature_size}]"),
            ("image_feat", image_feat.dim() == 3 and image_feat.shape[-1] == c.v_feature_size, f"[B, Lv, {c.v_feature_size}]"),
            ("image_loc", image_loc.shape == (*image_feat.shape[:2], 5), "[B, Lv, 5] like image_feat"),
        )
        for name, ok, expected in checks:
            if not ok:
                tensor = {"text_ids": text_ids, "action_feat": action_feat, "image_feat": image_feat, "image_loc": image_loc}[name]
                raise PaddleVideoInputError(f"input {name}: shape {tuple(tensor.shape)}, expected {expected}")
        if text_ids.shape[1] > c.max_position_embeddings:
            raise PaddleVideoInputError(
                f"input text_ids: length {text_ids.shape[1]} exceeds max_position_embeddings {c.max_position_embeddings}"
            )
        batch = {t.shape[0] for t in (text_ids, action_feat, image_feat)}
        if len(batch) != 1:
            raise PaddleVideoInputError(f"inputs text_ids/action_feat/image_feat: batch sizes differ ({sorted(batch)})")

    def forward(self, text_ids: torch.Tensor | PaddleVideoBatch, *inputs, **kw):
        """``forward(PaddleVideoBatch)``: the pretraining forward of the model interface ->
        :class:`~actbert.models.interface.PretrainingOutput` with PaddleVideo's four losses
        (``mlm``, ``region``, ``action``, ``match``; :func:`paddlevideo_pretraining_loss`).
        ``forward(text_ids, action_feat, ...)``: the upstream call -> :class:`PaddleVideoOutput`."""
        if isinstance(text_ids, PaddleVideoBatch):
            return self.pretraining_forward(text_ids)
        return self.upstream_forward(text_ids, *inputs, **kw)

    def pretraining_forward(self, batch: PaddleVideoBatch) -> PretrainingOutput:
        """The four losses of a pretraining batch. With ``config.mlm_logits_at_labels`` the text head
        runs only at the positions with an MLM label (``[N, vocab]`` logits instead of
        ``[B, Lt, vocab]``; the loss and its gradients are the upstream ones)."""
        for name in ("masked_lm_labels", "image_label", "image_target", "masked_action_labels", "next_sentence_label"):
            if getattr(batch, name) is None:
                raise PaddleVideoInputError(f"PaddleVideoBatch.{name}: missing (a pretraining batch needs every label)")
        at_labels = self.config.mlm_logits_at_labels
        text_positions = batch.masked_lm_labels != -1 if at_labels else None  # [B, Lt]
        outputs = self.upstream_forward(*batch.inputs(), text_positions=text_positions)
        loss = paddlevideo_pretraining_loss(
            outputs, batch.masked_lm_labels, batch.image_label, batch.image_target, batch.masked_action_labels, batch.next_sentence_label,
            text_scores_at_labels=at_labels,
        )
        losses = {"mlm": loss.mlm, "region": loss.region_kl, "action": loss.action, "match": loss.matching}
        return PretrainingOutput(loss=loss.total, losses=losses)

    def upstream_forward(
        self,
        text_ids: torch.Tensor,
        action_feat: torch.Tensor,
        image_feat: torch.Tensor,
        image_loc: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        action_mask: torch.Tensor | None = None,
        capture: dict[str, torch.Tensor] | None = None,
        text_positions: torch.Tensor | None = None,
    ) -> PaddleVideoOutput:
        """The upstream forward. ``text_positions [B, Lt]`` bool (not an upstream argument): compute the
        text logits only there, ``prediction_scores_t [N, vocab]`` in row-major order of the True entries."""
        enc, fused = self._encode(text_ids, action_feat, image_feat, image_loc, token_type_ids, text_mask, image_mask,
                                  action_mask, capture)
        # the text head's vocab-wide matmul is the largest single one of a step: at the labelled
        # positions only when asked (about 15% of the text positions carry a label in pretraining)
        seq_t = enc.sequence_output_t if text_positions is None else enc.sequence_output_t[text_positions]
        return PaddleVideoOutput(
            prediction_scores_t=self.cls.predictions(seq_t, self.bert.embeddings.word_embeddings.weight),
            prediction_scores_v=self.cls.imagePredictions(enc.sequence_output_v),
            prediction_scores_a=self.cls.actionPredictions(enc.sequence_output_a),
            seq_relationship_score=self.cls.seq_relationship(self.cls.dropout(fused)),
        )

    def _encode(self, text_ids, action_feat, image_feat, image_loc, token_type_ids=None, text_mask=None, image_mask=None,
                action_mask=None, capture=None) -> tuple[PaddleVideoEncoderOutput, torch.Tensor]:
        """Checked inputs (upstream defaults for the optional ones) -> encoder output and fused pooled ``[B, Db]``."""
        self._check_inputs(text_ids, action_feat, image_feat, image_loc)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(text_ids)
        if text_mask is None:
            text_mask = torch.ones_like(text_ids)
        if image_mask is None:
            image_mask = torch.ones(image_feat.shape[:2], dtype=torch.long, device=image_feat.device)
        if action_mask is None:
            action_mask = torch.ones(action_feat.shape[:2], dtype=torch.long, device=action_feat.device)
        enc = self.bert(text_ids, action_feat, image_feat, image_loc, token_type_ids, text_mask, image_mask, action_mask, capture)
        fused = self.cls.fuse(enc.pooled_output_t, enc.pooled_output_v, enc.pooled_output_a)
        if capture is not None:
            capture["pooled_fused"] = fused
        return enc, fused

    def match_logits(self, *inputs, **kw) -> torch.Tensor:
        """``seq_relationship_score [B, 2]`` of the upstream forward (same arguments) without the three
        prediction heads, which scoring never reads (the text head alone is a vocab-wide matmul per position)."""
        _, fused = self._encode(*inputs, **kw)
        return self.cls.seq_relationship(self.cls.dropout(fused))

    # -- the model interface (models/interface.py); batches from PaddleVideoProcessor
    def pair_scores(self, batch: PaddleVideoBatch) -> torch.Tensor:
        """``[B]`` probability that the caption matches the video (PaddleVideo's retrieval score)."""
        return matched_probability(self.match_logits(*batch.inputs()))

    def pair_loss(self, batch: PaddleVideoBatch, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of ``seq_relationship_score`` with PaddleVideo's labels (class 0 = matched)."""
        logits = self.match_logits(*batch.inputs())
        target = torch.where(labels.to(logits.device) > 0.5, MATCHED_CLASS, 1 - MATCHED_CLASS).long()
        return F.cross_entropy(logits.float(), target)

    @torch.no_grad()
    def matched_probability(self, *inputs, **kw) -> torch.Tensor:
        """``[B]``: softmax probability of class 0 ("matched"), PaddleVideo's retrieval score."""
        return matched_probability(self.match_logits(*inputs, **kw))


# --------------------------------------------------------------------------------------------
# Loss (PaddleVideo's ActBertLoss)
# --------------------------------------------------------------------------------------------


def paddle_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1, denominator: int | None = None
) -> torch.Tensor:
    """Cross-entropy as Paddle computes it with a negative ``ignore_index``: ``[N, C], [N] -> []``.

    Ignored positions contribute 0 to the sum, and the sum is divided by *all* N positions
    (ignored ones included), not by the number of real labels. All-ignored gives 0, not NaN.
    ``denominator`` replaces N (logits gathered at the labelled positions of a larger label tensor
    divide by that tensor's size, as upstream does).
    """
    keep = labels != ignore_index
    log_probs = F.log_softmax(logits, dim=-1)
    nll = -log_probs.gather(-1, labels.clamp(min=0)[:, None])[:, 0]
    count = labels.numel() if denominator is None else denominator
    return torch.where(keep, nll, torch.zeros_like(nll)).sum() / max(count, 1)


def region_kl_loss(region_scores: torch.Tensor, region_label: torch.Tensor, region_target: torch.Tensor) -> torch.Tensor:
    """KL(target || softmax(scores)) over masked region slots.

    ``region_scores [B, R, K]`` (global slot already dropped), ``region_label [B, R]`` (1 = masked
    region), ``region_target [B, R, K]``. Summed over classes and masked slots, divided by the
    number of masked slots (at least 1e-6); target entries that are exactly 0 contribute 0.
    """
    log_probs = F.log_softmax(region_scores, dim=-1)
    kl = torch.xlogy(region_target, region_target) - region_target * log_probs
    masked = (region_label == 1).to(kl.dtype)
    return (kl * masked[..., None]).sum() / masked.sum().clamp(min=1e-6)


class PaddleVideoLoss(NamedTuple):
    total: torch.Tensor  # []
    mlm: torch.Tensor
    region_kl: torch.Tensor
    action: torch.Tensor
    matching: torch.Tensor


def paddlevideo_pretraining_loss(
    outputs: PaddleVideoOutput,
    masked_lm_labels: torch.Tensor,
    image_label: torch.Tensor,
    image_target: torch.Tensor,
    masked_action_labels: torch.Tensor,
    next_sentence_label: torch.Tensor,
    text_scores_at_labels: bool = False,
) -> PaddleVideoLoss:
    """``total = mlm + region_kl + action + matching``, each as PaddleVideo's ``ActBertLoss``.

    ``masked_lm_labels [B, Lt]`` and ``masked_action_labels [B, La]`` use -1 for "no target";
    ``image_label [B, Lv-1]`` / ``image_target [B, Lv-1, v_target]`` exclude the global slot;
    ``next_sentence_label [B]``: 0 = matched caption, 1 = random caption.
    ``text_scores_at_labels``: ``prediction_scores_t`` is ``[N, vocab]`` at the ``masked_lm_labels != -1``
    positions (row-major; ``upstream_forward(text_positions=...)``); the MLM term still divides by ``B * Lt``.
    """
    scores_t, scores_v, scores_a, match = outputs
    if text_scores_at_labels:
        labelled = masked_lm_labels[masked_lm_labels != -1]  # [N]
        mlm = paddle_cross_entropy(scores_t.reshape(-1, scores_t.shape[-1]), labelled, denominator=masked_lm_labels.numel())
    else:
        mlm = paddle_cross_entropy(scores_t.reshape(-1, scores_t.shape[-1]), masked_lm_labels.reshape(-1))
    region = region_kl_loss(scores_v[:, 1:], image_label, image_target)
    action = paddle_cross_entropy(scores_a.reshape(-1, scores_a.shape[-1]), masked_action_labels.reshape(-1))
    matching = paddle_cross_entropy(match.reshape(-1, 2), next_sentence_label.reshape(-1))
    total = mlm + region + action + matching
    return PaddleVideoLoss(total, mlm, region, action, matching)


__all__ = [
    "MATCHED_CLASS",
    "PADDING_ID",
    "PADDLE_MASKED_VALUE",
    "ConnectionLayer",
    "PaddleVideoActBert",
    "PaddleVideoActBertConfig",
    "PaddleVideoActBertModel",
    "PaddleVideoConfigError",
    "PaddleVideoInputError",
    "PaddleVideoLoss",
    "PaddleVideoOutput",
    "TangledAttention",
    "matched_probability",
    "nearest_resize",
    "paddle_cross_entropy",
    "paddlevideo_pretraining_loss",
    "region_kl_loss",
]
