"""Read ``torch.save`` checkpoints of other codebases without running pickle code (shared by the families' loaders).

A PyTorch zip checkpoint is ``<root>/data.pkl`` (a pickle) plus one raw file per storage. The
pickle names globals -- ``torch._utils._rebuild_tensor_v2``, ``collections.OrderedDict``, and in
training checkpoints whatever else was saved (fairseq's ``argparse.Namespace`` / omegaconf
configs ...). :class:`RestrictedTorchUnpickler` never imports a global the pickle names:

* tensors are rebuilt by this module from the archive's raw storages (``torch.frombuffer`` +
  ``as_strided``), and plain containers map to the builtins;
* any other global is refused (``strict=True``: :class:`UnsafePickleError` before anything could
  run) or becomes an inert :class:`OpaqueObject` that records its name and arguments and is never
  called (``strict=False``, for checkpoints that carry config objects beside the weights).

``torch.load(weights_only=True)`` would refuse those config objects outright, and plain
``torch.load`` would execute them; this reader is the middle path that users of released
checkpoints need. Legacy (pre-1.6, non-zip) torch files are refused with a message.
:func:`read_state_arrays` reads a ``.pt`` / ``.bin`` zip, a ``.npz`` (``allow_pickle=False``) or a
``.safetensors`` file into ``{name: numpy array}``.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from actbert.errors import CheckpointError

STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}  # fmt: skip
_BUILTINS = {"dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset, "int": int,
             "float": float, "str": str, "bool": bool, "bytes": bytes}


class UnsafePickleError(CheckpointError):
    """A checkpoint's pickle asked for a global outside the allow-list (nothing was executed)."""


class OpaqueObject:
    """Stand-in for a non-tensor object of a checkpoint (a config object ...): keeps the global's
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


def _opaque_class(qualname: str) -> type:
    class _Opaque(OpaqueObject):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(qualname, *args, **kwargs)

        def __new__(cls, *args: Any, **kwargs: Any):  # NEWOBJ calls cls.__new__(cls, *args)
            obj = object.__new__(cls)
            OpaqueObject.__init__(obj, qualname, *args)
            return obj

    _Opaque.__name__ = _Opaque.__qualname__ = "Opaque_" + re.sub(r"\W", "_", qualname)
    return _Opaque


class _StorageType:
    """Stands for ``torch.FloatStorage`` & co. inside the pickle: only its dtype is used."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, *_: Any) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2``'s job on a flat storage tensor (our code, not torch's)."""
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError("tensor without a storage")
    if not all(isinstance(v, int) for v in (offset, *size, *stride)):
        raise pickle.UnpicklingError("tensor offset/size/stride must be integers")
    return torch.as_strided(storage, tuple(size), tuple(stride), int(offset))


def _rebuild_parameter(data: torch.Tensor, *_: Any) -> torch.Tensor:
    return data


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch", "Size"): tuple,
}


class RestrictedTorchUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` of a torch zip archive (module docstring); ``opaque``: the names of
    the globals kept as :class:`OpaqueObject` (``strict=False`` only)."""

    def __init__(self, file: Any, archive: zipfile.ZipFile, root: str, source: str, strict: bool = True):
        super().__init__(file)
        self.archive, self.root, self.source, self.strict = archive, root, source, strict
        self.opaque: set[str] = set()
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "builtins" and name in _BUILTINS:
            return _BUILTINS[name]
        if self.strict:
            raise UnsafePickleError(f"{self.source}: refused to load global {module}.{name} from the checkpoint; only "
                                    "tensors and plain containers are allowed in a state dict (nothing was executed)")
        self.opaque.add(f"{module}.{name}")
        return _opaque_class(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"{self.source}: refused persistent id {pid!r} in the checkpoint")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else None
        if dtype is None:
            raise UnsafePickleError(f"{self.source}: storage {key!r} has an unknown type {storage_type!r}")
        if key not in self._storages:
            try:
                raw = self.archive.read(f"{self.root}/data/{key}" if self.root else f"data/{key}")
            except KeyError:
                raise CheckpointError(f"{self.source}: storage file data/{key} missing from the archive") from None
            flat = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            if isinstance(numel, int) and flat.numel() < numel:
                raise CheckpointError(f"{self.source}: storage {key} holds {flat.numel()} elements, the pickle says {numel}")
            self._storages[key] = flat
        return self._storages[key]


def read_torch_zip(path: str | Path, strict: bool = True) -> tuple[Any, set[str]]:
    """A ``torch.save`` zip archive -> (its object with tensors rebuilt, the globals kept opaque)."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(
            f"{path}: not a PyTorch zip checkpoint ({exc}); PyTorch's legacy pre-1.6 format is not read: re-save it "
            "with torch.save(state_dict, path) from PyTorch >= 1.6, or export the arrays with numpy.savez"
        ) from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: expected one data.pkl in the archive, found {len(pickles)}; not a torch.save archive")
        name = pickles[0]
        root = name[: -len("/data.pkl")] if "/" in name else ""
        unpickler = RestrictedTorchUnpickler(io.BytesIO(archive.read(name)), archive, root, str(path), strict)
        try:
            obj = unpickler.load()
        except CheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({exc})") from None
    return obj, unpickler.opaque


def state_arrays(obj: Any, source: str) -> dict[str, np.ndarray]:
    """The state dict inside a checkpoint object (itself, or under ``"model"`` / ``"state_dict"``)
    as numpy arrays (half precision widened to float32)."""
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: top level is a {type(obj).__name__}, expected a state dict (names -> tensors)")
    out = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: entry {key!r} of the state dict is a {type(value).__name__}, expected a tensor")
        value = value.detach()
        out[key] = value.float().numpy() if value.dtype in (torch.float16, torch.bfloat16) else value.numpy()
    return out


def read_state_arrays(path: str | Path, strict: bool = True) -> dict[str, np.ndarray]:
    """``{name: array}`` from a ``.npz`` (no pickle), a ``.safetensors`` file or a torch zip (anything else)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {k: archive[k] for k in archive.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise CheckpointError(f"{path}: not a pickle-free .npz of arrays ({exc})") from None
    if suffix == ".safetensors":
        from actbert.models.pretrained import read_safetensors

        tensors, _ = read_safetensors(path)
        return state_arrays(tensors, str(path))
    obj, _ = read_torch_zip(path, strict)
    return state_arrays(obj, str(path))


__all__ = [
    "OpaqueObject",
    "RestrictedTorchUnpickler",
    "UnsafePickleError",
    "read_state_arrays",
    "read_torch_zip",
    "state_arrays",
]
