"""HERO's configuration: :class:`HeroConfig` (the ``model:`` section of a ``hero`` preset).

One flat dataclass for the three upstream configs (``f_config`` = Cross-modal Transformer,
``c_config`` = Temporal Transformer, ``q_config`` = query encoder, which upstream requires to share
one hidden size) plus the constructor arguments of upstream ``HeroForPretraining`` and the
pretraining settings of upstream ``pretrain.py`` / ``config/pretrain-tv-16gpu.json``.

Defaults are upstream's released model (``config/hero_pretrain.json``: 6 cross-modal layers, 3
temporal layers, width 768) with upstream's pretraining settings (task ratio 2:2:1:2 for
MLM : MFM-NCE : FOM : VSM, mask probability 0.15, ``drop_svmr_prob`` 0.8, ...). Every deviation
from upstream is a named field here whose default is the upstream behaviour.
:func:`config_from_upstream` reads an upstream ``VideoModelConfig`` json.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from actbert.config import ConfigError
from actbert.errors import ActBertError

# The pretraining tasks, by the names the losses are logged under (upstream: mlm, mfm-nce, mffr, fom, vsm).
TASKS = ("mlm", "mfm_nce", "mffr", "fom", "vsm")
RANKING_LOSSES = ("hinge", "lse")
# What one HERO "frame" is built from in our feature store (data.frame_features).
FRAME_FEATURES = ("action", "action+region")


class HeroBatchError(ActBertError):
    """A batch or item that cannot be laid out for HERO (names the video / field)."""


@dataclass
class HeroConfig:
    """Hyper-parameters of :class:`~actbert.models.hero.modeling.HeroForPretraining`."""

    architecture: str = "hero"
    hidden_size: int = 768  # f, c and q share it (upstream requirement)
    # Cross-modal Transformer (f_config)
    vocab_size: int = 50265
    cross_layers: int = 6
    cross_heads: int = 12
    cross_intermediate_size: int = 3072
    max_position_embeddings: int = 514  # text positions
    type_vocab_size: int = 2
    max_frm_seq_len: int = 100  # frame positions within one subtitle row (upstream: max_clip_len)
    # Temporal Transformer (c_config)
    temporal_layers: int = 3
    temporal_heads: int = 12
    temporal_intermediate_size: int = 3072
    max_frames: int = 514  # temporal positions (c_config.max_position_embeddings)
    # query encoder (q_config): one attention block, no FFN
    query_heads: int = 12
    query_max_positions: int = 514
    # frames
    vfeat_dim: int = 4352  # upstream: SlowFast 2304 + ResNet 2048; filled from the store
    frame_features: str = "action"  # "action" or "action+region" (mean region feature appended)
    max_clip_len: int = 100  # FOM's class count (fixed by upstream HeroModel) and frames per video
    # special ids (upstream: RoBERTa's <s>=0, <pad>=1, </s>=2, <mask>=50264); filled from the tokenizer
    pad_token_id: int = 1
    cls_token_id: int = 0
    sep_token_id: int = 2
    mask_token_id: int = 50264
    # which token-type row every text and frame embedding adds. Upstream always adds row 1 (its
    # init_type_embedding copied RoBERTa's only row into row 1). With a BERT-family text_init, row 0
    # is BERT's trained segment-A row, which the presets use.
    token_type_row: int = 1
    # regularisation and init
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    initializer_range: float = 0.02
    # pretraining heads and losses (upstream HeroForPretraining arguments / pretrain.py options)
    nce_temp: float = 1.0
    lw_st_ed: float = 0.01
    lw_neg_ctx: float = 8.0
    lw_neg_q: float = 8.0
    margin: float = 0.1
    ranking_loss_type: str = "hinge"
    use_all_neg: bool = True
    hard_negative_start_step: int = 20000  # pretrain.py: hard negatives from this VSM step on (-1: never)
    hard_pool_size: int = 20
    hard_neg_weight: float = 10.0
    drop_svmr_prob: float = 0.8  # pretrain.py: the st/ed term is computed with probability 1 - this
    conv_kernel_size: int = 5
    # task sampling: one task per mini-batch with these ratios (pretrain-tv-16gpu.json: 2, 2, 1, 2)
    task_ratios: dict[str, float] = field(default_factory=lambda: {"mlm": 2.0, "mfm_nce": 2.0, "fom": 1.0, "vsm": 2.0})
    mlm_mask_prob: float = 0.15
    mfm_mask_prob: float = 0.15
    fom_reorder_prob: float = 0.15
    vsm_query_per_video: int = 5
    # text checkpoint (folder or installed package) for the Cross-modal Transformer; None = random
    text_init: str | None = None

    def __post_init__(self) -> None:
        def fail(key: str, why: str) -> None:
            raise ConfigError(f"HeroConfig.{key}: {why}")

        if self.architecture != "hero":
            fail("architecture", f"must be 'hero' for this model, got {self.architecture!r}")
        for key in (
            "hidden_size", "vocab_size", "cross_layers", "cross_heads", "cross_intermediate_size",
            "max_position_embeddings", "type_vocab_size", "max_frm_seq_len", "temporal_layers", "temporal_heads",
            "temporal_intermediate_size", "max_frames", "query_heads", "query_max_positions", "vfeat_dim",
            "max_clip_len", "conv_kernel_size", "vsm_query_per_video",
        ):  # fmt: skip
            if int(getattr(self, key)) <= 0:
                fail(key, f"must be positive, got {getattr(self, key)}")
        for key in ("cross_heads", "temporal_heads", "query_heads"):
            if self.hidden_size % getattr(self, key):
                fail(key, f"{getattr(self, key)} does not divide hidden_size={self.hidden_size}")
        if self.conv_kernel_size % 2 == 0:
            fail("conv_kernel_size", f"must be odd (upstream pads kernel//2 on each side), got {self.conv_kernel_size}")
        if not 0 <= self.token_type_row < self.type_vocab_size:
            fail("token_type_row", f"{self.token_type_row} is not a row of the {self.type_vocab_size}-row token-type table")
        if self.frame_features not in FRAME_FEATURES:
            fail("frame_features", f"{self.frame_features!r} is not one of {list(FRAME_FEATURES)}")
        if self.ranking_loss_type not in RANKING_LOSSES:
            fail("ranking_loss_type", f"{self.ranking_loss_type!r} is not one of {list(RANKING_LOSSES)}")
        for key in ("hidden_dropout", "attention_dropout", "drop_svmr_prob"):
            if not 0.0 <= getattr(self, key) < 1.0:
                fail(key, f"must be in [0, 1), got {getattr(self, key)}")
        for key in ("mlm_mask_prob", "mfm_mask_prob", "fom_reorder_prob"):
            if not 0.0 < getattr(self, key) <= 1.0:
                fail(key, f"must be in (0, 1], got {getattr(self, key)}")
        unknown = sorted(set(self.task_ratios) - set(TASKS))
        if unknown:
            fail("task_ratios", f"unknown task(s) {unknown}; known: {list(TASKS)}")
        self.task_ratios = {k: float(v) for k, v in self.task_ratios.items()}
        if any(v < 0 for v in self.task_ratios.values()) or not any(v > 0 for v in self.task_ratios.values()):
            fail("task_ratios", f"ratios must be >= 0 with at least one > 0, got {self.task_ratios}")
        ids = {"pad": self.pad_token_id, "cls": self.cls_token_id, "sep": self.sep_token_id, "mask": self.mask_token_id}
        for name, value in ids.items():
            if not 0 <= value < self.vocab_size:
                fail(f"{name}_token_id", f"{value} is outside the vocabulary of {self.vocab_size}")

    @property
    def tasks(self) -> list[str]:
        """The tasks that pretraining samples (ratio > 0), in :data:`TASKS` order."""
        return [t for t in TASKS if self.task_ratios.get(t, 0.0) > 0]


def config_from_upstream(model_config: str | Path | Mapping[str, Any], **overrides: Any) -> HeroConfig:
    """An upstream ``VideoModelConfig`` json (``f_config`` / ``c_config`` / ``q_config``) -> :class:`HeroConfig`.

    ``overrides`` set the fields the json does not hold (``vfeat_dim``, ``max_frm_seq_len``, the
    VSM weights ...). Upstream's keys that have no effect here (``num_hidden_layers`` of the query
    encoder, ``initializer_range`` ...) are ignored; a hidden size that differs between the three is
    an error, as upstream requires them equal.
    """
    if isinstance(model_config, Mapping):
        data, source = dict(model_config), "model config"
    else:
        source = str(model_config)
        try:
            data = json.loads(Path(model_config).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{source}: cannot read the upstream model config ({exc})") from exc
    try:
        f, c = data["f_config"], data["c_config"]
        q = data.get("q_config") or {}
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{source}: field {exc} missing (expected f_config, c_config, q_config)") from exc
    sizes = {name: cfg.get("hidden_size") for name, cfg in (("f_config", f), ("c_config", c), ("q_config", q)) if cfg}
    if len(set(sizes.values())) != 1:
        raise ConfigError(f"{source}: field hidden_size differs between {sizes}; HERO needs one width")
    for name, cfg in (("f_config", f), ("c_config", c)):
        if cfg.get("hidden_act", "gelu") != "gelu":
            raise ConfigError(f"{source}: field {name}.hidden_act is {cfg['hidden_act']!r}; only gelu is supported")
    kwargs: dict[str, Any] = dict(
        hidden_size=int(f["hidden_size"]),
        vocab_size=int(f["vocab_size"]),
        cross_layers=int(f["num_hidden_layers"]),
        cross_heads=int(f["num_attention_heads"]),
        cross_intermediate_size=int(f["intermediate_size"]),
        max_position_embeddings=int(f["max_position_embeddings"]),
        # upstream init_type_embedding() always makes the table 2 rows (RoBERTa ships 1)
        type_vocab_size=max(2, int(f.get("type_vocab_size", 2))),
        temporal_layers=int(c["num_hidden_layers"]),
        temporal_heads=int(c["num_attention_heads"]),
        temporal_intermediate_size=int(c["intermediate_size"]),
        max_frames=int(c["max_position_embeddings"]),
        hidden_dropout=float(f.get("hidden_dropout_prob", 0.1)),
        attention_dropout=float(f.get("attention_probs_dropout_prob", 0.1)),
        initializer_range=float(f.get("initializer_range", 0.02)),
    )
    if q:
        kwargs.update(query_heads=int(q["num_attention_heads"]), query_max_positions=int(q["max_position_embeddings"]))
    kwargs.update(overrides)
    return HeroConfig(**kwargs)


def replace_config(config: HeroConfig, **changes: Any) -> HeroConfig:
    """A copy of ``config`` with ``changes`` (validated again)."""
    return dataclasses.replace(config, **changes)


__all__ = ["FRAME_FEATURES", "HeroBatchError", "HeroConfig", "RANKING_LOSSES", "TASKS", "config_from_upstream", "replace_config"]
