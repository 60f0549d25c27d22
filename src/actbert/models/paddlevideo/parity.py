"""Parity of the ``paddlevideo`` port with PaddleVideo's ActBERT on a folder of the ``paddle_actbert_small`` layout.

The folder (its README documents it) holds Paddle's weights (``weights.npz``, or ``model.pdparams``
read by the restricted unpickler), the constructor kwargs and the argument order (``config.json``),
the inputs and labels (``inputs.npz``), and what Paddle computed: the four heads' scores
(``outputs.npz``), captured activations (``intermediates.npz``), the loss and its four terms
(``loss.json``) and gradients in Paddle's layout (``grads.npz``, Linear weights ``[in, out]``).
:func:`fixture_comparisons` rebuilds the model from the folder's own files and yields
``(name, kind, ours, reference)`` for each of them (:mod:`actbert.models.parity`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from actbert.errors import ActBertError
from actbert.models.paddlevideo.convert import load_paddle_checkpoint, to_paddle_layout
from actbert.models.paddlevideo.modeling import paddlevideo_pretraining_loss


class PaddleFixtureError(ActBertError):
    """A reference folder without the paddle_actbert_small layout (names the file and field)."""


def _npz(path: Path, required: bool = True) -> dict[str, np.ndarray]:
    if not path.is_file():
        if required:
            raise PaddleFixtureError(f"{path}: not found")
        return {}
    with np.load(path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


def _field(meta: dict[str, Any], name: str, source: Path) -> Any:
    if name not in meta:
        raise PaddleFixtureError(f"{source}: field {name!r} missing")
    return meta[name]


def fixture_comparisons(folder: str | Path) -> Iterable[tuple[str, str, np.ndarray, np.ndarray]]:
    """``(name, kind, ours, reference)`` for the outputs, intermediates, loss terms and gradients in ``folder``."""
    folder = Path(folder)
    torch.set_num_threads(1)
    meta_path = folder / "config.json"
    if not meta_path.is_file():
        raise PaddleFixtureError(f"{meta_path}: not found (a Paddle reference folder holds config.json, weights, inputs.npz)")
    meta = json.loads(meta_path.read_text())
    weights = folder / "weights.npz" if (folder / "weights.npz").is_file() else folder / "model.pdparams"
    model, _ = load_paddle_checkpoint(weights, _field(meta, "kwargs", meta_path))
    model.eval()
    inputs = _npz(folder / "inputs.npz")

    def tensors(names: list[str]) -> list[torch.Tensor]:
        missing = [n for n in names if n not in inputs]
        if missing:
            raise PaddleFixtureError(f"{folder / 'inputs.npz'}: field {missing[0]!r} missing")
        return [torch.from_numpy(inputs[n]) for n in names]

    forward_args = tensors(_field(meta, "forward_argument_order", meta_path))
    label_args = tensors(list(_field(meta, "loss_argument_order", meta_path))[4:])

    capture: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        out = model(*forward_args, capture=capture)
    for name, ref in _npz(folder / "outputs.npz", required=False).items():
        if not hasattr(out, name):
            raise PaddleFixtureError(f"{folder / 'outputs.npz'}: output {name!r} is not one the model returns")
        yield name, "output", getattr(out, name).numpy(), ref
    for name, ref in _npz(folder / "intermediates.npz", required=False).items():
        if name not in capture:
            raise PaddleFixtureError(f"{folder / 'intermediates.npz'}: intermediate {name!r} is not one the model captures")
        yield name, "output", capture[name].detach().numpy(), ref

    model.zero_grad(set_to_none=True)
    loss = paddlevideo_pretraining_loss(model(*forward_args), *label_args)
    loss_path = folder / "loss.json"
    if loss_path.is_file():
        expected = json.loads(loss_path.read_text())
        terms = {"total": expected.get("total"), **expected.get("components", {})}
        for name, value in terms.items():
            if value is not None:
                yield f"loss.{name}", "loss", np.asarray(float(getattr(loss, name).detach()), np.float64), np.asarray(float(value), np.float64)
    grads_ref = _npz(folder / "grads.npz", required=False)
    if grads_ref:
        loss.total.backward()
        grads = to_paddle_layout(model, {n: p.grad for n, p in model.named_parameters() if p.grad is not None})
        for name, ref in grads_ref.items():
            yield name, "grad", grads.get(name, np.zeros_like(ref)), ref
        model.zero_grad(set_to_none=True)


__all__ = ["PaddleFixtureError", "fixture_comparisons"]
