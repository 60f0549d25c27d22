"""Any torchvision-layout Faster R-CNN weights file loads with its class list (the paper's detector is a
Visual Genome ResNet-101, not torchvision's COCO R50-FPN default)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from actbert.video.regions import (
    DetectorLayout,
    DetectorRegions,
    DetectorWeightsError,
    _build_detector,
    detector_layout,
    load_detector,
    read_class_names,
)

torch.set_num_threads(2)


def fake_state(layer3_blocks: int, classes: int, v2: bool = False) -> dict[str, torch.Tensor]:
    state = {f"backbone.body.layer3.{i}.conv1.weight": torch.zeros(1) for i in range(layer3_blocks)}
    state["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(classes, 4)
    state["roi_heads.box_head.0.0.weight" if v2 else "roi_heads.box_head.fc6.weight"] = torch.zeros(1)
    return state


def test_layout_read_from_the_state_dict():
    assert detector_layout(fake_state(6, 91)) == DetectorLayout(50, 1, 91)  # torchvision's COCO R50-FPN
    assert detector_layout(fake_state(23, 1601)) == DetectorLayout(101, 1, 1601)  # a Visual Genome R101 (1600 + bg)
    assert detector_layout(fake_state(6, 91, v2=True)) == DetectorLayout(50, 2, 91)
    with pytest.raises(DetectorWeightsError, match="not fasterrcnn"):
        detector_layout({"fc.weight": torch.zeros(2, 2)}, "other.pth")
    with pytest.raises(DetectorWeightsError, match="layer3 blocks"):
        detector_layout(fake_state(4, 91))
    # the ResNet-101 FPN detector it builds has the state dict such a file holds
    keys = _build_detector(DetectorLayout(101, 1, 7)).state_dict()
    assert "backbone.body.layer3.22.conv1.weight" in keys and "backbone.body.layer3.23.conv1.weight" not in keys
    assert keys["roi_heads.box_predictor.cls_score.weight"].shape == (7, 1024)


def test_other_weights_load_with_their_class_list(tmp_path):
    torch.manual_seed(0)
    source = _build_detector(DetectorLayout(50, 1, 4))
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(tmp_path / "kitchen.safetensors"))
    # 4 classes, no list: refused, naming the sidecar file it looked for
    with pytest.raises(DetectorWeightsError, match="4 classes needs its class list.*kitchen.classes"):
        load_detector(tmp_path / "kitchen.safetensors")
    names = ["__background__", "cup", "knife", "pan"]
    (tmp_path / "kitchen.classes.txt").write_text("\n".join(names) + "\n")
    model = load_detector(tmp_path / "kitchen.safetensors")
    assert model.class_names == names
    key = "roi_heads.box_predictor.cls_score.weight"
    assert torch.equal(model.state_dict()[key], state[key])
    regions = DetectorRegions(model, score_threshold=0.0, min_size=64, max_size=96)
    assert regions.class_names == names and regions.feature_dim == 1024
    frames = torch.rand(1, 3, 64, 80)
    det = regions.detect(frames)[0]
    assert det["class_probs"].shape[1] == 4
    np.testing.assert_allclose(det["class_probs"].sum(1).numpy(), 1.0, rtol=1e-5)
    # an explicit list (file or names) wins; a list of the wrong length is refused
    (tmp_path / "names.json").write_text('["bg", "a", "b", "c"]')
    assert read_class_names(tmp_path / "names.json") == ["bg", "a", "b", "c"]
    assert load_detector(tmp_path / "kitchen.safetensors", classes=tmp_path / "names.json").class_names[1] == "a"
    with pytest.raises(DetectorWeightsError, match="3 names, the detector 4 classes"):
        load_detector(tmp_path / "kitchen.safetensors", classes=["bg", "a", "b"])
