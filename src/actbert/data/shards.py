"""Packed feature shards for streaming pretraining: a feature store as a few large tar files.

A per-video store (store.py) is one file per video: right for random access (the tasks, extraction
by many writers), wrong for a HowTo100M-size pretraining run read over a network file system or an
object store, where 1.2M small files cost a metadata round trip each. ``actbert pack`` copies a
store into shards of at most ``shard_size`` videos (balanced: sizes differ by one at most)::

    SHARDS/index.json              format, version, the store schema, shard names/sizes/video counts,
                                   the video ids in packed order (the store's sorted order)
    SHARDS/index.safetensors       per video: shard, member offset/size/CRC-32 in its tar, clip range;
                                   per kept clip: clip_times (float64 [total clips, 2])
    SHARDS/shard-000000.tar ...    one member ``<video_id>.safetensors`` per video: the store record's
                                   bytes unchanged (webdataset's key.extension naming; no pickle)

Everything is safetensors or JSON; a reader never unpickles. ``index.json`` is written last and
atomically, so a folder whose packing was interrupted has no index and is refused.

Streaming (:class:`ShardStream`). Every epoch has a fixed plan of sample *keys* computed from the
index alone, before any feature is read:

1. the shard order: a permutation drawn from ``(seed, epoch)`` (``shuffle_shards``) or packed order;
2. rank ``r`` of ``W`` takes shards ``r, r + W, ...`` of that order (disjoint, covering all);
3. its videos in shard order, each ``samples_per_video`` times, cut to the same length on every rank
   (:attr:`ShardStream.samples_per_rank`: the fewest samples any rank can get, whole batches);
4. a shuffle buffer of ``shuffle_buffer`` keys (the usual streaming one: fill, then emit a random
   slot and refill it), its draws from ``(seed, epoch, rank)``; 0 or 1 = off.

A key is ``(video position g, repeat k)``, and its sample is drawn with the per-video dataset's
generator ``default_rng([seed, epoch, g + k * N])`` by the same code (samples.draw_sample), so a
video's sample does not depend on where the stream puts it. Negatives take another video's text,
which is built from the index's clip times and the narrations without reading its features. With
``shuffle_shards`` off, no buffer, one process and one sample per video, the stream therefore gives
exactly the per-video :class:`~actbert.data.samples.PretrainDataset`'s items ``0, 1, 2, ...`` (the
test checks it). Because the plan is keys, the stream position is one number (samples consumed this
epoch): a resumed run recomputes the plan and starts there, reading nothing it skips, and DataLoader
workers split the plan by whole batches (the ``j``-th batch from the start to worker ``j % workers``, the
order the DataLoader returns them in), so the batches do not depend on the worker count either.

What differs from the per-video store: a video whose record is unusable stops the run with the
shard and member named (the per-video path checks every record up front and skips bad ones -- a
pass over the whole store that streaming exists to avoid; ``actbert pack`` refuses records that do
not decode, so a packed shard holds only checked records); and the videos past
``samples_per_rank`` on a rank are left out of that epoch (at most one shard's worth per rank).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from actbert.data.corpus import ClipTokens, Corpus, CorpusError, Narration, video_end_time
from actbert.data.prefetch import random_access, will_need
from actbert.data.store import FeatureStore, StoreSchema, _read_safetensors_header, decode_record
from actbert.errors import ActBertError
from actbert.utils.io import _atomic_write, atomic_write_bytes, atomic_write_json, read_json

__all__ = ["SHARDS_FORMAT", "ShardError", "ShardIndex", "pack_store", "ShardStream", "shard_stream_data"]

SHARDS_FORMAT = "actbert-feature-shards"
SHARDS_VERSION = 1
_MEMBER_SUFFIX = ".safetensors"
_HEADER_READ = 1 << 16  # bytes of a member hinted before its headers are read (a record's header: ~2 KB)


class ShardError(ActBertError):
    """A shard folder or shard that cannot be read as packed (names the file and what is wrong)."""


# ---------------------------------------------------------------- packing


def pack_store(store: FeatureStore | str | os.PathLike, out: str | os.PathLike, shard_size: int,
               progress: Callable[[int, int], None] | None = None) -> Path:
    """Write ``store`` as tar shards of at most ``shard_size`` videos into ``out`` (module docstring):
    ``ceil(videos / shard_size)`` shards whose sizes differ by one video at most. Returns ``out``.

    Every record is decoded once on the way (a record the store would refuse is refused here, naming
    it), so the shards hold only records that read. ``out`` must not already hold an index.
    """
    if shard_size < 1:
        raise ShardError(f"shard_size: must be >= 1, got {shard_size}")
    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    out = Path(out)
    if (out / "index.json").exists():
        raise ShardError(f"{out / 'index.json'}: already a shard folder (pack into an empty folder)")
    out.mkdir(parents=True, exist_ok=True)
    ids = store.video_ids()
    if not ids:
        raise ShardError(f"{store.root}: no videos to pack")
    offsets, sizes, crcs, shard_of, clip_ranges, clip_times = [], [], [], [], [0], []
    shards = []
    # ceil(V / shard_size) shards of balanced sizes (they differ by one video at most): a rank's epoch
    # ends at the fewest samples any rank can be dealt, which one short last shard would cut for all
    count = -(-len(ids) // shard_size)
    bounds = [len(ids) * s // count for s in range(count + 1)]
    for s in range(count):
        chunk = ids[bounds[s] : bounds[s + 1]]
        name = f"shard-{s:06d}.tar"

        def write_tar(handle, chunk=chunk, s=s) -> None:
            # streamed to the temporary file (a shard may be many GB); renamed into place once complete
            with tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for video_id in chunk:
                    path = store.path_for(video_id)
                    data = path.read_bytes()
                    feats = decode_record(store.schema, video_id, data, str(path))
                    info = tarfile.TarInfo(f"{video_id}{_MEMBER_SUFFIX}")
                    info.size, info.mode, info.mtime = len(data), 0o644, 0  # mtime 0: a store packs to the same bytes
                    tar.addfile(info, io.BytesIO(data))
                    offsets.append(tar.offset - _padded(len(data)))  # where the member's data begins
                    sizes.append(len(data))
                    crcs.append(zlib.crc32(data))
                    shard_of.append(s)
                    times = np.asarray(feats.clip_times, np.float64).reshape(-1, 2)
                    if len(feats.frame_times):  # the clips the corpus keeps (corpus.py drops those past the end)
                        times = times[times[:, 0] < video_end_time(np.asarray(feats.frame_times))]
                    clip_times.append(times)
                    clip_ranges.append(clip_ranges[-1] + len(times))
                    if progress is not None:
                        progress(len(offsets), len(ids))

        path = _atomic_write(out / name, write_tar)
        shards.append({"name": name, "bytes": path.stat().st_size, "videos": len(chunk)})
    from safetensors.numpy import save

    arrays = {
        "member_offset": np.asarray(offsets, np.int64),
        "member_size": np.asarray(sizes, np.int64),
        "member_crc32": np.asarray(crcs, np.int64),
        "shard": np.asarray(shard_of, np.int64),
        "clip_range": np.asarray(clip_ranges, np.int64),
        "clip_times": np.concatenate(clip_times) if clip_times else np.zeros((0, 2), np.float64),
    }
    atomic_write_bytes(out / "index.safetensors", save(arrays))
    atomic_write_json(out / "index.json", {
        "format": SHARDS_FORMAT, "version": SHARDS_VERSION, "shard_size": int(shard_size),
        "schema": store.schema.to_json(), "shards": shards, "videos": ids,
    })
    return out


def _padded(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


# ---------------------------------------------------------------- reading


class ShardIndex:
    """A shard folder's index, and random access to its records by video id (a seek into a tar).

    Has the store's ``schema``, ``root``, ``video_ids()`` and ``in``, so a :class:`Corpus` takes it
    where it takes a store. Sizes and tar headers are always checked; ``verify`` also checks each
    member's CRC-32 on read (a flipped bit in a feature is otherwise invisible, but the check reads the
    whole record where a sample touches only its window's pages: ``data.verify_shards``).
    """

    def __init__(self, root: str | os.PathLike, verify: bool = False):
        self.root = Path(root)
        path = self.root / "index.json"
        if not path.exists():
            raise ShardError(f"{path}: no shard index (not a folder written by `actbert pack`, or packing did not finish)")
        meta = read_json(path, "shard index")
        if not isinstance(meta, dict) or meta.get("format") != SHARDS_FORMAT:
            raise ShardError(f"{path}: field 'format' is not {SHARDS_FORMAT!r}")
        if meta.get("version") != SHARDS_VERSION:
            raise ShardError(f"{path}: field 'version' is {meta.get('version')!r}, this code reads {SHARDS_VERSION}")
        self.schema = StoreSchema.from_json(meta["schema"], source=f"{path}: schema")
        self.shards: list[dict[str, Any]] = list(meta["shards"])
        self.ids: list[str] = [str(v) for v in meta["videos"]]
        self.position = {v: i for i, v in enumerate(self.ids)}
        # what identifies these shards in a checkpoint: a resumed stream must read the same plan
        self.digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        table_path = self.root / "index.safetensors"
        try:
            table = _map_table(table_path)
        except Exception as exc:  # noqa: BLE001 - any failure: the table is unusable
            raise ShardError(f"{table_path}: not a readable shard table ({type(exc).__name__}: {exc})") from exc
        for name in ("member_offset", "member_size", "member_crc32", "shard", "clip_range", "clip_times"):
            if name not in table:
                raise ShardError(f"{table_path}: field {name!r} missing")
        if len(table["shard"]) != len(self.ids) or len(table["clip_range"]) != len(self.ids) + 1:
            raise ShardError(f"{table_path}: field 'shard' has {len(table['shard'])} entries for {len(self.ids)} videos")
        self.table = table
        self.verify = verify
        self._handles: dict[int, Any] = {}
        self._pid = os.getpid()
        for s in range(len(self.shards)):  # a missing or truncated shard fails now, not hours into a run
            self._check_size(s)

    def _check_size(self, s: int) -> None:
        path = self.shard_path(s)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ShardError(f"{path}: shard missing ({exc.strerror})") from exc
        if size != self.shards[s]["bytes"]:
            raise ShardError(f"{path}: shard is {size} bytes, its index says {self.shards[s]['bytes']} (truncated or "
                             "replaced: re-pack it)")

    def video_ids(self) -> list[str]:
        return list(self.ids)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self.position

    def __len__(self) -> int:
        return len(self.ids)

    def shard_path(self, s: int) -> Path:
        return self.root / self.shards[s]["name"]

    def videos_of_shard(self, s: int) -> list[int]:
        """Positions (in the index) of shard ``s``'s videos, in packed order."""
        return np.nonzero(self.table["shard"] == s)[0].tolist()

    def clip_times(self, position: int) -> np.ndarray:
        a, b = self.table["clip_range"][position : position + 2]
        return self.table["clip_times"][a:b]

    def _map(self, s: int) -> np.ndarray:
        if os.getpid() != self._pid:  # a DataLoader worker: map the files again rather than share a parent's map
            self._handles, self._pid = {}, os.getpid()
        mapped = self._handles.get(s)
        if mapped is None:
            self._check_size(s)
            mapped = self._handles[s] = np.memmap(self.shard_path(s), dtype=np.uint8, mode="r")
            random_access(mapped)  # a sample reads a few rows of one member: no read-around
        return mapped

    def read_bytes(self, position: int) -> tuple[np.ndarray, str]:
        """Video ``position``'s record (a read-only view of the memory-mapped shard) and its member's name
        (``shard.tar:member``). Pages are read when touched: a sample's window reads about its share."""
        s = int(self.table["shard"][position])
        offset, size = int(self.table["member_offset"][position]), int(self.table["member_size"][position])
        video_id = self.ids[position]
        where = f"{self.shard_path(s)}:{video_id}{_MEMBER_SUFFIX}"
        mapped = self._map(s)
        will_need(mapped, offset - tarfile.BLOCKSIZE, offset + _HEADER_READ)  # tar + safetensors headers, read next
        # the member's tar header sits in the block before its data: its name must be this video's
        try:
            info = tarfile.TarInfo.frombuf(bytes(mapped[offset - tarfile.BLOCKSIZE : offset]), tarfile.ENCODING,
                                           "surrogateescape")
        except tarfile.TarError as exc:
            raise ShardError(f"{where}: corrupt shard (tar header: {exc})") from exc
        if info.name != f"{video_id}{_MEMBER_SUFFIX}" or info.size != size:
            raise ShardError(f"{where}: corrupt shard (the tar member here is {info.name!r} of {info.size} bytes)")
        data = mapped[offset : offset + size]
        if self.verify and zlib.crc32(data) != int(self.table["member_crc32"][position]):
            raise ShardError(f"{where}: corrupt shard (CRC-32 of the member differs from the index's)")
        return data, where

    def __getitem__(self, video_id: str):
        position = self.position.get(video_id)
        if position is None:
            raise KeyError(f"{video_id!r}: not in shards {self.root}")
        data, where = self.read_bytes(position)
        try:
            return decode_record(self.schema, video_id, data, where)
        except ActBertError as exc:
            raise ShardError(f"corrupt shard: {exc}") from exc

    def __getstate__(self) -> dict[str, Any]:  # workers reopen their own files
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state


def _map_table(path: Path) -> dict[str, np.ndarray]:
    """The arrays of ``index.safetensors``, memory-mapped: HowTo100M's clip times are 2 GB, which the
    processes of a node then share through the page cache instead of each holding a copy."""
    data_offset, header = _read_safetensors_header(path)
    header.pop("__metadata__", None)
    whole = np.memmap(path, dtype=np.uint8, mode="r")
    dtypes = {"I64": np.int64, "F64": np.float64}
    out = {}
    for name, entry in header.items():
        begin, end = (int(o) for o in entry["data_offsets"])
        shape = tuple(int(x) for x in entry["shape"])
        out[name] = (whole[data_offset + begin : data_offset + end].view(dtypes[entry["dtype"]]).reshape(shape)
                     if end > begin else np.zeros(shape, dtypes[entry["dtype"]]))
    return out


@dataclass
class _TextClips:
    """A video's text alone (what a negative needs): ``video_id``, per-clip ``tokens``, ``num_clips``."""

    video_id: str
    tokens: ClipTokens  # C lists of word pieces, tokenised when a negative's window asks for them

    @property
    def num_clips(self) -> int:
        return len(self.tokens)


class ShardStream(torch.utils.data.IterableDataset):
    """This rank's stream of collated pretraining batches from packed shards (module docstring).

    Used like the per-video path's sampler: ``set_epoch(e)``, ``set_start(samples)`` (a multiple of
    ``batch_size``), ``len()`` = samples left this epoch; iterate through :meth:`loader`.
    """

    def __init__(self, index: ShardIndex, corpus: Corpus, builder: Any, masking: Any, collator: Callable,
                 batch_size: int, seed: int = 0, samples_per_video: int = 1, video_ids: list[str] | None = None,
                 rank: int = 0, world_size: int = 1, shuffle_buffer: int = 0, shuffle_shards: bool = True,
                 cache_videos: int = 8):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if world_size > len(index.shards):
            raise ShardError(f"{index.root}: {len(index.shards)} shard(s) for {world_size} processes; every process needs "
                             "its own shard (pack with a smaller --shard-size)")
        self.index, self.corpus, self.builder, self.masking, self.collator = index, corpus, builder, masking, collator
        self.batch_size, self.seed, self.samples_per_video = int(batch_size), int(seed), int(samples_per_video)
        self.rank, self.world_size = int(rank), int(world_size)
        self.shuffle_buffer, self.shuffle_shards = int(shuffle_buffer), bool(shuffle_shards)
        wanted = None if video_ids is None else set(video_ids)
        # the videos samples are drawn from, in packed order: the split's, with narration and clips
        self.positions: list[int] = []
        for p, video_id in enumerate(index.ids):
            if (wanted is None or video_id in wanted) and video_id in corpus.narrations and len(index.clip_times(p)):
                self.positions.append(p)
        if not self.positions:
            raise CorpusError(f"{index.root}: none of the {len(index.ids)} packed videos has a narration and clips"
                              + (" in the split" if wanted is not None else ""))
        if masking.negative_probability > 0 and len(self.positions) < 2:
            raise CorpusError(f"{index.root}: negatives need at least 2 videos, found {len(self.positions)}")
        self.video_of = {p: g for g, p in enumerate(self.positions)}  # index position -> sample position g
        per_shard = np.bincount(index.table["shard"][self.positions], minlength=len(index.shards)) * self.samples_per_video
        # the fewest samples any rank can be dealt (it gets floor(S / W) or more shards): every rank stops there
        fewest = int(np.sort(per_shard)[: len(index.shards) // self.world_size].sum())
        self.samples_per_rank = fewest // self.batch_size * self.batch_size
        self.epoch, self.start = 0, 0
        self._texts: OrderedDict[int, _TextClips] = OrderedDict()
        self._videos: OrderedDict[int, Any] = OrderedDict()
        self._cache_videos = int(cache_videos)

    # ---- the sampler's interface
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, start: int) -> None:
        if start % self.batch_size:
            raise ValueError(f"stream start {start} is not a whole number of batches of {self.batch_size}")
        self.start = int(start)

    def __len__(self) -> int:
        return max(0, self.samples_per_rank - self.start)

    def state(self, epoch: int, samples: int) -> dict[str, Any]:
        """What a checkpoint keeps of the stream: its position (``samples`` read by this rank in ``epoch``)
        and which shards and plan it follows."""
        return {"index": self.index.digest, "epoch": int(epoch), "samples": int(samples), "rank_samples": self.samples_per_rank,
                "shuffle_buffer": self.shuffle_buffer, "shuffle_shards": self.shuffle_shards}

    # ---- the plan
    def shard_order(self, epoch: int | None = None) -> list[int]:
        """Every shard, in this epoch's order (all ranks compute the same)."""
        count = len(self.index.shards)
        if not self.shuffle_shards:
            return list(range(count))
        return np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, 1]).permutation(count).tolist()

    def rank_shards(self, epoch: int | None = None, rank: int | None = None) -> list[int]:
        return self.shard_order(epoch)[self.rank if rank is None else rank :: self.world_size]

    def plan(self, epoch: int | None = None) -> list[tuple[int, int]]:
        """This rank's keys ``(g, k)`` for the epoch, in stream order (``samples_per_rank`` of them)."""
        epoch = self.epoch if epoch is None else epoch
        keys = [(self.video_of[p], k) for s in self.rank_shards(epoch) for p in self.index.videos_of_shard(s)
                if p in self.video_of for k in range(self.samples_per_video)][: self.samples_per_rank]
        size = self.shuffle_buffer
        if size <= 1:
            return keys
        rng = np.random.default_rng([self.seed, epoch, self.rank, 2])
        buffer, out = keys[:size], []
        for key in keys[size:]:
            j = int(rng.integers(len(buffer)))
            out.append(buffer[j])
            buffer[j] = key
        order = rng.permutation(len(buffer))
        out.extend(buffer[i] for i in order)
        return out

    # ---- samples
    def text_of(self, g: int) -> _TextClips:
        """Video ``g``'s text (tokens per kept clip), from the index's clip times and the narrations."""
        cached = self._texts.get(g)
        if cached is None:
            p = self.positions[g]
            video_id = self.index.ids[p]
            narration: Narration = self.corpus.narrations[video_id]
            cached = _TextClips(video_id, ClipTokens(self.index.clip_times(p), narration, self.corpus.tokenizer))
            self._texts[g] = cached
            if len(self._texts) > 256:
                self._texts.popitem(last=False)
        return cached

    def clips_of(self, g: int):
        cached = self._videos.get(g)
        if cached is not None:
            self._videos.move_to_end(g)
            return cached
        p = self.positions[g]
        video_id = self.index.ids[p]
        clips = self.corpus.from_features(video_id, self.index[video_id])
        self._videos[g] = clips
        if len(self._videos) > self._cache_videos:
            self._videos.popitem(last=False)
        return clips

    def sample(self, g: int, k: int, epoch: int | None = None):
        from actbert.data.samples import draw_sample

        epoch = self.epoch if epoch is None else epoch
        n = len(self.positions)
        rng = np.random.default_rng([self.seed, epoch, g + k * n])  # the per-video dataset's item g + k * N
        return draw_sample(self.builder, self.masking, rng, self.clips_of(g), g, n, self.text_of)

    def __iter__(self) -> Iterator[Any]:
        worker = torch.utils.data.get_worker_info()
        workers, me = (1, 0) if worker is None else (worker.num_workers, worker.id)
        keys = self.plan()
        b = self.batch_size
        first = self.start // b
        for batch in range(first, len(keys) // b):
            if (batch - first) % workers == me:  # the DataLoader takes workers' batches in turn, from worker 0
                yield self.collator([self.sample(g, k) for g, k in keys[batch * b : (batch + 1) * b]])

    def loader(self, num_workers: int = 0, pin_memory: bool = False) -> torch.utils.data.DataLoader:
        """A DataLoader over the stream (batches come collated; workers take whole batches in turn)."""
        # an explicit generator: else each new iterator draws its seed from the global torch RNG, which
        # would shift dropout between an interrupted and a resumed run (the batches never use it)
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        return torch.utils.data.DataLoader(self, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                                           persistent_workers=False, generator=generator)

    def check_resume(self, saved: dict[str, Any] | None, where: str) -> None:
        """Refuse a checkpoint whose stream followed other shards or another plan (names the field)."""
        from actbert.errors import CheckpointError

        if not saved:
            raise CheckpointError(f"{where}: field 'data.stream' missing (the run was not trained from shards)")
        mine = self.state(0, 0)
        for key in ("index", "rank_samples", "shuffle_buffer", "shuffle_shards"):
            if saved.get(key) != mine[key]:
                raise CheckpointError(f"{where}: field 'data.stream.{key}' is {saved.get(key)!r}, these shards give "
                                      f"{mine[key]!r} (not the stream the run was reading: exact resume needs the same shards)")


def shard_stream_data(processor_class: Any, source: Any, rank: int, world_size: int, batch_size: int) -> Any:
    """The clip-window pretraining data of :mod:`actbert.models.pretraining_data`, streamed from the shards
    ``source.store`` (a :class:`ShardIndex`) for this rank: a :class:`ShardStream` and its collator."""
    from actbert.models.pretraining_data import PretrainingData
    from actbert.models.processing import Processor
    from actbert.data.samples import SampleBuilder, SpecialTokens

    if getattr(processor_class.pretraining_data, "__func__", None) is not Processor.pretraining_data.__func__:
        raise ShardError(f"data.shards: {processor_class.__name__} builds its own pretraining data; packed shards feed the "
                         "clip-window families (actbert, paddlevideo): train it from data.store")
    d = source.data
    index: ShardIndex = source.store
    corpus = Corpus(index, source.narrations, source.tokenizer, None, d.frames_per_clip, d.max_regions_per_frame,
                    max_regions_per_clip=d.max_regions_per_clip, region_frames=d.region_frames, cache_size=1)
    specials = SpecialTokens.from_tokenizer(source.tokenizer)
    builder = SampleBuilder(corpus, specials, d.clips_per_sample, d.max_text_len)
    pad_to = None
    if d.fixed_shapes:
        n = d.clips_per_sample
        pad_to = (d.max_text_len, n + 1, n * (corpus.regions_per_clip + 1))
    collator = processor_class.pretraining_collator(source.model_config, source.tokenizer, pad_to)
    stream = ShardStream(index, corpus, builder, d.masking, collator, batch_size, source.seed, d.samples_per_video,
                         source.video_ids, rank, world_size, d.shuffle_buffer, d.shuffle_shards)
    return PretrainingData(stream, collator, [])
