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

Stages 1-5 call the library functions behind the corresponding commands (``DATA_STAGE_CALLS``)
with the profile's arguments (``profiles.stage_arguments``), so the report can show the equivalent
command lines. Each (task, variant) pair starts from the same seed: the variants differ only in
their weights / region cues.

**Which variant wins a task.** A task may report several datasets (retrieval: YouCook2 and
MSR-VTT; video QA: multiple choice and fill-in-the-blank); the comparison uses the mean of the
task's primary metrics (every primary metric is higher-is-better). A tie is not a win.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from actbert.demo.profiles import (
    DATA_STAGES,
    PROFILES,
    STAGES,
    VARIANTS,
    FINETUNED_DATASETS,
    ZERO_SHOT_AND_FINETUNED,
    DemoPaths,
    DemoProfile,
    pretrain_overrides,
    stage_arguments,
)
from actbert.demo.report import format_value, write_report
from actbert.tasks.common import TASK_NAMES
from actbert.utils.io import atomic_write_json, read_json

__all__ = ["StageBook", "DATA_STAGE_CALLS", "pretrain_stage", "run_demo", "run_tasks"]


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


# ----------------------------------------------------------------------------- the data stages


def _synth(log: Callable[[str], None], **arguments: Any) -> None:
    from actbert.data.synth import generate_benchmark

    log(generate_benchmark(**arguments).summary())


def _verbs(log: Callable[[str], None], **arguments: Any) -> None:
    from actbert.text.verbs import mine_action_vocabulary

    mine_action_vocabulary(**arguments, log=log)


def _action_encoder(log: Callable[[str], None], **arguments: Any) -> None:
    from actbert.video.action_training import train_action_encoder_on_benchmark

    train_action_encoder_on_benchmark(**arguments, log=log)


def _object_classifier(log: Callable[[str], None], **arguments: Any) -> None:
    import json

    from actbert.video.object_classifier import train_and_save_object_classifier

    out, facts = train_and_save_object_classifier(**arguments)
    log(f"object classifier -> {out}")
    log(json.dumps(facts))


def _extract(log: Callable[[str], None], **arguments: Any) -> None:
    from actbert.video.extract import extract_features

    report = extract_features(**arguments)
    log(report.summary())
    if report.failures_path is not None and (report.failed or report.narration_problems):
        log(f"failures: {report.failures_path}")


# data stage -> fn(log, **stage_arguments[stage]): the library call behind the stage's command
DATA_STAGE_CALLS: dict[str, Callable[..., None]] = {
    "synth": _synth,
    "verbs": _verbs,
    "action_encoder": _action_encoder,
    "object_classifier": _object_classifier,
    "extract": _extract,
}


# ----------------------------------------------------------------------------- the pipeline


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
    arguments = stage_arguments(paths, profile, seed)
    outputs = {
        "synth": lambda: (paths.synth / "meta.json").exists() and (paths.synth / "splits.json").exists(),
        "verbs": lambda: paths.vocab.exists(),
        "action_encoder": lambda: (paths.action_encoder / "eval.json").exists(),
        "object_classifier": lambda: paths.object_classifier.exists(),
        # extraction resumes by itself (written videos are skipped); done = it finished once
        "extract": lambda: (paths.store / "schema.json").exists() and book.seconds("extract") is not None,
    }
    for i, name in enumerate(DATA_STAGES, start=1):
        book.run(i, name, outputs[name], lambda name=name: DATA_STAGE_CALLS[name](log, **arguments[name]))

    book.run(6, "pretrain", lambda: (paths.model / "config.json").exists(), lambda: pretrain_stage(paths, profile, seed))
    book.run(7, "tasks", lambda: all(paths.result_file(t, v).exists() for t in tasks for v in VARIANTS),
             lambda: run_tasks(paths, profile, seed, tasks, log))
    report_path = paths.root / "report.md"
    book.run(8, "report", lambda: False, lambda: write_report(paths, profile, seed, book, log, tasks))
    # the report stage's own seconds are known only now: rewrite it once with them
    write_report(paths, profile, seed, book, lambda _m: None, tasks)
    log(report_path.read_text(encoding="utf-8").split("\n## Settings", 1)[0])
    return report_path


def pretrain_stage(paths: DemoPaths, profile: DemoProfile, seed: int) -> None:
    """The pretraining stage: the profile's preset on the run's store, resumed when a checkpoint is there."""
    from actbert.train.checkpoint import latest_checkpoint
    from actbert.train.config import load_pretrain_config
    from actbert.train.loop import train

    cfg = load_pretrain_config(profile.preset, pretrain_overrides(paths, profile, seed))
    resume = paths.pretrain.exists() and latest_checkpoint(paths.pretrain) is not None
    summary = train(cfg, paths.pretrain, resume=resume, overwrite=not resume)  # the demo owns its run folder
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
            tuned_records = registry.evaluate(task, tuned.model, assembler, bench, settings, variant=variant,
                                              finetuned=tuned.log is not None)
            if tuned.log is not None and task in FINETUNED_DATASETS:  # only the paper's fine-tuned rows
                tuned_records = [r for r in tuned_records if r["dataset"] in FINETUNED_DATASETS[task]]
            records += tuned_records
            for record in records:
                write_results(paths.results / task, record)
            summary = tuned.log.summary() if tuned.log is not None else None
            atomic_write_json(target, {"task": task, "variant": variant, "records": records, "finetune": summary,
                                       "seconds": round(time.perf_counter() - start, 1), "finetune_seconds": round(tune_seconds, 1)})
            primaries = ", ".join(f"{r['dataset']} {r['primary']}={format_value(r['metrics'][r['primary']])}" for r in records)
            log(f"  {task} / {variant}: {primaries} ({time.perf_counter() - start:.0f} s)")


def _seed_field(task: str, seed: int) -> dict[str, int]:
    from actbert.tasks import registry

    return {"seed": seed} if any(f.name == "seed" for f in dataclasses.fields(registry.settings_class(task))) else {}
