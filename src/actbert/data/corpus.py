"""Per-video pretraining corpus: clips from the feature store + their time-aligned narration tokens.

A *clip* is one narration segment (architecture.md, "Clips"): the feature store holds, per video,
``clip_times [C, 2]`` with one action feature and one verb-target row per clip, and region features
for every 1 FPS frame. This module joins them with the narration text:

* **text of a clip** -- the narration segments whose centre falls inside the clip (or, if none does,
  the segment nearest to the clip centre when it overlaps the clip), in time order, tokenised with the
  ActBERT tokenizer (word pieces only, no specials). When the store's clips *are* the narration
  segments -- the normal case -- this is exactly one segment per clip.
* **regions of a clip** -- the regions of the clip's 1 FPS frames, in time order, each frame keeping at
  most ``max_regions_per_frame`` regions (the store keeps a frame's regions in detector order, so the
  first ones are the most confident). ``region_frames`` says which frames:

  - ``"all"`` (the default, the paper's setting: regions are extracted at 1 FPS over the clip): every
    frame whose time lies in ``[start, end)`` of the clip (none: the frame nearest the clip centre).
  - ``"nearest"``: the ``frames_per_clip`` frames nearest to the clip centre (``frames_per_clip=1``:
    the single centre frame, the default before; 1 in 4-7 of a HowTo100M clip's frames).

  ``max_regions_per_clip`` (0 = no cap) caps a clip's regions: when its frames hold more region slots
  than the cap, ``ceil(cap / max_regions_per_frame)`` frames spread evenly over the clip are kept
  (first, last and evenly between) and regions past the cap are dropped.

Bad input raises :class:`CorpusError` (a ``ValueError``) naming the store / narration file and the
video id; :meth:`Corpus.check` lets a batch job skip such videos and report them instead.

Narration problems are skipped per segment, as mine-verbs and extract skip them
(:func:`actbert.text.verbs.video_clips`): a bad segment (start > end, not a number, empty text)
drops that segment only, a malformed entry (a field missing, lists of different lengths) its video
only; :func:`load_narrations` keeps them in ``problems`` and :meth:`Corpus.check` reports those of
its videos (``{video_id, file, stage: "narrations", index?, error}``, the shape of extract's
failures.json). A store clip that starts after the video's last frame period (a store extracted
before extract dropped segments past the video's end) is dropped and reported the same way.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

import numpy as np

from actbert.data.masked_rows import MaskedRows
from actbert.data.prefetch import will_need
from actbert.errors import ActBertError
from actbert.utils.io import read_json


class CorpusError(ActBertError):
    """A video that cannot be turned into pretraining clips (missing features, bad narration ...)."""


class TextEncoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


@dataclass
class Narration:
    """One video's narration segments (HowTo100M ``caption.json`` entry)."""

    start: np.ndarray  # float64 [S]
    end: np.ndarray  # float64 [S]
    text: list[str]  # [S]


@dataclass
class VideoClips:
    """Everything the sample builder needs from one video, aligned per clip.

    ``C`` clips, ``P`` region slots per clip (:attr:`Corpus.regions_per_clip`, or the longest clip of
    this video when every frame of a clip is used without a cap).
    """

    video_id: str
    clip_times: np.ndarray  # float64 [C, 2]
    tokens: list[list[int]]  # C lists of word-piece ids (no specials; may be empty)
    action_features: np.ndarray  # float32 [C, Da]
    action_targets: np.ndarray  # float32 [C, V] (all-zero row: no verb)
    region_features: np.ndarray  # float32 [C, P, Dr]
    region_locations: np.ndarray  # float32 [C, P, 5]
    region_class_probs: np.ndarray  # float32 [C, P, K]
    region_valid: np.ndarray  # bool [C, P] True = a real region
    region_frame: np.ndarray  # int64 [C, P] frame slot (0..frame_slots[c]-1) of each region
    # int64 [C] frames each clip's regions were taken from (None: frames_per_clip, the same for every clip)
    frame_slots: np.ndarray | None = None
    # the record, for errors ("STORE: video 'x'"); a corpus's action arrays are the record's own (memory
    # mapped, any float dtype) and checked for NaN/inf where a sample uses them (SampleBuilder.build)
    where: str = ""

    @property
    def num_clips(self) -> int:
        return int(self.clip_times.shape[0])


class Narrations(dict):
    """``{video_id: Narration}`` read from a narrations file, with what was skipped on the way.

    ``problems``: one ``{video_id, file, stage: "narrations", index?, error}`` per skipped segment
    (``index`` set) or entry.
    """

    def __init__(self, items: Mapping[str, Narration] | None = None, problems: list[dict] | None = None):
        super().__init__(items or {})
        self.problems: list[dict] = list(problems or [])


def load_narrations(path: str | os.PathLike) -> Narrations:
    """Read a HowTo100M-style ``caption.json``: ``{video_id: {"start": [..], "end": [..], "text": [..]}}``.

    Bad segments and entries are skipped and kept in ``problems`` (module docstring); a file that is
    not such a mapping raises :class:`CorpusError`.
    """
    from actbert.text.verbs import NarrationError, video_clips

    path = Path(path)
    raw = read_json(path, "narration file")
    if not isinstance(raw, Mapping):
        raise CorpusError(f"{path}: expected a mapping video_id -> {{start, end, text}}")
    out = Narrations()
    for video_id, entry in raw.items():
        video_id = str(video_id)
        try:
            clips, skipped = video_clips(str(path), video_id, entry)
        except NarrationError as exc:
            out.problems.append({"video_id": video_id, "file": str(path), "stage": "narrations", "error": str(exc)})
            continue
        out.problems.extend({"video_id": video_id, "file": str(path), "stage": "narrations", "index": f["index"],
                             "error": f["error"]} for f in skipped)
        if clips:
            out[video_id] = Narration(np.array([c.start for c in clips], np.float64),
                                      np.array([c.end for c in clips], np.float64), [c.text for c in clips])
    return out


def align_text_to_clips(clip_times: np.ndarray, narration: Narration) -> list[list[int]]:
    """Indices of the narration segments that belong to each clip (see module docstring).

    clip_times ``[C, 2]`` -> C lists of segment indices, each in time order.
    """
    alignment = TextAlignment(clip_times, narration)
    return [alignment[c] for c in range(len(alignment))]


class TextAlignment:
    """:func:`align_text_to_clips` one clip at a time: ``alignment[c]`` is clip ``c``'s list of segment indices.

    The corpus asks for the ~10 clips of a sample's window out of a video's ~100, so the work per clip
    is two binary searches over the segments sorted by centre, done for every clip at once up front,
    and a sort of the few segments found, instead of a ``[C, S]`` comparison table per video
    (docs/scale.md, "Data-path speed", fix 4).
    """

    def __init__(self, clip_times: np.ndarray, narration: Narration):
        self.narration = narration
        self.centres = (narration.start + narration.end) / 2.0
        self.by_centre = np.argsort(self.centres, kind="stable")  # NaN centres sort last and are never found
        # rank[i]: where segment i comes in time order (start, then file order): the order of a clip's list
        self.rank = np.empty(len(self.centres), np.int64)
        self.rank[np.argsort(narration.start, kind="stable")] = np.arange(len(self.centres))
        self.clip_times = np.asarray(clip_times, np.float64).reshape(-1, 2)
        # segments centred in [start, end) are by_centre[lo:hi]; a clip with a NaN end finds none
        centres = self.centres[self.by_centre]
        self.lo = np.searchsorted(centres, self.clip_times[:, 0], side="left")
        self.hi = np.searchsorted(centres, self.clip_times[:, 1], side="left")
        self.hi[~np.isfinite(self.clip_times).all(axis=1)] = 0

    def __len__(self) -> int:
        return len(self.clip_times)

    def __getitem__(self, c: int) -> list[int]:
        inside = self.by_centre[self.lo[c]: self.hi[c]]
        if len(inside) > 1:
            inside = inside[np.argsort(self.rank[inside], kind="stable")]
        if not len(inside) and len(self.centres):
            # no segment centred in the clip: take the nearest one if it overlaps the clip at all
            c_start, c_end = self.clip_times[c]
            nearest = int(np.argmin(np.abs(self.centres - (c_start + c_end) / 2.0)))
            if self.narration.start[nearest] < c_end and self.narration.end[nearest] > c_start:
                return [nearest]
        return inside.tolist()


def clip_token_ids(clip_times: np.ndarray, narration: Narration, tokenizer: TextEncoder) -> list[list[int]]:
    """Word pieces of each clip's narration (the segments :func:`align_text_to_clips` gives it, in time order).

    clip_times ``[C, 2]`` -> C lists of word-piece ids (no specials; may be empty).
    """
    tokens = []
    for seg in align_text_to_clips(clip_times, narration):
        ids: list[int] = []
        for i in seg:
            ids.extend(tokenizer.encode(narration.text[i]))
        tokens.append(ids)
    return tokens


def video_end_time(frame_times: np.ndarray) -> float:
    """When a video with these (non-empty) 1 FPS frame times ends: one frame period after its last frame.

    A clip starting at or after it lies past the video's end (the corpus drops it).
    """
    period = float(frame_times[-1] - frame_times[-2]) if len(frame_times) > 1 else 1.0
    return float(frame_times[-1]) + period


def nearest_frames(frame_times: np.ndarray, centre: float, count: int) -> np.ndarray:
    """Indices of the ``count`` frames nearest to ``centre`` (ties: earlier frame), in time order."""
    distance = np.abs(frame_times - centre)
    chosen = np.argsort(distance, kind="stable")[:count]
    return np.sort(chosen)


REGION_FRAMES = ("all", "nearest")


def clip_frames(frame_times: np.ndarray, start: float, end: float, region_frames: str = "all",
                frames_per_clip: int = 1, max_frames: int = 0) -> np.ndarray:
    """Indices of the 1 FPS frames whose regions stand for the clip ``[start, end)``, in time order.

    ``region_frames="all"``: every frame inside the clip (none inside: the one nearest the centre);
    ``"nearest"``: the ``frames_per_clip`` frames nearest the centre. ``max_frames`` > 0 thins the
    frames evenly to at most that many (first and last kept).
    """
    centre = (start + end) / 2.0
    if region_frames == "nearest":
        frames = nearest_frames(frame_times, centre, frames_per_clip)
    else:
        frames = np.nonzero((frame_times >= start) & (frame_times < end))[0]
        if frames.size == 0:
            frames = nearest_frames(frame_times, centre, 1)
    if max_frames > 0 and frames.size > max_frames:
        frames = frames[np.unique(np.linspace(0, frames.size - 1, max_frames).round().astype(int))]
    return frames


class Corpus:
    """Random access to :class:`VideoClips` by video id.

    ``store`` is a :class:`actbert.data.store.FeatureStore` (or anything with ``schema``,
    ``video_ids()``, ``__contains__`` and ``__getitem__``); ``narrations`` a path to
    ``narrations.json`` or an already loaded mapping; ``tokenizer`` has ``encode(text)``.
    Tokenised clips of the most recently used videos are cached (``cache_size`` videos).
    """

    def __init__(
        self,
        store: Any,
        narrations: str | os.PathLike | Mapping[str, Narration],
        tokenizer: TextEncoder,
        video_ids: Iterable[str] | None = None,
        frames_per_clip: int = 1,
        max_regions_per_frame: int | None = None,
        max_regions_per_clip: int = 0,
        region_frames: str = "all",
        cache_size: int = 256,
    ):
        if region_frames not in REGION_FRAMES:
            raise CorpusError(f"region_frames must be one of {list(REGION_FRAMES)}, got {region_frames!r}")
        if frames_per_clip < 1:
            raise CorpusError(f"frames_per_clip must be >= 1, got {frames_per_clip}")
        if max_regions_per_clip < 0:
            raise CorpusError(f"max_regions_per_clip must be >= 0 (0 = no cap), got {max_regions_per_clip}")
        self.store = store
        self.store_name = str(getattr(store, "root", store))
        if isinstance(narrations, (str, os.PathLike)):
            self.narrations_name = str(narrations)
            narrations = load_narrations(narrations)
        else:
            self.narrations_name = "narrations"
        self.narration_problems: list[dict] = list(getattr(narrations, "problems", []))
        self.narrations = dict(narrations)
        self._clip_problems: dict[str, list[dict]] = {}  # per video: store clips dropped by _load
        self.tokenizer = tokenizer
        self.region_frames = region_frames
        self.frames_per_clip = int(frames_per_clip)
        self.max_regions_per_clip = int(max_regions_per_clip)
        schema_regions = int(_schema_get(store.schema, "max_regions"))
        self.max_regions_per_frame = schema_regions if max_regions_per_frame is None else min(int(max_regions_per_frame), schema_regions)
        if self.max_regions_per_frame < 1:
            raise CorpusError(f"max_regions_per_frame must be >= 1, got {max_regions_per_frame}")
        self.video_ids = list(store.video_ids() if video_ids is None else video_ids)
        self._cache: OrderedDict[str, VideoClips] = OrderedDict()
        self._cache_size = cache_size

    @property
    def regions_per_clip(self) -> int:
        """Region slots of every clip (what fixed-shape batches pad to).

        Every frame of a clip without a cap (``region_frames="all"``, ``max_regions_per_clip=0``) has
        no fixed bound: a :class:`CorpusError` says to set the cap.
        """
        cap = self.max_regions_per_clip
        if self.region_frames == "nearest":
            slots = self.frames_per_clip * self.max_regions_per_frame
            return min(slots, cap) if cap else slots
        if not cap:
            raise CorpusError("region_frames='all' (every frame of a clip) has no fixed number of regions per clip; "
                              "set max_regions_per_clip")
        return cap

    @property
    def max_frames_per_clip(self) -> int:
        """Frames a clip keeps under the cap (0: no limit)."""
        cap = self.max_regions_per_clip
        return -(-cap // self.max_regions_per_frame) if cap else 0

    def __len__(self) -> int:
        return len(self.video_ids)

    def __getitem__(self, video_id: str) -> VideoClips:
        cached = self._cache.get(video_id)
        if cached is not None:
            self._cache.move_to_end(video_id)
            return cached
        clips = self._load(video_id)
        self._cache[video_id] = clips
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return clips

    def check(self) -> tuple[list[str], list[dict[str, Any]]]:
        """Load every video once: (usable ids, failures).

        failures: ``{"video_id", "error"}`` per video skipped, then ``{"video_id", "file", "stage":
        "narrations", "index"?, "error"}`` per narration segment or store clip skipped in a video of
        this corpus (the video itself may still be used).
        """
        good, failures = [], []
        for video_id in self.video_ids:
            try:
                clips = self[video_id]
                if clips.num_clips == 0:
                    raise CorpusError(f"{self.store_name}: video {video_id!r} has no clips")
                # actions and regions are checked for NaN/inf where a sample uses them: every row now
                for name in ("action_features", "action_targets"):
                    _finite(getattr(clips, name), clips.where, name, (clips.num_clips, None))
                regions = getattr(clips.region_features, "regions", None)
                if regions is not None:
                    regions.verify()
            except (ValueError, KeyError, OSError) as exc:
                failures.append({"video_id": video_id, "error": str(exc)})
            else:
                good.append(video_id)
        mine = set(self.video_ids)
        failures.extend(p for p in self.narration_problems if p["video_id"] in mine)
        for video_id in self.video_ids:
            failures.extend(self._clip_problems.get(video_id, []))
        return good, failures

    def _load(self, video_id: str) -> VideoClips:
        try:  # no separate existence check: one stat fewer per video (docs/scale.md, fix 8)
            features = self.store[video_id]
        except KeyError:
            if video_id in self.store:  # a KeyError from inside a record that is there is not "missing"
                raise
            raise CorpusError(f"{self.store_name}: video {video_id!r} is not in the feature store") from None
        return self.from_features(video_id, features)

    def from_features(self, video_id: str, feats: Any) -> VideoClips:
        """A video's :class:`VideoClips` from its record (``VideoFeatures``: a store's or a packed shard's)."""
        if video_id not in self.narrations:
            raise CorpusError(f"{self.narrations_name}: video {video_id!r} has no narration")
        where = f"{self.store_name}: video {video_id!r}"
        for small in (feats.clip_times, feats.frame_times, feats.region_counts):  # read whole just below
            will_need(np.asarray(small))
        clip_times = np.asarray(feats.clip_times, dtype=np.float64)
        if clip_times.ndim != 2 or clip_times.shape[1] != 2:
            raise CorpusError(f"{where}: field 'clip_times' has shape {clip_times.shape}, expected [C, 2]")
        num_clips = clip_times.shape[0]
        # as stored, checked where used (a sample reads its window's rows: SampleBuilder.build; Corpus.check
        # reads every row before training): converting and checking a whole video at each load cost ~6% of
        # the base layout's data path (docs/scale.md, "Data-path speed", fix 5)
        action_features = _shaped(feats.action_features, where, "action_features", (num_clips, None))
        action_targets = _shaped(feats.action_targets, where, "action_targets", (num_clips, None))
        frame_times = np.asarray(feats.frame_times, dtype=np.float64)
        if len(frame_times):
            video_end = video_end_time(frame_times)
            inside = clip_times[:, 0] < video_end
            self._clip_problems[video_id] = [
                {"video_id": video_id, "file": self.store_name, "stage": "narrations", "index": int(c),
                 "error": f"{where}: clip {int(c)} starts at {clip_times[c, 0]:g} s, after the video's end (its frames stop "
                          f"before {video_end:g} s): clip skipped (re-extract the video: extract now drops such segments)"}
                for c in np.nonzero(~inside)[0]
            ]
            if not inside.all():
                clip_times, action_features, action_targets = clip_times[inside], action_features[inside], action_targets[inside]
                num_clips = clip_times.shape[0]
        region_features = _shaped(feats.region_features, where, "region_features", (len(frame_times), None, None))
        region_locations = _shaped(feats.region_locations, where, "region_locations", (len(frame_times), None, 5))
        region_probs = _shaped(feats.region_class_probs, where, "region_class_probs", (len(frame_times), None, None))
        region_counts = np.asarray(feats.region_counts, dtype=np.int64)
        if region_counts.shape != (len(frame_times),):
            raise CorpusError(f"{where}: field 'region_counts' has shape {region_counts.shape}, expected [{len(frame_times)}]")
        if num_clips and len(frame_times) == 0:
            raise CorpusError(f"{where}: field 'frame_times' is empty, so clips have no regions")

        tokens = ClipTokens(clip_times, self.narrations[video_id], self.tokenizer)

        nearest, cap = self.region_frames == "nearest", self.max_regions_per_clip
        rpf = min(self.max_regions_per_frame, region_features.shape[1])
        frames_of = _ClipFrames(frame_times, clip_times, self.region_frames, self.frames_per_clip, self.max_frames_per_clip)
        if nearest or cap:
            P = self.regions_per_clip
        else:  # every frame, no cap: as wide as this video's longest clip
            P = max([len(frames_of[c]) * self.max_regions_per_frame for c in range(num_clips)],
                    default=self.max_regions_per_frame)
        regions = _ClipRegions(where, frames_of, region_counts, region_features, region_locations, region_probs, rpf, P)
        return VideoClips(
            video_id=video_id,
            clip_times=clip_times,
            tokens=tokens,
            action_features=action_features,
            action_targets=action_targets,
            region_features=_PerClip(regions, 0),
            region_locations=_PerClip(regions, 1),
            region_class_probs=_PerClip(regions, 2),
            region_valid=_PerClip(regions, 3),
            region_frame=_PerClip(regions, 4),
            frame_slots=None if nearest else frames_of.counts,
            where=where,
        )


class _ClipFrames:
    """The frames of each clip (:func:`clip_frames`), found when a clip is first asked for; ``counts``
    is the ``[C]`` array of how many each clip has, likewise per clip."""

    def __init__(self, frame_times: np.ndarray, clip_times: np.ndarray, region_frames: str, frames_per_clip: int,
                 max_frames: int):
        self.frame_times, self.clip_times = frame_times, clip_times
        self.args = (region_frames, frames_per_clip, max_frames)
        self._done: dict[int, np.ndarray] = {}

    @property
    def counts(self) -> "_Counts":
        # made when asked, not kept: kept, it and this object would refer to each other, and a cycle keeps a
        # record's memory map alive until the garbage collector runs instead of until its video is let go
        return _Counts(self)

    def __len__(self) -> int:
        return len(self.clip_times)

    def __getitem__(self, c: int) -> np.ndarray:
        frames = self._done.get(c)
        if frames is None:
            start, end = self.clip_times[c]
            frames = self._done[c] = clip_frames(self.frame_times, float(start), float(end), *self.args)
        return frames


class _Counts:
    """``[C]`` int64: frames per clip (``x[c]``; slices and ``np.asarray`` give an array)."""

    def __init__(self, frames: _ClipFrames):
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return np.int64(len(self.frames[range(len(self.frames))[key]]))
        return np.asarray([len(self.frames[int(c)]) for c in np.arange(len(self.frames))[key]], np.int64)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


class ClipTokens(Sequence):
    """A video's per-clip word pieces, tokenised when a clip is first asked for (a sample uses ~10 of ~100).

    Behaves as the list of C lists it stands for (indexing, slicing, ``len``, ``==`` with a list).
    """

    def __init__(self, clip_times: np.ndarray, narration: Narration, tokenizer: TextEncoder):
        self._segments = TextAlignment(clip_times, narration)
        self._narration, self._tokenizer = narration, tokenizer
        self._done: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self._segments)

    def _clip(self, c: int) -> list[int]:
        ids = self._done.get(c)
        if ids is None:
            ids = []
            for i in self._segments[c]:
                ids.extend(self._tokenizer.encode(self._narration.text[i]))
            self._done[c] = ids
        return ids

    def __getitem__(self, key):
        if isinstance(key, slice):
            return [self._clip(c) for c in range(len(self))[key]]
        return self._clip(range(len(self))[key])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)


def region_rows(frames: Sequence[np.ndarray], counts: np.ndarray, per_frame: int, slots: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where the real regions of some clips are, clip after clip, each in slot order: clip ``i`` has the
    frames ``frames[i]`` and fills its ``slots`` region slots frame by frame with the first
    ``min(counts[f], per_frame)`` regions of frame ``f`` (the frame that reaches ``slots`` is cut short,
    later frames give none). Returns (frame index, region index, frame slot within the clip, clip), int64
    ``[N]`` each, N = the regions found.

    One pass of array operations over all the clips, in place of a Python loop over each clip's frames
    (docs/scale.md, "Data-path speed", fix 9).
    """
    lengths = np.fromiter((len(f) for f in frames), np.int64, len(frames))
    frame_of = np.concatenate([np.asarray(f, np.int64) for f in frames]) if len(frames) else np.zeros(0, np.int64)
    first = np.cumsum(lengths) - lengths  # each clip's first frame in frame_of
    slot_of = np.arange(len(frame_of)) - np.repeat(first, lengths)
    taken = np.clip(np.asarray(counts)[frame_of], 0, per_frame).astype(np.int64)
    # slots used before and after each frame, counted within its clip and capped at the clip's slots
    after = np.cumsum(taken)
    before = after - taken
    has = lengths > 0  # a clip without frames adds no row
    clip_start = np.repeat(before[first[has]], lengths[has])  # slots of earlier clips, taken off each frame's count
    n = np.minimum(after - clip_start, slots) - np.minimum(before - clip_start, slots)
    starts = np.cumsum(n) - n
    region = np.arange(int(n.sum())) - np.repeat(starts, n)
    return (np.repeat(frame_of, n), region, np.repeat(slot_of, n),
            np.repeat(np.repeat(np.arange(len(frames)), lengths), n))


class _ClipRegions:
    """Each clip's padded region arrays ``[P, ...]``, built from the record's (memory-mapped) frames when the
    clip is asked for, and checked for NaN/inf then; only the last clip's are kept.

    Building every clip of a video up front cost a HowTo100M-length video (111 clips, ~450 frames) about
    40 MB of copies per sample drawn from it, for the 10 clips a sample uses (benchmarks/loader.py).
    :meth:`window` gathers a sample's regions straight into its stream, one indexing per array.
    """

    def __init__(self, where: str, frames_of: "_ClipFrames", counts: np.ndarray, features: np.ndarray,
                 locations: np.ndarray, probs: np.ndarray, rpf: int, slots: int):
        self.where, self.frames_of, self.counts = where, frames_of, counts
        self.sources = (features, locations, probs)
        self.rpf, self.slots = rpf, slots
        self.shapes = ((slots, features.shape[2]), (slots, 5), (slots, probs.shape[2]), (slots,), (slots,))
        self.dtypes = (np.float32, np.float32, np.float32, bool, np.int64)
        self._rows: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._last: tuple[int, tuple[np.ndarray, ...]] | None = None
        self._valid: tuple[int, tuple[np.ndarray, ...]] | None = None
        self._index: tuple[range, tuple] | None = None

    def __len__(self) -> int:
        return len(self.frames_of)

    def rows(self, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where clip ``c``'s real regions are, in slot order: (frame index, region index, frame slot), int64 [n] each."""
        done = self._rows.get(c)
        if done is None:
            frame, region, slot, _ = region_rows([self.frames_of[c]], self.counts, self.rpf, self.slots)
            done = self._rows[c] = (frame, region, slot)
        return done

    def gather(self, frame: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """features [n, Dr], locations [n, 5], class distributions [n, K] (float32) of these (frame, region)
        pairs, checked for NaN/inf: one fancy-indexing read of the memory map per array."""
        out = tuple(source[frame, region].astype(np.float32, copy=False) for source in self.sources)
        self.check_finite(out)
        return out  # type: ignore[return-value]

    def valid(self, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Clip ``c``'s real regions only, in slot order: features [n, Dr], locations [n, 5], class
        distributions [n, K] (float32) and frame slots [n] (what a sample takes, without the padding)."""
        if self._valid is not None and self._valid[0] == c:
            return self._valid[1]
        frame, region, slots = self.rows(c)
        self._valid = (c, (*self.gather(frame, region), slots))
        return self._valid[1]

    def _stream_index(self, clips: range) -> tuple[list, np.ndarray, np.ndarray, np.ndarray, tuple[int, int] | None]:
        """(each clip's frame slots [n_i], then frame index [L], region index [L], the [SEP] rows' positions
        [len(clips)] and the span ``(first, last + 1)`` of the frames the real rows read, None without any)
        of the window's region stream, each clip's real regions followed by its [SEP], which points at
        region 0 of frame 0 (read in the same indexing, zeroed after). The last window's is kept:
        :meth:`window_targets` asks for the same one after masking. Found for the whole window at once
        (:func:`region_rows`), not clip by clip (docs/scale.md, "Data-path speed", fix 9)."""
        if self._index is not None and self._index[0] == clips:
            return self._index[1]
        frame_r, region_r, slot_r, clip_r = region_rows([self.frames_of[c] for c in clips], self.counts, self.rpf,
                                                        self.slots)
        per_clip = np.bincount(clip_r, minlength=len(clips))
        ends = np.cumsum(per_clip + 1) - 1
        at = np.arange(len(frame_r)) + clip_r  # a real row's place in the stream: after the earlier clips' [SEP]s
        frame = np.zeros(len(frame_r) + len(clips), np.int64)
        region = np.zeros_like(frame)
        frame[at], region[at] = frame_r, region_r
        slots = np.split(slot_r, np.cumsum(per_clip)[:-1]) if len(clips) else []
        span = (int(frame_r.min()), int(frame_r.max()) + 1) if len(frame_r) else None
        self._index = (clips, (slots, frame, region, ends, span))
        return self._index[1]

    def window(self, clips: range, targets: bool = True
               ) -> tuple[list[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """The region stream of these clips: (each clip's frame slots [n_i], then features [L, Dr],
        locations [L, 5] and class distributions [L, K] with each clip's real regions followed by one zero
        row for its [SEP]), ``L = sum(n_i + 1)``.

        ``targets=False`` leaves the class distributions out (``None``): the pretraining loss reads them at
        the masked rows only, which :meth:`window_targets` gathers once the mask is drawn (at the base
        layout they are 44% of a window's bytes, and about 15% of its rows are masked).
        """
        slots, frame, region, ends, span = self._stream_index(clips)
        sources = self.sources if targets else self.sources[:2]
        if not self.sources[0].shape[0] or not self.sources[0].shape[1]:  # no region slot to read: all [SEP]
            out = [np.zeros((len(slots), source.shape[2]), np.float32) for source in sources]
        else:
            if span is not None:  # the frames the real rows read ([SEP] rows point at frame 0)
                for source in sources:
                    will_need(source, *span)
            out = [source[frame, region].astype(np.float32, copy=False) for source in sources]
            for array in out:
                array[ends] = 0.0
            self.check_finite(out)
        return slots, (out[0], out[1], out[2] if targets else None)

    def window_targets(self, clips: range, at: np.ndarray) -> MaskedRows:
        """``[L, K]`` float32: the class distributions of :meth:`window`'s stream rows where ``at [L]`` (bool)
        is True, zero elsewhere ([SEP] rows are zero whatever ``at`` says), as :class:`MaskedRows` (only the
        rows read are held); checked for NaN/inf."""
        _, frame, region, ends, _ = self._stream_index(clips)
        probs = self.sources[2]
        if len(at) != len(frame):
            raise ValueError(f"{self.where}: a mask of {len(at)} rows for a region stream of {len(frame)}")
        at = np.asarray(at, bool).copy()
        at[ends] = False
        rows_at = np.flatnonzero(at)
        if len(rows_at):
            will_need(probs, int(frame[rows_at].min()), int(frame[rows_at].max()) + 1)
            rows = probs[frame[rows_at], region[rows_at]].astype(np.float32, copy=False)
            self.check_finite([rows], names=("region_class_probs",))
        else:
            rows = np.zeros((0, probs.shape[2]), np.float32)
        return MaskedRows(len(frame), rows_at, rows)

    def clip(self, c: int) -> tuple[np.ndarray, ...]:
        """Clip ``c``'s padded arrays: features, locations, class distributions, valid flags, frame slots."""
        if self._last is not None and self._last[0] == c:
            return self._last[1]
        feat_v, loc_v, prob_v, frames = self.valid(c)
        out = tuple(np.zeros(shape, dtype) for shape, dtype in zip(self.shapes, self.dtypes))
        n = len(frames)
        for target, rows in zip(out, (feat_v, loc_v, prob_v, np.ones(n, bool), frames)):
            target[:n] = rows
        self._last = (c, out)
        return out

    def verify(self) -> None:
        """Check every frame's arrays for NaN/inf (what :meth:`Corpus.check` does before training)."""
        self.check_finite(self.sources)

    def check_finite(self, arrays: Sequence[np.ndarray],
                     names: Sequence[str] = ("region_features", "region_locations", "region_class_probs")) -> None:
        """Raise :class:`CorpusError` naming the field when one of ``arrays`` (features, locations, class
        distributions unless ``names`` says otherwise) holds NaN/inf."""
        for name, array in zip(names, arrays):
            require_finite(array, self.where, name)


class _PerClip:
    """One of :class:`_ClipRegions`' arrays as a ``[C, P, ...]`` array: ``x[c]`` builds clip ``c`` only;
    slices and ``np.asarray`` stack the clips asked for."""

    def __init__(self, regions: _ClipRegions, part: int):
        self.regions, self.part = regions, part

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.regions), *self.regions.shapes[self.part])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.regions.dtypes[self.part])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return len(self.regions)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.regions.clip(range(len(self.regions))[key])[self.part]
        if isinstance(key, tuple):
            return np.asarray(self)[key]
        picked = np.arange(len(self.regions))[key]
        if not picked.size:
            return np.zeros((0, *self.regions.shapes[self.part]), self.dtype)
        return np.stack([self.regions.clip(int(c))[self.part] for c in picked])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def _schema_get(schema: Any, key: str) -> Any:
    return schema[key] if isinstance(schema, Mapping) else getattr(schema, key)


def _shaped(array: Any, where: str, name: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """``array`` as it is (a memory map stays one), checked for the expected rank/leading sizes only."""
    out = np.asarray(array)
    if out.ndim != len(shape) or any(s is not None and s != o for s, o in zip(shape, out.shape)):
        want = "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"
        raise CorpusError(f"{where}: field {name!r} has shape {list(out.shape)}, expected {want}")
    return out


def _finite(array: Any, where: str, name: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """``array`` as float32, checked for the expected rank/leading sizes and for NaN/inf."""
    out = _shaped(np.asarray(array, dtype=np.float32), where, name, shape)
    require_finite(out, where, name)
    return out


def require_finite(array: np.ndarray, where: str, name: str, detail: str = "",
                   error: type[ActBertError] = CorpusError) -> None:
    """Raise ``error`` (the reader's own: :class:`CorpusError` for pretraining, the clip assembler's for the
    tasks) ``"{where}: field {name!r} contains NaN or infinity{detail}"`` unless every value of ``array`` is
    finite (the one check of a record's float fields, wherever they are read)."""
    if not np.isfinite(array).all():
        raise error(f"{where}: field {name!r} contains NaN or infinity{detail}")
