"""Numerical parity of the ``vlm`` family with fairseq's MMPT (reference folder ``shared/fixtures/vlm_small``).

The folder holds the weights, inputs, outputs, intermediates, losses and gradients of the original
code (MMFusionMTM / MMFusionJoint / MMFusionShare on transformers 3.4) for a small random model.
Tolerances: outputs 1e-4 absolute, losses 1e-5, gradients 1e-3 relative (the folder itself is
within 5e-6 of float64, its README says).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from actbert.cli import main as cli_main
from actbert.errors import CheckpointError
from actbert.models.parity import check_parity
from actbert.models.torch_checkpoint import OpaqueObject, UnsafePickleError, read_torch_zip
from actbert.models.vlm.convert import load_mmpt_checkpoint, read_mmpt_state
from actbert.models.vlm.configuration import VLMConfig
from actbert.models.vlm.convert import load_mmpt_state, ours_to_mmpt
from actbert.models.vlm.modeling import VLMForPretraining
from actbert.models.vlm.parity import config_overrides, load_fixture_model
from actbert.models.vlm.processing import VLMBatch

torch.set_num_threads(1)

# the reference folder produced by the original code, copied beside the tests (../shared/fixtures/vlm_small);
# ACTBERT_VLM_FIXTURE points the tests at another folder of the same layout
FIXTURE = Path(os.environ.get("ACTBERT_VLM_FIXTURE", Path(__file__).parent / "fixtures" / "vlm_small"))


def _npz(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURE / name, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


@pytest.fixture(scope="module")
def report():
    return check_parity("vlm", FIXTURE)


def test_check_parity_command_passes_on_the_fixture(capsys):
    assert cli_main(["check-parity", "vlm", str(FIXTURE)]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("PASS")
    assert "output" in out and "loss" in out and "grad" in out


def test_every_stored_array_is_compared_and_within_tolerance(report):
    names = {c.name for c in report.comparisons}
    stored = set(_npz("outputs.npz")) | set(_npz("intermediates.npz"))
    assert stored <= names  # nothing the folder holds is skipped
    assert {"mtm", "retrieval_t2v", "share_mmcontra"} <= names
    grads = {f"mtm:{k}" for k in _npz("grads.npz")} | {f"retrieval_t2v:{k}" for k in _npz("grads_retrieval.npz")}
    assert grads <= names
    worst = {kind: max(c.diff for c in report.comparisons if c.kind == kind) for kind in ("output", "loss", "grad")}
    print("worst |ours - MMPT| per kind:", worst)
    assert not report.failed, [(c.name, c.diff) for c in report.failed]
    # well inside the tolerances: float32 rounding (the fixture's own float64 error is <= 5e-6)
    assert worst["output"] < 2e-5 and worst["loss"] < 5e-6 and worst["grad"] < 1e-5


def test_losses_equal_the_recorded_values():
    loss = json.loads((FIXTURE / "loss.json").read_text())
    model = load_fixture_model(FIXTURE)
    inputs = _npz("inputs.npz")
    batch = VLMBatch(torch.from_numpy(inputs["mtm_caps"]), torch.from_numpy(inputs["cmasks"]), torch.from_numpy(inputs["vfeats"]),
                     torch.from_numpy(inputs["vmasks"]), torch.from_numpy(inputs["video_label"]), torch.from_numpy(inputs["text_label"]))
    with torch.no_grad():
        upstream = model.mtm(batch)
        model.config.mtm_zero_text_logit = False  # the paper's loss: no constant 0 text logit
        fixed = model.mtm(batch)
    assert abs(float(upstream.loss) - loss["mtm"]["value"]) < 1e-5
    # the README's float64 recomputation without the zero column (4.6e-4 lower) is the default loss
    assert abs(float(fixed.loss) - loss["mtm"]["float64_reference_from_saved_logits"]["without_the_zero_text_column"]) < 1e-5
    assert abs(float(upstream.loss) - float(fixed.loss)) > 3e-4
    assert upstream.video_logits.shape[0] == loss["mtm"]["n_masked_frames"]
    assert upstream.text_logits.shape == (loss["mtm"]["n_masked_text"], loss["mtm"]["width"])


def _copy_fixture(tmp_path: Path) -> Path:
    folder = tmp_path / "vlm_copy"
    shutil.copytree(FIXTURE, folder)
    for f in folder.iterdir():
        f.chmod(0o644)
    return folder


def test_a_changed_weight_fails_and_exits_1(tmp_path, capsys):
    folder = _copy_fixture(tmp_path)
    weights = dict(np.load(folder / "weights.npz", allow_pickle=False))
    key = "mm_encoder.videomlp.LayerNorm.weight"
    weights[key] = weights[key] * 1.01  # a 1% change in one LayerNorm scale
    np.savez(folder / "weights.npz", **weights)
    assert cli_main(["check-parity", "vlm", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out.splitlines()[-1]


def test_a_missing_file_is_a_clear_error(tmp_path, capsys):
    folder = _copy_fixture(tmp_path)
    (folder / "inputs.npz").unlink()
    assert cli_main(["check-parity", "vlm", str(folder)]) == 2
    assert "inputs.npz" in capsys.readouterr().err


def test_another_folder_of_the_layout_runs(tmp_path):
    """A folder of other sizes (2 layers, 5 video slots, 3 heads) is checked from its own files, not vlm_small's."""
    meta = json.loads((FIXTURE / "config.json").read_text())
    meta["bert_config"].update(num_hidden_layers=2, num_attention_heads=3, hidden_size=24, intermediate_size=40)
    meta["mmpt_config"].update(max_video_len=5, max_len=14, num_iso_layer_for_retrieval=2)
    rng = np.random.default_rng(0)
    shapes = VLMForPretraining(VLMConfig(vocab_size=500, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                                         intermediate_size=40, max_position_embeddings=32, input_dim=40,
                                         max_video_len=5, max_len=14)).state_dict()
    model, _ = load_mmpt_state({ours_to_mmpt(k): rng.normal(0, 0.2, v.shape).astype(np.float32) for k, v in shapes.items()},
                               config_overrides(meta))
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(meta))
    np.savez(folder / "weights.npz", **{ours_to_mmpt(k): v.numpy() for k, v in model.state_dict().items()})
    b, lv, lc = 3, 5, 9
    caps = np.zeros((b, lc), np.int64)
    cmasks = np.zeros((b, lc), bool)
    for i, n in enumerate([6, 4, 2]):
        caps[i, : n + 3] = [101, 102, *rng.integers(104, 500, n), 102]
        cmasks[i, : n + 3] = True
    vmasks = np.array([[1] * 5, [1] * 3 + [0] * 2, [1] * 4 + [0]], bool)
    vfeats = rng.normal(size=(b, lv, 40)).astype(np.float32) * vmasks[..., None]
    mtm_caps = caps.copy()
    text_label = np.full_like(caps, -100)
    text_label[0, 3], mtm_caps[0, 3] = caps[0, 3], 103
    video_label = np.zeros_like(vmasks)
    video_label[1, 1] = True
    np.savez(folder / "inputs.npz", caps=caps, cmasks=cmasks, vfeats=vfeats, vmasks=vmasks, mtm_caps=mtm_caps,
             text_label=text_label, video_label=video_label)
    with torch.no_grad():
        out = model.joint(torch.from_numpy(caps), torch.from_numpy(cmasks), torch.from_numpy(vfeats), torch.from_numpy(vmasks))
    np.savez(folder / "outputs.npz", joint_sequence_output=out.sequence_output.numpy())
    report = check_parity("vlm", folder)
    assert report.passed and {c.name for c in report.comparisons} >= {"joint_sequence_output"}
    # a wrong reference fails
    np.savez(folder / "outputs.npz", joint_sequence_output=out.sequence_output.numpy() + 1e-3)
    assert not check_parity("vlm", folder).passed


def test_mmpt_torch_checkpoint_loads_without_running_its_pickle(tmp_path):
    """A fairseq-style checkpoint (prefix mmmodel., config objects beside the weights) reads through the
    restricted reader: weights as in weights.npz, the foreign objects inert, a hostile global never called."""
    import argparse

    weights = dict(np.load(FIXTURE / "weights.npz", allow_pickle=False))
    marker = tmp_path / "pwned"

    class Hostile:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    state = {"mmmodel." + k: torch.from_numpy(v) for k, v in weights.items()}
    path = tmp_path / "checkpoint_best.pt"
    torch.save({"model": state, "args": argparse.Namespace(lr=[5e-5]), "extra": Hostile()}, path)
    with pytest.raises(UnsafePickleError, match="argparse.Namespace|posix.system|os.system"):
        read_torch_zip(path)  # strict (the default): any foreign global is refused before it runs
    assert not marker.exists()
    obj, opaque = read_torch_zip(path, strict=False)  # MMPT's reader: foreign objects kept inert
    assert not marker.exists()
    assert any("system" in name for name in opaque) and any("Namespace" in name for name in opaque)
    assert isinstance(obj["extra"], OpaqueObject)
    read = read_mmpt_state(path)
    assert set(read) == {"mmmodel." + k for k in weights}
    assert all(np.array_equal(read["mmmodel." + k], v) for k, v in weights.items())
    meta = json.loads((FIXTURE / "config.json").read_text())
    model, report = load_mmpt_checkpoint(path, config_overrides(meta))
    assert report.unused == [] and report.missing == []
    reference = load_fixture_model(FIXTURE)
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name


def test_retrieval_checkpoint_without_head_and_wrong_family(tmp_path):
    meta = json.loads((FIXTURE / "config.json").read_text())
    weights = dict(np.load(FIXTURE / "weights.npz", allow_pickle=False))
    joint = {k: v for k, v in weights.items() if ".cls." not in k}  # MMFusionJoint's state dict
    np.savez(tmp_path / "joint.npz", **joint)
    model, report = load_mmpt_checkpoint(tmp_path / "joint.npz", config_overrides(meta))
    assert report.missing_head and all(".cls." in k for k in report.missing)
    # a PaddleVideo ActBERT checkpoint is not a VLM one: the error names the file and the missing key
    paddle = Path(__file__).parent / "fixtures" / "paddle_actbert_small" / "weights.npz"
    with pytest.raises(CheckpointError, match=r"weights\.npz: missing .mm_encoder\.videomlp\.linear1\.weight.*MMPT VLM"):
        load_mmpt_checkpoint(paddle, {"num_attention_heads": 4})
    # an untied decoder is refused
    untied = dict(weights)
    untied["mm_encoder.cls.predictions.decoder.weight"] = untied["mm_encoder.cls.predictions.decoder.weight"] + 1
    np.savez(tmp_path / "untied.npz", **untied)
    with pytest.raises(CheckpointError, match="decoder.weight"):
        load_mmpt_checkpoint(tmp_path / "untied.npz", config_overrides(meta))
    with zipfile.ZipFile(tmp_path / "bad.pt", "w") as z:
        z.writestr("x/other.txt", "no pickle here")
    with pytest.raises(CheckpointError, match="bad.pt"):
        read_mmpt_state(tmp_path / "bad.pt")
