"""Feature extraction driver: a folder of videos + narrations -> the feature store.

Per video::

    frames_at_fps(video, 1 FPS)           -> region extractor -> region_* arrays   [F, R, ...]
    narration segments (clips)            -> clip_windows(centre of each clip) -> action encoder
                                                                               -> action_features [C, Da]
    narration text of each clip           -> VerbMiner -> ActionVocabulary.targets -> action_targets [C, V]
    every second k: clip_windows(k + 0.5)  -> action encoder -> second_features [S, Da], second_times [S]
    FeatureStoreWriter.write(video_id, VideoFeatures)   (atomic, one file per video)

Per-second features. The same action encoder on one window (its own clip length, e.g. 32 frames at
8 FPS) centred at each second's middle ``k + 0.5``, for k = 0 .. ceil(duration) - 1: one per 1 FPS
region frame, second k being ``[k, k + 1)``. Windows near either end are shifted inside the video
like every clip window (``decode.window_times``). They are decoded ``SECONDS_PER_DECODE`` at a time
and fed to the encoder in its batches.

Batch behaviour. Video ids (file stems) are sorted and split round-robin into ``n`` shards
(``--shard i/n``), so independent workers cover every video exactly once. Videos already in the
store are skipped, so an interrupted run is resumed by running it again. A video that fails
(undecodable file, bad boxes, NaN features, ...) is caught, listed in ``STORE/failures.json``
({video_id, file, stage, error}) and the batch goes on; records already written are never touched,
except to add missing per-second features.

Filling an existing store. A store written without per-second features (a version-1 store, or one
extracted with ``second_features=False``) gets them on the next run: its schema is marked
(:func:`~actbert.data.store.enable_second_features`, only when everything else matches), then each
of this shard's records lacking them is filled -- the video decoded again for the windows only,
regions and per-clip features not recomputed, the record rewritten atomically with every other array
byte for byte (``FeatureStoreWriter.add_second_features``). A killed fill is resumed by running it
again (filled records are skipped); a video that fails keeps its record, is listed with stage
"second_features" and the batch goes on. ``fill_only=True`` does just this (no new videos, so no
region extractor is needed).
``failures.json`` is updated under a file lock (workers share it) and a video that succeeds on a
rerun is removed from it.

Videos without narration. A video with no narration entry, or whose entry has no usable segment,
is still stored: region features for all its frames and zero clips (C = 0); the sample builder
skips it. A malformed narration entry is also listed in failures.json (stage "narrations") so it is
not silent; so is each bad segment of an otherwise good entry (start > end, not a number, empty
text), which is dropped alone.

Segments past the video's end. A segment that starts at or after the video's end (``probe``'s
duration) is dropped; one that ends more than ``END_TOLERANCE_S`` after it is clamped to end there
(its action window is then centred inside the video). Both are listed in failures.json (stage
"narrations"). An end up to ``END_TOLERANCE_S`` late is kept as it is: narration times are rounded
and a container's duration is that of its last frame, so such an end is no error (and its clip
window, shifted inside the video like every window near the end, is the same).

A full disk. The first write that fails with "no space left on device" (or an exhausted quota)
stops the run with a :class:`~actbert.utils.io.DiskFullError` naming the file it was writing: no
video is blamed for it, nothing further is computed, and the records already written stay (the
same command resumes once there is space). failures.json is updated on the way out when it still
fits.

Progress. One bar counts videos; a second one moves within the current video, one step per 1 FPS
frame (regions, ``REGION_FRAMES_PER_CALL`` at a time), per clip window and per per-second window
(``on_step(video_id, done, total)`` sees the same counts).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np

from actbert.data.store import (
    FeatureStore,
    FeatureStoreWriter,
    StoreSchema,
    StoreSchemaError,
    VideoFeatures,
    enable_second_features,
)
from actbert.errors import ActBertError
from actbert.utils.io import DiskFullError, atomic_write_json, is_disk_full, locked, read_json
from actbert.video.decode import DecodedFrames, clip_windows, frames_at_fps, probe, sample_times
from actbert.video.regions import FrameRegions, stack_frames

__all__ = [
    "VIDEO_EXTENSIONS",
    "ShardError",
    "parse_shard",
    "shard_ids",
    "list_videos",
    "ExtractReport",
    "extract_videos",
    "clips_within",
    "second_centres",
    "per_second_features",
    "extract_features",
    "update_failures",
    "ExtractionPlan",
    "plan_extraction",
    "compute_video",
    "failure_entry",
    "disk_full_error",
    "finish_extraction",
    "ExtractionNetworks",
    "NetworkFiles",
    "ENGINES",
]

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
CLIPS_PER_DECODE = 32  # clip windows decoded per pass (bounds memory: 32 x T x S x S x 3 bytes)
# per-second windows decoded per pass: each pass decodes the file from its start up to the pass's
# last window, so fewer, larger passes decode less (64 x 32 x 112 x 112 x 3 bytes = 77 MB at most)
SECONDS_PER_DECODE = 64
# 1 FPS frames given to the region extractor per call: the progress bar moves between calls (a
# detector on a CPU takes seconds per frame); a multiple of the detector's batch size
REGION_FRAMES_PER_CALL = 16
END_TOLERANCE_S = 0.5  # a narration end this late is rounding, not an error (module docstring)


class ShardError(ActBertError):
    """A ``--shard`` value that is not ``i/n`` with 0 <= i < n."""


class ActionEncoderLike(Protocol):
    feature_dim: int
    num_frames: int
    fps: float
    clip_size: int

    def features(self, clips: np.ndarray) -> np.ndarray: ...


class RegionExtractorLike(Protocol):
    feature_dim: int
    class_names: list[str]

    def __call__(self, video_id: str, decoded: DecodedFrames) -> list[FrameRegions]: ...


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n)."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError as exc:
        raise ShardError(f"--shard {text!r}: expected i/n, e.g. 0/4") from exc
    if count < 1 or not 0 <= index < count:
        raise ShardError(f"--shard {text!r}: need 0 <= i < n")
    return index, count


def shard_ids(video_ids: Iterable[str], index: int, count: int) -> list[str]:
    """Deterministic shard: the sorted ids, every ``count``-th starting at ``index``."""
    return sorted(video_ids)[index::count]


def list_videos(videos_dir: str | os.PathLike) -> dict[str, Path]:
    """{video_id: path} for the video files of a folder (id = file name without extension)."""
    videos_dir = Path(videos_dir)
    if not videos_dir.is_dir():
        raise FileNotFoundError(f"{videos_dir}: videos folder not found")
    found: dict[str, Path] = {}
    for path in sorted(videos_dir.iterdir()):
        if path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith("."):
            found.setdefault(path.stem, path)
    return found


def update_failures(
    store_root: str | os.PathLike,
    failed: Sequence[Mapping[str, Any]],
    succeeded: Iterable[str],
    resolved: Iterable[tuple[str, str]] = (),
) -> Path:
    """Merge this run's failures into ``STORE/failures.json``; drop entries of videos that now succeeded.

    ``resolved``: (video_id, stage) pairs whose entry alone is dropped (a filled record keeps its
    other entries, e.g. a narration warning). The file is a JSON list of {video_id, file, stage,
    error}, sorted by video id then stage.
    """
    root = Path(store_root)
    path = root / "failures.json"
    succeeded = set(succeeded)
    resolved = set(resolved)
    with locked(root / ".failures.lock"):
        existing = read_json(path, "failures report") if path.exists() else []
        new_keys = {(f["video_id"], f.get("stage")) for f in failed}
        kept = [
            f for f in existing
            if f["video_id"] not in succeeded and (f["video_id"], f.get("stage")) not in new_keys | resolved
        ]
        # a video that succeeded may still carry a narration warning from this run
        merged = sorted([*kept, *failed], key=lambda f: (f["video_id"], str(f.get("stage"))))
        atomic_write_json(path, merged)
    return path


@dataclasses.dataclass
class ExtractReport:
    """Outcome of one extraction run (one shard)."""

    shard: tuple[int, int]
    assigned: int
    written: list[str]
    skipped: list[str]  # already in the store
    failed: list[dict]  # {video_id, file, stage: "extract", error}: not stored
    without_clips: list[str]  # stored with C = 0
    narration_problems: list[dict]  # {video_id, file, stage: "narrations", index?, error}: stored, segments skipped
    failures_path: Path | None
    filled: list[str] = dataclasses.field(default_factory=list)  # records given their per-second features
    # failed also holds {stage: "second_features"} entries: the record is kept without them

    def summary(self) -> str:
        i, n = self.shard
        return (
            f"shard {i}/{n}: {self.assigned} videos, {len(self.written)} written, {len(self.skipped)} already done, "
            f"{len(self.failed)} failed, {len(self.without_clips)} stored without clips, "
            f"{len(self.narration_problems)} narration problems, {len(self.filled)} filled with per-second features"
        )


def _narration_clips(narrations_path: Path | None, video_ids: Sequence[str]):
    """{video_id: [Clip]} and narration failures for the given videos (missing entry -> no clips)."""
    from actbert.text.verbs import read_narrations

    if narrations_path is None:
        return {}, []
    narrations = read_narrations(narrations_path, video_ids=None, strict=False)
    wanted = set(video_ids)
    by_video = {v: c for v, c in narrations.by_video().items() if v in wanted}
    problems = [
        {"video_id": f["video_id"], "file": str(narrations_path), "stage": "narrations",
         **({"index": f["index"]} if "index" in f else {}), "error": f["error"]}
        for f in narrations.failures
        if f["video_id"] in wanted
    ]
    return by_video, problems


def clips_within(clips: Sequence[Any], duration: float, video_id: str, narrations_path: str | os.PathLike | None,
                 video_path: str | os.PathLike) -> tuple[list[Any], list[dict]]:
    """The clips of one video fitted to its ``duration`` (seconds): ``(kept, problems)``.

    A clip starting at or after the end is dropped, one ending more than ``END_TOLERANCE_S`` after
    it is clamped to end there; each is one problem ``{video_id, file, stage: "narrations", index,
    error}`` (module docstring).
    """
    kept, problems = [], []
    for clip in clips:
        where = f"{narrations_path}: video {video_id!r}: segment {clip.index}"
        if clip.start >= duration:
            error = (f"{where} starts at {clip.start:g} s, at or after the end of {video_path} ({duration:g} s): "
                     "segment skipped")
        elif clip.end > duration + END_TOLERANCE_S:
            error = f"{where} ends at {clip.end:g} s, after the end of {video_path} ({duration:g} s): clamped to {duration:g} s"
            kept.append(dataclasses.replace(clip, end=float(duration)))
        else:
            kept.append(clip)
            continue
        problems.append({"video_id": video_id, "file": str(narrations_path), "stage": "narrations", "index": clip.index,
                         "error": error})
    return kept, problems


def second_centres(duration: float) -> np.ndarray:
    """Centres of the per-second windows of a video: ``k + 0.5`` for each 1 FPS frame k. float64 [S]."""
    return sample_times(duration, 1.0) + 0.5


def per_second_features(path: str | os.PathLike, action_encoder: ActionEncoderLike,
                        tick: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(second_times float64 [S], second_features float32 [S, Da]) of one video (module docstring).

    ``tick(n)``: called after each pass with the number of windows it did. Raises
    ``VideoDecodeError`` for a file that cannot be decoded.
    """
    times = second_centres(probe(path).duration)
    values = np.zeros((len(times), action_encoder.feature_dim), np.float32)
    for i in range(0, len(times), SECONDS_PER_DECODE):
        windows = clip_windows(path, times[i : i + SECONDS_PER_DECODE], num_frames=action_encoder.num_frames,
                               fps=action_encoder.fps, size=action_encoder.clip_size)
        values[i : i + len(windows)] = action_encoder.features(windows)
        if tick:
            tick(len(windows))
    return times, values


def extract_video(
    video_id: str,
    path: Path,
    clips: Sequence[Any],
    clip_verbs: Sequence[Sequence[str]],
    action_encoder: ActionEncoderLike,
    vocab,
    regions: RegionExtractorLike,
    max_regions: int,
    region_fps: float = 1.0,
    seconds: bool = True,
    tick: Callable[[int], None] | None = None,
) -> VideoFeatures:
    """All features of one video (clips: objects with ``start``, ``end``; clip_verbs aligned with clips).

    seconds: also the per-second features (``per_second_features``). tick(n): progress, called
    after each step with the frames or windows it did (module docstring, "Progress").
    """
    decoded = frames_at_fps(path, fps=region_fps)
    frame_regions = []
    for i in range(0, len(decoded.times), REGION_FRAMES_PER_CALL):
        part = slice(i, i + REGION_FRAMES_PER_CALL)
        frame_regions.extend(regions(video_id, dataclasses.replace(decoded, frames=decoded.frames[part], times=decoded.times[part])))
        if tick:
            tick(len(decoded.times[part]))
    region_arrays = stack_frames(frame_regions, max_regions, regions.feature_dim, len(regions.class_names))
    centers = [0.5 * (c.start + c.end) for c in clips]
    action_features = np.zeros((len(centers), action_encoder.feature_dim), np.float32)
    for i in range(0, len(centers), CLIPS_PER_DECODE):
        windows = clip_windows(path, centers[i : i + CLIPS_PER_DECODE], num_frames=action_encoder.num_frames,
                               fps=action_encoder.fps, size=action_encoder.clip_size)
        action_features[i : i + len(windows)] = action_encoder.features(windows)
        if tick:
            tick(len(windows))
    second_times, second_values = per_second_features(path, action_encoder, tick) if seconds else (None, None)
    return VideoFeatures(
        clip_times=np.array([[c.start, c.end] for c in clips], np.float64).reshape(-1, 2),
        action_features=action_features,
        action_targets=vocab.targets_many(list(clip_verbs)).reshape(len(clips), len(vocab)),
        frame_times=decoded.times,
        **region_arrays,
        second_times=second_times,
        second_features=second_values,
    )


def _open_writer(store_root: Path, schema: StoreSchema) -> FeatureStoreWriter:
    """The store's writer; a store that lacks only the per-second features is first marked for them."""
    path = store_root / "schema.json"
    if schema.second_features and path.exists():
        on_disk = StoreSchema.from_json(read_json(path, "feature-store schema"), source=str(path))
        if not on_disk.second_features and on_disk.differences(schema) == ["second_features"]:
            enable_second_features(store_root)
    return FeatureStoreWriter(store_root, schema)


def _fill_writer(store_root: Path, action_encoder: ActionEncoderLike) -> FeatureStoreWriter:
    """Writer of an existing store for a fill only (no region extractor): the encoder must fit the store."""
    store = FeatureStore(store_root)  # StoreSchemaError when it is not a store
    schema, path = store.schema, store_root / "schema.json"
    if schema.action_dim != int(action_encoder.feature_dim):
        raise StoreSchemaError(
            f"{path}: field 'action_dim' is {schema.action_dim}, the action encoder gives {action_encoder.feature_dim} "
            "(per-second features must come from the encoder of the per-clip ones)"
        )
    vocab = getattr(action_encoder, "vocab", None)
    if vocab is not None and list(vocab.verbs) != list(schema.action_vocab):
        raise StoreSchemaError(f"{path}: field 'action_vocab' differs from the action encoder's verbs (another encoder?)")
    enable_second_features(store_root)
    return FeatureStoreWriter(store_root, FeatureStore(store_root).schema)


@dataclasses.dataclass
class ExtractionPlan:
    """What one run (one shard) will do, computed before any video is touched (both engines share it).

    todo: ids to extract (not in the store); to_fill: stored ids lacking per-second features;
    skipped: stored and complete. clips_by_video / verbs_of: narration clips of ``todo`` and their
    mined verbs keyed by (video_id, clip index); narration_problems: those found while reading them.
    """

    store_root: Path
    shard: tuple[int, int]
    writer: FeatureStoreWriter
    with_seconds: bool
    videos: dict[str, Path]
    mine: list[str]
    todo: list[str]
    to_fill: list[str]
    skipped: list[str]
    clips_by_video: dict[str, list[Any]]
    narration_problems: list[dict]
    verbs_of: dict[tuple[str, int], list[str]]


def plan_extraction(
    videos_dir: str | os.PathLike,
    store_root: str | os.PathLike,
    action_encoder: ActionEncoderLike,
    vocab,
    regions: RegionExtractorLike | None,
    narrations_path: str | os.PathLike | None = None,
    verb_miner=None,
    shard: tuple[int, int] = (0, 1),
    dtype: str = "float32",
    max_regions: int = 5,
    video_ids: Sequence[str] | None = None,
    second_features: bool = True,
    fill_only: bool = False,
) -> ExtractionPlan:
    """Open the store's writer, pick this shard's videos and mine their clips' verbs (``extract_videos``)."""
    store_root = Path(store_root)
    if fill_only:
        writer = _fill_writer(store_root, action_encoder)
    else:
        if regions is None:
            raise ActBertError("extract: a region extractor is needed to extract new videos (or fill_only=True)")
        schema = StoreSchema(
            action_dim=int(action_encoder.feature_dim),
            region_dim=int(regions.feature_dim),
            num_region_classes=len(regions.class_names),
            num_actions=len(vocab),
            region_classes=list(regions.class_names),
            action_vocab=list(vocab.verbs),
            max_regions=max_regions,
            dtype=dtype,
            second_features=bool(second_features),
        )
        writer = _open_writer(store_root, schema)
    with_seconds = writer.schema.second_features
    videos = list_videos(videos_dir)
    ids = list(videos) if video_ids is None else [v for v in video_ids if v in videos]
    mine = shard_ids(ids, *shard)
    todo = [] if fill_only else [v for v in mine if not writer.has(v)]
    stored = [v for v in mine if writer.has(v)]
    reader = FeatureStore(store_root)
    to_fill = [v for v in stored if with_seconds and not reader.record_has_second_features(v)]
    skipped = [v for v in stored if v not in set(to_fill)]
    clips_by_video, narration_problems = _narration_clips(Path(narrations_path) if narrations_path else None, todo)

    # mine verbs of all clips of this shard at once (spaCy batches well)
    if verb_miner is None and any(clips_by_video.get(v) for v in todo):
        from actbert.text.verbs import VerbMiner

        verb_miner = VerbMiner.for_vocabulary(vocab)  # the stop list the vocabulary was mined with
    all_clips = [c for v in todo for c in clips_by_video.get(v, [])]
    all_verbs = verb_miner.verbs_many([c.text for c in all_clips]) if all_clips else []
    verbs_of = {(c.video_id, c.index): verbs for c, verbs in zip(all_clips, all_verbs)}
    return ExtractionPlan(store_root, tuple(shard), writer, with_seconds, videos, mine, todo, to_fill, skipped,
                          clips_by_video, narration_problems, verbs_of)


def failure_entry(video_id: str, path: str | os.PathLike, stage: str, exc: BaseException) -> dict:
    """One failures.json entry {video_id, file, stage, error} for an exception."""
    return {"video_id": video_id, "file": str(path), "stage": stage, "error": f"{type(exc).__name__}: {exc}"}


def compute_video(
    video_id: str,
    path: Path,
    clips: Sequence[Any],
    verbs_of: Mapping[tuple[str, int], Sequence[str]],
    action_encoder: ActionEncoderLike,
    vocab,
    regions: RegionExtractorLike,
    max_regions: int,
    with_seconds: bool,
    problems: list[dict],
    narrations_path: str | os.PathLike | None = None,
    start_video: Callable[[str, int], Callable[[int], None] | None] | None = None,
) -> VideoFeatures:
    """The features of one new video, computed the same way by every engine (nothing is written).

    Fits the clips to the video's duration first (``clips_within``; its problems are appended to
    ``problems`` even if a later step fails). start_video(video_id, total steps) -> tick(n) or
    None: progress. Raises the per-video errors (ValueError, OSError, RuntimeError).
    """
    duration = probe(path).duration
    clips, past_end = clips_within(clips, duration, video_id, narrations_path, path)
    problems.extend(past_end)
    frames = len(sample_times(duration, 1.0))
    tick = start_video(video_id, frames + len(clips) + (frames if with_seconds else 0)) if start_video else None
    return extract_video(
        video_id, path, clips, [verbs_of[(c.video_id, c.index)] for c in clips],
        action_encoder, vocab, regions, max_regions, seconds=with_seconds, tick=tick,
    )


def disk_full_error(plan: ExtractionPlan, exc: OSError, video_id: str, failed: list[dict], written: list[str],
                    filled: list[str]) -> DiskFullError:
    """The run's error for a full disk: the file being written, not the video, is named (module docstring).

    failures.json is updated first when it still fits.
    """
    store_root = plan.store_root
    target = getattr(exc, "filename", None) or str(store_root)
    note = ""
    try:
        update_failures(store_root, failed + plan.narration_problems, written, resolved=[(v, "second_features") for v in filled])
    except OSError as again:
        if not is_disk_full(again):
            raise
        note = "; failures.json not updated"
    return DiskFullError(exc.errno, f"{target}: no space left on device while writing the features of {video_id!r} "
                         f"into {store_root} ({len(written) + len(filled)} video(s) done in this run{note}); free "
                         "space or choose another --store, then run the same command again (videos already "
                         "stored are skipped)", str(target))


def finish_extraction(plan: ExtractionPlan, written: list[str], failed: list[dict], without_clips: list[str],
                      filled: list[str]) -> ExtractReport:
    """Merge the run's failures into ``STORE/failures.json`` and build its report."""
    reported = failed + plan.narration_problems
    failures_path = None
    if reported or written or filled:
        failures_path = update_failures(plan.store_root, reported, written, resolved=[(v, "second_features") for v in filled])
    return ExtractReport(plan.shard, len(plan.mine), written, plan.skipped, failed, without_clips, plan.narration_problems,
                         failures_path, filled)


def extract_videos(
    videos_dir: str | os.PathLike,
    store_root: str | os.PathLike,
    action_encoder: ActionEncoderLike,
    vocab,
    regions: RegionExtractorLike | None,
    narrations_path: str | os.PathLike | None = None,
    verb_miner=None,
    shard: tuple[int, int] = (0, 1),
    dtype: str = "float32",
    max_regions: int = 5,
    video_ids: Sequence[str] | None = None,
    progress: bool = True,
    on_video: Callable[[str, str], None] | None = None,
    second_features: bool = True,
    fill_only: bool = False,
    on_step: Callable[[str, int, int], None] | None = None,
) -> ExtractReport:
    """Extract this shard's videos into the store; see the module docstring for batch behaviour.

    vocab: ``ActionVocabulary`` (action targets); verb_miner: ``VerbMiner`` (None: built on demand).
    video_ids: restrict to these ids (before sharding). on_video(video_id, status): progress hook
    (status "written", "filled" or "failed"). on_step(video_id, done, total): progress within a
    video (module docstring, "Progress").
    second_features: compute the per-second features for new videos and fill them into records
    that lack them (False: a store without them, as before they existed; refused by a store that has them).
    fill_only: only fill the per-second features of records already in the store (regions, vocab,
    narrations, dtype and max_regions unused; regions may be None).
    The same work on Ray workers: ``actbert.video.distributed.extract_videos_ray``.
    """
    from tqdm import tqdm

    plan = plan_extraction(videos_dir, store_root, action_encoder, vocab, regions, narrations_path=narrations_path,
                           verb_miner=verb_miner, shard=shard, dtype=dtype, max_regions=max_regions, video_ids=video_ids,
                           second_features=second_features, fill_only=fill_only)
    writer, videos, todo, to_fill = plan.writer, plan.videos, plan.todo, plan.to_fill
    written, failed, without_clips, filled = [], [], [], []
    inner = tqdm(total=0, desc="", unit="step", position=1, leave=False, disable=not progress or not (todo or to_fill),
                 file=sys.stderr)

    def start_video(video_id: str, total: int) -> Callable[[int], None]:
        """The progress of one video: reset the inner bar, return its tick(n)."""
        inner.reset(total=total)
        inner.set_description(video_id)
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            inner.update(n)
            if on_step:
                on_step(video_id, done[0], total)

        return tick

    def stop_for_full_disk(exc: OSError, video_id: str) -> DiskFullError:
        error = disk_full_error(plan, exc, video_id, failed, written, filled)
        inner.close()
        return error

    bar = tqdm(todo, desc=f"extract shard {shard[0]}/{shard[1]}", unit="video", disable=not progress or not todo, file=sys.stderr)
    for video_id in bar:
        path = videos[video_id]
        try:
            features = compute_video(video_id, path, plan.clips_by_video.get(video_id, []), plan.verbs_of, action_encoder,
                                     vocab, regions, max_regions, plan.with_seconds, plan.narration_problems,
                                     narrations_path=narrations_path, start_video=start_video)
            writer.write(video_id, features)
        except (ValueError, OSError, RuntimeError) as exc:
            if is_disk_full(exc):
                raise stop_for_full_disk(exc, video_id) from exc
            # ValueError covers VideoDecodeError, FeatureValidationError, RegionInputError
            failed.append(failure_entry(video_id, path, "extract", exc))
            if on_video:
                on_video(video_id, "failed")
            continue
        written.append(video_id)
        if not features.num_clips:
            without_clips.append(video_id)
        if on_video:
            on_video(video_id, "written")

    bar = tqdm(to_fill, desc=f"per-second features shard {shard[0]}/{shard[1]}", unit="video",
               disable=not progress or not to_fill, file=sys.stderr)
    for video_id in bar:
        path = videos[video_id]
        try:
            tick = start_video(video_id, len(second_centres(probe(path).duration)))
            times, values = per_second_features(path, action_encoder, tick)
            writer.add_second_features(video_id, times, values)
        except (ValueError, OSError, RuntimeError) as exc:
            if is_disk_full(exc):
                raise stop_for_full_disk(exc, video_id) from exc
            failed.append(failure_entry(video_id, path, "second_features", exc))
            if on_video:
                on_video(video_id, "failed")
            continue
        filled.append(video_id)
        if on_video:
            on_video(video_id, "filled")
    inner.close()
    return finish_extraction(plan, written, failed, without_clips, filled)


@dataclasses.dataclass
class ExtractionNetworks:
    """The networks of one extraction run: action encoder, its vocabulary, region extractor (None: fill only)."""

    action_encoder: ActionEncoderLike
    vocab: Any
    regions: RegionExtractorLike | None


@dataclasses.dataclass(frozen=True)
class NetworkFiles:
    """Where the networks of a run come from; ``self(device)`` loads them (each engine worker does it once).

    Small and picklable (paths and options only), so a distributed engine ships this and not the
    weights: every worker reads the same files (safetensors; objects.json for given boxes).
    """

    action_encoder: str
    regions: str = "given"  # "given" | "detector" | "none" (fill only)
    objects: str | None = None
    object_classifier: str | None = None
    detector_weights: str | None = None
    detector_random_init: bool = False
    detector_min_size: int | None = None
    score_threshold: float = 0.4
    max_regions: int = 5

    def __call__(self, device: str = "cpu") -> ExtractionNetworks:
        from actbert.video.action_encoder import load_action_encoder

        encoder = load_action_encoder(self.action_encoder, device=device)
        if self.regions == "none":
            return ExtractionNetworks(encoder, encoder.vocab, None)
        if self.regions == "given":
            from actbert.video.object_classifier import load_object_classifier
            from actbert.video.regions import GivenBoxRegions

            if not self.object_classifier:
                raise ActBertError("extract --regions given needs --object-classifier FILE (train-object-classifier)")
            if self.objects is None:
                raise ActBertError("extract --regions given needs --objects FILE or --data DIR")
            boxes = read_json(self.objects, "object boxes")
            extractor = GivenBoxRegions(load_object_classifier(self.object_classifier), boxes, max_regions=self.max_regions,
                                        source=str(self.objects))
        elif self.regions == "detector":
            from actbert.video.regions import DetectorRegions

            extractor = DetectorRegions.from_weights(
                self.detector_weights, random_init=self.detector_random_init, score_threshold=self.score_threshold,
                max_regions=self.max_regions, min_size=self.detector_min_size, device=device,
            )
        else:
            raise ActBertError(f"extract: field 'regions' is {self.regions!r}; choose 'given' or 'detector'")
        return ExtractionNetworks(encoder, encoder.vocab, extractor)


ENGINES = ("local", "ray")


def extract_features(
    store: str | os.PathLike,
    action_encoder: str | os.PathLike,
    data: str | os.PathLike | None = None,
    videos: str | os.PathLike | None = None,
    narrations: str | os.PathLike | None = None,
    regions: str = "given",
    objects: str | os.PathLike | None = None,
    object_classifier: str | os.PathLike | None = None,
    detector_weights: str | os.PathLike | None = None,
    detector_random_init: bool = False,
    detector_min_size: int | None = None,
    score_threshold: float = 0.4,
    max_regions: int = 5,
    dtype: str = "float32",
    shard: str | tuple[int, int] = (0, 1),
    device: str = "cpu",
    second_features: bool = True,
    fill_only: bool = False,
    engine: str = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    gpus_per_task: float | None = None,
    cpus_per_task: int | None = None,
) -> ExtractReport:
    """Load the networks and extract a folder of videos into the store at ``store``.

    ``data``: a benchmark folder, the default home of ``videos/``, ``narrations.json`` and
    ``objects.json`` (each may be given on its own instead). ``action_encoder``: a folder written by
    ``train_action_encoder``. ``regions``: ``"given"`` (boxes of ``objects`` described by the
    ``object_classifier`` file) or ``"detector"`` (Faster R-CNN from ``detector_weights``, never
    downloaded). ``shard``: ``"i/n"`` or ``(i, n)``, this worker's share of the sorted video ids.
    ``second_features``: per-second features for new videos and for records lacking them (module
    docstring); ``fill_only``: only fill those of the records already in the store (no region
    extractor is loaded, so the region options are not needed).
    ``engine``: ``"local"`` (this process, on ``device``) or ``"ray"`` (one Ray task per video on
    the cluster at ``ray_address``, a local Ray when None; ``workers`` tasks at once; a GPU per task
    when the cluster has GPUs unless ``gpus_per_task`` says otherwise; ``cpus_per_task`` CPUs and
    torch threads per task, default 1; see ``actbert.video.distributed``). Both store the same
    arrays, bit for bit, at the same torch thread count.
    """
    if engine not in ENGINES:
        raise ActBertError(f"extract: field 'engine' is {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "local" and (ray_address or workers is not None or gpus_per_task is not None or cpus_per_task is not None):
        raise ActBertError("extract: --ray-address, --workers, --gpus-per-task and --cpus-per-task need --engine ray")
    data = Path(data) if data else None
    videos = Path(videos) if videos else (data / "videos" if data else None)
    if videos is None:
        raise ActBertError("extract: give --data or --videos")
    narrations = Path(narrations) if narrations else (data / "narrations.json" if data else None)
    if narrations is not None and not narrations.exists():
        raise FileNotFoundError(f"{narrations}: narrations file not found")
    shard = parse_shard(shard) if isinstance(shard, str) else shard
    if fill_only:
        regions = "none"
    objects_path = Path(objects) if objects else (data / "objects.json" if data else None)
    files = NetworkFiles(
        str(action_encoder), regions=regions, objects=str(objects_path) if objects_path else None,
        object_classifier=str(object_classifier) if object_classifier else None,
        detector_weights=str(detector_weights) if detector_weights else None, detector_random_init=detector_random_init,
        detector_min_size=detector_min_size, score_threshold=score_threshold, max_regions=max_regions,
    )
    if engine == "ray":
        from actbert.video.distributed import extract_videos_ray

        return extract_videos_ray(videos, store, files, narrations_path=None if fill_only else narrations, shard=shard,
                                  dtype=dtype, max_regions=max_regions, second_features=second_features,
                                  fill_only=fill_only, address=ray_address, workers=workers, gpus_per_task=gpus_per_task,
                                  cpus_per_task=cpus_per_task or 1)
    nets = files(device)
    if fill_only:
        return extract_videos(videos, store, nets.action_encoder, nets.vocab, None, shard=shard, fill_only=True)
    return extract_videos(videos, store, nets.action_encoder, nets.vocab, nets.regions, narrations_path=narrations,
                          shard=shard, dtype=dtype, max_regions=max_regions, second_features=second_features)
