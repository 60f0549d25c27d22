"""What every family's batch dataclass shares: its tensors move to a device and pin together.

A family's batch is a dataclass of tensors (and optional non-tensor fields such as video ids);
deriving from :class:`TensorBatch` gives it ``to(device)`` (used by the pretraining loop and the
tasks, ``tasks.common.on_device``) and ``pin_memory()`` (used by the DataLoader with
``pin_memory=True``), each returning a copy with every tensor field moved and the others as they are.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import torch

B = TypeVar("B", bound="TensorBatch")


class TensorBatch:
    """Mixin for batch dataclasses (module docstring)."""

    def _map_tensors(self: B, fn: Any) -> B:
        changes = {f.name: fn(getattr(self, f.name)) for f in dataclasses.fields(self)  # type: ignore[arg-type]
                   if isinstance(getattr(self, f.name), torch.Tensor)}
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to(self: B, device: torch.device | str, non_blocking: bool = False) -> B:
        """A copy with every tensor on ``device``."""
        return self._map_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self: B) -> B:
        """A copy with every tensor in pinned (page-locked) memory."""
        return self._map_tensors(lambda t: t.pin_memory())


__all__ = ["TensorBatch"]
