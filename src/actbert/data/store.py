"""Feature store: per-video action and region features, pickle-free, memory-mapped, many writers.

Layout::

    STORE/schema.json                      what every record holds (dims, dtype, vocabularies)
    STORE/videos/<video_id>.safetensors    one record per video (``VideoFeatures``)
    STORE/failures.json                    videos extraction could not process (written by the driver)

A record holds per-clip action features, 1 FPS region features and, optionally, per-second global
features (``second_times`` / ``second_features``: the action encoder on one window centred at each
second). The schema says whether a store has them (``second_features``).

Why this shape. One file per video lets independent workers (``actbert extract --shard i/n``) write
without coordination: a record is written to a temporary file in ``videos/`` and renamed into place
(``os.replace``), so a crashed writer never leaves a readable half-record, and a reader never sees
one. ``schema.json`` is created once, atomically and only if absent; a later writer must bring the
identical schema or is refused (the one exception: :func:`enable_second_features` adds the
per-second flag to an existing schema, under a lock, before the records are filled). Records are
safetensors files (no pickle); the reader parses the safetensors header itself and views each array
in a read-only ``mmap`` of the file, so opening a video costs a header read and the bytes are paged
in only when touched (random access by video id).

Versions. ``version`` names the layout generation: 1 = per-clip and region arrays only; 2 = the
schema carries ``second_features`` and records may hold the per-second arrays. This code reads
both (a version-1 store is a store without per-second features) and writes 2 for a new store; a
writer adding records to a version-1 store keeps it version 1 (readable by older code) unless
per-second features are enabled, which upgrades ``schema.json`` to 2.
"""

from __future__ import annotations

import dataclasses
import json
import math
import mmap
import os
import struct
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from actbert.data.prefetch import random_access
from actbert.errors import ActBertError
from actbert.utils.io import atomic_write_bytes, locked, read_json

__all__ = [
    "STORE_FORMAT",
    "STORE_VERSION",
    "READABLE_VERSIONS",
    "StoreSchema",
    "StoreSchemaError",
    "FeatureValidationError",
    "VideoFeatures",
    "FeatureStoreWriter",
    "FeatureStore",
    "enable_second_features",
    "decode_record",
]

STORE_FORMAT = "actbert-feature-store"
STORE_VERSION = 2  # written for new stores
READABLE_VERSIONS = (1, 2)  # 1: no per-second features (module docstring)
_RECORD_SUFFIX = ".safetensors"
_SAFETENSORS_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I64": np.int64}
_NUMPY_TO_SAFETENSORS = {np.dtype(v).name: k for k, v in _SAFETENSORS_DTYPES.items()}


class StoreSchemaError(ActBertError):
    """A store whose schema (format, version, dimensions, dtype) does not match what is expected."""


class FeatureValidationError(ActBertError):
    """A record refused at write time (or a corrupt record at read time); names video and field."""


@dataclasses.dataclass
class StoreSchema:
    """What every record of a store holds. Saved as ``STORE/schema.json``."""

    action_dim: int
    region_dim: int
    num_region_classes: int
    num_actions: int
    region_classes: list[str]
    action_vocab: list[str]
    max_regions: int = 5
    dtype: str = "float32"  # storage dtype of action_features, region_features and second_features
    version: int = STORE_VERSION
    # every record carries second_times / second_features (absent from version-1 files: False)
    second_features: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "float16"):
            raise StoreSchemaError(f"schema.dtype: must be 'float32' or 'float16', got {self.dtype!r}")
        if self.version not in READABLE_VERSIONS or isinstance(self.version, bool):
            raise StoreSchemaError(f"schema.version: must be one of {READABLE_VERSIONS}, got {self.version!r}")
        if not isinstance(self.second_features, bool):
            raise StoreSchemaError(f"schema.second_features: must be true or false, got {self.second_features!r}")
        if self.second_features and self.version < 2:
            raise StoreSchemaError("schema.second_features: a version-1 store has no per-second features (version 2 needed)")
        for name in ("action_dim", "region_dim", "num_region_classes", "num_actions", "max_regions"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise StoreSchemaError(f"schema.{name}: must be a positive integer, got {value!r}")
        if len(self.region_classes) != self.num_region_classes:
            raise StoreSchemaError(
                f"schema.region_classes: {len(self.region_classes)} names for num_region_classes={self.num_region_classes}"
            )
        if len(self.action_vocab) != self.num_actions:
            raise StoreSchemaError(f"schema.action_vocab: {len(self.action_vocab)} verbs for num_actions={self.num_actions}")
        self.region_classes = [str(c) for c in self.region_classes]
        self.action_vocab = [str(v) for v in self.action_vocab]

    def to_json(self) -> dict[str, Any]:
        out = {
            "format": STORE_FORMAT,
            "version": self.version,
            "action_dim": self.action_dim,
            "region_dim": self.region_dim,
            "num_region_classes": self.num_region_classes,
            "num_actions": self.num_actions,
            "max_regions": self.max_regions,
            "dtype": self.dtype,
            "region_classes": list(self.region_classes),
            "action_vocab": list(self.action_vocab),
        }
        if self.version >= 2:  # a version-1 file stays byte-compatible with the code that wrote it
            out["second_features"] = self.second_features
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "schema.json") -> "StoreSchema":
        if not isinstance(data, Mapping) or data.get("format") != STORE_FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise StoreSchemaError(f"{source}: field 'format' is {found!r}, expected {STORE_FORMAT!r} (not a feature store)")
        version = data.get("version")
        if version not in READABLE_VERSIONS or isinstance(version, bool):
            raise StoreSchemaError(
                f"{source}: field 'version' is {version!r}; this code reads feature-store versions "
                f"{', '.join(map(str, READABLE_VERSIONS))} (re-extract the features with this version of actbert)"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields - {"format"})
        if unknown:
            raise StoreSchemaError(f"{source}: unknown field(s) {unknown}")
        if version == 1 and "second_features" in data:
            raise StoreSchemaError(f"{source}: field 'second_features' is not part of a version-1 schema")
        optional = {"max_regions", "dtype", "version", "second_features"}
        missing = sorted(f for f in fields - optional if f not in data)
        if missing:
            raise StoreSchemaError(f"{source}: missing field(s) {missing}")
        try:
            return cls(**{k: v for k, v in data.items() if k != "format"})
        except StoreSchemaError as exc:
            raise StoreSchemaError(f"{source}: {exc}") from exc

    def differences(self, other: "StoreSchema") -> list[str]:
        """Names of fields that differ, the layout ``version`` aside (every readable version is read alike)."""
        a, b = self.to_json(), other.to_json()
        a.setdefault("second_features", False)
        b.setdefault("second_features", False)
        return [k for k in a if k != "version" and a[k] != b[k]]

    @property
    def feature_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)


@dataclasses.dataclass
class VideoFeatures:
    """All features of one video (numpy arrays; memory-mapped when read from a store).

    clip_times         float64 [C, 2]     (start, end) seconds of each clip (narration segment)
    action_features    float   [C, Da]    one action feature per clip (store dtype)
    action_targets     float32 [C, V]     L1-normalised mined-verb targets (all-zero row: no verb)
    frame_times        float64 [F]        1 FPS frame times
    region_features    float   [F, R, Dr] R = max_regions, padded (store dtype)
    region_boxes       float32 [F, R, 4]  pixels x1, y1, x2, y2
    region_locations   float32 [F, R, 5]  x1/W, y1/H, x2/W, y2/H, area/(W*H)
    region_class_probs float32 [F, R, K]  class distribution per region
    region_counts      int64   [F]        valid regions per frame (<= R)
    second_times       float64 [S]        optional: centres of the per-second windows (k + 0.5 s), increasing
    second_features    float   [S, Da]    optional: the action encoder on the window centred at each
                                          second_times entry (store dtype); None when the record has none
    """

    clip_times: np.ndarray
    action_features: np.ndarray
    action_targets: np.ndarray
    frame_times: np.ndarray
    region_features: np.ndarray
    region_boxes: np.ndarray
    region_locations: np.ndarray
    region_class_probs: np.ndarray
    region_counts: np.ndarray
    second_times: np.ndarray | None = None
    second_features: np.ndarray | None = None

    @property
    def num_clips(self) -> int:
        return int(self.clip_times.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.frame_times.shape[0])

    @property
    def has_second_features(self) -> bool:
        return self.second_times is not None and self.second_features is not None

    @property
    def num_seconds(self) -> int:
        return int(self.second_times.shape[0]) if self.second_times is not None else 0

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays the record holds (the optional per-second ones only when present)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


# field -> (storage dtype or None for the schema's feature dtype, shape template)
# shape letters: C clips, F frames, R max_regions, and the schema dims
_FIELDS: dict[str, tuple[np.dtype | None, tuple[str, ...]]] = {
    "clip_times": (np.dtype(np.float64), ("C", "2")),
    "action_features": (None, ("C", "action_dim")),
    "action_targets": (np.dtype(np.float32), ("C", "num_actions")),
    "frame_times": (np.dtype(np.float64), ("F",)),
    "region_features": (None, ("F", "max_regions", "region_dim")),
    "region_boxes": (np.dtype(np.float32), ("F", "max_regions", "4")),
    "region_locations": (np.dtype(np.float32), ("F", "max_regions", "5")),
    "region_class_probs": (np.dtype(np.float32), ("F", "max_regions", "num_region_classes")),
    "region_counts": (np.dtype(np.int64), ("F",)),
}
# optional, both or neither; S seconds
_SECOND_FIELDS: dict[str, tuple[np.dtype | None, tuple[str, ...]]] = {
    "second_times": (np.dtype(np.float64), ("S",)),
    "second_features": (None, ("S", "action_dim")),
}


def _expected_shape(template: tuple[str, ...], schema: StoreSchema, sizes: Mapping[str, int]) -> tuple[int, ...]:
    out = []
    for part in template:
        if part.isdigit():
            out.append(int(part))
        elif part in sizes:
            out.append(sizes[part])
        else:
            out.append(int(getattr(schema, part)))
    return tuple(out)


def _check_video_id(video_id: str) -> str:
    if not isinstance(video_id, str) or not video_id or video_id.startswith(".") or any(c in video_id for c in "/\\\0"):
        raise FeatureValidationError(f"video id {video_id!r}: not usable as a file name (empty, leading '.', or a path separator)")
    return video_id


def _cast_field(where: str, name: str, array: np.ndarray, target: np.dtype, expected: tuple[int, ...], template: tuple[str, ...]) -> np.ndarray:
    """Shape, numeric, finite and dtype checks of one array; returns it cast (no copy when already right)."""
    if array.shape != expected:
        named = "x".join(template)
        raise FeatureValidationError(f"{where}, field {name!r}: shape {tuple(array.shape)} does not match [{named}] = {expected}")
    if array.dtype.kind not in "fiub":
        raise FeatureValidationError(f"{where}, field {name!r}: numeric array expected, got dtype {array.dtype}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise FeatureValidationError(f"{where}, field {name!r}: {bad} NaN/inf value(s)")
    with np.errstate(over="ignore"):  # float16 overflow is reported below, not warned
        cast = np.ascontiguousarray(array.astype(target, copy=False))
    if target == np.float16 and not np.isfinite(cast).all():
        raise FeatureValidationError(f"{where}, field {name!r}: values exceed the float16 range (max 65504)")
    return cast


def validate_features(video_id: str, features: VideoFeatures, schema: StoreSchema) -> dict[str, np.ndarray]:
    """Check shapes, dims, finiteness and counts; return arrays cast to their storage dtypes.

    The per-second arrays are required when ``schema.second_features`` is true and refused when it
    is false (the schema says whether a store has them). Raises ``FeatureValidationError`` naming
    the video and the field.
    """
    where = f"video {video_id!r}"
    arrays = {}
    for name, value in features.arrays().items():
        try:
            arrays[name] = np.asarray(value)
        except Exception as exc:  # noqa: BLE001 - anything not array-like
            raise FeatureValidationError(f"{where}, field {name!r}: not an array ({exc})") from exc
    sizes = {"C": arrays["clip_times"].shape[0] if arrays["clip_times"].ndim else -1,
             "F": arrays["frame_times"].shape[0] if arrays["frame_times"].ndim else -1}
    fields = dict(_FIELDS)
    present = [n for n in _SECOND_FIELDS if n in arrays]
    if schema.second_features:
        for name in _SECOND_FIELDS:
            if name not in arrays:
                raise FeatureValidationError(
                    f"{where}, field {name!r}: missing, but this store's schema has per-second features (schema.second_features)"
                )
        times = arrays["second_times"]
        sizes["S"] = times.shape[0] if times.ndim else -1
        fields.update(_SECOND_FIELDS)
    elif present:
        raise FeatureValidationError(
            f"{where}, field {present[0]!r}: this store's schema has no per-second features (schema.second_features is false)"
        )
    out: dict[str, np.ndarray] = {}
    for name, (dtype, template) in fields.items():
        expected = _expected_shape(template, schema, sizes)
        out[name] = _cast_field(where, name, arrays[name], dtype or schema.feature_dtype, expected, template)
    counts = out["region_counts"]
    if counts.size and (counts.min() < 0 or counts.max() > schema.max_regions):
        raise FeatureValidationError(f"{where}, field 'region_counts': values must lie in [0, {schema.max_regions}]")
    clip_times = out["clip_times"]
    if clip_times.size and (clip_times[:, 1] < clip_times[:, 0]).any():
        raise FeatureValidationError(f"{where}, field 'clip_times': a clip ends before it starts")
    if "second_times" in out and (np.diff(out["second_times"]) <= 0).any():
        raise FeatureValidationError(f"{where}, field 'second_times': times must strictly increase")
    return out


def _encode_record(video_id: str, arrays: Mapping[str, np.ndarray], schema: StoreSchema) -> bytes:
    from safetensors.numpy import save

    metadata = {"format": STORE_FORMAT, "version": str(schema.version), "video_id": video_id}
    return save(dict(arrays), metadata=metadata)


class FeatureStoreWriter:
    """Writes records into ``root``; safe to use from many processes at once (one file per video).

    The first writer creates ``schema.json`` (atomically, only if absent); a writer whose schema
    differs from the one on disk is refused with ``StoreSchemaError``. The layout version is the
    store's: a writer adding records to a version-1 store writes version-1 records (``self.schema``
    is the store's schema once opened).
    """

    def __init__(self, root: str | os.PathLike, schema: StoreSchema):
        self.root = Path(root)
        self.schema = schema
        self.videos_dir = self.root / "videos"
        self.videos_dir.mkdir(parents=True, exist_ok=True)
        self.schema = self._publish_schema()

    def _publish_schema(self) -> StoreSchema:
        path = self.root / "schema.json"
        if not path.exists():
            # write to a private temp file, then hard-link it into place: link fails if another
            # worker got there first, so exactly one schema.json is ever created, never overwritten
            tmp = self.root / f".schema.json.tmp-{os.getpid()}"
            atomic_write_bytes(tmp, _schema_bytes(self.schema))
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        on_disk = StoreSchema.from_json(read_json(path, "feature-store schema"), source=str(path))
        diff = on_disk.differences(self.schema)
        if diff:
            a, b = on_disk.to_json(), self.schema.to_json()
            details = ", ".join(
                f"{k}: store has {_short(a.get(k, False))}, writer has {_short(b.get(k, False))}" for k in diff
            )
            hint = ""
            if diff == ["second_features"] and self.schema.second_features:
                hint = " (a store without per-second features: `actbert extract` on it fills them)"
            raise StoreSchemaError(f"{path}: this writer's schema differs from the store's ({details}){hint}")
        return on_disk

    def path_for(self, video_id: str) -> Path:
        return self.videos_dir / f"{_check_video_id(video_id)}{_RECORD_SUFFIX}"

    def has(self, video_id: str) -> bool:
        return self.path_for(video_id).exists()

    def write(self, video_id: str, features: VideoFeatures) -> Path:
        """Validate and write one record atomically (replaces an existing record of that id)."""
        arrays = validate_features(_check_video_id(video_id), features, self.schema)
        return atomic_write_bytes(self.path_for(video_id), _encode_record(video_id, arrays, self.schema))

    def add_second_features(self, video_id: str, second_times: np.ndarray, second_features: np.ndarray) -> Path:
        """Rewrite an existing record with the per-second arrays added (replacing any it had).

        Every other array is copied as stored (same dtype, same bytes); the record is replaced
        atomically, so an interrupted fill leaves either the old record or the full new one.
        second_times float64 [S], second_features [S, action_dim].
        """
        if not self.schema.second_features:
            raise StoreSchemaError(
                f"{self.root / 'schema.json'}: field 'second_features' is false; enable_second_features(store) first"
            )
        path = self.path_for(video_id)
        if not path.exists():
            raise KeyError(f"{video_id!r}: not in feature store {self.root}")
        old = FeatureStore(self.root)[video_id]
        features = dataclasses.replace(old, second_times=second_times, second_features=second_features)
        return self.write(video_id, features)


def _schema_bytes(schema: StoreSchema) -> bytes:
    return (json.dumps(schema.to_json(), indent=1) + "\n").encode()


def enable_second_features(root: str | os.PathLike) -> StoreSchema:
    """Mark an existing store as one with per-second features (upgrading a version-1 schema to 2).

    The only rewrite ``schema.json`` ever gets: under a lock (shard workers may call this at once),
    only the ``second_features`` flag and the version change. Records written before stay readable;
    those still lacking the arrays are what ``actbert extract`` fills next (a reader of such a record
    gets ``second_features = None``). Returns the new schema.
    """
    root = Path(root)
    path = root / "schema.json"
    if not path.exists():
        raise StoreSchemaError(f"{path}: feature-store schema not found (is {root} a feature store?)")
    with locked(root / ".schema.lock"):
        schema = StoreSchema.from_json(read_json(path, "feature-store schema"), source=str(path))
        if schema.second_features:
            return schema
        upgraded = dataclasses.replace(schema, version=STORE_VERSION, second_features=True)
        atomic_write_bytes(path, _schema_bytes(upgraded))
    return upgraded


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_safetensors_header(path: Path) -> tuple[int, dict[str, Any]]:
    """(data_offset, header) of a safetensors file: 8-byte little-endian length, then JSON."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return _header_of_open_file(fd, os.fstat(fd).st_size, path)
    finally:
        os.close(fd)


def _header_of_open_file(fd: int, size: int, path: Path) -> tuple[int, dict[str, Any]]:
    """:func:`_read_safetensors_header` of the file open as ``fd`` (``size`` bytes), named ``path`` in errors."""
    prefix = os.pread(fd, 8, 0)
    if len(prefix) != 8:
        raise FeatureValidationError(f"{path}: not a safetensors file (shorter than 8 bytes)")
    (length,) = struct.unpack("<Q", prefix)
    if length > size - 8:
        raise FeatureValidationError(f"{path}: not a safetensors file (header length {length} exceeds file size)")
    try:
        header = json.loads(os.pread(fd, length, 8))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FeatureValidationError(f"{path}: safetensors header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise FeatureValidationError(f"{path}: safetensors header is not a mapping")
    return 8 + length, header


class FeatureStore:
    """Read-only, random access by video id; arrays are read-only views of the record's ``mmap``.

    Expected dims (``action_dim``, ``region_dim``, ``num_actions``, ``num_region_classes``,
    ``max_regions``) may be given; a store that disagrees raises ``StoreSchemaError`` saying which.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        action_dim: int | None = None,
        region_dim: int | None = None,
        num_actions: int | None = None,
        num_region_classes: int | None = None,
        max_regions: int | None = None,
    ):
        self.root = Path(root)
        path = self.root / "schema.json"
        if not path.exists():
            raise StoreSchemaError(f"{path}: feature-store schema not found (is {self.root} a feature store?)")
        try:
            data = read_json(path, "feature-store schema")
        except ValueError as exc:
            raise StoreSchemaError(str(exc)) from exc
        self.schema = StoreSchema.from_json(data, source=str(path))
        expected = {
            "action_dim": action_dim,
            "region_dim": region_dim,
            "num_actions": num_actions,
            "num_region_classes": num_region_classes,
            "max_regions": max_regions,
        }
        for name, want in expected.items():
            have = getattr(self.schema, name)
            if want is not None and have != want:
                raise StoreSchemaError(f"{path}: field {name!r} is {have}, but the reader expects {want}")
        self.videos_dir = self.root / "videos"

    def path_for(self, video_id: str) -> Path:
        return self.videos_dir / f"{_check_video_id(video_id)}{_RECORD_SUFFIX}"

    @property
    def has_second_features(self) -> bool:
        """Whether the schema says every record carries per-second features (a fill may still be under way)."""
        return self.schema.second_features

    def record_has_second_features(self, video_id: str) -> bool:
        """Whether this video's record holds the per-second arrays (reads only the record's header)."""
        path = self.path_for(video_id)
        if not path.exists():
            raise KeyError(f"{video_id!r}: not in feature store {self.root}")
        _, header = _read_safetensors_header(path)
        return all(name in header for name in _SECOND_FIELDS)

    def video_ids(self) -> list[str]:
        """Sorted ids of complete records (temporary files of unfinished writes are ignored)."""
        if not self.videos_dir.exists():
            return []
        return sorted(
            p.name[: -len(_RECORD_SUFFIX)]
            for p in self.videos_dir.iterdir()
            if p.name.endswith(_RECORD_SUFFIX) and not p.name.startswith(".")
        )

    def __contains__(self, video_id: object) -> bool:
        return isinstance(video_id, str) and self.path_for(video_id).exists()

    def __len__(self) -> int:
        return len(self.video_ids())

    def __iter__(self) -> Iterator[str]:
        return iter(self.video_ids())

    def __getitem__(self, video_id: str) -> VideoFeatures:
        path = self.path_for(video_id)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise KeyError(f"{video_id!r}: not in feature store {self.root}") from None
        try:
            return self._read(video_id, path, fd)
        finally:
            os.close(fd)

    def _read(self, video_id: str, path: Path, fd: int) -> VideoFeatures:
        # one open for the header and the map (mmap keeps its own duplicate of the descriptor): np.memmap
        # would open and stat the file again, and cost twice as much as mmap.mmap + np.frombuffer
        # (docs/scale.md, "Data-path speed", fix 8); the arrays are read-only views of the map either way
        file_size = os.fstat(fd).st_size
        data_offset, header = _header_of_open_file(fd, file_size, path)
        whole = None
        if file_size > data_offset:
            whole = np.frombuffer(mmap.mmap(fd, file_size, access=mmap.ACCESS_READ), dtype=np.uint8)
            random_access(whole)  # a sample reads a few scattered rows: no read-around on a fault
        return _record_from_header(self.schema, video_id, str(path), header, data_offset, whole, file_size)


def decode_record(schema: StoreSchema, video_id: str, data: bytes | np.ndarray, source: str) -> VideoFeatures:
    """A record from its safetensors bytes (bytes or a uint8 array, e.g. a slice of a memory-mapped shard),
    checked as the store checks a file; the arrays are views of ``data``. ``source`` names it in errors."""
    if len(data) < 8:
        raise FeatureValidationError(f"{source}: not a safetensors record (shorter than 8 bytes)")
    (length,) = struct.unpack("<Q", bytes(data[:8]))
    if length > len(data) - 8:
        raise FeatureValidationError(f"{source}: not a safetensors record (header length {length} exceeds its {len(data)} bytes)")
    try:
        header = json.loads(bytes(data[8 : 8 + length]))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FeatureValidationError(f"{source}: safetensors header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise FeatureValidationError(f"{source}: safetensors header is not a mapping")
    whole = np.frombuffer(data, dtype=np.uint8)
    return _record_from_header(schema, video_id, source, header, 8 + length, whole, len(data))


def _record_from_header(schema: StoreSchema, video_id: str, path: str, header: dict[str, Any], data_offset: int,
                        whole: np.ndarray | None, file_size: int) -> VideoFeatures:
    """Check a record's metadata, fields, dtypes and offsets against ``schema`` and view its arrays in ``whole``."""
    meta = header.pop("__metadata__", None) or {}
    if meta.get("format") != STORE_FORMAT:
        raise StoreSchemaError(f"{path}: not a feature-store record (metadata 'format' is {meta.get('format')!r})")
    if meta.get("version") not in {str(v) for v in READABLE_VERSIONS}:
        raise StoreSchemaError(
            f"{path}: record 'version' is {meta.get('version')!r}, this code reads {', '.join(map(str, READABLE_VERSIONS))}"
        )
    if meta.get("video_id") != video_id:
        raise FeatureValidationError(f"{path}: record belongs to video {meta.get('video_id')!r}, not {video_id!r}")
    missing = sorted(set(_FIELDS) - set(header))
    if missing:
        raise FeatureValidationError(f"{path}: record lacks field(s) {missing}")
    fields = dict(_FIELDS)
    seconds = [n for n in _SECOND_FIELDS if n in header]
    if len(seconds) == len(_SECOND_FIELDS):
        fields.update(_SECOND_FIELDS)
    elif seconds:
        other = next(n for n in _SECOND_FIELDS if n not in header)
        raise FeatureValidationError(f"{path}: record has field {seconds[0]!r} but lacks field {other!r}")
    arrays: dict[str, np.ndarray] = {}
    sizes: dict[str, int] = {}
    for name, (dtype, template) in fields.items():
        entry = header[name]
        stored = _SAFETENSORS_DTYPES.get(entry.get("dtype"))
        want = dtype or schema.feature_dtype
        if stored is None or np.dtype(stored) != want:
            raise StoreSchemaError(f"{path}, field {name!r}: stored dtype {entry.get('dtype')!r}, schema says {np.dtype(want).name}")
        shape = tuple(int(s) for s in entry["shape"])
        begin, end = (int(o) for o in entry["data_offsets"])
        if end - begin != math.prod(shape) * np.dtype(stored).itemsize or data_offset + end > file_size:
            raise FeatureValidationError(f"{path}, field {name!r}: data offsets do not match its shape {shape}")
        if begin == end or whole is None:
            arrays[name] = np.zeros(shape, dtype=stored)
        else:
            arrays[name] = whole[data_offset + begin : data_offset + end].view(stored).reshape(shape)
        if template[0] in ("C", "F", "S"):
            sizes.setdefault(template[0], shape[0])
    for name, (_, template) in fields.items():
        expected = _expected_shape(template, schema, sizes)
        if arrays[name].shape != expected:
            raise StoreSchemaError(
                f"{path}, field {name!r}: shape {arrays[name].shape} does not match the schema's {expected}"
            )
    return VideoFeatures(**arrays)
