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
