"""The pretraining loop for every registered model (nanoGPT style: the whole loop in :func:`train`, in plain sight).

The model section of the config names the family (``architecture``); the family fills the sizes the
data decides (``fill_config_from_data``), builds its dataset and batches (its processor's
``pretraining_data``) and returns named losses, which are logged and plotted whatever they are.

One process per device under ``torchrun`` (DDP, gloo on CPU / NCCL on GPU), or a single process.
Per optimiser step each process runs ``grad_accum_steps`` micro-batches of ``batch_size`` samples,
so the global batch is ``batch_size * grad_accum_steps * world_size``; DDP averages gradients over
processes and the loss is divided by ``grad_accum_steps``, so W processes with accumulation A
compute the same update as one process with accumulation W*A on the same samples.

Exact resume: samples depend only on ``(seed, epoch, dataset index)`` (data/samples.py), the
sampler's order only on ``(seed, epoch)``, and a checkpoint stores model, optimiser, scheduler,
every process's RNG states and the data position; ``--resume`` skips the sampler to that position,
so the losses that follow are the ones an uninterrupted run would have logged (bit for bit on CPU).
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from actbert.config import ConfigError, save_yaml, to_dict
from actbert.errors import ActBertError
from actbert.data.collate import ResumableDistributedSampler, make_loader
from actbert.data.corpus import CorpusError
from actbert.data.random_features import RandomCorpusSpec, write_random_corpus
from actbert.data.shards import ShardIndex, ShardStream, shard_stream_data
from actbert.data.store import FeatureStore
from actbert.models.interface import parameter_groups_of
from actbert.models.pretraining_data import PretrainSource
from actbert.models.registry import create_model, resolve_architecture
from actbert.train import distributed
from actbert.train.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_latest_verified,
    remove_partial_writes,
    restore_rng_state,
    save_checkpoint,
)
from actbert.train.config import PretrainConfig
from actbert.train.metrics_log import MetricsLog, plot_metrics
from actbert.utils.io import atomic_write_json, read_json
from actbert.utils.precision import autocast as autocast_context
from actbert.utils.precision import resolve_dtype
from actbert.utils.schedule import lr_factor


@dataclass
class PretrainData:
    dataset: Any  # the family's (a Dataset with set_epoch); default: data.samples.PretrainDataset
    collator: Any  # the family's: samples -> its batch
    model_config: Any  # the model section with dims/ids taken from the data
    failures: list[dict[str, str]]


def build_pretrain_data(cfg: PretrainConfig, run_dir: Path, info: distributed.DistInfo | None = None) -> PretrainData:
    """Tokenizer + feature store (or a random-feature corpus) + narrations -> the family's dataset and collator.

    The model family replaces the model section's feature dims, vocabulary sizes and special-token
    ids by the ones the data actually has (``fill_config_from_data``), so a preset works with any
    store; its processor then builds the dataset and collator (``pretraining_data``; default: the
    clip-window samples of data/samples.py, see models/pretraining_data.py).
    """
    from actbert.text.tokenizer import load_tokenizer

    d = cfg.data
    tokenizer = load_tokenizer(d.tokenizer)
    family = resolve_architecture(cfg.model.architecture)
    if d.random:
        r = d.random_corpus
        spec = RandomCorpusSpec(
            num_videos=r.num_videos, clips_per_video=r.clips_per_video, max_regions=max(1, d.max_regions_per_frame),
            steps_per_video=r.steps_per_video, noise=r.noise, seed=r.seed, **family.random_corpus_dims(cfg.model),
        )
        root = Path(d.random_dir) if d.random_dir else run_dir / "random_data"
        if info is None or info.is_main:
            store_path, narrations_path = write_random_corpus(root, spec)
        if info is not None:
            distributed.barrier(info)
        store_path, narrations_path = root / "store", root / "narrations.json"
    elif d.shards:
        store_path, narrations_path = Path(d.shards), Path(d.narrations)
    else:
        store_path, narrations_path = Path(d.store), Path(d.narrations)
    store = ShardIndex(store_path, verify=d.verify_shards) if d.shards else FeatureStore(store_path)
    video_ids = None
    if d.splits:
        splits = read_json(d.splits, "splits file")
        if not isinstance(splits, dict) or d.split not in splits:
            raise CorpusError(f"{d.splits}: field {d.split!r} (data.split) not found")
        video_ids = [str(v) for v in splits[d.split]]
    model_config = family.fill_config_from_data(cfg.model, store.schema, tokenizer)
    source = PretrainSource(store, narrations_path, video_ids, tokenizer, model_config, d, cfg.train.seed)
    if d.shards:  # streamed: the shards this rank reads are part of its data (data/shards.py)
        rank, world = (info.rank, info.world_size) if info is not None else (0, 1)
        built = shard_stream_data(family.processor_class, source, rank, world, cfg.train.batch_size)
    else:
        built = family.processor_class.pretraining_data(source)
    return PretrainData(built.dataset, built.collator, model_config, built.failures)


def init_weights(model: torch.nn.Module, folder: str | os.PathLike) -> None:
    """Start from the weights of a ``save_pretrained`` folder of the same model (``train.init_from``)."""
    from actbert.models.pretrained import from_pretrained, read_saved_config

    saved = to_dict(read_saved_config(folder))
    ours = to_dict(model.config)
    diff = sorted(k for k in set(saved) | set(ours) if saved.get(k) != ours.get(k))
    if diff:
        raise CheckpointError(f"{folder}: train.init_from describes another model than the model section (fields {diff})")
    model.load_state_dict(from_pretrained(folder, model_class=type(model)).state_dict())


def build_optimizer(model: torch.nn.Module, cfg: PretrainConfig) -> torch.optim.AdamW:
    """AdamW; biases, LayerNorm weights and 1-d parameters get no weight decay. Learning rates:
    ``optim.lr_scales[g] * optim.lr`` for the model's named group ``g`` (``parameter_groups()``),
    ``optim.lr`` for the rest. A scale for a group the model does not have is an error."""
    o = cfg.optim
    named = parameter_groups_of(model)
    unknown = sorted(set(o.lr_scales) - set(named))
    if unknown:
        raise ConfigError(f"optim.lr_scales: unknown parameter group(s) {unknown} for {type(getattr(model, 'module', model)).__name__}; "
                          f"its groups: {sorted(named)}")
    scale_of: dict[int, float] = {}
    for group, params in named.items():
        if group in o.lr_scales:
            scale_of.update({id(p): float(o.lr_scales[group]) for p in params})
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            decays = not (param.ndim < 2 or "LayerNorm" in name)
            groups.setdefault((decays, scale_of.get(id(param), 1.0)), []).append(param)
    # the base group (decayed, scale 1) first: the loop logs param_groups[0]'s learning rate
    order = sorted(groups, key=lambda key: (not key[0], key[1] != 1.0, key[1]))
    param_groups = [
        {"params": groups[key], "weight_decay": o.weight_decay if key[0] else 0.0, "lr": o.lr * key[1]} for key in order
    ]
    return torch.optim.AdamW(param_groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, fused=True if o.fused else None)


# what a run folder holds once a run has started (random_data/ is a cache any run may reuse)
RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "metrics.png", "model", "config.yaml", "data_failures.json")
# keys a resume may change without touching the numbers (paths may move; workers do not change samples)
RESUME_FREE = {"data.num_workers", "data.store", "data.shards", "data.verify_shards", "data.narrations", "data.random_dir", "train.progress",
               "train.log_every", "train.checkpoint_every", "train.keep_checkpoints", "train.plot_every_checkpoint",
               "train.stop_after", "train.num_threads", "train.device"}
# keys that decide which samples come in which order: a resume with others is refused
RESUME_ORDER = ("data.", "train.batch_size", "train.grad_accum_steps", "train.seed")


def existing_run(run_dir: Path) -> list[str]:
    """The outputs of an earlier run in ``run_dir`` (empty: nothing to lose)."""
    found = []
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            found.append(name)
    return found


def clear_run(run_dir: Path) -> None:
    """Remove an earlier run's outputs (``--overwrite``), so old checkpoints never mix with new ones."""
    import shutil

    for name in RUN_OUTPUTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "lr_scales":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_differences(saved: dict[str, Any], current: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Keys (``section.key``) where this run's config differs from the checkpoint's, outside the
    model section: ``(refused, changed)`` -- refused change the data order, changed only the numbers."""
    a = {k: v for k, v in _flat(saved).items() if not k.startswith("model.")}
    b = {k: v for k, v in _flat(current).items() if not k.startswith("model.")}
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in RESUME_FREE)
    refused = [k for k in differ if k.startswith(RESUME_ORDER)]
    return refused, [k for k in differ if k not in refused]


def train(cfg: PretrainConfig, run_dir: str | os.PathLike, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Pretrain the model ``cfg.model`` describes as ``cfg`` says, writing checkpoints, metrics and the final model to ``run_dir``.

    A ``run_dir`` that already holds a run is refused unless ``resume`` (continue it: from the
    newest checkpoint that verifies, with the same data order) or ``overwrite`` (its outputs are
    removed first). Returns a summary: steps done, first/last logged losses, paths.
    """
    t = cfg.train
    run_dir = Path(run_dir)
    info = distributed.init_distributed(t.device)
    device = info.device
    if t.num_threads > 0:
        torch.set_num_threads(t.num_threads)
    main = info.is_main
    previous = [] if resume else existing_run(run_dir)  # every process checks: all refuse together
    if previous and not overwrite:
        raise ConfigError(f"{run_dir}: already holds a run ({', '.join(previous)}); continue it with --resume, "
                          f"or replace it with --overwrite")
    if main:
        if previous:
            clear_run(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    distributed.barrier(info)

    # ---- data and model
    data = build_pretrain_data(cfg, run_dir, info)
    if main:
        if data.failures:
            atomic_write_json(run_dir / "data_failures.json", data.failures)
            print(f"warning: skipped {len(data.failures)} bad video(s) or narration segment(s); see {run_dir / 'data_failures.json'}", file=sys.stderr)
    torch.manual_seed(t.seed)  # identical initialisation on every process
    model = create_model(data.model_config, heads=True, verbose=main)  # loads model.text_init (e.g. MiniLM) if set
    if t.init_from:
        init_weights(model, t.init_from)
    elif main and not resume:  # e.g. base without BERT-base weights: not the paper's starting point
        note = getattr(data.model_config, "text_init_warning", lambda: None)()
        if note:
            print(f"warning: {note}", file=sys.stderr)
    model.to(device)
    raw_model = model
    if info.enabled:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    model = torch.compile(model, backend=t.compile_backend) if t.compile else model  # saves stay raw_model's
    optimizer = build_optimizer(raw_model, cfg)
    o = cfg.optim
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, o.warmup_steps, t.max_steps, o.schedule, o.min_lr_ratio)
    )
    # chunks of one micro-batch per rank: W processes see the micro-batches one process with
    # accumulation W * A would see (data/collate.py), so DDP and single-process runs agree
    stream = data.dataset if isinstance(data.dataset, ShardStream) else None
    if stream is not None:  # packed shards: the stream is its own sampler (set_epoch / set_start / len)
        sampler, loader = stream, stream.loader(cfg.data.num_workers, pin_memory=device.type == "cuda")
    else:
        sampler = ResumableDistributedSampler(data.dataset, info.world_size, info.rank, shuffle=True, seed=t.seed,
                                              chunk_size=t.batch_size)
        loader = make_loader(data.dataset, t.batch_size, data.collator, sampler, cfg.data.num_workers, t.seed,
                             pin_memory=device.type == "cuda")
    micro_per_epoch = len(sampler) // t.batch_size
    steps_per_epoch = micro_per_epoch // t.grad_accum_steps
    if steps_per_epoch < 1:
        raise CorpusError(
            f"{len(data.dataset)} samples give no full optimiser step of {t.batch_size} x {t.grad_accum_steps} "
            f"per process x {info.world_size} processes; lower train.batch_size or add data"
        )
    global_batch = t.batch_size * t.grad_accum_steps * info.world_size

    # ---- resume
    step, epoch, step_in_epoch = 0, 0, 0
    if resume and main:
        remove_partial_writes(run_dir)
    ckpt_path, ckpt, skipped = load_latest_verified(run_dir) if resume else (None, None, [])
    if main:
        for line in skipped:
            print(f"warning: {line}; resuming from an older checkpoint", file=sys.stderr)
        if skipped and ckpt_path is not None:
            print(f"note: resuming from {ckpt_path} (the newest checkpoint that verifies)", file=sys.stderr)
    if resume and ckpt_path is None and main:
        print(f"note: --resume given but {run_dir} has no checkpoint; starting from scratch", file=sys.stderr)
    if ckpt is not None:
        if ckpt["world_size"] != info.world_size:
            raise CheckpointError(f"{ckpt_path}: field 'world_size' is {ckpt['world_size']}, this run has {info.world_size} "
                                  "processes (exact resume needs the same data partition)")
        saved_model = ckpt["config"].get("model", {})
        if saved_model != to_dict(data.model_config):
            diff = sorted(k for k in set(saved_model) | set(to_dict(data.model_config))
                          if saved_model.get(k) != to_dict(data.model_config).get(k))
            raise CheckpointError(f"{ckpt_path}: field 'config.model' differs from this run's model config in {diff}")
        refused, changed = resume_differences(ckpt["config"], to_dict(cfg))
        if refused:
            raise CheckpointError(f"{ckpt_path}: resuming with other {', '.join(refused)} would change which samples "
                                  "come next (not an exact resume); resume with the run's values or start a new run")
        if changed and main:
            print(f"note: resuming with changed {', '.join(changed)}: the run continues with the new values and is "
                  "no longer the one an uninterrupted run would have given", file=sys.stderr)
        try:
            raw_model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"{ckpt_path}: field 'model' does not fit the model ({exc})") from exc
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        step, epoch, step_in_epoch = ckpt["step"], ckpt["data"]["epoch"], ckpt["data"]["step_in_epoch"]
        if stream is not None:
            stream.check_resume(ckpt["data"].get("stream"), str(ckpt_path))
        restore_rng_state(ckpt["rng"][info.rank])
        del ckpt
    else:
        torch.manual_seed(t.seed + 7919 * info.rank)  # dropout differs between processes
    if main:  # only now that the run starts: a refused --resume / --set leaves the run's config as it was
        save_yaml(cfg, run_dir / "config.yaml")
    metrics = MetricsLog(run_dir / "metrics.jsonl", resume_step=step if ckpt_path is not None else None) if main else None

    def checkpoint() -> None:
        rng = distributed.all_gather_objects(capture_rng_state(), info)
        if main:
            payload = {
                "model": raw_model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng,
                "data": {"epoch": epoch, "step_in_epoch": step_in_epoch,
                         **({"stream": stream.state(epoch, step_in_epoch * t.grad_accum_steps * t.batch_size)} if stream is not None else {})},
                "world_size": info.world_size,
                "config": {**to_dict(cfg), "model": to_dict(data.model_config)},
            }
            save_checkpoint(run_dir, step, payload, t.keep_checkpoints)
            if t.plot_every_checkpoint:
                plot_metrics(run_dir / "metrics.jsonl", run_dir / "metrics.png")
        distributed.barrier(info)

    precision = resolve_dtype("auto" if t.bf16 == "auto" else ("bf16" if t.bf16 else "fp32"), device.type)
    if t.bf16 == "auto" and main:
        print(f"train.bf16=auto: {'bf16 autocast' if precision == 'bf16' else 'fp32 (no native bf16 matrix units on this ' + device.type + ')'}")
    autocast = autocast_context(precision, device.type)
    progress = tqdm(total=t.max_steps, initial=step, desc="pretrain", unit="step", disable=not (main and t.progress))
    first: dict[str, float] | None = None
    last: dict[str, float] | None = None
    window_start, window_samples, window_tokens = time.perf_counter(), 0, 0
    # the model's loss names, in its order: declared (``loss_names()``; needed by a family whose
    # batches report different losses, e.g. one task per batch) or those of the first batch
    declared = getattr(raw_model, "loss_names", None)
    loss_names: list[str] | None = list(declared()) if callable(declared) else None
    loss_sums: torch.Tensor | None = None  # total + each named loss, over the log window
    loss_counts: torch.Tensor | None = None  # steps (fractions of one per micro-batch) that reported each
    window_steps = 0
    interrupted = False

    # ---- the loop
    model.train()
    while step < t.max_steps and not interrupted:
        data.dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        sampler.set_start(step_in_epoch * t.grad_accum_steps * t.batch_size)
        batches = iter(loader)
        while step_in_epoch < steps_per_epoch and step < t.max_steps:
            for micro in range(t.grad_accum_steps):
                batch = next(batches).to(device, non_blocking=True)
                last_micro = micro == t.grad_accum_steps - 1
                # DDP: all-reduce gradients only on the last micro-batch of the step
                sync = nullcontext() if (last_micro or not info.enabled) else model.no_sync()
                with sync:
                    with autocast:
                        out = model(batch)
                    (out.loss / t.grad_accum_steps).backward()
                if loss_names is None:
                    loss_names = list(out.losses)
                if loss_sums is None:
                    loss_sums = torch.zeros(len(loss_names) + 1, device=device)
                    loss_counts = torch.zeros(len(loss_names) + 1, device=device)
                unknown = [k for k in out.losses if k not in loss_names]
                if unknown:
                    raise ActBertError(f"{type(raw_model).__name__} reported losses {unknown} not among {loss_names}; "
                                          "a family whose batches report different losses declares them in loss_names()")
                zero = out.loss.detach().float() * 0
                present = torch.tensor([1.0] + [float(k in out.losses) for k in loss_names], device=device)
                values = [out.loss.detach().float()] + [out.losses[k].detach().float() if k in out.losses else zero for k in loss_names]
                loss_sums += torch.stack(values) / t.grad_accum_steps
                loss_counts += present / t.grad_accum_steps
                window_tokens += batch.num_tokens()
            if o.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(raw_model.parameters(), o.grad_clip)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            step_in_epoch += 1
            window_steps += 1
            window_samples += global_batch
            progress.update(1)

            if step % t.log_every == 0 or step == t.max_steps:
                sums, counts = distributed.all_reduce_sum(loss_sums, info), distributed.all_reduce_sum(loss_counts, info)
                means = [float(v) if c > 0 else None for v, c in zip((sums / counts.clamp(min=1e-12)).tolist(), counts.tolist())]
                tokens = distributed.all_reduce_mean(torch.tensor([float(window_tokens)], device=device), info).item()
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                record = {"step": step, "epoch": epoch, **dict(zip(["loss", *loss_names], means)), "lr": lr,
                          "samples_per_s": window_samples / elapsed, "tokens_per_s": tokens * info.world_size / elapsed}
                if main:
                    metrics.write(record)
                    progress.set_postfix(loss=f"{record['loss']:.3f}")
                first = first or record
                last = record
                loss_sums.zero_()
                loss_counts.zero_()
                window_steps, window_samples, window_tokens = 0, 0, 0
                window_start = time.perf_counter()
            if t.checkpoint_every > 0 and step % t.checkpoint_every == 0 and step < t.max_steps:
                checkpoint()
            if t.stop_after > 0 and step >= t.stop_after and step < t.max_steps:
                interrupted = True  # simulated interruption: stop without the end-of-run work
                break
        if not interrupted and step_in_epoch >= steps_per_epoch:
            epoch, step_in_epoch = epoch + 1, 0
    progress.close()

    # ---- the end
    model_dir = run_dir / "model"
    if not interrupted:
        checkpoint()
        if main:
            raw_model.save_pretrained(model_dir)
            plot_metrics(run_dir / "metrics.jsonl", run_dir / "metrics.png")
    distributed.barrier(info)
    distributed.cleanup()
    return {
        "steps": step,
        "interrupted": interrupted,
        "first": first,
        "last": last,
        "run_dir": str(run_dir),
        "model_dir": str(model_dir) if not interrupted else None,
        "world_size": info.world_size,
        "global_batch": global_batch,
    }
