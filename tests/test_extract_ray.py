"""``actbert extract --engine ray``: a local Ray with 2 workers stores the same bytes as the single-process
path, every video exactly once, while one worker is killed mid-run; a corrupt video is skipped and
reported; a video whose worker dies on every try, or whose task raises an error the per-video
catch does not cover, is reported and the run goes on.

The independent source is the single-process path (``extract_videos``) on the same videos and
networks: records are compared file for file, array for array and byte for byte, and failures.json entry for entry.
Real networks (a random-init narrow action encoder and object classifier, saved and loaded from
files as the CLI does) on six tiny synthetic videos; one torch thread on both sides. A local Ray
start on the shared 2-core machine takes several seconds: one Ray for the module.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import sys
from pathlib import Path

import pytest
import torch

from actbert.data.store import FeatureStoreWriter
from actbert.text.verbs import ActionVocabulary
from actbert.video.extract import ExtractionNetworks, NetworkFiles, extract_videos, list_videos

VERBS = ["cut", "pour", "roll", "stir", "wash"]
GOOD = 6  # synthetic videos used
CORRUPT = "zz_corrupt"


class WordMiner:
    """The vocabulary verbs that occur as words of the text (driver side only: no spaCy needed)."""

    def verbs_many(self, texts):
        return [[w for w in t.lower().split() if w in VERBS] for t in texts]


class DyingRegions:
    """Region extractor that kills its own worker process on ``victims``: once when a marker file is
    given (the marker makes the retry succeed), on every try for None; "raise": a MemoryError, an
    error the per-video catch does not cover."""

    def __init__(self, inner, victims: dict[str, str | None]):
        self.inner, self.victims = inner, victims
        self.feature_dim, self.class_names = inner.feature_dim, inner.class_names

    def __call__(self, video_id, decoded):
        if video_id in self.victims:
            marker = self.victims[video_id]
            if marker == "raise":
                raise MemoryError("planted: cannot allocate")
            if marker is None or not os.path.exists(marker):
                if marker is not None:
                    Path(marker).write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
        return self.inner(video_id, decoded)


class DyingNetworks:
    """``NetworkFiles`` whose region extractor is a ``DyingRegions``."""

    def __init__(self, files: NetworkFiles, victims: dict[str, str | None]):
        self.files, self.victims = files, victims

    def __call__(self, device: str = "cpu") -> ExtractionNetworks:
        nets = self.files(device)
        return ExtractionNetworks(nets.action_encoder, nets.vocab, DyingRegions(nets.regions, self.victims))


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'actbert[ray]')")
    # this module's classes go to the workers by value (tests/ is not importable there)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(synth_tiny, tmp_path_factory):
    """Six synthetic videos and a corrupt one, their narrations and boxes, and saved random-init networks."""
    from actbert.video.action_encoder import build_action_encoder, save_action_encoder
    from actbert.video.object_classifier import ObjectClassifier, ObjectClassifierConfig, save_object_classifier

    root = tmp_path_factory.mktemp("ray_inputs")
    (root / "videos").mkdir()
    ids = sorted(list_videos(synth_tiny / "videos"))[:GOOD]
    for video_id in ids:
        (root / "videos" / f"{video_id}.mp4").symlink_to(synth_tiny / "videos" / f"{video_id}.mp4")
    (root / "videos" / f"{CORRUPT}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    torch.manual_seed(0)
    vocab = ActionVocabulary(VERBS)
    save_action_encoder(build_action_encoder("narrow", len(vocab)), vocab, root / "encoder",
                        {"num_frames": 4, "fps": 4.0, "clip_size": 32})
    meta = json.loads((synth_tiny / "meta.json").read_text())
    classifier = ObjectClassifier(ObjectClassifierConfig(list(meta["objects"]), crop_size=16, widths=(8, 16), embed_dim=12))
    save_object_classifier(classifier.eval(), root / "objects.safetensors")
    files = NetworkFiles(str(root / "encoder"), objects=str(synth_tiny / "objects.json"),
                         object_classifier=str(root / "objects.safetensors"))
    return root, synth_tiny / "narrations.json", files, ids


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """The single-process path's store of the same videos."""
    root, narrations, files, _ = inputs
    store = tmp_path_factory.mktemp("ray_reference") / "store"
    nets = files("cpu")
    report = extract_videos(root / "videos", store, nets.action_encoder, nets.vocab, nets.regions,
                            narrations_path=narrations, verb_miner=WordMiner(), progress=False)
    assert [f["video_id"] for f in report.failed] == [CORRUPT]
    return store, report


def records(store: Path) -> dict[str, tuple[dict, bytes]]:
    """{video_id: (safetensors header, data bytes)}: every array's dtype, shape, offsets and bytes.

    Not the file's bytes: safetensors writes the metadata keys in a hash map's order, which differs
    from one write to the next even in one process.
    """
    out = {}
    for path in sorted((store / "videos").iterdir()):
        raw = path.read_bytes()
        (length,) = struct.unpack("<Q", raw[:8])
        out[path.stem] = (json.loads(raw[8 : 8 + length]), raw[8 + length :])
    return out


def failures(store: Path) -> list[dict]:
    return json.loads((store / "failures.json").read_text())


def test_killed_worker_is_retried_and_every_video_is_stored_once_bit_for_bit(ray_local, inputs, reference, tmp_path,
                                                                             monkeypatch):
    from actbert.video.distributed import extract_videos_ray

    root, narrations, files, ids = inputs
    ref_store, ref_report = reference
    once, always, raises = ids[1], ids[4], ids[2]
    marker = tmp_path / "killed-once"
    writes: list[str] = []
    real_write = FeatureStoreWriter.write

    def counting_write(self, video_id, features):
        writes.append(video_id)
        return real_write(self, video_id, features)

    monkeypatch.setattr(FeatureStoreWriter, "write", counting_write)
    store = tmp_path / "store"
    report = extract_videos_ray(root / "videos", store, DyingNetworks(files, {once: str(marker), always: None, raises: "raise"}),
                                narrations_path=narrations, verb_miner=WordMiner(), progress=False, max_retries=1)

    assert marker.exists()  # a worker really died on `once`, and its retry stored it
    stored = [v for v in ids if v not in (always, raises)]
    assert sorted(writes) == sorted(stored)  # each video written exactly once, by the driver
    assert sorted(p.name for p in (store / "videos").iterdir()) == [f"{v}.safetensors" for v in stored]  # no temporaries
    ours, theirs = records(store), records(ref_store)
    assert {v: ours[v] == theirs[v] for v in stored} == {v: True for v in stored}  # the same bytes
    assert report.written == stored and report.skipped == []

    # the corrupt file as the single-process path reports it; the always-dying video with Ray's error
    died = [f for f in report.failed if f["video_id"] == always]
    assert len(died) == 1 and died[0]["stage"] == "extract" and died[0]["error"].startswith("WorkerCrashedError")
    assert "after 1 retries" in died[0]["error"] and "\n" not in died[0]["error"]
    raised = [f for f in report.failed if f["video_id"] == raises]
    assert [f["error"] for f in raised] == ["MemoryError: planted: cannot allocate"]  # not retried: Ray's own rule
    assert [f for f in failures(store) if f["video_id"] not in (always, raises)] == failures(ref_store)
    assert report.narration_problems == ref_report.narration_problems

    # a rerun skips what is stored and extracts the video whose worker died (now it does not)
    report = extract_videos_ray(root / "videos", store, files, narrations_path=narrations, verb_miner=WordMiner(),
                                progress=False)
    assert report.written == sorted([always, raises]) and sorted(report.skipped) == sorted(stored)
    assert records(store) == records(ref_store) and failures(store) == failures(ref_store)


def test_cli_engine_ray_composes_with_shard(ray_local, inputs, reference, tmp_path, capsys):
    from actbert.cli import main
    from actbert.video.extract import shard_ids

    root, narrations, files, ids = inputs
    ref_store, _ = reference
    store = tmp_path / "store"
    code = main(["extract", "--videos", str(root / "videos"), "--narrations", str(narrations), "--store", str(store),
                 "--action-encoder", files.action_encoder, "--regions", "given", "--objects", files.objects,
                 "--object-classifier", files.object_classifier, "--shard", "1/2", "--engine", "ray", "--workers", "2", "--cpus-per-task", "1"])
    mine = shard_ids([*ids, CORRUPT], 1, 2)
    good = [v for v in mine if v != CORRUPT]
    assert code == (1 if CORRUPT in mine else 0)
    assert capsys.readouterr().out.startswith(f"shard 1/2: {len(mine)} videos, {len(good)} written")
    ours, theirs = records(store), records(ref_store)
    assert sorted(ours) == good and all(ours[v] == theirs[v] for v in good)


def test_fill_on_ray_matches_the_single_process_fill(ray_local, inputs, tmp_path):
    from actbert.video.distributed import extract_videos_ray

    root, narrations, files, ids = inputs
    nets = files("cpu")
    stores = {}
    for name in ("single", "ray"):  # two stores without per-second features, then filled by each engine
        stores[name] = tmp_path / name
        extract_videos(root / "videos", stores[name], nets.action_encoder, nets.vocab, nets.regions,
                       narrations_path=narrations, verb_miner=WordMiner(), progress=False, video_ids=ids[:3],
                       second_features=False)
    single = extract_videos(root / "videos", stores["single"], nets.action_encoder, nets.vocab, None, fill_only=True,
                            progress=False)
    fill_files = NetworkFiles(files.action_encoder, regions="none")
    report = extract_videos_ray(root / "videos", stores["ray"], fill_files, fill_only=True, progress=False)
    assert single.filled == report.filled == ids[:3]
    assert records(stores["ray"]) == records(stores["single"])


def test_engine_ray_without_ray_names_the_extra(inputs, tmp_path, monkeypatch):
    from actbert.video.distributed import RayNotInstalledError, extract_videos_ray

    root, narrations, files, _ = inputs
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RayNotInstalledError, match=r"pip install 'actbert\[ray\]'"):
        extract_videos_ray(root / "videos", tmp_path / "store", files, narrations_path=narrations)
    assert not (tmp_path / "store").exists()  # refused before anything is written


@pytest.mark.parametrize("resources, asked, expected", [
    ({"CPU": 16.0}, (None, 1, None), (16, 0.0)),  # CPUs only: one task per CPU, no GPU asked
    ({"CPU": 16.0}, (None, 4, None), (4, 0.0)),
    ({"CPU": 64.0, "GPU": 8.0}, (None, 1, None), (8, 1.0)),  # GPUs seen: one per task, a task per GPU
    ({"CPU": 64.0, "GPU": 8.0}, (None, 1, 0.5), (16, 0.5)),  # two tasks share a GPU
    ({"CPU": 64.0, "GPU": 8.0}, (3, 1, 0), (3, 0.0)),  # asked for: kept
])
def test_task_slots(resources, asked, expected):
    from actbert.video.distributed import task_slots

    assert task_slots(resources, *asked) == expected


def test_ray_options_need_the_ray_engine(tmp_path):
    from actbert.errors import ActBertError
    from actbert.video.extract import extract_features

    with pytest.raises(ActBertError, match="--engine ray"):
        extract_features(tmp_path / "store", tmp_path / "encoder", videos=tmp_path, workers=2)
