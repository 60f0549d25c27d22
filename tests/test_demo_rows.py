"""The demo's rows follow the paper's protocols: retrieval is reported zero-shot on YouCook2 and MSR-VTT
and fine-tuned on MSR-VTT only (fine-tuning is on MSR-VTT's training split; the paper has no
"YouCook2 after MSR-VTT fine-tuning" row)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers_planted_store import tiny_model, write_planted_store
from actbert.demo.profiles import PROFILES, DemoPaths
from actbert.demo.pipeline import run_tasks
from actbert.text.tokenizer import load_tokenizer
from actbert.utils.io import read_json


@pytest.fixture(scope="module")
def demo_root(synth_tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_rows")
    paths = DemoPaths(root)
    root.joinpath("synth").symlink_to(synth_tiny, target_is_directory=True)
    store = write_planted_store(synth_tiny, paths.store)
    torch.manual_seed(0)
    tiny_model(store, load_tokenizer()).save_pretrained(paths.model)
    return paths


def test_retrieval_rows_are_the_papers(demo_root):
    profile = dataclasses.replace(PROFILES["quick"], tasks={"retrieval": {"steps": 2, "max_queries": 6, "train_batch": 2}})
    run_tasks(demo_root, profile, seed=0, tasks=["retrieval"], log=lambda _m: None)
    for variant in ("pretrained", "no_pretraining", "no_regions"):
        records = read_json(demo_root.result_file("retrieval", variant))["records"]
        rows = [(r["dataset"], r["protocol"]) for r in records]
        assert rows == [("youcook2", "validation clips, zero-shot"), ("msrvtt", "1k-A, zero-shot"),
                        ("msrvtt", "1k-A, fine-tuned")], variant
