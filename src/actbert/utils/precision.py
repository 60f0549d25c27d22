"""One autocast helper for every loop (pretraining, fine-tuning, scoring)."""

from __future__ import annotations

import torch

from actbert.errors import ActBertError

DTYPES = ("fp32", "bf16")


def autocast(dtype: str | None, device_type: str = "cpu") -> torch.autocast:
    """``torch.autocast`` in bf16 for ``"bf16"`` on ``device_type`` (``"cpu"`` / ``"cuda"``), a
    disabled one for ``"fp32"`` / None."""
    if dtype in (None, "fp32", "float32"):
        return torch.autocast(device_type, enabled=False)
    if dtype in ("bf16", "bfloat16"):
        return torch.autocast(device_type, dtype=torch.bfloat16)
    raise ActBertError(f"dtype: expected one of {list(DTYPES)}, got {dtype!r}")


__all__ = ["DTYPES", "autocast"]
