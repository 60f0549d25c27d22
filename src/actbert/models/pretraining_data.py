"""What a family's pretraining data is built from, and the default build (clip windows of narrated video).

The loop (``actbert.train.loop.build_pretrain_data``) opens the store and the narrations, lets the
family fill its config from the data, and then asks the family's processor for its dataset and
collator: ``processor_class.pretraining_data(source)``. The default, :func:`clip_window_data`,
is the paper's ActBERT sampling (data/samples.py: a window of adjacent narrated clips, masked by
``data.masking``) collated by the processor's ``pretraining_collator``; ActBERT, the PaddleVideo
port and any family whose pretraining batch is built from the same samples use it unchanged. A
family that samples differently (per-second frames, whole videos, its own masking) overrides
``pretraining_data`` and returns its own dataset and collator.

The dataset must be a ``torch.utils.data.Dataset`` with ``set_epoch(epoch)``, and every random
choice for index ``i`` in epoch ``e`` must depend only on ``(seed, e, i)`` -- that is what makes
``--resume`` exact and DDP ranks independent of the worker count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actbert.data.corpus import Corpus, CorpusError
from actbert.data.samples import PretrainDataset, SampleBuilder, SpecialTokens


@dataclass
class PretrainSource:
    """Everything a family may build its pretraining data from.

    ``store``: the :class:`~actbert.data.store.FeatureStore`; ``narrations``: the HowTo100M-style
    narrations file; ``video_ids``: the split's videos (None = every video of the store);
    ``model_config``: the model section already filled from the data; ``data``: the config's
    ``data`` section (``actbert.train.config.DataConfig``); ``seed``: ``train.seed``.
    """

    store: Any
    narrations: Path
    video_ids: list[str] | None
    tokenizer: Any
    model_config: Any
    data: Any
    seed: int


@dataclass
class PretrainingData:
    """A family's pretraining dataset (with ``set_epoch``), its collator, and the videos it skipped."""

    dataset: Any
    collator: Any
    failures: list[dict[str, str]] = field(default_factory=list)


def clip_window_data(processor_class: Any, source: PretrainSource) -> PretrainingData:
    """The default: ActBERT's clip-window samples, collated by ``processor_class.pretraining_collator``.

    Videos that fail the corpus check are skipped and reported (``failures``); none usable is an error.
    """
    d = source.data
    corpus = Corpus(source.store, source.narrations, source.tokenizer, source.video_ids, d.frames_per_clip,
                    d.max_regions_per_frame, max_regions_per_clip=d.max_regions_per_clip,
                    region_frames=d.region_frames)
    usable, failures = corpus.check()  # bad videos are skipped and reported, not fatal
    if not usable:
        raise CorpusError(f"{source.store.root}: none of the {len(corpus.video_ids)} videos is usable; first error: "
                          f"{failures[0]['error'] if failures else 'no videos'}")
    specials = SpecialTokens.from_tokenizer(source.tokenizer)
    builder = SampleBuilder(corpus, specials, d.clips_per_sample, d.max_text_len)
    dataset = PretrainDataset(corpus, builder, d.masking, source.seed, d.samples_per_video, usable)
    pad_to = None
    if d.fixed_shapes:
        n = d.clips_per_sample
        pad_to = (d.max_text_len, n + 1, n * (corpus.regions_per_clip + 1))
    collator = processor_class.pretraining_collator(source.model_config, source.tokenizer, pad_to)
    return PretrainingData(dataset, collator, failures)


__all__ = ["PretrainSource", "PretrainingData", "clip_window_data"]
