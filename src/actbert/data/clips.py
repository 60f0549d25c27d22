"""From an annotated item to model-agnostic units: the store side of every task's input.

Every task item names a video and (mostly) a time span: a YouCook2 segment, an MSR-VTT clip, a
CrossTask candidate moment, a COIN window of frames. The feature store keeps, per video, one
action feature per *clip* (narration segment) and regions for every 1 FPS frame.
:class:`ClipAssembler` turns an item into units (a :class:`~actbert.data.corpus.VideoClips`) that
a model family's processor (:mod:`actbert.models.processing`) lays out as its batch:

* ``span_clips(video, start, end)``: the store clips whose centre lies in ``[start, end]`` (none:
  the overlapping clip nearest the span centre; no overlap: the nearest clip), at most
  ``max_units`` of them (evenly thinned); each unit = one action feature + the regions of its
  centre frame.
* ``frame_clips(video, frames)``: one unit per 1 FPS frame (action segmentation labels frames):
  the frame's regions and the action feature of the store clip covering the frame.
* ``regions=False`` gives every unit no region ("without region cues").
* ``second_features(video, start, end)``: the per-second global features (the action encoder on a
  window centred at each second, for families that read one feature per second: VLM, HERO,
  VideoBERT) whose centre lies in ``[start, end)``, as a :class:`SecondFeatures`. Read only when
  asked for, so families that do not use them (ActBERT) never touch them.

Store records are checked once (a NaN / infinite feature, an empty clip or frame list is a
:class:`ClipsError` naming the store, the video and the field) and cached.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from actbert.data.corpus import Corpus, VideoClips, nearest_frames, require_finite
from actbert.data.samples import SpecialTokens
from actbert.errors import ActBertError


class ClipsError(ActBertError):
    """A video or feature that cannot be turned into units (names the store, video and field)."""


@dataclass
class SecondFeatures:
    """Per-second global features of (a span of) one video.

    times     float64 [S]      window centres in seconds (k + 0.5 for second k), increasing
    features  float32 [S, Da]  the action encoder on the window centred at each time
    """

    times: np.ndarray
    features: np.ndarray

    def __len__(self) -> int:
        return int(self.times.shape[0])


def _float_checked(array: Any, where: str, name: str) -> np.ndarray:
    out = np.asarray(array, dtype=np.float32)
    require_finite(out, where, name, error=ClipsError)
    return out


@dataclass
class _VideoArrays:
    """One video's store record as float32 numpy (checked once, then cached)."""

    clip_times: np.ndarray  # float64 [C, 2]
    action_features: np.ndarray  # float32 [C, Da]
    action_targets: np.ndarray  # float32 [C, V]
    frame_times: np.ndarray  # float64 [F]
    region_features: np.ndarray  # float32 [F, R, Dr]
    region_locations: np.ndarray  # float32 [F, R, 5]
    region_class_probs: np.ndarray  # float32 [F, R, K]
    region_counts: np.ndarray  # int64 [F]

    @property
    def duration(self) -> float:
        ends = [float(self.clip_times[:, 1].max()) if len(self.clip_times) else 0.0]
        if len(self.frame_times):
            ends.append(float(self.frame_times[-1]) + 1.0)
        return max(ends)


class ClipAssembler:
    """Feature store + tokenizer -> the units of downstream items (module docstring).

    ``store``: a :class:`actbert.data.store.FeatureStore` (``schema``, ``__contains__``,
    ``__getitem__``); ``tokenizer``: an :class:`actbert.text.tokenizer.ActBertTokenizer`.
    """

    def __init__(
        self,
        store: Any,
        tokenizer: Any,
        max_units: int = 10,
        max_text_len: int = 48,
        max_regions_per_frame: int | None = None,
        cache_size: int = 512,
    ):
        self.store = store
        self.store_name = str(getattr(store, "root", "feature store"))
        self.tokenizer = tokenizer
        self.specials = SpecialTokens.from_tokenizer(tokenizer)
        # the Corpus only parametrises the builder (frames per clip, region limit); items are
        # assembled here because their spans are the annotations', not the narration's
        self.corpus = Corpus(store, narrations={}, tokenizer=tokenizer, max_regions_per_frame=max_regions_per_frame)
        self.max_units = int(max_units)
        self.max_text_len = int(max_text_len)  # the text budget of a row (processors lay rows out)
        self._cache: OrderedDict[str, _VideoArrays] = OrderedDict()
        self._second_cache: OrderedDict[str, SecondFeatures] = OrderedDict()
        self._cache_size = cache_size
        self._encode = lru_cache(maxsize=65536)(self._encode_uncached)

    # -- store access
    def __contains__(self, video_id: str) -> bool:
        return video_id in self.store

    def video(self, video_id: str) -> _VideoArrays:
        cached = self._cache.get(video_id)
        if cached is not None:
            self._cache.move_to_end(video_id)
            return cached
        if video_id not in self.store:
            raise ClipsError(f"{self.store_name}: video {video_id!r} is not in the feature store")
        feats = self.store[video_id]
        where = f"{self.store_name}: video {video_id!r}"
        arrays = _VideoArrays(
            clip_times=np.asarray(feats.clip_times, np.float64),
            action_features=_float_checked(feats.action_features, where, "action_features"),
            action_targets=_float_checked(feats.action_targets, where, "action_targets"),
            frame_times=np.asarray(feats.frame_times, np.float64),
            region_features=_float_checked(feats.region_features, where, "region_features"),
            region_locations=_float_checked(feats.region_locations, where, "region_locations"),
            region_class_probs=_float_checked(feats.region_class_probs, where, "region_class_probs"),
            region_counts=np.asarray(feats.region_counts, np.int64),
        )
        if len(arrays.clip_times) == 0:
            raise ClipsError(f"{where}: field 'clip_times' is empty (no clips to build an input from)")
        if len(arrays.frame_times) == 0:
            raise ClipsError(f"{where}: field 'frame_times' is empty (no frames for regions)")
        self._cache[video_id] = arrays
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return arrays

    def _record_name(self, video_id: str) -> str:
        path_for = getattr(self.store, "path_for", None)
        return str(path_for(video_id)) if callable(path_for) else f"{self.store_name}: video {video_id!r}"

    def _all_seconds(self, video_id: str) -> SecondFeatures:
        cached = self._second_cache.get(video_id)
        if cached is not None:
            self._second_cache.move_to_end(video_id)
            return cached
        if video_id not in self.store:
            raise ClipsError(f"{self.store_name}: video {video_id!r} is not in the feature store")
        feats = self.store[video_id]
        record = self._record_name(video_id)
        times, values = getattr(feats, "second_times", None), getattr(feats, "second_features", None)
        if times is None or values is None:
            schema = getattr(self.store, "schema", None)
            if getattr(schema, "second_features", False):
                why = "this record was not filled yet (interrupted fill?); rerun `actbert extract` on the store"
            else:
                why = "a store without per-second features; `actbert extract` on the store fills them"
            raise ClipsError(f"{record}: field 'second_features' is missing ({why})")
        out = SecondFeatures(
            times=np.asarray(times, np.float64),
            features=_float_checked(values, record, "second_features"),
        )
        # whole-video queries hand out the cached arrays: read-only, so a caller cannot alter the cache
        out.times.flags.writeable = False
        out.features.flags.writeable = False
        if out.features.ndim != 2 or len(out.features) != len(out.times):
            raise ClipsError(f"{record}: field 'second_features' has shape {out.features.shape} for {len(out.times)} second_times")
        self._second_cache[video_id] = out
        if len(self._second_cache) > self._cache_size:
            self._second_cache.popitem(last=False)
        return out

    def second_features(self, video_id: str, start: float | None = None, end: float | None = None) -> SecondFeatures:
        """The per-second features whose window centre lies in ``[start, end)`` (None: unbounded).

        times float64 [S], features float32 [S, Da] (S may be 0 for a span between centres).
        Raises ``ClipsError`` naming the record file and the field ``second_features`` when the
        store (or this record) has none.
        """
        seconds = self._all_seconds(video_id)
        if start is None and end is None:
            return seconds
        s = -math.inf if start is None else float(start)
        e = math.inf if end is None else float(end)
        keep = (seconds.times >= s) & (seconds.times < e)
        return SecondFeatures(times=seconds.times[keep], features=seconds.features[keep])

    def duration(self, video_id: str) -> float:
        return self.video(video_id).duration

    def frame_times(self, video_id: str) -> np.ndarray:
        return self.video(video_id).frame_times

    def clip_times(self, video_id: str) -> np.ndarray:
        return self.video(video_id).clip_times

    # -- units
    def span_units(self, video_id: str, start: float | None = None, end: float | None = None) -> np.ndarray:
        """Indices of the store clips that stand for ``[start, end]`` (module docstring). int64 ``[n]``."""
        v = self.video(video_id)
        times = v.clip_times
        if start is None and end is None:
            idx = np.arange(len(times))
        else:
            s = -math.inf if start is None else float(start)
            e = math.inf if end is None else float(end)
            centres = times.mean(axis=1)
            idx = np.nonzero((centres >= s) & (centres <= e))[0]
            if idx.size == 0:
                mid = (max(s, float(times[:, 0].min())) + min(e, float(times[:, 1].max()))) / 2.0
                overlap = np.nonzero((times[:, 0] < e) & (times[:, 1] > s))[0]
                pool = overlap if overlap.size else np.arange(len(times))
                idx = pool[[int(np.argmin(np.abs(centres[pool] - mid)))]]
        if idx.size > self.max_units:
            idx = idx[np.unique(np.linspace(0, idx.size - 1, self.max_units).round().astype(int))]
        return idx.astype(np.int64)

    def _clips(self, video_id: str, unit_times: np.ndarray, action_index: np.ndarray, frame_index: np.ndarray, regions: bool) -> VideoClips:
        v = self.video(video_id)
        n = len(unit_times)
        rpf = min(self.corpus.max_regions_per_frame, v.region_features.shape[1])
        dr, k = v.region_features.shape[2], v.region_class_probs.shape[2]
        r_feat = np.zeros((n, rpf, dr), np.float32)
        r_loc = np.zeros((n, rpf, 5), np.float32)
        r_prob = np.zeros((n, rpf, k), np.float32)
        r_valid = np.zeros((n, rpf), bool)
        if regions:
            for i, f in enumerate(frame_index):
                m = int(min(v.region_counts[f], rpf))
                r_feat[i, :m] = v.region_features[f, :m]
                r_loc[i, :m] = v.region_locations[f, :m]
                r_prob[i, :m] = v.region_class_probs[f, :m]
                r_valid[i, :m] = True
        return VideoClips(
            video_id=video_id,
            clip_times=np.asarray(unit_times, np.float64),
            tokens=[[] for _ in range(n)],
            action_features=v.action_features[action_index],
            action_targets=v.action_targets[action_index],
            region_features=r_feat,
            region_locations=r_loc,
            region_class_probs=r_prob,
            region_valid=r_valid,
            region_frame=np.zeros((n, rpf), np.int64),
        )

    def span_clips(self, video_id: str, start: float | None = None, end: float | None = None, regions: bool = True) -> VideoClips:
        """The units of ``[start, end]`` (whole video if both are None)."""
        v = self.video(video_id)
        idx = self.span_units(video_id, start, end)
        frames = np.asarray([int(nearest_frames(v.frame_times, float(v.clip_times[c].mean()), 1)[0]) for c in idx], np.int64)
        return self._clips(video_id, v.clip_times[idx], idx, frames, regions)

    def covering_clip(self, video_id: str, times: np.ndarray) -> np.ndarray:
        """For each time, the store clip that contains it (nearest centre among those; else nearest centre)."""
        v = self.video(video_id)
        centres = v.clip_times.mean(axis=1)
        out = np.empty(len(times), np.int64)
        for i, t in enumerate(np.asarray(times, np.float64)):
            inside = np.nonzero((v.clip_times[:, 0] <= t) & (t <= v.clip_times[:, 1]))[0]
            pool = inside if inside.size else np.arange(len(centres))
            out[i] = pool[int(np.argmin(np.abs(centres[pool] - t)))]
        return out

    def frame_clips(self, video_id: str, frames: Sequence[int] | np.ndarray, regions: bool = True) -> VideoClips:
        """One unit per 1 FPS frame index in ``frames`` (action segmentation)."""
        v = self.video(video_id)
        frames = np.asarray(frames, np.int64)
        t = v.frame_times[frames]
        unit_times = np.stack([t, t + 1.0], axis=1)
        return self._clips(video_id, unit_times, self.covering_clip(video_id, t), frames, regions)

    def units(self, ref: Any, regions: bool = True) -> VideoClips:
        """The units of a :class:`~actbert.models.processing.VideoRef`: its frames, else its span."""
        if ref.frames is not None:
            return self.frame_clips(ref.video_id, np.asarray(ref.frames, np.int64), regions=regions)
        return self.span_clips(ref.video_id, ref.start, ref.end, regions=regions)

    # -- text
    def _encode_uncached(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode(text))

    def encode(self, text: str) -> list[int]:
        return list(self._encode(text))


__all__ = ["ClipAssembler", "ClipsError", "SecondFeatures"]
