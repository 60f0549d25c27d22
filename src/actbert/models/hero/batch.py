"""HERO's batch: :class:`HeroBatch`, the collated input of one pretraining task or of task items.

The field names are upstream's batch keys (``data/data.py`` ``video_collate`` and the task
collates), so a batch of the original code maps onto it one to one. Shapes: ``S`` subtitle rows
(video-major), ``B`` videos, ``K`` frames per row, ``Ls`` tokens per row, ``Lf`` compact row length,
``Nv`` frames per video, ``Q`` VSM queries, ``Lq`` query tokens, ``Dv`` frame feature width.

Each subtitle row of the Cross-modal Transformer is ``[its K_i frames, its L_i tokens]``:
``f_gather_index`` indexes ``cat([frame embeddings (K), token embeddings (Ls)])`` to that compact
layout, ``f_attn_masks`` marks its real positions. A row without frames holds one masked dummy frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from actbert.models.batch import TensorBatch


@dataclass
class HeroBatch(TensorBatch):
    task: str  # "repr" (encoder only) or one of configuration.TASKS
    # Cross-modal Transformer rows
    f_sub_input_ids: torch.Tensor  # long [S, Ls]: [SEP] (repr/MFM/FOM/VSM) or [CLS] (MLM) + tokens, PAD-padded
    f_sub_pos_ids: torch.Tensor  # long [1 or S, Ls]: 0..Ls-1
    f_v_feats: torch.Tensor  # float [S, K, Dv]: the row's frames, zero-padded
    f_v_pos_ids: torch.Tensor  # long [1 or S, K]: 0..K-1 (position within the subtitle)
    f_attn_masks: torch.Tensor  # long [S, Lf]
    f_gather_index: torch.Tensor  # long [S, Lf]
    # Temporal Transformer
    c_v_feats: torch.Tensor  # float [B, Nv, Dv]: every frame of each video
    c_attn_masks: torch.Tensor  # long [B, Nv]: 1 = real frame
    num_subs: torch.Tensor  # long [B]: rows per video
    sub_frames: torch.Tensor  # long [S, K]: absolute frame index of each row frame, -1 = none
    sub_index: torch.Tensor  # long [S]: the row's subtitle index within its video
    # MLM
    txt_mask_tgt: torch.Tensor | None = None  # bool [S, Lf]: masked tokens, in the compact layout
    txt_labels: torch.Tensor | None = None  # long [M]: their original ids (row-major)
    # MFM (NCE and regression)
    c_v_masks: torch.Tensor | None = None  # bool [B, Nv]
    f_v_masks: torch.Tensor | None = None  # bool [S, K]
    feat_targets: torch.Tensor | None = None  # float [Mf, Dv]: the raw features of the masked frames
    # FOM
    shuffled_orders: torch.Tensor | None = None  # long [B, Nv]: frame i goes to position orders[b, i]
    fom_targets: torch.Tensor | None = None  # long [B, Nv]: original index of the frame at j, -1 = none
    # VSM
    query_input_ids: torch.Tensor | None = None  # long [Q, Lq]: [CLS] + query tokens
    query_pos_ids: torch.Tensor | None = None  # long [1 or Q, Lq]
    query_attn_masks: torch.Tensor | None = None  # long [Q, Lq]
    q_vidx: torch.Tensor | None = None  # long [Q]: the video of each query
    vsm_targets: torch.Tensor | None = None  # long [Q, 2]: (start, end) frame, -1 = ignore
    video_ids: list[str] = field(default_factory=list)

    def num_tokens(self) -> int:
        """Real positions of the cross-modal rows and the temporal sequence (throughput logging)."""
        n = int(self.f_attn_masks.sum() + self.c_attn_masks.sum())
        if self.query_attn_masks is not None:
            n += int(self.query_attn_masks.sum())
        return n

    @property
    def num_videos(self) -> int:
        return int(self.c_v_feats.shape[0])

    def video_of_row(self) -> torch.Tensor:
        """long [S]: the video of each subtitle row."""
        return torch.repeat_interleave(torch.arange(len(self.num_subs), device=self.num_subs.device), self.num_subs)


__all__ = ["HeroBatch"]
