"""``actbert demo``: raw synthetic narrated video -> features -> pretraining -> five tasks -> report.

Stages (each writes its output under ``OUT`` and is skipped when that output exists, so a killed
run resumes where it stopped; ``OUT/stages.json`` keeps each stage's seconds):

1. ``synth``              the built-in benchmark (``synth --size demo``; ``--quick``: ``tiny``)
2. ``verbs``              spaCy verb mining over the pretraining videos' narrations
3. ``action_encoder``     the narrow 3D ResNet trained on those verbs
4. ``object_classifier``  the crop classifier of the given-boxes region route
5. ``extract``            action + region features of every video -> feature store
6. ``pretrain``           the ``small`` preset (text stream from MiniLM) on ``splits["pretrain"]``
7. ``tasks``              the five tasks for three variants: pretrained ActBERT, the same
                          architecture without pretraining (``fresh_model``), and pretrained
                          ActBERT without region cues (``use_regions=False``)
8. ``report``             ``OUT/report.md`` + PNG plots (always rebuilt from the stored results)

Stages 1-5 run the same code as the corresponding commands (their ``run(args)``), with the
profile's arguments, so the report can show the equivalent command lines. Each (task, variant)
pair starts from the same seed: the variants differ only in their weights / region cues.

**Which variant wins a task.** A task may report several datasets (retrieval: YouCook2 and
MSR-VTT; video QA: multiple choice and fill-in-the-blank); the comparison uses the mean of the
task's primary metrics (every primary metric is higher-is-better). A tie is not a win.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import io
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from actbert.tasks.common import TASK_NAMES
from actbert.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json

VARIANTS = ("pretrained", "no_pretraining", "no_regions")
VARIANT_TITLES = {
    "pretrained": "ActBERT (pretrained)",
    "no_pretraining": "no pretraining",
    "no_regions": "pretrained, no region cues",
}
# tasks the paper reports both zero-shot and fine-tuned (Table 4: YouCook2 and MSR-VTT zero-shot,
# MSR-VTT "+FT"): the demo evaluates the model before and after fine-tuning
ZERO_SHOT_AND_FINETUNED = ("retrieval",)
STAGES = ("synth", "verbs", "action_encoder", "object_classifier", "extract", "pretrain", "tasks", "report")


# ----------------------------------------------------------------------------- profiles


@dataclass
class DemoProfile:
    """Everything that sizes a demo run (recorded in the report)."""

    name: str
    synth_size: str
    preset: str
    verb_min_count: int
    action_encoder: list[str]  # extra train-action-encoder arguments
    object_classifier: list[str]  # extra train-object-classifier arguments
    pretrain: list[str]  # key=value overrides of the preset
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> settings overrides


PROFILES: dict[str, DemoProfile] = {
    "full": DemoProfile(
        name="full",
        synth_size="demo",
        preset="small",
        verb_min_count=5,
        action_encoder=["--arch", "narrow", "--num-frames", "8", "--fps", "2", "--clip-size", "48",
                        "--epochs", "14", "--batch-size", "32", "--lr", "2e-3"],
        object_classifier=["--epochs", "1"],
        pretrain=["train.max_steps=250", "train.batch_size=16", "optim.lr=2e-4", "optim.warmup_steps=25",
                  "train.log_every=10", "train.checkpoint_every=100", "data.num_workers=0"],
        tasks={
            "retrieval": {"steps": 40, "max_queries": 40},
            "captioning": {"steps": 60, "beam_size": 1},
            "videoqa": {"steps": 40},
            "segmentation": {"steps": 80},
            "step_localization": {"units": "clips"},
        },
    ),
    # the tiny model preset (configs/tiny.yaml) keeps the smoke run within a few minutes
    "quick": DemoProfile(
        name="quick",
        synth_size="tiny",
        preset="tiny",
        verb_min_count=2,
        action_encoder=["--arch", "narrow", "--num-frames", "8", "--fps", "2", "--clip-size", "48",
                        "--epochs", "1", "--batch-size", "16"],
        object_classifier=["--epochs", "1"],
        pretrain=["data.random=false", "train.max_steps=40", "train.batch_size=8", "optim.warmup_steps=4",
                  "train.log_every=2", "train.checkpoint_every=20", "data.num_workers=0"],
        tasks={
            "retrieval": {"steps": 5, "max_queries": 10},
            "captioning": {"steps": 5, "beam_size": 1, "max_clips": 8, "meteor": False},
            "videoqa": {"steps": 5, "max_questions": 10},
            "segmentation": {"steps": 5, "max_videos": 2},
            "step_localization": {"units": "clips", "max_videos": 2},
        },
    ),
}


# ----------------------------------------------------------------------------- stage bookkeeping


class StageBook:
    """``OUT/stages.json``: per stage, whether it finished and how many seconds it took."""

    def __init__(self, root: Path, log: Callable[[str], None]):
        self.path = root / "stages.json"
        self.log = log
        self.entries: dict[str, dict[str, Any]] = read_json(self.path, "demo stages") if self.path.exists() else {}

    def run(self, index: int, name: str, done: Callable[[], bool], work: Callable[[], Any]) -> None:
        head = f"[demo {index}/{len(STAGES)}] {name}"
        if done():
            entry = self.entries.setdefault(name, {"seconds": None})
            entry["skipped_last_run"] = True
            self.log(f"{head}: already done, skipped ({_secs(entry.get('seconds'))} when it ran)")
            self._save()
            return
        self.log(f"{head}: running")
        start = time.perf_counter()
        work()
        seconds = time.perf_counter() - start
        self.entries[name] = {"seconds": round(seconds, 1), "skipped_last_run": False}
        self._save()
        self.log(f"{head}: done in {seconds:.1f} s")

    def seconds(self, name: str) -> float | None:
        return self.entries.get(name, {}).get("seconds")

    def _save(self) -> None:
        atomic_write_json(self.path, self.entries)


def _secs(value: Any) -> str:
    return "?" if value is None else f"{float(value):.1f} s"


def _run_command(module_name: str, argv: Sequence[str]) -> None:
    """Run ``actbert <command> argv`` in this process (same parser, same code as the CLI)."""
    module = importlib.import_module(f"actbert.commands.{module_name}")
    parser = argparse.ArgumentParser(prog=f"actbert {module_name.replace('_', '-')}")
    module.add_arguments(parser)
    code = module.run(parser.parse_args(list(argv)))
    if code:
        raise RuntimeError(f"demo: `actbert {module_name.replace('_', '-')} {' '.join(argv)}` exited with {code}")


# ----------------------------------------------------------------------------- the pipeline


@dataclass
class DemoPaths:
    root: Path

    @property
    def synth(self) -> Path:
        return self.root / "synth"

    @property
    def vocab(self) -> Path:
        return self.root / "action_vocab.json"

    @property
    def action_encoder(self) -> Path:
        return self.root / "action_encoder"

    @property
    def object_classifier(self) -> Path:
        return self.root / "object_classifier.safetensors"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def pretrain(self) -> Path:
        return self.root / "pretrain"

    @property
    def model(self) -> Path:
        return self.root / "pretrain" / "model"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    def result_file(self, task: str, variant: str) -> Path:
        return self.results / task / f"{variant}.json"


def stage_commands(paths: DemoPaths, profile: DemoProfile, seed: int) -> dict[str, list[str]]:
    """The command line of each data stage (also what the report prints)."""
    p = paths
    return {
        "synth": ["synth", "--size", profile.synth_size, "--seed", str(seed), "--out", str(p.synth)],
        "verbs": ["mine-verbs", "--narrations", str(p.synth / "narrations.json"), "--videos-split", "pretrain",
                  "--min-count", str(profile.verb_min_count), "--out", str(p.vocab)],
        "action_encoder": ["train-action-encoder", "--data", str(p.synth), "--out", str(p.action_encoder),
                           "--vocab", str(p.vocab), "--seed", str(seed), *profile.action_encoder],
        "object_classifier": ["train-object-classifier", "--data", str(p.synth), "--out", str(p.object_classifier),
                              "--seed", str(seed), *profile.object_classifier],
        "extract": ["extract", "--data", str(p.synth), "--store", str(p.store), "--action-encoder", str(p.action_encoder),
                    "--regions", "given", "--object-classifier", str(p.object_classifier)],
    }


def pretrain_overrides(paths: DemoPaths, profile: DemoProfile, seed: int) -> list[str]:
    return [
        f"data.store={paths.store}",
        f"data.narrations={paths.synth / 'narrations.json'}",
        f"data.splits={paths.synth / 'splits.json'}",
        "data.split=pretrain",
        f"train.seed={seed}",
        *profile.pretrain,
    ]


def run_demo(out: str | os.PathLike, quick: bool = False, seed: int = 0, profile: DemoProfile | None = None,
             log: Callable[[str], None] = print, tasks: Sequence[str] = TASK_NAMES, threads: int = 0) -> Path:
    """Run (or resume) the whole demo into ``out``; returns the report path.

    ``threads`` > 0 fixes torch's CPU threads for every stage (0: torch's default, all cores).
    """
    profile = profile or PROFILES["quick" if quick else "full"]
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
        profile = dataclasses.replace(profile, pretrain=[*profile.pretrain, f"train.num_threads={threads}"])
    paths = DemoPaths(Path(out))
    paths.root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(paths.root / "demo_settings.json", {"seed": seed, "profile": asdict(profile)})
    book = StageBook(paths.root, log)
    commands = stage_commands(paths, profile, seed)
    module_of = {"synth": "synth", "verbs": "mine_verbs", "action_encoder": "train_action_encoder",
                 "object_classifier": "train_object_classifier", "extract": "extract"}
    outputs = {
        "synth": lambda: (paths.synth / "meta.json").exists() and (paths.synth / "splits.json").exists(),
        "verbs": lambda: paths.vocab.exists(),
        "action_encoder": lambda: (paths.action_encoder / "eval.json").exists(),
        "object_classifier": lambda: paths.object_classifier.exists(),
        # extraction resumes by itself (written videos are skipped); done = it finished once
        "extract": lambda: (paths.store / "schema.json").exists() and book.seconds("extract") is not None,
    }
    for i, name in enumerate(STAGES[:5], start=1):
        book.run(i, name, outputs[name], lambda name=name: _run_command(module_of[name], commands[name][1:]))

    book.run(6, "pretrain", lambda: (paths.model / "config.json").exists(), lambda: _pretrain(paths, profile, seed))
    book.run(7, "tasks", lambda: all(paths.result_file(t, v).exists() for t in tasks for v in VARIANTS),
             lambda: run_tasks(paths, profile, seed, tasks, log))
    report_path = paths.root / "report.md"
    book.run(8, "report", lambda: False, lambda: write_report(paths, profile, seed, book, log, tasks))
    # the report stage's own seconds are known only now: rewrite it once with them
    write_report(paths, profile, seed, book, lambda _m: None, tasks)
    log(report_path.read_text(encoding="utf-8").split("\n## Settings", 1)[0])
    return report_path


def _pretrain(paths: DemoPaths, profile: DemoProfile, seed: int) -> None:
    from actbert.train.checkpoint import latest_checkpoint
    from actbert.train.config import load_pretrain_config
    from actbert.train.loop import train

    cfg = load_pretrain_config(profile.preset, pretrain_overrides(paths, profile, seed))
    resume = paths.pretrain.exists() and latest_checkpoint(paths.pretrain) is not None
    summary = train(cfg, paths.pretrain, resume=resume)
    if summary.get("interrupted") or not (paths.model / "config.json").exists():
        raise RuntimeError(f"demo: pretraining in {paths.pretrain} did not finish")


def run_tasks(paths: DemoPaths, profile: DemoProfile, seed: int, tasks: Sequence[str] = TASK_NAMES,
              log: Callable[[str], None] = print) -> None:
    """Every (task, variant) without a result file: fine-tune (if the task does) and evaluate."""
    from actbert.tasks import registry
    from actbert.tasks.common import Benchmark, fresh_model, load_model, seed_everything, write_results

    bench = Benchmark(paths.synth)
    assembler = registry.build_assembler(paths.store)
    for task in tasks:
        for variant in VARIANTS:
            target = paths.result_file(task, variant)
            if target.exists():
                continue
            settings = registry.make_settings(task, {**profile.tasks.get(task, {}), **_seed_field(task, seed)}, source=f"demo profile {profile.name}")
            if variant == "no_regions":
                settings = registry.without_regions(task, settings)
                if settings is None:
                    atomic_write_json(target, {"task": task, "variant": variant, "records": [], "not_applicable":
                                               f"{task} never uses region cues (same as the pretrained variant)"})
                    log(f"  {task} / {variant}: not applicable")
                    continue
            seed_everything(seed)
            model = fresh_model(paths.model, seed=seed) if variant == "no_pretraining" else load_model(paths.model)
            start = time.perf_counter()
            records = []
            if task in ZERO_SHOT_AND_FINETUNED:
                records += registry.evaluate(task, model, assembler, bench, settings, variant=variant, finetuned=False)
            tune_start = time.perf_counter()
            tuned = registry.finetune(task, model, assembler, bench, settings)
            tune_seconds = time.perf_counter() - tune_start
            records += registry.evaluate(task, tuned.model, assembler, bench, settings, variant=variant,
                                         finetuned=tuned.log is not None)
            for record in records:
                write_results(paths.results / task, record)
            summary = tuned.log.summary() if tuned.log is not None else None
            atomic_write_json(target, {"task": task, "variant": variant, "records": records, "finetune": summary,
                                       "seconds": round(time.perf_counter() - start, 1), "finetune_seconds": round(tune_seconds, 1)})
            primaries = ", ".join(f"{r['dataset']} {r['primary']}={_fmt(r['metrics'][r['primary']])}" for r in records)
            log(f"  {task} / {variant}: {primaries} ({time.perf_counter() - start:.0f} s)")


def _seed_field(task: str, seed: int) -> dict[str, int]:
    from actbert.tasks import registry

    return {"seed": seed} if any(f.name == "seed" for f in dataclasses.fields(registry.settings_class(task))) else {}


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


def _fmt(value: Any) -> str:
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
                cells.append(_fmt(values[variant]))
            a, b = values.get("pretrained"), values.get("no_pretraining")
            cells.append("n/a" if a is None or b is None else ("yes" if a > b else "no"))
            lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- plots


def _save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


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
        lines.append(f"| {task} | " + " | ".join(_fmt(s.get(v)) for v in VARIANTS) + " |")
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
        lines.append("## Plots")
        lines.append("")
        for title, rel in plots:
            lines.append(f"**{title}**")
            lines.append("")
            lines.append(f"![{title}]({rel})")
            lines.append("")
        lines.extend(example_text)
        lines.append("")

    lines.append("## Stages")
    lines.append("")
    lines.append("| stage | seconds | this run |")
    lines.append("| --- | --- | --- |")
    total = 0.0
    entries = book.entries if book is not None else (read_json(paths.root / "stages.json", "demo stages") if (paths.root / "stages.json").exists() else {})
    for name in STAGES:
        entry = entries.get(name)
        if entry is None:
            lines.append(f"| {name} | - | not run |")
            continue
        sec = entry.get("seconds")
        total += float(sec or 0.0)
        lines.append(f"| {name} | {_fmt(sec)} | {'skipped (output existed)' if entry.get('skipped_last_run') else 'ran'} |")
    lines.append(f"| **total** | {total:.1f} | |")
    lines.append("")
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
    for name in STAGES[:5]:
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
