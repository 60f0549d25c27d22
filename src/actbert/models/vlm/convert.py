"""Read MMPT (fairseq ``examples/MMPT``) VLM weights under their upstream names, without running pickle code.

Accepted inputs:

* a fairseq/MMPT checkpoint (``checkpoint_best.pt``: ``torch.save`` zip archive with the state dict
  under ``"model"``, names prefixed ``mmmodel.mm_encoder.``). It is read by
  :class:`RestrictedTorchUnpickler`: tensors are rebuilt from the archive's raw storages by this
  module, and every other global the pickle names (fairseq's / omegaconf's config objects,
  ``argparse.Namespace`` ...) becomes an inert :class:`OpaqueObject` that records its name and is
  never imported or called -- a hostile file cannot run code. Legacy (pre-zip) torch files are refused.
* a ``numpy.savez`` archive of the state dict (``allow_pickle=False``), e.g. the fixture's ``weights.npz``;
* a safetensors file.

Conversion strips ``mmmodel.`` / ``mm_encoder.``, checks that the tied decoder
(``cls.predictions.decoder.weight``) equals the word table, drops buffers (``position_ids``),
infers the config from the shapes (head count and MMPT's dataset lengths are not in the shapes:
pass them) and reports unused / missing keys. A retrieval checkpoint (``MMFusionJoint``, no
``cls.*``) loads with the MTM head left at its initialisation (``report.missing_head``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from actbert.errors import CheckpointError
from actbert.models.torch_checkpoint import OpaqueObject, read_state_arrays, read_torch_zip
from actbert.models.vlm.configuration import VLMConfig, VLMConfigError
from actbert.models.vlm.modeling import VLMForPretraining

PREFIXES = ("mmmodel.", "mm_encoder.")
TIED_DECODER_KEY = "cls.predictions.decoder.weight"
WORD_EMBEDDINGS_KEY = "bert.embeddings.word_embeddings.weight"
BUFFER_KEYS = ("bert.embeddings.position_ids",)
HEAD_PREFIX = "cls."


def read_mmpt_state(path: str | Path) -> dict[str, np.ndarray]:
    """``{upstream name: array}`` from an MMPT ``.pt`` checkpoint, a ``.npz`` or a ``.safetensors`` file.

    The ``.pt`` reader keeps fairseq's config objects inert (``strict=False``, models/torch_checkpoint.py).
    """
    return read_state_arrays(path, strict=False)


# --------------------------------------------------------------------------------------------
# Names, config, conversion
# --------------------------------------------------------------------------------------------


def mmpt_to_ours(name: str) -> str:
    """``mmmodel.mm_encoder.bert.encoder...`` -> ``bert.encoder...`` (our tree is MMPT's)."""
    for prefix in PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def ours_to_mmpt(name: str) -> str:
    return "mm_encoder." + name


def _need(state: Mapping[str, np.ndarray], key: str, source: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{source}: missing {ours_to_mmpt(key)!r}, needed to infer the model size; is this an MMPT VLM checkpoint?")
    return tuple(state[key].shape)


def infer_config(state: Mapping[str, np.ndarray], overrides: Mapping[str, Any] | None = None, source: str = "checkpoint") -> VLMConfig:
    """Sizes from the shapes (ours-named ``state``); head count, MMPT lengths, ids and flags from ``overrides``."""
    overrides = {k: v for k, v in dict(overrides or {}).items() if v is not None}
    vocab, hidden = _need(state, WORD_EMBEDDINGS_KEY, source)
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"^bert\.encoder\.layer\.(\d+)\.", k))})
    inferred = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": len(layers),
        "intermediate_size": _need(state, "bert.encoder.layer.0.intermediate.dense.weight", source)[0],
        "max_position_embeddings": _need(state, "bert.embeddings.position_embeddings.weight", source)[0],
        "type_vocab_size": _need(state, "bert.embeddings.token_type_embeddings.weight", source)[0],
        "input_dim": _need(state, "videomlp.linear1.weight", source)[1],
        "use_seg_emb": "bert.embeddings.seg_embeddings.weight" in state,
    }
    if layers != list(range(len(layers))):
        raise CheckpointError(f"{source}: encoder layers {layers} are not numbered 0..n-1")
    for name, value in inferred.items():
        if name in overrides and overrides[name] != value:
            raise CheckpointError(f"{source}: option {name}={overrides[name]!r} contradicts the checkpoint's shapes ({value})")
    known = {f.name for f in dataclasses.fields(VLMConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise CheckpointError(f"{source}: unknown VLM config option(s) {unknown}")
    values = {**overrides, **inferred}
    values.setdefault("num_attention_heads", max(1, hidden // 64))  # BERT's head width 64 when not given
    try:
        return VLMConfig(**values)
    except VLMConfigError as exc:
        raise CheckpointError(f"{source}: {exc}") from exc


@dataclass
class ConversionReport:
    source: str
    loaded: int = 0
    tied: str = ""
    unused: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    missing_head: bool = False
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        return "\n".join([
            f"{self.source}: loaded {self.loaded} tensors",
            f"  tied: {self.tied}",
            f"  unused checkpoint keys ({len(self.unused)}): {self.unused or 'none'}",
            f"  missing model keys ({len(self.missing)}): {self.missing or 'none'}"
            + ("  (no MTM head: a fine-tuned retrieval checkpoint; the head keeps its initialisation)" if self.missing_head else ""),
        ])


def convert_state_dict(
    state: Mapping[str, np.ndarray], model: VLMForPretraining, source: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Ours-named arrays -> tensors for ``model``; a missing encoder tensor is an error, a missing head is reported."""
    report = ConversionReport(source=source)
    expected = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, array in state.items():
        if key in BUFFER_KEYS or key == TIED_DECODER_KEY:
            continue
        if key not in expected:
            report.unused.append(ours_to_mmpt(key))
            continue
        target = expected[key]
        if tuple(array.shape) != tuple(target.shape):
            raise CheckpointError(f"{source}: {ours_to_mmpt(key)!r} has shape {tuple(array.shape)}, the model expects {tuple(target.shape)}")
        out[key] = torch.from_numpy(np.ascontiguousarray(array)).to(target.dtype)
    if TIED_DECODER_KEY in state:
        if not np.array_equal(state[TIED_DECODER_KEY], state[WORD_EMBEDDINGS_KEY]):
            raise CheckpointError(
                f"{source}: {ours_to_mmpt(TIED_DECODER_KEY)!r} differs from {ours_to_mmpt(WORD_EMBEDDINGS_KEY)!r}; "
                "MMPT ties them, so this is not an MMPT VLM checkpoint"
            )
        report.tied = f"{ours_to_mmpt(TIED_DECODER_KEY)} == {ours_to_mmpt(WORD_EMBEDDINGS_KEY)} (one parameter)"
    else:
        report.tied = f"no decoder entry; the MTM decoder is {ours_to_mmpt(WORD_EMBEDDINGS_KEY)}"
    missing = sorted(set(expected) - set(out))
    report.missing_head = bool(missing) and all(k.startswith(HEAD_PREFIX) for k in missing)
    report.missing = [ours_to_mmpt(k) for k in missing]
    if missing and not report.missing_head:
        shown = ", ".join(report.missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise CheckpointError(f"{source}: {len(missing)} model tensors missing from the checkpoint: {shown}")
    report.unused.sort()
    report.loaded = len(out)
    return out, report


def load_mmpt_checkpoint(path: str | Path, overrides: Mapping[str, Any] | None = None) -> tuple[VLMForPretraining, ConversionReport]:
    """Read ``path`` (.pt / .npz / .safetensors, MMPT names), infer the config, build and fill the model (eval mode)."""
    source = str(path)
    raw = read_mmpt_state(path)
    return load_mmpt_state(raw, overrides, source)


def load_mmpt_state(raw: Mapping[str, np.ndarray], overrides: Mapping[str, Any] | None = None, source: str = "checkpoint") -> tuple[VLMForPretraining, ConversionReport]:
    """:func:`load_mmpt_checkpoint` on arrays already read (``{upstream name: array}``)."""
    state: dict[str, np.ndarray] = {}
    for key, value in raw.items():
        name = mmpt_to_ours(key)
        if name in state:
            raise CheckpointError(f"{source}: {key!r} and another entry both map to {name!r}")
        state[name] = value
    config = infer_config(state, overrides, source)
    model = VLMForPretraining(config)
    tensors, report = convert_state_dict(state, model, source)
    model.load_state_dict(tensors, strict=not report.missing_head)
    report.config = dataclasses.asdict(config)
    return model.eval(), report


def convert_mmpt_checkpoint(path: str | Path, out_dir: str | Path, overrides: Mapping[str, Any] | None = None) -> ConversionReport:
    """Convert ``path`` into a ``from_pretrained`` folder (+ ``conversion_report.json``)."""
    from actbert.utils.io import atomic_write_json

    model, report = load_mmpt_checkpoint(path, overrides)
    model.save_pretrained(out_dir)
    atomic_write_json(Path(out_dir) / "conversion_report.json", report.to_dict())
    return report


__all__ = [
    "ConversionReport",
    "OpaqueObject",
    "convert_mmpt_checkpoint",
    "convert_state_dict",
    "infer_config",
    "load_mmpt_checkpoint",
    "load_mmpt_state",
    "mmpt_to_ours",
    "ours_to_mmpt",
    "read_mmpt_state",
    "read_torch_zip",
]
