"""Feature store: round trip, memory-mapped reads, schema checks, atomic writes, validation."""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from actbert.data.store import (
    FeatureStore,
    FeatureStoreWriter,
    FeatureValidationError,
    StoreSchema,
    StoreSchemaError,
    VideoFeatures,
)


def make_schema(dtype: str = "float32", action_dim: int = 6, region_dim: int = 4) -> StoreSchema:
    return StoreSchema(
        action_dim=action_dim,
        region_dim=region_dim,
        num_region_classes=3,
        num_actions=2,
        region_classes=["cup", "knife", "pan"],
        action_vocab=["cut", "pour"],
        dtype=dtype,
    )


def make_features(seed: int = 0, clips: int = 3, frames: int = 4, action_dim: int = 6, region_dim: int = 4) -> VideoFeatures:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 6, frames)
    boxes = np.zeros((frames, 5, 4), np.float32)
    boxes[..., 2:] = 10.0
    starts = np.sort(rng.uniform(0, 20, clips))
    targets = rng.uniform(0, 1, (clips, 2)).astype(np.float32)
    targets /= targets.sum(1, keepdims=True)
    probs = rng.uniform(0, 1, (frames, 5, 3)).astype(np.float32)
    return VideoFeatures(
        clip_times=np.stack([starts, starts + 2.0], 1),
        action_features=rng.normal(size=(clips, action_dim)).astype(np.float32),
        action_targets=targets,
        frame_times=np.arange(frames, dtype=np.float64),
        region_features=rng.normal(size=(frames, 5, region_dim)).astype(np.float32),
        region_boxes=boxes,
        region_locations=rng.uniform(0, 1, (frames, 5, 5)).astype(np.float32),
        region_class_probs=probs / probs.sum(-1, keepdims=True),
        region_counts=counts.astype(np.int64),
    )


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip(tmp_path, dtype):
    writer = FeatureStoreWriter(tmp_path / "store", make_schema(dtype))
    originals = {f"vid{i}": make_features(i) for i in range(3)}
    for vid, feats in originals.items():
        writer.write(vid, feats)
    store = FeatureStore(tmp_path / "store", action_dim=6, region_dim=4)
    assert store.video_ids() == sorted(originals) and "vid1" in store and "other" not in store
    assert store.schema.dtype == dtype
    for vid, feats in originals.items():
        read = store[vid]
        for name, value in feats.arrays().items():
            got = getattr(read, name)
            if name in ("action_features", "region_features"):
                assert got.dtype == np.dtype(dtype)
                tol = 1e-3 if dtype == "float16" else 0
                np.testing.assert_allclose(got.astype(np.float32), value, rtol=tol, atol=tol)
            else:
                assert got.dtype == value.dtype
                np.testing.assert_array_equal(got, value)
    assert read.num_clips == 3 and read.num_frames == 4
    # float16 records are about half the size of float32 ones on the feature arrays
    with pytest.raises(KeyError, match="missing"):
        store["missing"]


def test_reads_are_memory_mapped(tmp_path):
    writer = FeatureStoreWriter(tmp_path, make_schema())
    writer.write("a", make_features(1, frames=50, region_dim=4))
    read = FeatureStore(tmp_path)["a"]
    base = read.region_features
    while base is not None and not isinstance(base, mmap.mmap):  # arrays, then the memoryview of the map
        base = base.base if isinstance(base, np.ndarray) else getattr(base, "obj", None)
    assert isinstance(base, mmap.mmap)  # a view of the file's map, not a copy
    assert not read.region_features.flags.writeable  # read-only mapping: a reader cannot corrupt a record


def test_zero_clips_record(tmp_path):
    writer = FeatureStoreWriter(tmp_path, make_schema())
    writer.write("silent", make_features(0, clips=0))
    read = FeatureStore(tmp_path)["silent"]
    assert read.action_features.shape == (0, 6) and read.clip_times.shape == (0, 2) and read.num_frames == 4


def test_reader_refuses_wrong_dims_and_version(tmp_path):
    FeatureStoreWriter(tmp_path, make_schema()).write("a", make_features())
    with pytest.raises(StoreSchemaError, match="action_dim.*is 6.*expects 512"):
        FeatureStore(tmp_path, action_dim=512)
    with pytest.raises(StoreSchemaError, match="region_dim"):
        FeatureStore(tmp_path, region_dim=2048)
    schema = json.loads((tmp_path / "schema.json").read_text())
    schema["version"] = 99
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    with pytest.raises(StoreSchemaError, match="version"):
        FeatureStore(tmp_path)
    schema["version"], schema["format"] = 1, "something-else"
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    with pytest.raises(StoreSchemaError, match="format"):
        FeatureStore(tmp_path)
    with pytest.raises(StoreSchemaError, match="not found"):
        FeatureStore(tmp_path / "nowhere")


def test_record_not_matching_schema_is_refused(tmp_path):
    """A record written under another schema (copied in by hand) is caught when read."""
    FeatureStoreWriter(tmp_path / "small", make_schema(region_dim=4)).write("a", make_features(region_dim=4))
    FeatureStoreWriter(tmp_path / "big", make_schema(region_dim=8)).write("b", make_features(region_dim=8))
    os.replace(tmp_path / "big/videos/b.safetensors", tmp_path / "small/videos/b.safetensors")
    with pytest.raises(StoreSchemaError, match="region_features"):
        FeatureStore(tmp_path / "small")["b"]


def test_second_writer_with_other_schema_refused(tmp_path):
    FeatureStoreWriter(tmp_path, make_schema()).write("a", make_features())
    FeatureStoreWriter(tmp_path, make_schema())  # same schema: fine
    with pytest.raises(StoreSchemaError, match="region_dim: store has 4, writer has 8"):
        FeatureStoreWriter(tmp_path, make_schema(region_dim=8))
    with pytest.raises(StoreSchemaError, match="dtype"):
        FeatureStoreWriter(tmp_path, make_schema(dtype="float16"))
    assert FeatureStore(tmp_path).schema.region_dim == 4


@pytest.mark.parametrize(
    "field, bad, message",
    [
        ("action_features", "nan", "action_features.*NaN"),
        ("region_features", "inf", "region_features.*NaN/inf"),
        ("action_targets", "shape", "action_targets.*shape"),
        ("region_boxes", "shape", "region_boxes.*shape"),
        ("region_counts", "range", "region_counts"),
    ],
)
def test_write_refuses_bad_features(tmp_path, field, bad, message):
    writer = FeatureStoreWriter(tmp_path, make_schema())
    feats = make_features()
    value = getattr(feats, field)
    if bad == "nan":
        value[0, 0] = np.nan
    elif bad == "inf":
        value[1, 2, 0] = np.inf
    elif bad == "shape":
        setattr(feats, field, value[:-1])
    elif bad == "range":
        value[0] = 6
    with pytest.raises(FeatureValidationError, match=message) as info:
        writer.write("clip-42", feats)
    assert "clip-42" in str(info.value)
    assert not writer.has("clip-42") and FeatureStore(tmp_path).video_ids() == []


def test_float16_overflow_refused(tmp_path):
    writer = FeatureStoreWriter(tmp_path, make_schema("float16"))
    feats = make_features()
    feats.action_features[0, 0] = 1e6
    with pytest.raises(FeatureValidationError, match="float16"):
        writer.write("v", feats)


def test_bad_video_ids(tmp_path):
    writer = FeatureStoreWriter(tmp_path, make_schema())
    for vid in ["", "../escape", ".hidden", "a/b"]:
        with pytest.raises(FeatureValidationError):
            writer.write(vid, make_features())


def test_crashed_writer_leaves_no_readable_half_record(tmp_path):
    """A writer process killed between writing its temp file and renaming it (hard exit)."""
    store = tmp_path / "store"
    FeatureStoreWriter(store, make_schema()).write("old", make_features(1))
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_store import make_features, make_schema
        from actbert.data.store import FeatureStoreWriter
        writer = FeatureStoreWriter({str(store)!r}, make_schema())
        os.replace = lambda *a, **k: os._exit(9)   # die after the bytes hit the temp file
        writer.write(sys.argv[1], make_features(int(sys.argv[2])))
        """
    )
    for vid, seed in [("new", 2), ("old", 3)]:  # a fresh record and an overwrite of an existing one
        result = subprocess.run([sys.executable, "-c", script, vid, str(seed)], capture_output=True)
        assert result.returncode == 9, result.stderr.decode()
    leftovers = [p.name for p in (store / "videos").iterdir() if p.name.startswith(".")]
    assert len(leftovers) == 2  # the temp files are there ...
    reader = FeatureStore(store)
    assert reader.video_ids() == ["old"] and "new" not in reader  # ... but never read as records
    np.testing.assert_array_equal(reader["old"].action_features, make_features(1).action_features)
    # a rerun completes the record
    FeatureStoreWriter(store, make_schema()).write("new", make_features(2))
    assert FeatureStore(store).video_ids() == ["new", "old"]


def test_writer_exception_mid_write_cleans_up(tmp_path, monkeypatch):
    writer = FeatureStoreWriter(tmp_path, make_schema())

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        writer.write("v", make_features())
    monkeypatch.undo()
    assert list((tmp_path / "videos").iterdir()) == []


def test_concurrent_writers_share_one_schema(tmp_path):
    """Several processes start writing into an empty store at once; all succeed, one schema.json."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_store import make_features, make_schema
        from actbert.data.store import FeatureStoreWriter
        i = int(sys.argv[1])
        FeatureStoreWriter({str(tmp_path)!r}, make_schema()).write(f"v{{i}}", make_features(i))
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)]) for i in range(3)]
    assert all(p.wait() == 0 for p in procs)
    assert FeatureStore(tmp_path).video_ids() == ["v0", "v1", "v2"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
