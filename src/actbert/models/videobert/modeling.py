"""VideoBERT (Sun et al., 2019): one BERT over WordPiece + ``[>]`` + visual words, with its heads.

* Embeddings (BERT's): word + position + token type, LayerNorm, dropout. The text rows are the
  BERT checkpoint's word table (``embeddings.word_embeddings``, exactly the tokenizer's ids); ``[>]``
  and the visual words are a second table (``embeddings.visual_embeddings``, row 0 = ``[>]``, row
  ``1 + j`` = visual word ``j``), so the checkpoint's table loads unchanged. Visual rows start from
  the vocabulary's leaf centroids through a fixed random projection (paper 4.3 copies the S3D
  centroids, which are as wide as BERT-large); both tables are frozen when
  ``freeze_input_embeddings`` (paper 4.3).
* Encoder: ``num_layers`` post-LN BERT layers (``encoder.layer.i``, Hugging Face names).
* Heads: BERT's MLM head over the joint vocabulary (decoder tied to both tables) for the masked
  words and visual words, and BERT's pooler + a 2-way classifier on ``[CLS]`` for the
  linguistic-visual alignment (paper 3.2; ``cls.seq_relationship`` as BERT's next-sentence head).

Pretraining losses (each the mean over its targets; 0 when a batch has none): ``text_mlm`` (masked
words of text-only rows), ``video_mlm`` (masked visual words of video-only rows), ``cloze``
(masked words and visual words of aligned text-video rows), ``align`` (cross-entropy of the
alignment classifier on text-video rows); the loss is their ``loss_weights`` sum (paper: "a
weighted sum of the individual objectives").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from actbert.models.interface import PretrainingOutput, VideoTextModel
from actbert.models.layers import LAYER_NORM_EPS, PredictionTransform, TransformerLayer, init_bert_weights
from actbert.models.losses import masked_lm_loss, zero_like
from actbert.models.videobert.configuration import VideoBertConfig
from actbert.models.videobert.processing import REGIME_ID, VideoBertBatch, VideoBertDataError, VideoBertProcessor


@dataclass
class VideoBertOutput(PretrainingOutput):
    mlm_logits: torch.Tensor | None = None  # [N, joint vocab] at the N target positions
    align_logits: torch.Tensor | None = None  # [B, 2]


class VideoBertEmbeddings(nn.Module):
    def __init__(self, config: VideoBertConfig):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.visual_embeddings = nn.Embedding(1 + config.visual_vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Joint ids ``[B, L]`` -> rows ``[B, L, D]`` (text table below ``vocab_size``, the visual one from it)."""
        vt = self.config.vocab_size
        is_text = ids < vt
        text = self.word_embeddings(torch.where(is_text, ids, torch.zeros_like(ids)))
        visual = self.visual_embeddings(torch.where(is_text, torch.zeros_like(ids), ids - vt))
        return torch.where(is_text[..., None], text, visual)

    def forward(self, ids: torch.Tensor, token_types: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] > self.config.max_position_embeddings:
            raise VideoBertDataError(f"batch: field 'input_ids' has {ids.shape[1]} positions, more than "
                                     f"max_position_embeddings={self.config.max_position_embeddings}")
        positions = torch.arange(ids.shape[1], device=ids.device)[None]
        x = self.lookup(ids) + self.position_embeddings(positions) + self.token_type_embeddings(token_types)
        return self.dropout(self.LayerNorm(x))

    def joint_table(self) -> torch.Tensor:
        """``[joint vocab, D]``: the tied output table."""
        return torch.cat([self.word_embeddings.weight, self.visual_embeddings.weight], dim=0)


class VideoBertModel(VideoTextModel):
    """The encoder: ``batch -> hidden states [B, L, D]``."""

    config_class = VideoBertConfig
    processor_class = VideoBertProcessor

    def __init__(self, config: VideoBertConfig):
        super().__init__()
        self.config = config
        self.embeddings = VideoBertEmbeddings(config)
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList([
            TransformerLayer(config.hidden_size, config.num_heads, config.intermediate_size, config.hidden_dropout,
                             config.attention_dropout, config.activation)
            for _ in range(config.num_layers)
        ])})
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def forward(self, batch: VideoBertBatch) -> torch.Tensor:
        ids = batch.input_ids
        if int(ids.max()) >= self.config.joint_vocab_size or int(ids.min()) < 0:
            raise VideoBertDataError(f"batch: field 'input_ids' has ids outside [0, {self.config.joint_vocab_size}) "
                                     "(a visual vocabulary of another size?)")
        h = self.embeddings(ids, batch.token_type_ids)
        keep = batch.attention_mask
        for layer in self.encoder["layer"]:
            h = layer(h, keep)
        return h


class VideoBertForPretraining(VideoBertModel):
    """VideoBERT with its MLM and alignment heads, the pretraining losses and the task capabilities."""

    text_stream_prefixes = ("embeddings.word_embeddings", "embeddings.position", "embeddings.token_type",
                            "embeddings.LayerNorm", "encoder.")
    text_head_prefixes = ("cls.predictions",)

    def __init__(self, config: VideoBertConfig):
        super().__init__(config)
        d = config.hidden_size
        self.pooler = nn.Linear(d, d)
        self.cls = nn.ModuleDict({
            "predictions": _MlmHead(d, config.joint_vocab_size, config.activation),
            "seq_relationship": nn.Linear(d, 2),
        })
        for module in (self.pooler, self.cls):
            module.apply(lambda m: init_bert_weights(m, config.initializer_range))
        self._init_visual_rows()
        if config.freeze_input_embeddings:
            self.embeddings.word_embeddings.weight.requires_grad_(False)
            self.embeddings.visual_embeddings.weight.requires_grad_(False)

    def _init_visual_rows(self) -> None:
        """Visual-word rows = leaf centroids x a fixed random projection, scaled to the init's row norm."""
        c = self.config
        if c.visual_init != "centroids" or not c.visual_vocab:
            return
        from pathlib import Path

        from actbert.models.videobert.processing import vocabulary_of

        if not (Path(c.visual_vocab) / "visual_vocab.json").is_file():
            return  # a saved model being reloaded without its vocabulary: the weights come from the file
        leaves = torch.from_numpy(np.asarray(vocabulary_of(c).leaf_centroids(), np.float32))
        g = torch.Generator().manual_seed(0)
        proj = torch.randn(c.feature_dim, c.hidden_size, generator=g) / math.sqrt(c.feature_dim)
        rows = (leaves - leaves.mean(0, keepdim=True)) @ proj
        rows = rows / rows.norm(dim=1).mean().clamp(min=1e-12) * (c.initializer_range * math.sqrt(c.hidden_size))
        with torch.no_grad():
            self.embeddings.visual_embeddings.weight[1:] = rows

    # -- the model interface
    @classmethod
    def fill_config_from_data(cls, config: VideoBertConfig, schema: Any, tokenizer: Any) -> VideoBertConfig:
        from dataclasses import replace

        from actbert.models.videobert.processing import load_vocabulary

        if not config.visual_vocab:
            raise VideoBertDataError("model: field 'visual_vocab' is not set; build one with `actbert build-visual-vocab` "
                                     "and pass --set model.visual_vocab=FOLDER")
        vocab = load_vocabulary(str(config.visual_vocab))
        action_dim = getattr(schema, "action_dim", None)
        if action_dim is not None and int(action_dim) != vocab.feature_dim:
            raise VideoBertDataError(f"{vocab.source}: built for feature_dim={vocab.feature_dim}, but the feature store's "
                                     f"schema field 'action_dim' is {action_dim} (a vocabulary of another store)")
        return replace(config, vocab_size=int(tokenizer.vocab_size), pad_token_id=int(tokenizer.pad_id),
                       cls_token_id=int(tokenizer.cls_id), sep_token_id=int(tokenizer.sep_id),
                       mask_token_id=int(tokenizer.mask_id), visual_vocab_size=vocab.size,
                       vocab_depth=vocab.depth, vocab_branching=vocab.branching,
                       feature_dim=vocab.feature_dim, clip_seconds=vocab.clip_seconds)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "embeddings": [p for p in self.embeddings.parameters() if p.requires_grad],
            "encoder": list(self.encoder.parameters()),
            "mlm_head": list(self.cls["predictions"].parameters()),
            "alignment": list(self.pooler.parameters()) + list(self.cls["seq_relationship"].parameters()),
        }

    def text_weight_name(self, bert_name: str) -> str | None:
        """Hugging Face BERT names -> ours (same layout; the pooler is ``pooler.dense`` there)."""
        if bert_name.startswith(("embeddings.word_embeddings", "embeddings.position_embeddings",
                                 "embeddings.token_type_embeddings", "embeddings.LayerNorm", "encoder.layer.")):
            return bert_name
        if bert_name.startswith("pooler.dense."):
            return "pooler." + bert_name[len("pooler.dense."):]
        if bert_name.startswith("cls.predictions.transform."):
            return bert_name
        if bert_name.startswith("cls.seq_relationship."):
            return bert_name
        return None

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., D] -> [..., joint vocab]`` through the tied MLM head."""
        return self.cls["predictions"](hidden, self.embeddings.joint_table())

    def align_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[B, L, D] -> [B, 2]`` (0 = not aligned, 1 = aligned) from ``[CLS]``."""
        return self.cls["seq_relationship"](torch.tanh(self.pooler(hidden[:, 0])))

    def forward(self, batch: VideoBertBatch) -> VideoBertOutput:
        hidden = super().forward(batch)
        labels, regime = batch.mlm_labels, batch.regime
        if labels is None or regime is None or batch.align_labels is None:
            raise VideoBertDataError("batch: fields 'mlm_labels', 'regime' and 'align_labels' are needed for pretraining")
        has_target = labels != -100
        rows = regime[:, None].expand_as(labels)
        logits = self.logits(hidden[has_target])  # [N, V]
        targets, row_regime = labels[has_target], rows[has_target]
        losses = {}
        for name, regime_name in (("text_mlm", "text"), ("video_mlm", "video"), ("cloze", "text_video")):
            losses[name] = masked_lm_loss(logits, targets, row_regime == REGIME_ID[regime_name]) if len(targets) else zero_like(hidden)
        tv = (regime == REGIME_ID["text_video"]) & (batch.align_labels >= 0)
        align = self.align_logits(hidden)
        losses["align"] = (F.cross_entropy(align[tv].float(), batch.align_labels[tv].long()) if bool(tv.any())
                           else zero_like(align))
        w = self.config.loss_weights
        total = sum(w[name] * value for name, value in losses.items())
        return VideoBertOutput(loss=total, losses=losses, mlm_logits=logits, align_logits=align)

    # -- capabilities
    def pair_scores(self, batch: VideoBertBatch) -> torch.Tensor:
        """Alignment log-odds of ``[CLS] text [>] video [SEP]``: ``[B]``."""
        logits = self.align_logits(VideoBertModel.forward(self, batch)).float()
        return logits[:, 1] - logits[:, 0]

    def masked_token_logits(self, batch: VideoBertBatch, positions: torch.Tensor) -> torch.Tensor:
        """Word logits (the text part of the joint vocabulary) at ``positions`` ``[B, L]``: ``[N, vocab_size]``."""
        hidden = VideoBertModel.forward(self, batch)
        return self.logits(hidden[positions.to(hidden.device)])[:, : self.config.vocab_size]

    @property
    def unit_state_dim(self) -> int:
        return self.config.hidden_size

    def unit_states(self, batch: VideoBertBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The output state of each unit's visual word: ``[B, W, D]``, valid ``[B, W]``."""
        if batch.unit_index is None:
            raise VideoBertDataError("batch: field 'unit_index' is missing (a batch from the task processor is needed)")
        hidden = VideoBertModel.forward(self, batch)
        index = batch.unit_index.to(hidden.device)
        valid = index >= 0
        states = torch.gather(hidden, 1, index.clamp(min=0)[..., None].expand(-1, -1, hidden.shape[-1]))
        return states * valid[..., None], valid

    @property
    def caption_memory_dim(self) -> int:
        return 2 * self.config.hidden_size

    def caption_memory(self, batch: VideoBertBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Paper 4.6: the mean of the visual-word states and the mean of the template's ``[MASK]``
        states, concatenated: ``[B, 1, 2D]`` ("pooled"), or every visual-word state with that mask mean
        appended ``[B, M, 2D]`` ("tokens")."""
        hidden = VideoBertModel.forward(self, batch)
        ids = batch.input_ids.to(hidden.device)
        keep = batch.attention_mask.to(hidden.device)
        visual = (ids > self.config.next_token_id) & keep
        masks = (ids == self.config.mask_token_id) & (batch.token_type_ids.to(hidden.device) == 0) & keep

        def mean(where: torch.Tensor) -> torch.Tensor:
            w = where.to(hidden.dtype)[..., None]
            return (hidden * w).sum(1) / w.sum(1).clamp(min=1.0)

        mask_mean = mean(masks)  # [B, D]; zeros without a template
        if self.config.caption_memory_mode == "pooled":
            return torch.cat([mean(visual), mask_mean], -1)[:, None], torch.ones(hidden.shape[0], 1, dtype=torch.bool, device=hidden.device)
        memory = torch.cat([hidden, mask_mean[:, None].expand_as(hidden)], -1)
        return memory * visual[..., None], visual

    def word_embeddings(self) -> torch.Tensor:
        """The word table (text ids only): ``[vocab_size, D]``."""
        return self.embeddings.word_embeddings.weight


class _MlmHead(nn.Module):
    """BERT's ``cls.predictions``: transform, then the tied table + a bias over the joint vocabulary."""

    def __init__(self, hidden: int, vocab: int, activation: str):
        super().__init__()
        self.transform = PredictionTransform(hidden, activation)
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return self.transform(x) @ table.T.to(x.dtype) + self.bias.to(x.dtype)


__all__ = ["VideoBertForPretraining", "VideoBertModel", "VideoBertOutput"]
