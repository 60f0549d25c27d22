"""Atomic, pickle-free training checkpoints for exact resume.

``RUN_DIR/checkpoints/step-0000200.pt`` holds everything needed to continue as if never stopped:
model, optimiser and scheduler state, every process's RNG states (python, numpy, torch, cuda), the
data position (epoch, optimiser steps done within it) and the config. It is written with
``torch.save`` to a temporary file and renamed into place (``actbert.utils.io.atomic_torch_save``),
then ``RUN_DIR/checkpoints/latest.json`` is atomically updated to point at it -- so a crash at any
moment leaves either the previous or the new checkpoint, never a partial one. Files are read back
only with ``torch.load(weights_only=True)`` (plain tensors, numbers, strings, lists and dicts).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actbert.errors import CheckpointError  # the package's one checkpoint error (re-exported here)
from actbert.utils.io import atomic_torch_save, atomic_write_json, read_json

CHECKPOINT_FORMAT = "actbert-pretrain-checkpoint"
CHECKPOINT_VERSION = 1


def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states, as tensors / ints only (loadable with ``weights_only=True``)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(run_dir: str | os.PathLike, step: int, payload: dict[str, Any], keep: int = 2) -> Path:
    """Write ``payload`` as ``checkpoints/step-<step>.pt``, point ``latest.json`` at it, prune old ones."""
    folder = checkpoint_dir(run_dir)
    path = folder / f"step-{step:07d}.pt"
    body = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": int(step), **payload}
    atomic_torch_save(body, path)
    atomic_write_json(folder / "latest.json", {"step": int(step), "file": path.name})
    if keep > 0:
        for old in sorted(folder.glob("step-*.pt"))[:-keep]:
            if old != path:
                old.unlink(missing_ok=True)
    return path


def remove_partial_writes(run_dir: str | os.PathLike) -> list[Path]:
    """Delete temporaries (``.<name>.tmp-*``) a killed process left in ``run_dir`` and its checkpoints.

    Atomic writes never leave a partial file under a real name, but a writer killed mid-write leaves
    its temporary behind; a resumed run removes them. Returns the removed paths.
    """
    removed = []
    for folder in (Path(run_dir), checkpoint_dir(run_dir)):
        if folder.is_dir():
            for leftover in folder.glob(".*.tmp-*"):
                leftover.unlink(missing_ok=True)
                removed.append(leftover)
    return removed


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint ``latest.json`` points at, or None when the run has none."""
    pointer = checkpoint_dir(run_dir) / "latest.json"
    if not pointer.exists():
        return None
    info = read_json(pointer, "checkpoint pointer")
    if not isinstance(info, dict) or "file" not in info:
        raise CheckpointError(f"{pointer}: field 'file' missing")
    path = pointer.parent / str(info["file"])
    if not path.exists():
        raise CheckpointError(f"{pointer}: points at {path.name}, which does not exist")
    return path


def checkpoint_candidates(run_dir: str | os.PathLike) -> list[Path]:
    """The run's checkpoints to resume from, best first: the one ``latest.json`` names, then every
    ``step-*.pt`` from the newest step down (a missing or unreadable pointer only drops the first)."""
    folder = checkpoint_dir(run_dir)
    ordered: list[Path] = []
    pointer = folder / "latest.json"
    if pointer.exists():
        try:
            info = read_json(pointer, "checkpoint pointer")
            if isinstance(info, dict) and "file" in info:
                ordered.append(folder / str(info["file"]))
        except Exception:  # noqa: BLE001 - a torn pointer: fall back to the files themselves
            pass
    for path in sorted(folder.glob("step-*.pt"), reverse=True):
        if path not in ordered:
            ordered.append(path)
    return [p for p in ordered if p.exists()]


def load_latest_verified(run_dir: str | os.PathLike) -> tuple[Path | None, dict[str, Any] | None, list[str]]:
    """The newest checkpoint of ``run_dir`` that reads and verifies: ``(path, body, skipped)``.

    ``skipped`` holds one line per newer checkpoint that did not (file and reason), so the caller
    can say what it fell back from. ``(None, None, [])``: the run has no checkpoint at all. Every
    checkpoint unreadable: a :class:`CheckpointError` naming each file.
    """
    skipped = []
    for path in checkpoint_candidates(run_dir):
        try:
            return path, load_checkpoint(path), skipped
        except CheckpointError as exc:
            skipped.append(str(exc))
    if skipped:
        raise CheckpointError(f"{checkpoint_dir(run_dir)}: no checkpoint verifies: " + "; ".join(skipped))
    return None, None, []


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint (``weights_only=True``) and check it is one of ours."""
    path = Path(path)
    try:
        body = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not a usable checkpoint"
        first = (str(exc).strip().splitlines() or [""])[0][:200]  # torch's messages run to many lines
        raise CheckpointError(f"{path}: not a readable pretraining checkpoint ({type(exc).__name__}: {first})") from exc
    if not isinstance(body, dict) or body.get("format") != CHECKPOINT_FORMAT:
        found = body.get("format") if isinstance(body, dict) else type(body).__name__
        raise CheckpointError(f"{path}: field 'format' is {found!r}, expected {CHECKPOINT_FORMAT!r}")
    if body.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: field 'version' is {body.get('version')!r}, expected {CHECKPOINT_VERSION}")
    for key in ("model", "optimizer", "scheduler", "rng", "data", "world_size", "config"):
        if key not in body:
            raise CheckpointError(f"{path}: field {key!r} missing")
    return body
