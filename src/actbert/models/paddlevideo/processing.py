"""Zero-shot text-video retrieval with the ``paddlevideo`` architecture, in PaddleVideo's MSR-VTT layout.

PaddleVideo evaluates ActBERT on MSR-VTT (``MSRVTTDataset`` + ``MSRVTTMetric``) by scoring every
(caption, video) pair with the matching head and ranking videos per caption. This module rebuilds
that test-time input layout so converted Paddle weights see what they were evaluated with:

* **text** ``[36]``: ``[CLS] tokens [SEP]``, padded with id 0; segment ids 0; mask 1 on real tokens.
  (Upstream does not truncate; here captions longer than 34 word pieces are cut.)
* **regions** ``[36, Fv]``: slot 0 is a global feature = sum of *all* the video's region features
  divided by their number (computed before truncation), at location ``(0, 0, 1, 1, 1)``; slots
  1..35 are the first 35 regions with their ``(x1/W, y1/H, x2/W, y2/H, area/(W*H))`` locations;
  the rest are zero. The region mask is 1 on the global slot and the real regions.
* **actions** ``[5, Fa]``: the video's action features, zero-padded. Upstream marks **all five
  action slots valid** (its action mask is all ones, padded slots included); that is reproduced by
  default (``mask_padded_actions=False``). With more than 5 actions, 5 are picked evenly (upstream
  would fail).
* **score**: ``softmax(seq_relationship_score)[:, 0]``, the probability of class 0 ("matched").

Use :func:`video_input` (raw arrays) or :func:`video_input_from_features` (a feature-store record)
per video, :func:`caption_input` per caption, then :func:`match_probabilities` for a list of
(caption, video) pairs or :func:`score_matrix` for all captions x all videos.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from actbert.models.batch import TensorBatch
from actbert.errors import ActBertError

from actbert.models.paddlevideo.configuration import MATCHED_CLASS, PADDING_ID
from actbert.models.processing import Item, Processor

MAX_TEXT_LEN = 36
MAX_REGIONS = 35  # plus the global slot
MAX_ACTIONS = 5
GLOBAL_LOCATION = (0.0, 0.0, 1.0, 1.0, 1.0)


class PaddleVideoRetrievalError(ActBertError):
    """An input that cannot be laid out for the paddlevideo model (names the video/caption and field)."""


@dataclass
class CaptionInput:
    """One caption in PaddleVideo's layout: ``text_ids``, ``token_type_ids``, ``text_mask``, int64 ``[Lt]``."""

    text_ids: np.ndarray
    token_type_ids: np.ndarray
    text_mask: np.ndarray


@dataclass
class VideoInput:
    """One video in PaddleVideo's MSR-VTT test layout.

    ``image_feat [1+R, Fv]`` float32 (slot 0 global), ``image_loc [1+R, 5]`` float32,
    ``image_mask [1+R]`` int64, ``action_feat [A, Fa]`` float32, ``action_mask [A]`` int64.
    """

    image_feat: np.ndarray
    image_loc: np.ndarray
    image_mask: np.ndarray
    action_feat: np.ndarray
    action_mask: np.ndarray
    video_id: str = ""


def caption_input(token_ids: Sequence[int], cls_id: int, sep_id: int, max_len: int = MAX_TEXT_LEN) -> CaptionInput:
    """``[CLS] ids [SEP]`` padded with 0 to ``max_len`` (ids beyond ``max_len - 2`` are cut)."""
    ids = [cls_id, *list(token_ids)[: max_len - 2], sep_id]
    text = np.full(max_len, PADDING_ID, np.int64)
    text[: len(ids)] = ids
    mask = np.zeros(max_len, np.int64)
    mask[: len(ids)] = 1
    return CaptionInput(text_ids=text, token_type_ids=np.zeros(max_len, np.int64), text_mask=mask)


def _even_pick(n: int, k: int) -> np.ndarray:
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def video_input(
    region_features: np.ndarray,
    region_locations: np.ndarray,
    action_features: np.ndarray,
    max_regions: int = MAX_REGIONS,
    max_actions: int = MAX_ACTIONS,
    mask_padded_actions: bool = False,
    video_id: str = "",
) -> VideoInput:
    """Lay out one video: ``region_features [R, Fv]``, ``region_locations [R, 5]`` (normalised),
    ``action_features [A, Fa]`` -> :class:`VideoInput` (module docstring)."""
    where = f"video {video_id!r}" if video_id else "video"
    feats = np.asarray(region_features, np.float32)
    locs = np.asarray(region_locations, np.float32)
    acts = np.asarray(action_features, np.float32)
    if feats.ndim != 2 or locs.shape != (feats.shape[0], 5):
        raise PaddleVideoRetrievalError(
            f"{where}: region_features {feats.shape} / region_locations {locs.shape}: expected [R, Fv] and [R, 5]"
        )
    if acts.ndim != 2:
        raise PaddleVideoRetrievalError(f"{where}: action_features has shape {acts.shape}, expected [A, Fa]")
    if feats.shape[0] == 0:
        raise PaddleVideoRetrievalError(f"{where}: region_features is empty (the global slot needs at least one region)")
    if acts.shape[0] == 0:
        raise PaddleVideoRetrievalError(f"{where}: action_features is empty")
    for name, array in (("region_features", feats), ("region_locations", locs), ("action_features", acts)):
        if not np.all(np.isfinite(array)):
            raise PaddleVideoRetrievalError(f"{where}: {name} contains NaN or infinity")

    slots = 1 + max_regions
    kept = min(feats.shape[0], max_regions)
    image_feat = np.zeros((slots, feats.shape[1]), np.float32)
    image_loc = np.zeros((slots, 5), np.float32)
    image_mask = np.zeros(slots, np.int64)
    # Global slot: mean over every region given, before truncation (upstream order of operations).
    image_feat[0] = feats.sum(axis=0) / feats.shape[0]
    image_loc[0] = GLOBAL_LOCATION
    image_feat[1 : 1 + kept] = feats[:kept]
    image_loc[1 : 1 + kept] = locs[:kept]
    image_mask[: 1 + kept] = 1

    picked = acts[_even_pick(acts.shape[0], max_actions)]
    action_feat = np.zeros((max_actions, acts.shape[1]), np.float32)
    action_feat[: len(picked)] = picked
    action_mask = np.ones(max_actions, np.int64)  # upstream: every slot "valid", padded ones too
    if mask_padded_actions:
        action_mask[len(picked) :] = 0
    return VideoInput(image_feat, image_loc, image_mask, action_feat, action_mask, video_id)


def video_input_from_features(
    features: Any,
    start: float | None = None,
    end: float | None = None,
    video_id: str = "",
    max_regions: int = MAX_REGIONS,
    max_actions: int = MAX_ACTIONS,
    mask_padded_actions: bool = False,
) -> VideoInput:
    """A :class:`~actbert.data.store.VideoFeatures` record (optionally the span ``[start, end]``)
    -> :class:`VideoInput`.

    Regions: the valid regions of the 1 FPS frames in the span, frame by frame (the global slot
    averages all of them; the first ``max_regions`` fill the slots, frames thinned evenly first
    when there are too many). Actions: the clips whose centre lies in the span (else all clips).
    """
    frame_times = np.asarray(features.frame_times, np.float64)
    counts = np.asarray(features.region_counts, np.int64)
    lo = -np.inf if start is None else float(start)
    hi = np.inf if end is None else float(end)
    frames = np.nonzero((frame_times >= lo) & (frame_times <= hi) & (counts > 0))[0]
    if frames.size == 0:
        frames = np.nonzero(counts > 0)[0]
    if frames.size == 0:
        raise PaddleVideoRetrievalError(f"video {video_id!r}: field 'region_counts' is zero for every frame")
    region_feats = np.asarray(features.region_features)
    region_locs = np.asarray(features.region_locations)
    all_feats = np.concatenate([region_feats[f, : counts[f]] for f in frames])
    # Thin frames evenly so the kept regions cover the span, then let video_input truncate.
    per_frame = max(1, int(np.ceil(counts[frames].mean())))
    shown = frames[_even_pick(frames.size, max(1, max_regions // per_frame))]
    feats = np.concatenate([region_feats[f, : counts[f]] for f in shown])
    locs = np.concatenate([region_locs[f, : counts[f]] for f in shown])
    clip_times = np.asarray(features.clip_times, np.float64)
    centres = clip_times.mean(axis=1)
    clips = np.nonzero((centres >= lo) & (centres <= hi))[0]
    if clips.size == 0:
        clips = np.arange(len(clip_times))
    layout = video_input(
        feats, locs, np.asarray(features.action_features)[clips], max_regions, max_actions, mask_padded_actions, video_id
    )
    # Global slot over every region of the span, not only the displayed ones.
    layout.image_feat[0] = all_feats.astype(np.float32).sum(axis=0) / all_feats.shape[0]
    return layout


def features_from_paddle_record(
    features: np.ndarray,
    boxes: np.ndarray,
    image_w: float,
    image_h: float,
    action_features: np.ndarray,
    max_regions: int,
    video_id: str = "",
) -> Any:
    """One video of PaddleVideo's MSR-VTT test features -> a feature-store record.

    ``features [N, Fv]`` region features, ``boxes [N, 4]`` pixels ``x1, y1, x2, y2`` in an
    ``image_w x image_h`` frame, ``action_features [A, Fa]`` (the fields of the port's per-video
    record, exported to arrays). The record holds one frame at t = 0 with the N regions (``N <=
    max_regions``, the store's ``max_regions``) and one 1-second clip per action feature, so that
    :func:`video_input_from_features` rebuilds the port's layout: global slot = mean of the N
    regions, the first 35 regions, locations ``(x1/W, y1/H, x2/W, y2/H, area/(W*H))``, up to 5
    actions. Class distributions and action targets are not part of the port's test data: they are
    stored as zeros (a store with ``num_region_classes = num_actions = 1``).
    """
    from actbert.data.store import VideoFeatures

    where = f"video {video_id!r}" if video_id else "video"
    feats = np.asarray(features, np.float32)
    box = np.asarray(boxes, np.float32)
    acts = np.asarray(action_features, np.float32)
    if feats.ndim != 2 or box.shape != (feats.shape[0], 4):
        raise PaddleVideoRetrievalError(f"{where}: features {feats.shape} / boxes {box.shape}: expected [N, Fv] and [N, 4]")
    if not 0 < feats.shape[0] <= max_regions:
        raise PaddleVideoRetrievalError(f"{where}: field 'features' has {feats.shape[0]} regions; expected 1..{max_regions} (max_regions)")
    if acts.ndim != 2 or acts.shape[0] == 0:
        raise PaddleVideoRetrievalError(f"{where}: field 'action_features' has shape {acts.shape}, expected [A >= 1, Fa]")
    if not (float(image_w) > 0 and float(image_h) > 0):
        raise PaddleVideoRetrievalError(f"{where}: image_w / image_h must be positive, got {image_w} x {image_h}")
    w, h = float(image_w), float(image_h)
    n, r = feats.shape[0], int(max_regions)
    region_features = np.zeros((1, r, feats.shape[1]), np.float32)
    region_boxes = np.zeros((1, r, 4), np.float32)
    region_locations = np.zeros((1, r, 5), np.float32)
    region_features[0, :n] = feats
    region_boxes[0, :n] = box
    region_locations[0, :n, :4] = box / np.array([w, h, w, h], np.float32)
    region_locations[0, :n, 4] = (box[:, 3] - box[:, 1]) * (box[:, 2] - box[:, 0]) / (w * h)
    starts = np.arange(acts.shape[0], dtype=np.float64)
    return VideoFeatures(
        clip_times=np.stack([starts, starts + 1.0], axis=1),
        action_features=acts,
        action_targets=np.zeros((acts.shape[0], 1), np.float32),
        frame_times=np.zeros(1, np.float64),
        region_features=region_features,
        region_boxes=region_boxes,
        region_locations=region_locations,
        region_class_probs=np.zeros((1, r, 1), np.float32),
        region_counts=np.array([n], np.int64),
    )


def _stack(items: Sequence[Any], name: str) -> torch.Tensor:
    return torch.from_numpy(np.stack([getattr(item, name) for item in items]))


def model_inputs(captions: Sequence[CaptionInput], videos: Sequence[VideoInput], device: str | torch.device = "cpu") -> list[torch.Tensor]:
    """Row ``i`` = ``captions[i]`` with ``videos[i]`` -> the 8 positional inputs of
    :class:`PaddleVideoActBert` (``text_ids [B, 36]`` ... ``action_mask [B, 5]``)."""
    return [
        t.to(device)
        for t in (
            _stack(captions, "text_ids"),
            _stack(videos, "action_feat"),
            _stack(videos, "image_feat"),
            _stack(videos, "image_loc"),
            _stack(captions, "token_type_ids"),
            _stack(captions, "text_mask"),
            _stack(videos, "image_mask"),
            _stack(videos, "action_mask"),
        )
    ]


@torch.no_grad()
def match_probabilities(
    model: Any,
    captions: Sequence[CaptionInput],
    videos: Sequence[VideoInput],
    pairs: Sequence[tuple[int, int]] | np.ndarray,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> np.ndarray:
    """Matched probability for each ``(caption_index, video_index)`` pair -> float32 ``[P]``.

    For inputs already in the upstream layout (``CaptionInput`` / ``VideoInput``, e.g. arrays
    from PaddleVideo's own pipeline); feature-store items go through the shared task scorer
    (``actbert.tasks.scoring.score_items``). Both score with the model's ``pair_scores``.
    """
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if pairs.size and (pairs[:, 0].max() >= len(captions) or pairs[:, 1].max() >= len(videos) or pairs.min() < 0):
        raise PaddleVideoRetrievalError("pairs: index out of range of the captions / videos given")
    vocab = model.config.vocab_size
    for i, caption in enumerate(captions):
        if caption.text_ids.max(initial=0) >= vocab:
            raise PaddleVideoRetrievalError(
                f"caption {i}: field 'text_ids' has id {int(caption.text_ids.max())} >= the model's vocab_size {vocab}"
            )
    model = model.eval().to(device)
    out = np.empty(len(pairs), np.float32)
    starts = range(0, len(pairs), batch_size)
    for s in tqdm(starts, desc="paddlevideo match", disable=not progress, file=sys.stderr):
        chunk = pairs[s : s + batch_size]
        batch = PaddleVideoBatch(*model_inputs([captions[i] for i in chunk[:, 0]], [videos[j] for j in chunk[:, 1]], device))
        out[s : s + len(chunk)] = model.pair_scores(batch).cpu().numpy()  # the family's one scoring rule
    return out


def score_matrix(
    model: Any,
    captions: Sequence[CaptionInput],
    videos: Sequence[VideoInput],
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> np.ndarray:
    """``[num_captions, num_videos]`` matched probabilities (every caption against every video),
    as ``MSRVTTMetric`` fills its score matrix; rank videos per caption by descending score."""
    c, v = np.meshgrid(np.arange(len(captions)), np.arange(len(videos)), indexing="ij")
    pairs = np.stack([c.ravel(), v.ravel()], axis=1)
    return match_probabilities(model, captions, videos, pairs, batch_size, device, progress).reshape(len(captions), len(videos))


def encode_captions(tokenizer: Any, texts: Sequence[str], max_len: int = MAX_TEXT_LEN) -> list[CaptionInput]:
    """Tokenise captions with the project's tokenizer (``encode``, ``cls_id``, ``sep_id``)."""
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise PaddleVideoRetrievalError(f"caption {i}: empty text")
        out.append(caption_input(tokenizer.encode(text), tokenizer.cls_id, tokenizer.sep_id, max_len))
    return out


@dataclass
class PaddleVideoBatch(TensorBatch):
    """The 8 inputs of :class:`~actbert.models.paddlevideo.modeling.PaddleVideoActBert` in upstream order."""

    text_ids: torch.Tensor  # [B, Lt] long
    action_feat: torch.Tensor  # [B, La, Fa]
    image_feat: torch.Tensor  # [B, Lv, Fv] (slot 0 = global)
    image_loc: torch.Tensor  # [B, Lv, 5]
    token_type_ids: torch.Tensor  # [B, Lt]
    text_mask: torch.Tensor  # [B, Lt]
    image_mask: torch.Tensor  # [B, Lv]
    action_mask: torch.Tensor  # [B, La]

    # pretraining labels, PaddleVideo's conventions (None outside pretraining)
    masked_lm_labels: torch.Tensor | None = None  # [B, Lt] long, -1 = no target
    image_label: torch.Tensor | None = None  # [B, Lv-1] long, 1 = masked region (global slot excluded)
    image_target: torch.Tensor | None = None  # [B, Lv-1, v_target] detector class distribution
    masked_action_labels: torch.Tensor | None = None  # [B, La] long, -1 = no target
    next_sentence_label: torch.Tensor | None = None  # [B] long, 0 = matched caption

    def inputs(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in INPUT_NAMES]

    def num_tokens(self) -> int:
        return int(self.text_mask.sum() + self.image_mask.sum() + self.action_mask.sum())


INPUT_NAMES = ("text_ids", "action_feat", "image_feat", "image_loc", "token_type_ids", "text_mask", "image_mask", "action_mask")


def from_actbert_batch(batch: Any, act_id: int, region_id: int) -> PaddleVideoBatch:
    """A pretraining sample batch in ActBERT's three-stream layout -> PaddleVideo's inputs and labels.

    PaddleVideo pretrains ActBERT on the same kind of sample (a window of clips + their narration),
    so the family reuses ActBERT's sample builder and masking and re-lays the batch out:

    * text: the same ids (segment ids all 0: PaddleVideo's ``type_vocab_size`` is 2); MLM labels
      with -1 for "no target";
    * regions: slot 0 = the mean of the row's real regions at location (0, 0, 1, 1, 1), then the
      region stream with its [SEP] / padding slots masked out; ``image_label`` / ``image_target``
      from the masked-region targets;
    * actions: the [ACT] slots (the closing [SEP] masked out); ``masked_action_labels`` = the
      arg-max mined verb of each masked action with a target, -1 elsewhere;
    * ``next_sentence_label`` = 0 for a matched caption, 1 for a negative (upstream convention).
    """
    is_region = (batch.region_token_ids == region_id) & batch.region_mask.bool()  # [B, Lr]
    is_act = (batch.action_token_ids == act_id) & batch.action_mask.bool()  # [B, La]
    weight = is_region.float()[..., None]
    global_feat = (batch.region_features * weight).sum(1) / weight.sum(1).clamp(min=1.0)  # [B, Dr]
    b = batch.region_features.shape[0]
    global_loc = torch.tensor(GLOBAL_LOCATION, dtype=batch.region_locations.dtype).expand(b, 1, 5)
    out = PaddleVideoBatch(
        text_ids=batch.input_ids,
        action_feat=batch.action_features,
        image_feat=torch.cat([global_feat[:, None], batch.region_features], dim=1),
        image_loc=torch.cat([global_loc, batch.region_locations], dim=1),
        token_type_ids=torch.zeros_like(batch.input_ids),
        text_mask=batch.text_mask.long(),
        image_mask=torch.cat([torch.ones(b, 1, dtype=torch.long), is_region.long()], dim=1),
        action_mask=is_act.long(),
    )
    if batch.mlm_labels is not None:
        out.masked_lm_labels = torch.where(batch.mlm_labels == -100, torch.full_like(batch.mlm_labels, -1), batch.mlm_labels)
    if batch.region_targets is not None and batch.region_target_mask is not None:
        out.image_label = (batch.region_target_mask.bool() & is_region).long()
        out.image_target = batch.region_targets
    if batch.action_targets is not None and batch.action_target_mask is not None:
        has = batch.action_target_mask.bool() & is_act & (batch.action_targets.sum(-1) > 0)
        out.masked_action_labels = torch.where(has, batch.action_targets.argmax(-1), torch.full_like(batch.action_token_ids, -1))
    if batch.match_labels is not None:
        out.next_sentence_label = torch.where(batch.match_labels > 0.5, MATCHED_CLASS, 1 - MATCHED_CLASS).long()
    return out


@dataclass
class PaddleVideoPretrainingCollator:
    """Samples -> ActBERT's batch (its :class:`~actbert.models.actbert.processing.Collator`) -> :func:`from_actbert_batch`."""

    collator: Any
    act_id: int
    region_id: int

    def __call__(self, samples: Sequence[Any]) -> PaddleVideoBatch:
        return from_actbert_batch(self.collator(samples), self.act_id, self.region_id)


class PaddleVideoProcessor(Processor):
    """Task items -> :class:`PaddleVideoBatch` in PaddleVideo's MSR-VTT test layout (module docstring).

    A video part's layout comes from its store record (:func:`video_input_from_features`; frames
    given as a list are read as the span they cover); text through :func:`encode_captions`.
    """

    notes = ("PaddleVideo MSR-VTT test layout (global + 35 regions, 5 action slots), score = P(matched)",)

    def __init__(self, assembler: Any, config: Any):
        super().__init__(assembler, config)
        self._videos: dict[Any, VideoInput] = {}

    @classmethod
    def pretraining_collator(cls, config: Any, tokenizer: Any, pad_to: tuple[int, int, int] | None = None) -> PaddleVideoPretrainingCollator:
        from actbert.models.actbert.processing import Collator

        return PaddleVideoPretrainingCollator(Collator(int(tokenizer.pad_id), pad_to), int(tokenizer.act_id), int(tokenizer.region_id))

    def video(self, ref: Any) -> VideoInput:
        layout = self._videos.get(ref)
        if layout is None:
            start, end = ref.start, ref.end
            if ref.frames is not None:
                times = self.assembler.frame_times(ref.video_id)[list(ref.frames)]
                start, end = float(times.min()), float(times.max()) + 1.0
            layout = video_input_from_features(self.assembler.video(ref.video_id), start, end, video_id=ref.video_id)
            if self.config is not None:
                for field_name, width, expected in (
                    ("region_features", layout.image_feat.shape[1], self.config.v_feature_size),
                    ("action_features", layout.action_feat.shape[1], self.config.a_feature_size),
                ):
                    if width != expected:
                        raise PaddleVideoRetrievalError(
                            f"{self.assembler.store_name}: video {ref.video_id!r}: field {field_name!r} has width {width} but the "
                            f"paddlevideo model expects {expected} (features must come from the same extractors as the checkpoint's)"
                        )
            self._videos[ref] = layout
        return layout

    def batch(self, items: Sequence[Item], use_regions: bool = True) -> PaddleVideoBatch:
        if not use_regions:
            raise PaddleVideoRetrievalError("paddlevideo layout: use_regions=False is not supported (regions are part of its input)")
        vocab = getattr(self.config, "vocab_size", None)
        captions = []
        for i, it in enumerate(items):
            if isinstance(it.text, str) or it.text is None:
                captions.extend(encode_captions(self.tokenizer, [it.text or ""]))
            else:
                captions.append(caption_input(list(it.text), self.tokenizer.cls_id, self.tokenizer.sep_id))
            if vocab is not None and captions[-1].text_ids.max(initial=0) >= vocab:
                raise PaddleVideoRetrievalError(
                    f"item {i}: field 'text_ids' has id {int(captions[-1].text_ids.max())} >= the model's vocab_size {vocab}"
                )
        return PaddleVideoBatch(*model_inputs(captions, [self.video(it.video) for it in items]))

    def mask_positions(self, batch: PaddleVideoBatch) -> torch.Tensor:
        return batch.text_ids == self.tokenizer.mask_id


def matched_probability(seq_relationship_score: torch.Tensor) -> torch.Tensor:
    """``[B, 2]`` logits -> ``[B]`` probability that text and video match (class 0)."""
    return seq_relationship_score.float().softmax(dim=-1)[:, MATCHED_CLASS]


__all__ = [
    "PaddleVideoBatch",
    "PaddleVideoProcessor",
    "matched_probability",
    "CaptionInput",
    "GLOBAL_LOCATION",
    "MAX_ACTIONS",
    "MAX_REGIONS",
    "MAX_TEXT_LEN",
    "PaddleVideoRetrievalError",
    "VideoInput",
    "caption_input",
    "encode_captions",
    "features_from_paddle_record",
    "match_probabilities",
    "model_inputs",
    "score_matrix",
    "video_input",
    "video_input_from_features",
]
