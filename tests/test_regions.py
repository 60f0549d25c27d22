"""Region features: detector route (randomly initialised Faster R-CNN) and given-box route."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from actbert.video.decode import DecodedFrames, frames_at_fps
from actbert.video.object_classifier import (
    ObjectClassifierError,
    load_object_classifier,
    save_object_classifier,
    train_object_classifier,
)
from actbert.video.regions import (
    DetectorRegions,
    DetectorWeightsError,
    FrameRegions,
    GivenBoxRegions,
    RegionInputError,
    box_locations,
    boxes_for_frames,
    load_detector,
    pack_frame,
    stack_frames,
)

torch.set_num_threads(1)

# ---------------------------------------------------------------------------------------------
# a minimal benchmark folder (videos/, objects.json, narrations.json, meta.json, splits.json),
# used when the shared ``synth_tiny`` fixture is not wanted: three object kinds with distinct looks

MINI_OBJECTS = {"tomato": ((220, 30, 30), (20, 20)), "lime": ((60, 200, 60), (16, 16)), "bowl": ((40, 70, 220), (30, 16))}


def make_mini_benchmark(root: Path, n_videos: int = 6, seconds: int = 5, fps: int = 8, seed: int = 0,
                        width: int = 128, height: int = 96) -> Path:
    rng = np.random.default_rng(seed)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    names = list(MINI_OBJECTS)
    objects, narrations, ids = {}, {}, []
    for v in range(n_videos):
        vid = f"mini{v:02d}"
        ids.append(vid)
        kinds = list(rng.choice(names, size=int(rng.integers(1, 4)), replace=True))
        starts = rng.uniform([0, 0], [width - 32, height - 32], size=(len(kinds), 2))
        velocity = rng.uniform(-6, 6, size=(len(kinds), 2))
        background = rng.integers(90, 160, size=(height, width, 3), dtype=np.uint8)
        entries = []
        with av.open(str(root / "videos" / f"{vid}.mp4"), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": "18", "preset": "ultrafast"}
            for k in range(seconds * fps):
                t = k / fps
                frame = background.copy()
                boxes = []
                for kind, start, vel in zip(kinds, starts, velocity):
                    colour, (w, h) = MINI_OBJECTS[kind]
                    x, y = np.clip(start + vel * t, [0, 0], [width - w, height - h]).astype(int)
                    frame[y : y + h, x : x + w] = colour
                    boxes.append([int(x), int(y), int(x + w), int(y + h)])
                if k % fps == 0:
                    entries.append({"time": t, "boxes": boxes, "labels": [str(n) for n in kinds]})
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        objects[vid] = entries
        narrations[vid] = {"start": [0.0, 2.5], "end": [2.0, 4.5],
                           "text": [f"now we cut the {kinds[0]}", f"then pour it into the {kinds[-1]}"]}
    (root / "objects.json").write_text(json.dumps(objects))
    (root / "narrations.json").write_text(json.dumps(narrations))
    (root / "meta.json").write_text(json.dumps({"version": 1, "fps": fps, "width": width, "height": height,
                                                "objects": names, "actions": ["cut", "pour"]}))
    split = max(1, n_videos // 3)
    (root / "splits.json").write_text(json.dumps({"pretrain": ids[split:], "train": ids[split:], "val": ids[:split], "test": ids[:split]}))
    return root


@pytest.fixture(scope="module")
def mini_benchmark(tmp_path_factory) -> Path:
    return make_mini_benchmark(tmp_path_factory.mktemp("mini"))


# ---------------------------------------------------------------------------------------------


def _check_frame_record(record: FrameRegions, width: int, height: int, feature_dim: int, num_classes: int) -> None:
    assert record.features.shape == (5, feature_dim) and record.features.dtype == np.float32
    assert record.boxes.shape == (5, 4) and record.locations.shape == (5, 5)
    assert record.class_probs.shape == (5, num_classes)
    n = record.count
    assert 0 <= n <= 5
    np.testing.assert_allclose(record.class_probs[:n].sum(-1), 1.0, atol=1e-5)
    assert (record.class_probs[:n] >= 0).all()
    boxes = record.boxes[:n]
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert boxes.min(initial=0) >= 0 and (boxes[:, [0, 2]] <= width + 1e-3).all() and (boxes[:, [1, 3]] <= height + 1e-3).all()
    loc = record.locations[:n]
    np.testing.assert_allclose(loc[:, 0] * width, boxes[:, 0], atol=1e-3)
    np.testing.assert_allclose(loc[:, 3] * height, boxes[:, 3], atol=1e-3)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (width * height)
    np.testing.assert_allclose(loc[:, 4], area, rtol=1e-5, atol=1e-7)
    # padding rows are zero
    for array in (record.features, record.boxes, record.locations, record.class_probs):
        assert not array[n:].any()


def test_locations_and_padding():
    boxes = np.array([[0, 0, 64, 48], [32, 24, 96, 72]], np.float32)
    loc = box_locations(boxes, 128, 96)
    np.testing.assert_allclose(loc[0], [0, 0, 0.5, 0.5, 0.25])
    np.testing.assert_allclose(loc[1], [0.25, 0.25, 0.75, 0.75, 0.25])
    record = pack_frame(np.ones((2, 8)), boxes, np.full((2, 3), 1 / 3), 128, 96)
    _check_frame_record(record, 128, 96, 8, 3)
    assert record.count == 2
    with pytest.raises(ValueError):
        pack_frame(np.ones((6, 8)), np.zeros((6, 4)), np.ones((6, 3)), 128, 96)
    stacked = stack_frames([record, record], 5, 8, 3)
    assert stacked["region_features"].shape == (2, 5, 8) and stacked["region_counts"].tolist() == [2, 2]
    assert stack_frames([], 5, 8, 3)["region_class_probs"].shape == (0, 5, 3)


def test_boxes_for_frames_matching_clipping_and_limit():
    entries = [
        {"time": 0.0, "boxes": [[-5, 2, 20, 30], [10, 10, 10.5, 40]], "labels": ["a", "thin"]},
        {"time": 1.0, "boxes": [[i, i, i + 10, i + 10] for i in range(7)], "labels": [f"o{i}" for i in range(7)]},
    ]
    out = boxes_for_frames(entries, np.array([0.0, 1.0, 2.0, 3.0]), width=128, height=96, max_regions=5)
    assert out[0][1] == ["a"] and out[0][0][0].tolist() == [0, 2, 20, 30]  # clipped; the 0.5 px box dropped
    assert len(out[1][1]) == 5 and out[1][1] == [f"o{i}" for i in range(5)]
    assert out[2][1] == [] and out[3][1] == []  # no entry within half a second
    with pytest.raises(RegionInputError, match="2 boxes but 1 labels"):
        boxes_for_frames([{"time": 0, "boxes": [[0, 0, 1, 1], [0, 0, 2, 2]], "labels": ["x"]}], np.zeros(1), 10, 10)
    with pytest.raises(RegionInputError, match="time"):
        boxes_for_frames([{"boxes": [], "labels": []}], np.zeros(1), 10, 10)


# ---------------------------------------------------------------------------------------------
# detector route


@pytest.fixture(scope="module")
def random_detector():
    torch.manual_seed(0)
    return load_detector(random_init=True)


def test_detector_records_random_weights(random_detector):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 96, 128, 3), dtype=np.uint8)
    regions = DetectorRegions(random_detector, score_threshold=0.0, min_size=96, max_size=160)
    records = regions("v", DecodedFrames(frames, np.arange(3.0), width=128, height=96))
    assert len(records) == 3 and regions.feature_dim == 1024 and len(regions.class_names) == 91
    for record in records:
        _check_frame_record(record, 128, 96, 1024, 91)
    assert sum(r.count for r in records) > 0  # threshold 0: an untrained detector still returns boxes
    assert all(r.count <= 5 for r in records)
    # frames decoded at a smaller size: boxes are mapped back to source pixels (here 2x)
    small = DecodedFrames(frames[:, ::2, ::2].copy(), np.arange(3.0), width=256, height=192)
    _check_frame_record(regions("v", small)[0], 256, 192, 1024, 91)
    # a threshold nothing passes: zero regions, all padding
    strict = DetectorRegions(random_detector, score_threshold=1.01, min_size=96, max_size=160)
    empty = strict("v", DecodedFrames(frames[:1], np.zeros(1), width=128, height=96))
    assert empty[0].count == 0 and not empty[0].features.any()


def test_detector_weights_from_file_and_errors(tmp_path, random_detector, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(DetectorWeightsError, match="never|Nothing is downloaded") as info:
        load_detector()
    assert "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth" in str(info.value) and "--detector-weights" in str(info.value)
    # a local safetensors / .pth state dict loads (weights_only); the result matches the source
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in random_detector.state_dict().items()}
    save_file(state, str(tmp_path / "det.safetensors"))
    loaded = load_detector(tmp_path / "det.safetensors")
    key = "roi_heads.box_predictor.cls_score.weight"
    assert torch.equal(loaded.state_dict()[key], state[key])
    torch.save({"model": state}, tmp_path / "det.pth")
    assert torch.equal(load_detector(tmp_path / "det.pth").state_dict()[key], state[key])
    # the torchvision cache location is used when no file is given
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth").write_bytes((tmp_path / "det.pth").read_bytes())
    assert torch.equal(load_detector().state_dict()[key], state[key])
    # wrong files
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DetectorWeightsError, match="junk.pth"):
        load_detector(tmp_path / "junk.pth")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(DetectorWeightsError, match="not fasterrcnn"):
        load_detector(tmp_path / "other.pth")


# ---------------------------------------------------------------------------------------------
# given-box route


@pytest.fixture(scope="module")
def trained_classifier(mini_benchmark):
    torch.manual_seed(0)
    return train_object_classifier(mini_benchmark, epochs=40, batch_size=64, progress=False)


def test_object_classifier_learns_held_out(trained_classifier):
    result = trained_classifier
    assert result.heldout_crops > 0 and result.train_crops > 0
    assert result.heldout_accuracy >= 0.9  # three visually distinct kinds; chance is 1/3


def test_given_route_records_and_save_load(tmp_path, mini_benchmark, trained_classifier):
    model = trained_classifier.model
    objects = json.loads((mini_benchmark / "objects.json").read_text())
    decoded = frames_at_fps(mini_benchmark / "videos" / "mini00.mp4", fps=1.0)
    regions = GivenBoxRegions(model, objects)
    records = regions("mini00", decoded)
    assert len(records) == len(decoded.times) == 5
    for record, entry in zip(records, objects["mini00"]):
        _check_frame_record(record, 128, 96, model.feature_dim, 3)
        assert record.count == len(entry["boxes"])
        np.testing.assert_allclose(record.boxes[: record.count], np.asarray(entry["boxes"], np.float32).reshape(-1, 4))
        # the class distribution names the given label (the classifier is accurate on these kinds)
        predicted = [regions.class_names[i] for i in record.class_probs[: record.count].argmax(-1)]
        assert predicted == entry["labels"]
    # save / load: same outputs
    path = save_object_classifier(model, tmp_path / "objects.safetensors")
    again = GivenBoxRegions(load_object_classifier(path), objects)("mini00", decoded)
    np.testing.assert_allclose(again[2].features, records[2].features, atol=1e-6)
    # a video with no entry: frames with zero regions
    assert all(r.count == 0 for r in regions("unknown", decoded))
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ObjectClassifierError, match="bad.safetensors"):
        load_object_classifier(tmp_path / "bad.safetensors")
    with pytest.raises(ObjectClassifierError, match="train-object-classifier"):
        load_object_classifier(tmp_path / "missing.safetensors")


def test_both_routes_same_record_layout(random_detector, mini_benchmark, trained_classifier):
    decoded = frames_at_fps(mini_benchmark / "videos" / "mini01.mp4", fps=1.0)
    objects = json.loads((mini_benchmark / "objects.json").read_text())
    given = GivenBoxRegions(trained_classifier.model, objects)("mini01", decoded)[0]
    detected = DetectorRegions(random_detector, score_threshold=0.0, min_size=96, max_size=160)("mini01", decoded)[0]
    for field in ("features", "boxes", "locations", "class_probs"):
        a, b = getattr(given, field), getattr(detected, field)
        assert a.dtype == b.dtype == np.float32 and a.shape[0] == b.shape[0] == 5
    assert given.boxes.shape == detected.boxes.shape and given.locations.shape == detected.locations.shape
