"""``actbert finetune TASK --model DIR --data BENCH --store STORE --out OUT``: fine-tune, evaluate, save."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "fine-tune a pretrained model on a downstream task, evaluate it, save results and the fine-tuned model"


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by ``finetune`` and ``evaluate``."""
    from actbert.tasks.common import TASK_NAMES

    parser.add_argument("task", help=f"one of: {', '.join(TASK_NAMES)}")
    parser.add_argument("--model", required=True, help="model folder (save_pretrained output, e.g. runs/demo/pretrain/model)")
    parser.add_argument("--data", required=True, help="benchmark folder with annotations/ (e.g. runs/demo/synth)")
    parser.add_argument("--store", required=True, help="feature store folder (actbert extract)")
    parser.add_argument("--out", required=True, help="output folder: <result>.json + <result>.md")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a task setting, e.g. --set steps=100 --set dtype=bf16 (repeatable)")
    parser.add_argument("--variant", default="", help="label written into the results (e.g. pretrained)")
    parser.add_argument("--no-pretraining", action="store_true",
                        help="use the model folder's architecture with fresh weights (the no-pretraining baseline)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_task_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from actbert.tasks import registry
    from actbert.tasks.common import TaskError

    try:
        return _run(args)
    except (TaskError, ValueError, FileNotFoundError) as exc:
        print(f"actbert finetune: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, registry.UnknownTaskError) else 1


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from actbert.tasks import registry
    from actbert.tasks.common import Benchmark, TaskError, fresh_model, load_model, write_results
    from actbert.utils.io import atomic_write_json, check_writable

    registry.task_module(args.task)  # unknown task -> clear error before anything loads
    settings = registry.make_settings(args.task, args.overrides)
    if not registry.has_finetune(args.task):
        raise TaskError(f"{args.task} has no fine-tuning (the paper scores it zero-shot); use `actbert evaluate {args.task}`")
    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        raise TaskError(f"{model_dir}: not a model folder (no config.json; expected save_pretrained output)")
    check_writable(args.out, "--out")  # before anything is computed: a read-only --out would lose it all
    bench = Benchmark(args.data)
    model = fresh_model(model_dir) if args.no_pretraining else load_model(model_dir)
    assembler = registry.build_assembler(args.store, model)
    tuned = registry.finetune(args.task, model, assembler, bench, settings)
    out = Path(args.out)
    saved = registry.save_finetuned(args.task, tuned.model, out / "model")
    summary = tuned.log.summary() if tuned.log is not None else {}
    atomic_write_json(saved / "finetune.json", {"task": args.task, "base_model": str(model_dir),
                                                "no_pretraining": args.no_pretraining, "log": summary})
    print(f"fine-tuned {args.task}: {json.dumps(summary)} -> {saved}")
    records = registry.evaluate(args.task, tuned.model, assembler, bench, settings, variant=args.variant, finetuned=True)
    for record in records:
        record["finetune"] = summary
        json_path, md_path = write_results(out, record)
        metric = record["primary"]
        print(f"{record['task']} {record['dataset']} ({record['protocol']}): {metric} = {record['metrics'][metric]} -> {json_path}, {md_path}")
    return 0
