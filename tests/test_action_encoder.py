"""Action encoder: torchvision video ResNets, init weights, soft-target loss, training, save/load."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torchvision.models.video import r3d_18

from actbert.text.verbs import ActionVocabulary, VerbMiner, read_narrations
from actbert.video.action_dataset import benchmark_video_splits, build_action_clips
from actbert.video.action_encoder import (
    ActionEncoderError,
    ActionTrainConfig,
    NarrowVideoResNet,
    build_action_encoder,
    clips_to_tensor,
    evaluate_action_predictions,
    load_action_encoder,
    load_init_weights,
    pooled_features,
    soft_target_cross_entropy,
    train_action_encoder,
)

torch.set_num_threads(1)


@pytest.mark.parametrize("arch, feature_dim", [("r3d_18", 512), ("r2plus1d_18", 512), ("narrow", 128)])
def test_architectures_features_and_logits(arch, feature_dim):
    torch.manual_seed(0)
    model = build_action_encoder(arch, num_classes=5).eval()
    assert model.arch == arch and model.feature_dim == feature_dim and model.init_report is None
    video = torch.randn(2, 3, 4, 32, 32)  # [N, 3, T, H, W]
    with torch.no_grad():
        logits = model(video)
        features = pooled_features(model, video)
    assert logits.shape == (2, 5)
    assert features.shape == (2, feature_dim)
    assert torch.isfinite(features).all() and (features >= 0).all()  # pooled after a ReLU
    # the feature is exactly what the classifier sees
    torch.testing.assert_close(model.fc(features), logits)


def test_narrow_keeps_torchvision_parameter_names():
    narrow = build_action_encoder("narrow", 7).state_dict()
    reference = r3d_18(weights=None, num_classes=7).state_dict()
    assert set(narrow) == set(reference)
    assert narrow["stem.0.weight"].shape == (16, 3, 3, 7, 7)
    assert narrow["fc.weight"].shape == (7, 128)


def test_unknown_architecture_and_bad_class_count():
    with pytest.raises(ValueError, match="resnet50"):
        build_action_encoder("resnet50", 5)
    with pytest.raises(ValueError, match="num_classes"):
        build_action_encoder("narrow", 0)


# ---------------------------------------------------------------------------------------------
# init weights (a "Kinetics" checkpoint of the same architecture, 400 classes)


@pytest.fixture(scope="module")
def kinetics_like() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {k: v.clone() for k, v in NarrowVideoResNet(400).state_dict().items()}


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_init_weights_load_all_but_classifier(tmp_path, kinetics_like, suffix):
    path = tmp_path / f"kinetics{suffix}"
    if suffix == ".safetensors":
        save_file(kinetics_like, str(path))
    else:  # a plain tensor state dict: readable with weights_only=True, keys may carry DDP's "module."
        torch.save({f"module.{k}": v for k, v in kinetics_like.items()}, str(path))
    model = build_action_encoder("narrow", 6, init_weights=path)
    report = model.init_report
    assert report.dropped_classifier == ["fc.bias", "fc.weight"]
    assert report.missing == [] and report.unexpected == []
    own = model.state_dict()
    for key, value in kinetics_like.items():
        if key.startswith("fc."):
            continue
        torch.testing.assert_close(own[key], value, msg=key)
    assert own["fc.weight"].shape == (6, 128)  # a fresh verb classifier
    assert "replaced classifier" in report.summary()


def test_init_weights_with_wrong_keys_or_shapes_are_refused(tmp_path, kinetics_like):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"backbone.conv1.weight": torch.zeros(8, 3, 3, 3), "head.weight": torch.zeros(2, 8)}, str(foreign))
    with pytest.raises(ActionEncoderError, match=r"foreign\.safetensors.*no parameter name"):
        build_action_encoder("narrow", 4, init_weights=foreign)

    narrow_file = tmp_path / "narrow.safetensors"
    save_file(kinetics_like, str(narrow_file))
    with pytest.raises(ActionEncoderError, match=r"narrow\.safetensors: parameter .*has shape .*another architecture"):
        load_init_weights(build_action_encoder("r3d_18", 4), narrow_file)

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ActionEncoderError, match="broken.safetensors"):
        build_action_encoder("narrow", 4, init_weights=broken)

    with pytest.raises(ActionEncoderError, match="not found"):
        build_action_encoder("narrow", 4, init_weights=tmp_path / "missing.pth")


class _Hostile:
    """Unpickling this would create a marker file: loading must refuse it, not run it."""

    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_only_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    hostile = _Hostile()
    hostile.marker = str(marker)
    path = tmp_path / "kinetics.pth"
    path.write_bytes(pickle.dumps({"stem.0.weight": hostile}, protocol=2))
    with pytest.raises(ActionEncoderError, match=r"kinetics\.pth.*weights_only"):
        build_action_encoder("narrow", 4, init_weights=path)
    assert not marker.exists()

    # a torch file holding something other than tensors
    odd = tmp_path / "odd.pt"
    torch.save({"stem.0.weight": [1, 2, 3]}, str(odd))
    with pytest.raises(ActionEncoderError, match=r"odd\.pt"):
        build_action_encoder("narrow", 4, init_weights=odd)


# ---------------------------------------------------------------------------------------------
# loss


def test_soft_target_cross_entropy_hand_computed():
    vocab = ActionVocabulary(["cut", "pour", "stir"])
    targets = torch.from_numpy(vocab.targets_many([["stir", "cut"], ["pour", "unknown"]]))
    np.testing.assert_allclose(targets.numpy(), [[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]])
    # row 0: softmax([0, 0, ln 2]) = [1/4, 1/4, 1/2] -> -(0.5 ln 1/4 + 0.5 ln 1/2) = 1.5 ln 2
    # row 1: softmax([1, 1, 1]) = 1/3 each           -> ln 3
    logits = torch.tensor([[0.0, 0.0, math.log(2.0)], [1.0, 1.0, 1.0]], requires_grad=True)
    loss = soft_target_cross_entropy(logits, targets)
    assert loss.item() == pytest.approx((1.5 * math.log(2.0) + math.log(3.0)) / 2, rel=1e-6)
    loss.backward()
    # d loss / d logits = (softmax - target) / N
    expected = torch.tensor([[0.25 - 0.5, 0.25, 0.5 - 0.5], [1 / 3, 1 / 3 - 1, 1 / 3]]) / 2
    torch.testing.assert_close(logits.grad, expected)
    # a one-hot target gives the ordinary cross-entropy
    hard = torch.tensor([[0.0, 1.0, 0.0]])
    assert soft_target_cross_entropy(logits[:1], hard).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits[:1], torch.tensor([1])).item())


def test_clips_to_tensor_layout_and_normalisation():
    clips = np.zeros((2, 3, 4, 5, 3), np.uint8)
    clips[..., 0] = 255
    video = clips_to_tensor(clips, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert video.shape == (2, 3, 3, 4, 5)
    assert torch.all(video[:, 0] == 1.0) and torch.all(video[:, 1] == -1.0)
    with pytest.raises(ValueError, match="N, T, H, W, 3"):
        clips_to_tensor(np.zeros((3, 4, 5, 3), np.uint8))


def test_evaluate_action_predictions_hand_computed():
    vocab = ActionVocabulary(["cut", "pour", "stir"])
    train_targets = vocab.targets_many([["cut"], ["cut"], ["pour"], ["cut", "stir"]])
    targets = vocab.targets_many([["cut"], ["pour"], ["stir", "pour"], ["stir"]])
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.1, 0.7, 0.2]])
    result = evaluate_action_predictions(probs, targets, train_targets, vocab)
    assert result["top1_verb_accuracy"] == pytest.approx(0.5)  # clips 0 and 2
    assert result["chance_uniform"] == pytest.approx(1 / 3)
    assert result["majority_verb"] == "cut"
    assert result["chance_majority"] == pytest.approx(0.25)


# ---------------------------------------------------------------------------------------------
# training on real decoded clips of the tiny benchmark

SMALL = dict(num_frames=4, fps=4.0, clip_size=32)


@pytest.fixture(scope="module")
def tiny_clips(synth_tiny):
    train_ids, held_ids, _ = benchmark_video_splits(synth_tiny)
    narrations = read_narrations(synth_tiny / "narrations.json", video_ids=train_ids[:5])
    verbs = VerbMiner().verbs_many([c.text for c in narrations.clips])
    vocab = ActionVocabulary.build({v: 1 for vs in verbs for v in vs}, min_count=1)
    clips = build_action_clips(synth_tiny / "videos", narrations, verbs, vocab, progress=False, **SMALL)
    assert len(clips) >= 6 and clips.failures == []
    assert set(clips.video_ids()).isdisjoint(held_ids)
    return clips, vocab


def test_train_save_reload_same_features(tmp_path, tiny_clips):
    clips, vocab = tiny_clips
    assert clips.windows.shape[1:] == (4, 32, 32, 3) and clips.windows.dtype == np.uint8
    np.testing.assert_allclose(clips.targets.sum(1), 1.0, rtol=1e-6)
    torch.manual_seed(0)
    model = build_action_encoder("narrow", len(vocab))
    cfg = ActionTrainConfig(arch="narrow", epochs=2, max_steps=3, batch_size=4, lr=1e-3, **SMALL)
    out = tmp_path / "encoder"
    history = train_action_encoder(model, clips.windows, clips.targets, vocab, cfg, out, progress=False)
    assert history and history[-1]["step"] == 3
    assert all(math.isfinite(h["loss"]) and h["loss"] > 0 for h in history)
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "action_vocab.json", "train_state.pt"}

    encoder = load_action_encoder(out)
    assert encoder.vocab == vocab and (encoder.num_frames, encoder.fps, encoder.clip_size) == (4, 4.0, 32)
    features = encoder.features(clips.windows)
    assert features.shape == (len(clips), 128) and np.isfinite(features).all()
    model.eval()
    with torch.no_grad():
        expected = pooled_features(model, clips_to_tensor(clips.windows)).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    probs = encoder.predict(clips.windows)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="4 frames x 32x32"):
        encoder.features(np.zeros((1, 8, 32, 32, 3), np.uint8))


def test_training_moves_the_loss_and_resumes(tmp_path, tiny_clips):
    clips, vocab = tiny_clips
    subset = slice(0, 8)  # a handful of clips: the network must be able to fit them
    torch.manual_seed(0)
    cfg = ActionTrainConfig(arch="narrow", epochs=4, batch_size=8, lr=3e-3, flip=False, **SMALL)
    out = tmp_path / "encoder"
    model = build_action_encoder("narrow", len(vocab))
    history = train_action_encoder(model, clips.windows[subset], clips.targets[subset], vocab,
                                   dataclass_replace(cfg, epochs=2), out, progress=False)
    assert [h["epoch"] for h in history] == [1, 2]
    resumed = train_action_encoder(build_action_encoder("narrow", len(vocab)), clips.windows[subset],
                                   clips.targets[subset], vocab, cfg, out, resume=True, progress=False)
    assert [h["epoch"] for h in resumed] == [1, 2, 3, 4]
    assert resumed[:2] == history
    assert resumed[-1]["step"] == 4
    assert resumed[-1]["loss"] < resumed[0]["loss"]


def dataclass_replace(cfg, **changes):
    import dataclasses

    return dataclasses.replace(cfg, **changes)


def test_load_action_encoder_errors_name_the_file(tmp_path, tiny_clips):
    clips, vocab = tiny_clips
    out = tmp_path / "encoder"
    cfg = ActionTrainConfig(arch="narrow", epochs=1, max_steps=1, batch_size=4, **SMALL)
    train_action_encoder(build_action_encoder("narrow", len(vocab)), clips.windows[:4], clips.targets[:4], vocab,
                         cfg, out, progress=False)
    config = json.loads((out / "config.json").read_text())

    (out / "config.json").write_text(json.dumps({**config, "num_classes": len(vocab) + 1}))
    with pytest.raises(ActionEncoderError, match="action_vocab.json"):
        load_action_encoder(out)
    (out / "config.json").write_text(json.dumps({**config, "arch": "r3d_18"}))
    with pytest.raises(ActionEncoderError, match=r"model\.safetensors.*r3d_18"):
        load_action_encoder(out)
    (out / "config.json").write_text(json.dumps({**config, "format": "something-else"}))
    with pytest.raises(ActionEncoderError, match=r"config\.json.*format"):
        load_action_encoder(out)
    with pytest.raises(ActionEncoderError, match="not found"):
        load_action_encoder(tmp_path / "nowhere")


def test_learning_rate_schedule_is_a_function_of_the_step():
    from actbert.video.action_encoder import learning_rate_at

    cosine = ActionTrainConfig(lr=1e-3, schedule="cosine")
    assert learning_rate_at(0, 100, cosine) == pytest.approx(1e-3)
    assert learning_rate_at(50, 100, cosine) == pytest.approx(5e-4)
    assert learning_rate_at(100, 100, cosine) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate_at(150, 100, cosine) == pytest.approx(0.0, abs=1e-12)  # never negative past the end
    rates = [learning_rate_at(s, 100, cosine) for s in range(101)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    constant = ActionTrainConfig(lr=1e-3, schedule="constant")
    assert {learning_rate_at(s, 100, constant) for s in (0, 37, 100)} == {1e-3}
    with pytest.raises(ValueError, match="schedule"):
        learning_rate_at(0, 10, ActionTrainConfig(schedule="exponential"))
    # step (paper 4.1: lr / 10 at iteration 100k of 1M): 1e-3 for the first tenth of the run, then 1e-4
    step = ActionTrainConfig(lr=1e-3, schedule="step")
    assert [learning_rate_at(s, 100, step) for s in (0, 9, 10, 99)] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])


def test_paper_preset_and_explicit_options(monkeypatch):
    import argparse

    from actbert.commands import train_action_encoder as command
    from actbert.video import action_training
    from actbert.video.action_encoder import action_settings

    paper = action_settings("paper")
    # paper 4.1: 32 frames over 4 s (8 FPS), 224 x 224, lr 0.001, batch 16, step decay; a torchvision 3D ResNet
    assert (paper["num_frames"], paper["fps"], paper["clip_size"], paper["lr"], paper["batch_size"]) == (32, 8.0, 224, 1e-3, 16)
    assert (paper["arch"], paper["schedule"], paper["optimizer"]) == ("r3d_18", "step", "sgd")
    assert action_settings()["clip_size"] == 112 and action_settings()["arch"] == "narrow"
    assert action_settings("paper", clip_size=160, lr=None)["clip_size"] == 160  # given beats preset; None = not given
    with pytest.raises(ActionEncoderError, match="'paper'"):
        action_settings("kinetics")

    seen = {}
    monkeypatch.setattr(action_training, "train_action_encoder_on_benchmark", lambda *a, **k: seen.update(k))
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    command.run(parser.parse_args(["--data", "d", "--out", "o", "--preset", "paper", "--epochs", "2"]))
    assert (seen["clip_size"], seen["arch"], seen["epochs"], seen["preset"]) == (224, "r3d_18", 2, "paper")
    command.run(parser.parse_args(["--data", "d", "--out", "o"]))
    assert (seen["clip_size"], seen["arch"], seen["schedule"], seen["preset"]) == (112, "narrow", "cosine", None)
