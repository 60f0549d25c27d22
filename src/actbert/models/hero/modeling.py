"""HERO (Li et al., EMNLP 2020): :class:`HeroForPretraining`, the hierarchical encoder with its four
pretraining tasks, numerically the original code (``HeroForPretraining`` of linjieli222/HERO).

The module tree and parameter names are upstream's: ``v_encoder`` (upstream
``HierarchicalVlModel``: ``f_encoder`` = Cross-modal Transformer, ``frame_transform``,
``c_encoder`` = Temporal Transformer, and the MFM / FOM heads), then ``video_query_linear``,
``video_st_predictor`` / ``video_ed_predictor`` and ``q_feat_attn`` (the query encoder) for VSM.

The encoder (:meth:`HierarchicalEncoder.forward`):

1. every subtitle row ``[frames, tokens]`` through the Cross-modal Transformer;
2. the first ``K_i`` outputs of each row added at their frames' absolute indices
   (``matched_v_feats``; frames no subtitle covers get 0);
3. plus ``frame_transform(raw features)`` = ``relu(Linear(LN(x)))``; through the Temporal
   Transformer over the whole video.

``forward(batch)`` runs the batch's task (``batch.task``: one task per mini-batch, as HERO trains)
and returns :class:`HeroPretrainingOutput` whose ``losses`` hold that task's loss alone; the
loop averages each name over the steps that reported it (``loss_names`` declares them all). Its capabilities for the downstream tasks (``pair_scores``, ``embeddings``, ``masked_token_logits``, ``unit_states``, ``caption_memory``) are methods of :class:`HeroForPretraining` below.
"""

from __future__ import annotations


import numpy as np
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from actbert.models.hero.batch import HeroBatch
from actbert.models.hero.configuration import TASKS, HeroBatchError, HeroConfig
from actbert.models.hero.encoders import (
    CrossModalTransformer,
    LinearLayer,
    QueryEncoder,
    TemporalTransformer,
    _put,
    mask_logits,
)
from actbert.models.hero.pretraining import (
    FrameFeatureRegression,
    MLPLayer,
    mffr_loss,
    mfm_nce_logits,
    mfm_nce_loss,
    video_level_loss,
)
from actbert.models.hero.processing import HeroProcessor, _rows_to_arrays
from actbert.models.interface import PretrainingOutput, VideoTextModel, device_of

PAIR_LOGIT_SCALE = 10.0  # pair_loss: the cosine score x 10 as a logit (HERO's VR score is a cosine)


# ----------------------------------------------------------------------------------------------
# Outputs


@dataclass
class HeroEncoderOutput:
    cross_sequence_output: torch.Tensor  # [S, Lf, D] the Cross-modal Transformer, compact layout
    temporal_output: torch.Tensor | None  # [B, Nv, D] the Temporal Transformer (None: MLM, cross-modal only)

    def cross_pooled_output(self, pooler: nn.Module) -> torch.Tensor:
        return pooler(self.cross_sequence_output)


@dataclass
class MlmOutput:
    prediction_scores: torch.Tensor  # [M, vocab] at the masked tokens
    loss_per_token: torch.Tensor  # [M]
    loss: torch.Tensor  # [] mean over the masked tokens


@dataclass
class MfmOutput:
    prediction_feat: torch.Tensor  # [Mf, Dv] at the masked frames
    loss: torch.Tensor  # [] the training loss
    neg_pred_feat: torch.Tensor | None = None  # NCE: [N, Dv] at every non-masked position (padding included)
    logits: torch.Tensor | None = None  # NCE: [Mf, Mf + N]
    loss_per_frame: torch.Tensor | None = None  # NCE: [Mf]; MFFR: squared error [Mf, Dv]


@dataclass
class FomOutput:
    scores: torch.Tensor  # [B * Nv, max_clip_len]
    loss: torch.Tensor  # [] mean over the positions with a target


@dataclass
class VsmOutput:
    q2video_scores: torch.Tensor  # [Q, B] max over valid frames of cos(query, frame)
    st_prob: torch.Tensor  # [Q, B, Nv] start logits for every (query, video); padding = -1e4
    ed_prob: torch.Tensor  # [Q, B, Nv]
    loss_st_ed: torch.Tensor  # [] lw_st_ed * (CE_st + CE_ed), mean over queries (0 when dropped)
    loss_neg_ctx: torch.Tensor  # [] lw_neg_ctx * mean over queries
    loss_neg_q: torch.Tensor  # [] lw_neg_q * mean over queries
    neg_ctx_per_query: torch.Tensor  # [Q] lw_neg_ctx * per-query term (upstream's eval-mode vector)
    neg_q_per_query: torch.Tensor  # [Q]

    @property
    def loss(self) -> torch.Tensor:
        return self.loss_st_ed + self.loss_neg_ctx + self.loss_neg_q


@dataclass
class HeroPretrainingOutput(PretrainingOutput):
    task: str = ""
    head: Any = None  # the task's MlmOutput / MfmOutput / FomOutput / VsmOutput
    encoder: HeroEncoderOutput | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# The hierarchical encoder (upstream HierarchicalVlModel)


class HierarchicalEncoder(nn.Module):
    """Cross-modal Transformer -> frame collection -> Temporal Transformer, with the MFM / FOM heads."""

    def __init__(self, config: HeroConfig):
        super().__init__()
        h, dv = config.hidden_size, config.vfeat_dim
        self.f_encoder = CrossModalTransformer(config)
        self.frame_transform = LinearLayer(dv, h, config.hidden_dropout)
        self.c_encoder = TemporalTransformer(config)
        self.feat_regress = FrameFeatureRegression(h, dv)
        self.mask_embedding = nn.Embedding(2, dv, padding_idx=0)
        self.fom_output = MLPLayer(h, config.max_clip_len)

    def cross(self, batch: HeroBatch, v_masks: torch.Tensor | None = None, capture: dict | None = None) -> torch.Tensor:
        """``[S, Lf, D]``: every subtitle row with its frames through the Cross-modal Transformer."""
        return self.f_encoder(
            batch.f_sub_input_ids, batch.f_sub_pos_ids, batch.f_attn_masks, batch.f_v_feats, batch.f_v_pos_ids,
            batch.f_gather_index, v_masks, capture,
        )

    @staticmethod
    def collect_frames(batch: HeroBatch, cross: torch.Tensor) -> torch.Tensor:
        """``[B, Nv, D]``: row r's k-th frame output added at (video of r, ``sub_frames[r, k]``); 0 elsewhere."""
        b, nv = batch.c_v_feats.shape[:2]
        k = batch.sub_frames.shape[1]
        video = batch.video_of_row()  # [S]
        frames = batch.sub_frames  # [S, K]
        has = frames >= 0
        rows, slots = has.nonzero(as_tuple=True)
        flat = video[rows] * nv + frames[rows, slots]
        out = cross.new_zeros(b * nv, cross.shape[-1])
        # first K outputs of each row are its frames (compact layout: frames first)
        out = out.index_add(0, flat, cross[:, :k][rows, slots])
        return out.view(b, nv, -1)

    def temporal_input(self, batch: HeroBatch, c_v_feats: torch.Tensor, v_masks: torch.Tensor | None,
                       capture: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(cross-modal output ``[S, Lf, D]``, temporal input ``[B, Nv, D]`` = frame_transform(raw) + collected)."""
        cross = self.cross(batch, v_masks, capture)
        matched = self.collect_frames(batch, cross)
        _put(capture, "matched_v_feats", matched)
        transformed = self.frame_transform(c_v_feats)
        _put(capture, "frame_transform", transformed)
        return cross, transformed + matched

    def forward(self, batch: HeroBatch, capture: dict | None = None) -> HeroEncoderOutput:
        """The plain encoder (upstream ``v_encoder(batch, 'repr')``)."""
        cross, x = self.temporal_input(batch, batch.c_v_feats, None, capture)
        _put(capture, "temporal_input", x)
        return HeroEncoderOutput(cross, self.c_encoder(x, batch.c_attn_masks, capture))


# ----------------------------------------------------------------------------------------------
# HERO with its pretraining heads


class HeroForPretraining(VideoTextModel):
    """HERO with MLM, MFM-NCE, MFFR, FOM and VSM (module docstring)."""

    config_class = HeroConfig
    processor_class = HeroProcessor

    def __init__(self, config: HeroConfig):
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.v_encoder = HierarchicalEncoder(config)
        k = config.conv_kernel_size
        self.video_query_linear = nn.Linear(h, h)
        self.video_st_predictor = nn.Conv1d(1, 1, k, stride=1, padding=k // 2, bias=False)
        self.video_ed_predictor = nn.Conv1d(1, 1, k, stride=1, padding=k // 2, bias=False)
        self.q_feat_attn = QueryEncoder(config)
        self.apply(self._init_weights)
        self.vsm_calls = 0  # training VSM batches seen by this process (hard negatives start after hard_negative_start_step)

    def _init_weights(self, module: nn.Module) -> None:
        """Upstream ``init_weights``: normal(initializer_range) for Linear / Embedding, zero bias, LN = 1/0;
        the Conv1d filters keep PyTorch's default init (as upstream). Embedding padding rows start at 0."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, std)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # ---- the tasks

    def encode(self, batch: HeroBatch, capture: dict | None = None) -> HeroEncoderOutput:
        return self.v_encoder(batch, capture)

    def mlm(self, batch: HeroBatch, capture: dict | None = None) -> MlmOutput:
        """MLM on the Cross-modal output at ``txt_mask_tgt`` (no temporal pass)."""
        if batch.txt_mask_tgt is None or batch.txt_labels is None:
            raise HeroBatchError("mlm batch: fields 'txt_mask_tgt' and 'txt_labels' are required")
        cross = self.v_encoder.cross(batch, None, capture)
        scores = self.v_encoder.f_encoder.lm_head(cross[batch.txt_mask_tgt])
        per_token = F.cross_entropy(scores.float(), batch.txt_labels, reduction="none")
        loss = per_token.mean() if per_token.numel() else scores.sum() * 0.0
        return MlmOutput(scores, per_token, loss)

    def mfm(self, batch: HeroBatch, kind: str = "nce", capture: dict | None = None) -> MfmOutput:
        """MFM on the Temporal output: ``kind`` "nce" (MFM-NCE) or "regression" (MFFR)."""
        if batch.c_v_masks is None or batch.feat_targets is None:
            raise HeroBatchError("mfm batch: fields 'c_v_masks' and 'feat_targets' are required")
        enc = self.v_encoder
        masks = batch.c_v_masks.bool()
        # masked frames are zero; mask_embedding row 1 is added to them and row 0 to every other frame
        c_v_feats = batch.c_v_feats.masked_fill(masks.unsqueeze(-1), 0.0) + enc.mask_embedding(masks.long())
        f_masks = batch.f_v_masks if batch.f_v_masks is not None else torch.zeros(batch.f_v_feats.shape[:2], dtype=torch.bool,
                                                                                     device=masks.device)
        cross, x = enc.temporal_input(batch, c_v_feats, f_masks, capture)
        _put(capture, "temporal_input", x)
        out = enc.c_encoder(x, batch.c_attn_masks, capture)
        prediction = enc.feat_regress(out[masks])
        if kind == "regression":
            squared, loss = mffr_loss(prediction, batch.feat_targets)
            return MfmOutput(prediction, loss, loss_per_frame=squared)
        negatives = enc.feat_regress(out[~masks])
        logits = mfm_nce_logits(prediction, batch.feat_targets, negatives)
        per_frame = mfm_nce_loss(logits, self.config.nce_temp)
        loss = per_frame.mean() if per_frame.numel() else logits.sum() * 0.0
        return MfmOutput(prediction, loss, negatives, logits, per_frame)

    def fom(self, batch: HeroBatch, capture: dict | None = None) -> FomOutput:
        """FOM: the temporal input shuffled (``new[orders[i]] = old[i]``), re-encoded, classified per position."""
        if batch.shuffled_orders is None or batch.fom_targets is None:
            raise HeroBatchError("fom batch: fields 'shuffled_orders' and 'fom_targets' are required")
        enc = self.v_encoder
        _, x = enc.temporal_input(batch, batch.c_v_feats, None, capture)
        index = batch.shuffled_orders.long().unsqueeze(-1).expand_as(x)
        shuffled = torch.zeros_like(x).scatter(1, index, x)
        _put(capture, "temporal_input", shuffled)
        out = enc.c_encoder(shuffled, batch.c_attn_masks, capture)  # the mask is not permuted (upstream)
        scores = enc.fom_output(out.reshape(-1, out.shape[-1]))
        targets = batch.fom_targets.reshape(-1).long()
        if bool((targets != -1).any()):
            loss = F.cross_entropy(scores.float(), targets, ignore_index=-1)
        else:
            loss = scores.sum() * 0.0
        return FomOutput(scores, loss)

    def encode_query(self, input_ids: torch.Tensor, pos_ids: torch.Tensor, attn_masks: torch.Tensor,
                     capture: dict | None = None) -> torch.Tensor:
        """``[Q, D]``: text-only Cross-modal pass, then the query encoder (upstream ``encode_txt_inputs``)."""
        states = self.v_encoder.f_encoder(input_ids, pos_ids, attn_masks, capture=capture, prefix="query_cross_")
        return self.q_feat_attn(states, attn_masks, capture)

    def st_ed_logits(self, query: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """query ``[Q, D]``, frames ``[B, Nv, D]``, mask ``[B, Nv]`` -> start / end logits ``[Q, B, Nv]``.

        The convolution runs before the mask (upstream), so padded frames' states reach the last
        ``kernel // 2`` valid positions of shorter videos.
        """
        sim = torch.einsum("md,nld->mnl", self.video_query_linear(query), frames)
        n_q, n_v, length = sim.shape
        flat = sim.reshape(n_q * n_v, 1, length)
        st = self.video_st_predictor(flat).view(n_q, n_v, length)
        ed = self.video_ed_predictor(flat).view(n_q, n_v, length)
        m = mask.unsqueeze(0)
        return mask_logits(st, m), mask_logits(ed, m)

    @staticmethod
    def video_scores(query: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[Q, B]``: max over valid frames of cos(query, frame) (F.normalize eps 1e-5; padding -1e4)."""
        q = F.normalize(query, dim=-1, eps=1e-5)
        f = F.normalize(frames, dim=-1, eps=1e-5)
        scores = torch.einsum("md,nld->mln", q, f)  # [Q, Nv, B]
        scores = mask_logits(scores, mask.t().unsqueeze(0))
        return scores.max(dim=1).values

    def vsm(self, batch: HeroBatch, include_st_ed: bool | None = None, capture: dict | None = None) -> VsmOutput:
        """VSM: local start/end CE on the query's own video + the global hinge terms.

        ``include_st_ed`` None: upstream's training draw (the st/ed term with probability
        ``1 - drop_svmr_prob`` in training, always in eval).
        """
        if batch.query_input_ids is None or batch.q_vidx is None or batch.vsm_targets is None:
            raise HeroBatchError("vsm batch: fields 'query_input_ids', 'q_vidx' and 'vsm_targets' are required")
        cfg = self.config
        enc = self.encode(batch, capture)
        frames, mask = enc.temporal_output, batch.c_attn_masks
        query = self.encode_query(batch.query_input_ids, batch.query_pos_ids, batch.query_attn_masks, capture)
        st, ed = self.st_ed_logits(query, frames, mask)
        scores = self.video_scores(query, frames, mask)
        q_vidx = batch.q_vidx.long()
        if include_st_ed is None:
            include_st_ed = (not self.training) or float(torch.rand(())) > cfg.drop_svmr_prob
        rows = torch.arange(len(q_vidx), device=q_vidx.device)
        zero = scores.sum() * 0.0
        loss_st_ed = zero
        if include_st_ed and cfg.lw_st_ed != 0:
            targets = batch.vsm_targets.long()
            ce_st = F.cross_entropy(st[rows, q_vidx].float(), targets[:, 0], ignore_index=-1)
            ce_ed = F.cross_entropy(ed[rows, q_vidx].float(), targets[:, 1], ignore_index=-1)
            loss_st_ed = cfg.lw_st_ed * (ce_st + ce_ed)
        hard = None
        if self.training:
            self.vsm_calls += 1
            if 0 <= cfg.hard_negative_start_step < self.vsm_calls:
                hard = cfg.hard_pool_size
        terms = video_level_loss(scores, q_vidx, cfg.margin, cfg.ranking_loss_type, hard, cfg.hard_neg_weight)
        neg_ctx, neg_q = cfg.lw_neg_ctx * terms.neg_ctx, cfg.lw_neg_q * terms.neg_q
        return VsmOutput(scores, st, ed, loss_st_ed, neg_ctx.mean(), neg_q.mean(), neg_ctx, neg_q)

    # ---- pretraining forward

    def run_task(self, batch: HeroBatch, capture: dict | None = None) -> Any:
        """The head output of ``batch.task``."""
        task = batch.task
        if task == "mlm":
            return self.mlm(batch, capture)
        if task == "mfm_nce":
            return self.mfm(batch, "nce", capture)
        if task == "mffr":
            return self.mfm(batch, "regression", capture)
        if task == "fom":
            return self.fom(batch, capture)
        if task == "vsm":
            return self.vsm(batch, capture=capture)
        raise HeroBatchError(f"batch field 'task' is {task!r}; expected one of {list(TASKS)}")

    def forward(self, batch: HeroBatch, capture: dict | None = None) -> HeroPretrainingOutput:
        """One pretraining step's loss: the batch's task only (HERO samples one task per mini-batch).

        ``losses`` = ``{batch.task: loss}``; the shared loop logs each task's mean over the steps
        that drew it (the names are declared by :meth:`loss_names`).
        """
        head = self.run_task(batch, capture)
        return HeroPretrainingOutput(loss=head.loss, losses={batch.task: head.loss}, task=batch.task, head=head)

    def loss_names(self) -> list[str]:
        """Every task this model may draw, in ``config.tasks`` order (one per batch)."""
        return list(self.config.tasks)

    # ---- interface

    @classmethod
    def fill_config_from_data(cls, config: HeroConfig, schema: Any, tokenizer: Any) -> HeroConfig:
        """Frame width from the store (``action_dim``, + ``region_dim`` for "action+region"),
        vocabulary and special ids from the tokenizer. A store without per-second features is an error."""
        from dataclasses import replace

        if not getattr(schema, "second_features", False):
            raise HeroBatchError(
                "feature store schema.json: field 'second_features' is false -- HERO reads one feature per second; "
                "run `actbert extract` on the store to fill them"
            )
        dv = int(schema.action_dim) + (int(schema.region_dim) if config.frame_features == "action+region" else 0)
        return replace(config, vfeat_dim=dv, vocab_size=int(tokenizer.vocab_size), pad_token_id=int(tokenizer.pad_id),
                       cls_token_id=int(tokenizer.cls_id), sep_token_id=int(tokenizer.sep_id), mask_token_id=int(tokenizer.mask_id))

    # capabilities (models/interface.py); batches come from HeroProcessor.batch

    def pair_scores(self, batch: HeroBatch) -> torch.Tensor:
        """``[B]``: HERO's VR / VSM video-level score of row b's text and row b's video: the max over
        the video's frames of cos(query, Temporal output)."""
        enc = self.encode(batch)
        query = self.encode_query(batch.query_input_ids, batch.query_pos_ids, batch.query_attn_masks)
        scores = self.video_scores(query, enc.temporal_output, batch.c_attn_masks)
        return scores[torch.arange(len(query), device=scores.device), batch.q_vidx.long()]

    # embeddings: one vector per text and per video, in one space, compared by cosine (tasks/index.py)
    embeddings_normalized = True

    def encode_text(self, batch: HeroBatch) -> torch.Tensor:
        """``[Q, D]``: the query encoder's vector (``encode_query``), unit length; the batch's video is not read."""
        query = self.encode_query(batch.query_input_ids, batch.query_pos_ids, batch.query_attn_masks)
        return F.normalize(query, dim=-1, eps=1e-5)

    def encode_video(self, batch: HeroBatch) -> torch.Tensor:
        """``[B, D]``: one vector per video, the mean of its unit-length Temporal outputs over the valid
        frames, renormalised; the batch's text is not read.

        Not HERO's own video score: VR / :meth:`pair_scores` takes the *max* over frames of
        cos(query, frame), which no single vector reproduces. With this vector the similarity is the
        *mean* frame cosine divided by the norm of the mean unit frame (docs/hero.md, "Embeddings"),
        a shortlist that :meth:`pair_scores` reranks in two-stage retrieval.
        """
        frames = F.normalize(self.encode(batch).temporal_output, dim=-1, eps=1e-5)  # [B, Nv, D]
        valid = batch.c_attn_masks.to(frames.dtype).unsqueeze(-1)  # [B, Nv, 1]
        mean = (frames * valid).sum(1) / valid.sum(1).clamp_min(1.0)
        return F.normalize(mean, dim=-1, eps=1e-5)

    # factored_scores: pair_scores is the max over frames of cos(query, frame), the parts computed apart
    def score_text(self, batch: HeroBatch) -> torch.Tensor:
        """``[Q, D]``: the unit-length query vector (:meth:`encode_text`)."""
        return self.encode_text(batch)

    def score_video(self, batch: HeroBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(``[B, Nv, D]`` unit-length Temporal outputs, ``[B, Nv]`` valid frames): the max of their dot
        products with :meth:`score_text` is :meth:`pair_scores` (``video_scores``)."""
        frames = F.normalize(self.encode(batch).temporal_output, dim=-1, eps=1e-5)
        return frames, batch.c_attn_masks.bool()

    def pair_loss(self, batch: HeroBatch, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(PAIR_LOGIT_SCALE * self.pair_scores(batch).float(), labels.float().to(device_of(self)))

    def masked_token_logits(self, batch: HeroBatch, positions: torch.Tensor) -> torch.Tensor:
        """``[N, vocab]`` at the marked query positions: the text ``[CLS] + tokens`` and the video's frames
        (at most ``max_frm_seq_len``, evenly picked) in one Cross-modal row, then the MLM head."""
        device = device_of(self)
        rows = []
        valid = batch.c_attn_masks.bool().cpu()
        feats = batch.c_v_feats.detach().cpu().numpy()
        ids = batch.query_input_ids.cpu()
        lengths = batch.query_attn_masks.sum(1).cpu()
        for b in range(len(ids)):
            n = int(valid[b].sum())
            pick = np.unique(np.linspace(0, n - 1, min(n, self.config.max_frm_seq_len)).round().astype(int)) if n else np.zeros(0, int)
            rows.append((ids[b, : int(lengths[b])].tolist(), feats[b, pick], None))
        a = _rows_to_arrays(rows, self.config.pad_token_id, feats.shape[-1])
        t = {k: torch.from_numpy(v).to(device) for k, v in a.items()}
        cross = self.v_encoder.f_encoder(t["f_sub_input_ids"], t["f_sub_pos_ids"], t["f_attn_masks"], t["f_v_feats"],
                                         t["f_v_pos_ids"], t["f_gather_index"])
        # query position j of row b sits after the row's frames in the compact layout
        nv = torch.from_numpy(np.maximum([len(r[1]) for r in rows], 1)).to(device)
        b_idx, j_idx = positions.to(device).nonzero(as_tuple=True)
        return self.v_encoder.f_encoder.lm_head(cross[b_idx, nv[b_idx] + j_idx])

    @property
    def unit_state_dim(self) -> int:
        return self.config.hidden_size

    def unit_states(self, batch: HeroBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(Temporal output ``[B, Nv, D]``, valid ``[B, Nv]``): one state per second of the item."""
        return self.encode(batch).temporal_output, batch.c_attn_masks.bool()

    @property
    def caption_memory_dim(self) -> int:
        return self.config.hidden_size

    def caption_memory(self, batch: HeroBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """What a caption decoder attends to: the Temporal output and its mask (as HERO-TVC decodes from it)."""
        return self.encode(batch).temporal_output, batch.c_attn_masks.bool()

    def word_embeddings(self) -> torch.Tensor:
        """``[vocab, D]``: the Cross-modal Transformer's word table (a caption decoder may start from it)."""
        return self.v_encoder.f_encoder.embeddings.word_embeddings.weight

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``text``: the Cross-modal Transformer's text embeddings; ``cross``: its layers; ``temporal``:
        frame projection + Temporal Transformer; ``query``: the VSM query path; ``heads``: the rest."""
        enc = self.v_encoder
        groups = {
            "text": list(enc.f_encoder.embeddings.parameters()),
            "cross": list(enc.f_encoder.encoder.parameters()) + list(enc.f_encoder.img_embeddings.parameters()),
            "temporal": list(enc.frame_transform.parameters()) + list(enc.c_encoder.parameters()),
            "query": list(self.q_feat_attn.parameters()) + list(self.video_query_linear.parameters())
            + list(self.video_st_predictor.parameters()) + list(self.video_ed_predictor.parameters()),
        }
        seen = {id(p) for ps in groups.values() for p in ps}
        groups["heads"] = [p for p in self.parameters() if id(p) not in seen]
        return groups

    text_stream_prefixes = ("v_encoder.f_encoder.embeddings.", "v_encoder.f_encoder.encoder.")
    text_head_prefixes = ("v_encoder.f_encoder.lm_head.",)

    def text_weight_name(self, bert_name: str) -> str | None:
        """Where a BERT tensor goes: embeddings and the first ``cross_layers`` layers of the
        Cross-modal Transformer, its pooler and LM head (``cls.predictions.*``)."""
        f = "v_encoder.f_encoder."
        if bert_name.startswith("embeddings."):
            return f + bert_name
        if bert_name.startswith("encoder.layer."):
            index = int(bert_name.split(".")[2])
            return f + bert_name if index < self.config.cross_layers else None
        if bert_name.startswith("pooler."):
            return f + bert_name
        if bert_name.startswith("cls.predictions.transform."):
            return f + "lm_head." + bert_name[len("cls.predictions.transform."):]
        if bert_name == "cls.predictions.bias":
            return f + "lm_head.bias"
        return None


__all__ = [
    "FomOutput",
    "HeroEncoderOutput",
    "HeroForPretraining",
    "HeroPretrainingOutput",
    "HierarchicalEncoder",
    "MfmOutput",
    "MlmOutput",
    "VsmOutput",
]
