"""Feature extraction on Ray: one task per video, the driver the store's only writer.

    driver                                         Ray workers (one process per CPU or GPU slot)
    plan_extraction (shard, store, verbs)  --->    task(video): NetworkFiles(device) once per process,
    ray.wait: as each task completes       <---      compute_video / per_second_features -> arrays
    FeatureStoreWriter.write (atomic)                (nothing written by a worker)
    update_failures (merged, as the single-process path)

Why Ray tasks, not Ray Data. The unit of work is one whole video (decode, regions, clip and
per-second windows), whose cost grows with its length and whose output is one record; a task per
video is exactly the "many small tasks" that balance load, ``ray.wait`` gives the driver each result
as it completes (progress, writes, failures), and a task has ``max_retries`` for a worker that dies.
Ray Data would add a streaming executor, block batching and its own retry rules around the same
per-video function with nothing to gain for it. The networks are not shipped per task: each task
carries a small ``NetworkFiles`` (paths and options) and each worker process loads the networks once
and keeps them for the run's later tasks (``_networks``; ``max_calls=0`` so that a GPU worker is
kept, where Ray's default would start a fresh process, and load the networks again, per task).

Why the driver writes. Every record is written by one process, the driver, with the same atomic
``FeatureStoreWriter.write`` as the single-process path, once per task result: a task that was
retried after its worker died still yields one result, so every video is stored exactly once.
Workers need to read the videos and network files, not to write the store (no shared-filesystem
rename semantics for workers to rely on); the store's failures report is merged by the driver
under the same lock. The cost is the feature bytes travelling to the driver through Ray's object
store: about 15 MB for a 10-minute video with the detector's 1024-d regions, 91 classes and 512-d
per-second features in float32 (half in float16); 32 GPU workers finishing a video every 30 s each
send the driver some 16 MB/s to write.

Load balancing. Tasks are submitted largest video file first (a longest-first order shortens the
tail of the run) and at most ``2 x slots`` are in flight, so a free worker always has a next video
and results do not pile up in memory.

Failures. A bad input (undecodable file, bad boxes, NaN features, ...) is caught inside the task
and comes back as that video's failure: skipped and reported like the single-process path, never
retried (it would fail again). A worker process that dies (killed, out of memory, a segfault in a
decoder) is retried by Ray up to ``max_retries`` times; a video that still has no result is
reported with the Ray error (stage "extract" or "second_features") and the run goes on. Any other
exception raised in a task (one the per-video catch does not cover, e.g. MemoryError) is not
retried (``retry_exceptions=False``: it would most likely recur) and is reported as itself.

Bit for bit. A task runs ``compute_video`` / ``per_second_features``, the functions the
single-process path runs, on the same inputs; torch in a worker uses ``cpus_per_task`` threads,
so the features are the same bytes as a single process at that torch thread count (e.g.
``OMP_NUM_THREADS=1 actbert extract ...`` for the default of one). At other thread counts CPU
kernels sum in another order: measured on the tiny benchmark, 2 threads against 1 differ by up to
1.2e-7 in the action encoder's features.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from actbert.errors import ActBertError
from actbert.utils.io import is_disk_full
from actbert.video.extract import (
    ExtractionNetworks,
    ExtractReport,
    compute_video,
    disk_full_error,
    failure_entry,
    finish_extraction,
    per_second_features,
    plan_extraction,
)

__all__ = ["RayNotInstalledError", "VideoTask", "TaskResult", "run_task", "task_slots", "extract_videos_ray",
           "IN_FLIGHT_PER_SLOT"]

IN_FLIGHT_PER_SLOT = 2  # tasks submitted per worker slot: one running, one queued (module docstring)
DEFAULT_MAX_RETRIES = 3  # Ray's own default for tasks, stated so the report can name it


class RayNotInstalledError(ActBertError):
    """``--engine ray`` without the ``ray`` package."""


@dataclasses.dataclass
class VideoTask:
    """One video's work. kind "extract": a new record; "fill": the per-second features of a stored one."""

    kind: str
    video_id: str
    path: str
    clips: list[Any] = dataclasses.field(default_factory=list)
    verbs_of: dict[tuple[str, int], list[str]] = dataclasses.field(default_factory=dict)
    max_regions: int = 5
    with_seconds: bool = True
    narrations_path: str | None = None


@dataclasses.dataclass
class TaskResult:
    """What a task sends back: the arrays to store, or the failure; narration problems either way.

    features: ``VideoFeatures`` (kind "extract") or (second_times [S], second_features [S, Da])
    (kind "fill"); None when failure is set.
    """

    video_id: str
    kind: str
    features: Any = None
    failure: dict | None = None
    problems: list[dict] = dataclasses.field(default_factory=list)


# networks loaded in this worker process, keyed by run: a worker serves many tasks of one run
_networks: dict[str, ExtractionNetworks] = {}


def _load_networks(run_id: str, load: Callable[[str], ExtractionNetworks], device: str, threads: int) -> ExtractionNetworks:
    if run_id not in _networks:
        import torch

        _networks.clear()  # a previous run's networks
        torch.set_num_threads(max(1, threads))
        _networks[run_id] = load(device)
    return _networks[run_id]


def run_task(task: VideoTask, nets: ExtractionNetworks) -> TaskResult:
    """One video's features with the single-process path's functions; a bad input becomes its failure."""
    path = Path(task.path)
    problems: list[dict] = []
    try:
        if task.kind == "extract":
            features = compute_video(task.video_id, path, task.clips, task.verbs_of, nets.action_encoder, nets.vocab,
                                     nets.regions, task.max_regions, task.with_seconds, problems,
                                     narrations_path=task.narrations_path)
        else:
            features = per_second_features(path, nets.action_encoder)
    except (ValueError, OSError, RuntimeError) as exc:  # the single-process path's per-video errors
        stage = "extract" if task.kind == "extract" else "second_features"
        return TaskResult(task.video_id, task.kind, failure=failure_entry(task.video_id, path, stage, exc), problems=problems)
    return TaskResult(task.video_id, task.kind, features=features, problems=problems)


def _remote_task(run_id: str, load: Callable[[str], ExtractionNetworks], gpus: float, threads: int,
                 task: VideoTask) -> TaskResult:
    """The Ray task body (module level, so workers import it rather than unpickle a closure)."""
    return run_task(task, _load_networks(run_id, load, "cuda" if gpus > 0 else "cpu", threads))


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise RayNotInstalledError(
            "extract --engine ray: the 'ray' package is not installed (pip install 'actbert[ray]')") from exc
    return ray


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def _ray_error(exc: BaseException, max_retries: int) -> str:
    """One line for a task Ray could not complete: the task's own exception (not retried: an error
    the per-video catch does not cover, e.g. MemoryError), or the lost worker after its retries."""
    cause = getattr(exc, "cause", None)  # RayTaskError: the exception raised inside the task
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {_first_line(cause)}"
    return f"{type(exc).__name__}: {_first_line(exc)} (after {max_retries} retries)"


def extract_videos_ray(
    videos_dir: str | os.PathLike,
    store_root: str | os.PathLike,
    networks: Callable[[str], ExtractionNetworks],
    narrations_path: str | os.PathLike | None = None,
    verb_miner=None,
    shard: tuple[int, int] = (0, 1),
    dtype: str = "float32",
    max_regions: int = 5,
    video_ids: Sequence[str] | None = None,
    progress: bool = True,
    on_video: Callable[[str, str], None] | None = None,
    second_features: bool = True,
    fill_only: bool = False,
    address: str | None = None,
    workers: int | None = None,
    cpus_per_task: int = 1,
    gpus_per_task: float | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    init_kwargs: Mapping[str, Any] | None = None,
) -> ExtractReport:
    """``extract_videos`` with one Ray task per video (module docstring); the same report and store.

    networks(device) -> ExtractionNetworks: a picklable loader (``NetworkFiles``), called once on
    the driver ("cpu": the store schema and the verb vocabulary) and once per worker process.
    address: a Ray cluster ("auto", "ray://host:10001", ...); None: the running Ray of this process,
    else a new local one with ``workers x cpus_per_task`` CPUs (all cores when workers is None).
    workers: tasks at once (default: the cluster's CPU or GPU slots). cpus_per_task: CPUs a task
    asks for and its torch threads. gpus_per_task: GPUs per task
    (None: 1 when the cluster has GPUs, else 0; fractions share a GPU). max_retries: Ray's retries of a
    task whose worker process died. init_kwargs: extra ``ray.init`` arguments for a new local Ray.
    """
    from tqdm import tqdm

    ray = _import_ray()
    if workers is not None and workers < 1:
        raise ActBertError(f"extract: field 'workers' is {workers}; need at least 1")
    local = networks("cpu")
    plan = plan_extraction(videos_dir, store_root, local.action_encoder, local.vocab, local.regions,
                           narrations_path=narrations_path, verb_miner=verb_miner, shard=shard, dtype=dtype,
                           max_regions=max_regions, video_ids=video_ids, second_features=second_features,
                           fill_only=fill_only)
    del local
    verbs_by_video: dict[str, dict[tuple[str, int], list[str]]] = {}
    for key, verbs in plan.verbs_of.items():
        verbs_by_video.setdefault(key[0], {})[key] = verbs
    tasks = [VideoTask("extract", v, str(plan.videos[v]), plan.clips_by_video.get(v, []), verbs_by_video.get(v, {}),
                       max_regions, plan.with_seconds, str(narrations_path) if narrations_path else None)
             for v in plan.todo]
    tasks += [VideoTask("fill", v, str(plan.videos[v])) for v in plan.to_fill]
    if not tasks:
        return finish_extraction(plan, [], [], [], [])

    started = False
    if not ray.is_initialized():
        options = dict(include_dashboard=False, log_to_driver=True, **(init_kwargs or {}))
        if address is None and workers is not None:
            options.setdefault("num_cpus", int(max(1, round(workers * cpus_per_task))))
        ray.init(address=address, **options)
        started = True
    try:
        return _run(ray, plan, tasks, networks, workers, cpus_per_task, gpus_per_task, max_retries, progress, on_video, tqdm)
    finally:
        if started:
            ray.shutdown()


def task_slots(resources: Mapping[str, float], workers: int | None, cpus_per_task: int,
               gpus_per_task: float | None) -> tuple[int, float]:
    """(tasks at once, GPUs per task) on a cluster with ``resources`` (``ray.cluster_resources()``).

    GPUs per task: as given, else 1 when the cluster advertises GPUs and 0 otherwise (a task asking
    for a GPU the cluster lacks would never be scheduled). Tasks at once: as given, else what the
    GPUs (GPU tasks) or the CPUs hold.
    """
    if gpus_per_task is None:
        gpus_per_task = 1.0 if resources.get("GPU", 0) > 0 else 0.0
    if gpus_per_task < 0 or cpus_per_task < 1:
        raise ActBertError(f"extract: fields 'gpus_per_task' / 'cpus_per_task' are {gpus_per_task} / {cpus_per_task}; "
                           "need >= 0 / >= 1")
    if workers is None:
        slots = resources.get("GPU", 0) / gpus_per_task if gpus_per_task > 0 else resources.get("CPU", 1) / cpus_per_task
        workers = max(1, int(slots))
    return workers, float(gpus_per_task)


def _run(ray, plan, tasks, networks, workers, cpus_per_task, gpus_per_task, max_retries, progress, on_video, tqdm):
    workers, gpus_per_task = task_slots(ray.cluster_resources(), workers, cpus_per_task, gpus_per_task)
    remote = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_calls=0, max_retries=max_retries,
                        retry_exceptions=False)(_remote_task)
    run_id = uuid.uuid4().hex
    load_ref = ray.put(networks)
    threads = max(1, int(cpus_per_task))
    # longest first: file size as the cheap proxy of a video's length (module docstring)
    queue = collections.deque(sorted(tasks, key=lambda t: -os.path.getsize(t.path) if os.path.exists(t.path) else 0))
    order = {(t.kind, t.video_id): i for i, t in enumerate(tasks)}
    pending: dict[Any, VideoTask] = {}
    problems: dict[str, list[dict]] = {}  # narration problems found by each task (clips past the video's end)
    written, failed, filled, without_clips = [], [], [], []
    writer = plan.writer
    bar = tqdm(total=len(tasks), desc=f"extract shard {plan.shard[0]}/{plan.shard[1]} (ray, {workers} workers)",
               unit="video", disable=not progress, file=sys.stderr)

    def submit() -> None:
        while queue and len(pending) < workers * IN_FLIGHT_PER_SLOT:
            task = queue.popleft()
            pending[remote.remote(run_id, load_ref, gpus_per_task, threads, task)] = task

    def done_with(task: VideoTask, status: str, failure: dict | None = None) -> None:
        if failure is not None:
            failed.append(failure)
        bar.update(1)
        if on_video:
            on_video(task.video_id, status)

    def all_problems() -> list[dict]:
        """The tasks' narration problems in the single-process path's order (after the plan's)."""
        return [p for t in tasks if t.kind == "extract" for p in problems.get(t.video_id, [])]

    try:
        submit()
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(ref)
            stage = "extract" if task.kind == "extract" else "second_features"
            try:
                result: TaskResult = ray.get(ref)
            except ray.exceptions.RayError as exc:  # the worker died max_retries + 1 times, or Ray failed the task
                done_with(task, "failed", {"video_id": task.video_id, "file": task.path, "stage": stage,
                                                "error": _ray_error(exc, max_retries)})
                submit()
                continue
            problems[task.video_id] = result.problems
            submit()  # the next video starts while this one is written
            if result.failure is not None:
                done_with(task, "failed", result.failure)
                continue
            try:
                if task.kind == "extract":
                    writer.write(task.video_id, result.features)
                else:
                    writer.add_second_features(task.video_id, *result.features)
            except (ValueError, OSError, RuntimeError) as exc:
                if is_disk_full(exc):
                    for other in pending:
                        ray.cancel(other)
                    plan.narration_problems.extend(all_problems())
                    raise disk_full_error(plan, exc, task.video_id, failed, written, filled) from exc
                done_with(task, "failed", failure_entry(task.video_id, task.path, stage, exc))
                continue
            if task.kind == "fill":
                filled.append(task.video_id)
            else:
                written.append(task.video_id)
                if not result.features.num_clips:
                    without_clips.append(task.video_id)
            del result  # the record is on disk: its arrays may go
            done_with(task, "filled" if task.kind == "fill" else "written")
    finally:
        bar.close()

    # the report lists videos in the single-process path's order (sorted ids, new videos first)
    def by_plan(ids: list[str], kind: str) -> list[str]:
        return sorted(ids, key=lambda v: order[(kind, v)])

    failed.sort(key=lambda f: order[("extract" if f["stage"] == "extract" else "fill", f["video_id"])])
    plan.narration_problems.extend(all_problems())
    return finish_extraction(plan, by_plan(written, "extract"), failed, by_plan(without_clips, "extract"),
                             by_plan(filled, "fill"))
