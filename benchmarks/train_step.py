"""Pretraining step throughput and model FLOP utilisation (MFU) of the tiny / small / base presets.

One step = forward + backward of :class:`~actbert.models.actbert.ActBertForPretraining` (all four
losses) + gradient clipping + AdamW, exactly as in ``actbert.train.loop``, on a batch with the
preset's layout (``clips_per_sample`` clips, text filling ``max_text_len``, ``max_regions_per_frame``
regions per clip, ``train.batch_size`` rows unless ``--batch-size`` says otherwise).

FLOPs are counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` records every matmul,
linear and attention kernel of one forward + backward (element-wise ops and the optimiser are not
counted, as usual for MFU). MFU = counted FLOPs per step / step time (fastest of the timed steps) / the machine's bf16
matmul peak, which this script measures in the same run (best of several large bf16 matmuls, before
and after the steps, so both see the same machine load). The fp32 peak is measured too and printed
for reference (fp32 rows also show their utilisation of the fp32 peak). "MFU by CPU time" uses the
process's CPU time per thread instead of wall time, for the steps and the peak alike, which discounts
the time the process waited for a core on a shared machine.

    python benchmarks/train_step.py                           # all presets, fp32 and bf16
    python benchmarks/train_step.py --presets base --dtypes bf16 --batch-size base=32 --steps 3
    python benchmarks/train_step.py --presets base --set model.hidden_dropout=0 model.attention_dropout=0
    python benchmarks/train_step.py --device cuda --presets base --dtypes bf16 --batch-size base=32

On a GPU (``--device cuda``, or ``auto`` where one is visible) the model, batch and peak matmuls run
there, every timing is taken after ``torch.cuda.synchronize()``, and the "CPU time" columns are the
wall times (the GPU's time is not the process's CPU time).

Figures depend on the machine and on whatever else runs on it; quote them with that caveat.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode

from actbert.models.actbert import random_batch
from actbert.models.registry import create_model
from actbert.tasks.common import resolve_device
from actbert.train.config import PretrainConfig, load_pretrain_config
from actbert.train.loop import build_optimizer
from actbert.utils.precision import MasterWeights


class Clock:
    """Wall and per-thread CPU seconds of a block on ``device``; on a GPU both are the wall time
    after the queued kernels finished (``torch.cuda.synchronize``)."""

    def __init__(self, device: torch.device):
        self.gpu = device.type == "cuda"

    def _sync(self) -> None:
        if self.gpu:
            torch.cuda.synchronize()

    def start(self) -> tuple[float, float]:
        self._sync()
        return time.perf_counter(), time.process_time()

    def stop(self, started: tuple[float, float]) -> tuple[float, float]:
        self._sync()
        wall = time.perf_counter() - started[0]
        return wall, wall if self.gpu else (time.process_time() - started[1]) / torch.get_num_threads()


def measure_matmul_peak(dtype: torch.dtype, size: int, repeats: int, device: torch.device = torch.device("cpu")) -> tuple[float, float]:
    """Best FLOP/s of ``[size, size] @ [size, size]`` in ``dtype`` on ``device`` over ``repeats``
    timed runs: (by wall-clock time, by CPU time per thread)."""
    a = torch.randn(size, size).to(device, dtype)
    b = torch.randn(size, size).to(device, dtype)
    torch.mm(a, b)  # warm-up (kernel selection, page faults)
    clock = Clock(device)
    best = best_cpu = float("inf")
    for _ in range(repeats):
        started = clock.start()
        torch.mm(a, b)
        wall, cpu = clock.stop(started)
        best, best_cpu = min(best, wall), min(best_cpu, cpu)
    return 2.0 * size**3 / best, 2.0 * size**3 / best_cpu


def load_preset(preset: str, overrides: list[str] = ()) -> PretrainConfig:
    """The preset's full pretraining config (model, data shapes, optimiser, batch size) plus overrides.

    No data or text checkpoint is read: the batch is synthetic and weights do not change the speed.
    """
    return load_pretrain_config(preset, ["data.random=true", "model.text_init=null", *overrides])


def bench_preset(preset: str, dtype: str, batch_size: int | None, steps: int, warmup: int, overrides: list[str] = (),
                 profile: int = 0, compile: bool = False, device: torch.device = torch.device("cpu")) -> dict:
    """Time ``steps`` training steps (after ``warmup``) and count the FLOPs of one; ``profile > 0``
    also profiles one step and returns the top ``profile`` operators by self CPU time as a table.

    ``dtype``: ``fp32``, ``bf16`` (autocast over fp32 weights, as the loop with ``train.bf16``) or
    ``bf16-weights`` (bf16 weights with fp32 master copies in the optimizer,
    :class:`~actbert.utils.precision.MasterWeights`); ``compile``: the forward through ``torch.compile``."""
    cfg = load_preset(preset, overrides)
    config, d = cfg.model, cfg.data
    b = batch_size or cfg.train.batch_size
    torch.manual_seed(0)
    model = create_model(config, heads=True, verbose=False).train().to(device)
    # the preset's layout: clips_per_sample clips, text filling max_text_len, max_regions_per_frame regions per frame
    batch = random_batch(config, batch_size=b, clips=d.clips_per_sample,
                         words_per_clip=max(1, (d.max_text_len - 1) // d.clips_per_sample - 1),
                         regions_per_clip=d.max_regions_per_frame * d.frames_per_clip, seed=0).to(device)
    optimizer = build_optimizer(model, cfg)  # the training loop's AdamW (fused unless optim.fused=false)
    master = MasterWeights(model) if dtype == "bf16-weights" else None
    if master is not None:
        master.rebind(optimizer)
    params = master.params if master is not None else list(model.parameters())
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if dtype != "fp32" else nullcontext()
    forward = torch.compile(model) if compile else model

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out = forward(batch)
        out.loss.backward()
        if master is not None:
            master.grads_to_master()
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        optimizer.step()
        if master is not None:
            master.master_to_model()

    for _ in range(warmup):
        step()
    clock = Clock(device)
    times, cpu_times = [], []
    for _ in range(steps):
        started = clock.start()
        step()
        wall, cpu = clock.stop(started)
        times.append(wall)
        cpu_times.append(cpu)

    breakdown = None
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch_profile(activities=activities) as prof:
            step()
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        breakdown = prof.key_averages().table(sort_by=key, row_limit=profile)

    counter = FlopCounterMode(display=False)
    optimizer.zero_grad(set_to_none=True)
    with counter:
        with autocast:
            out = model(batch)
        out.loss.backward()
    flops = counter.get_total_flops()
    # best of the timed steps, like the peak: on a shared machine the fastest step is the one least
    # disturbed by other jobs (the median is kept in the JSON output)
    seconds = min(times)
    tokens = int(batch.text_mask.sum() + batch.action_mask.sum() + batch.region_mask.sum())
    return {
        "preset": preset,
        "device": str(device),
        "dtype": dtype + ("+compile" if compile else ""),
        "batch": b,
        "overrides": list(overrides),
        "lengths": [int(batch.input_ids.shape[1]), int(batch.action_token_ids.shape[1]), int(batch.region_token_ids.shape[1])],
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "step_s": seconds,
        "step_s_all": times,
        "step_s_median": statistics.median(times),
        "step_cpu_s": min(cpu_times),
        "achieved_gflops_cpu": flops / min(cpu_times) / 1e9,
        "samples_per_s": b / seconds,
        "tokens_per_s": tokens / seconds,
        "gflop_per_step": flops / 1e9,
        "achieved_gflops": flops / seconds / 1e9,
        "profile": breakdown,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "base"])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "bf16-weights"],
                        help="bf16 = autocast over fp32 weights (the loop's train.bf16); bf16-weights = bf16 weights "
                             "with fp32 master copies in the optimizer")
    parser.add_argument("--compile", action="store_true", help="also time every dtype with the model under torch.compile")
    parser.add_argument("--batch-size", nargs="*", default=["base=8"], metavar="PRESET=B",
                        help="per-preset batch size (default: the preset's train.batch_size; base=8 to keep "
                             "`make bench` short on a CPU)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (the fastest is reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: one core's step time against one core's peak, a ratio "
                             "that stays meaningful on a shared machine; use the core count on a dedicated one)")
    parser.add_argument("--peak-size", type=int, default=4096, help="side of the square matmuls that measure the peak")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. model.hidden_dropout=0 model.attention_dropout=0 optim.fused=false")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile one step per row and print its N most expensive operators (self CPU time)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (a GPU if one is visible)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    device = resolve_device(args.device, "--device")
    torch.set_num_threads(args.threads)
    sizes = {}
    for item in args.batch_size:
        name, _, value = item.partition("=")
        sizes[name] = int(value)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f} (a shared machine inflates step times); device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""), file=sys.stderr)
    peaks = {"bf16": [measure_matmul_peak(torch.bfloat16, args.peak_size, 8, device)],
             "fp32": [measure_matmul_peak(torch.float32, args.peak_size, 3, device)]}
    rows = []
    for preset in args.presets:
        for dtype in args.dtypes:
            for compiled in (False, True) if args.compile else (False,):
                row = bench_preset(preset, dtype, sizes.get(preset), args.steps, args.warmup, args.overrides, args.profile,
                                   compiled, device)
                rows.append(row)
                print(f"  {preset:5s} {row['dtype']}: {row['step_s']:.3f} s/step ({row['step_cpu_s']:.3f} CPU s)", file=sys.stderr)
    peaks["bf16"].append(measure_matmul_peak(torch.bfloat16, args.peak_size, 8, device))
    peaks["fp32"].append(measure_matmul_peak(torch.float32, args.peak_size, 3, device))
    peak = {k: (max(p[0] for p in v), max(p[1] for p in v)) for k, v in peaks.items()}
    for row in rows:
        row["mfu_bf16_peak"] = row["achieved_gflops"] * 1e9 / peak["bf16"][0]
        row["mfu_bf16_peak_cpu"] = row["achieved_gflops_cpu"] * 1e9 / peak["bf16"][1]
        row["util_fp32_peak"] = row["achieved_gflops"] * 1e9 / peak["fp32"][0] if row["dtype"].startswith("fp32") else None

    def show(kind: str) -> str:
        runs = ", ".join(f"{p[0] / 1e9:.0f}" for p in peaks[kind])
        return f"{kind} {peak[kind][0] / 1e9:.0f} GFLOP/s wall (runs: {runs}), {peak[kind][1] / 1e9:.0f} GFLOP/s per CPU-second"

    print(f"\nmeasured matmul peak ({args.peak_size}^3, {torch.get_num_threads()} threads): {show('bf16')}; {show('fp32')}")
    if args.overrides:
        print(f"overrides: {' '.join(args.overrides)}")
    header = ("| preset | dtype | batch | lengths t/a/r | params (M) | s/step (best) | samples/s | GFLOP/step | GFLOP/s | "
              "MFU (bf16 peak) | MFU by CPU time | of fp32 peak |")
    print(header)
    print("|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|")
    for r in rows:
        fp32 = f"{100 * r['util_fp32_peak']:.1f}%" if r["util_fp32_peak"] is not None else "-"
        print(f"| {r['preset']} | {r['dtype']} | {r['batch']} | {'/'.join(map(str, r['lengths']))} | {r['params_m']:.1f} | "
              f"{r['step_s']:.3f} | {r['samples_per_s']:.1f} | {r['gflop_per_step']:.1f} | {r['achieved_gflops']:.0f} | "
              f"{100 * r['mfu_bf16_peak']:.1f}% | {100 * r['mfu_bf16_peak_cpu']:.1f}% | {fp32} |")
    for r in rows:
        if r["profile"]:
            print(f"\nprofile of one {r['preset']} {r['dtype']} step (batch {r['batch']}):\n{r['profile']}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"peaks_gflops_wall_cpu": {k: [[p[0] / 1e9, p[1] / 1e9] for p in v] for k, v in peaks.items()}, "rows": rows,
                       "threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(device)}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
