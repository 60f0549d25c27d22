"""Parity of the ``vlm`` family with fairseq's MMPT on a reference folder of the ``vlm_small`` layout.

The folder (``/work/shared/fixtures/vlm_small/README.md`` documents every array) holds MMPT's
weights under upstream names, a clean batch, an MTM-masked batch and what MMPT computed from them:
(a) the joint encoder, (b)+(c) the masked token step, (d1) retrieval in training mode (one joint pass
under the isolated mask) with its T2V loss and gradients, (d2) retrieval in test mode (separate
passes), (d3) ``MMFusionShare``'s two passes. :func:`fixture_comparisons` reruns all of it on our
model, built from the folder's own ``weights.npz`` and ``config.json`` (any sizes, seeds, layer
counts, lengths), and yields ``(name, kind, ours, reference)`` for every array the folder holds.

The fixture is the upstream code, so the model runs with ``mtm_zero_text_logit: true`` (the
constant 0 text logit of ``losses.MTM``; off by default, docs/vlm.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from actbert.errors import ActBertError
from actbert.models.vlm.convert import load_mmpt_state, mmpt_to_ours, read_mmpt_state
from actbert.models.vlm.modeling import VLMForPretraining, mm_contrastive_loss, t2v_contrastive_loss
from actbert.models.vlm.processing import VLMBatch


class VLMFixtureError(ActBertError):
    """A reference folder that does not have the vlm_small layout (names the file and field)."""


def _npz(path: Path, required: bool = True) -> dict[str, np.ndarray]:
    if not path.is_file():
        if required:
            raise VLMFixtureError(f"{path}: not found (a VLM reference folder holds weights.npz, inputs.npz, config.json)")
        return {}
    with np.load(path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


def _json(path: Path, required: bool = True) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise VLMFixtureError(f"{path}: not found")
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise VLMFixtureError(f"{path}: not valid JSON ({exc})") from exc


def config_overrides(meta: dict[str, Any], source: str = "config.json") -> dict[str, Any]:
    """The VLM config fields a reference folder's ``config.json`` fixes (beyond the weight shapes)."""
    bert = meta.get("bert_config")
    mmpt = meta.get("mmpt_config")
    if not isinstance(bert, dict) or not isinstance(mmpt, dict):
        raise VLMFixtureError(f"{source}: fields 'bert_config' and 'mmpt_config' are required")
    special = meta.get("special_token_ids", {})
    try:
        out = {
            "num_attention_heads": int(bert["num_attention_heads"]),
            "hidden_act": bert.get("hidden_act", "gelu"),
            "layer_norm_eps": float(bert.get("layer_norm_eps", 1e-12)),
            "pad_token_id": int(bert.get("pad_token_id", special.get("pad", 0))),
            "max_video_len": int(mmpt["max_video_len"]),
            "max_len": int(mmpt["max_len"]),
            "mlm_probability": float(mmpt.get("mlm_probability", 0.15)),
            "mfm_probability": float(mmpt.get("mfm_probability", 0.15)),
            "num_iso_layer": int(mmpt.get("num_iso_layer_for_retrieval", bert["num_hidden_layers"])),
            "mtm_zero_text_logit": True,  # upstream losses.MTM
        }
    except KeyError as exc:
        raise VLMFixtureError(f"{source}: field {exc.args[0]!r} missing") from exc
    for ours, theirs in (("cls_token_id", "cls"), ("sep_token_id", "sep"), ("mask_token_id", "mask")):
        if theirs in special:
            out[ours] = int(special[theirs])
    return out


def load_fixture_model(folder: str | Path) -> VLMForPretraining:
    """Our model with the folder's upstream weights (eval mode: no dropout, as the fixture)."""
    folder = Path(folder)
    meta = _json(folder / "config.json")
    raw = read_mmpt_state(folder / "weights.npz")
    model, _ = load_mmpt_state(raw, config_overrides(meta, str(folder / "config.json")), str(folder / "weights.npz"))
    return model.eval()


def _batch(inputs: dict[str, np.ndarray], masked: bool, source: str) -> VLMBatch:
    def get(name: str) -> torch.Tensor:
        if name not in inputs:
            raise VLMFixtureError(f"{source}: field {name!r} missing")
        return torch.from_numpy(np.ascontiguousarray(inputs[name]))

    return VLMBatch(
        caps=get("mtm_caps" if masked else "caps").long(),
        cmasks=get("cmasks").bool(),
        vfeats=get("vfeats").float(),
        vmasks=get("vmasks").bool(),
        video_label=get("video_label").bool() if masked else None,
        text_label=get("text_label").long() if masked else None,
    )


def _grads(model: VLMForPretraining, reference: dict[str, np.ndarray], loss: torch.Tensor, label: str, source: str) -> Iterator[tuple]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    params = dict(model.named_parameters())
    for key, ref in reference.items():
        name = mmpt_to_ours(key)
        if name == "cls.predictions.decoder.weight":
            name = "bert.embeddings.word_embeddings.weight"
        if name not in params:
            raise VLMFixtureError(f"{source}: gradient {key!r} names no parameter of the model")
        grad = params[name].grad
        ours = np.zeros_like(ref) if grad is None else grad.detach().numpy()
        yield f"{label}:{key}", "grad", ours, ref
    model.zero_grad(set_to_none=True)


def fixture_comparisons(folder: str | Path) -> Iterable[tuple[str, str, np.ndarray, np.ndarray]]:
    """``(name, kind, ours, reference)`` for every output, intermediate, loss and gradient in ``folder``."""
    folder = Path(folder)
    torch.set_num_threads(1)
    model = load_fixture_model(folder)
    inputs = _npz(folder / "inputs.npz")
    outputs = _npz(folder / "outputs.npz", required=False)
    intermediates = _npz(folder / "intermediates.npz", required=False)
    losses = _json(folder / "loss.json", required=False)
    clean = _batch(inputs, False, str(folder / "inputs.npz"))
    masked = _batch(inputs, True, str(folder / "inputs.npz"))
    ours: dict[str, torch.Tensor] = {}
    capture: dict[str, torch.Tensor] = {}

    with torch.no_grad():
        # (a) joint encoder, clean inputs, padding mask
        joint = model.joint(clean.caps, clean.cmasks, clean.vfeats, clean.vmasks, capture=capture, prefix="joint")
        ours["joint_sequence_output"], ours["joint_pooled_output"] = joint.sequence_output, joint.pooled_output
        # (d2) retrieval, test mode: separate passes
        test = model.retrieval(clean, separate=True, capture=capture, prefix="retrieval_test")
        ours["retrieval_test_sequence_output"] = test.sequence_output
        ours["retrieval_test_pooled_video"], ours["retrieval_test_pooled_text"] = test.pooled_video, test.pooled_text
        ours["retrieval_test_similarity"] = test.pooled_text @ test.pooled_video.T
        # the capabilities embed one modality alone: the same numbers as the test mode
        ours["retrieval_test_pooled_video@encode_video"] = model.encode_video(clean)
        ours["retrieval_test_pooled_text@encode_text"] = model.encode_text(clean)

    # (b)+(c) the masked token step, its loss and gradients
    mtm = model.mtm(masked, capture=capture)
    ours["mtm_video_logits"] = mtm.video_logits
    width = outputs["mtm_text_logits"].shape[1] if "mtm_text_logits" in outputs else mtm.text_logits.shape[1] - 1
    ours["mtm_text_logits"] = mtm.text_logits[:, :width]  # the stored logits exclude the loss's 0 column
    ours["mtm_vt_labels"] = mtm.labels
    ours["mtm_sequence_output"], ours["mtm_pooled_output"] = mtm.sequence_output, mtm.pooled_output
    loss_values: dict[str, torch.Tensor] = {"mtm": mtm.loss}
    grads_mtm = _npz(folder / "grads.npz", required=False)
    grad_rows = list(_grads(model, grads_mtm, mtm.loss, "mtm", str(folder / "grads.npz"))) if grads_mtm else []

    # (d1) retrieval, training mode: one joint pass under the isolated mask, T2V loss and gradients
    train = model.retrieval(clean, separate=False, capture=capture, prefix="retrieval")
    ours["retrieval_train_sequence_output"] = train.sequence_output
    ours["retrieval_train_pooled_video"], ours["retrieval_train_pooled_text"] = train.pooled_video, train.pooled_text
    ours["retrieval_train_t2v_logits"] = train.pooled_text @ train.pooled_video.T
    t2v = t2v_contrastive_loss(train.pooled_text, train.pooled_video)
    loss_values["retrieval_t2v"] = t2v
    grads_ret = _npz(folder / "grads_retrieval.npz", required=False)
    grad_rows += list(_grads(model, grads_ret, t2v, "retrieval_t2v", str(folder / "grads_retrieval.npz"))) if grads_ret else []

    with torch.no_grad():
        # (d3) MMFusionShare: video-only and text-only passes
        vseq, vpool = model.share_video(clean, capture=capture)
        tseq, tpool = model.share_text(clean, capture=capture)
        ours["share_video_sequence_output"], ours["share_text_sequence_output"] = vseq, tseq
        ours["share_pooled_video"], ours["share_pooled_text"] = vpool, tpool
        ours["share_similarity"] = tpool @ vpool.T
        loss_values["share_mmcontra"] = mm_contrastive_loss(tpool, vpool)

    def as_np(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy()

    for name, ref in outputs.items():
        if name not in ours:
            raise VLMFixtureError(f"{folder / 'outputs.npz'}: output {name!r} is not one this check computes")
        yield name, "output", as_np(ours[name]), ref
    for name in ("retrieval_test_pooled_video@encode_video", "retrieval_test_pooled_text@encode_text"):
        ref_name = name.split("@")[0]
        if ref_name in outputs:
            yield name, "output", as_np(ours[name]), outputs[ref_name]
    for name, ref in intermediates.items():
        if name not in capture:
            raise VLMFixtureError(f"{folder / 'intermediates.npz'}: intermediate {name!r} is not one this check captures")
        yield name, "output", as_np(capture[name]), ref
    for name, value in loss_values.items():
        entry = losses.get(name)
        if isinstance(entry, dict) and "value" in entry:
            yield name, "loss", np.asarray(float(value.detach()), np.float64), np.asarray(float(entry["value"]), np.float64)
    yield from grad_rows


__all__ = ["VLMFixtureError", "config_overrides", "fixture_comparisons", "load_fixture_model"]
