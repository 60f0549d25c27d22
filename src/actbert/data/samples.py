"""Pretraining samples: a window of adjacent clips of one video + their narration (paper 4.1).

One :class:`Sample` is one row of an :class:`actbert.models.actbert.batch.ActBertBatch` before padding::

    text    [CLS] s_1 [SEP] s_2 [SEP] ... s_n [SEP]            segment id of s_i and its [SEP] = i-1
    action  [ACT]_1 ... [ACT]_n [SEP]                          ([CLS] has segment 0)
    region  [REGION] x m_1 [SEP] [REGION] x m_2 [SEP] ...      m_i = regions of clip i's frame(s)

Position ids: text = running index 0..Lt-1; action = clip order 0..n-1 (the closing [SEP] gets n);
regions = frame order within the window, shared by that frame's regions: with every frame of each
clip (``region_frames="all"``, the default) the frames are numbered in time order over the window
(clip i's frame slot j -> frames of clips 0..i-1 + j); with ``region_frames="nearest"`` and
``frames_per_clip`` n, clip i's slot j -> i * n + j. A region [SEP] takes the id of the frame it closes. Segment id = clip index in
every stream. Visual features are zero at [SEP] (and, after masking, at masked positions).

**Truncation** (``max_text_len``): while the text is too long, drop the last word piece of the
currently longest sentence (ties: the later sentence), so short sentences survive intact; a
sentence is never cut below one word piece. ``max_text_len`` must leave room for
``[CLS]`` + one word piece and one ``[SEP]`` per clip (checked up front). Regions are limited per
frame (``max_regions_per_frame``) and per clip (``max_regions_per_clip``) by the corpus, so the
region stream is at most ``n * (regions_per_clip + 1)`` long.

**Determinism**: every random choice for dataset index ``i`` in epoch ``e`` (window start,
negative or not, the negative's video and window, all masking) comes from
``numpy.random.default_rng([seed, e, i])``, so a sample does not depend on which DataLoader
worker builds it, on the worker count, or on whether the run was resumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from actbert.data.corpus import Corpus, CorpusError, VideoClips, require_finite
from actbert.data.masked_rows import MaskedRows
from actbert.data.masking import MaskingConfig, mask_sample
from actbert.data.prefetch import will_need


@dataclass(frozen=True)
class SpecialTokens:
    cls_id: int
    sep_id: int
    pad_id: int
    mask_id: int
    act_id: int
    region_id: int
    vocab_size: int
    extra_special_ids: tuple[int, ...] = ()

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> "SpecialTokens":
        extra = tuple(int(i) for i in getattr(tokenizer, "all_special_ids", ()) or ())
        return cls(
            cls_id=int(tokenizer.cls_id),
            sep_id=int(tokenizer.sep_id),
            pad_id=int(tokenizer.pad_id),
            mask_id=int(tokenizer.mask_id),
            act_id=int(tokenizer.act_id),
            region_id=int(tokenizer.region_id),
            vocab_size=int(tokenizer.vocab_size),
            extra_special_ids=extra,
        )

    @property
    def special_ids(self) -> set[int]:
        return {self.cls_id, self.sep_id, self.pad_id, self.mask_id, self.act_id, self.region_id, *self.extra_special_ids}


@dataclass
class Sample:
    """One unpadded pretraining row (numpy). Lengths ``Lt``, ``La``, ``Lr``."""

    video_id: str
    input_ids: np.ndarray  # int64 [Lt]
    text_segment_ids: np.ndarray  # int64 [Lt]
    text_position_ids: np.ndarray  # int64 [Lt]
    text_special: np.ndarray  # bool [Lt] True at [CLS]/[SEP] (never masked)
    action_token_ids: np.ndarray  # int64 [La]
    action_features: np.ndarray  # float32 [La, Da]
    action_segment_ids: np.ndarray  # int64 [La]
    action_position_ids: np.ndarray  # int64 [La]
    action_targets: np.ndarray  # float32 [La, V]
    region_token_ids: np.ndarray  # int64 [Lr]
    region_features: np.ndarray  # float32 [Lr, Dr]
    region_locations: np.ndarray  # float32 [Lr, 5]
    region_segment_ids: np.ndarray  # int64 [Lr]
    region_position_ids: np.ndarray  # int64 [Lr]
    # float32 [Lr, K] detector class distributions; a pretraining sample's (draw_sample) are zero where
    # region_target_mask is False (no loss reads them there), held as MaskedRows when read from a corpus
    # (data/masked_rows.py); None until then with build(region_targets=False)
    region_targets: np.ndarray | MaskedRows | None
    match_label: float = 1.0
    text_video_id: str = ""  # the video the text came from (differs for negatives)
    # filled by masking (all "no target" until then)
    mlm_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # int64 [Lt], -100 = none
    action_target_mask: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # bool [La]
    region_target_mask: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # bool [Lr]

    @property
    def lengths(self) -> tuple[int, int, int]:
        return len(self.input_ids), len(self.action_token_ids), len(self.region_token_ids)


def truncate_sentences(lengths: list[int], budget: int) -> list[int]:
    """New sentence lengths with ``sum <= budget``: trim the longest first, never below 1 (0 stays 0)."""
    out = list(lengths)
    floor = [min(1, n) for n in out]
    if sum(floor) > budget:
        raise ValueError(f"{len(out)} sentences need at least {sum(floor)} word pieces, budget is {budget}")
    excess = sum(out) - budget
    while excess > 0:
        longest = max(out)
        # the later of the longest sentences loses a word piece
        i = len(out) - 1 - out[::-1].index(longest)
        out[i] -= 1
        excess -= 1
    return out


class SampleBuilder:
    """Turns a window of a video's clips (and optionally another video's text) into a :class:`Sample`."""

    def __init__(self, corpus: Corpus, specials: SpecialTokens, clips_per_sample: int = 10, max_text_len: int = 256):
        if clips_per_sample < 1:
            raise ValueError(f"clips_per_sample must be >= 1, got {clips_per_sample}")
        if max_text_len < 1 + 2 * clips_per_sample:
            raise ValueError(
                f"max_text_len={max_text_len} cannot hold [CLS] + one word piece and [SEP] for each of "
                f"{clips_per_sample} clips (needs >= {1 + 2 * clips_per_sample})"
            )
        self.corpus = corpus
        self.specials = specials
        self.clips_per_sample = clips_per_sample
        self.max_text_len = max_text_len

    def window_size(self, clips: VideoClips) -> int:
        return min(self.clips_per_sample, clips.num_clips)

    def random_window(self, clips: VideoClips, rng: np.random.Generator, size: int | None = None) -> tuple[int, int]:
        """(start, size) of a random window of adjacent clips."""
        n = self.window_size(clips) if size is None else min(size, clips.num_clips)
        if n == 0:
            raise CorpusError(f"{self.corpus.store_name}: video {clips.video_id!r} has no clips")
        start = int(rng.integers(0, clips.num_clips - n + 1))
        return start, n

    def text_stream(self, sentences: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``[CLS] s1 [SEP] s2 [SEP] ...`` -> (ids, segment ids, special flags), each ``[Lt]``."""
        sp = self.specials
        budget = self.max_text_len - 1 - len(sentences)
        lengths = truncate_sentences([len(s) for s in sentences], budget)
        ids, seg, special = [sp.cls_id], [0], [True]
        for i, (sent, n) in enumerate(zip(sentences, lengths)):
            ids.extend(sent[:n])
            ids.append(sp.sep_id)
            seg.extend([i] * (n + 1))
            special.extend([False] * n + [True])
        return np.asarray(ids, np.int64), np.asarray(seg, np.int64), np.asarray(special, bool)

    def build(
        self,
        clips: VideoClips,
        start: int,
        size: int,
        text_from: tuple[VideoClips, int, int] | None = None,
        region_targets: bool = True,
    ) -> Sample:
        """Clips ``start .. start+size-1`` of ``clips``; text from ``text_from=(video, start, size)`` if given.

        ``region_targets=False``: a corpus's clips read no class distribution here (``region_targets`` is
        None until :meth:`masked_region_targets`); other clips' are built whole all the same.
        """
        sp = self.specials
        window = slice(start, start + size)
        text_clips, t_start, t_size = text_from if text_from is not None else (clips, start, size)
        sentences = text_clips.tokens[t_start : t_start + t_size]
        input_ids, text_seg, text_special = self.text_stream(sentences)

        # action stream: one [ACT] per clip + [SEP] (zero features and targets)
        a_feat, a_tgt = clips.action_features, clips.action_targets
        will_need(a_feat, start, start + size)  # a corpus's are the record's memory map (data/prefetch.py)
        will_need(a_tgt, start, start + size)
        action_features = np.zeros((size + 1, a_feat.shape[1]), np.float32)
        action_features[:size] = a_feat[window]
        action_targets = np.zeros((size + 1, a_tgt.shape[1]), np.float32)
        action_targets[:size] = a_tgt[window]
        for name, rows in (("action_features", action_features), ("action_targets", action_targets)):
            # a corpus's arrays are the record's, checked where read (data/corpus.py)
            require_finite(rows, clips.where or clips.video_id, name, f" (clips {start}..{start + size - 1})")
        action_ids = np.asarray([sp.act_id] * size + [sp.sep_id], np.int64)
        action_seg = np.asarray(list(range(size)) + [size - 1], np.int64)
        action_pos = np.arange(size + 1, dtype=np.int64)

        # region stream: the valid regions of each clip's frame(s), then [SEP] (zero features)
        per_clip = getattr(clips.region_features, "regions", None)
        if per_clip is not None:
            # a corpus's clips gather the window's real regions straight from the store (data/corpus.py)
            frames_of, (region_features, region_locations, targets) = per_clip.window(range(start, start + size),
                                                                                      region_targets)
        else:
            frames_of, parts = [], ([], [], [])
            for c in range(start, start + size):
                valid = clips.region_valid[c]
                frames_of.append(clips.region_frame[c][valid])
                for part, array in zip(parts, (clips.region_features[c], clips.region_locations[c],
                                               clips.region_class_probs[c])):
                    part += [array[valid], np.zeros((1, array.shape[-1]), np.float32)]
            region_features, region_locations, targets = (np.concatenate(p).astype(np.float32, copy=False)
                                                          for p in parts)
        fpc = self.corpus.frames_per_clip
        r_ids, r_seg, r_pos = [], [], []
        offset = 0  # position id of the clip's first frame
        for i, (c, frames) in enumerate(zip(range(start, start + size), frames_of)):
            n = len(frames)
            # clips without frame counts ("nearest" frames; downstream units) take frames_per_clip slots
            slots = fpc if clips.frame_slots is None else max(int(clips.frame_slots[c]), 1)
            if clips.frame_slots is None:
                offset = i * slots
            r_ids.extend([sp.region_id] * n + [sp.sep_id])
            r_seg.extend([i] * (n + 1))
            last_frame = int(frames[-1]) if n else slots - 1
            r_pos.extend((offset + frames).tolist() + [offset + last_frame])
            offset += slots

        lt, la, lr = len(input_ids), size + 1, len(r_ids)
        return Sample(
            video_id=clips.video_id,
            input_ids=input_ids,
            text_segment_ids=text_seg,
            text_position_ids=np.arange(lt, dtype=np.int64),
            text_special=text_special,
            action_token_ids=action_ids,
            action_features=action_features,
            action_segment_ids=action_seg,
            action_position_ids=action_pos,
            action_targets=action_targets,
            region_token_ids=np.asarray(r_ids, np.int64),
            region_features=region_features,
            region_locations=region_locations,
            region_segment_ids=np.asarray(r_seg, np.int64),
            region_position_ids=np.asarray(r_pos, np.int64),
            region_targets=targets,
            match_label=1.0 if text_from is None else 0.0,
            text_video_id=text_clips.video_id,
            mlm_labels=np.full(lt, -100, np.int64),
            action_target_mask=np.zeros(la, bool),
            region_target_mask=np.zeros(lr, bool),
        )

    def masked_region_targets(self, sample: Sample, clips: VideoClips, start: int, size: int) -> Sample:
        """Set ``sample.region_targets`` (``[Lr, K]``) to the class distributions at its masked regions
        (``region_target_mask``) and zero elsewhere: all the pretraining losses read (they average over the
        masked rows only), for a sample built by ``build(clips, start, size, ..., region_targets=False)``:
        :class:`MaskedRows` for a corpus's clips. Modified in place and returned."""
        if sample.region_targets is None:  # a corpus's clips: read the masked rows from the store
            per_clip = clips.region_features.regions
            sample.region_targets = per_clip.window_targets(range(start, start + size), sample.region_target_mask)
        else:  # other clips' were built whole
            sample.region_targets[~sample.region_target_mask] = 0.0
        return sample


class PretrainDataset(torch.utils.data.Dataset):
    """Map-style dataset of masked pretraining samples, ``samples_per_video`` per video and epoch.

    Item ``i`` uses video ``video_ids[i % num_videos]``; all randomness comes from
    ``default_rng([seed, epoch, i])`` (see module docstring). Call :meth:`set_epoch` before
    creating each epoch's DataLoader iterator (workers copy the dataset when the iterator starts).
    With probability ``masking.negative_probability`` the text is replaced by the text of a
    random window of another video (match label 0), with as many sentences as the sample has clips
    (the window shrinks when the other video is shorter), so positives and negatives cannot be told
    apart by their shape.
    """

    def __init__(
        self,
        corpus: Corpus,
        builder: SampleBuilder,
        masking: MaskingConfig,
        seed: int = 0,
        samples_per_video: int = 1,
        video_ids: list[str] | None = None,
    ):
        self.corpus = corpus
        self.builder = builder
        self.masking = masking
        self.seed = int(seed)
        self.samples_per_video = int(samples_per_video)
        self.video_ids = list(corpus.video_ids if video_ids is None else video_ids)
        if not self.video_ids:
            raise CorpusError(f"{corpus.store_name}: no videos to build pretraining samples from")
        if masking.negative_probability > 0 and len(self.video_ids) < 2:
            raise CorpusError(f"{corpus.store_name}: negatives need at least 2 videos, found {len(self.video_ids)}")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.video_ids) * self.samples_per_video

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def __getitem__(self, index: int) -> Sample:
        rng = self.rng(index)
        position = index % len(self.video_ids)
        clips = self.corpus[self.video_ids[position]]
        return draw_sample(self.builder, self.masking, rng, clips, position, len(self.video_ids),
                           lambda other: self.corpus[self.video_ids[other]])


def draw_sample(builder: SampleBuilder, masking: MaskingConfig, rng: np.random.Generator, clips: VideoClips,
                position: int, num_videos: int, text_of: Callable[[int], Any]) -> Sample:
    """One masked sample of ``clips`` (video ``position`` of ``num_videos``), every draw from ``rng``.

    ``text_of(j)`` gives video ``j``'s text when it is drawn as the negative: anything with
    ``video_id``, ``num_clips`` and per-clip ``tokens`` (the corpus's :class:`VideoClips`, or the
    text alone where the features are not at hand, as in a packed stream). The draws and their order
    are :class:`PretrainDataset`'s, so both give the same sample for the same generator.
    """
    start, size = builder.random_window(clips, rng)
    text_from = None
    if rng.random() < masking.negative_probability:
        other = int(rng.integers(0, num_videos - 1))
        if other >= position:
            other += 1  # any video but this one
        neg = text_of(other)
        n_start, n_size = builder.random_window(neg, rng, size)
        if n_size < size:
            # A shorter video gives fewer sentences. Shrink this video's window to the same number
            # of clips, else "fewer sentences than clips" would give the label away and the
            # matching head would learn to count [SEP]s instead of comparing text and video.
            start += int(rng.integers(0, size - n_size + 1))
            size = n_size
        text_from = (neg, n_start, n_size)
    # the class distributions are read once the masked regions are drawn, at those rows only
    # (docs/scale.md, "Data-path speed", fix 5); mask_sample does not look at them
    sample = builder.build(clips, start, size, text_from, region_targets=False)
    sample = mask_sample(sample, rng, masking, builder.specials)
    return builder.masked_region_targets(sample, clips, start, size)
