"""ActBERT (Zhu & Yang, CVPR 2020): embeddings, tangled transformer, pretraining heads and losses.

Reading order: :class:`ActBertConfig` -> :class:`TextEmbeddings` / :class:`VisualEmbeddings` ->
:class:`ActBertModel` (three streams and the tangled schedule) -> heads ->
:class:`ActBertForPretraining` (the four pretraining losses).

Input (paper 3.2.1), as the three aligned streams of :class:`~actbert.models.actbert.batch.ActBertBatch`:

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
:class:`~actbert.models.actbert.tangled.TangledBlock`; after the last block each stream runs its remaining
layers. With K = 0 the streams never meet (the text stream is then plain BERT).

Pooled output: ``tanh(dense(text[:, 0]))``; the pooler keeps BERT's naming (``pooler.dense``) so
BERT's pooler weights load into it. The paper applies its matching layer to the [CLS] output alone:
that is ``match_fusion="cls"``. The default, ``match_fusion="mul"``, is NOT the paper's head: it
multiplies the pooled [CLS] by a pooled summary of the visual streams (the fusion of the released
PaddleVideo implementation, without its action-only term) -- a deviation kept because with the
paper's head the matching loss stayed near ln 2 on the random corpus (1,000+ CPU steps; in a 300-step
run it ended at 0.67-0.70 against 0.30-0.38 with the fusion: docs/pretraining.md, "What a short
run shows"). Set ``match_fusion: cls`` for the paper's head.

Pretraining losses (3.2.3), each averaged over its valid targets and exactly 0 (not NaN) when a
batch has none:

* ``mlm``: masked language modelling with visual cues -- BERT prediction head whose decoder is
  TIED to the word embeddings; cross-entropy at ``mlm_labels != -100``.
* ``action``: masked action classification over the mined verb vocabulary -- soft-target
  cross-entropy ``-sum_v t_v log softmax(z)_v`` at ``action_target_mask`` (rows whose target is
  all-zero are skipped).
* ``region``: masked object classification -- ``KL(p_detector || softmax(z))`` summed over
  classes, averaged over ``region_target_mask``.
* ``match``: cross-modal matching -- ONE logit, sigmoid / binary cross-entropy against
  ``match_labels``; from [CLS] alone (``"cls"``, the paper) or [CLS] x pooled video (``"mul"``,
  the default; see above).
  :meth:`ActBertForPretraining.match_score` exposes the logit for retrieval.

Separate embeddings (``embed_dim > 0``; not in the paper, issue 14). ``encode_text`` runs the text
stream ALONE -- every text layer, the tangled ones as plain BERT layers without the stacked
``c_r`` keys/values -- and ``encode_video`` the action and region streams alone (no ``c_w``);
without the exchange the visual streams do not meet either. Each is mean-pooled over its real
positions (the ``small`` preset's text stream is all-MiniLM-L6-v2, a sentence encoder trained
with mean pooling) and projected by its own head into a shared ``embed_dim`` space: text
``Linear(Dt, E)``, video ``Linear(Dv, E)(mean h_a) + Linear(Dv, E)(mean h_r)``. Similarity is the
cosine times a learnable scale ``exp(s)``, ``s`` initialised at ``log(1 / 0.07)`` and clamped at
``log 100`` (CLIP). With ``embed_dim = 0`` (every preset) the heads do not exist and the model
is the paper's, tensor for tensor; it then lacks the ``embeddings`` capability.

Two optional objectives ride on the embeddings:

* ``contrastive`` (a fifth loss, on when ``loss_weights`` gives it a weight > 0): symmetric
  InfoNCE (:func:`~actbert.models.losses.info_nce`) over the batch's matched pairs, the text
  read unmasked (``mlm_labels`` restored; the video as masked, its originals are not kept); rows of
  one video are not each other's negatives.
* ``hard_negatives: true`` (ALBEF): the matching loss is taken over the matched pairs plus, for
  each, one negative video and one negative text drawn from the other matched rows with probability
  ``softmax`` of the (detached) embedding similarity -- in place of the collator's random
  negatives, whose rows then add nothing to the matching loss (set
  ``data.masking.negative_probability=0`` to spend them on positives instead).

Masked losses count only matched pairs (``match_labels == 1``): for a mismatched pair the text
does not describe the video, so reconstructing masked words / actions / regions from the other
modality would teach wrong alignments (ViLBERT does the same). Without ``match_labels`` every
row counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from actbert.errors import CapabilityError
from actbert.models.actbert.batch import ActBertBatch
from actbert.models.actbert.configuration import (
    LOCATION_DIM,
    VISUAL_TOKENS,
    ActBertConfig,
    BatchError,
    replace_config,
)
from actbert.models.actbert.processing import ActBertProcessor
from actbert.models.actbert.tangled import TangledBlock
from actbert.models.heads import PredictionHead
from actbert.models.interface import PretrainingOutput as BasePretrainingOutput
from actbert.models.interface import VideoTextModel
from actbert.models.layers import LAYER_NORM_EPS, PredictionTransform, TransformerLayer, init_bert_weights
from actbert.models.losses import hard_negative_indices, info_nce, kl_to_targets, masked_lm_loss, soft_target_cross_entropy, zero_like
from actbert.models.pretrained import PretrainedModelMixin


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

    ``forward(batch, use_regions=None)``: ``use_regions=False`` (else ``batch.use_regions``, else
    ``config.use_regions``; or an empty region stream) skips the region stream entirely -- for the
    "without region cues" ablations and for captioning, which uses the action stream only;
    ``output.region`` is then None.
    """

    config_class = ActBertConfig
    # where BERT checkpoint tensors go (models/text_init.py)
    text_stream_prefixes = ("text_embeddings.", "text_encoder.", "pooler.")

    @staticmethod
    def text_weight_name(bert_name: str) -> str | None:
        """A Hugging Face BERT tensor name (no ``bert.`` prefix) -> this encoder's name, or None."""
        for theirs, ours in (("embeddings.", "text_embeddings."), ("encoder.layer.", "text_encoder.layer."), ("pooler.dense.", "pooler.dense.")):
            if bert_name.startswith(theirs):
                return ours + bert_name[len(theirs) :]
        return None

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

    def _checked_regions(self, batch: ActBertBatch, use_regions: bool | None) -> bool:
        """Whether the region stream runs (the argument, else the batch's, else the config's
        choice; never without region tokens), after checking the batch against the config."""
        if use_regions is None:
            use_regions = self.config.use_regions if batch.use_regions is None else batch.use_regions
        use_regions = use_regions and batch.region_token_ids.shape[1] > 0
        check_batch(batch, self.config, use_regions)
        return use_regions

    def _embed_visual(self, batch: ActBertBatch, use_regions: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The action ``[B, La, Dv]`` and region ``[B, Lr, Dv]`` (None without regions) embeddings."""
        config = self.config
        # without action cues the features are zeroed rather than skipped: the stream and every
        # parameter stay in use (DDP needs no unused-parameter search), the input carries nothing
        features = batch.action_features if config.use_actions else torch.zeros_like(batch.action_features)
        action = self.action_embeddings(
            visual_token_index(batch.action_token_ids, config, "action_token_ids"),
            features,
            batch.action_position_ids,
            batch.action_segment_ids,
        )
        region = None
        if use_regions:
            region = self.region_embeddings(
                visual_token_index(batch.region_token_ids, config, "region_token_ids"),
                batch.region_features,
                batch.region_position_ids,
                batch.region_segment_ids,
                batch.region_locations,
            )
        return action, region

    def forward(self, batch: ActBertBatch, use_regions: bool | None = None) -> ActBertEncoderOutput:
        config = self.config
        use_regions = self._checked_regions(batch, use_regions)

        text_mask = batch.text_mask.bool()
        action_mask = batch.action_mask.bool()
        # text first: the embeddings' dropout draws in this order (text, action, region)
        text = self.text_embeddings(batch.input_ids, batch.text_position_ids, batch.text_segment_ids)
        action, region = self._embed_visual(batch, use_regions)
        region_mask = batch.region_mask.bool() if region is not None else None

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

    def text_stream(self, batch: ActBertBatch, input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The text stream alone ``[B, Lt, Dt]``: every text layer, the tangled ones without the
        stacked region keys/values (``input_ids`` in place of ``batch.input_ids`` if given)."""
        check_batch(batch, self.config, use_regions=False)
        ids = batch.input_ids if input_ids is None else input_ids
        text = self.text_embeddings(ids, batch.text_position_ids, batch.text_segment_ids)
        return self.text_encoder.run(text, batch.text_mask.bool(), 0, self.config.text_layers)

    def visual_streams(self, batch: ActBertBatch, use_regions: bool | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The action ``[B, La, Dv]`` and region ``[B, Lr, Dv]`` (None when not used, as in
        :meth:`forward`) streams alone: every layer, the tangled ones without the word keys/values."""
        config = self.config
        action, region = self._embed_visual(batch, self._checked_regions(batch, use_regions))
        action = self.action_encoder.run(action, batch.action_mask.bool(), 0, config.action_layers)
        if region is not None:
            region = self.region_encoder.run(region, batch.region_mask.bool(), 0, config.region_layers)
        return action, region


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

    ``match_fusion="cls"``: ``classifier(pooled_t)`` -- the paper's head (a linear layer on the
    [CLS] output). In the three-stream layout the [CLS] token sees the video only through the few
    stacked ``c_r`` keys of the tangled layers, and on the random corpus this head stays at ln 2
    for 1,000+ CPU steps (docs/pretraining.md).

    ``match_fusion="mul"`` (the config default; a deviation from the paper):
    ``classifier(pooled_t * pooled_v)`` with ``pooled_v`` from :class:`VideoPooler` -- the
    multiplicative fusion of the stream poolers that the released PaddleVideo implementation uses
    (it adds a third, action-only pooled term, which cannot depend on the text and so carries no
    matching signal; it is left out here). The product is a direct bilinear text-by-video path, on
    top of what [CLS] gathers through the tangled layers.
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


class EmbeddingHeads(nn.Module):
    """The projection heads of the separate embeddings (module docstring) and the similarity scale.

    ``text``: ``[B, Dt] -> [B, E]``; ``action`` + ``region``: ``[B, Dv] -> [B, E]`` each, summed;
    ``logit_scale``: ``[]``, the log of the cosine's multiplier.
    """

    INIT_TEMPERATURE = 0.07  # CLIP's
    MAX_SCALE = 100.0  # CLIP's clamp: beyond it the logits get too sharp to train

    def __init__(self, config: ActBertConfig):
        super().__init__()
        self.text = nn.Linear(config.text_hidden_size, config.embed_dim)
        self.action = nn.Linear(config.visual_hidden_size, config.embed_dim)
        self.region = nn.Linear(config.visual_hidden_size, config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / self.INIT_TEMPERATURE)))

    def scale(self) -> torch.Tensor:
        """``[]`` the multiplier of the cosine similarity, ``exp(logit_scale)`` clamped at 100."""
        return self.logit_scale.clamp(max=math.log(self.MAX_SCALE)).exp()

    def project_video(self, action: torch.Tensor, region: torch.Tensor | None, batch: ActBertBatch) -> torch.Tensor:
        x = self.action(masked_mean(action, batch.action_mask.bool()))
        if region is not None:
            x = x + self.region(masked_mean(region, batch.region_mask.bool()))
        return x


@dataclass
class PretrainingOutput(BasePretrainingOutput):
    """``loss`` ([] weighted sum of the losses) and ``losses`` ("mlm", "action", "region",
    "match", and "contrastive" when it is on: [] each), plus ActBERT's logits."""

    mlm_logits: torch.Tensor | None = None  # [N, vocab] at the N positions with mlm_labels != -100 (row-major)
    action_logits: torch.Tensor | None = None  # [B, La, num_actions]
    region_logits: torch.Tensor | None = None  # [B, Lr, num_region_classes]; None without the region stream
    match_logits: torch.Tensor | None = None  # [B]
    encoder: "ActBertEncoderOutput | None" = None


class ActBertForPretraining(VideoTextModel):
    """ActBERT with its four pretraining heads: ``batch -> PretrainingOutput`` (see module docstring).

    The registered ``actbert`` architecture. Capabilities (models/interface.py): ``pair_scores``
    (the matching logit), ``masked_tokens`` (the MLM head), ``unit_states`` (action output at each
    unit's [ACT] + the mean of that unit's region outputs), ``caption_memory`` (the action stream,
    run without regions, as the paper captions), and ``embeddings`` only with projection heads
    (``embed_dim > 0``; cosine similarity, ``embeddings_normalized``) -- the paper's ActBERT is a
    cross-encoder.
    """

    embeddings_normalized = True  # ranked by cosine (tasks/index.py L2-normalises the vectors)

    config_class = ActBertConfig
    processor_class = ActBertProcessor
    base_model_class = ActBertModel
    base_model_prefix = "actbert"
    text_stream_prefixes = tuple("actbert." + p for p in ActBertModel.text_stream_prefixes)
    text_head_prefixes = ("mlm_head.transform.", "mlm_head.bias")

    def __init__(self, config: ActBertConfig):
        super().__init__()
        self.config = config
        self.actbert = ActBertModel(config)
        self.mlm_head = MaskedLanguageModelHead(config, self.actbert.text_embeddings.word_embeddings)
        self.action_head = PredictionHead(config.visual_hidden_size, config.num_actions, config.activation)
        self.region_head = PredictionHead(config.visual_hidden_size, config.num_region_classes, config.activation)
        self.match_head = CrossModalMatchingHead(config)
        for head in (self.mlm_head.transform, self.action_head, self.region_head, self.match_head):
            head.apply(lambda m: init_bert_weights(m, config.initializer_range))
        self.match_head.init_classifier()
        # created last, so a model without them draws exactly the same initial weights as before
        self.embedding_heads = EmbeddingHeads(config) if config.embed_dim > 0 else None
        if self.embedding_heads is not None:
            self.embedding_heads.apply(lambda m: init_bert_weights(m, config.initializer_range))

    @staticmethod
    def text_weight_name(bert_name: str) -> str | None:
        """BERT tensor name -> ours: the encoder's text stream, and BERT's MLM transform + bias."""
        if bert_name.startswith("cls.predictions.transform."):
            return "mlm_head.transform." + bert_name[len("cls.predictions.transform.") :]
        if bert_name == "cls.predictions.bias":
            return "mlm_head.bias"
        name = ActBertModel.text_weight_name(bert_name)
        return None if name is None else "actbert." + name

    @classmethod
    def fill_config_from_data(cls, config: ActBertConfig, schema, tokenizer) -> ActBertConfig:
        """Feature widths and class counts from the store schema; vocabulary and the four visual
        token ids from the tokenizer."""
        return replace_config(
            config,
            action_feature_dim=schema.action_dim,
            region_feature_dim=schema.region_dim,
            num_actions=schema.num_actions,
            num_region_classes=schema.num_region_classes,
            vocab_size=tokenizer.vocab_size,
            pad_token_id=tokenizer.pad_id,
            sep_token_id=tokenizer.sep_id,
            act_token_id=tokenizer.act_id,
            region_token_id=tokenizer.region_id,
        )

    @classmethod
    def random_corpus_dims(cls, config: ActBertConfig) -> dict[str, int]:
        """The preset's own feature widths and class counts for ``data.random`` corpora."""
        return {"action_dim": config.action_feature_dim, "region_dim": config.region_feature_dim,
                "num_actions": config.num_actions, "num_region_classes": config.num_region_classes}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``matching``: the text pooler and the matching head (its video pooler included), which
        start from scratch and must move far in a short run; ``visual``: the action and region
        streams' embeddings and layers (not the tangled connectors)."""
        model = self.actbert
        visual = (model.action_embeddings, model.region_embeddings, model.action_encoder, model.region_encoder)
        groups = {
            "matching": [*model.pooler.parameters(), *self.match_head.parameters()],
            "visual": [p for part in visual for p in part.parameters()],
        }
        if self.embedding_heads is not None:  # ``embedding``: the projection heads and the scale
            groups["embedding"] = list(self.embedding_heads.parameters())
        return groups

    def match_score(self, batch: ActBertBatch, use_regions: bool | None = None) -> torch.Tensor:
        """Cross-modal matching logit ``[B]`` (higher = the text describes the video)."""
        return self.match_head(self.actbert(batch, use_regions), batch)

    # -- capabilities (models/interface.py)
    def has_capability(self, name: str) -> bool:
        """``embeddings`` only with the projection heads (``embed_dim > 0``)."""
        return name != "embeddings" or self.embedding_heads is not None

    def _heads(self) -> EmbeddingHeads:
        if self.embedding_heads is None:
            raise CapabilityError("ActBertConfig.embed_dim: 0, so this model has no embedding heads (set model.embed_dim > 0 and train them)")
        return self.embedding_heads

    def encode_text(self, batch: ActBertBatch, restore_masked: bool = False) -> torch.Tensor:
        """``[B, E]`` text embeddings from the text stream alone (the video is not read);
        ``restore_masked`` reads the words under MLM masks (``mlm_labels``) instead."""
        heads = self._heads()
        ids = batch.restored_text_ids() if restore_masked else None
        return heads.text(masked_mean(self.actbert.text_stream(batch, ids), batch.text_mask.bool()))

    def encode_video(self, batch: ActBertBatch, use_regions: bool | None = None) -> torch.Tensor:
        """``[B, E]`` video embeddings from the action and region streams alone (the text is not read)."""
        heads = self._heads()
        action, region = self.actbert.visual_streams(batch, use_regions)
        return heads.project_video(action, region, batch)

    def embedding_scale(self) -> torch.Tensor:
        """``[]`` the learnable multiplier of the cosine similarity (the InfoNCE logits' scale)."""
        return self._heads().scale()

    def contrastive_loss(self, batch: ActBertBatch, use_regions: bool | None = None) -> torch.Tensor:
        """Symmetric InfoNCE ``[]`` with every row of ``batch`` a matched pair (rows of the same
        video are not each other's negatives); MLM-masked words are read unmasked."""
        return self._contrastive(batch, use_regions)[0]

    def _contrastive(self, batch: ActBertBatch, use_regions: bool | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(InfoNCE [], scaled cosine similarity [N, N] text x video, same-video mask [N, N] or None)."""
        text = F.normalize(self.encode_text(batch, restore_masked=True).float(), dim=-1)
        video = F.normalize(self.encode_video(batch, use_regions).float(), dim=-1)
        scale = self.embedding_scale()
        exclude = None
        if batch.video_ids:
            ids = batch.video_ids
            exclude = torch.tensor([[a == b for b in ids] for a in ids], dtype=torch.bool, device=text.device)
        return info_nce(text, video, scale, exclude), scale * text @ video.T, exclude

    def hard_negative_pairs(self, batch: ActBertBatch, similarity: torch.Tensor | None = None, exclude: torch.Tensor | None = None,
                            generator: torch.Generator | None = None) -> tuple[ActBertBatch, torch.Tensor]:
        """The ``N`` matched pairs of ``batch`` plus, for each, a hard negative video and a hard
        negative text (ALBEF) -> (a ``3N``-row batch, labels ``[3N]``: 1 for the first ``N``).

        Row ``i``'s negative video is row ``j != i`` drawn with probability ``softmax_j`` of the
        text-to-video ``similarity [N, N]`` (default: the embeddings' scaled cosine, no gradient),
        its negative text likewise from video-to-text; ``exclude [N, N]`` (default: same video id)
        are never drawn unless nothing else is left.
        """
        n = batch.batch_size
        if similarity is None:
            with torch.no_grad():
                _, similarity, exclude = self._contrastive(batch, None)
        rows = torch.arange(n, device=similarity.device)
        negative_video = hard_negative_indices(similarity, exclude, generator)
        negative_text = hard_negative_indices(similarity.T, None if exclude is None else exclude.T, generator)
        text_rows = torch.cat([rows, rows, negative_text])
        video_rows = torch.cat([rows, negative_video, rows])
        labels = torch.cat([torch.ones(n), torch.zeros(2 * n)]).to(batch.input_ids.device)
        return batch.pair_rows(text_rows, video_rows, labels), labels

    def pair_scores(self, batch: ActBertBatch) -> torch.Tensor:
        """``[B]`` matching logits; regions as the batch says (``batch.use_regions``)."""
        return self.match_score(batch)

    def masked_token_logits(self, batch: ActBertBatch, positions: torch.Tensor) -> torch.Tensor:
        """MLM logits ``[N, vocab]`` at the ``positions [B, Lt]`` (row-major)."""
        return self.mlm_head(self.actbert(batch).text[positions])

    @property
    def unit_state_dim(self) -> int:
        return 2 * self.config.visual_hidden_size

    def unit_states(self, batch: ActBertBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per unit: ``[action output at its [ACT] || mean of its region outputs]`` ``[B, W, 2 Dv]``
        (zeros without regions) and valid ``[B, W]``. Unit ``i`` of a row is action position ``i``
        (``[ACT] x n, [SEP]``) and the regions whose segment id is ``i``; ``W`` = the longest row's
        unit count."""
        out = self.actbert(batch)
        width = int(batch.action_token_ids.shape[1]) - 1  # the longest row: n [ACT] + one [SEP]
        action = out.action[:, :width]  # [B, W, Dv]
        valid = batch.action_token_ids[:, :width] == self.config.act_token_id  # [B, W]
        region = torch.zeros_like(action)
        if out.region is not None:
            is_region = (batch.region_token_ids == self.config.region_token_id) & batch.region_mask.bool()  # [B, Lr]
            onehot = F.one_hot(batch.region_segment_ids.clamp(0, width - 1), width).to(out.region.dtype)  # [B, Lr, W]
            onehot = onehot * is_region[..., None].to(out.region.dtype)
            region = torch.einsum("blw,bld->bwd", onehot, out.region) / onehot.sum(1).clamp(min=1.0)[..., None]
        return torch.cat([action, region], dim=-1), valid

    @property
    def caption_memory_dim(self) -> int:
        return self.config.visual_hidden_size

    def caption_memory(self, batch: ActBertBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Action-stream outputs ``[B, La, Dv]`` and their mask ``[B, La]``; the region stream is
        not run ("we do not use the regional object transformer", paper 4.2.2)."""
        return self.actbert(batch, use_regions=False).action, batch.action_mask.bool()

    def word_embeddings(self) -> torch.Tensor:
        """The text stream's word table ``[vocab, Dt]`` (a caption decoder may start from it)."""
        return self.actbert.text_embeddings.word_embeddings.weight

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
            match_loss = zero_like(match_logits)

        mlm_logits = None
        mlm_loss = zero_like(encoded.text)
        if batch.mlm_labels is not None:
            has_label = batch.mlm_labels != -100  # [B, Lt]
            mlm_logits = self.mlm_head(encoded.text[has_label])  # [N, V]
            valid = matched[:, None].expand_as(has_label)[has_label]  # [N]
            mlm_loss = masked_lm_loss(mlm_logits, batch.mlm_labels[has_label], valid) + zero_like(mlm_logits)

        action_loss = zero_like(action_logits)
        if batch.action_targets is not None and batch.action_target_mask is not None:
            valid = batch.action_target_mask.bool() & matched[:, None] & (batch.action_targets.sum(-1) > 0)
            action_loss = soft_target_cross_entropy(action_logits, batch.action_targets, valid)

        region_loss = zero_like(region_logits if region_logits is not None else encoded.action)
        if region_logits is not None and batch.region_targets is not None and batch.region_target_mask is not None:
            valid = batch.region_target_mask.bool() & matched[:, None]
            region_loss = kl_to_targets(region_logits, batch.region_targets, valid)

        losses = {"mlm": mlm_loss, "action": action_loss, "region": region_loss, "match": match_loss}
        weights = self.config.loss_weights
        if weights.get("contrastive", 0.0) > 0 or self.config.hard_negatives:
            positives = batch.select(torch.nonzero(matched).squeeze(1))
            if positives.batch_size >= 2:
                contrastive, similarity, exclude = self._contrastive(positives, use_regions)
            else:  # one matched pair: nothing to contrast it with
                contrastive, similarity, exclude = zero_like(match_logits), None, None
            if weights.get("contrastive", 0.0) > 0:
                losses["contrastive"] = contrastive
            if self.config.hard_negatives and similarity is not None:
                pairs, labels = self.hard_negative_pairs(positives, similarity.detach(), exclude)
                negatives = pairs.select(slice(positives.batch_size, None))
                logits = torch.cat([match_logits[matched], self.match_head(self.actbert(negatives, use_regions), negatives)])
                losses["match"] = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
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


__all__ = [
    "ActBertEncoderOutput",
    "ActBertForPretraining",
    "ActBertModel",
    "CrossModalMatchingHead",
    "EmbeddingHeads",
    "MaskedLanguageModelHead",
    "PretrainingOutput",
    "TextEmbeddings",
    "VisualEmbeddings",
    "check_batch",
    "visual_token_index",
]
