"""Video decoding with PyAV: frames at a fixed rate (regions) and clip windows (actions).

Timing model. A video's time axis starts at its first video frame (the stream's ``start_time`` is
subtracted). Sampling at ``fps`` asks for times ``k / fps`` (k = 0, 1, ... while the time is below
the video's duration); the frame shown at time ``t`` is the last decoded frame whose presentation
time is ``<= t`` (what a player would display). Decoding is one sequential pass per call, so the
cost is one full decode of the file regardless of how many times are asked for.

Clip windows. A clip of ``num_frames`` frames at ``fps`` covers ``num_frames / fps`` seconds
(32 frames at 8 FPS = 4 s), centred on the clip centre and shifted to stay inside the video; a video
shorter than the window repeats its first/last frame. Frames are resized so the short side equals
``size`` and centre-cropped to ``size x size``.

Every failure to read a file (missing, empty, not a video, corrupt, truncated) is raised as one
``VideoDecodeError`` naming the file, so a batch job can skip it and report it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np

from actbert.errors import ActBertError

__all__ = [
    "VideoDecodeError",
    "VideoInfo",
    "DecodedFrames",
    "probe",
    "frames_at_fps",
    "sample_times",
    "window_times",
    "clip_windows",
]


class VideoDecodeError(ActBertError):
    """A file that cannot be decoded as a video. ``path`` and ``reason`` are kept as attributes."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: cannot decode video: {reason}")


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """Header facts of a video file (times in seconds)."""

    path: str
    duration: float
    fps: float
    width: int
    height: int
    num_frames: int


@dataclasses.dataclass
class DecodedFrames:
    """Frames sampled at a fixed rate.

    frames: uint8 [F, H, W, 3] RGB (H, W after the optional resize)
    times:  float64 [F] seconds from the start of the video
    width, height: size of the source video (before any resize), to map boxes back to pixels.
    """

    frames: np.ndarray
    times: np.ndarray
    width: int = 0
    height: int = 0


# A truncated file often still opens (header first) but its frames stop early. Allow this much
# missing tail (seconds, plus two frame periods) before calling the file truncated.
_TRUNCATION_TOLERANCE_S = 0.5


def _open(path: Path):
    if not path.exists():
        raise VideoDecodeError(path, "file not found")
    if path.is_dir():
        raise VideoDecodeError(path, "is a directory, not a video file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "file is empty (0 bytes)")
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoDecodeError(path, f"not a readable container ({exc})") from exc
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(path, "no video stream in the container")
    return container


def _stream_facts(path: Path, container) -> tuple[float, float, float, int]:
    """(start_time_s, duration_s, fps, num_frames) from the header; raises if unusable."""
    stream = container.streams.video[0]
    time_base = stream.time_base
    start = float(stream.start_time * time_base) if stream.start_time is not None and time_base else 0.0
    duration = None
    if stream.duration is not None and time_base:
        duration = float(stream.duration * time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000.0 - (float(container.start_time) / 1_000_000.0 if container.start_time else 0.0)
    rate = stream.average_rate or stream.base_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    if fps <= 0:
        raise VideoDecodeError(path, "video stream has no frame rate")
    if duration is None or duration <= 0:
        raise VideoDecodeError(path, "video stream has no duration")
    num_frames = int(stream.frames) if stream.frames else int(round(duration * fps))
    return start, duration, fps, num_frames


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read a video's header: duration (s), frame rate, size, number of frames.

    Raises ``VideoDecodeError`` for files that do not open as a video with a video stream.
    """
    path = Path(path)
    container = _open(path)
    try:
        _, duration, fps, num_frames = _stream_facts(path, container)
        stream = container.streams.video[0]
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        if width <= 0 or height <= 0:
            raise VideoDecodeError(path, f"video stream has no frame size ({width}x{height})")
        return VideoInfo(str(path), duration, fps, width, height, num_frames)
    finally:
        container.close()


def sample_times(duration: float, fps: float) -> np.ndarray:
    """``k / fps`` for k = 0, 1, ... while ``k / fps < duration``: float64 [F]."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    count = int(np.ceil(duration * fps - 1e-9))
    return np.arange(max(count, 0), dtype=np.float64) / fps


def window_times(center: float, duration: float, num_frames: int = 32, fps: float = 8.0) -> np.ndarray:
    """Times of one clip window, float64 [T]: centred on ``center``, shifted to lie in [0, duration).

    The window spans ``num_frames / fps`` seconds starting at ``center - num_frames / (2 fps)``;
    if it would run past either end it is shifted inside; if the video is shorter than the window,
    times outside the video are clamped (first/last frame repeated).
    """
    span = num_frames / fps
    start = center - span / 2.0
    start = min(start, duration - span)  # keep the end inside
    start = max(start, 0.0)  # keep the start inside (wins for short videos)
    times = start + np.arange(num_frames, dtype=np.float64) / fps
    return np.clip(times, 0.0, max(duration - 1e-6, 0.0))


def _resize_dims(width: int, height: int, size: int) -> tuple[int, int]:
    """Dimensions with the short side equal to ``size`` (aspect kept)."""
    if width <= height:
        return size, max(size, int(round(height * size / width)))
    return max(size, int(round(width * size / height))), size


def _center_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


def _frames_at(path: Path, times: np.ndarray, to_array) -> tuple[list[np.ndarray], float, float]:
    """Decode ``path`` once; for each time (ascending) the last frame with pts <= time.

    Returns (images, header_duration, last_decoded_time). ``to_array(av.VideoFrame) -> np.ndarray``.
    """
    container = _open(path)
    try:
        start, duration, fps, _ = _stream_facts(path, container)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        time_base = float(stream.time_base)
        order = np.argsort(times, kind="stable")
        images: list[np.ndarray | None] = [None] * len(times)
        next_i = 0  # index into ``order`` of the next time to fill
        previous = None  # (frame_time, av.VideoFrame) of the last frame at or before the next time
        previous_array: np.ndarray | None = None
        last_time = -1.0

        def fill_until(limit: float) -> int:
            """Fill every requested time < ``limit`` with ``previous``; returns the new next_i."""
            nonlocal previous_array
            i = next_i
            while i < len(order) and times[order[i]] < limit:
                if previous is None:
                    break
                if previous_array is None:
                    previous_array = to_array(previous[1])
                images[order[i]] = previous_array
                i += 1
            return i

        for frame in _decode(path, container, stream):
            if frame.pts is None:
                continue
            t = frame.pts * time_base - start
            last_time = max(last_time, t)
            if previous is None:
                # requested times before the first frame show the first frame
                previous, previous_array = (t, frame), None
                while next_i < len(order) and times[order[next_i]] < t:
                    if previous_array is None:
                        previous_array = to_array(frame)
                    images[order[next_i]] = previous_array
                    next_i += 1
                continue
            next_i = fill_until(t)
            previous, previous_array = (t, frame), None
            if next_i == len(order):
                break
        if previous is None:
            raise VideoDecodeError(path, "no frame could be decoded")
        if next_i < len(order):
            needed = float(times[order[-1]])
            if last_time + 2.0 / fps + _TRUNCATION_TOLERANCE_S < min(needed, duration):
                raise VideoDecodeError(
                    path,
                    f"truncated: frames stop at {last_time:.2f}s but the header says {duration:.2f}s",
                )
            next_i = fill_until(np.inf)
        return images, duration, last_time  # type: ignore[return-value]
    finally:
        container.close()


def _decode(path: Path, container, stream) -> Iterator[av.VideoFrame]:
    try:
        yield from container.decode(stream)
    except (av.FFmpegError, OSError) as exc:
        raise VideoDecodeError(path, f"decoding failed ({exc})") from exc


def frames_at_fps(path: str | os.PathLike, fps: float = 1.0, size: int | None = None) -> DecodedFrames:
    """Frames at ``fps`` (default 1 FPS, the region-feature rate).

    size: None keeps the source resolution; an int resizes so the short side equals ``size``
    (aspect kept, no crop). Returns frames uint8 [F, H, W, 3] and times float64 [F].
    """
    path = Path(path)
    info = probe(path)
    times = sample_times(info.duration, fps)
    if size is None:
        width, height = info.width, info.height
    else:
        width, height = _resize_dims(info.width, info.height, size)

    def to_array(frame: av.VideoFrame) -> np.ndarray:
        return frame.to_ndarray(format="rgb24", width=width, height=height)

    images, _, _ = _frames_at(path, times, to_array)
    frames = np.stack(images) if images else np.zeros((0, height, width, 3), np.uint8)
    return DecodedFrames(frames=frames, times=times, width=info.width, height=info.height)


def clip_windows(
    path: str | os.PathLike,
    centers: Sequence[float],
    num_frames: int = 32,
    fps: float = 8.0,
    size: int = 112,
) -> np.ndarray:
    """One window of ``num_frames`` frames at ``fps`` per centre (seconds), uint8 [N, T, size, size, 3].

    Windows are centred on each centre and kept inside the video (see ``window_times``); frames are
    resized (short side = ``size``) and centre-cropped. One decoding pass serves all windows.
    """
    path = Path(path)
    info = probe(path)
    centers = [float(c) for c in centers]
    if not centers:
        return np.zeros((0, num_frames, size, size, 3), np.uint8)
    all_times = np.concatenate([window_times(c, info.duration, num_frames, fps) for c in centers])
    width, height = _resize_dims(info.width, info.height, size)

    def to_array(frame: av.VideoFrame) -> np.ndarray:
        return _center_crop(frame.to_ndarray(format="rgb24", width=width, height=height), size)

    images, _, _ = _frames_at(path, all_times, to_array)
    return np.stack(images).reshape(len(centers), num_frames, size, size, 3)
