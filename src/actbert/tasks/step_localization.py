"""Action step localization on CrossTask (ActBERT 4.2.4, Table 3): zero-shot, recall.

The paper does not fine-tune: "We regard the step action label as the text description and
directly feed the text-video pair to ActBERT. We regard the prediction for the first token [CLS]
as the relevance score of this clip belonging to the label." Here:

* **Candidate moments.** CrossTask annotates and evaluates in seconds (Zhukov et al. score a
  per-second step assignment), so by default (``units="seconds"``) every 1 FPS frame of the store
  is a candidate moment ``t``. Its input is the window of frames ``t - context .. t + context``
  (clipped to the video) through ``ClipAssembler.frame_clips``: one unit per frame, i.e. the action
  feature of the store clip covering the frame and that frame's regions -- a one-second unit alone
  would carry a single action feature, the window gives the matching head a little temporal
  context, as a clip does in pretraining. The moment stands for the centre of its second,
  ``t + 0.5`` (clamped to the video's duration). ``units="clips"`` scores the store's own clips
  (narration segments; a clip's input is ``span_clips`` of its own span, moment = the clip
  centre) instead: fewer forward passes,
  coarser times.
* **Scores.** ``model.match_score`` of ``[CLS] step label [SEP]`` against each candidate
  (``[C, K]`` per video, ``C x K`` forward passes in batches, ``bf16`` autocast optional). A model
  whose pair scores factor (the ``factored_scores`` capability: VLM, HERO) gets the same matrix
  from ``C + K`` passes, one per candidate and one per step label (``factored``; false: every
  pair through ``pair_scores``).
  ``use_regions=False`` ("ActBERT w/o region cues") drops the regions from the units and runs the
  encoder without its region stream.
* **Recall** (``actbert.metrics.step_localization.crosstask_recall``, CrossTask's protocol): each
  step gets one moment, its highest-scoring candidate (ties never flatter); a step is a hit when
  that moment lies inside a ground-truth interval of the step; recall per task = hits / annotated
  steps over its videos, averaged over the primary tasks.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
from tqdm import tqdm

from actbert.config import AT_LEAST_ONE, Range
from actbert.data import readers
from actbert.metrics.step_localization import StepLocalizationVideo, crosstask_recall, video_step_hits
from actbert.data.clips import ClipAssembler
from actbert.data.clips import ClipsError
from actbert.models.interface import factorizes
from actbert.models.processing import Item, VideoRef
from actbert.tasks.common import Benchmark, TaskError, make_record
from actbert.tasks.scoring import factored_score_matrix as score_factored
from actbert.tasks.scoring import score_items

TASK = "step_localization"
PRIMARY = "recall"
UNITS = ("seconds", "clips")
REQUIRES = ("pair_scores",)


@dataclass
class StepLocalizationSettings:
    # numeric settings not named here must be >= 0 (checked by tasks.registry)
    RANGES: ClassVar[dict[str, Range]] = {"batch_size": AT_LEAST_ONE}
    batch_size: int = 64  # (candidate, step) pairs per forward pass
    dtype: str = "fp32"  # fp32 | bf16 (autocast)
    device: str = "auto"  # auto (a GPU if there is one) | cpu | cuda | cuda:N
    # a model whose pair scores factor (factored_scores: VLM, HERO): C + K passes, not C x K (module docstring)
    factored: bool = True
    use_regions: bool = True
    units: str = "seconds"  # seconds: 1 FPS candidates (CrossTask's unit) | clips: the store's clips
    context: int = 2  # seconds units: frames on each side of the candidate frame
    max_videos: int = 0  # 0 = every annotated video with features; else the first N


def candidates(assembler: ClipAssembler, video_id: str, settings: StepLocalizationSettings) -> tuple[list[VideoRef], np.ndarray]:
    """The candidate moments of a video: (the video part of each candidate [C], the time each stands for float64 ``[C]``)."""
    if settings.units == "seconds":
        if settings.context < 0:
            raise TaskError(f"step_localization: context must be >= 0, got {settings.context}")
        frame_times = assembler.frame_times(video_id)
        num = len(frame_times)
        half = min(settings.context, (assembler.max_units - 1) // 2)
        units = [VideoRef.of_frames(video_id, np.arange(max(0, f - half), min(num, f + half + 1))) for f in range(num)]
        times = np.minimum(frame_times + 0.5, assembler.duration(video_id))
        return units, times
    if settings.units == "clips":
        clip_times = assembler.clip_times(video_id)
        units = [VideoRef(video_id, float(s), float(e)) for s, e in clip_times]
        return units, clip_times.mean(axis=1)
    raise TaskError(f"step_localization: units must be one of {UNITS}, got {settings.units!r}")


def _factored(model: Any, settings: StepLocalizationSettings) -> bool:
    return settings.factored and factorizes(model)


def step_scores(model: Any, assembler: ClipAssembler, units: Sequence[VideoRef], steps: Sequence[str], settings: StepLocalizationSettings) -> np.ndarray:
    """``pair_scores`` of every (candidate, step label) pair: float32 ``[C, K]``; with ``factored``
    and a model with ``factored_scores``, from one pass per candidate and per step (the same scores)."""
    if _factored(model, settings) and units:
        texts = [Item(units[0], step) for step in steps]
        by_step = score_factored(model, assembler, texts, [Item(u) for u in units], settings.batch_size,
                                 settings.dtype, settings.use_regions, TASK, progress=False)
        return np.ascontiguousarray(by_step.T)
    items = [Item(u, step) for u in units for step in steps]
    scores = score_items(model, assembler, items, settings.batch_size, settings.dtype, settings.use_regions, TASK, progress=False)
    return scores.reshape(len(units), len(steps))


def evaluate(model: Any, assembler: ClipAssembler, bench: Benchmark, settings: StepLocalizationSettings, variant: str = "") -> list[dict]:
    """One record: CrossTask recall over the primary tasks' annotated videos (zero-shot)."""
    start_time = time.perf_counter()
    release = readers.read_crosstask(bench.require(bench.crosstask, "CrossTask"))
    items, skipped = [], [{"video_id": v.video_id, "error": "no annotation file"} for v in release.unannotated]
    for (task_id, video_id), annotation in release.annotations.items():
        if video_id in assembler:
            items.append((task_id, video_id, annotation))
        else:
            skipped.append({"video_id": video_id, "error": "not in the feature store"})
    if settings.max_videos and len(items) > settings.max_videos:
        items = items[: settings.max_videos]
    if not items:
        raise TaskError(f"{bench.crosstask}: no annotated video has features in {assembler.store_name}")

    videos, details = [], []
    for task_id, video_id, annotation in tqdm(items, desc="step localization", unit="video", leave=False):
        task = release.tasks[task_id]
        try:
            units, times = candidates(assembler, video_id, settings)
            scores = step_scores(model, assembler, units, task.steps, settings)
        except (TaskError, ClipsError) as exc:  # a bad record: skip, report, go on
            skipped.append({"video_id": video_id, "error": str(exc)})
            continue
        videos.append(StepLocalizationVideo(task_id, video_id, scores, times, annotation.steps))
        hits, steps = video_step_hits(videos[-1])  # per video: the items metrics.statistics resamples
        details.append({"task": task_id, "video_id": video_id, "predicted_times": times[scores.argmax(axis=0)].tolist(),
                        "hits": hits, "steps": steps})
    if not videos:
        raise TaskError(f"{bench.crosstask}: every annotated video failed ({skipped[-1]['error']})")
    result = crosstask_recall(videos)
    metrics = {name: result[name] for name in ("recall", "num_tasks", "num_videos", "num_steps", "num_hits")}
    unit_note = (
        f"1 FPS candidates, {settings.context} frame(s) of context each side" if settings.units == "seconds" else "the store's clips as candidates"
    )
    notes = [unit_note]
    if _factored(model, settings):
        notes.append("factored scores: one pass per candidate and per step label (score_text, score_video), the pair scores' own similarity")
    if settings.max_videos:
        notes.append(f"limited to the first {len(videos)} annotated videos (max_videos={settings.max_videos})")
    if skipped:
        notes.append(f"{len(skipped)} video(s) skipped")
    if not settings.use_regions:
        notes.append("without region cues")
    return [
        make_record(
            TASK,
            "crosstask",
            f"primary tasks, zero-shot, {settings.units}",
            metrics,
            PRIMARY,
            variant=variant,
            settings=asdict(settings),
            seconds=time.perf_counter() - start_time,
            notes=notes,
            extra={
                "per_task": result["per_task"],
                "task_names": {t: release.tasks[t].name for t in result["per_task"]},
                "videos": details,
                "skipped": skipped,
            },
        )
    ]
