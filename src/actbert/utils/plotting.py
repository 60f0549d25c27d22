"""One PNG saver for every plot the package writes (metrics, demo report, action encoder)."""

from __future__ import annotations

import io
import os
from pathlib import Path

from actbert.utils.io import atomic_write_bytes


def save_png(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Render a matplotlib figure to ``path`` as PNG (atomically) and close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return atomic_write_bytes(Path(path), buffer.getvalue())


__all__ = ["save_png"]
