"""Training metrics: one JSON object per log step in ``metrics.jsonl``, and a PNG of the curves.

On resume the log is cut back to the checkpoint's step (records an interrupted run wrote after its
last checkpoint are replayed by the resumed run), so the file always reads as one continuous run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from actbert.utils.io import DiskFullError, atomic_write_text, is_disk_full

LOSS_KEYS = ("loss", "mlm", "action", "region", "match")  # ActBERT's (the paper model's) names
NOT_LOSSES = ("step", "epoch", "lr", "samples_per_s", "tokens_per_s")


def loss_keys(records: list[dict[str, Any]]) -> list[str]:
    """Every loss a run logged (any family's names), total first, in first-seen order."""
    keys: list[str] = []
    for r in records:
        for k, v in r.items():
            if k not in NOT_LOSSES and k not in keys and (v is None or isinstance(v, (int, float))):
                keys.append(k)
    return sorted(keys, key=lambda k: k != "loss")


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            # a line cut short by a crash is the last one; anything else is a real problem
            if number == len(lines):
                break
            raise ValueError(f"{path}: line {number} is not valid JSON")
    return records


class MetricsLog:
    """Appends records to ``path`` (JSON lines, flushed per record)."""

    def __init__(self, path: str | os.PathLike, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            atomic_write_text(self.path, "")
        else:
            kept = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict[str, Any]) -> None:
        try:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
                handle.flush()
        except OSError as exc:
            if is_disk_full(exc):  # name the file, as every other write of a run does
                raise DiskFullError(exc.errno, f"{self.path}: no space left on the device while appending the metrics log "
                                    "(free space, then resume with --resume)", str(self.path)) from exc
            raise


def plot_metrics(jsonl_path: str | os.PathLike, png_path: str | os.PathLike) -> Path | None:
    """Loss curves (total and per task) and learning rate against step; written atomically."""
    records = read_metrics(jsonl_path)
    if not records:
        return None

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(11, 4))
    for key in loss_keys(records):  # a step without a value for a loss (null) leaves a gap
        values = [float("nan") if r.get(key) is None else r[key] for r in records]
        ax_loss.plot(steps, values, label="total" if key == "loss" else key, linewidth=2 if key == "loss" else 1)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("pretraining losses")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_lr.plot(steps, [r.get("lr", float("nan")) for r in records], color="tab:gray")
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title("schedule")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    from actbert.utils.plotting import save_png

    return save_png(fig, png_path)
