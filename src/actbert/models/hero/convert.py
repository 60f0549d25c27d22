"""Load original HERO checkpoints (upstream parameter names) safely, and convert them to a model folder.

Accepted files:

* ``.pt`` / ``.bin`` -- what upstream's ``torch.save(model.state_dict())`` writes (PyTorch's zip
  format: ``data.pkl`` + one file per storage). ``data.pkl`` is read by the shared strict reader
  (:mod:`actbert.models.torch_checkpoint`), which rebuilds tensors and plain containers only: any
  other global (a function, a class) is refused *before* it could be called, so a hostile file runs
  no code. PyTorch's legacy (pre-1.6, non-zip) format is refused with a message.
* ``.npz`` -- the same arrays saved with ``numpy.savez`` (``allow_pickle=False``), as the reference
  fixture's ``weights.npz``.
* ``.safetensors``.

The module tree of :class:`~actbert.models.hero.modeling.HeroForPretraining` keeps upstream's
names, so conversion is: drop upstream's two zero ``pad`` buffers, check the tied LM decoder equals
the word embeddings, infer the sizes from the shapes (the head counts come from the upstream model
config json, which shapes cannot tell), and report unused / missing keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from actbert.errors import CheckpointError
from actbert.models.torch_checkpoint import UnsafePickleError, read_state_arrays
from actbert.models.hero.configuration import HeroConfig, config_from_upstream, replace_config
from actbert.models.hero.modeling import HeroForPretraining

WORD_EMBEDDINGS_KEY = "v_encoder.f_encoder.embeddings.word_embeddings.weight"
TIED_DECODER_KEY = "v_encoder.f_encoder.lm_head.decoder.weight"
# upstream buffers with no numerical effect (_pad_layer_unpad's zero rows)
IGNORED_KEYS = ("v_encoder.pad", "v_encoder.f_encoder.pad")
# a key every HERO checkpoint has; its absence means another family's checkpoint
SIGNATURE_KEYS = (WORD_EMBEDDINGS_KEY, "v_encoder.c_encoder.embeddings.position_embeddings.weight",
                  "v_encoder.frame_transform.net.1.weight")
# DDP / wrapper prefixes some saved state dicts carry
STRIP_PREFIXES = ("module.", "model.")


def read_hero_state(path: str | Path) -> dict[str, np.ndarray]:
    """``.npz`` / ``.safetensors`` / torch zip (by suffix) -> ``{upstream name: array}``; the torch
    reader is strict (models/torch_checkpoint.py): a HERO state dict holds tensors only."""
    state = read_state_arrays(path, strict=True)
    for prefix in STRIP_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


# --------------------------------------------------------------------------------------------
# Conversion


@dataclass
class ConversionReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # checkpoint entries with no place in the model
    missing: list[str] = field(default_factory=list)  # model parameters the checkpoint lacks
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"HERO weights from {self.source}: {len(self.loaded)} tensors loaded"]
        if self.unused:
            lines.append(f"  unused: {', '.join(self.unused)}")
        if self.missing:
            lines.append(f"  missing (kept their initialisation): {', '.join(self.missing)}")
        lines.extend(f"  {n}" for n in self.notes)
        return "\n".join(lines)


def _check_family(state: Mapping[str, np.ndarray], source: str) -> None:
    for key in SIGNATURE_KEYS:
        if key not in state:
            sample = ", ".join(sorted(state)[:3])
            raise CheckpointError(
                f"{source}: key {key!r} missing; not a HERO checkpoint under upstream names (it has e.g. {sample})"
            )


def _count_layers(state: Mapping[str, np.ndarray], prefix: str) -> int:
    ids = {int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)}
    return max(ids) + 1 if ids else 0


def infer_sizes(state: Mapping[str, np.ndarray], source: str = "checkpoint") -> dict[str, int]:
    """The config fields the tensor shapes tell (widths, vocabulary, layer counts, table sizes)."""
    _check_family(state, source)

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointError(f"{source}: key {key!r} missing; needed to infer the model size")
        return tuple(state[key].shape)

    f, c = "v_encoder.f_encoder.", "v_encoder.c_encoder."
    vocab, hidden = shape(WORD_EMBEDDINGS_KEY)
    sizes = {
        "hidden_size": hidden,
        "vocab_size": vocab,
        "max_position_embeddings": shape(f + "embeddings.position_embeddings.weight")[0],
        "type_vocab_size": shape(f + "embeddings.token_type_embeddings.weight")[0],
        "max_frm_seq_len": shape(f + "img_embeddings.position_embeddings.weight")[0],
        "vfeat_dim": shape(f + "img_embeddings.img_linear.weight")[1],
        "cross_layers": _count_layers(state, f + "encoder.layer."),
        "cross_intermediate_size": shape(f + "encoder.layer.0.intermediate.dense.weight")[0],
        "temporal_layers": _count_layers(state, c + "encoder.layer."),
        "temporal_intermediate_size": shape(c + "encoder.layer.0.intermediate.dense.weight")[0],
        "max_frames": shape(c + "embeddings.position_embeddings.weight")[0],
        "max_clip_len": shape("v_encoder.fom_output.linear_2.weight")[0],
        "conv_kernel_size": shape("video_st_predictor.weight")[-1],
        "mask_token_id": vocab - 1,  # RoBERTa's layout: <mask> is the last id (override for another vocabulary)
    }
    if "q_feat_attn.query_pos_embed.position_embeddings.weight" in state:
        sizes["query_max_positions"] = shape("q_feat_attn.query_pos_embed.position_embeddings.weight")[0]
    return sizes


def load_hero_state(model: HeroForPretraining, state: Mapping[str, np.ndarray], source: str = "checkpoint",
                    strict: bool = True) -> ConversionReport:
    """Copy upstream-named arrays into ``model``; shapes must match. ``strict``: a missing parameter is an error."""
    _check_family(state, source)
    report = ConversionReport(source=source)
    params = model.state_dict()
    if TIED_DECODER_KEY in state and not np.array_equal(state[TIED_DECODER_KEY], state[WORD_EMBEDDINGS_KEY]):
        raise CheckpointError(f"{source}: key {TIED_DECODER_KEY!r} differs from {WORD_EMBEDDINGS_KEY!r}; upstream ties them")
    values = {}
    for key, array in state.items():
        if key in IGNORED_KEYS or key == TIED_DECODER_KEY:
            continue
        if key not in params:
            report.unused.append(key)
            continue
        if tuple(array.shape) != tuple(params[key].shape):
            raise CheckpointError(f"{source}: key {key!r} has shape {list(array.shape)}, the model expects {list(params[key].shape)}")
        values[key] = torch.from_numpy(np.ascontiguousarray(array)).to(params[key].dtype)
    report.missing = [k for k in params if k not in values and k != TIED_DECODER_KEY]
    if strict and report.missing:
        raise CheckpointError(f"{source}: missing keys {report.missing[:6]}{' ...' if len(report.missing) > 6 else ''} "
                              f"({len(report.missing)}) for {type(model).__name__}")
    model.load_state_dict(values, strict=False)
    report.loaded = sorted(values)
    return report


def load_hero_checkpoint(
    path: str | Path,
    model_config: str | Path | Mapping[str, Any] | HeroConfig | None = None,
    strict: bool = True,
    **overrides: Any,
) -> tuple[HeroForPretraining, ConversionReport]:
    """An upstream HERO checkpoint -> (:class:`HeroForPretraining` in eval mode, report).

    ``model_config``: upstream's model config json (path or dict; gives the head counts), or a
    :class:`HeroConfig`. Sizes come from the tensor shapes; ``overrides`` set the other fields
    (VSM loss weights, special ids ...).
    """
    state = read_hero_state(path)
    sizes = infer_sizes(state, str(path))
    if isinstance(model_config, HeroConfig):
        config = replace_config(model_config, **{**sizes, **overrides})
    elif model_config is None:
        config = HeroConfig(**{**sizes, **overrides})
    else:
        config = config_from_upstream(model_config, **{**sizes, **overrides})
    model = HeroForPretraining(config)
    report = load_hero_state(model, state, str(path), strict=strict)
    if model_config is None:
        report.notes.append("no upstream model config given: head counts are HeroConfig's defaults")
    return model.eval(), report


__all__ = [
    "ConversionReport",
    "UnsafePickleError",
    "infer_sizes",
    "load_hero_checkpoint",
    "load_hero_state",
    "read_hero_state",
]
