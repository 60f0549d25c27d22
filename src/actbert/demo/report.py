"""The demo's report: result files -> tables, win count, plots, ``OUT/report.md``.

Everything here is a function of what the run folder holds (result files, ``stages.json``,
``pretrain/metrics.jsonl``), so the report can be rebuilt at any time.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from actbert.demo.profiles import (
    DATA_STAGES,
    STAGES,
    VARIANT_TITLES,
    VARIANTS,
    DemoPaths,
    DemoProfile,
    pretrain_overrides,
    stage_commands,
)
from actbert.tasks.common import TASK_NAMES
from actbert.utils.io import atomic_write_text, read_json

if TYPE_CHECKING:
    from actbert.demo.pipeline import StageBook

__all__ = [
    "load_results",
    "format_value",
    "task_scores",
    "wins",
    "results_table",
    "plot_task_scores",
    "retrieval_example",
    "plot_retrieval_example",
    "write_report",
]


# ----------------------------------------------------------------------------- results -> table


def load_results(paths: DemoPaths, tasks: Sequence[str] = TASK_NAMES) -> dict[str, dict[str, dict]]:
    """``{task: {variant: result-file content}}`` for the result files that exist."""
    out: dict[str, dict[str, dict]] = {}
    for task in tasks:
        for variant in VARIANTS:
            path = paths.result_file(task, variant)
            if path.exists():
                out.setdefault(task, {})[variant] = read_json(path, "demo result")
    return out


def format_value(value: Any) -> str:
    """A table cell: floats with two decimals, None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def task_scores(results: Mapping[str, Mapping[str, Mapping]]) -> dict[str, dict[str, float | None]]:
    """Per task and variant: the mean primary metric over the task's datasets (None: no records)."""
    scores: dict[str, dict[str, float | None]] = {}
    for task, by_variant in results.items():
        for variant in VARIANTS:
            records = (by_variant.get(variant) or {}).get("records") or []
            values = [r["metrics"].get(r["primary"]) for r in records]
            values = [float(v) for v in values if v is not None]
            scores.setdefault(task, {})[variant] = sum(values) / len(values) if values else None
    return scores


def wins(scores: Mapping[str, Mapping[str, float | None]], better: str = "pretrained", worse: str = "no_pretraining") -> list[str]:
    return [t for t, s in scores.items() if s.get(better) is not None and s.get(worse) is not None and s[better] > s[worse]]


def results_table(results: Mapping[str, Mapping[str, Mapping]]) -> str:
    """One Markdown table: a row per (task, dataset) with the primary metric of each variant."""
    header = ["task", "dataset", "protocol", "metric", *(VARIANT_TITLES[v] for v in VARIANTS), "pretraining helps"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for task, by_variant in results.items():
        base = (by_variant.get("pretrained") or {}).get("records") or []
        for i, record in enumerate(base):
            primary = record["primary"]
            cells = [task, record["dataset"], record["protocol"], primary]
            values = {}
            for variant in VARIANTS:
                entry = by_variant.get(variant) or {}
                if entry.get("not_applicable"):
                    cells.append("= pretrained")
                    continue
                recs = entry.get("records") or []
                match = next((r for r in recs if (r["dataset"], r["protocol"], r.get("primary"))
                              == (record["dataset"], record["protocol"], primary)), None)
                values[variant] = None if match is None else match["metrics"].get(primary)
                cells.append(format_value(values[variant]))
            a, b = values.get("pretrained"), values.get("no_pretraining")
            cells.append("n/a" if a is None or b is None else ("yes" if a > b else "no"))
            lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- plots


def _save_figure(fig, path: Path) -> Path:
    from actbert.utils.plotting import save_png

    return save_png(fig, path)


def plot_task_scores(scores: Mapping[str, Mapping[str, float | None]], path: Path) -> Path | None:
    """Grouped bars: each task's mean primary metric for the three variants."""
    if not scores:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = list(scores)
    fig, ax = plt.subplots(figsize=(1.6 * len(tasks) + 2, 3.2))
    width = 0.27
    for k, variant in enumerate(VARIANTS):
        values = [scores[t].get(variant) for t in tasks]
        xs = np.arange(len(tasks)) + (k - 1) * width
        ax.bar(xs, [0.0 if v is None else v for v in values], width, label=VARIANT_TITLES[variant])
    ax.set_xticks(np.arange(len(tasks)))
    ax.set_xticklabels([t.replace("_", "\n") for t in tasks])
    ax.set_ylabel("primary metric (task mean)")
    ax.set_title("downstream tasks: pretrained vs not vs no region cues")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save_figure(fig, path)


def retrieval_example(record: Mapping[str, Any], bench_root: Path, query_index: int | None = None) -> dict[str, Any] | None:
    """The query shown in the report: ``query_index``, else the first query (file order) whose
    ground-truth clip is in the top 5, else query 0. Returns its text, top-5 clips and the gt."""
    queries = record.get("queries") or []
    top5, ranks = record.get("top5") or [], record.get("ranks") or []
    if not queries or not top5:
        return None
    if query_index is None:
        hits = [i for i, r in enumerate(ranks) if r <= 5]
        query_index = hits[0] if hits else 0
        how = "first query (file order) whose ground truth is in the top 5" if hits else "query 0 (no query has its ground truth in the top 5)"
    else:
        how = f"query {query_index}"
    return {
        "query": queries[query_index],
        "query_index": query_index,
        "how_chosen": how,
        "rank": ranks[query_index] if ranks else None,
        "top5": [{"index": j, "clip": record["clips"][j], "video_id": record["clip_videos"][j], "is_gt": j == query_index}
                 for j in top5[query_index]],
    }


def plot_retrieval_example(example: Mapping[str, Any], bench_root: Path, path: Path, spans: Mapping[str, tuple[float, float]] | None = None) -> Path:
    """Query text over the top-5 clips' middle frames (1 FPS frame nearest the clip centre); the
    ground-truth clip framed in green."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from actbert.video.decode import VideoDecodeError, frames_at_fps

    items = example["top5"]
    fig, axes = plt.subplots(1, len(items), figsize=(2.3 * len(items), 2.6))
    axes = np.atleast_1d(axes)
    for k, (ax, item) in enumerate(zip(axes, items)):
        video = bench_root / "videos" / f"{item['video_id']}.mp4"
        try:
            decoded = frames_at_fps(video, fps=1.0)
            start, end = (spans or {}).get(item["clip"], (0.0, float(decoded.times[-1]) + 1.0))
            middle = 0.5 * (start + end)
            frame = decoded.frames[int(np.argmin(np.abs(decoded.times - middle)))]
            ax.imshow(frame)
        except (VideoDecodeError, IndexError) as exc:
            ax.text(0.5, 0.5, f"cannot decode\n{exc}"[:60], ha="center", va="center", fontsize=6)
        ax.set_xticks([])
        ax.set_yticks([])
        colour = "green" if item["is_gt"] else "grey"
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(4 if item["is_gt"] else 1)
        ax.set_title(f"#{k + 1} {item['clip']}" + (" (GT)" if item["is_gt"] else ""), fontsize=7, color=colour)
    fig.suptitle(f"query: \"{example['query']}\"  (ground truth at rank {example['rank']})", fontsize=9)
    fig.tight_layout()
    return _save_figure(fig, path)


def _youcook2_spans(bench_root: Path) -> dict[str, tuple[float, float]]:
    from actbert.data import readers
    from actbert.tasks.common import Benchmark

    bench = Benchmark(bench_root)
    if not bench.youcook2.exists():
        return {}
    segments = readers.youcook2_segments(readers.read_youcook2(bench.youcook2, subset="validation"))
    return {f"{s.video_id}#{s.segment_id}": (s.start, s.end) for s in segments}


# ----------------------------------------------------------------------------- report


def plots_section(plots: Sequence[tuple[str, str]]) -> list[str]:
    """Markdown lines of a "## Plots" section: each (title, relative path) as a bold title + image."""
    lines = ["## Plots", ""]
    for title, rel in plots:
        lines += [f"**{title}**", "", f"![{title}]({rel})", ""]
    return lines


def stages_section(entries: Mapping[str, Mapping[str, Any]], order: Sequence[str] | None = None) -> list[str]:
    """Markdown lines of a "## Stages" table from a :class:`StageBook`'s entries (seconds, skipped or
    ran, the total); with ``order``, every stage named there, those without an entry as "not run"."""
    lines = ["## Stages", "", "| stage | seconds | this run |", "| --- | --- | --- |"]
    total = 0.0
    for name in order if order is not None else list(entries):
        entry = entries.get(name)
        if entry is None:
            lines.append(f"| {name} | - | not run |")
            continue
        sec = entry.get("seconds")
        total += float(sec or 0.0)
        lines.append(f"| {name} | {format_value(sec)} | {'skipped (output existed)' if entry.get('skipped_last_run') else 'ran'} |")
    lines += [f"| **total** | {total:.1f} | |", ""]
    return lines


def write_report(paths: DemoPaths, profile: DemoProfile, seed: int, book: StageBook | None = None,
                 log: Callable[[str], None] = print, tasks: Sequence[str] = TASK_NAMES) -> Path:
    """``OUT/report.md`` + ``OUT/report/*.png`` from the result files (and whatever else exists)."""
    results = load_results(paths, tasks)
    scores = task_scores(results)
    won = wins(scores)
    compared = [t for t, s in scores.items() if s.get("pretrained") is not None and s.get("no_pretraining") is not None]
    paths.report_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# ActBERT demo ({profile.name})", ""]
    lines.append(f"Seed {seed}; synthetic benchmark size `{profile.synth_size}`; model preset `{profile.preset}` "
                 "(text stream from MiniLM); pretraining corpus: `splits.json[\"pretrain\"]` only.")
    lines.append("")
    lines.append("## Results")
    lines.append("")
    lines.append(results_table(results) if results else "(no task results yet)\n")
    lines.append(f"**Pretrained ActBERT beats the unpretrained model on {len(won)} of {len(compared)} tasks**"
                 + (f" ({', '.join(won)})." if won else "."))
    lines.append("A task with several datasets compares the mean of its primary metrics; a tie is not a win.")
    lines.append("")
    lines.append("Task means (primary metric):")
    lines.append("")
    lines.append("| task | " + " | ".join(VARIANT_TITLES[v] for v in VARIANTS) + " |")
    lines.append("| --- |" + " --- |" * len(VARIANTS))
    for task, s in scores.items():
        lines.append(f"| {task} | " + " | ".join(format_value(s.get(v)) for v in VARIANTS) + " |")
    lines.append("")

    plots = []
    if plot_task_scores(scores, paths.report_dir / "task_scores.png"):
        plots.append(("Downstream task scores", "report/task_scores.png"))
    metrics_jsonl = paths.pretrain / "metrics.jsonl"
    if metrics_jsonl.exists():
        from actbert.train.metrics_log import plot_metrics

        if plot_metrics(metrics_jsonl, paths.report_dir / "pretrain_loss.png"):
            plots.append(("Pretraining losses (total and per task) and learning rate", "report/pretrain_loss.png"))
    example_text = []
    retrieval = (results.get("retrieval") or {}).get("pretrained") or {}
    for record in retrieval.get("records") or []:
        example = retrieval_example(record, paths.synth)
        if example is None:
            continue
        spans = _youcook2_spans(paths.synth) if record["dataset"] == "youcook2" else None
        # zero-shot and fine-tuned records of one dataset each get their own file and title
        protocol = str(record.get("protocol", ""))
        slug = re.sub(r"[^a-z0-9]+", "-", f"{record['dataset']} {protocol}".lower()).strip("-")
        name = f"retrieval_example_{slug}.png"
        try:
            plot_retrieval_example(example, paths.synth, paths.report_dir / name, spans)
        except Exception as exc:  # a plot must never lose the report
            log(f"warning: retrieval example plot failed: {exc}")
            continue
        plots.append((f"Retrieval example, {record['dataset']} {protocol} ({example['how_chosen']}; ground truth framed green)", f"report/{name}"))
        example_text.append(f"- {record['dataset']} ({protocol}): query \"{example['query']}\" -> top 5: "
                            + ", ".join(f"{i['clip']}{' (GT)' if i['is_gt'] else ''}" for i in example["top5"]))
    if plots:
        lines.extend(plots_section(plots))
        lines.extend(example_text)
        lines.append("")

    entries = book.entries if book is not None else (read_json(paths.root / "stages.json", "demo stages") if (paths.root / "stages.json").exists() else {})
    lines.extend(stages_section(entries, STAGES))
    per_task = []
    for task, by_variant in results.items():
        for variant, entry in by_variant.items():
            if entry.get("seconds") is not None:
                per_task.append(f"| {task} | {VARIANT_TITLES[variant]} | {entry.get('finetune_seconds')} | {entry['seconds']} |")
    if per_task:
        lines.append("| task | variant | fine-tune s | total s |")
        lines.append("| --- | --- | --- | --- |")
        lines.extend(per_task)
        lines.append("")

    lines.append("## Settings")
    lines.append("")
    commands = stage_commands(paths, profile, seed)
    lines.append("Data stages (equivalent commands):")
    lines.append("")
    lines.append("```")
    for name in DATA_STAGES:
        lines.append("actbert " + " ".join(commands[name]))
    lines.append(f"actbert pretrain --config {profile.preset} --out {paths.pretrain} "
                 + " ".join(f"--set {o}" for o in pretrain_overrides(paths, profile, seed)))
    lines.append("```")
    lines.append("")
    lines.append("Task settings (each variant uses the same settings and seed):")
    lines.append("")
    for task, by_variant in results.items():
        rec = next((r for e in by_variant.values() for r in (e.get("records") or [])), None)
        if rec is not None:
            lines.append(f"- {task}: `{json.dumps(rec.get('settings', {}), sort_keys=True)}`")
    lines.append("")
    pretrain_summary = _pretrain_summary(paths)
    if pretrain_summary:
        lines.append(pretrain_summary)
        lines.append("")

    lines.append("## Notes")
    lines.append("")
    lines.append("- Everything here is synthetic: rendered sprites, template narrations, generated annotations. "
                 "The numbers show that the pipeline works and what pretraining adds on this data; they are not comparable to the paper's.")
    lines.append("- Galleries and test sets are small (tens of clips), so one item moves a metric by several points.")
    lines.append("- The `no pretraining` variant has the same architecture with the text stream still initialised from MiniLM; "
                 "only the ActBERT pretraining (visual streams, tangled layers, heads) is missing.")
    lines.append("- `pretrained, no region cues`: in the tangled transformer the words see the video only through the "
                 "action-queried region context c_r (paper 3.2.2), so without regions the text stream is blind to the video; "
                 "the matching score then comes only from the matching head's product of [CLS] with the pooled action "
                 "stream (`match_fusion: mul`).")
    for task, by_variant in results.items():
        notes = []
        for variant, entry in by_variant.items():
            if entry.get("not_applicable"):
                notes.append(f"{VARIANT_TITLES[variant]}: {entry['not_applicable']}")
            for r in entry.get("records") or []:
                for note in r.get("notes") or []:
                    text = f"{r['dataset']}: {note}"
                    if text not in notes:
                        notes.append(text)
        for note in notes:
            lines.append(f"- {task}: {note}")
    lines.append("")
    path = atomic_write_text(paths.root / "report.md", "\n".join(lines))
    log(f"report: {path}")
    return path


def _pretrain_summary(paths: DemoPaths) -> str:
    from actbert.train.metrics_log import read_metrics

    path = paths.pretrain / "metrics.jsonl"
    if not path.exists():
        return ""
    records = read_metrics(path)
    if not records:
        return ""
    first, last = records[0], records[-1]
    keys = [k for k in ("loss", "mlm", "action", "region", "match") if k in first]
    return (f"Pretraining: {last['step']} steps; losses at step {first['step']} -> {last['step']}: "
            + ", ".join(f"{k} {first[k]:.3f} -> {last[k]:.3f}" for k in keys))
