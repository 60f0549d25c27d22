"""A random-feature store + narrations with planted structure, for tests, benchmarks and `data.random`.

Real pretraining data needs video extraction; this writes a genuine feature store
(:class:`actbert.data.store.FeatureStoreWriter`) and a HowTo100M-style ``narrations.json`` whose
contents are random but *learnable*, so all four pretraining losses can fall:

* each clip is one step ``(verb, object)`` of its video; a video draws its steps from a small
  per-video pool of verbs and objects (so a different video's text is recognisably foreign --
  the matching task);
* its narration is a templated English sentence naming the verb and the object ("next we pour
  the bowl") -- MLM can recover the verb / object word from the visual streams;
* its action feature is a fixed random embedding of the verb plus noise, its action target the
  one-hot verb (a few clips get no verb: all-zero target, like narrations without a verb);
* every 1 FPS frame of the clip has 1..R regions: the first shows the step's object, the others
  objects of the video's pool (a scene keeps its objects); a region feature is the object's
  embedding plus noise and its class distribution a softmax peaked at that object;
* every second ``k`` (window centre ``k + 0.5``, one per 1 FPS frame) has a per-second global
  feature: the verb embedding of the clip it falls in (the clip's action feature without its noise)
  plus a fixed random embedding of the step's object, plus noise -- like an action-encoder window,
  it sees the motion and the object handled, so families that read only per-second features (VLM,
  HERO, VideoBERT) can recover both words of the narration.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same arguments give the same files.
The per-second features come from a second generator (``default_rng([seed, 1])``), so adding them
left every other array of a corpus exactly as it was; an existing corpus written before them is
filled in place by :func:`write_random_corpus` (other arrays untouched).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from actbert.data.store import FeatureStore, FeatureStoreWriter, StoreSchema, VideoFeatures, enable_second_features
from actbert.utils.io import atomic_write_json, read_json

VERBS = (
    "add cut pour mix stir fold wash peel place remove open close heat fry bake chop slice boil "
    "drain grate spread roll press turn screw drill sand paint glue clean wipe rinse dry cover "
    "fill empty lift push pull insert attach tighten loosen measure mark check hold shake whisk "
    "season taste serve plant water dig trim brush wrap tie pack knead flip grill melt crack pick"
).split()
OBJECTS = (
    "bowl pan pot knife spoon fork plate cup glass bottle board towel sponge oven stove sink egg "
    "onion garlic tomato potato carrot pepper butter flour sugar salt oil water milk cheese bread "
    "rice pasta meat chicken fish lemon apple banana screw nail hammer drill saw brush paint glue "
    "tape wood wall floor door window table chair shelf box bag lid jar can wheel tire bike chain "
    "seat pedal rope paper scissors ruler pencil cloth soap bucket hose pipe wire switch lamp plug "
    "plant soil pot shovel leaf flower seed fence roof ladder"
).split()
TEMPLATES = ("now {v} the {o}", "next we {v} the {o}", "then you {v} the {o}", "let's {v} the {o}", "{v} the {o} carefully")


@dataclass
class RandomCorpusSpec:
    num_videos: int = 32
    clips_per_video: int = 12
    action_dim: int = 64
    region_dim: int = 64
    num_actions: int = 16
    num_region_classes: int = 16
    max_regions: int = 5
    steps_per_video: int = 4  # size of a video's verb pool and object pool
    noise: float = 0.5
    seed: int = 0


def _names(base: tuple[str, ...] | list[str], count: int, prefix: str) -> list[str]:
    """``count`` distinct names: the real words first, then ``prefix0, prefix1, ...``."""
    unique = list(dict.fromkeys(base))
    return (unique + [f"{prefix}{i}" for i in range(max(0, count - len(unique)))])[:count]


def _schema(spec: RandomCorpusSpec) -> StoreSchema:
    return StoreSchema(
        action_dim=spec.action_dim,
        region_dim=spec.region_dim,
        num_region_classes=spec.num_region_classes,
        num_actions=spec.num_actions,
        region_classes=_names(OBJECTS, spec.num_region_classes, "object"),
        action_vocab=_names(VERBS, spec.num_actions, "verb"),
        max_regions=spec.max_regions,
        second_features=True,
    )


def _random_videos(spec: RandomCorpusSpec) -> Iterator[tuple[str, VideoFeatures, dict[str, list]]]:
    """(video_id, features, narration entry) of every video, in order; a pure function of ``spec``."""
    rng = np.random.default_rng(spec.seed)
    # the per-second features draw from their own generator, after everything else was drawn as before
    second_rng = np.random.default_rng([spec.seed, 1])
    verbs = _names(VERBS, spec.num_actions, "verb")
    objects = _names(OBJECTS, spec.num_region_classes, "object")
    verb_emb = rng.standard_normal((spec.num_actions, spec.action_dim)).astype(np.float32)
    obj_emb = rng.standard_normal((spec.num_region_classes, spec.region_dim)).astype(np.float32)
    obj_action_emb = second_rng.standard_normal((spec.num_region_classes, spec.action_dim)).astype(np.float32)
    pool = min(spec.steps_per_video, spec.num_actions, spec.num_region_classes)
    for v in range(spec.num_videos):
        video_id = f"random{v:05d}"
        C = spec.clips_per_video
        my_verbs = rng.choice(spec.num_actions, size=pool, replace=False)
        my_objects = rng.choice(spec.num_region_classes, size=pool, replace=False)
        step_verb = my_verbs[rng.integers(0, pool, size=C)]
        step_obj = my_objects[rng.integers(0, pool, size=C)]
        durations = rng.integers(3, 7, size=C).astype(np.float64)
        ends = np.cumsum(durations)
        clip_times = np.stack([ends - durations, ends], axis=1)
        texts = [TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(v=verbs[a], o=objects[o]) for a, o in zip(step_verb, step_obj)]
        has_verb = rng.random(C) > 0.1
        action_targets = np.zeros((C, spec.num_actions), np.float32)
        action_targets[np.arange(C)[has_verb], step_verb[has_verb]] = 1.0
        action_features = verb_emb[step_verb] + spec.noise * rng.standard_normal((C, spec.action_dim)).astype(np.float32)

        frame_times = np.arange(0.0, float(ends[-1]), 1.0)
        F, R = len(frame_times), spec.max_regions
        clip_of_frame = np.minimum(np.searchsorted(ends, frame_times, side="right"), C - 1)
        counts = rng.integers(1, R + 1, size=F)
        # the other regions are the video's own objects, as a real scene keeps its objects in view:
        # a masked region's class is then predictable from the visible regions and the narration
        labels = my_objects[rng.integers(0, pool, size=(F, R))]
        labels[:, 0] = step_obj[clip_of_frame]
        valid = np.arange(R)[None, :] < counts[:, None]
        region_features = obj_emb[labels] + spec.noise * rng.standard_normal((F, R, spec.region_dim)).astype(np.float32)
        logits = 0.5 * rng.standard_normal((F, R, spec.num_region_classes)).astype(np.float32)
        np.put_along_axis(logits, labels[..., None], 4.0, axis=2)
        probs = np.exp(logits - logits.max(axis=2, keepdims=True))
        probs /= probs.sum(axis=2, keepdims=True)
        xy = rng.uniform(0.0, 0.6, size=(F, R, 2))
        wh = rng.uniform(0.1, 0.4, size=(F, R, 2))
        locations = np.concatenate([xy, xy + wh, (wh[..., :1] * wh[..., 1:])], axis=2).astype(np.float32)
        boxes = (locations[..., :4] * np.array([320, 240, 320, 240], np.float32)).astype(np.float32)
        zero = ~valid
        region_features[zero], probs[zero], locations[zero], boxes[zero] = 0.0, 0.0, 0.0, 0.0

        # one second per 1 FPS frame: second k = [k, k + 1), its window centred at k + 0.5
        second_times = frame_times + 0.5
        clip_of_second = np.minimum(np.searchsorted(ends, second_times, side="right"), C - 1)
        second_features = (
            verb_emb[step_verb[clip_of_second]] + obj_action_emb[step_obj[clip_of_second]]
            + spec.noise * second_rng.standard_normal((len(second_times), spec.action_dim)).astype(np.float32)
        )
        features = VideoFeatures(
            clip_times=clip_times,
            action_features=action_features,
            action_targets=action_targets,
            frame_times=frame_times,
            region_features=region_features,
            region_boxes=boxes,
            region_locations=locations,
            region_class_probs=probs.astype(np.float32),
            region_counts=counts.astype(np.int64),
            second_times=second_times,
            second_features=second_features,
        )
        narration = {"start": clip_times[:, 0].tolist(), "end": clip_times[:, 1].tolist(), "text": texts}
        yield video_id, features, narration


def _fill_second_features(store_dir: Path, spec: RandomCorpusSpec) -> None:
    """Add the per-second features to a corpus written before them (other arrays untouched)."""
    store = FeatureStore(store_dir)
    if store.has_second_features and all(store.record_has_second_features(v) for v in store.video_ids()):
        return
    enable_second_features(store_dir)
    writer = FeatureStoreWriter(store_dir, _schema(spec))
    for video_id, features, _ in _random_videos(spec):
        if video_id in store and not store.record_has_second_features(video_id):
            writer.add_second_features(video_id, features.second_times, features.second_features)


def write_random_corpus(root: str | os.PathLike, spec: RandomCorpusSpec) -> tuple[Path, Path]:
    """Write ``root/store`` (feature store) and ``root/narrations.json``; returns their paths.

    Reuses an existing corpus written with the same spec (``root/spec.json``), adding the
    per-second features if it was written before them.
    """
    root = Path(root)
    store_dir, narr_path, spec_path = root / "store", root / "narrations.json", root / "spec.json"
    if spec_path.exists() and narr_path.exists() and read_json(spec_path) == asdict(spec):
        _fill_second_features(store_dir, spec)
        return store_dir, narr_path
    if spec_path.exists() or store_dir.exists():
        raise ValueError(f"{root}: holds a random corpus written with a different spec ({spec_path}); use another folder")
    if spec.num_videos < 1 or spec.clips_per_video < 1:
        raise ValueError(f"random corpus needs >= 1 video and clip, got {spec.num_videos} and {spec.clips_per_video}")
    writer = FeatureStoreWriter(store_dir, _schema(spec))
    narrations: dict[str, dict[str, list]] = {}
    for video_id, features, narration in _random_videos(spec):
        writer.write(video_id, features)
        narrations[video_id] = narration
    atomic_write_json(narr_path, narrations)
    atomic_write_json(spec_path, asdict(spec))
    return store_dir, narr_path
