"""`actbert finetune` / `actbert evaluate` on the tiny synthetic benchmark with a tiny model.

The store holds planted features for synth_tiny's videos (tests/helpers_planted_store.py), so no
extraction runs; the commands are called through the real CLI entry point (``actbert.cli.main``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_planted_store import tiny_model, write_planted_store

from actbert.cli import main
from actbert.config import ConfigError
from actbert.tasks import registry


@pytest.fixture(scope="module")
def setup(synth_tiny, tmp_path_factory):
    from actbert.text.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("cli_tasks")
    store = write_planted_store(synth_tiny, root / "store")
    model = tiny_model(store, load_tokenizer())
    model.save_pretrained(root / "model")
    return {"bench": synth_tiny, "store": root / "store", "model": root / "model", "root": root}


def _common(setup, out: Path) -> list[str]:
    return ["--model", str(setup["model"]), "--data", str(setup["bench"]), "--store", str(setup["store"]), "--out", str(out)]


def _results(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]


def test_finetune_retrieval_writes_results_and_reloadable_model(setup, tmp_path, capsys):
    out = tmp_path / "ft"
    code = main(["finetune", "retrieval", *_common(setup, out), "--set", "steps=3", "--set", "train_batch=4",
                 "--set", "max_queries=4", "--variant", "pretrained"])
    assert code == 0
    records = _results(out)
    assert {r["dataset"] for r in records} == {"youcook2", "msrvtt"}
    for r in records:
        assert r["task"] == "retrieval" and r["variant"] == "pretrained"
        assert "fine-tuned" in r["protocol"]
        assert r["metrics"]["num_queries"] == 4
        assert r["finetune"]["steps"] == 3
    mds = sorted(out.glob("*.md"))
    assert len(mds) == 2 and all(m.read_text().startswith("| variant |") for m in mds)
    # the saved model loads and differs from the starting weights (it was trained)
    from actbert.models.pretrained import from_pretrained

    tuned = from_pretrained(out / "model")
    start = from_pretrained(setup["model"])
    diffs = [float((a - b).abs().max()) for a, b in zip(tuned.state_dict().values(), start.state_dict().values())]
    assert max(diffs) > 0
    assert json.loads((out / "model" / "finetune.json").read_text())["task"] == "retrieval"
    # evaluating the saved model reproduces the fine-tune command's scores
    ev = tmp_path / "ev"
    assert main(["evaluate", "retrieval", *_common(setup, ev)[:-2], "--out", str(ev), "--model", str(out / "model"),
                 "--set", "max_queries=4", "--variant", "pretrained"]) == 0
    by_dataset = {r["dataset"]: r for r in records}
    for r in _results(ev):
        assert r["metrics"] == by_dataset[r["dataset"]]["metrics"]
        assert r["ranks"] == by_dataset[r["dataset"]]["ranks"]


def test_segmentation_head_survives_save_and_load(setup, tmp_path):
    out = tmp_path / "seg"
    assert main(["finetune", "segmentation", *_common(setup, out), "--set", "steps=2", "--set", "max_videos=1"]) == 0
    assert (out / "model" / "heads.json").is_file() and (out / "model" / "heads.safetensors").is_file()
    ev = tmp_path / "seg_ev"
    args = ["evaluate", "segmentation", "--model", str(out / "model"), "--data", str(setup["bench"]),
            "--store", str(setup["store"]), "--out", str(ev), "--set", "max_videos=1"]
    assert main(args) == 0
    [a], [b] = _results(out), _results(ev)
    assert a["metrics"] == b["metrics"] and a["metrics"]["num_frames"] > 0
    # the plain pretrained folder has no classifier: a clear error, not a crash
    assert main(["evaluate", "segmentation", *_common(setup, tmp_path / "x")]) == 1


def test_evaluate_step_localization_zero_shot(setup, tmp_path):
    out = tmp_path / "sl"
    assert main(["evaluate", "step_localization", *_common(setup, out), "--set", "units=clips", "--set", "max_videos=2"]) == 0
    [record] = _results(out)
    assert record["task"] == "step_localization" and 0.0 <= record["metrics"]["recall"] <= 100.0
    assert record["metrics"]["num_videos"] == 2


def test_unknown_task_is_a_clear_error(setup, tmp_path, capsys):
    assert main(["finetune", "dancing", *_common(setup, tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'dancing'" in err and "retrieval" in err
    assert main(["evaluate", "dancing", *_common(setup, tmp_path / "o")]) == 2


def test_missing_model_dir_is_a_clear_error(setup, tmp_path, capsys):
    missing = tmp_path / "no_such_model"
    args = ["--model", str(missing), "--data", str(setup["bench"]), "--store", str(setup["store"]), "--out", str(tmp_path / "o")]
    assert main(["finetune", "retrieval", *args]) == 1
    assert str(missing) in capsys.readouterr().err
    assert main(["evaluate", "videoqa", *args]) == 1
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_unknown_set_key_is_a_clear_error(setup, tmp_path, capsys):
    assert main(["finetune", "videoqa", *_common(setup, tmp_path / "o"), "--set", "stepz=3"]) == 1
    err = capsys.readouterr().err
    assert "'stepz'" in err and "steps" in err
    assert main(["evaluate", "retrieval", *_common(setup, tmp_path / "o"), "--set", "max_queries=many"]) == 1
    assert "max_queries" in capsys.readouterr().err


def test_step_localization_has_no_finetune(setup, tmp_path, capsys):
    assert main(["finetune", "step_localization", *_common(setup, tmp_path / "o")]) == 1
    assert "zero-shot" in capsys.readouterr().err


def test_make_settings_types_and_errors():
    s = registry.make_settings("videoqa", ["steps=7", "use_regions=false", "lr=1e-3", "subtasks=multiple_choice"])
    assert (s.steps, s.use_regions, s.lr, s.subtasks) == (7, False, 1e-3, ["multiple_choice"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        registry.make_settings("retrieval", ["steps"])
    with pytest.raises(ConfigError, match="true or false"):
        registry.make_settings("retrieval", ["use_regions=maybe"])
    assert registry.without_regions("captioning", registry.make_settings("captioning")) is None
    assert registry.without_regions("retrieval", registry.make_settings("retrieval")).use_regions is False
