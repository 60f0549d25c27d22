"""``actbert compare`` end to end on the tiny size: ActBERT + VLM, one seed, with ActBERT's
ablations; interrupted after ActBERT's unit, then resumed with two worker processes; the report's
numbers are checked against the metrics the tasks themselves wrote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from actbert.compare import ComparePaths, run_compare


class Interrupt(Exception):
    pass


def test_compare_tiny_two_models_resumes_after_an_interruption(synth_tiny: Path, tmp_path: Path):
    out = tmp_path / "cmp"
    shutil.copytree(synth_tiny, out / "synth")  # the synth stage's output (tiny, seed 0): skipped below

    def stop_at_vlm_pretraining(message: str) -> None:
        if message.endswith("pretrain vlm seed0: running"):
            raise Interrupt(message)

    # one process, unit by unit (ActBERT's pretraining, its tasks, VLM's pretraining, ...): stopped at VLM
    with pytest.raises(Interrupt):
        run_compare(out, models=["actbert", "vlm"], size="tiny", seeds=1, log=stop_at_vlm_pretraining, progress=False)
    paths = ComparePaths(out)
    first = paths.run("actbert", 0).result_file("retrieval", "pretrained")
    assert first.exists() and not paths.run("vlm", 0).result_file("retrieval", "pretrained").exists()
    stamp = first.stat().st_mtime_ns

    # resumed with two worker processes: VLM and the two ablation runs are left, each a unit
    messages: list[str] = []
    report = run_compare(out, models=["actbert", "vlm"], size="tiny", seeds=1, log=messages.append, progress=False, jobs=2)
    stages = json.loads((out / "stages.json").read_text())
    for name in ("synth", "extract", "pretrain actbert seed0", "tasks actbert seed0"):
        assert stages[name]["skipped_last_run"], name
    for run in ("vlm", "actbert-no-tangled", "actbert-no-actions"):
        for stage in ("pretrain", "tasks"):
            assert not stages[f"{stage} {run} seed0"]["skipped_last_run"] and stages[f"{stage} {run} seed0"]["seconds"] > 0
        assert "pretrain: 100%" in (paths.run(run, 0).root / "compare.log").read_text()  # the worker's output went to its log
    assert any("3 unit(s) in 2 worker process(es)" in m for m in messages)
    assert first.stat().st_mtime_ns == stamp  # finished results were not redone

    data = json.loads((out / "report.json").read_text())
    results = data["results"]
    assert {"actbert", "actbert/no-pretraining", "vlm", "vlm/no-pretraining", "actbert/no-regions", "actbert/no-tangled",
            "actbert/no-actions"} <= set(results)
    # every task's per-item outcomes reproduce the metric the task wrote (an independent computation)
    for row, run, variant in (("actbert", "actbert", "pretrained"), ("vlm/no-pretraining", "vlm", "no_pretraining")):
        for task in ("retrieval", "captioning", "videoqa", "segmentation", "step_localization"):
            written = json.loads(paths.run(run, 0).result_file(task, variant).read_text())["records"]
            datasets = results[row][task]["datasets"]
            assert len(datasets) == len(written)
            for record in written:
                d = datasets[f"{record['dataset']} / {record['protocol']}"]
                assert d["values"][0] == pytest.approx(record["metrics"][record["primary"]], abs=1e-9), (row, task)
                iv = d["item_interval"]
                assert iv["low"] <= iv["estimate"] <= iv["high"]
            mean = sum(r["metrics"][r["primary"]] for r in written) / len(written)
            assert results[row][task]["task_mean"]["interval"]["estimate"] == pytest.approx(mean)
    # no region cues: captioning never uses regions, so the row has no captioning entry
    assert "captioning" not in results["actbert/no-regions"]
    verdicts = {(c["a"], c["b"], c["task"]): c["verdict"] for c in data["comparisons"]}
    assert ("actbert", "actbert/no-pretraining", "retrieval") in verdicts and ("actbert", "vlm", "videoqa") in verdicts
    assert set(verdicts.values()) <= {"better", "worse", "not separated"}
    for run in ("actbert", "vlm", "actbert-no-tangled", "actbert-no-actions"):
        flops = data["flops"][run]
        assert flops["flops_per_step"] > 0 and flops["total_flops"] == flops["flops_per_step"] * flops["steps"]
    # the tangled-free ablation really has no tangled layer
    config = json.loads((paths.run("actbert-no-tangled", 0).model / "config.json").read_text())
    assert config.get("text_tangled", config.get("model", {}).get("text_tangled")) == []
    config = json.loads((paths.run("actbert-no-actions", 0).model / "config.json").read_text())
    assert config.get("use_actions", config.get("model", {}).get("use_actions")) is False
    # the tiny profile ranks retrieval queries within sub-galleries of 3 clips
    record = json.loads(paths.run("actbert", 0).result_file("retrieval", "pretrained").read_text())["records"][0]
    assert len(record["gallery_blocks"]) == 2 and max(record["ranks"]) <= 3
    text = report.read_text()
    assert "| ActBERT |" in text and "Paired comparisons" in text and (out / "report" / "tasks.png").exists()
    assert (out / "report" / "pretrain_loss.png").exists()


def test_steps_sets_every_family_s_pretraining_and_is_part_of_the_profile(tmp_path: Path):
    import dataclasses

    from actbert.compare.pipeline import CompareError
    from actbert.compare.profiles import PROFILES, with_steps

    bench = PROFILES["bench"]
    assert [o for o in bench.budget if o.startswith("train.max_steps=")] == ["train.max_steps=1000"]
    short = with_steps(bench, 250)
    assert [o for o in short.budget if o.startswith("train.max_steps=")] == ["train.max_steps=250"]
    assert [o for o in short.budget if not o.startswith("train.max_steps=")] == [o for o in bench.budget if not o.startswith("train.max_steps=")]
    assert with_steps(bench, 0) is bench
    with pytest.raises(CompareError, match="--steps"):
        run_compare(tmp_path / "a", size="tiny", steps=-1, progress=False)
    # a folder run at the profile's own steps refuses another count before any stage runs
    out = tmp_path / "b"
    out.mkdir()
    (out / "compare_settings.json").write_text(json.dumps({"profile": dataclasses.asdict(PROFILES["tiny"])}))
    with pytest.raises(CompareError, match="another profile"):
        run_compare(out, size="tiny", steps=7, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["compare_settings.json"]


def test_results_do_not_depend_on_the_number_of_worker_processes(synth_tiny: Path, tmp_path: Path):
    """The same units, one after the other in this process (``jobs=1``) and two at a time in
    spawned workers (``jobs=2``), both at one torch thread: every number of the report is equal."""
    import torch

    threads = torch.get_num_threads()
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(synth_tiny, one / "synth")
    try:
        run_compare(one, models=["actbert"], size="tiny", seeds=2, ablations=False, progress=False, threads=1, jobs=1,
                    log=lambda m: None)
        # the data stages' outputs (the same features) are shared; the units run again
        for path in one.iterdir():
            if path.name not in ("runs", "report", "stages.json") and not path.name.startswith("report."):
                (shutil.copytree if path.is_dir() else shutil.copy2)(path, two / path.name)
        assert not (two / "runs").exists()
        messages: list[str] = []
        run_compare(two, models=["actbert"], size="tiny", seeds=2, ablations=False, progress=False, threads=1, jobs=2,
                    log=messages.append)
    finally:
        torch.set_num_threads(threads)
    assert any("2 unit(s) in 2 worker process(es)" in m for m in messages)
    results = [json.loads((out / "report.json").read_text())["results"] for out in (one, two)]
    numbers: list[tuple[float, float]] = []

    def pair(a, b) -> None:
        if isinstance(a, dict):
            assert a.keys() == b.keys()
            for key in a:
                pair(a[key], b[key])
        elif isinstance(a, list):
            assert len(a) == len(b)
            for x, y in zip(a, b):
                pair(x, y)
        elif isinstance(a, float):
            numbers.append((a, b))

    pair(*results)
    assert set(results[0]) == {"actbert", "actbert/no-pretraining"} and len(numbers) > 200
    assert [a for a, _ in numbers] == [b for _, b in numbers]
    assert len({a for a, _ in numbers}) > 20  # real metrics, not a table of zeros
