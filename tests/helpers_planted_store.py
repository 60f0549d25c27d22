"""A feature store for a synthetic benchmark folder, with random but *planted* features (tests only).

Downstream-task tests need features for the benchmark's own video ids without running the
extraction (3D CNN + detector) in every test. ``write_planted_store(bench_root, out_dir)`` writes a
real :class:`actbert.data.store.FeatureStore` holding every video of ``ground_truth.json``:

* clips = the video's narration segments (``narrations.json``; ground-truth steps if it has none),
  as the extraction makes them;
* a clip's action feature = a fixed random embedding of the verb of the ground-truth step nearest
  its centre, plus noise; its action target = that verb, one-hot;
* every 1 FPS frame has 1..R regions: the first shows the object of the step at that time
  (fixed random object embedding + noise, class distribution peaked at the object), the others
  random objects;
* every second k (window centre k + 0.5, one per 1 FPS frame) has a per-second feature: the verb
  embedding of the step at that time plus an object embedding (in the action dimension) plus
  noise, drawn from a second generator so the arrays above are the ones they always were.

So a fine-tuned model can learn captions / answers from the features. Deterministic in ``seed``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from actbert.data.store import FeatureStore, FeatureStoreWriter, StoreSchema, VideoFeatures


def write_planted_store(bench_root: str | Path, out_dir: str | Path, action_dim: int = 64, region_dim: int = 64, max_regions: int = 5, noise: float = 0.3, seed: int = 0) -> FeatureStore:
    bench_root, out_dir = Path(bench_root), Path(out_dir)
    meta = json.loads((bench_root / "meta.json").read_text())
    truth = json.loads((bench_root / "ground_truth.json").read_text())
    narrations = json.loads((bench_root / "narrations.json").read_text())
    verbs, objects = list(meta["actions"]), list(meta["objects"])
    schema = StoreSchema(
        action_dim=action_dim,
        region_dim=region_dim,
        num_region_classes=len(objects),
        num_actions=len(verbs),
        region_classes=objects,
        action_vocab=verbs,
        max_regions=max_regions,
        second_features=True,
    )
    writer = FeatureStoreWriter(out_dir, schema)
    rng = np.random.default_rng(seed)
    second_rng = np.random.default_rng([seed, 1])
    verb_emb = rng.standard_normal((len(verbs), action_dim)).astype(np.float32)
    obj_emb = rng.standard_normal((len(objects), region_dim)).astype(np.float32)
    obj_action_emb = second_rng.standard_normal((len(objects), action_dim)).astype(np.float32)
    for video_id in sorted(truth):
        info = truth[video_id]
        steps = info["steps"]
        step_times = np.asarray([[s["start"], s["end"]] for s in steps], np.float64).reshape(-1, 2)
        step_verb = np.asarray([verbs.index(s["verb"]) for s in steps], np.int64)
        step_obj = np.asarray([objects.index(s["object"]) for s in steps], np.int64)
        narr = narrations.get(video_id)
        if narr and narr["start"]:
            clip_times = np.stack([np.asarray(narr["start"], np.float64), np.asarray(narr["end"], np.float64)], axis=1)
        else:
            clip_times = step_times.copy()

        def step_at(t: np.ndarray) -> np.ndarray:
            return np.argmin(np.abs(step_times.mean(axis=1)[None, :] - np.asarray(t)[:, None]), axis=1)

        clip_step = step_at(clip_times.mean(axis=1))
        C = len(clip_times)
        action_features = verb_emb[step_verb[clip_step]] + noise * rng.standard_normal((C, action_dim)).astype(np.float32)
        action_targets = np.zeros((C, len(verbs)), np.float32)
        action_targets[np.arange(C), step_verb[clip_step]] = 1.0

        frame_times = np.arange(0.0, max(float(info["duration"]), 1.0), 1.0)
        F, R = len(frame_times), max_regions
        counts = rng.integers(1, R + 1, size=F)
        labels = rng.integers(0, len(objects), size=(F, R))
        labels[:, 0] = step_obj[step_at(frame_times)]
        valid = np.arange(R)[None, :] < counts[:, None]
        region_features = obj_emb[labels] + noise * rng.standard_normal((F, R, region_dim)).astype(np.float32)
        logits = 0.5 * rng.standard_normal((F, R, len(objects))).astype(np.float32)
        np.put_along_axis(logits, labels[..., None], 4.0, axis=2)
        probs = np.exp(logits - logits.max(axis=2, keepdims=True))
        probs /= probs.sum(axis=2, keepdims=True)
        xy = rng.uniform(0.0, 0.6, size=(F, R, 2))
        wh = rng.uniform(0.1, 0.4, size=(F, R, 2))
        locations = np.concatenate([xy, xy + wh, wh[..., :1] * wh[..., 1:]], axis=2).astype(np.float32)
        boxes = (locations[..., :4] * np.array([meta["width"], meta["height"]] * 2, np.float32)).astype(np.float32)
        region_features[~valid], probs[~valid], locations[~valid], boxes[~valid] = 0.0, 0.0, 0.0, 0.0
        second_times = frame_times + 0.5
        second_step = step_at(second_times)
        second_features = (
            verb_emb[step_verb[second_step]] + obj_action_emb[step_obj[second_step]]
            + noise * second_rng.standard_normal((len(second_times), action_dim)).astype(np.float32)
        )
        writer.write(
            video_id,
            VideoFeatures(
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
            ),
        )
    return FeatureStore(out_dir)


def tiny_model(store: FeatureStore, tokenizer, seed: int = 0):
    """A random ``ActBertForPretraining`` with the tiny preset's model section, dims from ``store``."""
    import torch

    from actbert.models.actbert import replace_config
    from actbert.models.registry import create_model

    config = _tiny_model_config()
    s = store.schema
    config = replace_config(
        config,
        action_feature_dim=s.action_dim,
        region_feature_dim=s.region_dim,
        num_actions=s.num_actions,
        num_region_classes=s.num_region_classes,
        vocab_size=tokenizer.vocab_size,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    torch.manual_seed(seed)
    return create_model(config, heads=True, verbose=False).eval()


def _tiny_model_config():
    import yaml

    import actbert
    from actbert.config import from_dict
    from actbert.models.actbert import ActBertConfig

    path = Path(actbert.__file__).parent / "configs" / "tiny.yaml"
    section = yaml.safe_load(path.read_text())["model"]
    return from_dict(ActBertConfig, section, source=f"{path}:model")
