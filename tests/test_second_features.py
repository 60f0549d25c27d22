"""Per-second global features: store arrays, old (version-1) stores, the fill, and the reader API.

The version-1 store here is written by hand in the original layout (safetensors records with
metadata version "1", a schema.json without ``second_features``), not by this code's writer, so
"old stores stay readable" is checked against the format the previous code produced.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from safetensors.numpy import save

from actbert.data.clips import ClipAssembler, ClipsError, SecondFeatures
from actbert.data.store import (
    FeatureStore,
    FeatureStoreWriter,
    FeatureValidationError,
    StoreSchema,
    StoreSchemaError,
    enable_second_features,
)

sys.path.insert(0, os.path.dirname(__file__))
from test_store import make_features, make_schema  # noqa: E402

ACTION_DIM = 6  # make_schema's


def with_seconds(features, seconds: int, seed: int = 0):
    rng = np.random.default_rng(100 + seed)
    features.second_times = np.arange(seconds, dtype=np.float64) + 0.5
    features.second_features = rng.normal(size=(seconds, ACTION_DIM)).astype(np.float32)
    return features


def schema_with_seconds(dtype: str = "float32") -> StoreSchema:
    schema = make_schema(dtype)
    schema.second_features = True
    return schema


# ---- store arrays


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip_with_second_features(tmp_path, dtype):
    writer = FeatureStoreWriter(tmp_path, schema_with_seconds(dtype))
    original = with_seconds(make_features(1), seconds=7)
    writer.write("v", original)
    on_disk = json.loads((tmp_path / "schema.json").read_text())
    assert on_disk["version"] == 2 and on_disk["second_features"] is True
    store = FeatureStore(tmp_path)
    assert store.has_second_features and store.record_has_second_features("v")
    read = store["v"]
    assert read.has_second_features and read.num_seconds == 7
    assert read.second_times.dtype == np.float64 and read.second_features.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(read.second_times, original.second_times)
    tol = 1e-3 if dtype == "float16" else 0
    np.testing.assert_allclose(read.second_features.astype(np.float32), original.second_features, rtol=tol, atol=tol)
    # the other arrays are what they were
    np.testing.assert_array_equal(read.region_features, original.region_features.astype(dtype))


def test_schema_decides_whether_records_have_them(tmp_path):
    plain = FeatureStoreWriter(tmp_path / "plain", make_schema())
    with pytest.raises(FeatureValidationError, match=r"video 'v', field 'second_times'.*schema.second_features is false"):
        plain.write("v", with_seconds(make_features(), 4))
    full = FeatureStoreWriter(tmp_path / "full", schema_with_seconds())
    with pytest.raises(FeatureValidationError, match=r"video 'v', field 'second_times': missing"):
        full.write("v", make_features())
    half = make_features()
    half.second_times = np.arange(3) + 0.5
    with pytest.raises(FeatureValidationError, match="field 'second_features': missing"):
        full.write("v", half)
    assert FeatureStore(tmp_path / "full").video_ids() == []


@pytest.mark.parametrize(
    "change, message",
    [
        ("nan", r"second_features.*NaN"),
        ("dim", r"second_features.*shape \(4, 5\) does not match \[Sxaction_dim\] = \(4, 6\)"),
        ("count", r"second_features.*shape \(3, 6\).*\(4, 6\)"),
        ("order", r"second_times.*strictly increase"),
        ("repeat", r"second_times.*strictly increase"),
        ("times_nan", r"second_times.*NaN"),
    ],
)
def test_bad_second_features_refused(tmp_path, change, message):
    feats = with_seconds(make_features(), 4)
    if change == "nan":
        feats.second_features[2, 1] = np.nan
    elif change == "dim":
        feats.second_features = feats.second_features[:, :5]
    elif change == "count":
        feats.second_features = feats.second_features[:3]
    elif change == "order":
        feats.second_times = feats.second_times[::-1].copy()
    elif change == "repeat":
        feats.second_times[2] = feats.second_times[1]
    elif change == "times_nan":
        feats.second_times[0] = np.nan
    writer = FeatureStoreWriter(tmp_path, schema_with_seconds())
    with pytest.raises(FeatureValidationError, match=message) as info:
        writer.write("bad-7", feats)
    assert "bad-7" in str(info.value)
    assert not writer.has("bad-7")


def test_zero_seconds_record(tmp_path):
    FeatureStoreWriter(tmp_path, schema_with_seconds()).write("empty", with_seconds(make_features(), 0))
    read = FeatureStore(tmp_path)["empty"]
    assert read.second_times.shape == (0,) and read.second_features.shape == (0, ACTION_DIM)


# ---- version-1 stores (the layout the previous code wrote)

V1_FIELDS = ("clip_times", "action_features", "action_targets", "frame_times", "region_features",
             "region_boxes", "region_locations", "region_class_probs", "region_counts")


def write_v1_store(root, videos: dict) -> None:
    """schema.json and records exactly as feature-store version 1 wrote them (docs/architecture.md)."""
    (root / "videos").mkdir(parents=True)
    schema = {"format": "actbert-feature-store", "version": 1, "action_dim": 6, "region_dim": 4,
              "num_region_classes": 3, "num_actions": 2, "max_regions": 5, "dtype": "float32",
              "region_classes": ["cup", "knife", "pan"], "action_vocab": ["cut", "pour"]}
    (root / "schema.json").write_text(json.dumps(schema, indent=1) + "\n")
    for video_id, feats in videos.items():
        arrays = {name: np.ascontiguousarray(getattr(feats, name)) for name in V1_FIELDS}
        data = save(arrays, metadata={"format": "actbert-feature-store", "version": "1", "video_id": video_id})
        (root / "videos" / f"{video_id}.safetensors").write_bytes(data)


def test_version_1_store_stays_readable_and_writable(tmp_path):
    root = tmp_path / "old"
    originals = {"a": make_features(1), "b": make_features(2)}
    write_v1_store(root, originals)
    schema_bytes = (root / "schema.json").read_bytes()
    store = FeatureStore(root)
    assert store.schema.version == 1 and not store.has_second_features
    read = store["a"]
    assert read.second_times is None and read.second_features is None and not read.has_second_features
    assert not store.record_has_second_features("a")
    for name in V1_FIELDS:
        np.testing.assert_array_equal(getattr(read, name), getattr(originals["a"], name))
    # a writer without per-second features may add records: the store stays version 1
    writer = FeatureStoreWriter(root, make_schema())
    assert writer.schema.version == 1
    writer.write("c", make_features(3))
    assert (root / "schema.json").read_bytes() == schema_bytes
    assert FeatureStore(root)["c"].num_clips == 3
    # one with per-second features is refused until the store is enabled for them
    with pytest.raises(StoreSchemaError, match="second_features: store has false, writer has true.*fills them"):
        FeatureStoreWriter(root, schema_with_seconds())


def test_version_1_schema_cannot_claim_second_features(tmp_path):
    write_v1_store(tmp_path, {})
    schema = json.loads((tmp_path / "schema.json").read_text())
    schema["second_features"] = True
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    with pytest.raises(StoreSchemaError, match="schema.json: field 'second_features' is not part of a version-1 schema"):
        FeatureStore(tmp_path)


def test_fill_adds_only_the_new_arrays(tmp_path):
    root = tmp_path / "old"
    write_v1_store(root, {"a": make_features(1), "b": make_features(2)})
    before = {name: np.array(getattr(FeatureStore(root)["a"], name)).tobytes() for name in V1_FIELDS}
    dtypes = {name: getattr(FeatureStore(root)["a"], name).dtype for name in V1_FIELDS}

    schema = enable_second_features(root)
    assert schema.version == 2 and schema.second_features
    on_disk = json.loads((root / "schema.json").read_text())
    assert on_disk["version"] == 2 and on_disk["second_features"] is True
    assert enable_second_features(root) == schema  # idempotent

    writer = FeatureStoreWriter(root, schema_with_seconds())
    times = np.array([0.5, 1.5, 2.5])
    values = np.arange(3 * ACTION_DIM, dtype=np.float32).reshape(3, ACTION_DIM)
    writer.add_second_features("a", times, values)
    store = FeatureStore(root)
    filled, untouched = store["a"], store["b"]
    for name in V1_FIELDS:
        assert getattr(filled, name).dtype == dtypes[name]
        assert np.array(getattr(filled, name)).tobytes() == before[name], name
    np.testing.assert_array_equal(filled.second_times, times)
    np.testing.assert_array_equal(filled.second_features, values)
    assert store.record_has_second_features("a") and not store.record_has_second_features("b")
    assert untouched.second_features is None  # a record not filled yet is still readable
    with pytest.raises(KeyError):
        writer.add_second_features("missing", times, values)
    with pytest.raises(StoreSchemaError, match="second_features.*enable_second_features"):
        FeatureStoreWriter(tmp_path / "plain", make_schema()).add_second_features("a", times, values)


# ---- reader API


@pytest.fixture(scope="module")
def tokenizer():
    from actbert.text.tokenizer import load_tokenizer

    return load_tokenizer()


def test_assembler_second_features_span(tmp_path, tokenizer):
    writer = FeatureStoreWriter(tmp_path, schema_with_seconds("float16"))
    feats = with_seconds(make_features(4), 6)
    writer.write("v", feats)
    assembler = ClipAssembler(FeatureStore(tmp_path), tokenizer)
    everything = assembler.second_features("v")
    assert isinstance(everything, SecondFeatures) and len(everything) == 6
    assert everything.times.dtype == np.float64 and everything.features.dtype == np.float32
    expected = feats.second_features.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(everything.features, expected)
    # centres 0.5 .. 5.5; the span is half-open [start, end)
    span = assembler.second_features("v", 1.5, 4.5)
    np.testing.assert_array_equal(span.times, [1.5, 2.5, 3.5])
    np.testing.assert_array_equal(span.features, expected[1:4])
    np.testing.assert_array_equal(assembler.second_features("v", 1.0, 3.0).times, [1.5, 2.5])
    np.testing.assert_array_equal(assembler.second_features("v", None, 2.0).times, [0.5, 1.5])
    np.testing.assert_array_equal(assembler.second_features("v", 4.6).times, [5.5])
    empty = assembler.second_features("v", 2.6, 3.4)
    assert empty.times.shape == (0,) and empty.features.shape == (0, ACTION_DIM)
    with pytest.raises(ClipsError, match="'nope' is not in the feature store"):
        assembler.second_features("nope")


def test_assembler_error_names_file_and_field(tmp_path, tokenizer):
    root = tmp_path / "old"
    write_v1_store(root, {"a": make_features(1), "b": make_features(2)})
    assembler = ClipAssembler(FeatureStore(root), tokenizer)
    record = str(root / "videos" / "a.safetensors")
    with pytest.raises(ClipsError, match="field 'second_features'.*store without per-second features") as info:
        assembler.second_features("a")
    assert record in str(info.value) and "\n" not in str(info.value)
    assembler.span_clips("a")  # the per-clip path does not need them
    # enabled but this record not filled yet: still the record and the field, another reason
    enable_second_features(root)
    FeatureStoreWriter(root, schema_with_seconds()).add_second_features("b", np.array([0.5]), np.ones((1, ACTION_DIM), np.float32))
    assembler = ClipAssembler(FeatureStore(root), tokenizer)
    with pytest.raises(ClipsError, match="a.safetensors: field 'second_features' is missing.*not filled yet"):
        assembler.second_features("a")
    np.testing.assert_array_equal(assembler.second_features("b").features, np.ones((1, ACTION_DIM)))


# ---- extraction: per-second windows, the fill of an old store, resume, bad videos

VIDEO_FPS, LEVEL = 4, 10  # frame i of a test video is flat grey 10 * i: a window's frames read back as indices


class StubEncoder:
    """Feature of a window = the mean grey level of each of its frames ([N, T]); counts its calls."""

    feature_dim, num_frames, fps, clip_size = 4, 4, 2.0, 16

    def __init__(self, interrupt_after: int | None = None):
        from actbert.text.verbs import ActionVocabulary

        self.vocab = ActionVocabulary(["cut", "pour"])
        self.calls = 0
        self.interrupt_after = interrupt_after

    def features(self, clips: np.ndarray) -> np.ndarray:
        assert clips.dtype == np.uint8 and clips.shape[1:] == (4, 16, 16, 3)
        if self.interrupt_after is not None and self.calls >= self.interrupt_after:
            raise KeyboardInterrupt  # the run is killed here
        self.calls += 1
        return clips.astype(np.float32).mean(axis=(2, 3, 4))


class StubRegions:
    """One region per frame (feature = the frame's mean level); counts its calls."""

    feature_dim, class_names = 3, ["cup", "knife"]

    def __init__(self):
        self.calls = 0

    def __call__(self, video_id, decoded):
        from actbert.video.regions import pack_frame

        self.calls += 1
        return [pack_frame(np.full((1, 3), frame.mean(), np.float32), np.array([[1, 1, 8, 8]]), np.array([[0.5, 0.5]]),
                           decoded.width, decoded.height) for frame in decoded.frames]


class StubMiner:
    def verbs_many(self, texts):
        return [["cut"] if "cut" in t else ["pour"] for t in texts]


def write_level_video(path, num_frames: int) -> None:
    from actbert.data.synth.render import Mp4Writer

    writer = Mp4Writer(path, fps=VIDEO_FPS, width=32, height=24)
    for i in range(num_frames):
        writer.write(np.full((24, 32, 3), LEVEL * i, np.uint8))
    writer.close()


def hand_window_frames(centre: float, duration: float, num_frames: int = 4, fps: float = 2.0) -> list[int]:
    """Frame indices of the window centred on ``centre``: span T/fps, shifted inside [0, duration)."""
    span = num_frames / fps
    start = max(0.0, min(centre - span / 2, duration - span))
    return [int(np.floor((start + j / fps) * VIDEO_FPS + 1e-9)) for j in range(num_frames)]


@pytest.fixture(scope="module")
def level_videos(tmp_path_factory):
    """Three short videos (21, 14 and 9 frames at 4 FPS) and their narrations."""
    root = tmp_path_factory.mktemp("level_videos")
    lengths = {"v0": 21, "v1": 14, "v2": 9}
    for video_id, n in lengths.items():
        write_level_video(root / "videos" / f"{video_id}.mp4", n)
    narrations = {v: {"start": [0.0, 1.0], "end": [1.5, n / VIDEO_FPS], "text": ["we cut it", "now pour"]} for v, n in lengths.items()}
    (root / "narrations.json").write_text(json.dumps(narrations))
    return root, lengths


def run_extract(videos_root, store, encoder=None, regions=None, **kwargs):
    from actbert.video.extract import extract_videos

    encoder = encoder or StubEncoder()
    return extract_videos(videos_root / "videos", store, encoder, encoder.vocab, regions or StubRegions(),
                          narrations_path=videos_root / "narrations.json", verb_miner=StubMiner(), progress=False, **kwargs)


def test_window_centres_and_features_by_hand(level_videos, tmp_path):
    from actbert.video.extract import per_second_features

    root, lengths = level_videos
    for video_id, n in lengths.items():
        duration = n / VIDEO_FPS
        times, values = per_second_features(root / "videos" / f"{video_id}.mp4", StubEncoder())
        seconds = int(np.ceil(duration))
        np.testing.assert_array_equal(times, np.arange(seconds) + 0.5)  # one window per second, at its middle
        assert values.shape == (seconds, 4) and values.dtype == np.float32
        for centre, row in zip(times, values):
            expected = hand_window_frames(centre, duration)
            assert np.abs(row - LEVEL * np.array(expected)).max() <= 3, (video_id, centre, row, expected)
    # e.g. the first and last windows of v0 (5.25 s) are shifted inside the video
    assert hand_window_frames(0.5, 5.25) == [0, 2, 4, 6] and hand_window_frames(5.5, 5.25) == [13, 15, 17, 19]

    report = run_extract(root, tmp_path / "store")
    store = FeatureStore(tmp_path / "store")
    assert sorted(report.written) == sorted(lengths) and store.has_second_features
    for video_id in lengths:
        record = store[video_id]
        np.testing.assert_array_equal(record.second_times, record.frame_times + 0.5)  # second k <-> 1 FPS frame k
        times, values = per_second_features(root / "videos" / f"{video_id}.mp4", StubEncoder())
        np.testing.assert_array_equal(record.second_features, values)


def downgrade_to_v1(store_root) -> None:
    """Rewrite a store (without per-second features) in the version-1 layout, as the previous code wrote it."""
    schema = json.loads((store_root / "schema.json").read_text())
    del schema["second_features"]
    schema["version"] = 1
    (store_root / "schema.json").write_text(json.dumps(schema, indent=1) + "\n")
    store = FeatureStore(store_root)
    for video_id in store.video_ids():
        arrays = {name: np.ascontiguousarray(getattr(store[video_id], name)) for name in V1_FIELDS}
        data = save(arrays, metadata={"format": "actbert-feature-store", "version": "1", "video_id": video_id})
        store.path_for(video_id).write_bytes(data)


def old_store(level_videos, root, dtype="float16"):
    videos_root, _ = level_videos
    report = run_extract(videos_root, root, second_features=False, dtype=dtype)
    assert report.filled == [] and not FeatureStore(root).has_second_features
    downgrade_to_v1(root)
    return {v: {n: np.array(getattr(FeatureStore(root)[v], n)) for n in V1_FIELDS} for v in FeatureStore(root).video_ids()}


def test_fill_old_store_adds_only_the_new_arrays(level_videos, tmp_path):
    from actbert.video.extract import per_second_features

    videos_root, lengths = level_videos
    before = old_store(level_videos, tmp_path / "store")
    assert FeatureStore(tmp_path / "store").schema.version == 1
    encoder, regions = StubEncoder(), StubRegions()
    report = run_extract(videos_root, tmp_path / "store", encoder=encoder, regions=regions, dtype="float16")
    assert sorted(report.filled) == sorted(lengths) and report.written == [] and report.failed == []
    assert regions.calls == 0  # regions not recomputed ...
    # ... nor per-clip features: one encoder call per video (its per-second windows, one batch)
    assert encoder.calls == len(lengths)
    store = FeatureStore(tmp_path / "store")
    assert store.schema.version == 2 and store.has_second_features
    for video_id, arrays in before.items():
        record = store[video_id]
        for name, value in arrays.items():
            assert getattr(record, name).dtype == value.dtype and np.array(getattr(record, name)).tobytes() == value.tobytes(), name
        times, values = per_second_features(videos_root / "videos" / f"{video_id}.mp4", StubEncoder())
        np.testing.assert_array_equal(record.second_times, times)
        assert record.second_features.dtype == np.float16
        np.testing.assert_array_equal(record.second_features, values.astype(np.float16))
    # a second run has nothing left to do
    again = run_extract(videos_root, tmp_path / "store", dtype="float16")
    assert again.filled == [] and sorted(again.skipped) == sorted(lengths)
    assert "0 filled with per-second features" in again.summary()


def test_fill_resumes_after_interruption(level_videos, tmp_path):
    videos_root, lengths = level_videos
    before = old_store(level_videos, tmp_path / "store")
    with pytest.raises(KeyboardInterrupt):  # killed while computing the second video's windows
        run_extract(videos_root, tmp_path / "store", encoder=StubEncoder(interrupt_after=1), dtype="float16")
    store = FeatureStore(tmp_path / "store")
    done = [v for v in store.video_ids() if store.record_has_second_features(v)]
    assert done == ["v0"]
    # the record being filled when the run died is intact, without the new arrays
    for name, value in before["v1"].items():
        assert np.array(getattr(store["v1"], name)).tobytes() == value.tobytes()
    assert store["v1"].second_features is None
    assert [p.name for p in (tmp_path / "store" / "videos").iterdir() if p.name.startswith(".")] == []
    encoder = StubEncoder()
    report = run_extract(videos_root, tmp_path / "store", encoder=encoder, dtype="float16")
    assert sorted(report.filled) == ["v1", "v2"] and report.skipped == ["v0"] and encoder.calls == 2
    store = FeatureStore(tmp_path / "store")
    assert all(store.record_has_second_features(v) for v in lengths)


def test_fill_reports_bad_videos_and_goes_on(level_videos, tmp_path):
    import shutil

    videos_root, lengths = level_videos
    work = tmp_path / "data"
    shutil.copytree(videos_root, work)
    old_store(level_videos, tmp_path / "store")
    (work / "videos" / "v1.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 500)
    failures_path = tmp_path / "store" / "failures.json"
    warning = {"video_id": "v1", "file": "narrations.json", "stage": "narrations", "error": "an earlier warning"}
    failures_path.write_text(json.dumps([warning]))
    report = run_extract(work, tmp_path / "store", dtype="float16")
    assert sorted(report.filled) == ["v0", "v2"]
    assert [(f["video_id"], f["stage"]) for f in report.failed] == [("v1", "second_features")]
    assert "VideoDecodeError" in report.failed[0]["error"] and report.failed[0]["file"].endswith("v1.mp4")
    store = FeatureStore(tmp_path / "store")
    assert store["v1"].second_features is None and store["v1"].num_clips == 2  # the record is kept
    stages = {(f["video_id"], f["stage"]) for f in json.loads(failures_path.read_text())}
    assert stages == {("v1", "narrations"), ("v1", "second_features")}
    # the file is repaired: the rerun fills it and drops that entry only
    shutil.copy(videos_root / "videos" / "v1.mp4", work / "videos" / "v1.mp4")
    report = run_extract(work, tmp_path / "store", dtype="float16")
    assert report.filled == ["v1"] and report.failed == []
    assert json.loads(failures_path.read_text()) == [warning]


def test_fill_only_needs_no_regions_and_checks_the_encoder(level_videos, tmp_path):
    from actbert.video.extract import extract_videos

    videos_root, lengths = level_videos
    old_store(level_videos, tmp_path / "store")
    wrong = StubEncoder()
    wrong.feature_dim = 8
    with pytest.raises(StoreSchemaError, match=r"schema.json: field 'action_dim' is 4, the action encoder gives 8"):
        extract_videos(videos_root / "videos", tmp_path / "store", wrong, wrong.vocab, None, fill_only=True, progress=False)
    assert FeatureStore(tmp_path / "store").schema.version == 1  # refused before anything changed
    encoder = StubEncoder()
    report = extract_videos(videos_root / "videos", tmp_path / "store", encoder, encoder.vocab, None, fill_only=True, progress=False)
    assert sorted(report.filled) == sorted(lengths)
    # a store of another layout is refused, not upgraded
    other = tmp_path / "other"
    old_store(level_videos, other, dtype="float32")
    schema_bytes = (other / "schema.json").read_bytes()
    with pytest.raises(StoreSchemaError, match="dtype"):
        run_extract(videos_root, other, dtype="float16")
    assert (other / "schema.json").read_bytes() == schema_bytes
    # and a store with per-second features refuses a writer without them
    with pytest.raises(StoreSchemaError, match="second_features: store has true, writer has false"):
        run_extract(videos_root, tmp_path / "store", dtype="float16", second_features=False)


def test_cli_second_features_only(level_videos, tmp_path, capsys):
    from actbert.cli import main
    from actbert.text.verbs import ActionVocabulary
    from actbert.video.action_encoder import build_action_encoder, load_action_encoder, save_action_encoder

    videos_root, lengths = level_videos
    folder = tmp_path / "encoder"
    vocab = ActionVocabulary(["cut", "pour"])
    save_action_encoder(build_action_encoder("narrow", len(vocab)), vocab, folder, {"num_frames": 4, "fps": 2.0, "clip_size": 16})
    encoder = load_action_encoder(folder)
    report = run_extract(videos_root, tmp_path / "store", encoder=encoder, second_features=False)
    assert not FeatureStore(tmp_path / "store").has_second_features and len(report.written) == 3
    capsys.readouterr()
    assert main(["extract", "--videos", str(videos_root / "videos"), "--store", str(tmp_path / "store"),
                 "--action-encoder", str(folder), "--second-features-only"]) == 0
    assert "3 filled with per-second features" in capsys.readouterr().out
    store = FeatureStore(tmp_path / "store")
    from actbert.video.extract import per_second_features

    for video_id in lengths:
        times, values = per_second_features(videos_root / "videos" / f"{video_id}.mp4", encoder)
        np.testing.assert_array_equal(store[video_id].second_features, values)


# ---- random pretraining data (data.random: true)


def test_random_corpus_has_learnable_second_features(tmp_path):
    from actbert.data.random_features import RandomCorpusSpec, write_random_corpus

    store_dir, _ = write_random_corpus(tmp_path, RandomCorpusSpec(num_videos=6, clips_per_video=5))
    store = FeatureStore(store_dir)
    assert store.has_second_features
    records = [store[v] for v in store.video_ids()]
    # verb prototypes from the per-clip features and their one-hot targets
    clip_feats = np.concatenate([r.action_features[r.action_targets.sum(1) > 0] for r in records])
    clip_verbs = np.concatenate([r.action_targets[r.action_targets.sum(1) > 0].argmax(1) for r in records])
    protos = {v: clip_feats[clip_verbs == v].mean(0) for v in np.unique(clip_verbs)}
    hits = total = 0
    for r in records:
        np.testing.assert_array_equal(r.second_times, r.frame_times + 0.5)
        assert r.second_features.shape == (r.num_frames, store.schema.action_dim)
        for t, feature in zip(r.second_times, r.second_features):
            clip = int(np.nonzero((r.clip_times[:, 0] <= t) & (t < r.clip_times[:, 1]))[0][0])
            if r.action_targets[clip].sum() == 0:
                continue
            guess = max(protos, key=lambda v: float(feature @ protos[v]))
            hits += guess == r.action_targets[clip].argmax()
            total += 1
    assert total > 50 and hits / total > 0.9  # a second's feature names its clip's verb


def test_random_corpus_written_before_is_filled_in_place(tmp_path):
    from actbert.data.random_features import RandomCorpusSpec, write_random_corpus

    spec = RandomCorpusSpec(num_videos=4, clips_per_video=3, seed=5)
    fresh, _ = write_random_corpus(tmp_path / "fresh", spec)
    old, _ = write_random_corpus(tmp_path / "old", spec)
    # the old corpus as the previous code left it: no per-second arrays, a version-1 store
    store = FeatureStore(old)
    for video_id in store.video_ids():
        arrays = {name: np.ascontiguousarray(getattr(store[video_id], name)) for name in V1_FIELDS}
        store.path_for(video_id).write_bytes(save(arrays, metadata={"format": "actbert-feature-store", "version": "1", "video_id": video_id}))
    schema = json.loads((old / "schema.json").read_text())
    del schema["second_features"]
    schema["version"] = 1
    (old / "schema.json").write_text(json.dumps(schema))
    assert FeatureStore(old)["random00000"].second_features is None

    write_random_corpus(tmp_path / "old", spec)  # reused, and filled
    a, b = FeatureStore(old), FeatureStore(fresh)
    assert a.has_second_features
    for video_id in b.video_ids():
        for name, value in b[video_id].arrays().items():
            assert np.array(getattr(a[video_id], name)).tobytes() == np.array(value).tobytes(), name
