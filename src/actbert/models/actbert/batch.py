"""ActBERT's input: the padded three-stream batch that its processor (``processing.py``) builds.

ActBERT's input (paper 3.2.1) is ``{[CLS], w1..wN, [SEP], a1..aL, [SEP], r1..rM, [SEP]}`` with a
[SEP] between sentences and between the regions of different clips. The tangled transformer runs
one stream per source, so the sequence is kept as three aligned streams:

* text    ``Lt``: ``[CLS] w.. [SEP] w.. [SEP] ...`` (one sentence per clip)
* action  ``La``: ``[ACT] x C, [SEP]``        (one action feature per clip)
* region  ``Lr``: ``[REGION] x n_1, [SEP], [REGION] x n_2, [SEP], ...`` (regions of each clip's frame)

Each position has a token id (words; or [ACT] / [REGION] / [SEP] / [PAD] in the visual streams),
a position id (words: running index; actions: clip order; regions: one id per frame, shared by
that frame's regions), and a segment id (the clip index, shared by the clip's words, action and
regions). Visual features are zero at [SEP], padding and masked positions.

Token ids in the visual streams are the tokenizer's ids (``act_id``, ``region_id``, ``sep_id``,
``pad_id``); :class:`~actbert.models.actbert.modeling.ActBertModel` maps exactly these four ids (config ``act_token_id``,
``region_token_id``, ``sep_token_id``, ``pad_token_id``) onto its own 4-entry visual token table
``[PAD], [SEP], [ACT], [REGION]`` in the visual width; any other id in a visual stream is an error.

Pretraining targets are optional; ``-100`` / ``False`` mark positions without a target.

:meth:`ActBertBatch.pair_rows` re-pairs rows (the text of row ``i`` with the video of row ``j``):
the hard negatives of the matching loss are built that way from a batch's matched pairs.
``use_regions`` (None = the model config's) says whether the model runs its region stream on
this batch: the processor sets it False for "without region cues" inputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from actbert.models.batch import TensorBatch


# the fields that belong to the text stream (pair_rows); every other tensor belongs to the video
TEXT_FIELDS = frozenset({"input_ids", "text_segment_ids", "text_position_ids", "text_mask", "mlm_labels"})


@dataclass
class ActBertBatch(TensorBatch):
    # text stream
    input_ids: torch.Tensor  # [B, Lt] long
    text_segment_ids: torch.Tensor  # [B, Lt] long
    text_position_ids: torch.Tensor  # [B, Lt] long
    text_mask: torch.Tensor  # [B, Lt] bool, True = real token
    # action stream
    action_token_ids: torch.Tensor  # [B, La] long ([ACT] / [SEP] / [PAD])
    action_features: torch.Tensor  # [B, La, Da] float
    action_segment_ids: torch.Tensor  # [B, La] long
    action_position_ids: torch.Tensor  # [B, La] long
    action_mask: torch.Tensor  # [B, La] bool
    # region stream
    region_token_ids: torch.Tensor  # [B, Lr] long ([REGION] / [SEP] / [PAD])
    region_features: torch.Tensor  # [B, Lr, Dr] float
    region_locations: torch.Tensor  # [B, Lr, 5] float (x1/W, y1/H, x2/W, y2/H, area fraction)
    region_segment_ids: torch.Tensor  # [B, Lr] long
    region_position_ids: torch.Tensor  # [B, Lr] long
    region_mask: torch.Tensor  # [B, Lr] bool
    # pretraining targets (None outside pretraining)
    mlm_labels: torch.Tensor | None = None  # [B, Lt] long, -100 = no target
    action_targets: torch.Tensor | None = None  # [B, La, V] float, L1-normalised verb distribution
    action_target_mask: torch.Tensor | None = None  # [B, La] bool, True = masked action with a target
    region_targets: torch.Tensor | None = None  # [B, Lr, K] float, detector class distribution
    region_target_mask: torch.Tensor | None = None  # [B, Lr] bool, True = masked region
    match_labels: torch.Tensor | None = None  # [B] float, 1 = text describes the video, 0 = negative
    video_ids: list[str] = field(default_factory=list)
    use_regions: bool | None = None  # None = config.use_regions

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])

    def num_tokens(self) -> int:
        """Real positions over the three streams (throughput logging)."""
        return int(self.text_mask.sum() + self.action_mask.sum() + self.region_mask.sum())

    def pair_rows(self, text_rows: torch.Tensor, video_rows: torch.Tensor, match_labels: torch.Tensor | None = None) -> "ActBertBatch":
        """Row ``n`` = the text stream of row ``text_rows[n]`` with the action and region streams of
        row ``video_rows[n]`` (``[N]`` long each) -> an ``N``-row batch.

        Text fields (and ``mlm_labels``) follow ``text_rows``; visual fields, their targets and
        ``video_ids`` follow ``video_rows``. ``match_labels`` is the given ``[N]`` (None: none --
        only the caller knows which new pairs match).
        """
        text_rows, video_rows = torch.as_tensor(text_rows).long(), torch.as_tensor(video_rows).long()
        if text_rows.shape != video_rows.shape or text_rows.dim() != 1:
            raise ValueError(f"pair_rows: text_rows {list(text_rows.shape)} and video_rows {list(video_rows.shape)} must be equal 1-d shapes")
        changes: dict = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor) and f.name != "match_labels":
                rows = text_rows if f.name in TEXT_FIELDS else video_rows
                changes[f.name] = value[rows.to(value.device)]
        changes["match_labels"] = match_labels
        changes["video_ids"] = [self.video_ids[i] for i in video_rows.tolist()] if self.video_ids else []
        return dataclasses.replace(self, **changes)

    def restored_text_ids(self) -> torch.Tensor:
        """``input_ids [B, Lt]`` with every MLM position back to its original word (``mlm_labels``):
        the text as it was before masking (the contrastive loss reads whole sentences)."""
        if self.mlm_labels is None:
            return self.input_ids
        return torch.where(self.mlm_labels != -100, self.mlm_labels, self.input_ids)

    def select(self, index: torch.Tensor | slice) -> "ActBertBatch":
        """Rows ``index`` of every tensor (and of ``video_ids``)."""
        changes = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                changes[f.name] = value[index]
        if isinstance(index, slice):
            changes["video_ids"] = self.video_ids[index]
        else:
            changes["video_ids"] = [self.video_ids[i] for i in index.tolist()] if self.video_ids else []
        return dataclasses.replace(self, **changes)
