"""The demo's results -> table / win count logic (pure functions of result files)."""

from __future__ import annotations

from actbert.demo.report import results_table, task_scores, wins


def _record(dataset: str, protocol: str, value: float | None, primary: str = "R@5") -> dict:
    return {"dataset": dataset, "protocol": protocol, "primary": primary, "metrics": {primary: value}}


def _results() -> dict:
    zero_shot, tuned = "1k-A, zero-shot", "1k-A, fine-tuned"
    return {
        "retrieval": {
            "pretrained": {"records": [_record("msrvtt", zero_shot, 30.0), _record("msrvtt", tuned, 50.0)]},
            "no_pretraining": {"records": [_record("msrvtt", zero_shot, 10.0), _record("msrvtt", tuned, 60.0)]},
            "no_regions": {"records": [_record("msrvtt", zero_shot, 5.0), _record("msrvtt", tuned, 20.0)]},
        },
        "captioning": {
            "pretrained": {"records": [_record("youcook2", "greedy", 0.5, "CIDEr")]},
            "no_pretraining": {"records": [_record("youcook2", "greedy", 0.5, "CIDEr")]},
            "no_regions": {"records": [], "not_applicable": "never uses regions"},
        },
    }


def test_rows_pair_records_by_dataset_and_protocol():
    table = results_table(_results())
    rows = [line for line in table.splitlines() if line.startswith("| retrieval")]
    assert len(rows) == 2
    # zero-shot row shows the zero-shot values of every variant, not the first msrvtt record found
    assert rows[0].split(" | ")[4:7] == ["30.00", "10.00", "5.00"]
    assert rows[0].rstrip(" |").endswith("yes")
    assert rows[1].split(" | ")[4:7] == ["50.00", "60.00", "20.00"]
    assert rows[1].rstrip(" |").endswith("no")
    assert "= pretrained" in next(line for line in table.splitlines() if line.startswith("| captioning"))


def test_task_means_and_wins_count_ties_as_losses():
    scores = task_scores(_results())
    assert scores["retrieval"]["pretrained"] == 40.0
    assert scores["retrieval"]["no_pretraining"] == 35.0
    assert scores["captioning"]["no_regions"] is None
    assert wins(scores) == ["retrieval"]  # captioning is a tie: not a win
