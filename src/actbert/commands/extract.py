"""``actbert extract``: videos + narrations -> feature store (action, region and per-second features)."""

from __future__ import annotations

import argparse
import sys

HELP = ("extract action features (3D CNN, per clip and per second) and region features (detector or given boxes) "
        "into a feature store; on an existing store, fills the per-second features its records lack")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None, help="benchmark folder (videos/, narrations.json, objects.json)")
    parser.add_argument("--videos", default=None, help="videos folder (default: DATA/videos)")
    parser.add_argument("--narrations", default=None, help="caption.json-style narrations (default: DATA/narrations.json)")
    parser.add_argument("--store", required=True, help="feature store folder to write into")
    parser.add_argument("--action-encoder", required=True, help="folder written by train-action-encoder")
    parser.add_argument("--regions", choices=("given", "detector"), default="given",
                        help="given: boxes from objects.json + object classifier; detector: Faster R-CNN (COCO)")
    parser.add_argument("--objects", default=None, help="objects.json with given boxes (default: DATA/objects.json)")
    parser.add_argument("--object-classifier", default=None, help="file written by train-object-classifier (--regions given)")
    parser.add_argument("--detector-weights", default=None,
                        help="fasterrcnn_resnet50_fpn COCO state dict (.pth or .safetensors); default: torchvision's cache. "
                        "Never downloaded (see docs/extraction.md)")
    parser.add_argument("--detector-random-init", action="store_true",
                        help="untrained detector (throughput checks only: its regions are meaningless)")
    parser.add_argument("--detector-min-size", type=int, default=None, help="detector input short side (torchvision default 800)")
    parser.add_argument("--score-threshold", type=float, default=0.4, help="detector confidence threshold")
    parser.add_argument("--max-regions", type=int, default=5, help="regions kept per frame")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="storage dtype of features")
    parser.add_argument("--shard", default="0/1", help="i/n: this worker's share of the sorted video ids")
    parser.add_argument("--device", default="cpu", help="torch device for the networks (cpu, cuda; --engine local)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: this process; ray: one Ray task per video (pip install 'actbert[ray]'; "
                        "docs/extraction.md, 'On a cluster')")
    parser.add_argument("--ray-address", default=None,
                        help="--engine ray: the Ray cluster (auto, ray://HOST:10001, ...); default: a local Ray")
    parser.add_argument("--workers", type=int, default=None,
                        help="--engine ray: tasks at once (default: the cluster's CPUs, or GPUs when it has any)")
    parser.add_argument("--gpus-per-task", type=float, default=None,
                        help="--engine ray: GPUs per task (default 1 when the cluster has GPUs, else 0)")
    parser.add_argument("--cpus-per-task", type=int, default=None,
                        help="--engine ray: CPUs per task, also its torch threads (default 1)")
    seconds = parser.add_mutually_exclusive_group()
    seconds.add_argument("--no-second-features", action="store_true",
                         help="store no per-second features (a store without them; refused by a store that has them)")
    seconds.add_argument("--second-features-only", action="store_true",
                         help="only fill the per-second features of the records already in --store (no new videos; "
                         "region options not needed)")


def run(args: argparse.Namespace) -> int:
    from actbert.video.extract import extract_features

    report = extract_features(
        args.store, args.action_encoder, data=args.data, videos=args.videos, narrations=args.narrations,
        regions=args.regions, objects=args.objects, object_classifier=args.object_classifier,
        detector_weights=args.detector_weights, detector_random_init=args.detector_random_init,
        detector_min_size=args.detector_min_size, score_threshold=args.score_threshold, max_regions=args.max_regions,
        dtype=args.dtype, shard=args.shard, device=args.device,
        second_features=not args.no_second_features, fill_only=args.second_features_only,
        engine=args.engine, ray_address=args.ray_address, workers=args.workers, gpus_per_task=args.gpus_per_task,
        cpus_per_task=args.cpus_per_task,
    )
    print(report.summary())
    if report.failures_path is not None and (report.failed or report.narration_problems):
        print(f"failures: {report.failures_path}")
    if report.failed:  # the good videos are stored; a script still learns that some are not
        print(f"actbert extract: {len(report.failed)} of {report.assigned} video(s) failed; see "
              f"{report.failures_path}", file=sys.stderr)
        return 1
    return 0
