"""``actbert evaluate TASK --model DIR --data BENCH --store STORE --out OUT``: score a model on a task."""

from __future__ import annotations

import argparse
import sys

HELP = "evaluate a pretrained or fine-tuned model on a downstream task; write results JSON + Markdown"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from actbert.commands.finetune import add_task_arguments

    add_task_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from actbert.tasks import registry
    from actbert.tasks.common import TaskError

    try:
        return _run(args)
    except (TaskError, ValueError, FileNotFoundError) as exc:
        print(f"actbert evaluate: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, registry.UnknownTaskError) else 1


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from actbert.tasks import registry
    from actbert.tasks.common import Benchmark, TaskError, fresh_model, write_results
    from actbert.utils.io import check_writable

    registry.task_module(args.task)
    settings = registry.make_settings(args.task, args.overrides)
    model_dir = Path(args.model)
    if not model_dir.is_dir():
        raise TaskError(f"{model_dir}: model folder not found")
    check_writable(args.out, "--out")  # before anything is computed: a read-only --out would lose it all
    if args.no_pretraining:
        if args.task in ("captioning", "segmentation"):
            raise TaskError(f"{args.task}: --no-pretraining needs fine-tuning first (`actbert finetune {args.task} --no-pretraining`)")
        model = fresh_model(model_dir)
    else:
        model = registry.load_for_evaluation(args.task, model_dir)
    finetuned = (model_dir / "finetune.json").is_file()
    bench = Benchmark(args.data)
    assembler = registry.build_assembler(args.store, model)
    records = registry.evaluate(args.task, model, assembler, bench, settings, variant=args.variant, finetuned=finetuned)
    for record in records:
        json_path, md_path = write_results(args.out, record)
        metric = record["primary"]
        print(f"{record['task']} {record['dataset']} ({record['protocol']}): {metric} = {record['metrics'][metric]} -> {json_path}, {md_path}")
    return 0
