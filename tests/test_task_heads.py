"""Task heads kept with a fine-tuned model (tasks/heads.py) and the tasks' ``device`` setting."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from helpers_planted_store import tiny_model, write_planted_store

from actbert.config import ConfigError
from actbert.models.pretrained import CONFIG_NAME, WEIGHTS_NAME
from actbert.tasks import registry
from actbert.tasks.common import TaskError, resolve_device
from actbert.tasks.heads import FinetunedModel, base_model, load_heads, with_heads
from actbert.tasks.segmentation import FrameClassifier, LabelSpace
from actbert.text.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def model(synth_tiny, tmp_path_factory):
    store = write_planted_store(synth_tiny, tmp_path_factory.mktemp("heads_store") / "store")
    return tiny_model(store, load_tokenizer())


def _classifier(dim: int) -> FrameClassifier:
    torch.manual_seed(3)
    return FrameClassifier(dim, LabelSpace((None, "s1", "s2"), ("background", "cut", "pour")), dropout=0.2).eval()


def test_heads_round_trip_and_the_folder_is_still_the_plain_model(model, tmp_path):
    head = _classifier(int(model.unit_state_dim))
    tuned = with_heads(model, frame_classifier=head)
    assert base_model(tuned) is model and base_model(model) is model
    registry.save_finetuned("segmentation", tuned, tmp_path)
    info = json.loads((tmp_path / "heads.json").read_text())
    assert info["heads"]["frame_classifier"]["kind"] == "frame_classifier"
    assert info["heads"]["frame_classifier"]["config"]["names"] == ["background", "cut", "pour"]
    # the heads live beside, not inside, the model's own files: from_pretrained reads the folder unchanged
    assert set(load_file(str(tmp_path / "heads.safetensors"))) == {"frame_classifier.linear.weight", "frame_classifier.linear.bias"}
    assert (tmp_path / CONFIG_NAME).is_file() and (tmp_path / WEIGHTS_NAME).is_file()
    loaded = registry.load_for_evaluation("segmentation", tmp_path)
    assert isinstance(loaded, FinetunedModel)
    again = loaded.heads["frame_classifier"]
    assert again.labels == head.labels and again.dropout_p == 0.2 and not again.training
    x = torch.randn(2, 4, int(model.unit_state_dim))
    assert torch.equal(again(x), head(x))
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name


def test_saving_a_plain_model_removes_heads_of_an_earlier_run(model, tmp_path):
    registry.save_finetuned("segmentation", with_heads(model, frame_classifier=_classifier(int(model.unit_state_dim))), tmp_path)
    registry.save_finetuned("retrieval", model, tmp_path)
    assert not (tmp_path / "heads.json").exists() and load_heads(tmp_path) == {}
    assert not isinstance(registry.load_for_evaluation("segmentation", tmp_path), FinetunedModel)


def test_tasks_without_a_head_get_the_bare_model(model):
    class Probe:  # a task module without a HEAD
        pass

    tuned = with_heads(model, frame_classifier=_classifier(int(model.unit_state_dim)))
    settings = registry.make_settings("retrieval", {"device": "cpu"})
    assert registry._placed(Probe, tuned, settings) is model  # retrieval never sees the segmentation head
    Probe.HEAD = "frame_classifier"
    assert registry._placed(Probe, tuned, settings) is tuned


def test_missing_head_is_named(model):
    tuned = FinetunedModel(model, {})
    with pytest.raises(TaskError, match="no 'frame_classifier' head .*actbert finetune segmentation"):
        tuned.head("frame_classifier", "segmentation")


def test_device_setting():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    with pytest.raises(TaskError, match=r"device: expected auto \| cpu \| cuda \| cuda:N, got 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(TaskError, match="no CUDA device"):
            resolve_device("cuda:0")
    for task in ("retrieval", "captioning", "videoqa", "segmentation", "step_localization"):
        assert registry.make_settings(task, ["device=cpu"]).device == "cpu"


def test_a_bad_device_setting_stops_the_task_before_it_runs(model):
    class Probe:
        pass

    with pytest.raises(ConfigError, match="retrieval setting device: expected auto"):
        registry.make_settings("retrieval", {"device": "gpu0"})
    settings = registry.make_settings("retrieval")
    settings.device = "gpu0"  # set directly, past make_settings
    with pytest.raises(TaskError, match="device \\(task setting\\): expected"):
        registry._placed(Probe, model, settings)
