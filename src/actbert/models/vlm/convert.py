"""Read MMPT (fairseq ``examples/MMPT``) VLM weights under their upstream names, without running pickle code.

Accepted inputs:

* a fairseq/MMPT checkpoint (``checkpoint_best.pt``: ``torch.save`` zip archive with the state dict
  under ``"model"``, names prefixed ``mmmodel.mm_encoder.``). It is read by
  :class:`RestrictedTorchUnpickler`: tensors are rebuilt from the archive's raw storages by this
  module, and every other global the pickle names (fairseq's / omegaconf's config objects,
  ``argparse.Namespace`` ...) becomes an inert :class:`OpaqueObject` that records its name and is
  never imported or called -- a hostile file cannot run code. Legacy (pre-zip) torch files are refused.
* a ``numpy.savez`` archive of the state dict (``allow_pickle=False``), e.g. the fixture's ``weights.npz``;
* a safetensors file.

Conversion strips ``mmmodel.`` / ``mm_encoder.``, checks that the tied decoder
(``cls.predictions.decoder.weight``) equals the word table, drops buffers (``position_ids``),
infers the config from the shapes (head count and MMPT's dataset lengths are not in the shapes:
pass them) and reports unused / missing keys. A retrieval checkpoint (``MMFusionJoint``, no
``cls.*``) loads with the MTM head left at its initialisation (``report.missing_head``).
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import re
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from actbert.errors import CheckpointError
from actbert.models.vlm.configuration import VLMConfig, VLMConfigError
from actbert.models.vlm.modeling import VLMForPretraining

PREFIXES = ("mmmodel.", "mm_encoder.")
TIED_DECODER_KEY = "cls.predictions.decoder.weight"
WORD_EMBEDDINGS_KEY = "bert.embeddings.word_embeddings.weight"
BUFFER_KEYS = ("bert.embeddings.position_ids",)
HEAD_PREFIX = "cls."


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint the restricted reader will not open (nothing was executed)."""


# --------------------------------------------------------------------------------------------
# Restricted reading of torch zip checkpoints
# --------------------------------------------------------------------------------------------


class OpaqueObject:
    """Stand-in for any non-tensor object in a checkpoint (config objects ...): keeps the global's
    name and the arguments / state the pickle gave it; nothing of the original class runs."""

    def __init__(self, qualname: str, *args: Any, **kwargs: Any):
        self.qualname = qualname
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:  # dict subclasses are filled by SETITEMS
        if not isinstance(self.state, dict):
            self.state = {}
        self.state[key] = value

    def append(self, value: Any) -> None:  # list subclasses are filled by APPENDS
        if not isinstance(self.state, list):
            self.state = []
        self.state.append(value)

    def extend(self, values: Any) -> None:
        for v in values:
            self.append(v)

    def __repr__(self) -> str:
        return f"OpaqueObject({self.qualname})"


def _opaque_factory(qualname: str):
    class _Opaque(OpaqueObject):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(qualname, *args, **kwargs)

        def __new__(cls, *args: Any, **kwargs: Any):  # NEWOBJ calls cls.__new__(cls, *args)
            obj = object.__new__(cls)
            OpaqueObject.__init__(obj, qualname, *args)
            return obj

    _Opaque.__name__ = _Opaque.__qualname__ = "Opaque_" + re.sub(r"\W", "_", qualname)
    return _Opaque


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, *rest) -> torch.Tensor:
    """torch._utils._rebuild_tensor_v2's job on a flat storage tensor (our own code, not torch's)."""
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError("tensor without a storage")
    return torch.as_strided(storage, tuple(size), tuple(stride), int(offset))


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool, backward_hooks: Any, *rest) -> torch.Tensor:
    return data


class RestrictedTorchUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` of a torch zip archive: tensors from the archive's storages, plain
    containers, and an inert :class:`OpaqueObject` for every other global (module docstring)."""

    def __init__(self, file, archive: zipfile.ZipFile, root: str, source: str):
        super().__init__(file)
        self.archive = archive
        self.root = root
        self.source = source
        self.opaque: set[str] = set()
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "builtins" and name in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "str", "bool", "bytes"):
            return {"dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset, "int": int,
                    "float": float, "str": str, "bool": bool, "bytes": bytes}[name]
        if (module, name) == ("torch", "Size"):
            return tuple
        self.opaque.add(f"{module}.{name}")
        return _opaque_factory(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"{self.source}: unexpected persistent id {pid!r} in the pickle")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(storage_type, _StorageType):
            dtype = getattr(storage_type, "dtype", None)
            if not isinstance(dtype, torch.dtype):
                raise UnsafeCheckpointError(f"{self.source}: storage {key} has an unknown type {storage_type!r}")
            storage_type = _StorageType(dtype)
        if key not in self._storages:
            try:
                raw = self.archive.read(f"{self.root}/data/{key}")
            except KeyError as exc:
                raise CheckpointError(f"{self.source}: storage {self.root}/data/{key} missing from the archive") from exc
            flat = torch.frombuffer(bytearray(raw), dtype=storage_type.dtype) if raw else torch.empty(0, dtype=storage_type.dtype)
            if flat.numel() < numel:
                raise CheckpointError(f"{self.source}: storage {key} holds {flat.numel()} elements, the pickle says {numel}")
            self._storages[key] = flat
        return self._storages[key]


def read_torch_zip(path: str | Path) -> tuple[Any, set[str]]:
    """A ``torch.save`` zip archive -> (its object with tensors rebuilt, names of globals kept opaque)."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{path}: not a torch zip archive ({exc}); legacy (pre-1.6) torch files are not read") from exc
    with archive:
        pkls = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pkls) != 1:
            raise CheckpointError(f"{path}: expected one */data.pkl in the archive, found {len(pkls)}")
        root = pkls[0][: -len("/data.pkl")]
        unpickler = RestrictedTorchUnpickler(io.BytesIO(archive.read(pkls[0])), archive, root, str(path))
        try:
            obj = unpickler.load()
        except CheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({exc})") from exc
    return obj, unpickler.opaque


def _state_of(obj: Any, source: str) -> dict[str, np.ndarray]:
    """The state dict inside a checkpoint object (``{"model": ...}`` for fairseq) as numpy arrays."""
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    elif isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: no state dict (a mapping of names to tensors) in the checkpoint")
    out = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: entry {key!r} of the state dict is a {type(value).__name__}, expected a tensor")
        out[key] = value.detach().to(torch.float32).numpy() if value.dtype in (torch.float16, torch.bfloat16) else value.detach().numpy()
    return out


def read_mmpt_state(path: str | Path) -> dict[str, np.ndarray]:
    """``{upstream name: array}`` from an MMPT ``.pt`` checkpoint, a ``.npz`` or a ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from actbert.models.pretrained import read_safetensors

        tensors, _ = read_safetensors(path)
        return {k: v.float().numpy() if v.dtype in (torch.float16, torch.bfloat16) else v.numpy() for k, v in tensors.items()}
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {k: archive[k] for k in archive.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise CheckpointError(f"{path}: not a pickle-free .npz of arrays ({exc})") from exc
    obj, _ = read_torch_zip(path)
    return _state_of(obj, str(path))


# --------------------------------------------------------------------------------------------
# Names, config, conversion
# --------------------------------------------------------------------------------------------


def mmpt_to_ours(name: str) -> str:
    """``mmmodel.mm_encoder.bert.encoder...`` -> ``bert.encoder...`` (our tree is MMPT's)."""
    for prefix in PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def ours_to_mmpt(name: str) -> str:
    return "mm_encoder." + name


def _need(state: Mapping[str, np.ndarray], key: str, source: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{source}: missing {ours_to_mmpt(key)!r}, needed to infer the model size; is this an MMPT VLM checkpoint?")
    return tuple(state[key].shape)


def infer_config(state: Mapping[str, np.ndarray], overrides: Mapping[str, Any] | None = None, source: str = "checkpoint") -> VLMConfig:
    """Sizes from the shapes (ours-named ``state``); head count, MMPT lengths, ids and flags from ``overrides``."""
    overrides = {k: v for k, v in dict(overrides or {}).items() if v is not None}
    vocab, hidden = _need(state, WORD_EMBEDDINGS_KEY, source)
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"^bert\.encoder\.layer\.(\d+)\.", k))})
    inferred = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": len(layers),
        "intermediate_size": _need(state, "bert.encoder.layer.0.intermediate.dense.weight", source)[0],
        "max_position_embeddings": _need(state, "bert.embeddings.position_embeddings.weight", source)[0],
        "type_vocab_size": _need(state, "bert.embeddings.token_type_embeddings.weight", source)[0],
        "input_dim": _need(state, "videomlp.linear1.weight", source)[1],
        "use_seg_emb": "bert.embeddings.seg_embeddings.weight" in state,
    }
    if layers != list(range(len(layers))):
        raise CheckpointError(f"{source}: encoder layers {layers} are not numbered 0..n-1")
    for name, value in inferred.items():
        if name in overrides and overrides[name] != value:
            raise CheckpointError(f"{source}: option {name}={overrides[name]!r} contradicts the checkpoint's shapes ({value})")
    known = {f.name for f in dataclasses.fields(VLMConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise CheckpointError(f"{source}: unknown VLM config option(s) {unknown}")
    values = {**overrides, **inferred}
    values.setdefault("num_attention_heads", max(1, hidden // 64))  # BERT's head width 64 when not given
    try:
        return VLMConfig(**values)
    except VLMConfigError as exc:
        raise CheckpointError(f"{source}: {exc}") from exc


@dataclass
class ConversionReport:
    source: str
    loaded: int = 0
    tied: str = ""
    unused: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    missing_head: bool = False
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        return "\n".join([
            f"{self.source}: loaded {self.loaded} tensors",
            f"  tied: {self.tied}",
            f"  unused checkpoint keys ({len(self.unused)}): {self.unused or 'none'}",
            f"  missing model keys ({len(self.missing)}): {self.missing or 'none'}"
            + ("  (no MTM head: a fine-tuned retrieval checkpoint; the head keeps its initialisation)" if self.missing_head else ""),
        ])


def convert_state_dict(
    state: Mapping[str, np.ndarray], model: VLMForPretraining, source: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Ours-named arrays -> tensors for ``model``; a missing encoder tensor is an error, a missing head is reported."""
    report = ConversionReport(source=source)
    expected = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, array in state.items():
        if key in BUFFER_KEYS or key == TIED_DECODER_KEY:
            continue
        if key not in expected:
            report.unused.append(ours_to_mmpt(key))
            continue
        target = expected[key]
        if tuple(array.shape) != tuple(target.shape):
            raise CheckpointError(f"{source}: {ours_to_mmpt(key)!r} has shape {tuple(array.shape)}, the model expects {tuple(target.shape)}")
        out[key] = torch.from_numpy(np.ascontiguousarray(array)).to(target.dtype)
    if TIED_DECODER_KEY in state:
        if not np.array_equal(state[TIED_DECODER_KEY], state[WORD_EMBEDDINGS_KEY]):
            raise CheckpointError(
                f"{source}: {ours_to_mmpt(TIED_DECODER_KEY)!r} differs from {ours_to_mmpt(WORD_EMBEDDINGS_KEY)!r}; "
                "MMPT ties them, so this is not an MMPT VLM checkpoint"
            )
        report.tied = f"{ours_to_mmpt(TIED_DECODER_KEY)} == {ours_to_mmpt(WORD_EMBEDDINGS_KEY)} (one parameter)"
    else:
        report.tied = f"no decoder entry; the MTM decoder is {ours_to_mmpt(WORD_EMBEDDINGS_KEY)}"
    missing = sorted(set(expected) - set(out))
    report.missing_head = bool(missing) and all(k.startswith(HEAD_PREFIX) for k in missing)
    report.missing = [ours_to_mmpt(k) for k in missing]
    if missing and not report.missing_head:
        shown = ", ".join(report.missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise CheckpointError(f"{source}: {len(missing)} model tensors missing from the checkpoint: {shown}")
    report.unused.sort()
    report.loaded = len(out)
    return out, report


def load_mmpt_checkpoint(path: str | Path, overrides: Mapping[str, Any] | None = None) -> tuple[VLMForPretraining, ConversionReport]:
    """Read ``path`` (.pt / .npz / .safetensors, MMPT names), infer the config, build and fill the model (eval mode)."""
    source = str(path)
    raw = read_mmpt_state(path)
    return load_mmpt_state(raw, overrides, source)


def load_mmpt_state(raw: Mapping[str, np.ndarray], overrides: Mapping[str, Any] | None = None, source: str = "checkpoint") -> tuple[VLMForPretraining, ConversionReport]:
    """:func:`load_mmpt_checkpoint` on arrays already read (``{upstream name: array}``)."""
    state: dict[str, np.ndarray] = {}
    for key, value in raw.items():
        name = mmpt_to_ours(key)
        if name in state:
            raise CheckpointError(f"{source}: {key!r} and another entry both map to {name!r}")
        state[name] = value
    config = infer_config(state, overrides, source)
    model = VLMForPretraining(config)
    tensors, report = convert_state_dict(state, model, source)
    model.load_state_dict(tensors, strict=not report.missing_head)
    report.config = dataclasses.asdict(config)
    return model.eval(), report


def convert_mmpt_checkpoint(path: str | Path, out_dir: str | Path, overrides: Mapping[str, Any] | None = None) -> ConversionReport:
    """Convert ``path`` into a ``from_pretrained`` folder (+ ``conversion_report.json``)."""
    from actbert.utils.io import atomic_write_json

    model, report = load_mmpt_checkpoint(path, overrides)
    model.save_pretrained(out_dir)
    atomic_write_json(Path(out_dir) / "conversion_report.json", report.to_dict())
    return report


__all__ = [
    "ConversionReport",
    "OpaqueObject",
    "RestrictedTorchUnpickler",
    "UnsafeCheckpointError",
    "convert_mmpt_checkpoint",
    "convert_state_dict",
    "infer_config",
    "load_mmpt_checkpoint",
    "load_mmpt_state",
    "mmpt_to_ours",
    "ours_to_mmpt",
    "read_mmpt_state",
    "read_torch_zip",
]
