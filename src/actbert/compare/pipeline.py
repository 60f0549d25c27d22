"""``actbert compare``: several model families on one benchmark, one budget, one set of features.

Stages (each is skipped when its output exists, so an interrupted run continues where it
stopped; ``OUT/stages.json`` keeps each stage's seconds):

1-5. the demo's data stages (``demo.DATA_STAGE_CALLS`` with ``demo.profiles.stage_arguments``):
     synth, verbs, action encoder, object classifier, extract -- once, shared by every model
6.   ``visual_vocab`` (only with VideoBERT): its hierarchical k-means vocabulary on the
     pretraining split of the shared store
7.   ``pretrain <run> seed<k>``: each family (and ActBERT ablation) with the same budget, through
     the demo's pretraining stage; then ``flops.json``: one training step counted with
     ``torch.utils.flop_counter.FlopCounterMode`` (forward + backward on a real batch) times the steps
8.   ``tasks <run> seed<k>``: the demo's task stage (``demo.run_tasks``) on that run, for the
     variants the report keeps (the others get a ``not_applicable`` result file first, so the
     demo's stage skips them)
     With ``jobs`` > 1, stages 7-8 run as units (a run's pretraining, then its tasks), that many
     at once in worker processes, each with ``threads`` torch threads (on a 2-core CPU: two
     one-thread workers)
9.   ``report``: ``OUT/report.md``, ``OUT/report.json``, ``OUT/report/*.png`` (always rebuilt)

Seeds: seed ``k`` pretrains with ``train.seed=k`` and fine-tunes / evaluates with seed ``k``; the
benchmark and its features are seed 0's for every seed (the test items stay the same, so models
and seeds are compared on the same items). Ablation rows run on the first ``ablation_seeds`` seeds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from actbert.compare.profiles import (
    FAMILIES,
    PROFILES,
    ComparePaths,
    CompareProfile,
    Row,
    RunPaths,
    rows,
    runs,
    with_steps,
)
from actbert.demo.pipeline import DATA_STAGE_CALLS, StageBook, pretrain_stage, run_tasks
from actbert.demo.profiles import DATA_STAGES, VARIANTS, DemoProfile, pretrain_overrides, stage_arguments
from actbert.errors import ActBertError
from actbert.tasks.common import TASK_NAMES
from actbert.utils.io import atomic_write_json

__all__ = ["CompareError", "CompareBook", "run_compare", "run_profile", "count_step_flops"]


class CompareError(ActBertError):
    """A comparison that cannot run as asked (unknown family, a changed setting on resume)."""


class CompareBook(StageBook):
    """The demo's stage book (``OUT/stages.json``) with a progress bar and the comparison's stage count."""

    def __init__(self, root: Path, log: Callable[[str], None], total: int, progress: bool = True):
        super().__init__(root, log)
        from tqdm import tqdm

        self.total = total
        self.index = 0
        self.bar = tqdm(total=total, desc="compare", unit="stage", disable=not progress, position=0)

    def stage(self, name: str, done: Callable[[], bool], work: Callable[[], Any]) -> None:
        self.index += 1
        start = time.perf_counter()
        if done():
            entry = self.entries.setdefault(name, {"seconds": None})
            entry["skipped_last_run"] = True
            self.log(f"[compare {self.index}/{self.total}] {name}: already done, skipped")
            self._save()
        else:
            self.log(f"[compare {self.index}/{self.total}] {name}: running")
            work()
            seconds = time.perf_counter() - start
            self.entries[name] = {"seconds": round(seconds, 1), "skipped_last_run": False}
            self._save()
            self.log(f"[compare {self.index}/{self.total}] {name}: done in {seconds:.1f} s")
        self.bar.update(1)

    def record(self, name: str, entry: dict[str, Any]) -> None:
        """A stage a worker process ran (``UnitBook``): keep its seconds, advance the bar."""
        self.index += 1
        if entry.get("skipped_last_run"):
            self.entries.setdefault(name, {"seconds": None})["skipped_last_run"] = True
            self.log(f"[compare {self.index}/{self.total}] {name}: already done, skipped")
        else:
            self.entries[name] = entry
            self.log(f"[compare {self.index}/{self.total}] {name}: done in {entry['seconds']:.1f} s (worker)")
        self._save()
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_profile(profile: CompareProfile, run: str, family: str, extra: list[str], paths: ComparePaths) -> DemoProfile:
    """The demo profile of one pretraining run: its family's preset, the shared budget, the run's overrides."""
    pretrain = [*profile.budget, *profile.family_overrides.get(family, [])]
    if family == "videobert":
        pretrain.append(f"model.visual_vocab={paths.visual_vocab}")
    return dataclasses.replace(profile.data, name=f"{profile.name}:{run}", preset=profile.preset(family),
                               pretrain=[*pretrain, *extra], tasks=profile.tasks)


def count_step_flops(demo_profile: DemoProfile, run_paths: RunPaths, seed: int) -> dict[str, Any]:
    """FLOPs of one training step (forward + backward, no optimiser) of the run's model on one real
    batch of its pretraining data, counted by ``torch.utils.flop_counter.FlopCounterMode``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from actbert.models.registry import create_model
    from actbert.train.config import load_pretrain_config
    from actbert.train.loop import build_pretrain_data

    cfg = load_pretrain_config(demo_profile.preset, pretrain_overrides(run_paths, demo_profile, seed))
    scratch = run_paths.root / "flops_scratch"
    data = build_pretrain_data(cfg, scratch)
    b = min(cfg.train.batch_size, len(data.dataset))
    batch = data.collator([data.dataset[i] for i in range(b)])
    torch.manual_seed(seed)
    model = create_model(data.model_config, heads=True, verbose=False).train()
    counter = FlopCounterMode(display=False)
    with counter:
        out = model(batch)
        out.loss.backward()
    counted = int(counter.get_total_flops())
    steps, batch_size = int(cfg.train.max_steps), int(cfg.train.batch_size)
    per_step = counted * batch_size // b  # the counted batch is smaller only when the corpus is
    return {"flops_per_step": per_step, "steps": steps, "batch_size": batch_size, "counted_batch": b, "counted_flops": counted,
            "total_flops": per_step * steps, "params": int(sum(p.numel() for p in model.parameters())),
            "how": "FlopCounterMode over one fp32 forward + backward of the run's first samples; x batch size / counted batch x steps"}


def _skip_unreported(run_paths: RunPaths, run: str, kept: Sequence[Row], seed: int, ablation_seeds: int, tasks: Sequence[str]) -> None:
    """Result files for the variants of this run the report does not use, so demo.run_tasks skips them."""
    for variant in VARIANTS:
        row = next((r for r in kept if r.run == run and r.variant == variant), None)
        if row is not None and not (row.ablation and seed >= ablation_seeds):
            continue
        why = "not a row of this comparison" if row is None else f"ablation rows run on the first {ablation_seeds} seed(s) only"
        for task in tasks:
            target = run_paths.result_file(task, variant)
            if not target.exists():
                atomic_write_json(target, {"task": task, "variant": variant, "records": [], "not_applicable": why, "skipped_by": "compare"})


def run_compare(out: str | Path, models: Sequence[str] = ("actbert",), size: str = "bench", seeds: int = 1,
                ablations: bool = True, ablation_seeds: int = 1, tasks: Sequence[str] = TASK_NAMES,
                profile: CompareProfile | None = None, log: Callable[[str], None] = print, progress: bool = True,
                threads: int = 0, jobs: int = 1, steps: int = 0) -> Path:
    """Run (or resume) a comparison into ``out``; returns the report path (module docstring).

    ``jobs`` > 1 runs that many (run, seed) units -- each its pretraining, then its tasks -- at once
    in worker processes (``_run_units``); ``threads`` is then each worker's torch thread count
    (0: the machine's cores divided by ``jobs``). ``steps`` > 0 replaces the profile's shared
    pretraining steps (``train.max_steps``); it is part of the profile a folder was run with.
    """
    from actbert.compare.report import write_report

    unknown = [m for m in models if m not in FAMILIES]
    if unknown:
        raise CompareError(f"--models: unknown family {unknown[0]!r} (known: {', '.join(FAMILIES)})")
    if seeds < 1 or ablation_seeds < 0:
        raise CompareError(f"--seeds: must be >= 1 (got {seeds}); --ablation-seeds >= 0 (got {ablation_seeds})")
    if jobs < 1:
        raise CompareError(f"--jobs: must be >= 1 (got {jobs})")
    if profile is None:
        if size not in PROFILES:
            raise CompareError(f"--size: no comparison profile {size!r} (known: {', '.join(PROFILES)})")
        profile = PROFILES[size]
    if steps < 0:
        raise CompareError(f"--steps: must be >= 1, or 0 for the profile's own (got {steps})")
    profile = with_steps(profile, steps)
    paths = ComparePaths(Path(out))
    paths.root.mkdir(parents=True, exist_ok=True)
    models = list(models)
    kept = rows(models, ablations)
    pretraining = runs(models, ablations)
    settings = {"models": models, "size": profile.name, "seeds": seeds, "ablations": ablations,
                "ablation_seeds": ablation_seeds, "tasks": list(tasks), "profile": dataclasses.asdict(profile)}
    settings_path = paths.root / "compare_settings.json"
    if settings_path.exists():
        before = json.loads(settings_path.read_text(encoding="utf-8"))
        if before.get("profile") != settings["profile"]:
            raise CompareError(f"{settings_path}: field 'profile': this folder was run with another profile; use a new --out")
    if jobs > 1 and threads == 0:
        threads = max(1, (os.cpu_count() or 1) // jobs)
    atomic_write_json(settings_path, {**settings, "threads": threads, "jobs": jobs})
    # after the check, so a folder may resume at another thread count: that changes the speed and,
    # through the order of CPU sums, the last bits of float results (not the worker count: tested)
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
        profile = dataclasses.replace(profile, budget=[*profile.budget, f"train.num_threads={threads}"])

    def seeds_of(run: str) -> int:
        return ablation_seeds if run not in models else seeds

    run_seeds = [(run, seed) for seed in range(seeds) for run in pretraining if seed < max(1, seeds_of(run))]
    total = len(DATA_STAGES) + ("videobert" in models) + 2 * len(run_seeds) + 1
    book = CompareBook(paths.root, log, total, progress)
    data = paths.data
    arguments = stage_arguments(data, profile.data, 0)
    outputs = {
        "synth": lambda: (data.synth / "meta.json").exists() and (data.synth / "splits.json").exists(),
        "verbs": lambda: data.vocab.exists(),
        "action_encoder": lambda: (data.action_encoder / "eval.json").exists(),
        "object_classifier": lambda: data.object_classifier.exists(),
        "extract": lambda: (data.store / "schema.json").exists() and book.seconds("extract") is not None,
    }
    try:
        for name in DATA_STAGES:
            book.stage(name, outputs[name], lambda name=name: DATA_STAGE_CALLS[name](log, **arguments[name]))
        if "videobert" in models:
            book.stage("visual_vocab", lambda: (paths.visual_vocab / "build_report.json").exists(),
                       lambda: _visual_vocab(profile, paths))
        units = []
        for run, seed in run_seeds:
            family, extra = pretraining[run]
            rp = paths.run(run, seed)
            _skip_unreported(rp, run, kept, seed, ablation_seeds, tasks)
            units.append(Unit(run, seed, run_profile(profile, run, family, extra, paths), rp, tuple(tasks)))
        _run_units(units, book, jobs, threads, log)
        report = paths.root / "report.md"
        book.stage("report", lambda: False, lambda: write_report(paths, log=log))
    finally:
        book.close()
    return report


@dataclass(frozen=True)
class Unit:
    """One (pretraining run, seed): its pretraining stage, then its task stage."""

    run: str
    seed: int
    profile: DemoProfile
    paths: RunPaths
    tasks: tuple[str, ...]

    @property
    def stages(self) -> tuple[str, str]:
        return f"pretrain {self.run} seed{self.seed}", f"tasks {self.run} seed{self.seed}"

    def done(self) -> tuple[bool, bool]:
        rp = self.paths
        pretrained = (rp.model / "config.json").exists() and (rp.root / "flops.json").exists()
        return pretrained, all(rp.result_file(t, v).exists() for t in self.tasks for v in VARIANTS)


def run_unit(unit: Unit, book: CompareBook | UnitBook, log: Callable[[str], None]) -> None:
    """A unit's two stages through ``book``: the comparison's own (one process) or a worker's (``jobs`` > 1)."""
    pretrain, tasks = unit.stages
    book.stage(pretrain, lambda: unit.done()[0], lambda: _pretrain_and_count(unit.profile, unit.paths, unit.seed))
    book.stage(tasks, lambda: unit.done()[1], lambda: run_tasks(unit.paths, unit.profile, unit.seed, unit.tasks, log))


class UnitBook:
    """A worker's stage book: it times the unit's stages and hands them back to the comparison's
    book, which alone writes ``OUT/stages.json`` (two workers never write the same file)."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.entries: dict[str, dict[str, Any]] = {}

    def stage(self, name: str, done: Callable[[], bool], work: Callable[[], Any]) -> None:
        if done():
            self.entries[name] = {"skipped_last_run": True}
            return
        self.log(f"{name}: running")
        start = time.perf_counter()
        work()
        self.entries[name] = {"seconds": round(time.perf_counter() - start, 1), "skipped_last_run": False}
        self.log(f"{name}: done in {self.entries[name]['seconds']:.1f} s")


def _unit_worker(unit: Unit, threads: int) -> dict[str, dict[str, Any]]:
    """In a worker process: the unit's stages, with everything it prints going to ``<run>/compare.log``
    (two training progress bars on one terminal would be unreadable)."""
    import sys

    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    unit.paths.root.mkdir(parents=True, exist_ok=True)
    with open(unit.paths.root / "compare.log", "a", encoding="utf-8", buffering=1) as stream:
        os.dup2(stream.fileno(), 1)
        os.dup2(stream.fileno(), 2)
        sys.stdout = sys.stderr = stream

        def log(message: str) -> None:
            print(message, flush=True)

        book = UnitBook(log)
        try:
            run_unit(unit, book, log)
        finally:  # the pool may hand this process the next unit: stop writing to this one's log
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    return book.entries


def _run_units(units: list[Unit], book: CompareBook, jobs: int, threads: int, log: Callable[[str], None]) -> None:
    """Every unit, one after the other (``jobs`` = 1) or ``jobs`` at a time in worker processes.

    A worker's stages enter ``OUT/stages.json`` when its unit ends. A unit that fails is reported
    and the others go on; the comparison then stops before the report, naming each failed unit
    (re-running resumes them).
    """
    if jobs == 1:
        for unit in units:
            run_unit(unit, book, log)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pending = [u for u in units if not all(u.done())]
    for unit in units:
        if unit not in pending:
            for name in unit.stages:
                book.stage(name, lambda: True, lambda: None)
    log(f"[compare] {len(pending)} unit(s) in {min(jobs, len(pending))} worker process(es), {threads} thread(s) each; "
        f"each writes its log to <run>/compare.log")
    failed: list[str] = []
    # spawn, not fork: the parent may already hold torch's thread pools
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_unit_worker, unit, threads): unit for unit in pending}
        for future in as_completed(futures):
            unit = futures[future]
            try:
                entries = future.result()
            except Exception as error:  # noqa: BLE001 -- reported, the other units go on
                failed.append(f"{unit.run} seed{unit.seed}: {type(error).__name__}: {error} (log: {unit.paths.root / 'compare.log'})")
                log(f"[compare] unit {unit.run} seed{unit.seed} failed: {failed[-1]}")
                continue
            for name in unit.stages:
                book.record(name, entries[name])
    if failed:
        raise CompareError(f"{len(failed)} unit(s) failed, the others finished (re-run to resume): " + "; ".join(failed))


def _pretrain_and_count(demo_profile: DemoProfile, run_paths: RunPaths, seed: int) -> None:
    if not (run_paths.model / "config.json").exists():
        run_paths.root.mkdir(parents=True, exist_ok=True)
        pretrain_stage(run_paths, demo_profile, seed)
    flops = count_step_flops(demo_profile, run_paths, seed)
    atomic_write_json(run_paths.root / "flops.json", {**flops, "preset": demo_profile.preset, "overrides": demo_profile.pretrain})


def _visual_vocab(profile: CompareProfile, paths: ComparePaths) -> None:
    from actbert.models.videobert.visual_vocab import build_visual_vocab
    from actbert.train.config import load_pretrain_config

    rp = paths.run("videobert", 0)
    demo_profile = run_profile(profile, "videobert", "videobert", [], paths)
    overrides = [o for o in pretrain_overrides(rp, demo_profile, 0) if not o.startswith("model.visual_vocab=")]
    build_visual_vocab(load_pretrain_config(demo_profile.preset, overrides), paths.visual_vocab, progress=False)
