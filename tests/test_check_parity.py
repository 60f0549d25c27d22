"""The shared parity comparison (models/parity.py) and ``actbert check-parity`` on the Paddle fixture."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from actbert.cli import main as cli_main
from actbert.models.parity import ParityError, check_parity, compare, compare_all, format_report

PADDLE = Path(__file__).parent / "fixtures" / "paddle_actbert_small"


def test_compare_rules_by_hand():
    ref = np.array([[0.0, 2.0], [-4.0, 1.0]])
    out = compare("o", "output", ref + np.array([[0, 5e-5], [0, -2e-4]]), ref)
    assert math.isclose(out.diff, 2e-4) and not out.passed
    grad = compare("g", "grad", ref + np.array([[0, 0], [3.9e-3, 0]]), ref)
    assert math.isclose(grad.diff, 3.9e-3 / 4.0) and grad.passed  # relative to max |ref| = 4
    loss = compare("l", "loss", np.float64(7.171924), np.float64(7.17193))
    assert loss.passed and math.isclose(loss.diff, 6e-6, rel_tol=1e-3)
    shape = compare("s", "output", np.zeros((2, 3)), np.zeros((3, 2)))
    assert shape.diff == math.inf and not shape.passed
    nan = compare("n", "output", np.array([np.nan]), np.array([0.0]))
    assert not nan.passed
    with pytest.raises(ParityError, match="unknown comparison kind"):
        compare("x", "weights", ref, ref)


def test_report_lists_the_worst_first_and_the_verdict():
    rows = [("a", "output", np.zeros(3), np.full(3, 1e-6)), ("b", "output", np.zeros(3), np.full(3, 1e-3)),
            ("c", "loss", np.float64(1.0), np.float64(1.0))]
    report = compare_all(rows, "toy", "nowhere")
    assert [c.name for c in report.worst("output")] == ["b", "a"]
    text = format_report(report)
    assert text.splitlines()[-1] == "FAIL" and "FAIL 1.000e-03  b" in text
    assert not compare_all([], "toy").passed  # nothing compared is not a pass


def test_unknown_family_and_missing_folder(tmp_path, capsys):
    with pytest.raises(ParityError, match="unknown family 'nope'"):
        check_parity("nope", tmp_path)
    assert cli_main(["check-parity", "paddle", str(tmp_path / "absent")]) == 2
    assert "absent" in capsys.readouterr().err


def test_paddle_fixture_passes_through_the_command(capsys):
    assert cli_main(["check-parity", "paddle", str(PADDLE)]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("PASS") and "prediction_scores_t" in out and "loss.total" in out


def test_paddle_changed_reference_fails(tmp_path, capsys):
    folder = tmp_path / "paddle"
    shutil.copytree(PADDLE, folder)
    outputs = dict(np.load(folder / "outputs.npz", allow_pickle=False))
    outputs["seq_relationship_score"] = outputs["seq_relationship_score"] + 5e-4
    np.savez(folder / "outputs.npz", **outputs)
    assert cli_main(["check-parity", "paddle", str(folder), "--json", str(tmp_path / "r.json")]) == 1
    assert "FAIL" in capsys.readouterr().out
    import json

    rows = {r["name"]: r for r in json.loads((tmp_path / "r.json").read_text())["comparisons"]}
    assert not rows["seq_relationship_score"]["passed"] and rows["prediction_scores_t"]["passed"]
