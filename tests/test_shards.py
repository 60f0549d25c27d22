"""Packed shards (data/shards.py, `actbert pack`): the per-video store's samples and losses, DDP shard
assignment, exact resume mid-stream (stream and loop), and corrupt shards named in one line."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from actbert.data.shards import ShardError, ShardIndex, pack_store
from actbert.data.store import FeatureStore
from actbert.errors import CheckpointError
from actbert.models.registry import create_model
from actbert.train.config import load_pretrain_config
from actbert.train.loop import build_pretrain_data, train
from actbert.train.metrics_log import read_metrics

torch.set_num_threads(1)
LOSS_KEYS = ("loss", "mlm", "action", "region", "match")
SHARD_SIZE = 5  # the tiny corpus's 16 videos -> 4 shards, balanced: 4, 4, 4, 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The tiny preset's random-feature corpus (store + narrations) and its shards."""
    root = tmp_path_factory.mktemp("shards_corpus")
    build_pretrain_data(load_pretrain_config("tiny", [f"data.random_dir={root / 'random'}"]), root)
    pack_store(root / "random" / "store", root / "shards", SHARD_SIZE)
    return root


def config(corpus: Path, *extra: str, shards: bool = True):
    source = [f"data.shards={corpus / 'shards'}"] if shards else [f"data.store={corpus / 'random' / 'store'}"]
    return load_pretrain_config("tiny", ["data.random=false", *source, f"data.narrations={corpus / 'random' / 'narrations.json'}",
                                         "train.progress=false", *extra])


def batches_equal(a, b) -> bool:
    return all(torch.equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
               if isinstance(getattr(a, f.name), torch.Tensor))


def test_pack_writes_every_record_unchanged_in_tar_shards(corpus):
    store = FeatureStore(corpus / "random" / "store")
    index = ShardIndex(corpus / "shards")
    assert index.video_ids() == store.video_ids() and len(index.ids) == 16
    assert [s["videos"] for s in index.shards] == [4, 4, 4, 4]
    import tarfile

    with tarfile.open(index.shard_path(1)) as tar:  # a plain tar any reader lists: key.safetensors members
        names = tar.getnames()
    assert names == [f"{v}.safetensors" for v in store.video_ids()[4:8]]
    for position, video_id in enumerate(store.video_ids()):
        data, _ = index.read_bytes(position)
        assert bytes(data) == store.path_for(video_id).read_bytes()
    with pytest.raises(ShardError, match="already a shard folder"):
        pack_store(store, corpus / "shards", SHARD_SIZE)


def test_unshuffled_stream_gives_the_per_video_samples_and_losses(corpus):
    # shard order and buffer off, one process, one sample per video: the stream must be the per-video
    # dataset's items 0, 1, 2, ... (negatives' text included: they come from the index, not the features)
    common = ("data.samples_per_video=1", "data.shuffle_buffer=0", "data.shuffle_shards=false", "train.batch_size=4")
    streamed = build_pretrain_data(config(corpus, *common), corpus)
    per_video = build_pretrain_data(config(corpus, *common, shards=False), corpus)
    stream, dataset = streamed.dataset, per_video.dataset
    assert len(stream) == len(dataset) == 16
    expected = [per_video.collator([dataset[i] for i in range(b, b + 4)]) for b in range(0, 16, 4)]
    got = list(stream.loader())
    assert len(got) == 4 and all(batches_equal(a, b) for a, b in zip(got, expected))
    assert sum(float(b.match_labels.eq(0).sum()) for b in got) > 0  # some negatives were drawn
    torch.manual_seed(0)
    model = create_model(streamed.model_config, heads=True, verbose=False).eval()
    with torch.no_grad():
        for a, b in zip(got, expected):
            la, lb = model(a), model(b)
            assert float(la.loss) == float(lb.loss)
            assert {k: float(v) for k, v in la.losses.items()} == {k: float(v) for k, v in lb.losses.items()}


def test_two_ranks_read_disjoint_shards_covering_all_and_equal_sample_counts(corpus):
    def rank(r: int, world: int = 2):
        return build_pretrain_data(config(corpus, "data.shuffle_buffer=7"), corpus,
                                   info=_info(r, world)).dataset

    a, b = rank(0), rank(1)
    for epoch in (0, 1):
        sa, sb = a.rank_shards(epoch), b.rank_shards(epoch)
        assert not set(sa) & set(sb) and sorted(sa + sb) == [0, 1, 2, 3]
        pa, pb = a.plan(epoch), b.plan(epoch)
        assert not set(pa) & set(pb)
        assert len(pa) == len(pb) == a.samples_per_rank == b.samples_per_rank
    assert a.shard_order(0) != a.shard_order(1)  # a new shard order each epoch
    # two shards each of 4 videos x 2 samples: 16 per rank, all of the epoch
    assert a.samples_per_rank == 16
    # three ranks, four shards: one rank is dealt two, so every rank stops after one shard's 8 samples
    three = [rank(r, 3) for r in range(3)]
    dealt = [t.rank_shards(0) for t in three]
    assert sorted(sum(dealt, [])) == [0, 1, 2, 3] and sorted(map(len, dealt)) == [1, 1, 2]
    plans = [set(t.plan(0)) for t in three]
    assert all(len(pl) == 8 for pl in plans) and not (plans[0] & plans[1] or plans[0] & plans[2] or plans[1] & plans[2])
    with pytest.raises(ShardError, match="4 shard"):
        build_pretrain_data(config(corpus), corpus, info=_info(0, 5))


def _info(rank: int, world: int):
    from actbert.train.distributed import DistInfo

    return DistInfo(rank=rank, world_size=world, local_rank=rank, device=torch.device("cpu"))


def test_a_stream_started_mid_epoch_gives_the_uninterrupted_batches_with_any_worker_count(corpus):
    stream = build_pretrain_data(config(corpus, "data.shuffle_buffer=6", "train.batch_size=4"), corpus).dataset
    stream.set_epoch(1)
    whole = list(stream.loader())
    assert len(whole) == len(stream) // 4 == 8
    stream.set_start(12)  # three batches read before the interruption
    resumed = list(stream.loader(num_workers=2))
    assert len(resumed) == 5 and all(batches_equal(a, b) for a, b in zip(resumed, whole[3:]))


def test_training_from_shards_resumes_exactly_and_refuses_other_shards(corpus, tmp_path):
    steps = ("train.max_steps=6", "train.checkpoint_every=3", "train.batch_size=4", "data.shuffle_buffer=5")
    reference = tmp_path / "reference"
    train(config(corpus, *steps), reference)
    killed = tmp_path / "killed"
    assert train(config(corpus, *steps, "train.stop_after=3"), killed)["interrupted"]
    train(config(corpus, *steps, "data.num_workers=1"), killed, resume=True)  # workers do not change the stream
    strip = lambda rs: [{k: r[k] for k in ("step", *LOSS_KEYS)} for r in rs]  # noqa: E731
    assert strip(read_metrics(killed / "metrics.jsonl")) == strip(read_metrics(reference / "metrics.jsonl"))
    ckpt = torch.load(sorted((reference / "checkpoints").glob("step-*.pt"))[0], weights_only=True)
    assert ckpt["data"]["stream"]["samples"] == 12 and ckpt["data"]["stream"]["epoch"] == 0
    # a resume on other shards (repacked: another index) is refused, naming the field
    repacked = tmp_path / "repacked"
    pack_store(corpus / "random" / "store", repacked, 3)
    other = load_pretrain_config("tiny", ["data.random=false", f"data.shards={repacked}",
                                          f"data.narrations={corpus / 'random' / 'narrations.json'}", "train.progress=false",
                                          *steps, "train.max_steps=9"])
    with pytest.raises(CheckpointError, match="data.stream.index"):
        train(other, reference, resume=True)


def test_a_corrupt_or_truncated_shard_is_named_in_one_line(corpus, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(corpus / "shards", bad)
    index = ShardIndex(bad)
    shard = index.shard_path(2)
    data = bytearray(shard.read_bytes())
    at = int(index.table["member_offset"][11]) + int(index.table["member_size"][11]) - 3  # inside video 11's features
    data[at] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert ShardIndex(bad)[index.ids[11]] is not None  # unverified: sizes and headers are fine
    with pytest.raises(ShardError) as err:
        ShardIndex(bad, verify=True)[index.ids[11]]
    message = str(err.value)
    assert "\n" not in message and str(shard) in message and "CRC-32" in message
    header = bytearray(data)
    header[int(index.table["member_offset"][11]) - 512] ^= 0x01  # the member's tar header (its name)
    shard.write_bytes(bytes(header))
    with pytest.raises(ShardError, match=r"shard-000002\.tar:random00011\.safetensors: corrupt shard \(tar header"):
        ShardIndex(bad)[index.ids[11]]
    shard.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ShardError, match=r"shard-000002\.tar: shard is \d+ bytes, its index says"):
        ShardIndex(bad)[index.ids[11]]
    # through the command line, the flipped byte met mid-run: one line on stderr naming the shard
    shard.write_bytes(bytes(data))
    sets = ["data.random=false", f"data.shards={bad}", f"data.narrations={corpus / 'random' / 'narrations.json'}",
            "train.progress=false", "train.max_steps=8", "data.shuffle_shards=false", "data.shuffle_buffer=0",
            "data.verify_shards=true"]
    done = subprocess.run([sys.executable, "-m", "actbert.cli", "pretrain", "--config", "tiny", "--out", str(tmp_path / "run"),
                           *[a for s in sets for a in ("--set", s)]], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(shard) in lines[0] and "CRC-32" in lines[0], done.stderr[-2000:]


def test_pack_command_and_config_errors(corpus, tmp_path):
    out = tmp_path / "packed"
    done = subprocess.run([sys.executable, "-m", "actbert.cli", "pack", "--store", str(corpus / "random" / "store"),
                           "--out", str(out), "--shard-size", "8"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["shards"] == 2 and len(list(out.glob("shard-*.tar"))) == 2
    from actbert.config import ConfigError

    with pytest.raises(ConfigError, match="data.shards given with data.store"):
        config(corpus, f"data.store={corpus / 'random' / 'store'}")
    with pytest.raises(ShardError, match="no shard index"):
        ShardIndex(tmp_path)
