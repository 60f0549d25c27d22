"""``generate_benchmark(size, seed, out)``: the whole synthetic benchmark, deterministic from the seed.

Three kinds of video are planned, then rendered one by one (tqdm):
- ``howto*``: long narrated recipe videos, the pretraining corpus only (HowTo100M's role);
- ``recipe*``: long recipe videos split train/val/test, annotated for YouCook2, COIN and CrossTask;
- ``clip*``: short one- or two-step videos split train/val/test, annotated for MSR-VTT and LSMDC.
``splits.json["pretrain"]`` = howto ∪ train recipes ∪ train clips, so no val/test video is ever
seen in pretraining. Every video has narrations (feature extraction cuts clips at narration
segments). Each video uses its own random stream (seeded by (seed, purpose, index)), so one video's
content does not depend on how many others there are.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from actbert.utils.io import atomic_write_json

from . import annotations as ann
from . import narration as nar
from .render import HEIGHT, WIDTH, DISTRACTOR_SLOTS, WORK_CENTRE, Mp4Writer, Scene, StepScene, build_background, make_sprite, pick_codec, render
from .world import OBJECT_KINDS, OBJECTS_BY_NAME, ACTIONS, Task, World, build_world

FPS = 8
MIN_BOX_PIXELS = 16


@dataclass(frozen=True)
class SizeSpec:
    """How big a benchmark is. Split counts are (train, val, test)."""

    num_tasks: int
    task_steps: tuple[int, int]  # min, max steps per task
    howto_videos: int
    recipe_split: tuple[int, int, int]
    clip_split: tuple[int, int, int]
    step_seconds: tuple[float, float]
    gap_seconds: tuple[float, float]
    clip_captions: int  # human captions per clip (MSRVTT_data.json)


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec(4, (3, 4), 6, (4, 2, 2), (4, 2, 4), (3.0, 4.0), (0.5, 1.0), 2),
    "demo": SizeSpec(8, (4, 7), 80, (24, 8, 16), (40, 8, 24), (3.0, 6.0), (0.5, 1.5), 5),
    "full": SizeSpec(16, (3, 8), 1000, (200, 50, 100), (600, 100, 300), (3.0, 6.0), (0.5, 2.0), 10),
    # `actbert compare`: the demo's world, pretraining corpus and training splits, with test splits
    # sized for a 95% interval half-width <= 5 points on accuracy-type metrics (a proportion near
    # 50% over n items: 1.96 * sqrt(0.25 / n) <= 0.05 -> n >= 385): 400 test clips (MSR-VTT
    # retrieval, multiple choice; 800 fill-in-the-blank rows) and 80 test recipes (seed 0: 492
    # YouCook2 segments, 2,734 COIN frames in 80 videos; CrossTask 836 steps over all 136 recipes).
    # docs/compare.md has the widths reached.
    "bench": SizeSpec(8, (4, 7), 80, (48, 8, 80), (200, 8, 400), (3.0, 6.0), (0.5, 1.5), 5),
}


@dataclass
class VideoPlan:
    video_id: str
    kind: str  # howto | recipe | clip
    split: str  # pretrain | train | val | test
    index: int  # global index: seeds this video's random streams
    task: Task | None
    steps: list[tuple[str, str]] = field(default_factory=list)
    frames: list[tuple[int, int]] = field(default_factory=list)  # (first, end) frame of each step
    num_frames: int = 0

    @property
    def duration(self) -> float:
        return self.num_frames / FPS

    def step_spans(self) -> list[nar.StepSpan]:
        return [nar.StepSpan(v, o, a / FPS, b / FPS) for (v, o), (a, b) in zip(self.steps, self.frames)]


@dataclass
class BenchmarkInfo:
    """What ``generate_benchmark`` made."""

    root: Path
    size: str
    seed: int
    num_videos: int
    num_frames: int
    total_seconds: float
    split_counts: dict[str, int]
    seconds_elapsed: float

    def summary(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in self.split_counts.items())
        return (f"synth {self.size} seed {self.seed}: {self.num_videos} videos, {self.total_seconds / 60:.1f} min of video "
                f"({self.num_frames} frames) in {self.seconds_elapsed:.1f} s -> {self.root} [{splits}]")


def _rng(seed: int, purpose: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, purpose, index])


def _timeline(rng: np.random.Generator, steps: list[tuple[str, str]], spec: SizeSpec) -> tuple[list[tuple[int, int]], int]:
    """Frame ranges of the steps with background gaps before, between and after them."""
    def frames(lo: float, hi: float) -> int:
        return max(1, int(round(rng.uniform(lo, hi) * FPS)))

    t = frames(*spec.gap_seconds)
    spans = []
    for _ in steps:
        length = frames(*spec.step_seconds)
        spans.append((t, t + length))
        t += length + frames(*spec.gap_seconds)
    return spans, t


def _recipe_steps(rng: np.random.Generator, task: Task) -> list[tuple[str, str]]:
    """The task's steps in order; a video sometimes skips one (never below three)."""
    steps = list(task.steps)
    if len(steps) > 3 and rng.random() < 0.25:
        del steps[int(rng.integers(len(steps)))]
    return steps


def _stratified(rng: np.random.Generator, items: list[int], groups: list[str], counts: tuple[int, int, int]) -> dict[int, str]:
    """Assign split names so each group (task) is spread over test, val and train in turn."""
    by_group: dict[str, list[int]] = {}
    for item, group in zip(items, groups):
        by_group.setdefault(group, []).append(item)
    queues = [list(rng.permutation(v)) for _, v in sorted(by_group.items())]
    interleaved = []
    while any(queues):
        for q in queues:
            if q:
                interleaved.append(int(q.pop()))
    n_train, n_val, n_test = counts
    names = ["test"] * n_test + ["val"] * n_val + ["train"] * n_train
    return {item: names[i] for i, item in enumerate(interleaved)}


def plan_videos(world: World, spec: SizeSpec, seed: int) -> list[VideoPlan]:
    plans: list[VideoPlan] = []
    rng = _rng(seed, 1)
    for i in range(spec.howto_videos):
        task = world.tasks[int(rng.integers(len(world.tasks)))]
        plans.append(VideoPlan(f"howto{i + 1:04d}", "howto", "pretrain", len(plans), task))
    n_recipes = sum(spec.recipe_split)
    recipe_tasks = [world.tasks[i % len(world.tasks)] for i in range(n_recipes)]
    recipe_split = _stratified(rng, list(range(n_recipes)), [t.task_id for t in recipe_tasks], spec.recipe_split)
    for i, task in enumerate(recipe_tasks):
        plans.append(VideoPlan(f"recipe{i + 1:04d}", "recipe", recipe_split[i], len(plans), task))
    n_clips = sum(spec.clip_split)
    clip_names = ["test"] * spec.clip_split[2] + ["val"] * spec.clip_split[1] + ["train"] * spec.clip_split[0]
    clip_names = [clip_names[j] for j in rng.permutation(n_clips)]
    for i in range(n_clips):
        plans.append(VideoPlan(f"clip{i + 1:04d}", "clip", clip_names[i], len(plans), None))

    task_pairs = sorted({s for t in world.tasks for s in t.steps})
    all_pairs = [(a.name, o.name) for a in ACTIONS for o in OBJECT_KINDS]
    for plan in plans:
        prng = _rng(seed, 2, plan.index)
        if plan.task is not None:
            plan.steps = _recipe_steps(prng, plan.task)
        else:  # half of the clip steps come from recipes (seen in pretraining), half from anywhere
            n = int(prng.integers(1, 3))
            while len(plan.steps) < n:
                pool = task_pairs if prng.random() < 0.5 else all_pairs
                pair = pool[int(prng.integers(len(pool)))]
                if pair not in plan.steps:
                    plan.steps.append(pair)
        plan.frames, plan.num_frames = _timeline(prng, plan.steps, spec)
    return plans


def _render_video(plan: VideoPlan, seed: int, path: Path, codec: str) -> list[dict]:
    """Render and encode one video; return its objects.json entry (1 FPS boxes)."""
    rng = _rng(seed, 3, plan.index)
    n_distractors = int(rng.integers(2, 4))
    slots = rng.permutation(len(DISTRACTOR_SLOTS))[:n_distractors]
    kinds = [OBJECT_KINDS[int(k)] for k in rng.integers(0, len(OBJECT_KINDS), n_distractors)]
    background, boxes, labels = build_background(rng, int(rng.integers(1 << 16)), list(zip(kinds, (int(s) for s in slots))))
    steps = []
    for (verb, obj), (first, end) in zip(plan.steps, plan.frames):
        centre = (WORK_CENTRE[0] + float(rng.integers(-3, 4)), WORK_CENTRE[1] + float(rng.integers(-3, 4)))
        steps.append(StepScene(verb, make_sprite(OBJECTS_BY_NAME[obj], rng), first, end, centre, int(rng.choice([-1, 1]))))
    scene = Scene(background, boxes, labels, steps, plan.num_frames, FPS)
    writer = Mp4Writer(path, FPS, WIDTH, HEIGHT, codec)
    per_second = []
    try:
        for f, (frame, frame_boxes, frame_labels) in enumerate(render(scene, rng)):
            writer.write(frame)
            if f % FPS == 0:
                per_second.append({"time": f // FPS, "boxes": frame_boxes, "labels": frame_labels})
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return per_second


def generate_benchmark(size: str, seed: int, out: str | Path, progress: bool = True) -> BenchmarkInfo:
    """Write the synthetic benchmark of ``size`` (tiny | demo | bench | full) into ``out`` (layout: docs/architecture.md)."""
    if size not in SIZES:
        raise ValueError(f"--size: unknown benchmark size {size!r} (choose from {', '.join(SIZES)})")
    began = time.perf_counter()
    spec = SIZES[size]
    root = Path(out)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    world = build_world(_rng(seed, 0), spec.num_tasks, *spec.task_steps)
    plans = plan_videos(world, spec, seed)
    codec = pick_codec()

    objects, narrations, ground_truth = {}, {}, {}
    for plan in tqdm(plans, desc=f"synth {size}", unit="video", disable=not progress):
        objects[plan.video_id] = _render_video(plan, seed, root / "videos" / f"{plan.video_id}.mp4", codec)
        narrations[plan.video_id] = nar.narrate_video(_rng(seed, 4, plan.index), plan.step_spans(), plan.duration,
                                                      world.object_names)
        ground_truth[plan.video_id] = {
            "task": plan.task.task_id if plan.task else None,
            "duration": plan.duration,
            "steps": [{"verb": s.verb, "object": s.obj, "start": s.start, "end": s.end} for s in plan.step_spans()],
        }

    recipes, clips = _downstream(world, plans, seed, spec)
    ann.write_youcook2(root, recipes, world.tasks)
    ann.write_coin(root, recipes, world.tasks)
    ann.write_crosstask(root, recipes, world.tasks)
    ann.write_msrvtt(root, clips)
    ann.write_lsmdc(root, clips)

    splits = {name: [p.video_id for p in plans if p.split == name] for name in ("train", "val", "test")}
    splits = {"pretrain": [p.video_id for p in plans if p.split in ("pretrain", "train")], **splits}
    atomic_write_json(root / "narrations.json", narrations)
    atomic_write_json(root / "objects.json", objects, indent=None)
    atomic_write_json(root / "ground_truth.json", ground_truth)
    atomic_write_json(root / "splits.json", splits)

    num_frames = sum(p.num_frames for p in plans)
    counts = {kind: {s: sum(1 for p in plans if p.kind == kind and p.split == s) for s in ("pretrain", "train", "val", "test")}
              for kind in ("howto", "recipe", "clip")}
    meta = {
        "version": 1, "size": size, "seed": seed, "fps": FPS, "width": WIDTH, "height": HEIGHT,
        "objects": world.object_names, "actions": world.action_names,
        "tasks": {t.task_id: {"name": t.name, "steps": [list(s) for s in t.steps]} for t in world.tasks},
        "codec": codec, "num_videos": len(plans), "num_frames": num_frames, "total_seconds": num_frames / FPS,
        "videos_per_kind": counts, "split_sizes": {k: len(v) for k, v in splits.items()},
        "vocabulary": {
            "narration": {"verbs": {a.name: [f.base for f in a.narration_verbs] for a in world.actions},
                          "objects": {o.name: list(o.narration_words) for o in world.objects}},
            "caption": {"verbs": {a.name: [f.base for f in a.caption_verbs] for a in world.actions},
                        "objects": {o.name: list(o.caption_words) for o in world.objects}},
        },
    }
    atomic_write_json(root / "meta.json", meta)  # written last: its presence marks a complete benchmark
    return BenchmarkInfo(root, size, seed, len(plans), num_frames, num_frames / FPS,
                         {k: len(v) for k, v in splits.items()}, time.perf_counter() - began)


def _downstream(world: World, plans: list[VideoPlan], seed: int, spec: SizeSpec) -> tuple[list[ann.RecipeVideo], list[ann.ClipVideo]]:
    """Human captions, multiple-choice candidates and fill-in-the-blank rows for the downstream videos."""
    recipes, clips = [], []
    all_pairs = [(a.name, o.name) for a in ACTIONS for o in OBJECT_KINDS]
    for plan in plans:
        rng = _rng(seed, 5, plan.index)
        if plan.kind == "recipe":
            spans = plan.step_spans()
            recipes.append(ann.RecipeVideo(plan.video_id, plan.split, plan.task, plan.duration,
                                           [(s.verb, s.obj, s.start, s.end) for s in spans],
                                           [nar.recipe_caption(rng, s.verb, s.obj) for s in spans]))
        elif plan.kind == "clip":
            clip = ann.ClipVideo(plan.video_id, plan.split, plan.duration, list(plan.steps),
                                 [nar.clip_caption(rng, plan.steps) for _ in range(spec.clip_captions)])
            if plan.split == "test":
                clip.mc_candidates, clip.mc_answer = _multiple_choice(rng, plan.steps, all_pairs)
            clip.fib = [nar.fill_in_blank(rng, plan.steps, "noun"), nar.fill_in_blank(rng, plan.steps, "verb")]
            clips.append(clip)
    return recipes, clips


def _multiple_choice(rng: np.random.Generator, steps: list[tuple[str, str]], all_pairs: list[tuple[str, str]]) -> tuple[list[str], int]:
    """Five captions: the true one and four hard negatives (same verb other object, same object
    other verb, ...), so that neither the verb nor the object alone picks the answer."""
    verbs = sorted({v for v, _ in all_pairs})
    objs = sorted({o for _, o in all_pairs})
    k = int(rng.integers(len(steps)))  # the step the negatives alter
    verb, obj = steps[k]
    other_verbs = [v for v in verbs if v != verb]
    other_objs = [o for o in objs if o != obj]
    swaps = [
        (verb, other_objs[int(rng.integers(len(other_objs)))]),
        (other_verbs[int(rng.integers(len(other_verbs)))], obj),
    ]
    seen = {(verb, obj)} | set(swaps)
    while len(swaps) < 4:
        pair = all_pairs[int(rng.integers(len(all_pairs)))]
        if pair not in seen and (pair[0] == verb or pair[1] == obj or rng.random() < 0.3):
            swaps.append(pair)
            seen.add(pair)
    negatives = [steps[:k] + [pair] + steps[k + 1 :] for pair in swaps]
    candidates = [nar.clip_caption(rng, steps)] + [nar.clip_caption(rng, s) for s in negatives]
    order = [int(i) for i in rng.permutation(5)]
    return [candidates[i] for i in order], order.index(0)
