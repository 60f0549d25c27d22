"""The faster training step (issue 17, item 2): each speed setting gives the numbers of the plain path.

* ``mlm_logits_at_labels`` (paddlevideo): the text head at the labelled positions only -- the loss
  equals PaddleVideo's on its fixture and every gradient equals the whole-output path's.
* ``train.compile``: the same losses as the eager loop, and checkpoints / model folders without
  ``_orig_mod.`` names that load into an uncompiled model.
* ``dtype=bf16-weights`` (the pair scorer): scores within a tenth of their spread of the fp32 ones,
  and the model's fp32 weights back untouched afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from actbert.models.paddlevideo.convert import load_paddle_checkpoint
from actbert.models.paddlevideo.processing import PaddleVideoBatch

torch.set_num_threads(1)

FIXTURE = Path(__file__).parent / "fixtures" / "paddle_actbert_small"
META = json.loads((FIXTURE / "config.json").read_text())
LOSS = json.loads((FIXTURE / "loss.json").read_text())


def _fixture_batch() -> PaddleVideoBatch:
    with np.load(FIXTURE / "inputs.npz", allow_pickle=False) as archive:
        arrays = {k: torch.from_numpy(archive[k]) for k in archive.files}
    inputs = [arrays[k] for k in META["forward_argument_order"]]
    labels = [arrays[k] for k in META["loss_argument_order"][4:]]
    return PaddleVideoBatch(*inputs, *labels)


@pytest.fixture(scope="module")
def paddle_model():
    model, _ = load_paddle_checkpoint(FIXTURE / "weights.npz", META["kwargs"])
    return model.eval()  # the fixture was written with dropout off


def _loss_and_grads(model, batch) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model(batch)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return {"total": float(out.loss), **{k: float(v) for k, v in out.losses.items()}}, grads


def test_mlm_logits_at_labels_keeps_paddle_loss_and_gradients(paddle_model):
    batch = _fixture_batch()
    assert paddle_model.config.mlm_logits_at_labels is False  # the default is upstream's whole output
    whole_loss, whole_grads = _loss_and_grads(paddle_model, batch)
    paddle_model.config.mlm_logits_at_labels = True
    try:
        fast_loss, fast_grads = _loss_and_grads(paddle_model, batch)
        with torch.no_grad():
            positions = batch.masked_lm_labels != -1
            gathered = paddle_model.upstream_forward(*batch.inputs(), text_positions=positions).prediction_scores_t
    finally:
        paddle_model.config.mlm_logits_at_labels = False
    # the fixture's MLM term (PaddleVideo's own number, denominator B * Lt) on both paths
    assert abs(fast_loss["mlm"] - LOSS["components"]["mlm"]) < 1e-5
    assert abs(fast_loss["total"] - LOSS["total"]) < 1e-5
    for name in whole_loss:
        assert abs(fast_loss[name] - whole_loss[name]) < 1e-6, name
    # the same parameters get gradients (value_av none, the tied table yes), and the same ones:
    # the float32 sums run over fewer zero rows, so equal to a few ulps of the largest entry
    assert set(fast_grads) == set(whole_grads)
    for name, grad in whole_grads.items():
        scale = float(grad.abs().max()) or 1.0
        assert float((fast_grads[name] - grad).abs().max()) <= 1e-5 * scale, name
    # 10 of the fixture's 48 text positions carry a label: logits [10, vocab] instead of [4, 12, vocab]
    assert gathered.shape == (int(positions.sum()), META["kwargs"]["vocab_size"]) == (10, 1000)


# ---- train.compile: the loop's forward through torch.compile, checkpoints still those of the plain module


def test_compiled_training_matches_eager_and_saves_loadable_uncompiled_weights(tmp_path):
    from safetensors.torch import load_file

    from actbert.models.pretrained import from_pretrained
    from actbert.train.checkpoint import latest_checkpoint, load_checkpoint
    from actbert.train.config import load_pretrain_config
    from actbert.train.loop import train
    from actbert.train.metrics_log import read_metrics

    common = ["train.progress=false", f"data.random_dir={tmp_path / 'random'}", "train.max_steps=2", "train.log_every=1",
              "train.checkpoint_every=1", "train.plot_every_checkpoint=false", "train.bf16=false", "train.num_threads=1",
              "model.hidden_dropout=0", "model.attention_dropout=0"]
    train(load_pretrain_config("tiny", common), tmp_path / "eager")
    # aot_eager: dynamo + AOT autograd (the compiled module and its "_orig_mod." wrapper) without a C++ build
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    train(load_pretrain_config("tiny", [*common, "train.compile=true", "train.compile_backend=aot_eager"]), tmp_path / "compiled")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # the loop did run a compiled forward
    eager = read_metrics(tmp_path / "eager" / "metrics.jsonl")
    compiled = read_metrics(tmp_path / "compiled" / "metrics.jsonl")
    for a, b in zip(eager, compiled, strict=True):
        for key in ("loss", "mlm", "action", "region", "match"):
            assert abs(a[key] - b[key]) <= 1e-4 * max(1.0, abs(a[key])), (a["step"], key)
    # the checkpoint and the model folder hold the plain module's names and load into an uncompiled model
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "compiled"))
    assert not [k for k in ckpt["model"] if "_orig_mod" in k]
    weights = load_file(tmp_path / "compiled" / "model" / "model.safetensors")
    assert not [k for k in weights if "_orig_mod" in k]
    model = from_pretrained(tmp_path / "compiled" / "model")
    assert not isinstance(model, torch._dynamo.eval_frame.OptimizedModule)
    model.load_state_dict(ckpt["model"])  # strict: every key of the uncompiled model, no other
    reference = from_pretrained(tmp_path / "eager" / "model")
    worst = max(float((a - b).abs().max()) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    assert worst < 1e-4  # two AdamW steps from the same start on (nearly) the same gradients


# ---- dtype=bf16-weights: inference with the model cast to bf16 once


# VideoBERT is left out: its model needs a visual vocabulary built from a store first (its own tests do that)
FAMILY_PRESETS = ["tiny", "vlm_tiny", "hero_tiny", "paddlevideo"]
PADDLE_TINY = ["num_hidden_layers=2", "v_num_hidden_layers=1", "a_num_hidden_layers=1", "t_ent_attention_id=[1]",
               "v_ent_attention_id=[0]", "a_ent_attention_id=[0]", "hidden_size=32", "a_hidden_size=32", "v_hidden_size=32",
               "bi_hidden_size=32", "num_attention_heads=2", "a_num_attention_heads=2", "v_num_attention_heads=2",
               "bi_num_attention_heads=2", "intermediate_size=64", "a_intermediate_size=64", "v_intermediate_size=64"]


@pytest.fixture(scope="module")
def scoring_setup(synth_tiny, tmp_path_factory):
    from helpers_planted_store import write_planted_store

    from actbert.data.clips import ClipAssembler
    from actbert.models.processing import Item, VideoRef
    from actbert.text.tokenizer import load_tokenizer

    store = write_planted_store(synth_tiny, tmp_path_factory.mktemp("bf16w") / "store")
    tokenizer = load_tokenizer()
    assembler = ClipAssembler(store, tokenizer)
    clips = [(v, float(s), float(e)) for v in store.video_ids() for s, e in assembler.video(v).clip_times][:8]
    texts = ["cut the onion", "wash the red tomato", "pour water into the bowl", "peel a potato"]
    items = [Item(VideoRef(*c), t) for c in clips for t in texts]  # 32 pairs, every clip with every text
    return store, tokenizer, assembler, items


def _family_model(preset: str, store, tokenizer):
    from actbert.models import registry as model_registry

    # the released paddlevideo sizes are too slow for a unit test: the same architecture, small
    config = model_registry.load_model_config(preset, PADDLE_TINY if preset == "paddlevideo" else ())
    cls = model_registry.resolve_architecture(config.architecture)
    config = cls.fill_config_from_data(config, store.schema, tokenizer)
    torch.manual_seed(0)
    return model_registry.create_model(config, verbose=False).eval()


@pytest.mark.parametrize("preset", FAMILY_PRESETS)
def test_bf16_weights_scores_stay_within_autocast_error_and_restore_fp32(scoring_setup, preset):
    from actbert.tasks.scoring import score_items

    store, tokenizer, assembler, items = scoring_setup
    model = _family_model(preset, store, tokenizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fp32 = score_items(model, assembler, items, batch_size=16, dtype="fp32", progress=False)
    autocast = score_items(model, assembler, items, batch_size=16, dtype="bf16", progress=False)
    weights = score_items(model, assembler, items, batch_size=16, dtype="bf16-weights", progress=False)
    # the weights the model got back are the fp32 originals, bit for bit (not a bf16 round trip)
    after = model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    np.testing.assert_array_equal(score_items(model, assembler, items, batch_size=16, dtype="fp32", progress=False), fp32)
    # bound: bf16 keeps 8 significant bits (relative rounding 2^-9 per op); with the residual stream,
    # LayerNorm and softmax in bf16 too the rounding of a few dozen ops adds up to a few percent of a
    # value. What a ranking task needs is that a score moves little against the spread of the scores
    # it is ranked among: at most a tenth of their standard deviation (measured: 0.018-0.033 of it for
    # these four families, against 0.006-0.028 for bf16 autocast), so only near-ties can swap
    err_weights = float(np.abs(weights - fp32).max())
    err_autocast = float(np.abs(autocast - fp32).max())
    spread = float(fp32.std())
    print(f"{preset}: max |bf16-weights - fp32| = {err_weights:.2e} ({err_weights / spread:.3f} std), "
          f"bf16 autocast {err_autocast:.2e} ({err_autocast / spread:.3f} std)")
    assert err_weights <= 0.1 * spread
    assert not np.array_equal(weights, fp32)  # it did run in bf16
    # the best clip of each text stays the best clip (no near-tie among the 8 in this gallery)
    best = lambda scores: scores.reshape(8, 4).argmax(axis=0)
    np.testing.assert_array_equal(best(weights), best(fp32))


# ---- MasterWeights: bf16 weights for the training step, fp32 master copies in the optimiser


def test_master_weights_step_is_adamw_on_fp32_masters_with_the_bf16_gradients():
    import copy

    from actbert.models.actbert import random_batch
    from actbert.models.registry import create_model
    from actbert.train.config import load_pretrain_config
    from actbert.train.loop import build_optimizer
    from actbert.utils.precision import MasterWeights

    cfg = load_pretrain_config("tiny", ["data.random=true", "model.text_init=null", "model.hidden_dropout=0",
                                        "model.attention_dropout=0", "optim.lr=1e-2"])
    torch.manual_seed(0)
    model = create_model(cfg.model, heads=True, verbose=False).train()
    reference = copy.deepcopy(model)  # fp32, for the hand-made update below
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = build_optimizer(model, cfg)
    master = MasterWeights(model)
    master.rebind(optimizer)
    # the model now holds bf16 weights (ties kept), the masters the exact fp32 originals
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert all(torch.equal(m, original[n]) and m.dtype == torch.float32 for n, m in master.named_parameters())
    assert len(master.params) == len(list(reference.parameters()))
    batch = random_batch(cfg.model, batch_size=2, seed=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(batch).loss.backward()
    grads = {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
    master.grads_to_master()
    assert all(p.grad is None for p in model.parameters())  # moved, not kept twice
    torch.nn.utils.clip_grad_norm_(master.params, cfg.optim.grad_clip)
    optimizer.step()
    master.master_to_model()
    # by hand: the loop's AdamW (same groups: weight decay, lr) on fp32 copies with the same gradients
    ref_opt = build_optimizer(reference, cfg)
    for n, p in reference.named_parameters():
        p.grad = grads.get(n)
    torch.nn.utils.clip_grad_norm_(list(reference.parameters()), cfg.optim.grad_clip)
    ref_opt.step()
    expected = dict(reference.named_parameters())
    for n, m in master.named_parameters():
        torch.testing.assert_close(m, expected[n].detach(), rtol=0, atol=1e-7)
    moved = sum(int(not torch.equal(m, original[n])) for n, m in master.named_parameters())
    assert moved > 0.9 * len(master.params)  # the step changed (nearly) every tensor
    # the bf16 weights follow the masters; the state dict is the fp32 one, under the model's names
    assert all(torch.equal(p, m.to(torch.bfloat16)) for p, m in zip(model.parameters(), master.params))
    state = master.state_dict()
    assert set(state) == set(reference.state_dict()) and all(state[n].dtype == torch.float32 for n, _ in master.named_parameters())


def test_paddle_pair_scores_skip_the_prediction_heads_but_score_the_same(paddle_model):
    batch = _fixture_batch()
    calls = []
    hooks = [head.register_forward_hook(lambda *a: calls.append(1))
             for head in (paddle_model.cls.predictions, paddle_model.cls.imagePredictions, paddle_model.cls.actionPredictions)]
    try:
        with torch.no_grad():
            scores = paddle_model.pair_scores(batch)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == []  # no vocab-wide text logits, no region / action logits for a score
    with np.load(FIXTURE / "outputs.npz", allow_pickle=False) as archive:
        reference = torch.from_numpy(archive["seq_relationship_score"])  # PaddleVideo's own forward
    expected = torch.softmax(reference.double(), dim=-1)[:, 0].float()
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-5)
