"""Reading PaddleVideo checkpoints safely, config inference, name mapping and the convert-paddle CLI."""

from __future__ import annotations

import builtins
import json
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from actbert.models.paddlevideo.convert import (
    CheckpointError,
    UnsafePickleError,
    convert_state_dict,
    infer_config,
    load_converted,
    load_paddle_checkpoint,
    paddle_to_torch_name,
    read_npz,
    read_paddle_state,
    read_pdparams,
    torch_to_paddle_name,
)
from actbert.models.paddlevideo.modeling import PaddleVideoActBert

torch.set_num_threads(1)

FIXTURE = Path(__file__).parent / "fixtures" / "paddle_actbert_small"
KWARGS = json.loads((FIXTURE / "config.json").read_text())["kwargs"]
HEADS = {k: KWARGS[k] for k in ("num_attention_heads", "v_num_attention_heads", "a_num_attention_heads", "bi_num_attention_heads")}


def _weights() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "weights.npz", allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


class _RunsCode:
    """An object whose unpickling would call ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize(
    "make_payload",
    [
        lambda marker: _RunsCode(os.system, f"touch {marker}"),
        lambda marker: _RunsCode(builtins.exec, f"open({str(marker)!r}, 'w').write('ran')"),
        lambda marker: _RunsCode(builtins.eval, f"open({str(marker)!r}, 'w').write('ran')"),
    ],
    ids=["os.system", "builtins.exec", "builtins.eval"],
)
def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path, make_payload):
    marker = tmp_path / "marker"
    state = {"bert.embeddings.word_embeddings.weight": np.zeros((2, 2), np.float32), "evil": make_payload(marker)}
    path = tmp_path / "hostile.pdparams"
    path.write_bytes(pickle.dumps(state, protocol=4))
    with pytest.raises(UnsafePickleError) as info:
        read_pdparams(path)
    message = str(info.value)
    assert str(path) in message
    assert "refused" in message
    assert ("system" in message) or ("exec" in message) or ("eval" in message)
    assert not marker.exists()
    # Through the converter entry point too.
    with pytest.raises(UnsafePickleError):
        load_paddle_checkpoint(path)
    assert not marker.exists()


def test_restricted_unpickler_accepts_arrays_in_containers():
    import io

    from actbert.models.paddlevideo.convert import RestrictedUnpickler

    data = pickle.dumps({"w": np.arange(3, dtype=np.float32), "o": OrderedDict(a=np.ones(2, np.float32))}, protocol=2)
    loaded = RestrictedUnpickler(io.BytesIO(data), "mem").load()
    np.testing.assert_array_equal(loaded["w"], np.arange(3, dtype=np.float32))
    assert isinstance(loaded["o"], OrderedDict)


def test_pdparams_reads_fixture_and_skips_bookkeeping():
    state = read_pdparams(FIXTURE / "model.pdparams")
    assert "StructuredToParameterName@@" not in state
    npz = read_npz(FIXTURE / "weights.npz")
    assert set(state) == set(npz)
    assert len(state) == 281  # the 281 parameter entries; the bookkeeping key is dropped
    for key in state:
        np.testing.assert_array_equal(state[key], npz[key])


def test_protocol2_numpy_pickle_is_accepted(tmp_path):
    # Old numpy / Paddle pickles store array bytes through _codecs.encode(..., 'latin1').
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.float32(2.5) * np.ones(3, np.float32)}
    path = tmp_path / "old.pdparams"
    path.write_bytes(pickle.dumps(arrays, protocol=2))
    state = read_pdparams(path)
    np.testing.assert_array_equal(state["a"], arrays["a"])


def test_non_array_entries_and_garbage_are_clear_errors(tmp_path):
    path = tmp_path / "strings.pdparams"
    path.write_bytes(pickle.dumps({"w": "not an array"}, protocol=4))
    with pytest.raises(CheckpointError, match=r"strings\.pdparams.*'w'"):
        read_pdparams(path)
    garbage = tmp_path / "garbage.pdparams"
    garbage.write_bytes(b"\x80\x04this is not a pickle")
    with pytest.raises(CheckpointError, match="garbage.pdparams"):
        read_pdparams(garbage)
    object_npz = tmp_path / "objects.npz"
    np.savez(object_npz, w=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="objects.npz"):
        read_npz(object_npz)
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        bad = tmp_path / "weights.bin"
        bad.write_bytes(b"hello")
        read_paddle_state(bad)


def test_infer_config_from_shapes_and_defaults():
    config, inferred, assumed = infer_config(_weights(), HEADS)
    for name in ("vocab_size", "hidden_size", "v_hidden_size", "bi_hidden_size", "v_target_size", "a_target_size",
                 "num_hidden_layers", "v_num_hidden_layers", "a_num_hidden_layers", "intermediate_size",
                 "v_intermediate_size", "a_intermediate_size", "max_position_embeddings", "v_feature_size", "a_feature_size"):
        assert getattr(config, name) == KWARGS[name], name
        assert name in inferred
    # Connection-layer placement defaults to the last text layers / first vision and action layers.
    assert config.t_ent_attention_id == [2, 3]
    assert config.v_ent_attention_id == [0, 1] and config.a_ent_attention_id == [0, 1]
    assert "t_ent_attention_id" in assumed and "num_attention_heads" not in assumed
    # Without head options the released model's 12 text heads are assumed; they do not divide width 32.
    with pytest.raises(CheckpointError, match="num_attention_heads"):
        infer_config(_weights(), {})
    with pytest.raises(CheckpointError, match="hidden_size=64 contradicts"):
        infer_config(_weights(), {**HEADS, "hidden_size": 64})
    with pytest.raises(CheckpointError, match="3 entries but the checkpoint has 2"):
        infer_config(_weights(), {**HEADS, "t_ent_attention_id": [1, 2, 3]})


def test_name_mapping_round_trips_and_is_nearly_identity():
    model = PaddleVideoActBert(infer_config(_weights(), HEADS)[0])
    renamed = 0
    for key in _weights():
        name = paddle_to_torch_name(key)
        renamed += name != key
        assert torch_to_paddle_name(name) == key
    assert renamed == 2 * 3 * 2 * 2  # c_layer x stream x {dense, LayerNorm} x {weight, bias}
    assert paddle_to_torch_name("bert.encoder.c_layer.1.ent_output.LayerNorm3.bias") == "bert.encoder.c_layer.1.ent_output3.LayerNorm.bias"
    assert set(model.state_dict()) == {paddle_to_torch_name(k) for k in _weights() if k != "cls.predictions.decoder_weight"}


def test_missing_unused_shape_and_tie_errors():
    config = infer_config(_weights(), HEADS)[0]
    model = PaddleVideoActBert(config)
    state = _weights()
    state["extra.head.weight"] = np.zeros(3, np.float32)
    del state["bert.encoder.c_layer.0.ent_attention.value_av.bias"]
    with pytest.raises(CheckpointError, match=r"1 model parameters missing.*value_av\.bias"):
        convert_state_dict(state, model, "ckpt")
    tensors, report = convert_state_dict(state, model, "ckpt", allow_missing=True)
    assert report.unused == ["extra.head.weight"]
    assert report.missing == ["bert.encoder.c_layer.0.ent_attention.value_av.bias"]
    # Linear weights are transposed: Paddle [in, out] -> torch [out, in].
    w = _weights()["bert.encoder.c_layer.0.ent_attention.key2.weight"]
    assert w.shape == (32, 40)
    np.testing.assert_array_equal(tensors["bert.encoder.c_layer.0.ent_attention.key2.weight"].numpy(), w.T)

    untied = _weights()
    untied["cls.predictions.decoder_weight"] = untied["cls.predictions.decoder_weight"] + 1.0
    with pytest.raises(CheckpointError, match="differs from"):
        convert_state_dict(untied, model, "ckpt")

    wrong = _weights()
    wrong["bert.t_pooler.dense.weight"] = wrong["bert.t_pooler.dense.weight"].T.copy()
    with pytest.raises(CheckpointError, match=r"bert\.t_pooler\.dense\.weight.*shape"):
        convert_state_dict(wrong, model, "ckpt")


def test_other_checkpoint_is_rejected(tmp_path):
    # e.g. a BERT-only checkpoint: no region / action embeddings.
    path = tmp_path / "bert.npz"
    np.savez(path, **{"bert.embeddings.word_embeddings.weight": np.zeros((10, 4), np.float32)})
    with pytest.raises(CheckpointError, match=r"bert\.npz: missing 'bert\.v_embeddings\.image_embeddings"):
        load_paddle_checkpoint(path)


def _load_folder(folder: Path):
    try:
        from actbert.models.pretrained import from_pretrained  # type: ignore[attr-defined]
    except ImportError:
        return load_converted(folder)
    return from_pretrained(folder)


def test_convert_paddle_cli_writes_from_pretrained_folder(tmp_path):
    from actbert.cli import main

    out = tmp_path / "converted"
    args = [str(FIXTURE / "model.pdparams"), str(out)]
    for name, value in HEADS.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    assert main(["convert-paddle", *args]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "paddlevideo"
    assert config["bi_num_attention_heads"] == 4 and config["t_ent_attention_id"] == [2, 3]
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["unused"] == [] and report["missing"] == [] and report["skipped"] == ["StructuredToParameterName@@"]

    model = _load_folder(out)
    assert isinstance(model, PaddleVideoActBert)
    from safetensors.torch import load_file

    stored = load_file(str(out / "model.safetensors"))
    assert "cls.predictions.decoder_weight" not in stored  # tied: stored once
    ref = _weights()
    np.testing.assert_array_equal(
        model.bert.embeddings.word_embeddings.weight.detach().numpy(), ref["cls.predictions.decoder_weight"]
    )

    # The loaded folder reproduces the Paddle reference outputs.
    with np.load(FIXTURE / "inputs.npz") as inputs, np.load(FIXTURE / "outputs.npz") as outputs:
        order = json.loads((FIXTURE / "config.json").read_text())["forward_argument_order"]
        with torch.no_grad():
            scores = model(*[torch.from_numpy(inputs[k]) for k in order])
        np.testing.assert_allclose(scores.seq_relationship_score.numpy(), outputs["seq_relationship_score"], atol=1e-4)
        np.testing.assert_allclose(scores.prediction_scores_t.numpy(), outputs["prediction_scores_t"], atol=1e-4)
    again = PaddleVideoActBert.from_pretrained(out)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name

    # Bad input: a wrong head count is refused with a message naming the field, exit code 1.
    assert main(["convert-paddle", str(FIXTURE / "weights.npz"), str(tmp_path / "bad"), "--bi-num-attention-heads", "3"]) == 1
    assert not (tmp_path / "bad" / "model.safetensors").exists()


def test_paddle_config_json_option(tmp_path):
    from actbert.cli import main

    out = tmp_path / "from_json"
    assert main(["convert-paddle", str(FIXTURE / "weights.npz"), str(out), "--paddle-config", str(FIXTURE / "config.json")]) == 0
    config = json.loads((out / "config.json").read_text())
    assert {k: config[k] for k in KWARGS} == KWARGS


def _hostile_payloads(marker: Path) -> dict[str, bytes]:
    """Hand-written pickles that would run code or read files if their globals were resolved."""
    cmd = f"touch {marker}".encode()
    return {
        # protocol 0: GLOBAL opcode + REDUCE
        "os.system/p0": b"cos\nsystem\n(S'" + cmd + b"'\ntR.",
        "posix.system/p0": b"cposix\nsystem\n(S'" + cmd + b"'\ntR.",
        # INST opcode (builds by calling the class)
        "subprocess.Popen/inst": b"(S'touch'\nS'" + str(marker).encode() + b"'\nisubprocess\nPopen\n.",
        # a numpy global outside the allow-list (numpy.load would open another file with pickles)
        "numpy.load/p2": pickle.dumps(_RunsCode(np.load, str(marker)), protocol=2),
        # nested inside an otherwise valid state dict, protocol 5
        "nested/p5": pickle.dumps({"a": np.zeros(2, np.float32), "b": [OrderedDict(x=_RunsCode(os.system, f"touch {marker}"))]}, protocol=5),
    }


def test_hostile_pickles_refused_by_every_entry_point(tmp_path):
    from actbert.cli import main

    marker = tmp_path / "marker"
    for name, payload in _hostile_payloads(marker).items():
        # .pdparams, and an unknown suffix (a protocol >= 2 pickle is sniffed and sent to the
        # restricted unpickler; a protocol-0 text pickle is not recognised at all)
        for suffix in (".pdparams", ".bin"):
            path = tmp_path / f"{name.replace('/', '_')}{suffix}"
            path.write_bytes(payload)
            expected = UnsafePickleError if suffix == ".pdparams" or payload[:1] == b"\x80" else CheckpointError
            with pytest.raises(expected, match=str(path.name)):
                read_paddle_state(path)
            out = tmp_path / f"out_{path.stem}{suffix}"
            assert main(["convert-paddle", str(path), str(out)]) == 1
            assert not (out / "model.safetensors").exists()
        # A pickle renamed to .npz goes through numpy with allow_pickle=False: refused as well.
        npz = tmp_path / f"{name.replace('/', '_')}.npz"
        npz.write_bytes(payload)
        with pytest.raises(CheckpointError, match=r"\.npz"):
            read_paddle_state(npz)
        assert not marker.exists(), name


def test_codecs_encode_allowed_only_for_latin1(tmp_path):
    # _codecs.encode is allowed because protocol-2 numpy pickles store bytes as latin-1 text;
    # any other use of it is refused.
    payload = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    path = tmp_path / "codecs.pdparams"
    path.write_bytes(payload)
    with pytest.raises(CheckpointError, match="latin-1"):
        read_pdparams(path)
