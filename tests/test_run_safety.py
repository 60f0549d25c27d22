"""Runs that would give wrong results or lose work are refused with a message that says what to do:
settings out of range, a store next to data.random, a run folder that already holds a run, a resume
that would not be exact, a refused resume that would have rewritten the run's config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from actbert.config import ConfigError, Range
from actbert.tasks import registry
from actbert.train.checkpoint import CheckpointError
from actbert.train.config import load_pretrain_config
from actbert.train.loop import resume_differences, train
from actbert.train.metrics_log import read_metrics

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def random_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("random_data")


def tiny(random_dir: Path, *extra: str):
    return load_pretrain_config("tiny", ["train.progress=false", f"data.random_dir={random_dir}", "train.max_steps=4",
                                         "train.checkpoint_every=2", *extra])


# ---- settings


def test_a_store_with_data_random_is_refused():
    with pytest.raises(ConfigError, match=r"data.store given while data.random is true .* set data.random=false"):
        load_pretrain_config("tiny", ["data.store=runs/store"])
    with pytest.raises(ConfigError, match="data.store and data.narrations given"):
        load_pretrain_config("tiny", ["data.store=s", "data.narrations=n.json"])
    cfg = load_pretrain_config("tiny", ["data.random=false", "data.store=s", "data.narrations=n.json"])
    assert cfg.data.store == "s"


@pytest.mark.parametrize("override, message", [
    ("optim.warmup_steps=-1", "optim.warmup_steps must be >= 0, got -1"),
    ("optim.lr=-1e-4", "optim.lr must be >= 0, got -0.0001"),
    ("optim.beta2=1.0", r"optim.beta2 must be in \[0, 1\), got 1.0"),
    ("train.batch_size=0", "train.batch_size must be >= 1, got 0"),
    ("train.checkpoint_every=-5", "train.checkpoint_every must be >= 0, got -5"),
    ("data.random_corpus.num_videos=0", "data.random_corpus.num_videos must be >= 1, got 0"),
    ("optim.min_lr_ratio=1.5", r"optim.min_lr_ratio must be in \[0, 1\], got 1.5"),
])
def test_pretraining_settings_out_of_range_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_pretrain_config("tiny", [override])


@pytest.mark.parametrize("task, override, message", [
    ("retrieval", "batch_size=-3", "retrieval setting batch_size must be >= 1, got -3"),
    ("retrieval", "batch_size=0", "retrieval setting batch_size must be >= 1, got 0"),
    ("retrieval", "max_queries=-1", "retrieval setting max_queries must be >= 0, got -1"),
    ("captioning", "label_smoothing=1", r"captioning setting label_smoothing must be in \[0, 1\), got 1.0"),
    ("videoqa", "lr=-0.1", "videoqa setting lr must be >= 0, got -0.1"),
    ("segmentation", "stride=0", "segmentation setting stride must be >= 1, got 0"),
    ("step_localization", "context=-2", "step_localization setting context must be >= 0, got -2"),
    ("step_localization", "device=tpu", "step_localization setting device: expected auto"),
])
def test_task_settings_out_of_range_name_the_key(task, override, message):
    with pytest.raises(ConfigError, match=message):
        registry.make_settings(task, [override])


def test_library_calls_are_checked_too():
    settings = registry.make_settings("retrieval")
    settings.batch_size = -3  # set directly, not through --set
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        registry.evaluate("retrieval", torch.nn.Linear(1, 1), None, None, settings)


def test_cli_evaluate_with_a_bad_setting_exits_1_before_loading(tmp_path, capsys):
    from actbert.cli import main

    assert main(["evaluate", "retrieval", "--model", str(tmp_path / "none"), "--data", str(tmp_path),
                 "--store", str(tmp_path), "--out", str(tmp_path / "out"), "--set", "batch_size=-3"]) == 1
    assert "batch_size must be >= 1, got -3" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_range_descriptions():
    assert Range().describe() == ">= 0" and Range(0, low_open=True).describe() == "> 0"
    assert Range(0, 1, high_open=True).describe() == "in [0, 1)"
    assert not Range().contains(float("nan")) and not Range(None).contains(float("inf"))


# ---- run folders and resume


def test_rerun_into_an_existing_run_is_refused_and_overwrite_starts_clean(random_dir, tmp_path):
    run = tmp_path / "run"
    first = train(tiny(random_dir), run)
    assert first["steps"] == 4
    with pytest.raises(ConfigError, match=r"already holds a run \(checkpoints, metrics.jsonl.*--resume.*--overwrite"):
        train(tiny(random_dir), run)
    (run / "checkpoints" / "step-0000099.pt").write_bytes(b"left over by an older run")
    again = train(tiny(random_dir, "train.max_steps=2"), run, overwrite=True)
    assert again["steps"] == 2
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*.pt")) == ["step-0000002.pt"]
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2]


def test_refused_resume_keeps_the_config_and_a_plain_resume_still_works(random_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(tiny(random_dir, "train.stop_after=2"), run)["interrupted"]
    saved = (run / "config.yaml").read_bytes()
    with pytest.raises(CheckpointError, match=r"config.model' differs .*hidden_dropout"):
        train(tiny(random_dir, "model.hidden_dropout=0.3"), run, resume=True)
    with pytest.raises(CheckpointError, match=r"other train.batch_size would change which samples come next"):
        train(tiny(random_dir, "train.batch_size=2"), run, resume=True)
    assert (run / "config.yaml").read_bytes() == saved  # the refused values were never written
    done = train(tiny(random_dir), run, resume=True)
    assert done["steps"] == 4 and done["first"]["step"] == 3
    # a change that keeps the data order is allowed, and said to make the run a different one
    train(tiny(random_dir, "train.max_steps=6", "optim.lr=0.002"), run, resume=True)
    err = capsys.readouterr().err
    assert "resuming with changed optim.lr, train.max_steps" in err


def test_resume_differences_sorts_keys_into_refused_and_changed():
    base = {"data": {"clips_per_sample": 4, "num_workers": 0, "store": "a"}, "optim": {"lr": 1e-3},
            "train": {"batch_size": 4, "log_every": 1, "seed": 0}, "model": {"hidden_size": 8}}
    other = {"data": {"clips_per_sample": 5, "num_workers": 4, "store": "b"}, "optim": {"lr": 2e-3},
             "train": {"batch_size": 4, "log_every": 5, "seed": 1}, "model": {"hidden_size": 16}}
    assert resume_differences(base, other) == (["data.clips_per_sample", "train.seed"], ["optim.lr"])


# ---- the command line


def test_expected_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    from actbert.cli import main

    args = ["pretrain", "--config", "tiny", "--set", "optim.warmup_steps=-1", "--out", str(tmp_path / "run")]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("actbert pretrain: ") and "tiny.yaml" in err and "optim.warmup_steps must be >= 0" in err
    with pytest.raises(ConfigError, match="optim.warmup_steps"):
        main([*args, "--debug"])
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_help_lists_every_command_and_option_defaults(capsys):
    from actbert.cli import COMMANDS, main

    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert all(name in top for name in COMMANDS)
    with pytest.raises(SystemExit):
        main(["train-object-classifier", "--help"])
    assert "(default: 128)" in capsys.readouterr().out  # --batch-size
