"""ActBERT (Zhu & Yang, CVPR 2020): embeddings, tangled transformer, pretraining heads and losses.

Reading order: :class:`ActBertConfig` -> :class:`TextEmbeddings` / :class:`VisualEmbeddings` ->
:class:`ActBertModel` (three streams and the tangled schedule) -> heads ->
:class:`ActBertForPretraining` (the four pretraining losses).

Input (paper 3.2.1), as the three aligned streams of :class:`~actbert.data.batch.ActBertBatch`:

* text (w-stream, width ``Dt``): BERT embeddings -- word + position + segment, LayerNorm,
  dropout. The word table covers the tokenizer (WordPiece + ``[ACT]`` + ``[REGION]``).
* action (a-stream, width ``Dv``) and region (r-stream, width ``Dv``): token + position + segment
  + visual embedding, LayerNorm, dropout. The visual streams carry the tokenizer's ids for
  ``[ACT]`` / ``[REGION]`` / ``[SEP]`` / ``[PAD]``; the model maps these four ids (config
  ``act_token_id`` ...) onto a 4-entry visual token table of its own (:data:`VISUAL_TOKENS`), so
  every action shares one ``[ACT]`` embedding and every region one ``[REGION]`` embedding. The
  visual embedding is ``Linear(feature)`` for actions and ``Linear(feature) + Linear(location5)``
  for regions (the 5-d spatial embedding separates regions of one frame, which share a
  position id). Segment ids (clip index) index a ``type_vocab_size`` table in each stream.

Tangled schedule (3.2.2). Each stream has its own depth (``text_layers``, ``action_layers``,
``region_layers``) and a list of tangled layer indices (``text_tangled`` ...; all three lists have
the same length K). For the k-th tangled block, each stream first runs its plain layers up to
(not including) its k-th tangled index, then the three k-th tangled layers run together through
:class:`~actbert.models.tangled.TangledBlock`; after the last block each stream runs its remaining
layers. With K = 0 the streams never meet (the text stream is then plain BERT).

Pooled output: ``tanh(dense(text[:, 0]))`` -- the paper applies its matching layer on the [CLS]
output; the pooler keeps BERT's naming (``pooler.dense``) so BERT's pooler weights load into it.
The matching head (:class:`CrossModalMatchingHead`) reads it alone (``match_fusion="cls"``) or,
by default, multiplied by a pooled summary of the visual streams (``"mul"``, the fusion of the
released implementation), which makes matching learnable in a short run.

Pretraining losses (3.2.3), each averaged over its valid targets and exactly 0 (not NaN) when a
batch has none:

* ``mlm``: masked language modelling with visual cues -- BERT prediction head whose decoder is
  TIED to the word embeddings; cross-entropy at ``mlm_labels != -100``.
* ``action``: masked action classification over the mined verb vocabulary -- soft-target
  cross-entropy ``-sum_v t_v log softmax(z)_v`` at ``action_target_mask`` (rows whose target is
  all-zero are skipped).
* ``region``: masked object classification -- ``KL(p_detector || softmax(z))`` summed over
  classes, averaged over ``region_target_mask``.
* ``match``: cross-modal matching on [CLS] (fused with the pooled video, see above) -- ONE
  logit, sigmoid / binary cross-entropy against ``match_labels``.
  :meth:`ActBertForPretraining.match_score` exposes the logit for retrieval.

Masked losses count only matched pairs (``match_labels == 1``): for a mismatched pair the text
does not describe the video, so reconstructing masked words / actions / regions from the other
modality would teach wrong alignments (ViLBERT does the same). Without ``match_labels`` every
row counts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from actbert.config import ConfigError
from actbert.data.batch import ActBertBatch
from actbert.models.layers import (
    ACTIVATIONS,
    LAYER_NORM_EPS,
    PredictionTransform,
    TransformerLayer,
    init_bert_weights,
)
from actbert.models.pretrained import PretrainedModelMixin
from actbert.models.tangled import TangledBlock

# Rows of the visual token table (the model's own ids; batches carry tokenizer ids).
VISUAL_TOKENS = ("[PAD]", "[SEP]", "[ACT]", "[REGION]")
LOCATION_DIM = 5  # x1/W, y1/H, x2/W, y2/H, area fraction
LOSS_NAMES = ("mlm", "action", "region", "match")
MATCH_FUSIONS = ("cls", "mul")


class BatchError(ValueError):
    """A batch that does not fit the model (wrong dimension, id out of range, non-finite feature)."""


@dataclass
class ActBertConfig:
    """Hyper-parameters of :class:`ActBertModel` (the ``model:`` section of ``configs/*.yaml``).

    Defaults are the paper's base model. Feature dims and ``vocab_size`` are filled by the data
    side from the feature store schema and the tokenizer.
    """

    architecture: str = "actbert"
    # text stream (w-transformer), BERT layout
    vocab_size: int = 30524
    text_hidden_size: int = 768
    text_num_heads: int = 12
    text_intermediate_size: int = 3072
    text_layers: int = 12
    text_tangled: list[int] = field(default_factory=lambda: [6, 7, 8, 9, 10, 11])
    max_position_embeddings: int = 512
    type_vocab_size: int = 16  # segment ids = clip index; >= clips per sample + 1
    # tokenizer ids that may appear in the visual streams
    pad_token_id: int = 0
    sep_token_id: int = 102
    act_token_id: int = 30522
    region_token_id: int = 30523
    # visual streams (a- and r-transformers share the width)
    visual_hidden_size: int = 1024
    visual_num_heads: int = 8
    visual_intermediate_size: int = 1024
    action_layers: int = 6
    action_tangled: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5])
    region_layers: int = 6
    region_tangled: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5])
    max_visual_positions: int = 512
    # input/output dims from the data
    action_feature_dim: int = 2048
    region_feature_dim: int = 2048
    num_actions: int = 1000
    num_region_classes: int = 1601
    # regularisation and init
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    initializer_range: float = 0.02
    use_regions: bool = True  # False: the region stream is skipped ("without region cues")
    # what the matching head reads: "cls" = the text [CLS] alone; "mul" = [CLS] x pooled video
    # (the released implementation's fusion; see CrossModalMatchingHead)
    match_fusion: str = "mul"
    loss_weights: dict[str, float] = field(default_factory=lambda: {name: 1.0 for name in LOSS_NAMES})
    # text checkpoint (folder or installed package) loaded by pretrained.create_model; None = random
    text_init: str | None = None

    def __post_init__(self) -> None:
        def fail(key: str, why: str) -> None:
            raise ConfigError(f"ActBertConfig.{key}: {why}")

        if self.architecture != "actbert":
            fail("architecture", f"must be 'actbert' for this model, got {self.architecture!r}")
        for key in (
            "vocab_size", "text_hidden_size", "text_num_heads", "text_intermediate_size", "max_position_embeddings",
            "type_vocab_size", "visual_hidden_size", "visual_num_heads", "visual_intermediate_size",
            "max_visual_positions", "action_feature_dim", "region_feature_dim", "num_actions", "num_region_classes",
        ):  # fmt: skip
            if getattr(self, key) <= 0:
                fail(key, f"must be positive, got {getattr(self, key)}")
        if self.text_hidden_size % self.text_num_heads:
            fail("text_num_heads", f"{self.text_num_heads} does not divide text_hidden_size={self.text_hidden_size}")
        if self.visual_hidden_size % self.visual_num_heads:
            fail("visual_num_heads", f"{self.visual_num_heads} does not divide visual_hidden_size={self.visual_hidden_size}")
        for stream in ("text", "action", "region"):
            depth, tangled = getattr(self, f"{stream}_layers"), list(getattr(self, f"{stream}_tangled"))
            if depth < 0:
                fail(f"{stream}_layers", f"must be >= 0, got {depth}")
            if any(not 0 <= i < depth for i in tangled):
                fail(f"{stream}_tangled", f"indices {tangled} must lie in [0, {stream}_layers={depth})")
            if any(b <= a for a, b in zip(tangled, tangled[1:])):
                fail(f"{stream}_tangled", f"indices {tangled} must be strictly increasing")
        if not len(self.text_tangled) == len(self.action_tangled) == len(self.region_tangled):
            fail(
                "text_tangled",
                f"text_tangled {self.text_tangled}, action_tangled {self.action_tangled} and region_tangled "
                f"{self.region_tangled} must have the same length (one entry per tangled block)",
            )
        if self.match_fusion not in MATCH_FUSIONS:
            fail("match_fusion", f"{self.match_fusion!r} is not one of {list(MATCH_FUSIONS)}")
        if self.activation not in ACTIVATIONS:
            fail("activation", f"{self.activation!r} is not one of {sorted(ACTIVATIONS)}")
        for key in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                fail(key, f"must be in [0, 1), got {getattr(self, key)}")
        unknown = sorted(set(self.loss_weights) - set(LOSS_NAMES))
        if unknown:
            fail("loss_weights", f"unknown loss name(s) {unknown}; known: {list(LOSS_NAMES)}")
        self.loss_weights = {name: float(self.loss_weights.get(name, 1.0)) for name in LOSS_NAMES}
        ids = [self.pad_token_id, self.sep_token_id, self.act_token_id, self.region_token_id]
        if len(set(ids)) != 4:
            fail("act_token_id", f"pad/sep/act/region token ids must differ, got {ids}")

    @property
    def num_tangled(self) -> int:
        return len(self.text_tangled)


# ----------------------------------------------------------------------------------------------
# Embeddings


class TextEmbeddings(nn.Module):
    """BERT embeddings: ``[B, Lt]`` ids -> ``[B, Lt, Dt]`` (word + position + segment, LN, dropout).

    Parameter names follow Hugging Face ``BertEmbeddings``.
    """

    def __init__(self, config: ActBertConfig):
        super().__init__()
        width = config.text_hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, width)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, width)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width)
        self.LayerNorm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, segment_ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        x = x + self.token_type_embeddings(segment_ids)
        return self.dropout(self.LayerNorm(x))


class VisualEmbeddings(nn.Module):
    """One visual stream: ``[B, L]`` ids + ``[B, L, Df]`` features (+ ``[B, L, 5]`` locations)
    -> ``[B, L, Dv]``.

    token (4-entry visual table) + position + segment + ``feature_projection(feature)``
    (+ ``location_projection(location)`` for regions), then LayerNorm and dropout.
    """

    def __init__(self, config: ActBertConfig, feature_dim: int, with_location: bool):
        super().__init__()
        width = config.visual_hidden_size
        self.token_embeddings = nn.Embedding(len(VISUAL_TOKENS), width)
        self.position_embeddings = nn.Embedding(config.max_visual_positions, width)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width)
        self.feature_projection = nn.Linear(feature_dim, width)
        self.location_projection = nn.Linear(LOCATION_DIM, width) if with_location else None
        self.LayerNorm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        visual_token_index: torch.Tensor,
        features: torch.Tensor,
        position_ids: torch.Tensor,
        segment_ids: torch.Tensor,
        locations: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.token_embeddings(visual_token_index) + self.position_embeddings(position_ids)
        x = x + self.token_type_embeddings(segment_ids)
        x = x + self.feature_projection(features.to(self.feature_projection.weight.dtype))
        if self.location_projection is not None:
            x = x + self.location_projection(locations.to(self.location_projection.weight.dtype))
        return self.dropout(self.LayerNorm(x))


class StreamEncoder(nn.Module):
    """The layers of one stream (``<stream>_encoder.layer.N``, as BERT's ``encoder.layer.N``)."""

    def __init__(self, depth: int, hidden: int, heads: int, intermediate: int, config: ActBertConfig):
        super().__init__()
        self.layer = nn.ModuleList(
            TransformerLayer(hidden, heads, intermediate, config.hidden_dropout, config.attention_dropout, config.activation)
            for _ in range(depth)
        )

    def run(self, x: torch.Tensor, mask: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Plain (untangled) layers ``start .. stop-1``."""
        for layer in self.layer[start:stop]:
            x = layer(x, mask)
        return x


class Pooler(nn.Module):
    """``tanh(dense(text[:, 0]))``: ``[B, Lt, Dt] -> [B, Dt]`` (BERT's pooler on [CLS])."""

    def __init__(self, hidden: int):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(text[:, 0]))


@dataclass
class ActBertEncoderOutput:
    text: torch.Tensor  # [B, Lt, Dt]
    action: torch.Tensor  # [B, La, Dv]
    region: torch.Tensor | None  # [B, Lr, Dv]; None when the region stream is not used
    pooled: torch.Tensor  # [B, Dt]


# ----------------------------------------------------------------------------------------------
# Input checks


def _describe(batch: ActBertBatch) -> str:
    if not batch.video_ids:
        return ""
    shown = ", ".join(batch.video_ids[:4]) + (" ..." if len(batch.video_ids) > 4 else "")
    return f" (videos: {shown})"


def check_batch(batch: ActBertBatch, config: ActBertConfig, use_regions: bool) -> None:
    """Raise :class:`BatchError` naming the field if ``batch`` does not fit ``config``."""
    where = _describe(batch)

    def fail(name: str, why: str) -> None:
        raise BatchError(f"ActBertBatch.{name}: {why}{where}")

    def check_shape(name: str, expected: tuple[int, ...]) -> None:
        shape = tuple(getattr(batch, name).shape)
        if shape != expected:
            fail(name, f"shape {list(shape)} does not match the expected {list(expected)}")

    def check_range(name: str, limit: int, config_key: str) -> None:
        ids = getattr(batch, name)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= limit):
            fail(name, f"ids must lie in [0, {limit}) (config {config_key}={limit}), got [{int(ids.min())}, {int(ids.max())}]")

    b, lt = batch.input_ids.shape
    for name in ("text_segment_ids", "text_position_ids", "text_mask"):
        check_shape(name, (b, lt))
    check_range("input_ids", config.vocab_size, "vocab_size")
    check_range("text_position_ids", config.max_position_embeddings, "max_position_embeddings")
    check_range("text_segment_ids", config.type_vocab_size, "type_vocab_size")
    streams = [("action", config.action_feature_dim)] + ([("region", config.region_feature_dim)] if use_regions else [])
    for stream, dim in streams:
        length = getattr(batch, f"{stream}_token_ids").shape[1]
        for name in ("segment_ids", "position_ids", "mask", "token_ids"):
            check_shape(f"{stream}_{name}", (b, length))
        check_shape(f"{stream}_features", (b, length, dim))
        if stream == "region":
            check_shape("region_locations", (b, length, LOCATION_DIM))
        check_range(f"{stream}_position_ids", config.max_visual_positions, "max_visual_positions")
        check_range(f"{stream}_segment_ids", config.type_vocab_size, "type_vocab_size")
        for name in (f"{stream}_features",) + (("region_locations",) if stream == "region" else ()):
            if not bool(torch.isfinite(getattr(batch, name)).all()):
                fail(name, "contains NaN or infinite values")


def visual_token_index(token_ids: torch.Tensor, config: ActBertConfig, name: str) -> torch.Tensor:
    """Tokenizer ids ``[B, L]`` of a visual stream -> rows of the visual token table ``[B, L]``."""
    index = torch.zeros_like(token_ids)
    known = token_ids == config.pad_token_id
    for row, token_id in enumerate((config.sep_token_id, config.act_token_id, config.region_token_id), start=1):
        hit = token_ids == token_id
        index = torch.where(hit, torch.full_like(index, row), index)
        known = known | hit
    if not bool(known.all()):
        bad = sorted(set(token_ids[~known].tolist()))[:5]
        raise BatchError(
            f"ActBertBatch.{name}: ids {bad} are not [PAD]/[SEP]/[ACT]/[REGION] (config pad/sep/act/region_token_id = "
            f"{config.pad_token_id}/{config.sep_token_id}/{config.act_token_id}/{config.region_token_id})"
        )
    return index


# ----------------------------------------------------------------------------------------------
# The encoder


class ActBertModel(PretrainedModelMixin, nn.Module):
    """Embeddings + tangled transformer: ``batch -> ActBertEncoderOutput``.

    ``forward(batch, use_regions=None)``: ``use_regions=False`` (or ``config.use_regions=False``,
    or an empty region stream) skips the region stream entirely -- for the "without region cues"
    ablations and for captioning, which uses the action stream only; ``output.region`` is then None.
    """

    config_class = ActBertConfig

    def __init__(self, config: ActBertConfig):
        super().__init__()
        self.config = config
        self.text_embeddings = TextEmbeddings(config)
        self.action_embeddings = VisualEmbeddings(config, config.action_feature_dim, with_location=False)
        self.region_embeddings = VisualEmbeddings(config, config.region_feature_dim, with_location=True)
        visual = (config.visual_hidden_size, config.visual_num_heads, config.visual_intermediate_size)
        self.text_encoder = StreamEncoder(
            config.text_layers, config.text_hidden_size, config.text_num_heads, config.text_intermediate_size, config
        )
        self.action_encoder = StreamEncoder(config.action_layers, *visual, config)
        self.region_encoder = StreamEncoder(config.region_layers, *visual, config)
        self.tangled = nn.ModuleList(
            TangledBlock(config.text_hidden_size, config.visual_hidden_size, config.visual_num_heads, config.attention_dropout)
            for _ in range(config.num_tangled)
        )
        self.pooler = Pooler(config.text_hidden_size)
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def forward(self, batch: ActBertBatch, use_regions: bool | None = None) -> ActBertEncoderOutput:
        config = self.config
        use_regions = config.use_regions if use_regions is None else use_regions
        use_regions = use_regions and batch.region_token_ids.shape[1] > 0
        check_batch(batch, config, use_regions)

        text_mask = batch.text_mask.bool()
        action_mask = batch.action_mask.bool()
        text = self.text_embeddings(batch.input_ids, batch.text_position_ids, batch.text_segment_ids)
        action = self.action_embeddings(
            visual_token_index(batch.action_token_ids, config, "action_token_ids"),
            batch.action_features,
            batch.action_position_ids,
            batch.action_segment_ids,
        )
        region = region_mask = None
        if use_regions:
            region_mask = batch.region_mask.bool()
            region = self.region_embeddings(
                visual_token_index(batch.region_token_ids, config, "region_token_ids"),
                batch.region_features,
                batch.region_position_ids,
                batch.region_segment_ids,
                batch.region_locations,
            )

        # Tangled schedule: plain layers up to each stream's k-th tangled index, then the k-th block.
        next_text = next_action = next_region = 0
        for k, block in enumerate(self.tangled):
            t, a, r = config.text_tangled[k], config.action_tangled[k], config.region_tangled[k]
            text = self.text_encoder.run(text, text_mask, next_text, t)
            action = self.action_encoder.run(action, action_mask, next_action, a)
            if region is not None:
                region = self.region_encoder.run(region, region_mask, next_region, r)
            text, action, region = block(
                text,
                action,
                region,
                text_mask,
                action_mask,
                region_mask,
                self.text_encoder.layer[t],
                self.action_encoder.layer[a],
                self.region_encoder.layer[r] if region is not None else None,
            )
            next_text, next_action, next_region = t + 1, a + 1, r + 1
        text = self.text_encoder.run(text, text_mask, next_text, config.text_layers)
        action = self.action_encoder.run(action, action_mask, next_action, config.action_layers)
        if region is not None:
            region = self.region_encoder.run(region, region_mask, next_region, config.region_layers)
        return ActBertEncoderOutput(text=text, action=action, region=region, pooled=self.pooler(text))


# ----------------------------------------------------------------------------------------------
# Pretraining heads and losses


class MaskedLanguageModelHead(nn.Module):
    """``[..., Dt] -> [..., vocab]``: BERT prediction transform + decoder tied to the word table."""

    def __init__(self, config: ActBertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = PredictionTransform(config.text_hidden_size, config.activation)
        self.decoder = nn.Linear(config.text_hidden_size, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight  # tied
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x)) + self.bias


class ClassificationHead(nn.Module):
    """``[..., D] -> [..., num_classes]``: prediction transform + linear classifier."""

    def __init__(self, hidden: int, num_classes: int, activation: str):
        super().__init__()
        self.transform = PredictionTransform(hidden, activation)
        self.decoder = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x))


def masked_mean(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``[B, L, D]`` and ``[B, L]`` bool -> mean over the kept positions ``[B, D]`` (0 for a row with none)."""
    weight = keep.to(x.dtype).unsqueeze(-1)
    return (x * weight).sum(1) / weight.sum(1).clamp(min=1)


class VideoPooler(nn.Module):
    """``tanh(action(mean h_a) + region(mean h_r))``: the visual streams -> ``[B, Dt]``.

    Means over the real positions of each stream; the region term is left out when the region
    stream did not run ("without region cues", captioning).
    """

    def __init__(self, config: ActBertConfig):
        super().__init__()
        self.action = nn.Linear(config.visual_hidden_size, config.text_hidden_size)
        self.region = nn.Linear(config.visual_hidden_size, config.text_hidden_size)

    def forward(self, encoded: ActBertEncoderOutput, batch: ActBertBatch) -> torch.Tensor:
        x = self.action(masked_mean(encoded.action, batch.action_mask.bool()))
        if encoded.region is not None:
            x = x + self.region(masked_mean(encoded.region, batch.region_mask.bool()))
        return torch.tanh(x)


class CrossModalMatchingHead(nn.Module):
    """The cross-modal matching logit ``[B]`` (higher = the text describes the video).

    ``match_fusion="cls"``: ``classifier(pooled_t)``, the paper's wording (the [CLS] output). In the
    three-stream layout the [CLS] token sees the video only through the few stacked ``c_r`` keys
    of the tangled layers, and on the random corpus this head stays at ln 2 for 1,000+ CPU steps
    (docs/pretraining.md).

    ``match_fusion="mul"``: ``classifier(pooled_t * pooled_v)`` with ``pooled_v`` from
    :class:`VideoPooler` -- the multiplicative fusion of the stream poolers that the released
    implementation uses (it adds a third, action-only pooled term, which cannot depend on the text
    and so carries no matching signal; it is left out here). The product is a direct bilinear
    text-by-video path, on top of what [CLS] gathers through the tangled layers.
    """

    def __init__(self, config: ActBertConfig):
        super().__init__()
        self.video_pooler = VideoPooler(config) if config.match_fusion == "mul" else None
        self.classifier = nn.Linear(config.text_hidden_size, 1)

    def init_classifier(self) -> None:
        """With fusion, start the classifier as a scaled dot product of the two pooled vectors.

        A random classifier makes ``w . (p_t * p_v)`` a random bilinear form whose gradients are
        small until ``w``, ``p_t`` and ``p_v`` happen to agree; an all-equal ``w`` gives the
        Hebbian gradient "move p_v towards p_t for matched pairs" from the first step.
        """
        if self.video_pooler is not None:
            # 4 / sqrt(D): for unrelated pooled vectors (entries ~ +-0.5) the logit starts near unit scale
            nn.init.constant_(self.classifier.weight, 4.0 / self.classifier.in_features**0.5)
            nn.init.zeros_(self.classifier.bias)

    def forward(self, encoded: ActBertEncoderOutput, batch: ActBertBatch) -> torch.Tensor:
        pooled = encoded.pooled
        if self.video_pooler is not None:
            pooled = pooled * self.video_pooler(encoded, batch)
        return self.classifier(pooled).squeeze(-1)


@dataclass
class PretrainingOutput:
    loss: torch.Tensor  # [] weighted sum of the four losses
    losses: dict[str, torch.Tensor]  # "mlm", "action", "region", "match": [] each
    mlm_logits: torch.Tensor | None  # [N, vocab] at the N positions with mlm_labels != -100 (row-major)
    action_logits: torch.Tensor  # [B, La, num_actions]
    region_logits: torch.Tensor | None  # [B, Lr, num_region_classes]; None without the region stream
    match_logits: torch.Tensor  # [B]
    encoder: ActBertEncoderOutput | None = None


def _zero_like(reference: torch.Tensor) -> torch.Tensor:
    """A scalar 0 that stays in the autograd graph of ``reference`` (so backward always works)."""
    return reference.sum().float() * 0.0


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """logits ``[N, V]``, labels ``[N]``, valid ``[N]`` bool -> mean CE over valid (0 if none)."""
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    return (ce * valid).sum() / valid.sum().clamp(min=1)


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """logits/targets ``[B, L, C]``, valid ``[B, L]`` -> mean over valid of ``-sum_c t_c log softmax(z)_c``."""
    ce = -(targets.float() * F.log_softmax(logits.float(), dim=-1)).sum(-1)
    return (ce * valid).sum() / valid.sum().clamp(min=1)


def region_kl_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """logits/targets ``[B, L, K]``, valid ``[B, L]`` -> mean over valid of ``KL(targets || softmax(logits))``."""
    kl = F.kl_div(F.log_softmax(logits.float(), dim=-1), targets.float(), reduction="none").sum(-1)
    return (kl * valid).sum() / valid.sum().clamp(min=1)


class ActBertForPretraining(PretrainedModelMixin, nn.Module):
    """ActBERT with its four pretraining heads: ``batch -> PretrainingOutput`` (see module docstring)."""

    config_class = ActBertConfig
    base_model_class = ActBertModel
    base_model_prefix = "actbert"

    def __init__(self, config: ActBertConfig):
        super().__init__()
        self.config = config
        self.actbert = ActBertModel(config)
        self.mlm_head = MaskedLanguageModelHead(config, self.actbert.text_embeddings.word_embeddings)
        self.action_head = ClassificationHead(config.visual_hidden_size, config.num_actions, config.activation)
        self.region_head = ClassificationHead(config.visual_hidden_size, config.num_region_classes, config.activation)
        self.match_head = CrossModalMatchingHead(config)
        for head in (self.mlm_head.transform, self.action_head, self.region_head, self.match_head):
            head.apply(lambda m: init_bert_weights(m, config.initializer_range))
        self.match_head.init_classifier()

    def matching_parameters(self) -> list[nn.Parameter]:
        """The matching path: the text pooler and the matching head (its video pooler included)."""
        return [*self.actbert.pooler.parameters(), *self.match_head.parameters()]

    def visual_stream_parameters(self) -> list[nn.Parameter]:
        """The action and region streams: their embeddings and layers (not the tangled connectors)."""
        model = self.actbert
        parts = (model.action_embeddings, model.region_embeddings, model.action_encoder, model.region_encoder)
        return [p for part in parts for p in part.parameters()]

    def match_score(self, batch: ActBertBatch, use_regions: bool | None = None) -> torch.Tensor:
        """Cross-modal matching logit ``[B]`` (higher = the text describes the video)."""
        return self.match_head(self.actbert(batch, use_regions), batch)

    def forward(self, batch: ActBertBatch, use_regions: bool | None = None) -> PretrainingOutput:
        encoded = self.actbert(batch, use_regions)
        match_logits = self.match_head(encoded, batch)  # [B]
        action_logits = self.action_head(encoded.action)  # [B, La, A]
        region_logits = self.region_head(encoded.region) if encoded.region is not None else None

        # Masked losses only for matched pairs (module docstring).
        if batch.match_labels is not None:
            matched = batch.match_labels > 0.5  # [B]
            match_loss = F.binary_cross_entropy_with_logits(match_logits.float(), batch.match_labels.float())
        else:
            matched = torch.ones_like(batch.text_mask[:, 0], dtype=torch.bool)
            match_loss = _zero_like(match_logits)

        mlm_logits = None
        mlm_loss = _zero_like(encoded.text)
        if batch.mlm_labels is not None:
            has_label = batch.mlm_labels != -100  # [B, Lt]
            mlm_logits = self.mlm_head(encoded.text[has_label])  # [N, V]
            valid = matched[:, None].expand_as(has_label)[has_label]  # [N]
            mlm_loss = masked_lm_loss(mlm_logits, batch.mlm_labels[has_label], valid) + _zero_like(mlm_logits)

        action_loss = _zero_like(action_logits)
        if batch.action_targets is not None and batch.action_target_mask is not None:
            valid = batch.action_target_mask.bool() & matched[:, None] & (batch.action_targets.sum(-1) > 0)
            action_loss = soft_target_cross_entropy(action_logits, batch.action_targets, valid)

        region_loss = _zero_like(region_logits if region_logits is not None else encoded.action)
        if region_logits is not None and batch.region_targets is not None and batch.region_target_mask is not None:
            valid = batch.region_target_mask.bool() & matched[:, None]
            region_loss = region_kl_loss(region_logits, batch.region_targets, valid)

        losses = {"mlm": mlm_loss, "action": action_loss, "region": region_loss, "match": match_loss}
        weights = self.config.loss_weights
        loss = sum(weights[name] * value for name, value in losses.items())
        return PretrainingOutput(
            loss=loss,
            losses=losses,
            mlm_logits=mlm_logits,
            action_logits=action_logits,
            region_logits=region_logits,
            match_logits=match_logits,
            encoder=encoded,
        )


def random_batch(
    config: ActBertConfig,
    batch_size: int = 2,
    clips: int | Sequence[int] = 3,
    words_per_clip: int = 4,
    regions_per_clip: int = 3,
    with_targets: bool = True,
    seed: int = 0,
) -> ActBertBatch:
    """A batch with the real layout and random content, for shape checks, tests and benchmarks.

    ``clips`` may differ per row (a sequence of length ``batch_size``) so rows carry padding.
    Text: ``[CLS] w.. [SEP] w.. [SEP] ..``; actions: ``[ACT] x C, [SEP]``; regions:
    ``([REGION] x n, [SEP]) x C``. Segment id = clip index; word positions run; action and
    region positions = clip (frame) index. Word ids avoid the special ids below 1000.
    """
    g = torch.Generator().manual_seed(seed)
    per_row = [clips] * batch_size if isinstance(clips, int) else list(clips)
    rows = []
    for c in per_row:
        text_ids, text_seg = [101], [0]
        for k in range(c):
            text_ids += torch.randint(1000, min(config.vocab_size, 30000), (words_per_clip,), generator=g).tolist() + [102]
            text_seg += [k] * (words_per_clip + 1)
        act_ids = [config.act_token_id] * c + [config.sep_token_id]
        act_pos, act_seg = list(range(c)) + [c], list(range(c)) + [max(c - 1, 0)]
        reg_ids, reg_pos = [], []
        for k in range(c):
            reg_ids += [config.region_token_id] * regions_per_clip + [config.sep_token_id]
            reg_pos += [k] * (regions_per_clip + 1)
        rows.append((text_ids, text_seg, act_ids, act_pos, act_seg, reg_ids, reg_pos))
    lt = max(len(r[0]) for r in rows)
    la = max(len(r[2]) for r in rows)
    lr = max(len(r[5]) for r in rows)

    def pad(seqs: list[list[int]], length: int, value: int) -> torch.Tensor:
        return torch.tensor([s + [value] * (length - len(s)) for s in seqs], dtype=torch.long)

    text_mask = pad([[1] * len(r[0]) for r in rows], lt, 0).bool()
    action_mask = pad([[1] * len(r[2]) for r in rows], la, 0).bool()
    region_mask = pad([[1] * len(r[5]) for r in rows], lr, 0).bool()
    action_token_ids = pad([r[2] for r in rows], la, config.pad_token_id)
    region_token_ids = pad([r[5] for r in rows], lr, config.pad_token_id)
    is_act, is_region = action_token_ids == config.act_token_id, region_token_ids == config.region_token_id
    boxes = torch.rand(batch_size, lr, 4, generator=g)
    x1, x2 = torch.minimum(boxes[..., 0], boxes[..., 2]), torch.maximum(boxes[..., 0], boxes[..., 2])
    y1, y2 = torch.minimum(boxes[..., 1], boxes[..., 3]), torch.maximum(boxes[..., 1], boxes[..., 3])
    locations = torch.stack([x1, y1, x2, y2, (x2 - x1) * (y2 - y1)], dim=-1) * is_region[..., None]
    batch = ActBertBatch(
        input_ids=pad([r[0] for r in rows], lt, config.pad_token_id),
        text_segment_ids=pad([r[1] for r in rows], lt, 0),
        text_position_ids=pad([list(range(len(r[0]))) for r in rows], lt, 0),
        text_mask=text_mask,
        action_token_ids=action_token_ids,
        action_features=torch.randn(batch_size, la, config.action_feature_dim, generator=g) * is_act[..., None],
        action_segment_ids=pad([r[4] for r in rows], la, 0),
        action_position_ids=pad([r[3] for r in rows], la, 0),
        action_mask=action_mask,
        region_token_ids=region_token_ids,
        region_features=torch.randn(batch_size, lr, config.region_feature_dim, generator=g).relu() * is_region[..., None],
        region_locations=locations,
        region_segment_ids=pad([[p for p in r[6]] for r in rows], lr, 0),
        region_position_ids=pad([r[6] for r in rows], lr, 0),
        region_mask=region_mask,
        video_ids=[f"random{i}" for i in range(batch_size)],
    )
    if with_targets:
        is_word = text_mask & (batch.input_ids >= 1000)
        chosen = is_word & (torch.rand(batch_size, lt, generator=g) < 0.3)
        chosen[:, 1] = is_word[:, 1]  # at least one target per row
        batch.mlm_labels = torch.where(chosen, batch.input_ids, torch.full_like(batch.input_ids, -100))
        batch.input_ids = torch.where(chosen, torch.full_like(batch.input_ids, 103), batch.input_ids)
        batch.action_targets = torch.softmax(torch.randn(batch_size, la, config.num_actions, generator=g) * 3, -1)
        batch.action_targets = batch.action_targets * is_act[..., None]
        batch.action_target_mask = is_act & (torch.rand(batch_size, la, generator=g) < 0.5)
        batch.action_target_mask[:, 0] = True
        batch.action_features = batch.action_features * ~batch.action_target_mask[..., None]
        batch.region_targets = torch.softmax(torch.randn(batch_size, lr, config.num_region_classes, generator=g) * 3, -1)
        batch.region_targets = batch.region_targets * is_region[..., None]
        batch.region_target_mask = is_region & (torch.rand(batch_size, lr, generator=g) < 0.5)
        batch.region_target_mask[:, 0] = True
        batch.region_features = batch.region_features * ~batch.region_target_mask[..., None]
        batch.match_labels = (torch.arange(batch_size) % 2 == 0).float()
    return batch


def replace_config(config: ActBertConfig, **changes) -> ActBertConfig:
    """A copy of ``config`` with ``changes`` (validated again)."""
    return dataclasses.replace(config, **changes)


__all__ = [
    "ActBertBatch",
    "ActBertConfig",
    "ActBertEncoderOutput",
    "ActBertForPretraining",
    "ActBertModel",
    "BatchError",
    "ClassificationHead",
    "CrossModalMatchingHead",
    "MaskedLanguageModelHead",
    "PretrainingOutput",
    "TextEmbeddings",
    "VISUAL_TOKENS",
    "VisualEmbeddings",
    "check_batch",
    "masked_lm_loss",
    "random_batch",
    "region_kl_loss",
    "replace_config",
    "soft_target_cross_entropy",
    "visual_token_index",
]
