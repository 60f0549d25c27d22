"""The action encoder: a 3D CNN trained on mined verbs; its pooled activation is the clip's action feature.

Paper 4.1: a 3D ResNet (Kinetics-initialised) is trained to predict the verbs mined from each clip's
narration; the global-average-pooled activation before the classifier is the action feature fed to
ActBERT's action stream. The networks are torchvision's ``VideoResNet``:

- ``r3d_18`` and ``r2plus1d_18``: torchvision's own builders, 512-d features; ``init_weights`` may
  name a local Kinetics-400 state dict of the same architecture (the 400-way ``fc`` is dropped and a
  fresh verb classifier is used).
- ``narrow``: the r3d_18 layout (BasicBlock x [2, 2, 2, 2], full 3D convolutions) with stage widths
  16/32/64/128 and a 16-channel stem, built from torchvision's own blocks, so a CPU can train it in
  minutes at 16 frames x 64 px. 128-d features.

Every model keeps torchvision's parameter names, so its ``model.safetensors`` loads into the matching
torchvision model (and vice versa). Input: float [N, 3, T, H, W], Kinetics-normalised.

Training settings (:func:`action_settings`): the library defaults (``ACTION_DEFAULTS``: 32 frames at
8 FPS, 112 px, Adam, cosine) or a named preset (``ACTION_PRESETS``). ``"paper"`` is paper 4.1's
recipe as far as torchvision can follow it: 32 frames at 8 FPS (4 s), 224 x 224 centre crops,
learning rate 0.001, batch 16, the rate divided by 10 after a tenth of the run (the paper: at
iteration 100,000 of 1,000,000), SGD with momentum 0.9 (the optimiser of the ResNet-3D recipe the
paper follows), from Kinetics-400 weights (``init_weights``). What still differs (docs/extraction.md):
the network is torchvision's ``r3d_18`` (18 layers, 512-d features; the paper names a ResNet-3D
without its depth), the weight decay (1e-3 here) is not in the paper, and the run length is the
user's (``epochs`` / ``max_steps``) rather than 1,000,000 iterations.

Folder of a trained encoder (``save_action_encoder``)::

    config.json          {"format": "actbert-action-encoder", "arch", "num_classes", "feature_dim",
                          "num_frames", "fps", "clip_size", "mean", "std", ...training facts}
    model.safetensors    torchvision VideoResNet state dict
    action_vocab.json    the verb classes (``ActionVocabulary``)
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torchvision.models.video import r2plus1d_18, r3d_18
from torchvision.models.video.resnet import BasicBlock, Conv3DSimple, VideoResNet

from actbert.errors import ActBertError
from actbert.models.losses import soft_target_cross_entropy
from actbert.text.verbs import ActionVocabulary, VocabularyError
from actbert.utils.io import atomic_save_file, atomic_write_json, read_json
from actbert.utils.schedule import lr_factor

__all__ = [
    "ARCHITECTURES",
    "ACTION_DEFAULTS",
    "ACTION_PRESETS",
    "SCHEDULES",
    "action_settings",
    "KINETICS_MEAN",
    "KINETICS_STD",
    "ENCODER_FORMAT",
    "ActionEncoderError",
    "NarrowVideoResNet",
    "InitReport",
    "build_action_encoder",
    "load_init_weights",
    "pooled_features",
    "clips_to_tensor",
    "soft_target_cross_entropy",
    "save_action_encoder",
    "load_action_encoder",
    "ActionEncoder",
    "ActionTrainConfig",
    "train_action_encoder",
    "evaluate_action_predictions",
]

ARCHITECTURES = ("r3d_18", "r2plus1d_18", "narrow")
# torchvision's Kinetics-400 video models were trained with these (RGB, [0, 1] scale)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
ENCODER_FORMAT = "actbert-action-encoder"
NARROW_WIDTHS = (16, 32, 64, 128)
SCHEDULES = ("constant", "cosine", "step")
STEP_DECAY_AT = 0.1  # "step": lr x 0.1 after this fraction of the run (paper 4.1: iteration 100k of 1M)

# the settings a preset may set, with the library's defaults (keyword names of train_action_encoder_on_benchmark)
ACTION_DEFAULTS: dict[str, Any] = {
    "arch": "narrow", "num_frames": 32, "fps": 8.0, "clip_size": 112, "epochs": 5, "batch_size": 16,
    "lr": 1e-3, "optimizer": "adam", "weight_decay": 1e-4, "schedule": "cosine",
}
ACTION_PRESETS: dict[str, dict[str, Any]] = {
    # paper 4.1 (module docstring): Kinetics-initialised 3D ResNet, 32 frames x 224 px, lr 1e-3, batch 16,
    # step decay; SGD + momentum as the followed ResNet-3D recipe. Pass Kinetics weights with init_weights.
    "paper": {"arch": "r3d_18", "num_frames": 32, "fps": 8.0, "clip_size": 224, "batch_size": 16, "lr": 1e-3,
              "optimizer": "sgd", "weight_decay": 1e-3, "schedule": "step"},
}


class ActionEncoderError(ActBertError):
    """An action-encoder folder or weights file that cannot be used (names the file and the field)."""


class NarrowVideoResNet(VideoResNet):
    """torchvision's ``VideoResNet`` (r3d layout) with narrower stages.

    ``VideoResNet.__init__`` fixes the widths at 64/128/256/512, so this sets the same attributes
    (``stem``, ``layer1..4``, ``avgpool``, ``fc``) itself, reusing torchvision's ``BasicBlock``,
    ``Conv3DSimple``, ``_make_layer`` and ``forward``.
    """

    def __init__(self, num_classes: int, widths: tuple[int, int, int, int] = NARROW_WIDTHS, layers=(2, 2, 2, 2)):
        nn.Module.__init__(self)
        self.inplanes = widths[0]
        self.stem = nn.Sequential(  # torchvision's BasicStem with ``widths[0]`` channels
            nn.Conv3d(3, widths[0], kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(widths[0]),
            nn.ReLU(inplace=True),
        )
        self.layer1 = self._make_layer(BasicBlock, Conv3DSimple, widths[0], layers[0], stride=1)
        self.layer2 = self._make_layer(BasicBlock, Conv3DSimple, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(BasicBlock, Conv3DSimple, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(BasicBlock, Conv3DSimple, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = nn.Linear(widths[3] * BasicBlock.expansion, num_classes)
        for m in self.modules():  # same initialisation as VideoResNet
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)


@dataclasses.dataclass
class InitReport:
    """What ``load_init_weights`` did: keys loaded, keys the model has but the file lacks, and extras."""

    path: str
    loaded: list[str]
    missing: list[str]
    unexpected: list[str]
    dropped_classifier: list[str]

    def summary(self) -> str:
        text = f"{self.path}: loaded {len(self.loaded)} tensors"
        if self.dropped_classifier:
            text += f"; replaced classifier ({', '.join(self.dropped_classifier)})"
        if self.missing:
            text += f"; missing {len(self.missing)}: {', '.join(self.missing[:8])}{' ...' if len(self.missing) > 8 else ''}"
        if self.unexpected:
            text += f"; unexpected {len(self.unexpected)}: {', '.join(self.unexpected[:8])}{' ...' if len(self.unexpected) > 8 else ''}"
        return text


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A tensor state dict from safetensors or a torch file read with ``weights_only=True`` (no pickle code)."""
    if not path.is_file():
        raise ActionEncoderError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ActionEncoderError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError / RuntimeError for foreign or unsafe files
        raise ActionEncoderError(f"{path}: not a torch state dict loadable with weights_only=True ({exc})") from exc
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ActionEncoderError(f"{path}: expected a mapping of parameter names to tensors")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def load_init_weights(model: VideoResNet, path: str | os.PathLike) -> InitReport:
    """Initialise ``model`` from a torchvision Kinetics state dict; the classifier ``fc`` is not loaded.

    Shape mismatches (weights of another architecture) raise ``ActionEncoderError`` naming the file
    and the parameter; a file sharing no parameter name with the model is refused too.
    """
    path = Path(path)
    state = _read_state_dict(path)
    dropped = sorted(k for k in state if k.startswith("fc."))
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = model.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise ActionEncoderError(
                f"{path}: parameter {key!r} has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)} "
                "(weights of another architecture?)"
            )
    loaded = sorted(k for k in state if k in own)
    if not loaded:
        raise ActionEncoderError(f"{path}: no parameter name matches a torchvision VideoResNet (foreign checkpoint?)")
    result = model.load_state_dict(state, strict=False)
    missing = sorted(k for k in result.missing_keys if not k.startswith("fc."))
    return InitReport(str(path), loaded, missing, sorted(result.unexpected_keys), dropped)


def build_action_encoder(arch: str, num_classes: int, init_weights: str | os.PathLike | None = None) -> VideoResNet:
    """A torchvision ``VideoResNet`` with a ``num_classes``-way verb classifier.

    The module gets ``arch``, ``feature_dim`` and (when initialised) ``init_report`` attributes.
    forward: float [N, 3, T, H, W] -> logits [N, num_classes]; ``pooled_features`` -> [N, feature_dim].
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if arch == "r3d_18":
        model = r3d_18(weights=None, num_classes=num_classes)
    elif arch == "r2plus1d_18":
        model = r2plus1d_18(weights=None, num_classes=num_classes)
    elif arch == "narrow":
        model = NarrowVideoResNet(num_classes)
    else:
        raise ValueError(f"unknown action encoder architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    model.arch = arch
    model.feature_dim = model.fc.in_features
    model.init_report = load_init_weights(model, init_weights) if init_weights is not None else None
    return model


def pooled_features(model: VideoResNet, video: torch.Tensor) -> torch.Tensor:
    """The global-average-pooled activation before the classifier: [N, 3, T, H, W] -> [N, D]."""
    x = model.stem(video)
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return model.avgpool(x).flatten(1)


def clips_to_tensor(clips: np.ndarray | torch.Tensor, mean=KINETICS_MEAN, std=KINETICS_STD) -> torch.Tensor:
    """uint8 clips [N, T, H, W, 3] -> normalised float32 [N, 3, T, H, W]."""
    video = torch.as_tensor(clips)
    if video.ndim != 5 or video.shape[-1] != 3:
        raise ValueError(f"clips must be uint8 [N, T, H, W, 3], got shape {tuple(video.shape)}")
    video = video.permute(0, 4, 1, 2, 3).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1, 1)
    return (video - mean_t) / std_t


def save_action_encoder(
    model: VideoResNet, vocab: ActionVocabulary, folder: str | os.PathLike, config: Mapping[str, Any]
) -> Path:
    """Write ``folder/{model.safetensors, action_vocab.json, config.json}``, each file atomically.

    config must give ``num_frames``, ``fps`` and ``clip_size`` (the input the model was trained on);
    arch, num_classes, feature_dim, mean and std are filled in. config.json is written last, so a folder
    with a config.json always has the weights it describes.
    """
    folder = Path(folder)
    for key in ("num_frames", "fps", "clip_size"):
        if key not in config:
            raise ValueError(f"save_action_encoder: config lacks {key!r}")
    if model.fc.out_features != len(vocab):
        raise ValueError(f"save_action_encoder: model has {model.fc.out_features} classes, vocabulary {len(vocab)} verbs")
    full = dict(config)
    full.update(
        format=ENCODER_FORMAT,
        version=1,
        arch=model.arch,
        num_classes=int(model.fc.out_features),
        feature_dim=int(model.feature_dim),
        num_frames=int(config["num_frames"]),
        fps=float(config["fps"]),
        clip_size=int(config["clip_size"]),
        mean=list(config.get("mean", KINETICS_MEAN)),
        std=list(config.get("std", KINETICS_STD)),
    )
    atomic_save_file(model.state_dict(), folder / "model.safetensors", metadata={"format": ENCODER_FORMAT, "arch": model.arch})
    vocab.save(folder / "action_vocab.json")
    atomic_write_json(folder / "config.json", full)
    return folder


class ActionEncoder:
    """A trained action encoder ready for feature extraction (eval mode, no gradients).

    features(clips uint8 [N, T, H, W, 3]) -> float32 [N, feature_dim]
    predict(clips uint8 [N, T, H, W, 3])  -> float32 [N, V] verb probabilities
    Clips must be ``num_frames`` frames of ``clip_size`` x ``clip_size`` (decoded at ``fps``).
    """

    def __init__(self, model: VideoResNet, vocab: ActionVocabulary, config: Mapping[str, Any], device: str | torch.device = "cpu", batch_size: int = 16):
        self.model = model.to(device).eval()
        self.vocab = vocab
        self.config = dict(config)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.arch: str = model.arch
        self.feature_dim: int = int(model.feature_dim)
        self.num_frames: int = int(config["num_frames"])
        self.fps: float = float(config["fps"])
        self.clip_size: int = int(config["clip_size"])
        self.mean = tuple(config.get("mean", KINETICS_MEAN))
        self.std = tuple(config.get("std", KINETICS_STD))

    def _check(self, clips: np.ndarray) -> None:
        if not isinstance(clips, np.ndarray) or clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
            shape = getattr(clips, "shape", None)
            raise ValueError(f"action encoder expects uint8 clips [N, T, H, W, 3], got {getattr(clips, 'dtype', type(clips))} {shape}")
        expected = (self.num_frames, self.clip_size, self.clip_size)
        if tuple(clips.shape[1:4]) != expected:
            raise ValueError(
                f"action encoder was trained on clips of {self.num_frames} frames x {self.clip_size}x{self.clip_size} px, "
                f"got {tuple(clips.shape[1:4])}"
            )

    @torch.no_grad()
    def _run(self, clips: np.ndarray, head: bool) -> np.ndarray:
        self._check(clips)
        width = len(self.vocab) if head else self.feature_dim
        out = np.zeros((len(clips), width), dtype=np.float32)
        for i in range(0, len(clips), self.batch_size):
            video = clips_to_tensor(clips[i : i + self.batch_size], self.mean, self.std).to(self.device)
            features = pooled_features(self.model, video)
            values = torch.softmax(self.model.fc(features), dim=-1) if head else features
            out[i : i + len(video)] = values.float().cpu().numpy()
        return out

    def features(self, clips: np.ndarray) -> np.ndarray:
        return self._run(clips, head=False)

    def predict(self, clips: np.ndarray) -> np.ndarray:
        return self._run(clips, head=True)


def load_action_encoder(folder: str | os.PathLike, device: str | torch.device = "cpu") -> ActionEncoder:
    """Load a folder written by ``save_action_encoder``; any mismatch raises ``ActionEncoderError`` naming the file."""
    folder = Path(folder)
    config_path, weights_path, vocab_path = folder / "config.json", folder / "model.safetensors", folder / "action_vocab.json"
    if not config_path.is_file():
        raise ActionEncoderError(f"{config_path}: not found (not an action encoder folder)")
    try:
        config = read_json(config_path, "action encoder config")
    except ValueError as exc:
        raise ActionEncoderError(str(exc)) from exc
    if not isinstance(config, Mapping) or config.get("format") != ENCODER_FORMAT:
        raise ActionEncoderError(f"{config_path}: field 'format' is not {ENCODER_FORMAT!r} (not an action encoder config)")
    for key in ("arch", "num_classes", "num_frames", "fps", "clip_size"):
        if key not in config:
            raise ActionEncoderError(f"{config_path}: missing field {key!r}")
    if config["arch"] not in ARCHITECTURES:
        raise ActionEncoderError(f"{config_path}: field 'arch' is {config['arch']!r}, expected one of {ARCHITECTURES}")
    try:
        vocab = ActionVocabulary.load(vocab_path)
    except (VocabularyError, FileNotFoundError) as exc:
        raise ActionEncoderError(f"{vocab_path}: {exc}") from exc
    if len(vocab) != int(config["num_classes"]):
        raise ActionEncoderError(f"{vocab_path}: {len(vocab)} verbs but {config_path} says num_classes={config['num_classes']}")
    model = build_action_encoder(config["arch"], int(config["num_classes"]))
    if weights_path.suffix != ".safetensors" or not weights_path.is_file():
        raise ActionEncoderError(f"{weights_path}: not found")
    state = _read_state_dict(weights_path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"wrong shapes: {'; '.join(wrong[:3])}")
        raise ActionEncoderError(f"{weights_path}: does not match a {config['arch']} action encoder: {', '.join(parts)}")
    model.load_state_dict(state)
    return ActionEncoder(model, vocab, config, device=device)


# --------------------------------------------------------------------------------------------------
# Training and evaluation


@dataclasses.dataclass
class ActionTrainConfig:
    """Settings of one action-encoder training run (all recorded in the saved config.json)."""

    arch: str = "narrow"
    epochs: int = 5
    max_steps: int | None = None  # stop after this many optimiser steps (None: all epochs)
    batch_size: int = 16
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | sgd (momentum 0.9)
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # constant | cosine (decay to 0 over the run's steps) | step (x 0.1 after 10% of them)
    num_frames: int = 32
    fps: float = 8.0
    clip_size: int = 112
    flip: bool = True  # random horizontal flip of training clips
    seed: int = 0
    device: str = "cpu"


def action_settings(preset: str | None = None, **given: Any) -> dict[str, Any]:
    """The training settings: ``ACTION_DEFAULTS``, then the preset's values, then ``given`` (None = not given).

    Unknown presets raise :class:`ActionEncoderError` naming the known ones.
    """
    settings = dict(ACTION_DEFAULTS)
    if preset is not None:
        if preset not in ACTION_PRESETS:
            raise ActionEncoderError(f"action encoder preset {preset!r} is not one of {sorted(ACTION_PRESETS)}")
        settings.update(ACTION_PRESETS[preset])
    settings.update({k: v for k, v in given.items() if v is not None})
    return settings


def _optimizer(model: nn.Module, cfg: ActionTrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose adam or sgd")


def learning_rate_at(step: int, total_steps: int, cfg: ActionTrainConfig) -> float:
    """The learning rate of optimiser step ``step`` (0-based), a pure function of the step so a resumed
    run follows the same curve: ``cfg.schedule`` without warm-up -- ``constant``; ``cosine`` decaying
    to 0 at ``total_steps``; ``step``: ``lr`` until ``STEP_DECAY_AT * total_steps``, then ``lr / 10``."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if cfg.schedule == "step":
        return cfg.lr * (0.1 if step >= STEP_DECAY_AT * total_steps else 1.0)
    return cfg.lr * lr_factor(step, 0, total_steps, cfg.schedule, 0.0)


def train_action_encoder(
    model: VideoResNet,
    windows: np.ndarray,
    targets: np.ndarray,
    vocab: ActionVocabulary,
    cfg: ActionTrainConfig,
    out_dir: str | os.PathLike,
    extra_config: Mapping[str, Any] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Train ``model`` on clips with soft-target cross-entropy; save to ``out_dir`` after every epoch.

    windows: uint8 [C, T, S, S, 3]; targets: float32 [C, V] (rows sum to 1).
    Each epoch ends with an atomic save of the encoder folder and of ``train_state.pt`` (optimiser,
    epoch, step, loss history), so ``resume=True`` continues an interrupted run where it stopped.
    Returns the per-epoch history [{"epoch", "step", "loss"}].
    """
    from tqdm import tqdm

    from actbert.utils.io import atomic_torch_save

    if len(windows) != len(targets) or len(windows) == 0:
        raise ValueError(f"need as many targets as clips (got {len(windows)} clips, {len(targets)} targets; at least one)")
    out_dir = Path(out_dir)
    device = torch.device(cfg.device)
    model.to(device)
    optimizer = _optimizer(model, cfg)
    saved_config = {**(extra_config or {}), "training": dataclasses.asdict(cfg)}
    saved_config.update(num_frames=cfg.num_frames, fps=cfg.fps, clip_size=cfg.clip_size)
    history: list[dict] = []
    step, start_epoch = 0, 0
    state_path = out_dir / "train_state.pt"
    if resume and state_path.exists():
        state = torch.load(str(state_path), map_location="cpu", weights_only=True)
        loaded = load_action_encoder(out_dir)
        model.load_state_dict(loaded.model.state_dict())
        model.to(device)
        optimizer.load_state_dict(state["optimizer"])
        step, start_epoch = int(state["step"]), int(state["epoch"])
        history = [dict(zip(("epoch", "step", "loss"), (int(e), int(s), float(l)))) for e, s, l in state["history"].tolist()]
        print(f"resumed from {state_path}: epoch {start_epoch}, step {step}")

    rng = np.random.default_rng(cfg.seed + start_epoch)
    torch.manual_seed(cfg.seed + start_epoch)
    targets_t = torch.as_tensor(targets, dtype=torch.float32)
    steps_per_epoch = -(-len(windows) // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * steps_per_epoch)
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
        model.train()
        order = rng.permutation(len(windows))
        batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        total, seen = 0.0, 0
        bar = tqdm(batches, desc=f"action encoder epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress)
        for index in bar:
            clips = windows[index]
            if cfg.flip:
                flip = rng.random(len(clips)) < 0.5
                clips = np.where(flip[:, None, None, None, None], clips[:, :, :, ::-1], clips)
            video = clips_to_tensor(clips).to(device)
            logits = model(video)
            loss = soft_target_cross_entropy(logits, targets_t[index].to(device))
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(step, total_steps, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            total += loss.item() * len(index)
            seen += len(index)
            bar.set_postfix(loss=f"{total / seen:.3f}")
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
        bar.close()
        history.append({"epoch": epoch + 1, "step": step, "loss": total / max(seen, 1)})
        save_action_encoder(model, vocab, out_dir, saved_config)
        atomic_torch_save(
            {
                "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1,
                "step": step,
                "history": torch.tensor([[h["epoch"], h["step"], h["loss"]] for h in history], dtype=torch.float64),
            },
            state_path,
        )
    return history


def evaluate_action_predictions(
    probs: np.ndarray,
    targets: np.ndarray,
    train_targets: np.ndarray,
    vocab: ActionVocabulary,
    gt_actions: Sequence[str | None] | None = None,
    train_gt_actions: Sequence[str | None] | None = None,
) -> dict:
    """Top-1 verb accuracy of held-out clips and its chance levels.

    probs, targets: [C, V] held-out predictions and mined-verb targets; train_targets: [Ct, V].
    A prediction (argmax) is correct if it is one of the clip's mined verbs. Chance: 1/V, and the
    majority rate (always predicting the training set's most frequent verb).
    With ground-truth actions: each verb is mapped to the ground-truth action it co-occurs with most in
    the training clips; accuracy = mapped prediction equals the clip's true action. ``gt_narration_ceiling``
    is the fraction of clips one of whose own mined verbs maps to the true action (how often the
    narration names what is shown: the best a verb predictor can do against the ground truth).
    """
    probs = np.asarray(probs)
    targets = np.asarray(targets)
    predicted = probs.argmax(1)
    positive = targets > 0
    majority = int((np.asarray(train_targets) > 0).sum(0).argmax())
    result: dict[str, Any] = {
        "num_clips": int(len(probs)),
        "num_verbs": len(vocab),
        "top1_verb_accuracy": float(positive[np.arange(len(probs)), predicted].mean()) if len(probs) else float("nan"),
        "chance_uniform": 1.0 / len(vocab),
        "majority_verb": vocab.verbs[majority],
        "chance_majority": float(positive[:, majority].mean()) if len(probs) else float("nan"),
    }
    if gt_actions is None or train_gt_actions is None or not any(a is not None for a in gt_actions):
        return result
    # verb -> ground-truth action it co-occurs with most in training clips
    co: dict[int, dict[str, float]] = {}
    train_pos = np.asarray(train_targets) > 0
    for row, action in zip(train_pos, train_gt_actions):
        if action is None:
            continue
        for v in np.flatnonzero(row):
            co.setdefault(int(v), {}).setdefault(action, 0.0)
            co[int(v)][action] += 1.0
    verb_to_action = {v: max(counts, key=lambda a: (counts[a], a)) for v, counts in co.items()}
    keep = [i for i, a in enumerate(gt_actions) if a is not None]
    hits = [verb_to_action.get(int(predicted[i])) == gt_actions[i] for i in keep]
    narration = [
        any(verb_to_action.get(int(v)) == gt_actions[i] for v in np.flatnonzero(positive[i])) for i in keep
    ]
    train_actions = [a for a in train_gt_actions if a is not None]
    majority_action = max(set(train_actions), key=lambda a: (train_actions.count(a), a)) if train_actions else None
    result.update(
        gt_num_clips=len(keep),
        gt_num_actions=len(set(train_actions) | {gt_actions[i] for i in keep}),
        top1_gt_action_accuracy=float(np.mean(hits)) if hits else float("nan"),
        gt_chance_majority=float(np.mean([gt_actions[i] == majority_action for i in keep])) if keep else float("nan"),
        gt_narration_ceiling=float(np.mean(narration)) if narration else float("nan"),
        verb_to_action={vocab.verbs[v]: a for v, a in sorted(verb_to_action.items())},
    )
    result["gt_chance_uniform"] = 1.0 / result["gt_num_actions"] if result["gt_num_actions"] else float("nan")
    return result
