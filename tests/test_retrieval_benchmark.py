"""benchmarks/retrieval.py at a toy size (seconds): every mode on one gallery, the scaling rows, the JSON and the plot."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "retrieval.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_retrieval", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_planted_store_has_one_distinct_caption_per_gallery_clip(bench, tmp_path):
    words = bench.distinct_words(50, np.random.default_rng(0))
    assert len({bench.caption(w) for w in words}) == 50
    store = bench.write_gallery_store(tmp_path / "s", {"a": words[:3], "b": words[3:4]}, action_dim=8, region_dim=4)
    a = store["a"]
    assert a.clip_times.tolist() == [[0, 2], [2, 4], [4, 6]] and a.second_features.shape == (6, 8)
    assert a.region_features.shape == (6, 3, 4) and (a.region_class_probs.argmax(-1)[:, 0] == np.repeat(words[:3, 2], 2)).all()


def test_toy_run(bench, tmp_path):
    out = tmp_path / "out"
    result = bench.main([
        "--family", "vlm", "--out", str(out), "--gallery", "24", "--exhaustive-queries", "6", "--two-stage-queries", "12",
        "--ks", "4", "24", "--full-ks", "4", "--train-clips", "40", "--train-steps", "2", "--train-batch", "8",
        "--scale", "100", "300", "--embed-max", "100", "--scale-queries", "8", "--rerank-queries", "2", "--batch-size", "16", "--threads", "1",
        "--save-model", str(tmp_path / "model"),
    ])
    saved = json.loads((out / "retrieval_benchmark.json").read_text())
    assert saved["modes"] == json.loads(json.dumps(result["modes"]))
    assert (out / "retrieval_benchmark.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "model" / "config.json").read_text())["architecture"] == "vlm"
    rows = {(r["mode"], r["k"], r["queries"]): r for r in saved["modes"]["rows"]}
    assert set(rows) == {("exhaustive", None, 6), ("bi-encoder", None, 24), ("two-stage", 4, 12), ("two-stage", 24, 12), ("two-stage", 4, 24)}
    exhaustive = rows["exhaustive", None, 6]["subset"]
    # k = the gallery: two-stage reranks every clip, so it ranks as exhaustive does on the shared queries
    full = rows["two-stage", 24, 12]
    assert full["same_rank_as_exhaustive"] == 1.0 and full["subset"] == exhaustive
    assert full["max_abs_diff_vs_exhaustive_on_shortlist"] < 1e-4
    # VLM's pair score is its embedding dot product: the bi-encoder ranks as exhaustive does
    assert rows["bi-encoder", None, 24]["subset"] == exhaustive
    assert "all" in rows["two-stage", 4, 24] and "all" not in rows["two-stage", 4, 12]

    scaling = saved["scaling"]["rows"]
    assert [r["clips"] for r in scaling] == [100, 300]
    assert scaling[0]["embed_extrapolated"] is False and scaling[1]["embed_extrapolated"] is True
    assert scaling[1]["embed_seconds"] == pytest.approx(3 * scaling[0]["embed_seconds"])
    for r in scaling:
        assert set(r["rerank"]) == {"4", "24"} and r["flat"]["k"] == 24
        assert all(0.0 <= v <= 1.0 for v in r["hnsw"]["overlap_with_flat"].values())
