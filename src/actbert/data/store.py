"""Feature store: per-video action and region features, pickle-free, memory-mapped, many writers.

Layout::

    STORE/schema.json                      what every record holds (dims, dtype, vocabularies)
    STORE/videos/<video_id>.safetensors    one record per video (``VideoFeatures``)
    STORE/failures.json                    videos extraction could not process (written by the driver)

Why this shape. One file per video lets independent workers (``actbert extract --shard i/n``) write
without coordination: a record is written to a temporary file in ``videos/`` and renamed into place
(``os.replace``), so a crashed writer never leaves a readable half-record, and a reader never sees
one. ``schema.json`` is created once, atomically and only if absent; a later writer must bring the
identical schema or is refused. Records are safetensors files (no pickle); the reader parses the
safetensors header itself and maps each array with ``numpy.memmap``, so opening a video costs a
header read and the bytes are paged in only when touched (random access by video id).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from actbert.errors import ActBertError
from actbert.utils.io import atomic_write_bytes, read_json

__all__ = [
    "STORE_FORMAT",
    "STORE_VERSION",
    "StoreSchema",
    "StoreSchemaError",
    "FeatureValidationError",
    "VideoFeatures",
    "FeatureStoreWriter",
    "FeatureStore",
]

STORE_FORMAT = "actbert-feature-store"
STORE_VERSION = 1
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
    dtype: str = "float32"  # storage dtype of action_features and region_features
    version: int = STORE_VERSION

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "float16"):
            raise StoreSchemaError(f"schema.dtype: must be 'float32' or 'float16', got {self.dtype!r}")
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
        return {
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

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "schema.json") -> "StoreSchema":
        if not isinstance(data, Mapping) or data.get("format") != STORE_FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise StoreSchemaError(f"{source}: field 'format' is {found!r}, expected {STORE_FORMAT!r} (not a feature store)")
        version = data.get("version")
        if version != STORE_VERSION:
            raise StoreSchemaError(
                f"{source}: field 'version' is {version!r}; this code reads feature-store version {STORE_VERSION} "
                "(re-extract the features with this version of actbert)"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields - {"format"})
        if unknown:
            raise StoreSchemaError(f"{source}: unknown field(s) {unknown}")
        missing = sorted(f for f in fields - {"max_regions", "dtype", "version"} if f not in data)
        if missing:
            raise StoreSchemaError(f"{source}: missing field(s) {missing}")
        try:
            return cls(**{k: v for k, v in data.items() if k != "format"})
        except StoreSchemaError as exc:
            raise StoreSchemaError(f"{source}: {exc}") from exc

    def differences(self, other: "StoreSchema") -> list[str]:
        """Names of fields that differ (for error messages)."""
        a, b = self.to_json(), other.to_json()
        return [k for k in a if a[k] != b[k]]

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

    @property
    def num_clips(self) -> int:
        return int(self.clip_times.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.frame_times.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


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


def validate_features(video_id: str, features: VideoFeatures, schema: StoreSchema) -> dict[str, np.ndarray]:
    """Check shapes, dims, finiteness and counts; return arrays cast to their storage dtypes.

    Raises ``FeatureValidationError`` naming the video and the field.
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
    out: dict[str, np.ndarray] = {}
    for name, (dtype, template) in _FIELDS.items():
        array = arrays[name]
        expected = _expected_shape(template, schema, sizes)
        if array.shape != expected:
            named = "x".join(template)
            raise FeatureValidationError(
                f"{where}, field {name!r}: shape {tuple(array.shape)} does not match [{named}] = {expected}"
            )
        if array.dtype.kind not in "fiub":
            raise FeatureValidationError(f"{where}, field {name!r}: numeric array expected, got dtype {array.dtype}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).sum())
            raise FeatureValidationError(f"{where}, field {name!r}: {bad} NaN/inf value(s)")
        target = dtype or schema.feature_dtype
        with np.errstate(over="ignore"):  # float16 overflow is reported below, not warned
            cast = np.ascontiguousarray(array.astype(target, copy=False))
        if target == np.float16 and not np.isfinite(cast).all():
            raise FeatureValidationError(f"{where}, field {name!r}: values exceed the float16 range (max 65504)")
        out[name] = cast
    counts = out["region_counts"]
    if counts.size and (counts.min() < 0 or counts.max() > schema.max_regions):
        raise FeatureValidationError(f"{where}, field 'region_counts': values must lie in [0, {schema.max_regions}]")
    clip_times = out["clip_times"]
    if clip_times.size and (clip_times[:, 1] < clip_times[:, 0]).any():
        raise FeatureValidationError(f"{where}, field 'clip_times': a clip ends before it starts")
    return out


def _encode_record(video_id: str, arrays: Mapping[str, np.ndarray], schema: StoreSchema) -> bytes:
    from safetensors.numpy import save

    metadata = {"format": STORE_FORMAT, "version": str(schema.version), "video_id": video_id}
    return save(dict(arrays), metadata=metadata)


class FeatureStoreWriter:
    """Writes records into ``root``; safe to use from many processes at once (one file per video).

    The first writer creates ``schema.json`` (atomically, only if absent); a writer whose schema
    differs from the one on disk is refused with ``StoreSchemaError``.
    """

    def __init__(self, root: str | os.PathLike, schema: StoreSchema):
        self.root = Path(root)
        self.schema = schema
        self.videos_dir = self.root / "videos"
        self.videos_dir.mkdir(parents=True, exist_ok=True)
        self._publish_schema()

    def _publish_schema(self) -> None:
        path = self.root / "schema.json"
        if not path.exists():
            # write to a private temp file, then hard-link it into place: link fails if another
            # worker got there first, so exactly one schema.json is ever created, never overwritten
            tmp = self.root / f".schema.json.tmp-{os.getpid()}"
            atomic_write_bytes(tmp, (json.dumps(self.schema.to_json(), indent=1) + "\n").encode())
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
            details = ", ".join(f"{k}: store has {_short(a[k])}, writer has {_short(b[k])}" for k in diff)
            raise StoreSchemaError(f"{path}: this writer's schema differs from the store's ({details})")

    def path_for(self, video_id: str) -> Path:
        return self.videos_dir / f"{_check_video_id(video_id)}{_RECORD_SUFFIX}"

    def has(self, video_id: str) -> bool:
        return self.path_for(video_id).exists()

    def write(self, video_id: str, features: VideoFeatures) -> Path:
        """Validate and write one record atomically (replaces an existing record of that id)."""
        arrays = validate_features(_check_video_id(video_id), features, self.schema)
        return atomic_write_bytes(self.path_for(video_id), _encode_record(video_id, arrays, self.schema))


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_safetensors_header(path: Path) -> tuple[int, dict[str, Any]]:
    """(data_offset, header) of a safetensors file: 8-byte little-endian length, then JSON."""
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise FeatureValidationError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (length,) = struct.unpack("<Q", prefix)
        size = path.stat().st_size
        if length > size - 8:
            raise FeatureValidationError(f"{path}: not a safetensors file (header length {length} exceeds file size)")
        try:
            header = json.loads(handle.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FeatureValidationError(f"{path}: safetensors header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise FeatureValidationError(f"{path}: safetensors header is not a mapping")
    return 8 + length, header


class FeatureStore:
    """Read-only, random access by video id; arrays are memory-mapped (``numpy.memmap``).

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
        if not path.exists():
            raise KeyError(f"{video_id!r}: not in feature store {self.root}")
        return self._read(video_id, path)

    def _read(self, video_id: str, path: Path) -> VideoFeatures:
        data_offset, header = _read_safetensors_header(path)
        meta = header.pop("__metadata__", None) or {}
        if meta.get("format") != STORE_FORMAT:
            raise StoreSchemaError(f"{path}: not a feature-store record (metadata 'format' is {meta.get('format')!r})")
        if meta.get("version") != str(STORE_VERSION):
            raise StoreSchemaError(f"{path}: record 'version' is {meta.get('version')!r}, this code reads {STORE_VERSION}")
        if meta.get("video_id") != video_id:
            raise FeatureValidationError(f"{path}: record belongs to video {meta.get('video_id')!r}, not {video_id!r}")
        missing = sorted(set(_FIELDS) - set(header))
        if missing:
            raise FeatureValidationError(f"{path}: record lacks field(s) {missing}")
        file_size = path.stat().st_size
        whole = np.memmap(path, dtype=np.uint8, mode="r") if file_size > data_offset else None
        arrays: dict[str, np.ndarray] = {}
        sizes: dict[str, int] = {}
        for name, (dtype, template) in _FIELDS.items():
            entry = header[name]
            stored = _SAFETENSORS_DTYPES.get(entry.get("dtype"))
            want = dtype or self.schema.feature_dtype
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
            if template[0] in ("C", "F"):
                sizes.setdefault(template[0], shape[0])
        for name, (_, template) in _FIELDS.items():
            expected = _expected_shape(template, self.schema, sizes)
            if arrays[name].shape != expected:
                raise StoreSchemaError(
                    f"{path}, field {name!r}: shape {arrays[name].shape} does not match the schema's {expected}"
                )
        return VideoFeatures(**arrays)
