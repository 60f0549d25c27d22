"""VLM (Xu et al., 2021): one BERT over video and text tokens, numerically equal to fairseq's MMPT.

The module tree and parameter names are MMPT's ``MMBertForMTM`` without its ``mm_encoder.`` prefix
(``videomlp.*``, ``bert.embeddings.*``, ``bert.encoder.layer.N.*``, ``bert.pooler.*``,
``cls.predictions.transform.*``), so an MMPT state dict maps by stripping prefixes only
(:mod:`actbert.models.vlm.convert`). What the model computes (``/work/shared/fixtures/vlm_small``
README and docs/vlm.md have the full account):

* **Sequence** ``[CLS] v_1..v_Lv [SEP] w_1..w_n [SEP] [PAD]..``, built from the caption tensor
  ``caps = [CLS] [SEP] w.. [SEP] [PAD]..`` ``[B, Lc]`` by splicing the video tokens in after
  ``caps[:, 0]``. Token type 0 for ``[CLS]``, the video and the first ``[SEP]`` (it belongs to the
  video segment), 1 for the rest (text padding included). Positions ``0..Lv`` then
  ``max_video_len+1 ..`` for ``caps[1:]`` (the processor pads the video to ``max_video_len``, so
  there is no gap).
* **Video tokens** ``linear2(LayerNorm_eps1e-5(gelu(linear1(f))))``, one per second of video.
* **Masks** are additive ``(1 - keep) * -10000``. The full mask is padding only; the isolated mask
  (:func:`isolated_mask`) lets ``[CLS]`` see itself, the video rows (and the first ``[SEP]``) the
  valid video keys + that ``[SEP]``, the text rows the words + the second ``[SEP]``.
* **Masked token loss** (MTM, paper eq. 8-9): masked frames (features zeroed *before* the MLP, so
  their token is MLP(0)) and masked words are scored in one softmax each over [own target | the
  batch's unmasked video tokens | the word table], one mean over all rows (:meth:`VLMForPretraining.mtm`).
* **Retrieval**: mean of the final hidden states over the video tokens + first ``[SEP]`` and over
  the words + second ``[SEP]`` under the isolated mask; at test time the two blocks run as separate
  passes (``separate=True``), which is how :meth:`encode_video` / :meth:`encode_text` embed one
  modality alone. ``MMFusionShare``'s two-pass layout is :meth:`share_video` / :meth:`share_text`.

Shapes: ``B`` batch, ``Lv`` video slots, ``Lc`` caption tensor length, ``L = Lv + Lc``, ``H`` width,
``V`` vocabulary, ``D`` video feature width (``input_dim``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from actbert.models.generation import repeated_ngrams
from actbert.models.interface import PretrainingOutput, VideoTextModel
from actbert.models.layers import (
    ACTIVATIONS,
    LAYER_NORM_EPS,
    MultiHeadAttention,
    PredictionTransform,
    TransformerLayer,
    attend,
    init_bert_weights,
    merge_heads,
    split_heads,
)
from actbert.models.losses import zero_like
from actbert.models.vlm.configuration import (
    NUM_SEG_EMBEDDINGS,
    TEXT_LABEL_IGNORE,
    VLM_MASKED_VALUE,
    VLMConfig,
)
from actbert.models.vlm.processing import VLMBatch, VLMInputError, VLMProcessor

Capture = dict[str, torch.Tensor] | None


def _keep(capture: Capture, name: str, value: torch.Tensor) -> None:
    if capture is not None:
        capture[name] = value.detach()


# --------------------------------------------------------------------------------------------
# Layout: ids, positions, masks
# --------------------------------------------------------------------------------------------


def joint_position_ids(video_len: int, caption_len: int, max_video_len: int, device=None) -> torch.Tensor:
    """``[1, Lv + Lc]``: ``0..Lv`` for ``[CLS]`` + video, then ``max_video_len+1 ..`` for ``caps[1:]``."""
    return torch.cat(
        [torch.arange(video_len + 1, device=device), torch.arange(max_video_len + 1, max_video_len + caption_len, device=device)]
    )[None]


def joint_token_type_ids(batch: int, video_len: int, caption_len: int, device=None) -> torch.Tensor:
    """``[B, Lv + Lc]``: 0 for ``[CLS]``, video and the first ``[SEP]``; 1 for the remaining ``Lc - 2``."""
    return torch.cat(
        [torch.zeros(batch, video_len + 2, dtype=torch.long, device=device),
         torch.ones(batch, caption_len - 2, dtype=torch.long, device=device)], dim=1
    )


def joint_keep_mask(cmasks: torch.Tensor, vmasks: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` bool: the padding mask of the joint sequence (``[CLS]``, valid frames, caption)."""
    return torch.cat([cmasks[:, :1], vmasks, cmasks[:, 1:]], dim=1).bool()


def isolated_mask(cmasks: torch.Tensor, vmasks: torch.Tensor) -> torch.Tensor:
    """``[B, L, L]`` bool (query rows, key columns): video and text blocks that cannot see each other.

    ``[CLS]`` sees only itself; rows ``1..Lv+1`` (video + first ``[SEP]``) see the valid frames and
    the first ``[SEP]``; text rows see ``cmasks[:, 2:]`` (words + second ``[SEP]``); nobody sees ``[CLS]``.
    """
    b, lv, lc = vmasks.shape[0], vmasks.shape[1], cmasks.shape[1]
    cmasks, vmasks = cmasks.bool(), vmasks.bool()
    length = lv + lc
    cls_row = torch.zeros(b, 1, length, dtype=torch.bool, device=cmasks.device)
    cls_row[:, 0, 0] = True
    no = torch.zeros(b, 1, dtype=torch.bool, device=cmasks.device)
    video_keys = torch.cat([no, vmasks, cmasks[:, 1:2], torch.zeros(b, lc - 2, dtype=torch.bool, device=cmasks.device)], dim=1)
    text_keys = torch.cat([torch.zeros(b, lv + 2, dtype=torch.bool, device=cmasks.device), cmasks[:, 2:]], dim=1)
    return torch.cat([cls_row, video_keys[:, None].expand(b, lv + 1, length), text_keys[:, None].expand(b, lc - 2, length)], dim=1)


def additive(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Keep mask ``[B, Lk]`` -> ``[B, 1, 1, Lk]``, or ``[B, Lq, Lk]`` -> ``[B, 1, Lq, Lk]``; ``(1 - keep) * -10000``."""
    m = (1.0 - keep.to(dtype)) * VLM_MASKED_VALUE
    return m[:, None, None, :] if keep.dim() == 2 else m[:, None]


def masked_mean(states: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``[B, N, H]``, ``[B, N]`` -> ``[B, H]``: mean over the kept positions."""
    keep = keep.to(states.dtype)
    return (states * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


class VideoTokenMLP(nn.Module):
    """``[..., D] -> [..., H]``: ``linear2(LayerNorm(act(linear1(f))))`` (LayerNorm eps 1e-5 upstream)."""

    def __init__(self, config: VLMConfig):
        super().__init__()
        self.linear1 = nn.Linear(config.input_dim, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.videomlp_layer_norm_eps)
        self.linear2 = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = ACTIVATIONS[config.hidden_act]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.LayerNorm(self.activation(self.linear1(features))))


class VLMEmbeddings(nn.Module):
    """``LayerNorm(token + position + token_type)`` over already-spliced token vectors ``[B, L, H]``."""

    def __init__(self, config: VLMConfig):
        super().__init__()
        h = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, h, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, h)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, h)
        if config.use_seg_emb:
            # present for checkpoint compatibility; MMPT never reads it
            self.seg_embeddings = nn.Embedding(NUM_SEG_EMBEDDINGS, h)
        self.LayerNorm = nn.LayerNorm(h, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, tokens: torch.Tensor, position_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        x = tokens + self.position_embeddings(position_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class AdditiveMaskSelfAttention(MultiHeadAttention):
    """Self-attention whose mask is given additive and already broadcastable (``[B, 1, Lq|1, Lk]``),
    so a per-query mask such as the isolated one fits; names and projections are the shared ones."""

    def forward(self, query_states, key_value_states, key_mask, **unused) -> torch.Tensor:  # type: ignore[override]
        q = split_heads(self.query(query_states), self.num_heads)
        k = split_heads(self.key(key_value_states), self.num_heads)
        v = split_heads(self.value(key_value_states), self.num_heads)
        return merge_heads(attend(q, k, v, key_mask, self.dropout if self.training else 0.0))


class VLMLayer(TransformerLayer):
    """A post-LN BERT layer (HF names) taking an additive mask: ``([B, L, H], mask) -> [B, L, H]``."""

    def __init__(self, config: VLMConfig):
        super().__init__(config.hidden_size, config.num_attention_heads, config.intermediate_size,
                         config.hidden_dropout_prob, config.attention_probs_dropout_prob, config.hidden_act)
        self.attention.self = AdditiveMaskSelfAttention(
            config.hidden_size, config.hidden_size, config.hidden_size, config.num_attention_heads,
            config.attention_probs_dropout_prob,
        )


class VLMEncoder(nn.Module):
    def __init__(self, config: VLMConfig):
        super().__init__()
        self.layer = nn.ModuleList(VLMLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, masks: list[torch.Tensor]) -> list[torch.Tensor]:
        """``x [B, L, H]``, one additive mask per layer -> hidden states ``[embeddings, layer 1, ..]``."""
        states = [x]
        for layer, mask in zip(self.layer, masks):
            x = layer(x, mask)
            states.append(x)
        return states


class VLMPooler(nn.Module):
    """``tanh(dense(h[:, 0]))`` (BERT's pooler; recorded, read by no VLM loss)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(sequence[:, 0]))


class VLMBert(nn.Module):
    """MMPT's ``MMBertModel`` minus the id handling: ``embeddings``, ``encoder``, ``pooler``."""

    def __init__(self, config: VLMConfig):
        super().__init__()
        self.embeddings = VLMEmbeddings(config)
        self.encoder = VLMEncoder(config)
        self.pooler = VLMPooler(config.hidden_size)


class MTMPredictions(nn.Module):
    """``cls.predictions``: the shared transform; the decoder is the word table (tied, no bias)."""

    def __init__(self, config: VLMConfig):
        super().__init__()
        self.transform = PredictionTransform(config.hidden_size, config.hidden_act)


class MTMHead(nn.Module):
    def __init__(self, config: VLMConfig):
        super().__init__()
        self.predictions = MTMPredictions(config)


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


@dataclass
class VLMEncoderOutput:
    sequence_output: torch.Tensor  # [B, L, H] final hidden states (the pooling layer's, see pool_layer)
    pooled_output: torch.Tensor | None  # [B, H] tanh(dense(h[:, 0])) of the final layer
    hidden_states: list[torch.Tensor]  # [embeddings, layer 1 .. layer n], each [B, L, H]


@dataclass
class VLMRetrievalOutput:
    pooled_video: torch.Tensor  # [B, H]
    pooled_text: torch.Tensor  # [B, H]
    sequence_output: torch.Tensor | None = None  # [B, L, H] the layer that was pooled


@dataclass
class VLMPretrainingOutput(PretrainingOutput):
    video_logits: torch.Tensor | None = None  # [Nv, 1 + Nnm + V]: own target | unmasked frames | words
    text_logits: torch.Tensor | None = None  # [Nt, V + Nnm (+1)]: words | unmasked frames (| upstream's 0)
    labels: torch.Tensor | None = None  # [Nv + Nt]: 0 for video rows, the word id for text rows
    sequence_output: torch.Tensor | None = None  # [B, L, H]
    pooled_output: torch.Tensor | None = None  # [B, H]


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class VLMForPretraining(VideoTextModel):
    """VLM with its masked token head (MMPT's ``MMBertForMTM``); the registered ``vlm`` class.

    ``forward(VLMBatch)`` is the pretraining step (masked token loss); the capabilities
    (``embeddings``, ``pair_scores``, ``masked_tokens``, ``unit_states``) serve the tasks.
    """

    config_class = VLMConfig
    processor_class = VLMProcessor
    # text_init: where BERT tensors go, and which of ours count as the text stream / MLM head
    text_stream_prefixes = ("bert.",)
    text_head_prefixes = ("cls.",)

    def __init__(self, config: VLMConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.videomlp = VideoTokenMLP(config)
        self.bert = VLMBert(config)
        self.cls = MTMHead(config)
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))

    # -- interface
    @classmethod
    def fill_config_from_data(cls, config: VLMConfig, schema: Any, tokenizer: Any) -> VLMConfig:
        """Video width from the store (per-second features have the action width), vocabulary and ids from the tokenizer."""
        return replace(
            config,
            input_dim=int(schema.action_dim),
            vocab_size=int(tokenizer.vocab_size),
            pad_token_id=int(tokenizer.pad_id),
            cls_token_id=int(tokenizer.cls_id),
            sep_token_id=int(tokenizer.sep_id),
            mask_token_id=int(tokenizer.mask_id),
        )

    @classmethod
    def random_corpus_dims(cls, config: VLMConfig) -> dict[str, int]:
        """``data.random``: per-second (and per-clip) features of the preset's video width."""
        return {"action_dim": int(config.input_dim)}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``video``: the video token MLP (the only part no BERT checkpoint initialises); ``text``: BERT + head."""
        return {"video": list(self.videomlp.parameters()), "text": list(self.bert.parameters()) + list(self.cls.parameters())}

    @staticmethod
    def text_weight_name(bert_name: str) -> str | None:
        """HF BERT name (no ``bert.`` prefix) -> ours: the encoder is BERT's, the MTM transform is BERT's MLM transform."""
        if bert_name.startswith(("embeddings.", "encoder.", "pooler.")):
            return "bert." + bert_name
        if bert_name.startswith("cls.predictions.transform."):
            return bert_name
        return None  # cls.predictions.bias (the MTM decoder has none), NSP head

    @property
    def word_table(self) -> torch.Tensor:
        """``[V, H]``: the input word embeddings = the tied MTM decoder."""
        return self.bert.embeddings.word_embeddings.weight

    def word_embeddings(self) -> torch.Tensor:
        """``[V, H]``: the word table a caption decoder may start from (``caption_memory`` capability)."""
        return self.word_table

    # -- the encoder on the three layouts
    def _layer_masks(self, full: torch.Tensor, iso: torch.Tensor | None, dtype: torch.dtype) -> list[torch.Tensor]:
        n = self.config.num_hidden_layers
        if iso is None:
            return [additive(full, dtype)] * n
        k = self.config.iso_layers
        return [additive(iso, dtype)] * k + [additive(full[:, None, :].expand(iso.shape), dtype)] * (n - k)

    def _embed(self, caps: torch.Tensor, video_tokens: torch.Tensor | None, capture: Capture = None, prefix: str = "joint") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Joint token vectors ``[B, L, H]`` (video spliced after ``caps[:, 0]``), their position and type ids."""
        words = self.bert.embeddings.word_embeddings(caps)
        b, lc = caps.shape
        lv = video_tokens.shape[1]
        tokens = torch.cat([words[:, :1], video_tokens.to(words.dtype), words[:, 1:]], dim=1)
        positions = joint_position_ids(lv, lc, self.config.max_video_len, caps.device)
        types = joint_token_type_ids(b, lv, lc, caps.device)
        _keep(capture, f"{prefix}_position_ids", positions)
        _keep(capture, f"{prefix}_token_type_ids", types)
        return tokens, positions, types

    def _check(self, caps: torch.Tensor, cmasks: torch.Tensor, vfeats: torch.Tensor, vmasks: torch.Tensor) -> None:
        if caps.dim() != 2 or cmasks.shape != caps.shape:
            raise VLMInputError(f"caps {tuple(caps.shape)} / cmasks {tuple(cmasks.shape)}: expected two equal [B, Lc]")
        if caps.shape[1] < 4:
            raise VLMInputError(f"caps: length {caps.shape[1]} < 4; the caption tensor is [CLS] [SEP] words [SEP]")
        if vfeats.dim() != 3 or vfeats.shape[-1] != self.config.input_dim or vmasks.shape != vfeats.shape[:2]:
            raise VLMInputError(
                f"vfeats {tuple(vfeats.shape)} / vmasks {tuple(vmasks.shape)}: expected [B, Lv, {self.config.input_dim}] and [B, Lv] "
                "(input_dim is the video feature width)"
            )
        if vfeats.shape[0] != caps.shape[0]:
            raise VLMInputError(f"vfeats: batch {vfeats.shape[0]} but caps has {caps.shape[0]} rows")
        if vfeats.shape[1] + caps.shape[1] > self.config.max_position_embeddings or vfeats.shape[1] > self.config.max_video_len:
            raise VLMInputError(
                f"vfeats: {vfeats.shape[1]} video slots + {caps.shape[1]} caption slots do not fit max_video_len = "
                f"{self.config.max_video_len} / max_position_embeddings = {self.config.max_position_embeddings}"
            )

    def joint(
        self,
        caps: torch.Tensor,
        cmasks: torch.Tensor,
        vfeats: torch.Tensor,
        vmasks: torch.Tensor,
        isolated: bool = False,
        separate: bool = False,
        video_tokens: torch.Tensor | None = None,
        capture: Capture = None,
        prefix: str = "joint",
    ) -> VLMEncoderOutput:
        """The encoder on ``[CLS] v.. [SEP] w.. [SEP]``.

        ``isolated``: the isolated mask on the first ``iso_layers`` layers (retrieval); ``separate``
        (implies ``isolated``): the video block ``[0, Lv+2)`` and the text block ``[Lv+2, L)`` run as
        two passes with their diagonal blocks of the mask (MMPT's test-time ``separate_forward_split``).
        ``video_tokens`` replaces ``videomlp(vfeats)`` (the MTM step passes the masked ones).
        """
        self._check(caps, cmasks, vfeats, vmasks)
        if video_tokens is None:
            video_tokens = self.videomlp(vfeats)
        _keep(capture, f"{prefix}_video_tokens", video_tokens)
        tokens, positions, types = self._embed(caps, video_tokens, capture, prefix)
        x = self.bert.embeddings(tokens, positions, types)
        _keep(capture, f"{prefix}_embedding_output", x)
        keep = joint_keep_mask(cmasks, vmasks)
        _keep(capture, f"{prefix}_attention_mask", keep)
        iso = isolated_mask(cmasks, vmasks) if (isolated or separate) else None
        masks = self._layer_masks(keep, iso, x.dtype)
        if iso is not None:
            _keep(capture, f"{prefix}_iso_attention_mask", iso)
        else:
            _keep(capture, f"{prefix}_extended_attention_mask", masks[0])
        if separate:
            split = vmasks.shape[1] + 2
            video_states = self.bert.encoder(x[:, :split], [m[:, :, :split, :split] for m in masks])
            text_states = self.bert.encoder(x[:, split:], [m[:, :, split:, split:] for m in masks])
            states = [torch.cat([v, t], dim=1) for v, t in zip(video_states, text_states)]
            _keep(capture, f"{prefix}_last_layer_video_part", video_states[-1])
            _keep(capture, f"{prefix}_last_layer_text_part", text_states[-1])
        else:
            states = self.bert.encoder(x, masks)
        for i, s in enumerate(states[1:]):
            _keep(capture, f"{prefix}_layer_{i}_output", s)
        final = states[-1]
        return VLMEncoderOutput(sequence_output=final, pooled_output=self.bert.pooler(final), hidden_states=states)

    def pool_layer(self) -> int:
        """Index into ``hidden_states`` that retrieval pools (MMPT: the last isolated layer)."""
        k = self.config.iso_layers
        return k if k > 0 else self.config.num_hidden_layers

    def pool(self, states: torch.Tensor, cmasks: torch.Tensor, vmasks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, L, H]`` -> (pooled_video, pooled_text) ``[B, H]`` each: video tokens + first ``[SEP]``;
        words + second ``[SEP]`` (``[CLS]`` in neither)."""
        lv = vmasks.shape[1]
        ones = torch.ones_like(vmasks[:, :1], dtype=torch.bool)
        pooled_video = masked_mean(states[:, 1 : lv + 2], torch.cat([vmasks.bool(), ones], dim=1))
        pooled_text = masked_mean(states[:, lv + 2 :], cmasks[:, 2:].bool())
        return pooled_video, pooled_text

    def retrieval(self, batch: VLMBatch, separate: bool = True, capture: Capture = None, prefix: str = "retrieval") -> VLMRetrievalOutput:
        """MMPT's ``MMFusionJoint``: isolated mask; ``separate=False`` is its training-mode joint pass."""
        out = self.joint(batch.caps, batch.cmasks, batch.vfeats, batch.vmasks, isolated=True, separate=separate,
                         capture=capture, prefix=prefix)
        states = out.hidden_states[self.pool_layer()]
        pooled_video, pooled_text = self.pool(states, batch.cmasks, batch.vmasks)
        return VLMRetrievalOutput(pooled_video, pooled_text, states)

    # -- MMFusionShare: video-only and text-only passes through the same encoder
    def share_video(self, batch: VLMBatch, capture: Capture = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``[CLS] v.. [SEP]`` alone (types 0, positions ``0..Lv, max_video_len+1``, padding mask)
        -> (sequence ``[B, Lv+2, H]``, pooled video ``[B, H]`` over video + ``[SEP]``)."""
        caps, cmasks, vmasks = batch.caps, batch.cmasks, batch.vmasks.bool()
        b, lv = vmasks.shape
        video_tokens = self.videomlp(batch.vfeats)
        words = self.bert.embeddings.word_embeddings(caps[:, :2])
        tokens = torch.cat([words[:, :1], video_tokens.to(words.dtype), words[:, 1:2]], dim=1)
        positions = joint_position_ids(lv, 2, self.config.max_video_len, caps.device)
        types = torch.zeros(b, lv + 2, dtype=torch.long, device=caps.device)
        keep = torch.cat([cmasks[:, :1].bool(), vmasks, cmasks[:, 1:2].bool()], dim=1)
        _keep(capture, "share_video_position_ids", positions)
        _keep(capture, "share_video_token_type_ids", types)
        mask = additive(keep, video_tokens.dtype)
        _keep(capture, "share_video_extended_attention_mask", mask)
        states = self.bert.encoder(self.bert.embeddings(tokens, positions, types), [mask] * self.config.num_hidden_layers)
        seq = states[-1]
        pooled = masked_mean(seq[:, 1:], torch.cat([vmasks, torch.ones_like(vmasks[:, :1])], dim=1))
        return seq, pooled

    def share_text(self, batch: VLMBatch, capture: Capture = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``[CLS] w.. [SEP] [PAD]..`` alone (types ``0, 1, ..``; positions ``0, max_video_len+2, ..``)
        -> (sequence ``[B, Lc-1, H]``, pooled text ``[B, H]`` over words + ``[SEP]``)."""
        caps, cmasks = batch.caps, batch.cmasks.bool()
        b, lc = caps.shape
        ids = torch.cat([caps[:, :1], caps[:, 2:]], dim=1)
        mvl = self.config.max_video_len
        positions = torch.cat([torch.zeros(1, dtype=torch.long, device=caps.device),
                               torch.arange(mvl + 2, mvl + lc, device=caps.device)])[None]
        types = torch.cat([torch.zeros(b, 1, dtype=torch.long, device=caps.device),
                           torch.ones(b, lc - 2, dtype=torch.long, device=caps.device)], dim=1)
        keep = torch.cat([cmasks[:, :1], cmasks[:, 2:]], dim=1)
        words = self.bert.embeddings.word_embeddings(ids)
        _keep(capture, "share_text_position_ids", positions)
        _keep(capture, "share_text_token_type_ids", types)
        mask = additive(keep, words.dtype)
        _keep(capture, "share_text_extended_attention_mask", mask)
        states = self.bert.encoder(self.bert.embeddings(words, positions, types), [mask] * self.config.num_hidden_layers)
        seq = states[-1]
        pooled = masked_mean(seq[:, 1:], cmasks[:, 2:])
        return seq, pooled

    # -- pretraining: masked token loss
    def mtm(self, batch: VLMBatch, capture: Capture = None) -> VLMPretrainingOutput:
        """The masked token step on a masked batch (``batch.video_label``, ``batch.text_label`` set).

        Masked frames' features are zeroed before the MLP (their token is MLP(0)); the targets are
        the MLP of the raw features; the negatives are the batch's unmasked valid video tokens, the
        very tokens fed to BERT (nothing detached). Loss: one cross-entropy mean over the
        ``Nv + Nt`` masked frames and words.
        """
        if batch.video_label is None or batch.text_label is None:
            raise VLMInputError("VLMBatch: video_label and text_label are needed for the masked token loss (a pretraining batch)")
        caps, cmasks, vfeats, vmasks = batch.caps, batch.cmasks, batch.vfeats, batch.vmasks.bool()
        video_label = batch.video_label.bool() & vmasks
        text_label = batch.text_label
        self._check(caps, cmasks, vfeats, vmasks)
        target_features = vfeats[video_label]  # [Nv, D] raw, before zeroing
        zeroed = vfeats.masked_fill(video_label[..., None], 0.0)
        _keep(capture, "mtm_vfeats_after_zeroing", zeroed)
        video_tokens = self.videomlp(zeroed)
        targets = self.videomlp(target_features)  # [Nv, H]
        non_masked = vmasks & ~video_label
        negatives = video_tokens[non_masked]  # [Nnm, H]
        _keep(capture, "mtm_target_video_tokens", targets)
        _keep(capture, "mtm_non_masked_frame_mask", non_masked)
        _keep(capture, "mtm_non_masked_frame_tokens", negatives)
        _keep(capture, "mtm_masked_frame_index", video_label.nonzero())
        _keep(capture, "mtm_non_masked_frame_index", non_masked.nonzero())
        text_selected = text_label != TEXT_LABEL_IGNORE
        _keep(capture, "mtm_masked_text_index", text_selected.nonzero())

        out = self.joint(caps, cmasks, vfeats, vmasks, video_tokens=video_tokens, capture=capture, prefix="mtm")
        seq = out.sequence_output
        lv = vmasks.shape[1]
        video_h = seq[:, 1 : lv + 1][video_label]  # [Nv, H] row-major (b, position)
        text_seq = torch.cat([seq[:, :1], seq[:, lv + 1 :]], dim=1)  # aligned with caps
        text_h = text_seq[text_selected]  # [Nt, H]
        transform = self.cls.predictions.transform
        tv, tt = transform(video_h), transform(text_h)
        _keep(capture, "mtm_head_transform_video", tv)
        _keep(capture, "mtm_head_transform_text", tt)
        table = self.word_table
        video_logits = torch.cat([(tv * targets).sum(-1, keepdim=True), tv @ negatives.T, tv @ table.T], dim=1)
        text_logits = torch.cat([tt @ table.T, tt @ negatives.T], dim=1)
        if self.config.mtm_zero_text_logit:
            text_logits = torch.cat([text_logits, text_logits.new_zeros(text_logits.shape[0], 1)], dim=1)
        text_targets = text_label[text_selected]
        labels = torch.cat([torch.zeros(video_logits.shape[0], dtype=torch.long, device=caps.device), text_targets])
        rows = video_logits.shape[0] + text_logits.shape[0]
        if rows == 0:
            loss = zero_like(seq)
            video_loss = text_loss = loss
        else:
            video_nll = F.cross_entropy(video_logits.float(), labels[: video_logits.shape[0]], reduction="sum")
            text_nll = F.cross_entropy(text_logits.float(), text_targets, reduction="sum")
            loss = (video_nll + text_nll) / rows
            # per-modality means, for the log only (the loss is the one mean above)
            video_loss = video_nll / max(video_logits.shape[0], 1)
            text_loss = text_nll / max(text_logits.shape[0], 1)
        return VLMPretrainingOutput(
            loss=loss,
            losses={"mtm": loss.detach(), "mtm_video": video_loss.detach(), "mtm_text": text_loss.detach()},
            video_logits=video_logits,
            text_logits=text_logits,
            labels=labels,
            sequence_output=seq,
            pooled_output=out.pooled_output,
        )

    def forward(self, batch: VLMBatch) -> VLMPretrainingOutput:
        """Pretraining step: the masked token loss (``losses``: ``mtm`` and, for the log, its video / text parts)."""
        if not isinstance(batch, VLMBatch):
            raise VLMInputError(f"VLMForPretraining.forward takes a VLMBatch (from VLMProcessor), got {type(batch).__name__}")
        return self.mtm(batch)

    # -- capabilities
    def encode_video(self, batch: VLMBatch) -> torch.Tensor:
        """``[B, H]``: the video block ``[CLS] v.. [SEP]`` run alone under the isolated mask, pooled."""
        lv = batch.vmasks.shape[1]
        states = self._block(batch, text=False)
        ones = torch.ones_like(batch.vmasks[:, :1], dtype=torch.bool)
        return masked_mean(states[:, 1 : lv + 2], torch.cat([batch.vmasks.bool(), ones], dim=1))

    def encode_text(self, batch: VLMBatch) -> torch.Tensor:
        """``[B, H]``: the text block ``w.. [SEP] [PAD]..`` run alone (joint positions and types), pooled."""
        states = self._block(batch, text=True)
        return masked_mean(states, batch.cmasks[:, 2:].bool())

    # factored_scores: pair_scores is encode_text . encode_video, so a score matrix needs one pass per text and per video
    def score_text(self, batch: VLMBatch) -> torch.Tensor:
        """``[B, H]``: :meth:`encode_text`."""
        return self.encode_text(batch)

    def score_video(self, batch: VLMBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(``[B, 1, H]`` :meth:`encode_video`, ``[B, 1]`` all valid): one vector per video."""
        video = self.encode_video(batch).unsqueeze(1)
        return video, torch.ones(video.shape[:2], dtype=torch.bool, device=video.device)

    def _block(self, batch: VLMBatch, text: bool) -> torch.Tensor:
        """The pooled layer's states of one block of the separate forward: text ``[B, Lc-2, H]`` or video ``[B, Lv+2, H]``."""
        caps, cmasks, vfeats, vmasks = batch.caps, batch.cmasks, batch.vfeats, batch.vmasks
        self._check(caps, cmasks, vfeats, vmasks)
        split = vmasks.shape[1] + 2
        if text:
            # the text block needs no video: its embeddings do not depend on the video tokens
            words = self.bert.embeddings.word_embeddings(caps)
            tokens = words[:, 2:]
            b, lc = caps.shape
            positions = joint_position_ids(vmasks.shape[1], lc, self.config.max_video_len, caps.device)[:, split:]
            types = joint_token_type_ids(b, vmasks.shape[1], lc, caps.device)[:, split:]
        else:
            tokens, positions, types = self._embed(caps, self.videomlp(vfeats))
            tokens, positions, types = tokens[:, :split], positions[:, :split], types[:, :split]
        x = self.bert.embeddings(tokens, positions, types)
        iso = isolated_mask(cmasks, vmasks)
        masks = self._layer_masks(joint_keep_mask(cmasks, vmasks), iso, x.dtype)
        sl = slice(split, None) if text else slice(0, split)
        states = self.bert.encoder(x, [m[:, :, sl, sl] for m in masks])
        return states[self.pool_layer()]

    def pair_scores(self, batch: VLMBatch) -> torch.Tensor:
        """``[B]``: ``pooled_text . pooled_video`` of row b (VLM's retrieval similarity: raw dot product)."""
        return (self.encode_text(batch) * self.encode_video(batch)).sum(-1)

    def pair_loss(self, batch: VLMBatch, labels: torch.Tensor) -> torch.Tensor:
        """VLM's fine-tuning loss: text-to-video contrastive cross-entropy over the matching rows of the
        batch (MMPT's ``T2VContraLoss``, in-batch negatives, training-mode joint pass under the isolated mask)."""
        keep = labels.to(batch.caps.device) > 0.5
        if int(keep.sum()) == 0:
            return zero_like(self.word_table)
        out = self.retrieval(batch.select(keep), separate=False)
        return t2v_contrastive_loss(out.pooled_text, out.pooled_video)

    def masked_token_logits(self, batch: VLMBatch, positions: torch.Tensor) -> torch.Tensor:
        """``[N, V]``: word logits (MTM transform, tied decoder) at the marked caption positions of the joint pass."""
        out = self.joint(batch.caps, batch.cmasks, batch.vfeats, batch.vmasks)
        lv = batch.vmasks.shape[1]
        seq = out.sequence_output
        text_seq = torch.cat([seq[:, :1], seq[:, lv + 1 :]], dim=1)
        h = self.cls.predictions.transform(text_seq[positions.to(seq.device).bool()])
        return h @ self.word_table.T

    @property
    def unit_state_dim(self) -> int:
        return self.config.hidden_size

    def unit_states(self, batch: VLMBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(``[B, Lv, H]`` final states of the video tokens, ``[B, Lv]`` valid): the video with a dummy text
        under the isolated mask (the paper's action segmentation input); a video longer than
        ``max_video_len`` runs as consecutive windows of that length."""
        window = self.config.max_video_len
        states = []
        for start in range(0, batch.vmasks.shape[1], window):  # a long frame list: consecutive windows
            vfeats, vmasks = batch.vfeats[:, start : start + window], batch.vmasks[:, start : start + window]
            out = self.joint(batch.caps, batch.cmasks, vfeats, vmasks, isolated=True)
            states.append(out.hidden_states[self.pool_layer()][:, 1 : vmasks.shape[1] + 1])
        # one state per unit of the longest row (the processor pads video slots to windows)
        width = max(1, int(batch.vmasks.sum(1).max()))
        return torch.cat(states, dim=1)[:, :width], batch.vmasks.bool()[:, :width]


    # -- captioning: the encoder as its own decoder (paper 4.5)
    @property
    def caption_memory_dim(self) -> int:
        return self.config.hidden_size

    def caption_memory(self, batch: VLMBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(``[B, Lv+2, H]`` states of ``[CLS] v.. [SEP]`` from the video block alone, ``[B, Lv+2]`` valid):
        what the shared captioning harness's decoder attends to. VLM's own captioning needs no decoder:
        :meth:`caption_loss` / :meth:`generate_captions`."""
        states = self._block(batch, text=False)
        ones = torch.ones_like(batch.vmasks[:, :1], dtype=torch.bool)
        return states, torch.cat([ones, batch.vmasks.bool(), ones], dim=1)

    def generation_mask(self, cmasks: torch.Tensor, vmasks: torch.Tensor) -> torch.Tensor:
        """``[B, L, L]`` bool: ``[CLS]``, video and the first ``[SEP]`` see one another (valid keys); a text
        row sees them and the caption positions up to itself (lower triangle), so no word sees its future."""
        lv, lc = vmasks.shape[1], cmasks.shape[1]
        keep = joint_keep_mask(cmasks, vmasks)
        split = lv + 2
        length = lv + lc
        allowed = torch.zeros(length, length, dtype=torch.bool, device=cmasks.device)
        allowed[:, :split] = True
        allowed[split:, split:] = torch.tril(torch.ones(lc - 2, lc - 2, dtype=torch.bool, device=cmasks.device))
        return allowed[None] & keep[:, None, :]

    def _shifted(self, caps: torch.Tensor, cmasks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MMPT's TextGenerationProcessor: inputs ``[CLS] [SEP] [CLS] w1..w_{n}`` (the text shifted right
        behind a ``[CLS]`` start token), labels ``w1..wn [SEP]`` at the text positions (-100 elsewhere)."""
        labels = caps.masked_fill(~cmasks.bool(), TEXT_LABEL_IGNORE).clone()
        labels[:, :2] = TEXT_LABEL_IGNORE
        inputs = caps.clone()
        inputs[:, 2:] = torch.cat([torch.full_like(caps[:, :1], self.config.cls_token_id), caps[:, 2:-1]], dim=1)
        inputs = inputs.masked_fill(~cmasks.bool(), self.config.pad_token_id)
        return inputs, labels

    def _generation_states(self, caps: torch.Tensor, cmasks: torch.Tensor, vfeats: torch.Tensor, vmasks: torch.Tensor) -> torch.Tensor:
        """``[B, Lc, H]`` last-layer states at the caption positions (aligned with ``caps``) under the generation mask."""
        self._check(caps, cmasks, vfeats, vmasks)
        tokens, positions, types = self._embed(caps, self.videomlp(vfeats))
        x = self.bert.embeddings(tokens, positions, types)
        mask = additive(self.generation_mask(cmasks, vmasks), x.dtype)
        seq = self.bert.encoder(x, [mask] * self.config.num_hidden_layers)[-1]
        lv = vmasks.shape[1]
        return torch.cat([seq[:, :1], seq[:, lv + 1 :]], dim=1)

    def _word_logits(self, states: torch.Tensor) -> torch.Tensor:
        """``[..., V]`` next-word logits of ``[..., H]`` states (the tied MLM head)."""
        return self.cls.predictions.transform(states) @ self.word_table.T

    def _generation_logits(self, caps: torch.Tensor, cmasks: torch.Tensor, vfeats: torch.Tensor, vmasks: torch.Tensor) -> torch.Tensor:
        """``[B, Lc, V]`` next-word logits at every caption position (aligned with ``caps``)."""
        return self._word_logits(self._generation_states(caps, cmasks, vfeats, vmasks))

    def caption_loss(self, batch: VLMBatch) -> torch.Tensor:
        """VLM-style captioning loss: next-word cross-entropy over the caption's words and closing ``[SEP]``."""
        inputs, labels = self._shifted(batch.caps, batch.cmasks)
        states = self._generation_states(inputs, batch.cmasks, batch.vfeats, batch.vmasks)
        valid = labels != TEXT_LABEL_IGNORE
        if not bool(valid.any()):
            # through the word head as well, so that every parameter of the loss gets a (zero)
            # gradient: DDP expects the same parameters used on every rank
            return zero_like(self._word_logits(states[:, :1]))
        # the vocabulary projection at the labelled positions only: the same loss, without
        # [B, Lc, V] logits of which padding and the two leading slots are dropped anyway
        return F.cross_entropy(self._word_logits(states[valid]).float(), labels[valid])

    @torch.no_grad()
    def generate_captions(self, batch: VLMBatch, max_words: int | None = None, no_repeat_ngram: int = 0) -> list[list[int]]:
        """Greedy decoding with the generation mask (``batch.caps`` only gives the layout; its words are
        ignored): word ids per row, up to ``max_words`` or the first ``[SEP]``. ``no_repeat_ngram = n > 0``:
        no n-gram of words twice in a caption (:func:`~actbert.models.generation.repeated_ngrams`; not
        MMPT's decoding, which has no such guard: 0 keeps it)."""
        b, lc = batch.caps.shape
        limit = min(lc - 3, max_words if max_words is not None else lc - 3)
        device = batch.caps.device
        caps = torch.full((b, lc), self.config.pad_token_id, dtype=torch.long, device=device)
        caps[:, 0] = caps[:, 2] = self.config.cls_token_id
        caps[:, 1] = self.config.sep_token_id
        out: list[list[int]] = [[] for _ in range(b)]
        done = torch.zeros(b, dtype=torch.bool, device=device)
        for step in range(limit):
            # no position sees a later one (generation_mask), so the caption slots after the last
            # word can be left out: the prefix plus one masked slot (the layout needs Lc >= 4) gives
            # the same state at 2 + step, and only that state is projected onto the vocabulary
            length = 4 + step
            cmasks = torch.zeros(b, length, dtype=torch.bool, device=device)
            cmasks[:, : 3 + step] = True
            states = self._generation_states(caps[:, :length], cmasks, batch.vfeats, batch.vmasks)
            logits = self._word_logits(states[:, 2 + step])
            logits[:, self.config.pad_token_id] = -math.inf
            if no_repeat_ngram > 0:  # the words so far follow the [CLS] start at slot 2
                logits[repeated_ngrams(caps[:, 2 : 3 + step], no_repeat_ngram, logits.shape[1]).to(device)] = -math.inf
            word = logits.argmax(-1)
            for i in range(b):
                if not done[i]:
                    if int(word[i]) == self.config.sep_token_id:
                        done[i] = True
                    else:
                        out[i].append(int(word[i]))
            if bool(done.all()):
                break
            caps[:, 3 + step] = word
        return out


def t2v_contrastive_loss(pooled_text: torch.Tensor, pooled_video: torch.Tensor) -> torch.Tensor:
    """MMPT's ``T2VContraLoss``: CE(text @ video^T, arange(B)), mean over B."""
    logits = pooled_text @ pooled_video.T
    return F.cross_entropy(logits.float(), torch.arange(logits.shape[0], device=logits.device))


def mm_contrastive_loss(pooled_text: torch.Tensor, pooled_video: torch.Tensor) -> torch.Tensor:
    """MMPT's ``MMContraLoss``: CE(video @ text^T) + CE(text @ video^T), each a mean over B."""
    target = torch.arange(pooled_text.shape[0], device=pooled_text.device)
    return F.cross_entropy((pooled_video @ pooled_text.T).float(), target) + F.cross_entropy((pooled_text @ pooled_video.T).float(), target)


__all__ = [
    "VLMEncoderOutput",
    "VLMForPretraining",
    "VLMPretrainingOutput",
    "VLMRetrievalOutput",
    "additive",
    "isolated_mask",
    "joint_keep_mask",
    "joint_position_ids",
    "joint_token_type_ids",
    "mm_contrastive_loss",
    "t2v_contrastive_loss",
]
