"""VideoBERT end to end on the tiny synthetic benchmark: the visual vocabulary and pretraining through
the same entry points as every family (build_visual_vocab, train.loop.train), then all five
downstream tasks through the shared harness, each surviving save + load."""

from __future__ import annotations

import math

import pytest
import torch

from helpers_planted_store import write_planted_store
from helpers_tasks import TASKS, run_task

from actbert.train.config import load_pretrain_config

torch.set_num_threads(1)

@pytest.fixture(scope="module")
def pretrained(synth_tiny, tmp_path_factory):
    from actbert.models.videobert.visual_vocab import build_visual_vocab
    from actbert.train.loop import train

    root = tmp_path_factory.mktemp("vb_e2e")
    store = write_planted_store(synth_tiny, root / "store")
    data = [f"data.store={store.root}", f"data.narrations={synth_tiny / 'narrations.json'}",
            f"data.splits={synth_tiny / 'splits.json'}", "data.random=false", "train.progress=false"]
    build_visual_vocab(load_pretrain_config("videobert-tiny", data), root / "vocab")
    cfg = load_pretrain_config("videobert-tiny", [*data, f"model.visual_vocab={root / 'vocab'}", "train.max_steps=6",
                                                  "train.checkpoint_every=0", "train.batch_size=4"])
    summary = train(cfg, root / "run")
    return root, store, summary


def test_pretraining_logs_the_three_regimes_losses(pretrained):
    from actbert.train.metrics_log import read_metrics

    root, _, summary = pretrained
    assert summary["steps"] == 6 and summary["model_dir"]
    records = read_metrics(root / "run" / "metrics.jsonl")
    names = set().union(*records) - {"step", "epoch", "lr", "samples_per_s", "tokens_per_s", "loss"}
    assert names, records[0]
    for r in records:
        assert math.isfinite(r["loss"])
        assert all(r[k] is None or math.isfinite(r[k]) for k in names)


@pytest.mark.parametrize("task", TASKS)
def test_all_tasks_run_on_a_videobert_folder(pretrained, synth_tiny, task, tmp_path):
    from actbert.tasks import registry
    from actbert.tasks.common import Benchmark

    root, store, _ = pretrained
    model = registry.load_for_evaluation(task, root / "run" / "model")
    run_task(task, model, registry.build_assembler(store.root, model), Benchmark(synth_tiny), tmp_path / "finetuned")
