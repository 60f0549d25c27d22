"""Writing files: a full disk names the file and loses nothing, a read-only --out is found before any
work, and stores / checkpoints are readable by the group (the umask's mode, not mkstemp's 0600)."""

from __future__ import annotations

import errno
import json
import os
import stat
import sys

import pytest
import torch

from actbert.data.store import FeatureStore
from actbert.train.checkpoint import latest_checkpoint, save_checkpoint
from actbert.utils.io import DiskFullError, atomic_write_json, atomic_write_text, check_writable

sys.path.insert(0, os.path.dirname(__file__))
from test_second_features import StubEncoder, StubMiner, StubRegions, write_level_video  # noqa: E402

PAYLOAD = {"model": {"w": torch.ones(3)}, "optimizer": {}, "scheduler": {}, "rng": [], "data": {}, "world_size": 1,
           "config": {}}


def fail_fsync_when(predicate):
    """An ``os.fsync`` that raises ENOSPC (as a full disk does) for the files ``predicate(name)`` picks."""
    real = os.fsync

    def fsync(fd):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if predicate(name):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    return fsync


# ---- the atomic writers


def test_a_full_disk_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    atomic_write_json(tmp_path / "kept.json", {"old": 1})
    monkeypatch.setattr(os, "fsync", fail_fsync_when(lambda name: True))
    with pytest.raises(DiskFullError) as info:
        atomic_write_json(tmp_path / "kept.json", {"new": 2})
    assert info.value.errno == errno.ENOSPC and str(tmp_path / "kept.json") in str(info.value)
    assert "No space left on device" in str(info.value)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.json"]
    assert json.loads((tmp_path / "kept.json").read_text()) == {"old": 1}


def test_a_checkpoint_write_on_a_full_disk_names_the_checkpoint(tmp_path, monkeypatch):
    first = save_checkpoint(tmp_path, 1, PAYLOAD)
    monkeypatch.setattr(os, "fsync", fail_fsync_when(lambda name: True))
    with pytest.raises(OSError) as info:
        save_checkpoint(tmp_path, 2, PAYLOAD)
    assert str(tmp_path / "checkpoints" / "step-0000002.pt") in str(info.value)
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path) == first


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_files_get_the_umasks_mode_not_0600(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        text = atomic_write_text(tmp_path / "a.txt", "x")
        checkpoint = save_checkpoint(tmp_path / "run", 1, PAYLOAD)
    finally:
        os.umask(old)
    for path in (text, checkpoint, checkpoint.parent / "latest.json"):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_store_records_are_group_readable(tmp_path):
    from actbert.video.extract import extract_videos

    write_level_video(tmp_path / "videos" / "v.mp4", 9)
    (tmp_path / "narrations.json").write_text(json.dumps({"v": {"start": [0.0], "end": [2.0], "text": ["cut"]}}))
    old = os.umask(0o022)
    try:
        encoder = StubEncoder()
        extract_videos(tmp_path / "videos", tmp_path / "store", encoder, encoder.vocab, StubRegions(),
                       narrations_path=tmp_path / "narrations.json", verb_miner=StubMiner(), progress=False)
    finally:
        os.umask(old)
    record = FeatureStore(tmp_path / "store").path_for("v")
    for path in (record, tmp_path / "store" / "schema.json"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path  # group and others may read


# ---- extraction on a full disk


@pytest.fixture
def three_videos(tmp_path):
    for video_id in ("v0", "v1", "v2"):
        write_level_video(tmp_path / "videos" / f"{video_id}.mp4", 9)
    narrations = {v: {"start": [0.0], "end": [2.0], "text": ["we cut it"]} for v in ("v0", "v1", "v2")}
    (tmp_path / "narrations.json").write_text(json.dumps(narrations))
    return tmp_path


def extract(root, regions):
    from actbert.video.extract import extract_videos

    encoder = StubEncoder()
    return extract_videos(root / "videos", root / "store", encoder, encoder.vocab, regions,
                          narrations_path=root / "narrations.json", verb_miner=StubMiner(), progress=False)


def test_extraction_stops_at_the_first_full_disk_and_blames_no_video(three_videos, monkeypatch):
    regions = StubRegions()
    monkeypatch.setattr(os, "fsync", fail_fsync_when(lambda name: name.startswith(".v1.safetensors")))
    with pytest.raises(DiskFullError) as info:
        extract(three_videos, regions)
    message = str(info.value)
    assert str(FeatureStore(three_videos / "store").path_for("v1")) in message and "no space left on device" in message
    assert "run the same command again" in message and "\n" not in message
    assert regions.calls == 2  # v2 was never computed
    monkeypatch.undo()
    assert FeatureStore(three_videos / "store").video_ids() == ["v0"]  # v0's record stays
    failures = three_videos / "store" / "failures.json"
    assert not failures.exists() or not any(f["video_id"] == "v1" for f in json.loads(failures.read_text()))
    # with space again, the same command does the rest
    report = extract(three_videos, StubRegions())
    assert report.written == ["v1", "v2"] and report.skipped == ["v0"] and report.failed == []


def test_a_full_disk_that_also_stops_failures_json_is_still_one_message(three_videos, monkeypatch):
    extract(three_videos, StubRegions())  # the store exists; now nothing more fits
    (three_videos / "videos" / "v3.mp4").write_bytes((three_videos / "videos" / "v0.mp4").read_bytes())
    monkeypatch.setattr(os, "fsync", fail_fsync_when(lambda name: True))
    with pytest.raises(DiskFullError, match=r"v3\.safetensors: no space left on device.*failures\.json not updated"):
        extract(three_videos, StubRegions())


def test_extract_command_reports_a_full_disk_in_one_line(three_videos, monkeypatch, capsys):
    from actbert.cli import main
    from actbert.video import extract as extract_module

    def fake_extract_features(store, action_encoder, **kwargs):
        return extract(three_videos, StubRegions())

    monkeypatch.setattr(extract_module, "extract_features", fake_extract_features)
    monkeypatch.setattr(os, "fsync", fail_fsync_when(lambda name: name.endswith(".safetensors") or ".safetensors." in name))
    status = main(["extract", "--data", str(three_videos), "--store", str(three_videos / "store"),
                   "--action-encoder", "unused"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1
    assert err[0].startswith("actbert extract: ") and "v0.safetensors: no space left on device" in err[0]


# ---- an output folder that cannot be written is found before any work


def test_check_writable_names_the_folder(tmp_path):
    assert check_writable(tmp_path / "new" / "out") == tmp_path / "new" / "out"
    assert list((tmp_path / "new" / "out").iterdir()) == []  # the probe file is gone
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match=r"file/out: --out is not writable"):
        check_writable(tmp_path / "file" / "out", "--out")


@pytest.mark.parametrize("command", ["evaluate", "finetune"])
def test_evaluate_and_finetune_refuse_an_unwritable_out_before_loading_anything(tmp_path, capsys, monkeypatch, command):
    from actbert.cli import main
    from actbert.tasks import common

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # not a loadable model: loading it would be the first work

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(common, "load_model", no_loading)
    monkeypatch.setattr(common, "fresh_model", no_loading)
    from actbert.tasks import registry

    monkeypatch.setattr(registry, "load_for_evaluation", no_loading)
    (tmp_path / "readonly").write_text("a file where a folder should be")
    out = tmp_path / "readonly" / "results"
    status = main([command, "retrieval", "--model", str(model), "--data", str(tmp_path), "--store", str(tmp_path),
                   "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and f"{out}: --out is not writable" in err[0]


def test_an_unwritable_out_is_reported_for_a_read_only_file_system(tmp_path, monkeypatch):
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OSError, match=r"--out is not writable \(Read-only file system\)") as info:
        check_writable(tmp_path, "--out")
    assert info.value.errno == errno.EROFS



def test_a_full_disk_while_appending_the_metrics_log_names_it(tmp_path, monkeypatch):
    import builtins
    import errno as errno_module

    from actbert.train.metrics_log import MetricsLog
    from actbert.utils.io import DiskFullError

    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.write({"step": 1, "loss": 1.0})
    real_open = builtins.open

    class FullFile:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, text):
            raise OSError(errno_module.ENOSPC, "No space left on device")

        def flush(self):
            pass

    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: FullFile(real_open(path, *a, **k)) if str(path) == str(log.path) else real_open(path, *a, **k))
    with pytest.raises(DiskFullError, match=r"metrics.jsonl: no space left on the device .*--resume"):
        log.write({"step": 2, "loss": 0.5})
