"""What sizes a demo run, where it writes, and the arguments of its data stages.

A data stage (1-5) is one library call; ``stage_arguments`` gives its keyword arguments, which are
named as the options of the equivalent ``actbert`` command, so ``stage_commands`` renders the same
arguments as the command lines the report prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VARIANTS = ("pretrained", "no_pretraining", "no_regions")
VARIANT_TITLES = {
    "pretrained": "ActBERT (pretrained)",
    "no_pretraining": "no pretraining",
    "no_regions": "pretrained, no region cues",
}
# tasks the paper reports both zero-shot and fine-tuned (Table 4: YouCook2 and MSR-VTT zero-shot,
# MSR-VTT "+FT"): the demo evaluates the model before and after fine-tuning
ZERO_SHOT_AND_FINETUNED = ("retrieval",)
# the datasets whose fine-tuned rows the paper reports, for tasks that fine-tune on one dataset and
# could be scored on several: retrieval fine-tunes on MSR-VTT's training split, and the paper has no
# "YouCook2 after MSR-VTT fine-tuning" protocol (YouCook2 is zero-shot only), so that row is not made
FINETUNED_DATASETS = {"retrieval": ("msrvtt",)}
STAGES = ("synth", "verbs", "action_encoder", "object_classifier", "extract", "pretrain", "tasks", "report")
DATA_STAGES = STAGES[:5]
# data stage -> the equivalent command
STAGE_COMMANDS = {
    "synth": "synth",
    "verbs": "mine-verbs",
    "action_encoder": "train-action-encoder",
    "object_classifier": "train-object-classifier",
    "extract": "extract",
}


@dataclass
class DemoProfile:
    """Everything that sizes a demo run (recorded in the report)."""

    name: str
    synth_size: str
    preset: str
    verb_min_count: int
    action_encoder: dict[str, Any]  # extra keyword arguments of train_action_encoder_on_benchmark
    object_classifier: dict[str, Any]  # extra keyword arguments of train_and_save_object_classifier
    pretrain: list[str]  # key=value overrides of the preset
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> settings overrides


PROFILES: dict[str, DemoProfile] = {
    "full": DemoProfile(
        name="full",
        synth_size="demo",
        preset="small",
        verb_min_count=5,
        action_encoder={"arch": "narrow", "num_frames": 8, "fps": 2, "clip_size": 48,
                        "epochs": 14, "batch_size": 32, "lr": 2e-3},
        object_classifier={"epochs": 1},
        pretrain=["train.max_steps=250", "train.batch_size=16", "optim.lr=2e-4", "optim.warmup_steps=25",
                  "train.log_every=10", "train.checkpoint_every=100", "data.num_workers=0"],
        tasks={
            "retrieval": {"steps": 40, "max_queries": 40},
            "captioning": {"steps": 60, "beam_size": 1},
            "videoqa": {"steps": 40},
            "segmentation": {"steps": 80},
            "step_localization": {"units": "clips"},
        },
    ),
    # the tiny model preset (src/actbert/configs/tiny.yaml) keeps the smoke run within a few minutes
    "quick": DemoProfile(
        name="quick",
        synth_size="tiny",
        preset="tiny",
        verb_min_count=2,
        action_encoder={"arch": "narrow", "num_frames": 8, "fps": 2, "clip_size": 48,
                        "epochs": 1, "batch_size": 16},
        object_classifier={"epochs": 1},
        pretrain=["data.random=false", "train.max_steps=40", "train.batch_size=8", "optim.warmup_steps=4",
                  "train.log_every=2", "train.checkpoint_every=20", "data.num_workers=0"],
        tasks={
            "retrieval": {"steps": 5, "max_queries": 10},
            "captioning": {"steps": 5, "beam_size": 1, "max_clips": 8, "meteor": False},
            "videoqa": {"steps": 5, "max_questions": 10},
            "segmentation": {"steps": 5, "max_videos": 2},
            "step_localization": {"units": "clips", "max_videos": 2},
        },
    ),
}


@dataclass
class DemoPaths:
    root: Path

    @property
    def synth(self) -> Path:
        return self.root / "synth"

    @property
    def vocab(self) -> Path:
        return self.root / "action_vocab.json"

    @property
    def action_encoder(self) -> Path:
        return self.root / "action_encoder"

    @property
    def object_classifier(self) -> Path:
        return self.root / "object_classifier.safetensors"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def pretrain(self) -> Path:
        return self.root / "pretrain"

    @property
    def model(self) -> Path:
        return self.root / "pretrain" / "model"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    def result_file(self, task: str, variant: str) -> Path:
        return self.results / task / f"{variant}.json"


def stage_arguments(paths: DemoPaths, profile: DemoProfile, seed: int) -> dict[str, dict[str, Any]]:
    """Keyword arguments of each data stage's library call (named as the command's options)."""
    p = paths
    return {
        "synth": {"size": profile.synth_size, "seed": seed, "out": p.synth},
        "verbs": {"narrations": p.synth / "narrations.json", "videos_split": "pretrain",
                  "min_count": profile.verb_min_count, "out": p.vocab},
        "action_encoder": {"data": p.synth, "out": p.action_encoder, "vocab": p.vocab, "seed": seed,
                           **profile.action_encoder},
        "object_classifier": {"data": p.synth, "out": p.object_classifier, "seed": seed, **profile.object_classifier},
        "extract": {"data": p.synth, "store": p.store, "action_encoder": p.action_encoder, "regions": "given",
                    "object_classifier": p.object_classifier},
    }


def command_options(arguments: dict[str, Any]) -> list[str]:
    """Keyword arguments -> command-line options (``num_frames=8`` -> ``--num-frames 8``; a boolean
    ``x=True`` -> ``--x``, ``x=False`` -> ``--no-x``, as in ``flip=False`` -> ``--no-flip``)."""
    out: list[str] = []
    for name, value in arguments.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + flag[2:])
        else:
            out += [flag, str(value)]
    return out


def stage_commands(paths: DemoPaths, profile: DemoProfile, seed: int) -> dict[str, list[str]]:
    """The equivalent command line of each data stage (what the report prints)."""
    return {name: [STAGE_COMMANDS[name], *command_options(arguments)]
            for name, arguments in stage_arguments(paths, profile, seed).items()}


def pretrain_overrides(paths: DemoPaths, profile: DemoProfile, seed: int) -> list[str]:
    return [
        f"data.store={paths.store}",
        f"data.narrations={paths.synth / 'narrations.json'}",
        f"data.splits={paths.synth / 'splits.json'}",
        "data.split=pretrain",
        f"train.seed={seed}",
        *profile.pretrain,
    ]
