"""Atomic, pickle-free file writing shared by every stage.

A write goes to a temporary file in the destination folder, is flushed to disk, then renamed over
the destination with ``os.replace`` (atomic on POSIX), so a crash never leaves a half-written file
under the real name.

Permissions: the file gets the mode an ordinary ``open(path, "w")`` would give (``0o666`` less the
process umask, so ``0o644`` under the usual umask 022), not the ``0o600`` of ``tempfile.mkstemp``:
stores and checkpoints shared between the nodes of a group stay readable by it.

A full disk (``ENOSPC``, or ``EDQUOT``: over quota) raises an ``OSError`` that names the file being
written -- the OS's own error names none -- and leaves no temporary behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from actbert.errors import ActBertError


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class WriteError(OSError):
    """A file or folder that cannot be written; ``str()`` is one line that names it."""

    def __init__(self, err: int | None, message: str, filename: str | None = None):
        super().__init__(err, message, filename)

    def __str__(self) -> str:
        return str(self.strerror)


class DiskFullError(WriteError):
    """No space left on the device (or the quota is used up) while writing; the message names the file.

    An ``OSError`` (not an ``ActBertError``): nothing is wrong with the input, and a batch loop that
    skips bad inputs (``except ValueError``) must not skip this one -- every later write would fail too.
    """


def is_disk_full(exc: BaseException) -> bool:
    """True for the ``OSError`` of a full disk or an exhausted quota."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (the only portable way to read it)
    os.umask(mask)
    return mask


def _atomic_write(path: str | os.PathLike, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0o600 would hide the file from the group
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            # os.write / fsync name no file: say which one could not be written
            raise DiskFullError(exc.errno, f"{path}: {os.strerror(exc.errno)} (nothing was replaced)", str(path)) from exc
        raise
    return path


def check_writable(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and write (then remove) a probe file in it, before any work.

    Raises :class:`WriteError` (an ``OSError``) naming the folder when it cannot be written
    (read-only, no permission, full), so a command fails at once instead of after computing everything.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=folder)
        try:
            os.write(fd, b"x")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise WriteError(exc.errno, f"{folder}: {what} is not writable ({reason}); choose another one", str(folder)) from exc
    return folder


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return _atomic_write(path, lambda h: h.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_save_file(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """safetensors ``save_file`` made atomic. Tensors are made contiguous first."""
    from safetensors.torch import save

    data = save({k: v.detach().contiguous() for k, v in tensors.items()}, metadata=metadata)
    return atomic_write_bytes(path, data)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` made atomic; read back only with ``torch.load(weights_only=True)``."""
    import io as _io

    buffer = _io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read JSON with an error that names the file and the position of a syntax error."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{path}: {what} not found") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ActBertError(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc


@contextlib.contextmanager
def locked(lock_path: str | os.PathLike):
    """Exclusive advisory lock (POSIX flock) on ``lock_path`` around a read-modify-write of a shared
    file by several processes (store schema, failures.json)."""
    import fcntl

    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
