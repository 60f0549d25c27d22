"""The Paddle-compatible model's training step against PaddleVideo's own, side by side in one run.

Both sides run one pretraining step -- forward, PaddleVideo's four losses, backward, global-norm
clipping at 1.0, AdamW -- at the released model's sizes (``configs/paddlevideo.yaml``) on
PaddleVideo's pretraining layout: batch 8, text 36, regions 1 + 36 (global slot first), actions 5,
``a_target_size`` 700 (its ``ActBertLoss`` default), dropout on, 15% of the real text tokens
labelled. The inputs are the same arrays on both sides (numpy, seeded).

* ours: :class:`~actbert.models.paddlevideo.PaddleVideoActBert` in this process, in each of the
  variants asked for (``--variants``; ``labels`` = ``mlm_logits_at_labels``, ``compile`` =
  ``torch.compile`` with inductor);
* Paddle's: PaddleVideo's ``BertForMultiModalPreTraining`` + ``ActBertLoss``, read from a PaddleVideo
  checkout (``--paddlevideo DIR``: the two source files are loaded as they are, their package-relative
  imports answered by small stand-ins), run in a child process by ``--paddle-python`` (a Python where
  ``import paddle`` works: paddlepaddle in its own virtual environment, never this project's). Without
  one the script says so and times ours only.

Rounds alternate (ours, then Paddle's, ``--rounds`` times) so both see the same machine load; each
side reports its fastest step. One thread per side by default.

    python benchmarks/paddle_step.py --paddle-python /tmp/paddle-venv/bin/python --paddlevideo /tmp/PaddleVideo
    python benchmarks/paddle_step.py --variants fp32 fp32+labels bf16 bf16+labels --rounds 2
    python benchmarks/paddle_step.py --variants fp32 --rounds 1 --eval upstream-fp32 fp32 bf16 bf16-weights

Figures depend on the machine and on whatever else runs on it; quote ratios from one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

BATCH, TEXT, REGIONS, ACTIONS = 8, 36, 37, 5  # PaddleVideo's pretraining layout (RandomMask, ActBertLoss)
A_TARGET = 700  # ActBertLoss / BertForMultiModalPreTraining default
MLM_FRACTION = 0.15


# ----------------------------------------------------------------------------- shared inputs (numpy only)


def make_inputs(vocab: int, v_feat: int, a_feat: int, v_target: int, seed: int = 0) -> dict[str, np.ndarray]:
    """One pretraining batch in PaddleVideo's layout and label conventions (-1 = no target)."""
    r = np.random.default_rng(seed)
    text_len = r.integers(20, TEXT + 1, BATCH)  # real tokens per row, the rest padding (id 0)
    text_mask = (np.arange(TEXT)[None] < text_len[:, None]).astype(np.int64)
    text_ids = np.where(text_mask == 1, r.integers(1000, vocab, (BATCH, TEXT)), 0).astype(np.int64)
    labelled = (r.random((BATCH, TEXT)) < MLM_FRACTION) & (text_mask == 1)
    labelled[:, 0] = False  # [CLS]
    masked_lm_labels = np.where(labelled, r.integers(1000, vocab, (BATCH, TEXT)), -1).astype(np.int64)
    n_regions = r.integers(10, REGIONS, BATCH)
    image_mask = (np.arange(REGIONS)[None] <= n_regions[:, None]).astype(np.int64)  # slot 0 global, always real
    image_feat = (r.random((BATCH, REGIONS, v_feat), dtype=np.float32) * image_mask[..., None]).astype(np.float32)
    image_loc = (r.random((BATCH, REGIONS, 5), dtype=np.float32) * image_mask[..., None]).astype(np.float32)
    image_label = ((r.random((BATCH, REGIONS - 1)) < 0.15) & (image_mask[:, 1:] == 1)).astype(np.int64)
    image_target = r.random((BATCH, REGIONS - 1, v_target), dtype=np.float32)
    image_target /= image_target.sum(-1, keepdims=True)
    action_mask = np.ones((BATCH, ACTIONS), np.int64)  # upstream marks every action slot valid
    action_feat = r.random((BATCH, ACTIONS, a_feat), dtype=np.float32)
    masked_action_labels = np.where(r.random((BATCH, ACTIONS)) < 0.15, r.integers(0, A_TARGET, (BATCH, ACTIONS)), -1).astype(np.int64)
    next_sentence_label = r.integers(0, 2, BATCH).astype(np.int64)
    return {
        "text_ids": text_ids, "action_feat": action_feat, "image_feat": image_feat, "image_loc": image_loc,
        "token_type_ids": np.zeros_like(text_ids), "text_mask": text_mask, "image_mask": image_mask, "action_mask": action_mask,
        "masked_lm_labels": masked_lm_labels, "image_label": image_label, "image_target": image_target,
        "masked_action_labels": masked_action_labels, "next_sentence_label": next_sentence_label,
    }


def time_steps(step, steps: int, warmup: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds of ``steps`` steps after ``warmup``. On a shared machine the
    CPU time (one thread) leaves out the time spent waiting for a core."""
    for _ in range(warmup):
        step()
    times, cpu = [], []
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return times, cpu


# ----------------------------------------------------------------------------- Paddle's side (child process)


def load_paddlevideo(root: Path):
    """PaddleVideo's backbone and loss modules from a checkout, as they are; the package-relative
    imports they make (registry, weight init, checkpoint loading, the loss base class) resolve to
    stand-ins here, so nothing else of PaddleVideo (or its dependencies) is needed."""
    import paddle

    class Registry:
        def register(self, cls=None):
            return cls if cls is not None else (lambda c: c)

    def stub(name: str, **attrs) -> None:
        module = types.ModuleType(name)
        module.__path__ = []  # a package, so relative imports below it resolve
        module.__dict__.update(attrs)
        sys.modules[name] = module

    def weight_init_(layer, kind, **kw):
        init = paddle.nn.initializer.Normal(std=kw["std"]) if kind == "Normal" else paddle.nn.initializer.Constant(kw["value"])
        init(layer.weight)

    class BaseWeightedLoss(paddle.nn.Layer):  # the interface ActBertLoss derives from
        def __init__(self, loss_weight=1.0):
            super().__init__()
            self.loss_weight = loss_weight

    stub("pv"), stub("pv.utils"), stub("pv.utils.save_load", load_ckpt=None)
    stub("pv.modeling", ), stub("pv.modeling.registry", BACKBONES=Registry(), LOSSES=Registry())
    stub("pv.modeling.weight_init", weight_init_=weight_init_)
    stub("pv.modeling.backbones"), stub("pv.modeling.losses"), stub("pv.modeling.losses.base", BaseWeightedLoss=BaseWeightedLoss)
    modules = {}
    for name, rel in (("pv.modeling.backbones.actbert", "paddlevideo/modeling/backbones/actbert.py"),
                      ("pv.modeling.losses.actbert_loss", "paddlevideo/modeling/losses/actbert_loss.py")):
        path = root / rel
        if not path.is_file():
            raise SystemExit(f"--paddlevideo {root}: {rel} not found (a PaddleVideo checkout is needed)")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        modules[name.rsplit(".", 1)[1]] = module
    return modules["actbert"].BertForMultiModalPreTraining, modules["actbert_loss"].ActBertLoss


def paddle_worker(args: argparse.Namespace) -> dict:
    import paddle

    paddle.set_device("cpu")
    paddle.seed(0)
    Model, Loss = load_paddlevideo(Path(args.paddlevideo))
    kwargs = json.loads(args.kwargs)
    model = Model(**kwargs)
    model.init_weights()
    model.train()
    criterion = Loss(vocab_size=kwargs["vocab_size"], a_target_size=kwargs["a_target_size"])
    optimizer = paddle.optimizer.AdamW(learning_rate=1e-4, parameters=model.parameters(), weight_decay=0.01,
                                       grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0))
    data = make_inputs(kwargs["vocab_size"], kwargs["v_feature_size"], kwargs["a_feature_size"], kwargs["v_target_size"], args.seed)
    t = {k: paddle.to_tensor(v) for k, v in data.items()}
    inputs = [t[k] for k in ("text_ids", "action_feat", "image_feat", "image_loc", "token_type_ids", "text_mask", "image_mask", "action_mask")]
    labels = [t[k] for k in ("masked_lm_labels", "image_label", "image_target", "masked_action_labels", "next_sentence_label")]
    losses = []

    def step():
        loss = paddle.mean(criterion(*model(*inputs), *labels))  # PaddleVideo's ActBert.train_step
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        losses.append(float(loss))

    times, cpu = time_steps(step, args.steps, args.warmup)
    return {"side": "paddle", "paddle": paddle.__version__, "step_s": min(times), "step_s_all": times, "cpu_s_all": cpu,
            "loss_first": losses[0]}


# ----------------------------------------------------------------------------- our side


def our_kwargs(overrides: list[str]) -> dict:
    from actbert.config import to_dict
    from actbert.models.registry import load_model_config

    config = load_model_config("paddlevideo", [f"a_target_size={A_TARGET}", *overrides])
    names = ("vocab_size max_position_embeddings type_vocab_size v_target_size a_target_size v_feature_size a_feature_size "
             "num_hidden_layers v_num_hidden_layers a_num_hidden_layers t_ent_attention_id v_ent_attention_id "
             "a_ent_attention_id fixed_t_layer fixed_v_layer hidden_size v_hidden_size a_hidden_size bi_hidden_size "
             "intermediate_size v_intermediate_size a_intermediate_size hidden_act v_hidden_act a_hidden_act "
             "hidden_dropout_prob v_hidden_dropout_prob a_hidden_dropout_prob attention_probs_dropout_prob "
             "v_attention_probs_dropout_prob a_attention_probs_dropout_prob av_attention_probs_dropout_prob "
             "at_attention_probs_dropout_prob num_attention_heads v_num_attention_heads a_num_attention_heads "
             "bi_num_attention_heads fusion_method").split()
    d = to_dict(config)
    return {k: d[k] for k in names}  # PaddleVideo's constructor arguments (no settings of this port)


def build_ours(variant: str, kwargs: dict, seed: int):
    """Model, optimiser and the step closure of one variant: ``fp32|bf16|bf16-weights`` + optional ``+labels`` /
    ``+compile`` (``bf16`` = autocast over fp32 weights, as ``train.bf16``; ``bf16-weights`` = bf16 weights with fp32
    master copies in the optimiser, :class:`~actbert.utils.precision.MasterWeights`)."""
    import torch

    from actbert.models.paddlevideo import PaddleVideoActBert, PaddleVideoActBertConfig
    from actbert.models.paddlevideo.processing import PaddleVideoBatch
    from actbert.train.config import load_pretrain_config
    from actbert.train.loop import build_optimizer
    from actbert.utils.precision import MasterWeights, autocast

    parts = variant.split("+")
    dtype, extras = parts[0], set(parts[1:])
    torch.manual_seed(seed)
    model = PaddleVideoActBert(PaddleVideoActBertConfig(**kwargs, mlm_logits_at_labels="labels" in extras)).train()
    cfg = load_pretrain_config("paddlevideo", ["data.random=true"])
    optimizer = build_optimizer(model, cfg)  # the loop's AdamW (fused), weight decay 0.01
    master = MasterWeights(model) if dtype == "bf16-weights" else None  # bf16 weights, fp32 masters
    if master is not None:
        master.rebind(optimizer)
    params = master.params if master is not None else list(model.parameters())
    data = make_inputs(kwargs["vocab_size"], kwargs["v_feature_size"], kwargs["a_feature_size"], kwargs["v_target_size"], seed)
    batch = PaddleVideoBatch(**{k: torch.from_numpy(v) for k, v in data.items()})
    forward = torch.compile(model) if "compile" in extras else model
    context = autocast(dtype, "cpu")
    losses = []

    def step():
        optimizer.zero_grad(set_to_none=True)
        with context:
            out = forward(batch)
        out.loss.backward()
        if master is not None:
            master.grads_to_master()
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        optimizer.step()
        if master is not None:
            master.master_to_model()
        losses.append(float(out.loss.detach()))

    return step, losses


def time_eval(dtypes: list[str], kwargs: dict, seed: int, steps: int, warmup: int) -> dict[str, tuple[float, float]]:
    """Best (wall, CPU) seconds of scoring the batch's 8 pairs (``pair_scores``, eval mode, no grad) per
    ``dtype`` of the pair scorer (``fp32``, ``bf16`` autocast, ``bf16-weights``), one model for all;
    ``upstream-fp32`` = the same score read off the whole upstream forward (all heads computed)."""
    import torch

    from actbert.models.paddlevideo import PaddleVideoActBert, PaddleVideoActBertConfig
    from actbert.models.paddlevideo.processing import PaddleVideoBatch, matched_probability
    from actbert.utils.precision import inference_precision

    torch.manual_seed(seed)
    model = PaddleVideoActBert(PaddleVideoActBertConfig(**kwargs)).eval()
    data = make_inputs(kwargs["vocab_size"], kwargs["v_feature_size"], kwargs["a_feature_size"], kwargs["v_target_size"], seed)
    batch = PaddleVideoBatch(**{k: torch.from_numpy(v) for k, v in data.items()})
    out = {}
    with torch.no_grad():
        for dtype in dtypes:
            if dtype == "upstream-fp32":
                wall, cpu = time_steps(lambda: matched_probability(model(*batch.inputs()).seq_relationship_score), steps, warmup)
            else:
                start = time.perf_counter()
                with inference_precision(model, dtype, "cpu"):  # as tasks.scoring.score_items: the cast once per call
                    entered = time.perf_counter() - start
                    wall, cpu = time_steps(lambda: model.pair_scores(batch), steps, warmup)
                if dtype == "bf16-weights":
                    print(f"  eval bf16-weights: casting the model took {entered:.3f} s (once per scoring call)", file=sys.stderr)
                    out["bf16-weights cast (once)"] = (entered, entered)
            out[dtype] = (min(wall), min(cpu))
            print(f"  eval {dtype:14s} {min(wall):.3f} s ({min(cpu):.3f} CPU s) per batch of {BATCH} pairs", file=sys.stderr)
    return out


def print_steps(best: dict, best_cpu: dict, first_loss: dict, reference: str, runs: str) -> None:
    print(f"\n| step | s/step ({runs}) | x {reference} | CPU s/step (best) | x {reference} | first loss |")
    print("|---|---|---|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.3f} | {seconds / best[reference]:.2f} | {best_cpu[name]:.3f} | "
              f"{best_cpu[name] / best_cpu[reference]:.2f} | {first_loss[name]:.3f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paddle-python", default=None, help="a Python where `import paddle` works (runs Paddle's side)")
    parser.add_argument("--paddlevideo", default=None, help="a PaddleVideo checkout (its paddlevideo/modeling/ files are read)")
    parser.add_argument("--variants", nargs="*", default=["fp32", "fp32+labels", "bf16", "bf16+labels"],
                        help="ours: fp32|bf16|bf16-weights, each with optional +labels / +compile (none: only --eval)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of every variant and Paddle")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round (the fastest is reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="model overrides on both sides, e.g. num_hidden_layers=4 (a quick look)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval", nargs="*", default=[], metavar="DTYPE",
                        help="also time scoring (pair_scores): any of upstream-fp32 fp32 bf16 bf16-weights")
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", choices=["paddle"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--kwargs", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker == "paddle":
        print(json.dumps(paddle_worker(args)))
        return 0

    import torch

    torch.set_num_threads(args.threads)
    kwargs = our_kwargs(args.overrides)
    paddle_cmd = None
    if args.paddle_python and args.paddlevideo:
        paddle_cmd = [args.paddle_python, __file__, "--worker", "paddle", "--paddlevideo", args.paddlevideo, "--kwargs",
                      json.dumps(kwargs), "--steps", str(args.steps), "--warmup", str(args.warmup), "--seed", str(args.seed)]
    else:
        try:
            import paddle  # noqa: F401  (only to say whether Paddle's side could run here)

            note = "paddle is importable here, but --paddle-python and --paddlevideo are needed to run PaddleVideo's step"
        except ImportError:
            note = "paddle is not importable (install paddlepaddle in its own venv and pass --paddle-python, --paddlevideo)"
        print(f"note: {note}; timing ours only", file=sys.stderr)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads), "CPU_NUM": "1"}
    print(f"torch {torch.__version__}, {args.threads} thread(s); load average {os.getloadavg()[0]:.1f}; layout: batch {BATCH}, "
          f"text {TEXT}, regions {REGIONS}, actions {ACTIONS}", file=sys.stderr)

    rows: dict[str, list[float]] = {}
    cpu_rows: dict[str, list[float]] = {}
    first_loss: dict[str, float] = {}
    for round_ in range(args.rounds):
        for variant in args.variants:
            step, losses = build_ours(variant, kwargs, args.seed)
            times, cpu = time_steps(step, args.steps, args.warmup)
            rows.setdefault(variant, []).extend(times)
            cpu_rows.setdefault(variant, []).extend(cpu)
            first_loss.setdefault(variant, losses[0])
            print(f"  round {round_}: ours {variant:14s} {min(times):.3f} s/step ({min(cpu):.3f} CPU s)", file=sys.stderr)
            del step
        if paddle_cmd:
            done = subprocess.run(paddle_cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit("Paddle's side failed (its error above)")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows.setdefault("paddle", []).extend(result["step_s_all"])
            cpu_rows.setdefault("paddle", []).extend(result["cpu_s_all"])
            first_loss.setdefault("paddle", result["loss_first"])
            print(f"  round {round_}: paddle {result['paddle']:>12s}   {result['step_s']:.3f} s/step "
                  f"({min(result['cpu_s_all']):.3f} CPU s)", file=sys.stderr)
    best = {k: min(v) for k, v in rows.items()}
    best_cpu = {k: min(v) for k, v in cpu_rows.items()}
    reference = "paddle" if "paddle" in best else (args.variants[0] if args.variants else None)
    if reference is not None:
        print_steps(best, best_cpu, first_loss, reference, f"best of {args.rounds} x {args.steps}")
    evals = time_eval(args.eval, kwargs, args.seed, 2 * args.steps, args.warmup) if args.eval else {}
    if evals:
        first = next(iter(evals))
        print(f"\n| scoring {BATCH} pairs | s (best) | x {first} | CPU s (best) | x {first} |")
        print("|---|---|---|---|---|")
        for name, (wall, cpu) in evals.items():
            print(f"| {name} | {wall:.3f} | {wall / evals[first][0]:.2f} | {cpu:.3f} | {cpu / evals[first][1]:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"eval_s": evals, "best_s": best, "best_cpu_s": best_cpu, "all_s": rows, "all_cpu_s": cpu_rows,
                                               "first_loss": first_loss, "kwargs": kwargs,
                                               "threads": args.threads, "torch": torch.__version__}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
