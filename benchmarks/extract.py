"""Feature-extraction throughput on the synthetic demo benchmark (measured, printed).

    python benchmarks/extract.py [--data DIR] [--videos 8] [--threads N]

Without ``--data`` the demo benchmark is generated into a temporary folder first (about half a
minute). Prints, with the torch thread count:

- decoding: 1 FPS frames/s (``frames_at_fps``) and clip windows/s (``clip_windows``);
- region features, frames/s: the given-boxes route (box crops + the project's object classifier)
  and the Faster R-CNN route (ResNet-50 FPN, torchvision's default 800 px input) on a few frames;
- action features, clips/s: the narrow encoder at the demo's clip size and r3d_18 at the paper's
  (32 frames x 112 px).

Network weights do not change the arithmetic, so a network without a local weight file runs with
random weights and its line says so ("random weights"): only its speed means anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from actbert.text.verbs import ActionVocabulary
from actbert.video.action_encoder import ActionEncoder, build_action_encoder, load_action_encoder
from actbert.video.decode import DecodedFrames, clip_windows, frames_at_fps
from actbert.video.object_classifier import ObjectClassifier, ObjectClassifierConfig, load_object_classifier
from actbert.video.regions import COCO_WEIGHTS_FILE, DetectorRegions, GivenBoxRegions, load_detector


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="benchmark folder (default: generate the demo benchmark in a temp dir)")
    p.add_argument("--videos", type=int, default=8, help="videos timed for decoding and given-box regions")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--object-classifier", default=None, help="trained classifier (default: untrained, same cost)")
    p.add_argument("--action-encoder", default=None, help="trained narrow encoder folder (default: random weights)")
    p.add_argument("--narrow-frames", type=int, default=16, help="narrow encoder clip length (demo setting)")
    p.add_argument("--narrow-size", type=int, default=64, help="narrow encoder clip side in pixels (demo setting)")
    p.add_argument("--r3d-clips", type=int, default=8, help="clips timed for r3d_18 at 32 x 112")
    p.add_argument("--detector-frames", type=int, default=4, help="frames timed for Faster R-CNN (0: skip)")
    p.add_argument("--detector-weights", default=None, help=f"local {COCO_WEIGHTS_FILE} (default: torchvision cache)")
    p.add_argument("--detector-min-size", type=int, default=None, help="detector input short side (default 800)")
    p.add_argument("--batch-size", type=int, default=16, help="clips per action-encoder forward")
    return p.parse_args(argv)


class Timer:
    """Wall-clock and this process's CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def line(what: str, count: int, unit: str, timer: Timer, note: str = "") -> None:
    rate = count / timer.wall if timer.wall > 0 else float("inf")
    print(f"{what:<46} {rate:9.3g} {unit}/s   ({count} {unit} in {timer.wall:6.2f} s wall, {timer.cpu:6.2f} s CPU){note}",
          flush=True)


def demo_data(args) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    if args.data:
        return Path(args.data), None
    from actbert.data.synth import generate_benchmark

    tmp = tempfile.TemporaryDirectory(prefix="actbert-bench-")
    info = generate_benchmark("demo", 0, Path(tmp.name) / "demo", progress=False)
    print(info.summary(), flush=True)
    return info.root, tmp


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs visible, "
          f"{platform.processor() or platform.machine()}, device cpu", flush=True)
    data, tmp = demo_data(args)
    meta = json.loads((data / "meta.json").read_text())
    objects = json.loads((data / "objects.json").read_text())
    narrations = json.loads((data / "narrations.json").read_text())
    video_ids = sorted(p.stem for p in (data / "videos").glob("*.mp4"))[: args.videos]
    paths = [data / "videos" / f"{v}.mp4" for v in video_ids]
    print(f"data: {data} ({meta.get('size')}, {meta['width']}x{meta['height']} @ {meta['fps']} fps), "
          f"timing {len(video_ids)} videos", flush=True)

    # --- decoding -------------------------------------------------------------------------------
    with Timer() as t:
        decoded = [frames_at_fps(p, fps=1.0) for p in paths]
    n_frames = sum(len(d.frames) for d in decoded)
    line("decode 1 FPS frames (frames_at_fps)", n_frames, "frames", t)

    # --- regions: given boxes + object classifier ------------------------------------------------
    if args.object_classifier:
        classifier, note = load_object_classifier(args.object_classifier), ""
    else:
        torch.manual_seed(0)
        classifier, note = ObjectClassifier(ObjectClassifierConfig(list(meta["objects"]))).eval(), "  [random weights]"
    given = GivenBoxRegions(classifier, objects)
    given(video_ids[0], decoded[0])  # warm-up
    with Timer() as t:
        for video_id, d in zip(video_ids, decoded):
            given(video_id, d)
    line("regions, given boxes + object classifier", n_frames, "frames", t, note)

    # --- regions: Faster R-CNN -------------------------------------------------------------------
    if args.detector_frames > 0:
        try:
            model, note = load_detector(args.detector_weights), ""
        except ValueError:  # DetectorWeightsError: no local COCO weights (nothing is downloaded)
            torch.manual_seed(0)
            model, note = load_detector(random_init=True), "  [random weights: no local COCO weights; speed only]"
        detector = DetectorRegions(model, min_size=args.detector_min_size, batch_size=1)
        frames = np.concatenate([d.frames for d in decoded])[: args.detector_frames + 1]
        warm, timed = frames[:1], frames[1:]
        size = detector.model.transform.min_size[0]
        detector("warm", DecodedFrames(warm, np.zeros(1), meta["width"], meta["height"]))
        with Timer() as t:
            detector("bench", DecodedFrames(timed, np.arange(len(timed), dtype=float), meta["width"], meta["height"]))
        line(f"regions, Faster R-CNN R50-FPN ({size} px input)", len(timed), "frames", t, note)

    # --- action features -------------------------------------------------------------------------
    vocab = ActionVocabulary([f"verb{i}" for i in range(len(meta["actions"]))])
    centers = {v: [0.5 * (s + e) for s, e in zip(narrations[v]["start"], narrations[v]["end"])] for v in video_ids}
    runs = []
    if args.action_encoder:
        encoder = load_action_encoder(args.action_encoder)
        runs.append((f"{encoder.arch} (trained)", encoder, ""))
    else:
        torch.manual_seed(0)
        config = dict(num_frames=args.narrow_frames, fps=8.0, clip_size=args.narrow_size)
        runs.append(("narrow", ActionEncoder(build_action_encoder("narrow", len(vocab)), vocab, config,
                                              batch_size=args.batch_size), "  [random weights]"))
    torch.manual_seed(0)
    runs.append(("r3d_18", ActionEncoder(build_action_encoder("r3d_18", len(vocab)), vocab,
                                         dict(num_frames=32, fps=8.0, clip_size=112), batch_size=args.batch_size),
                 "  [random weights]"))
    for name, encoder, note in runs:
        shape = f"{encoder.num_frames}x{encoder.clip_size}px"
        with Timer() as t:
            windows = [clip_windows(p, centers[v], num_frames=encoder.num_frames, fps=encoder.fps, size=encoder.clip_size)
                       for v, p in zip(video_ids, paths)]
        clips = np.concatenate(windows)
        line(f"decode clip windows {shape}", len(clips), "clips", t)
        if name == "r3d_18":
            clips = clips[: args.r3d_clips]
        encoder.features(clips[:2])  # warm-up
        with Timer() as t:
            encoder.features(clips)
        line(f"action features, {name} {shape}", len(clips), "clips", t, note)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
