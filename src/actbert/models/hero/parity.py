"""Parity with the original HERO code on a reference fixture folder (``../shared/fixtures/hero_small`` layout).

A fixture folder holds ``model_config.json`` (upstream ``VideoModelConfig``), ``config.json``
(constructor kwargs, special ids, ...), ``weights.npz`` (upstream names), ``inputs.npz`` (upstream's
collated batch of every task, keys ``<batch>.<upstream key>``), ``outputs.npz``,
``intermediates.npz``, ``loss.json`` and ``grads.npz``, all produced by the original
``HeroForPretraining`` (its README documents each array). :func:`fixture_comparisons` rebuilds the
model and the batches from the folder itself -- any size, seed, layer count or length -- runs
every task and yields ``(name, kind, ours, reference)`` for every array the folder holds:
``kind`` "output" (absolute 1e-4; intermediates are outputs), "loss" (absolute 1e-5) or "grad"
(relative 1e-3 of the largest reference entry), the contract of ``actbert check-parity``.

Reference settings the comparison reproduces: every output in ``model.eval()``; the training
losses with upstream's training reduction (VSM: mean over queries, st/ed term included); the
gradient of each task's training loss.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from actbert.errors import CheckpointError
from actbert.models.hero.batch import HeroBatch
from actbert.models.hero.configuration import config_from_upstream
from actbert.models.hero.convert import infer_sizes, load_hero_state, read_hero_state
from actbert.models.hero.modeling import HeroForPretraining

TOLERANCES = {"output": 1e-4, "loss": 1e-5, "grad": 1e-3}
# fixture loss.json task name -> (our batch task, inputs.npz prefix)
TASK_BATCHES = {"mlm": ("mlm", "mlm"), "mfm_nce": ("mfm_nce", "mfm"), "mffr": ("mffr", "mfm"), "fom": ("fom", "fom"), "vsm": ("vsm", "vsm")}


def _npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise CheckpointError(f"{path}: fixture file not found")
    with np.load(path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


def _json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: fixture file not found")
    return json.loads(path.read_text())


def fixture_model(folder: str | Path) -> HeroForPretraining:
    """The fixture's model: sizes from ``weights.npz``, heads from ``model_config.json``, the
    constructor kwargs and special ids from ``config.json``; dropout 0, hard negatives off."""
    folder = Path(folder)
    meta = _json(folder / "config.json")
    state = read_hero_state(folder / "weights.npz")
    kwargs = dict(meta.get("model_kwargs", {}))
    lw_st_ed = float(kwargs.get("lw_st_ed", 0.01))
    for call in meta.get("after_construction", []):
        m = re.fullmatch(r"model\.set_train_st_ed\(([-+0-9.eE]+)\)", call.strip())
        if m:
            lw_st_ed = float(m.group(1))
    ids = meta.get("special_token_ids", {})
    constants = meta.get("implicit_constants", {})
    overrides = dict(
        infer_sizes(state, str(folder / "weights.npz")),
        lw_st_ed=lw_st_ed,
        lw_neg_ctx=float(kwargs.get("lw_neg_ctx", 0.0)),
        lw_neg_q=float(kwargs.get("lw_neg_q", 0.0)),
        margin=float(kwargs.get("margin", 0.1)),
        ranking_loss_type=str(kwargs.get("ranking_loss_type", "hinge")),
        hard_pool_size=int(kwargs.get("hard_pool_size", 20)),
        hard_negative_start_step=0 if kwargs.get("use_hard_negative") else -1,
        drop_svmr_prob=float(kwargs.get("drop_svmr_prob", 0.0)),
        nce_temp=float(constants.get("nce_temp", 1.0)),
        hidden_dropout=0.0,
        attention_dropout=0.0,
        token_type_row=1,
    )
    for ours, theirs in (("pad_token_id", "PAD"), ("cls_token_id", "CLS"), ("sep_token_id", "SEP"), ("mask_token_id", "MASK")):
        if theirs in ids:
            overrides[ours] = int(ids[theirs])
    if not kwargs.get("use_all_neg", True):
        raise CheckpointError(f"{folder / 'config.json'}: field model_kwargs.use_all_neg=false (sampled negatives) is not supported")
    config = config_from_upstream(folder / "model_config.json", **overrides)
    model = HeroForPretraining(config)
    load_hero_state(model, state, str(folder / "weights.npz"))
    return model.eval()


def _t(inputs: dict[str, np.ndarray], key: str) -> torch.Tensor:
    if key not in inputs:
        raise CheckpointError(f"inputs.npz: key {key!r} missing")
    return torch.from_numpy(np.array(inputs[key]))


def _video_part(inputs: dict[str, np.ndarray], prefix: str, text_keys: tuple[str, ...]) -> dict[str, Any]:
    """The common cross-modal / temporal fields of batch ``prefix`` (``text_keys``: its names for ids,
    positions, frames, frame positions, attention masks, gather index)."""
    ids, pos, feats, vpos, attn, gather = (f"{prefix}.{k}" for k in text_keys)
    video = "repr" if f"{prefix}.c_v_feats" not in inputs else prefix  # MLM carries no temporal keys
    frames = _t(inputs, f"{video}.sub_idx2frame_idx.frames")
    num_subs = _t(inputs, f"{video}.num_subs")
    sub_index = _t(inputs, f"{video}.sub_idx2frame_idx.sub_idx")
    # row of each (video, sub_idx) entry: rows are video-major, sub_idx counts within the video
    offsets = torch.cumsum(num_subs, 0) - num_subs
    rows = torch.repeat_interleave(offsets, num_subs) + sub_index
    sub_frames = torch.full_like(frames, -1)
    sub_frames[rows] = frames
    k = int(_t(inputs, feats).shape[1])
    if sub_frames.shape[1] < k:
        sub_frames = F.pad(sub_frames, (0, k - sub_frames.shape[1]), value=-1)
    return dict(
        f_sub_input_ids=_t(inputs, ids),
        f_sub_pos_ids=_t(inputs, pos),
        f_v_feats=_t(inputs, feats),
        f_v_pos_ids=_t(inputs, vpos) if vpos in inputs else torch.arange(k)[None],
        f_attn_masks=_t(inputs, attn),
        f_gather_index=_t(inputs, gather),
        c_v_feats=_t(inputs, f"{video}.c_v_feats"),
        c_attn_masks=_t(inputs, f"{video}.c_attn_masks"),
        num_subs=num_subs,
        sub_frames=sub_frames[:, :k],
        sub_index=sub_index,
    )


VIDEO_KEYS = ("f_sub_input_ids", "f_sub_pos_ids", "f_v_feats", "f_v_pos_ids", "f_attn_masks", "f_gather_index")
MLM_KEYS = ("input_ids", "position_ids", "v_feat", "f_pos_ids", "attn_masks", "gather_index")


def fixture_batches(folder: str | Path) -> dict[str, HeroBatch]:
    """``inputs.npz`` -> one :class:`HeroBatch` per task (keys: repr, mlm, mfm_nce, mffr, fom, vsm; those present)."""
    inputs = _npz(Path(folder) / "inputs.npz")
    prefixes = {k.split(".", 1)[0] for k in inputs}
    batches: dict[str, HeroBatch] = {}
    if "repr" in prefixes:
        batches["repr"] = HeroBatch(task="repr", **_video_part(inputs, "repr", VIDEO_KEYS))
    if "mlm" in prefixes:
        batches["mlm"] = HeroBatch(task="mlm", **_video_part(inputs, "mlm", MLM_KEYS),
                                   txt_mask_tgt=_t(inputs, "mlm.txt_mask_tgt").bool(), txt_labels=_t(inputs, "mlm.txt_labels"))
    if "mfm" in prefixes:
        part = _video_part(inputs, "mfm", VIDEO_KEYS)
        extra = dict(c_v_masks=_t(inputs, "mfm.c_v_masks").bool(), f_v_masks=_t(inputs, "mfm.f_v_masks").bool(),
                     feat_targets=_t(inputs, "mfm.feat_targets"))
        batches["mfm_nce"] = HeroBatch(task="mfm_nce", **part, **extra)
        batches["mffr"] = HeroBatch(task="mffr", **part, **extra)
    if "fom" in prefixes:
        batches["fom"] = HeroBatch(task="fom", **_video_part(inputs, "fom", VIDEO_KEYS),
                                   shuffled_orders=_t(inputs, "fom.shuffled_orders"), fom_targets=_t(inputs, "fom.targets"))
    if "vsm" in prefixes:
        batches["vsm"] = HeroBatch(
            task="vsm", **_video_part(inputs, "vsm", VIDEO_KEYS),
            query_input_ids=_t(inputs, "vsm.query_input_ids"), query_pos_ids=_t(inputs, "vsm.query_pos_ids"),
            query_attn_masks=_t(inputs, "vsm.query_attn_masks"), q_vidx=_t(inputs, "vsm.q_vidx"),
            vsm_targets=_t(inputs, "vsm.targets"),
        )
    return batches


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def _run_outputs(model: HeroForPretraining, batches: dict[str, HeroBatch]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(outputs keyed as outputs.npz, intermediates keyed as intermediates.npz), eval mode, no grad."""
    out: dict[str, np.ndarray] = {}
    inter: dict[str, np.ndarray] = {}

    def keep(prefix: str, capture: dict) -> None:
        inter.update({f"{prefix}.{k}": _np(v) for k, v in capture.items()})

    with torch.no_grad():
        if "repr" in batches:
            cap: dict = {}
            enc = model.encode(batches["repr"], cap)
            out["repr.cross_sequence_output"] = _np(enc.cross_sequence_output)
            out["repr.cross_pooled_output"] = _np(model.v_encoder.f_encoder.pooler(enc.cross_sequence_output))
            out["repr.temporal_output"] = _np(enc.temporal_output)
            keep("repr", cap)
        if "mlm" in batches:
            cap = {}
            mlm = model.mlm(batches["mlm"], cap)
            out["mlm.prediction_scores"], out["mlm.loss"] = _np(mlm.prediction_scores), _np(mlm.loss_per_token)
            keep("mlm", cap)
        if "mfm_nce" in batches:
            cap = {}
            nce = model.mfm(batches["mfm_nce"], "nce", cap)
            out.update({"mfm_nce.prediction_feat": _np(nce.prediction_feat), "mfm_nce.neg_pred_feat": _np(nce.neg_pred_feat),
                        "mfm_nce.logits": _np(nce.logits), "mfm_nce.loss": _np(nce.loss_per_frame)})
            keep("mfm", cap)
            mffr = model.mfm(batches["mffr"], "regression")
            out["mffr.prediction_feat"], out["mffr.loss"] = _np(mffr.prediction_feat), _np(mffr.loss_per_frame)
        if "fom" in batches:
            cap = {}
            fom = model.fom(batches["fom"], cap)
            out["fom.scores"], out["fom.loss"] = _np(fom.scores), _np(fom.loss)
            keep("fom", cap)
        if "vsm" in batches:
            cap = {}
            b = batches["vsm"]
            vsm = model.vsm(b, include_st_ed=True, capture=cap)
            out.update({"vsm.q2video_scores": _np(vsm.q2video_scores), "vsm.st_prob": _np(vsm.st_prob), "vsm.ed_prob": _np(vsm.ed_prob)})
            # upstream's eval-mode reductions: summed st/ed CE, per-query hinge vectors
            rows, q = torch.arange(len(b.q_vidx)), b.q_vidx.long()
            ce = sum(F.cross_entropy(p[rows, q], b.vsm_targets[:, i].long(), ignore_index=-1, reduction="sum")
                     for i, p in enumerate((vsm.st_prob, vsm.ed_prob)))
            out["vsm.eval_loss_st_ed"] = _np(model.config.lw_st_ed * ce)
            out["vsm.eval_loss_neg_ctx"], out["vsm.eval_loss_neg_q"] = _np(vsm.neg_ctx_per_query), _np(vsm.neg_q_per_query)
            keep("vsm", cap)
    return out, inter


def _training_loss(model: HeroForPretraining, batch: HeroBatch) -> tuple[torch.Tensor, Any]:
    if batch.task == "vsm":
        head = model.vsm(batch, include_st_ed=True)
    else:
        head = model.run_task(batch)
    return head.loss, head


def fixture_comparisons(folder: str | Path) -> Iterator[tuple[str, str, np.ndarray, np.ndarray]]:
    """``(name, kind, ours, reference)`` for every output, intermediate, loss and gradient of ``folder``."""
    folder = Path(folder)
    model = fixture_model(folder)
    batches = fixture_batches(folder)
    outputs, inter = _run_outputs(model, batches)

    reference = _npz(folder / "outputs.npz")
    for name, ref in reference.items():
        if name not in outputs:
            raise CheckpointError(f"{folder / 'outputs.npz'}: key {name!r} has no counterpart in the HERO port")
        yield name, "output", outputs[name], ref
    if (folder / "intermediates.npz").is_file():
        for name, ref in _npz(folder / "intermediates.npz").items():
            if name not in inter:
                raise CheckpointError(f"{folder / 'intermediates.npz'}: key {name!r} has no counterpart in the HERO port")
            yield f"intermediate.{name}", "output", inter[name], ref

    losses = _json(folder / "loss.json")
    grads_ref = _npz(folder / "grads.npz") if (folder / "grads.npz").is_file() else {}
    params = dict(model.named_parameters())
    for task, (our_task, _) in TASK_BATCHES.items():
        if task not in losses or our_task not in batches:
            continue
        model.zero_grad(set_to_none=True)
        loss, head = _training_loss(model, batches[our_task])
        yield f"{task}.training_loss", "loss", _np(loss), np.asarray(losses[task]["training_loss"], np.float32)
        if task == "vsm":
            terms = losses[task].get("training_terms", {})
            for key, value in (("loss_st_ed", head.loss_st_ed), ("loss_neg_ctx", head.loss_neg_ctx), ("loss_neg_q", head.loss_neg_q)):
                if key in terms:
                    yield f"vsm.{key}", "loss", _np(value), np.asarray(terms[key], np.float32)
        loss.backward()
        for key, ref in grads_ref.items():
            if not key.startswith(task + "."):
                continue
            pname = key[len(task) + 1:]
            if pname not in params:
                raise CheckpointError(f"{folder / 'grads.npz'}: key {key!r} names no parameter of the HERO port")
            grad = params[pname].grad
            yield f"grad.{key}", "grad", _np(grad) if grad is not None else np.zeros_like(ref), ref
        without = losses.get("params_without_grad", {}).get(task)
        if without is not None:
            names = sorted(set(without) | {n for n, p in params.items() if p.grad is None})
            ours = np.array([float(params[n].grad is None) if n in params else 0.0 for n in names], np.float32)
            yield f"{task}.params_without_grad", "output", ours, np.array([float(n in without) for n in names], np.float32)
    model.zero_grad(set_to_none=True)

    hard = losses.get("vsm", {}).get("hard_negative_variant")
    if hard and "vsm" in batches:
        m = re.search(r"set_hard_negative\(True,\s*hard_pool_size=(\d+),\s*hard_neg_weight=([-+0-9.eE]+)\)", hard.get("setting", ""))
        if m:
            from actbert.models.hero.pretraining import video_level_loss

            cfg = model.config
            with torch.no_grad():
                vsm = model.vsm(batches["vsm"], include_st_ed=True)
                terms = video_level_loss(vsm.q2video_scores, batches["vsm"].q_vidx, cfg.margin, cfg.ranking_loss_type,
                                         int(m.group(1)), float(m.group(2)))
                neg_ctx, neg_q = cfg.lw_neg_ctx * terms.neg_ctx.mean(), cfg.lw_neg_q * terms.neg_q.mean()
            for key, value in (("loss_neg_ctx", neg_ctx), ("loss_neg_q", neg_q), ("total", vsm.loss_st_ed + neg_ctx + neg_q)):
                if key in hard:
                    yield f"vsm.hard_negative.{key}", "loss", _np(value), np.asarray(hard[key], np.float32)


def difference(kind: str, ours: np.ndarray, reference: np.ndarray) -> float:
    """The contract's measure: max abs difference, divided by max |reference| for gradients."""
    ours = np.asarray(ours, np.float64)
    reference = np.asarray(reference, np.float64)
    if ours.shape != reference.shape:
        return float("inf")
    if ours.size == 0:
        return 0.0
    diff = float(np.abs(ours - reference).max())
    if kind == "grad":
        scale = float(np.abs(reference).max())
        return diff / scale if scale > 0 else diff
    return diff


def summarize(comparisons: Iterable[tuple[str, str, np.ndarray, np.ndarray]]) -> dict[str, list[tuple[float, str]]]:
    """``{kind: [(difference, name), ...]}`` sorted worst first."""
    out: dict[str, list[tuple[float, str]]] = {}
    for name, kind, ours, ref in comparisons:
        out.setdefault(kind, []).append((difference(kind, ours, ref), name))
    for rows in out.values():
        rows.sort(reverse=True)
    return out


__all__ = ["TOLERANCES", "difference", "fixture_batches", "fixture_comparisons", "fixture_model", "summarize"]
