"""Read PaddleVideo ActBERT checkpoints and convert them to a ``from_pretrained`` folder.

Two input formats are accepted:

* ``.pdparams`` -- what ``paddle.save(model.state_dict())`` writes: a pickle of
  ``{parameter name: numpy array}``. It is read with :class:`RestrictedUnpickler`, which only lets
  the pickle rebuild numpy arrays/dtypes and plain containers; any other global (a function, a
  class) is refused *before* it is called, so a hostile file cannot run code.
* ``.npz`` -- the same arrays saved with ``numpy.savez``; read with ``allow_pickle=False``.

Conversion = rename (a short table, :data:`PADDLE_RENAMES`), transpose Linear weights (Paddle
stores them ``[in, out]``), keep the LM decoder tied to the word embeddings, infer the config
from the tensor shapes, and report unused / missing keys.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import re
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from actbert.errors import CheckpointError
from actbert.models.paddlevideo.modeling import PaddleVideoActBert, PaddleVideoActBertConfig, PaddleVideoConfigError

# Paddle's bookkeeping entry in a saved state dict (structured name -> internal name): not a weight.
PADDLE_BOOKKEEPING_KEYS = ("StructuredToParameterName@@",)
# The LM decoder matrix is the word-embedding table (one parameter under two names upstream).
TIED_DECODER_KEY = "cls.predictions.decoder_weight"
WORD_EMBEDDINGS_KEY = "bert.embeddings.word_embeddings.weight"

# Paddle name -> PyTorch name. Everything not matched keeps its name: the PyTorch module tree
# mirrors Paddle's except the connection layer's output block, split per stream.
PADDLE_RENAMES: tuple[tuple[str, str], ...] = (
    (r"\.ent_output\.(dense|LayerNorm)([123])\.", r".ent_output\2.\1."),
)


class UnsafePickleError(CheckpointError):
    """The pickle asked for a global outside the allow-list (nothing was executed)."""


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 numpy pickles use it (bytes stored as latin-1 text) -- and only that."""
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode only allowed for latin-1 text, got encoding {encoding!r}")
    return text.encode("latin-1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    # Resolve numpy's reconstruct / scalar helpers through numpy itself, so both the numpy 1
    # ("numpy.core.multiarray") and numpy 2 ("numpy._core.multiarray") spellings map to the
    # installed function without importing the deprecated alias.
    reconstruct = np.ndarray((0,), dtype=np.float32).__reduce__()[0]
    scalar = np.float32(0).__reduce__()[0]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): OrderedDict,
        ("builtins", "dict"): dict,
        ("builtins", "list"): list,
        ("builtins", "tuple"): tuple,
        ("_codecs", "encode"): _latin1_encode,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
        allowed[(module, "scalar")] = scalar
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and plain containers, nothing else.

    Every global a pickle names goes through :meth:`find_class`; anything outside the allow-list
    raises :class:`UnsafePickleError` naming the file and the refused ``module.name`` before it
    could be called. Persistent ids are refused too.
    """

    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refused to load global {module}.{name} from the pickle; only numpy arrays "
                "and plain containers are allowed in a Paddle checkpoint (nothing was executed)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: refused persistent id {pid!r} in the pickle")


def _check_arrays(state: Mapping[Any, Any], source: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{source}: key {key!r} is not a string; not a Paddle state dict")
        if key in PADDLE_BOOKKEEPING_KEYS:
            continue
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"{source}: entry {key!r} is a {type(value).__name__}, expected a numpy array")
        if value.dtype.kind not in "fiub":
            raise CheckpointError(f"{source}: entry {key!r} has dtype {value.dtype}, expected numbers")
        out[key] = value
    if not out:
        raise CheckpointError(f"{source}: no parameter arrays found")
    return out


def read_pdparams(path: str | Path) -> dict[str, np.ndarray]:
    """``paddle.save`` state dict (pickle) -> ``{name: array}`` via :class:`RestrictedUnpickler`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.strerror})") from exc
    try:
        state = RestrictedUnpickler(io.BytesIO(data), str(path)).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"{path}: not a readable Paddle .pdparams pickle ({exc})") from exc
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: top level is a {type(state).__name__}, expected a dict of parameters")
    if "UnpackBigParamInfor@@" in state:
        raise CheckpointError(
            f"{path}: parameters were split into slices (saved with pickle protocol 2/3); re-save with "
            "paddle.save(..., protocol=4) or export the arrays with numpy.savez"
        )
    return _check_arrays(state, str(path))


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """``numpy.savez`` archive -> ``{name: array}`` (``allow_pickle=False``)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            state = {key: archive[key] for key in archive.files}
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read .npz checkpoint ({exc})") from exc
    except (ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a pickle-free .npz of arrays ({exc})") from exc
    return _check_arrays(state, str(path))


def read_paddle_state(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``.pdparams`` or ``.npz`` checkpoint (chosen by suffix, else by the file's magic bytes)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return read_npz(path)
    if suffix in (".pdparams", ".pdparam", ".pdopt"):
        return read_pdparams(path)
    try:
        with path.open("rb") as handle:
            magic = handle.read(2)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.strerror})") from exc
    if magic == b"PK":
        return read_npz(path)
    if magic[:1] == b"\x80":
        return read_pdparams(path)
    raise CheckpointError(f"{path}: unknown checkpoint format (expected .pdparams or .npz)")


# --------------------------------------------------------------------------------------------
# Config inference
# --------------------------------------------------------------------------------------------

# Config fields the shapes cannot tell; their defaults are the upstream constructor defaults.
NOT_INFERABLE = (
    "num_attention_heads",
    "v_num_attention_heads",
    "a_num_attention_heads",
    "bi_num_attention_heads",
    "t_ent_attention_id",
    "v_ent_attention_id",
    "a_ent_attention_id",
    "fixed_t_layer",
    "fixed_v_layer",
    "hidden_act",
    "v_hidden_act",
    "a_hidden_act",
    "fusion_method",
)


def _shape(state: Mapping[str, np.ndarray], key: str, source: str, *alternatives: str) -> tuple[int, ...]:
    for name in (key, *alternatives):
        if name in state:
            return tuple(state[name].shape)
    raise CheckpointError(
        f"{source}: missing {key!r}, needed to infer the model size; is this a PaddleVideo ActBERT checkpoint?"
    )


def _count(state: Mapping[str, np.ndarray], stack: str) -> int:
    pattern = re.compile(rf"^bert\.encoder\.{stack}\.(\d+)\.")
    ids = [int(m.group(1)) for key in state if (m := pattern.match(key))]
    return max(ids) + 1 if ids else 0


def infer_config(
    state: Mapping[str, np.ndarray], overrides: Mapping[str, Any] | None = None, source: str = "checkpoint"
) -> tuple[PaddleVideoActBertConfig, dict[str, Any], dict[str, Any]]:
    """Sizes and layer counts from tensor shapes; the rest from ``overrides`` or defaults.

    Returns ``(config, inferred, assumed)``: ``inferred`` holds what the shapes gave, ``assumed``
    the non-inferable fields that fell back to defaults. An override that contradicts a shape
    raises :class:`CheckpointError`.
    """
    overrides = dict(overrides or {})
    num_t, num_v, num_a, num_c = (_count(state, s) for s in ("layer", "v_layer", "a_layer", "c_layer"))
    vocab, hidden = _shape(state, WORD_EMBEDDINGS_KEY, source)
    v_feature, v_hidden = _shape(state, "bert.v_embeddings.image_embeddings.weight", source)
    a_feature, a_hidden = _shape(state, "bert.a_embeddings.action_embeddings.weight", source)
    inferred: dict[str, Any] = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "max_position_embeddings": _shape(state, "bert.embeddings.position_embeddings.weight", source)[0],
        "type_vocab_size": _shape(state, "bert.embeddings.token_type_embeddings.weight", source)[0],
        "v_feature_size": v_feature,
        "v_hidden_size": v_hidden,
        "a_feature_size": a_feature,
        "a_hidden_size": a_hidden,
        "bi_hidden_size": _shape(state, "bert.t_pooler.dense.weight", source)[1],
        "num_hidden_layers": num_t,
        "v_num_hidden_layers": num_v,
        "a_num_hidden_layers": num_a,
        "intermediate_size": _shape(
            state, "bert.encoder.layer.0.intermediate.dense.weight", source, "bert.encoder.c_layer.0.t_intermediate.dense.weight"
        )[1],
        "v_intermediate_size": _shape(
            state, "bert.encoder.v_layer.0.intermediate.dense.weight", source, "bert.encoder.c_layer.0.v_intermediate.dense.weight"
        )[1],
        "a_intermediate_size": _shape(
            state, "bert.encoder.a_layer.0.intermediate.dense.weight", source, "bert.encoder.c_layer.0.a_intermediate.dense.weight"
        )[1],
        "v_target_size": _shape(state, "cls.imagePredictions.decoder.weight", source)[1],
        "a_target_size": _shape(state, "cls.actionPredictions.decoder.weight", source)[1],
    }
    for name, value in inferred.items():
        if name in overrides and overrides[name] is not None and overrides[name] != value:
            raise CheckpointError(f"{source}: option {name}={overrides[name]!r} contradicts the checkpoint's shapes ({value})")
    defaults = PaddleVideoActBertConfig()
    # Default placement of the connection layers: on the last text layers and the first vision /
    # action layers -- the released model's [10, 11] / [0, 1] / [0, 1] for 12 text layers.
    default_ids = {
        "t_ent_attention_id": list(range(num_t - num_c, num_t)),
        "v_ent_attention_id": list(range(num_c)),
        "a_ent_attention_id": list(range(num_c)),
    }
    assumed: dict[str, Any] = {}
    values = dict(inferred)
    for name in NOT_INFERABLE:
        if overrides.get(name) is not None:
            values[name] = overrides[name]
        else:
            values[name] = default_ids.get(name, getattr(defaults, name))
            assumed[name] = values[name]
    for name, value in overrides.items():
        if name not in values and value is not None:
            if name not in {f.name for f in dataclasses.fields(PaddleVideoActBertConfig)}:
                raise CheckpointError(f"{source}: unknown config option {name!r}")
            values[name] = value
    for name in ("t_ent_attention_id", "v_ent_attention_id", "a_ent_attention_id"):
        if len(values[name]) != num_c:
            raise CheckpointError(
                f"{source}: {name}={values[name]} has {len(values[name])} entries but the checkpoint has {num_c} connection layers (c_layer)"
            )
    try:
        config = PaddleVideoActBertConfig(**values)
    except PaddleVideoConfigError as exc:
        # Say which failing values were guessed (head counts are not in the tensor shapes).
        guessed = [name for name in assumed if re.search(rf"(?<![a-z_]){name} =", str(exc))]
        hint = ""
        if guessed:
            flags = ", ".join("--" + name.replace("_", "-") for name in guessed)
            hint = f" ({', '.join(guessed)} is not stored in the checkpoint and was assumed; pass {flags} or --paddle-config)"
        raise CheckpointError(f"{source}: {exc}{hint}") from exc
    return config, inferred, assumed


# --------------------------------------------------------------------------------------------
# Name mapping and conversion
# --------------------------------------------------------------------------------------------


def paddle_to_torch_name(name: str) -> str:
    for pattern, replacement in PADDLE_RENAMES:
        name = re.sub(pattern, replacement, name)
    return name


def torch_to_paddle_name(name: str) -> str:
    return re.sub(r"\.ent_output([123])\.(dense|LayerNorm)\.", r".ent_output.\2\1.", name)


def linear_weight_names(model: nn.Module) -> set[str]:
    """PyTorch names of every ``nn.Linear`` weight (stored transposed, ``[in, out]``, by Paddle)."""
    return {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, nn.Linear)}


def to_paddle_layout(model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """PyTorch-named tensors (weights or gradients) -> Paddle names and layout (Linear transposed)."""
    linear = linear_weight_names(model)
    out = {}
    for name, tensor in tensors.items():
        array = tensor.detach().cpu().numpy()
        out[torch_to_paddle_name(name)] = array.T if name in linear else array
    return out


@dataclass
class ConversionReport:
    source: str
    format: str
    loaded: int = 0
    transposed: int = 0
    tied: str = ""
    skipped: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    inferred: dict[str, Any] = field(default_factory=dict)
    assumed: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        lines = [
            f"{self.source}: loaded {self.loaded} tensors ({self.transposed} Linear weights transposed), format {self.format}",
            f"  tied: {self.tied}",
            f"  skipped bookkeeping keys: {self.skipped or 'none'}",
            f"  unused checkpoint keys ({len(self.unused)}): {self.unused or 'none'}",
            f"  missing model keys ({len(self.missing)}): {self.missing or 'none'}",
            f"  assumed (not inferable from shapes): {self.assumed or 'none'}",
        ]
        return "\n".join(lines)


def convert_state_dict(
    state: Mapping[str, np.ndarray], model: PaddleVideoActBert, source: str = "checkpoint", allow_missing: bool = False
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Paddle ``{name: array}`` -> PyTorch state dict for ``model`` (renamed, Linear transposed).

    The tied decoder entry must equal the word embeddings (it is the same parameter upstream) and
    is not stored separately. Keys the model does not have are reported as ``unused``; model keys
    the checkpoint lacks raise :class:`CheckpointError` unless ``allow_missing``.
    """
    report = ConversionReport(source=source, format="")
    expected = model.state_dict()
    linear = linear_weight_names(model)
    out: dict[str, torch.Tensor] = {}
    for key, array in state.items():
        if key == TIED_DECODER_KEY:
            continue
        name = paddle_to_torch_name(key)
        if name not in expected:
            report.unused.append(key)
            continue
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if name in linear:
            tensor = tensor.T
            report.transposed += 1
        target = expected[name]
        if tuple(tensor.shape) != tuple(target.shape):
            raise CheckpointError(
                f"{source}: {key!r} has shape {tuple(array.shape)} (Paddle layout) but the model expects "
                f"{tuple(target.shape)} for {name!r}"
            )
        out[name] = tensor.to(target.dtype).contiguous()
    if TIED_DECODER_KEY in state:
        if WORD_EMBEDDINGS_KEY in state and not np.array_equal(state[TIED_DECODER_KEY], state[WORD_EMBEDDINGS_KEY]):
            raise CheckpointError(
                f"{source}: {TIED_DECODER_KEY!r} differs from {WORD_EMBEDDINGS_KEY!r}; PaddleVideo ties them, "
                "so this checkpoint does not come from its ActBERT"
            )
        report.tied = f"{TIED_DECODER_KEY} == {WORD_EMBEDDINGS_KEY} (one parameter)"
    else:
        report.tied = f"{TIED_DECODER_KEY} absent; LM decoder uses {WORD_EMBEDDINGS_KEY}"
    report.missing = sorted(torch_to_paddle_name(n) for n in set(expected) - set(out))
    report.unused.sort()
    report.loaded = len(out)
    if report.missing and not allow_missing:
        shown = ", ".join(report.missing[:10]) + (" ..." if len(report.missing) > 10 else "")
        raise CheckpointError(f"{source}: {len(report.missing)} model parameters missing from the checkpoint: {shown}")
    return out, report


def load_paddle_checkpoint(
    path: str | Path, overrides: Mapping[str, Any] | None = None, allow_missing: bool = False
) -> tuple[PaddleVideoActBert, ConversionReport]:
    """Read ``path`` (.pdparams or .npz), infer the config, build and fill a :class:`PaddleVideoActBert`."""
    path = Path(path)
    state = read_paddle_state(path)
    config, inferred, assumed = infer_config(state, overrides, source=str(path))
    model = PaddleVideoActBert(config)
    tensors, report = convert_state_dict(state, model, source=str(path), allow_missing=allow_missing)
    model.load_state_dict(tensors, strict=not allow_missing)
    model.eval()
    report.format = "npz" if path.suffix.lower() == ".npz" or _is_zip(path) else "pdparams"
    report.inferred, report.assumed = inferred, assumed
    report.skipped = [k for k in PADDLE_BOOKKEEPING_KEYS if report.format == "pdparams"]
    return model, report


def _is_zip(path: Path) -> bool:
    return zipfile.is_zipfile(path)


def save_converted(model: PaddleVideoActBert, out_dir: str | Path) -> Path:
    """Write ``config.json`` (with ``architecture: paddlevideo``) + ``model.safetensors``.

    Uses the project's ``save_pretrained`` when present so the folder is exactly what
    ``from_pretrained`` reads; otherwise writes the same two files itself.
    """
    out_dir = Path(out_dir)
    try:
        from actbert.models.pretrained import save_pretrained  # type: ignore[attr-defined]
    except ImportError:
        save_pretrained = None
    if save_pretrained is not None:
        save_pretrained(model, out_dir)
        return out_dir
    from actbert.utils.io import atomic_save_file, atomic_write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_file(model.state_dict(), out_dir / "model.safetensors", metadata={"format": "pt"})
    atomic_write_json(out_dir / "config.json", model.config.to_dict())
    return out_dir


def load_converted(folder: str | Path) -> PaddleVideoActBert:
    """Read a folder written by :func:`save_converted` (fallback when ``from_pretrained`` is absent)."""
    from safetensors.torch import load_file

    from actbert.config import from_dict
    from actbert.utils.io import read_json

    folder = Path(folder)
    config = from_dict(PaddleVideoActBertConfig, read_json(folder / "config.json", "config"), source=str(folder / "config.json"))
    model = PaddleVideoActBert(config)
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval()


def convert_paddle_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    overrides: Mapping[str, Any] | None = None,
    allow_missing: bool = False,
) -> ConversionReport:
    """Convert ``checkpoint`` into a ``from_pretrained`` folder; also writes ``conversion_report.json``."""
    from actbert.utils.io import atomic_write_json

    model, report = load_paddle_checkpoint(checkpoint, overrides, allow_missing)
    save_converted(model, out_dir)
    atomic_write_json(Path(out_dir) / "conversion_report.json", report.to_dict())
    return report


__all__ = [
    "CheckpointError",
    "ConversionReport",
    "PADDLE_RENAMES",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "convert_paddle_checkpoint",
    "convert_state_dict",
    "infer_config",
    "linear_weight_names",
    "load_converted",
    "load_paddle_checkpoint",
    "paddle_to_torch_name",
    "read_npz",
    "read_paddle_state",
    "read_pdparams",
    "save_converted",
    "to_paddle_layout",
    "torch_to_paddle_name",
]
