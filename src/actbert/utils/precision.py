"""One precision helper for every loop (pretraining, fine-tuning, scoring).

* ``fp32``: no autocast.
* ``bf16``: ``torch.autocast`` in bf16 -- fp32 weights, re-cast to bf16 by every matmul of every call.
* ``bf16-weights`` (inference only, :func:`inference_precision`): the model's floating parameters
  and buffers are cast to bf16 *once* for the whole scoring loop (and put back afterwards), so the
  forward runs in bf16 end to end -- LayerNorm, softmax and the residual stream included, with
  torch's own bf16 kernels (which accumulate in fp32 internally). Autocast stays on around it only
  for the fp32 inputs (features, masks turned into scores): casting a tensor that is already bf16
  is free, so the weights are not re-cast per call.
* ``auto``: ``bf16`` where the device multiplies bf16 matrices natively (:func:`native_bf16`), else
  ``fp32``. Why: on a CPU without bf16 instructions (AVX2 only, e.g. many AMD EPYC and older Intel
  parts) torch falls back to a scalar bf16 GEMM; measured on such a 2-core machine (AMD EPYC,
  AVX2, torch 2.14.1, one thread), the small preset's pretraining step on the bench store took
  35-43 s in bf16 autocast against 3.4-3.9 s in fp32 (``benchmarks/train_step.py --dtypes fp32
  bf16`` measures the ratio on the machine at hand).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from actbert.errors import ActBertError

DTYPES = ("fp32", "bf16", "bf16-weights", "auto")
BF16_WEIGHTS = "bf16-weights"
AUTO = "auto"
# x86 CPU flags (Linux /proc/cpuinfo) of native bf16 matrix arithmetic; "bf16" is aarch64's (ARMv8.6 BF16)
_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (``flags`` on x86, ``Features`` on ARM); empty
    where /proc/cpuinfo does not exist (then :func:`native_bf16` says False for the CPU)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device_type: str = "cpu") -> bool:
    """Whether ``device_type`` runs bf16 matrix multiplies natively: CUDA as torch reports it, a CPU
    by its flags (AVX512-BF16, AMX-BF16 or ARM's BF16)."""
    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device_type == "cpu":
        return bool(_BF16_CPU_FLAGS & cpu_flags())
    return False


def resolve_dtype(dtype: str | None, device_type: str = "cpu") -> str | None:
    """``auto`` -> ``bf16`` where :func:`native_bf16`, else ``fp32``; any other dtype unchanged."""
    if dtype == AUTO:
        return "bf16" if native_bf16(device_type) else "fp32"
    return dtype


def autocast(dtype: str | None, device_type: str = "cpu") -> torch.autocast:
    """``torch.autocast`` in bf16 for ``"bf16"`` (and ``"bf16-weights"``, whose weights
    :func:`inference_precision` casts) on ``device_type`` (``"cpu"`` / ``"cuda"``), a disabled one
    for ``"fp32"`` / None; ``"auto"`` as :func:`resolve_dtype` decides."""
    dtype = resolve_dtype(dtype, device_type)
    if dtype in (None, "fp32", "float32"):
        return torch.autocast(device_type, enabled=False)
    if dtype in ("bf16", "bfloat16", BF16_WEIGHTS):
        return torch.autocast(device_type, dtype=torch.bfloat16)
    raise ActBertError(f"dtype: expected one of {list(DTYPES)}, got {dtype!r}")


@contextmanager
def bf16_weights(model: nn.Module) -> Iterator[nn.Module]:
    """Inside: every floating parameter and buffer of ``model`` is bf16; on exit the original fp32
    tensors are put back (the very tensors, not a round trip through bf16, so nothing is lost).

    Costs one bf16 copy of the weights while inside; gradients are not supported (inference only).
    """
    saved: list[tuple[nn.Module, str, bool, torch.Tensor]] = []
    hooks = []
    try:
        # a norm layer refuses an fp32 input with bf16 weights (autocast does not cast for it): an
        # fp32 feature added to a bf16 stream promotes the sum to fp32, so cast such inputs down
        for module in model.modules():
            if isinstance(module, NORMS):
                hooks.append(module.register_forward_pre_hook(_inputs_to_bf16))
        for module in model.modules():
            for kind, tensors in ((True, module._parameters), (False, module._buffers)):
                for name, tensor in tensors.items():
                    if tensor is None or not tensor.is_floating_point() or tensor.dtype == torch.bfloat16:
                        continue
                    saved.append((module, name, kind, tensor))
                    low = tensor.detach().to(torch.bfloat16)
                    # a tied parameter (e.g. the MLM decoder = word embeddings) stays tied: same object
                    tensors[name] = nn.Parameter(low, requires_grad=False) if kind else low
        _retie(saved)
        yield model
    finally:
        for hook in hooks:
            hook.remove()
        for module, name, kind, tensor in reversed(saved):
            (module._parameters if kind else module._buffers)[name] = tensor


NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)


def _inputs_to_bf16(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.to(torch.bfloat16) if isinstance(a, torch.Tensor) and a.dtype == torch.float32 else a for a in args)


def _retie(saved: list[tuple[nn.Module, str, bool, torch.Tensor]]) -> None:
    """Entries that held the same fp32 tensor get the same bf16 one (weight tying survives the cast)."""
    first: dict[int, torch.Tensor] = {}
    for module, name, kind, tensor in saved:
        tensors = module._parameters if kind else module._buffers
        if id(tensor) in first:
            tensors[name] = first[id(tensor)]
        else:
            first[id(tensor)] = tensors[name]


@contextmanager
def inference_precision(model: nn.Module, dtype: str | None, device_type: str = "cpu") -> Iterator[nn.Module]:
    """The precision of a whole inference loop: ``fp32`` / ``bf16`` as :func:`autocast`,
    ``bf16-weights`` casts the model once (:func:`bf16_weights`) for everything inside; ``auto``
    is ``bf16`` autocast or ``fp32`` (:func:`resolve_dtype`)."""
    dtype = resolve_dtype(dtype, device_type)
    if dtype == BF16_WEIGHTS:
        with bf16_weights(model), autocast(dtype, device_type):
            yield model
    else:
        with autocast(dtype, device_type):
            yield model


class MasterWeights:
    """Training with bf16 weights and fp32 master copies (the "bf16 optimizer" of Megatron / DeepSpeed).

    The model's floating parameters become bf16 (the forward and backward run in bf16 end to end, no
    per-step re-cast of fp32 weights by autocast); :attr:`params` are fp32 master copies -- build the
    optimizer on them. Per step: forward/backward on the model, then :meth:`grads_to_master` (bf16
    gradients -> fp32 ``master.grad``), clip and step the optimizer on the masters, then
    :meth:`master_to_model` (masters -> bf16 weights). ``state_dict()`` is the fp32 one, with the
    model's names (what a checkpoint should hold).
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.names: list[str] = []
        self.params: list[nn.Parameter] = []
        self.low: list[nn.Parameter] = []
        for name, param in model.named_parameters():  # each tied parameter once
            self.names.append(name)
            master = nn.Parameter(param.detach().float().clone(), requires_grad=param.requires_grad)
            self.params.append(master)
            if param.is_floating_point():
                param.data = param.data.to(torch.bfloat16)
            self.low.append(param)

    def named_parameters(self):
        return zip(self.names, self.params)

    def rebind(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Point an optimizer built on the model's parameters (its groups, learning rates and weight
        decay as they are) at the fp32 masters instead; before its first step."""
        index = {id(low): master for low, master in zip(self.low, self.params)}
        for group in optimizer.param_groups:
            group["params"] = [index[id(p)] for p in group["params"]]
        return optimizer

    def grads_to_master(self) -> None:
        for master, low in zip(self.params, self.low):
            master.grad = None if low.grad is None else low.grad.float()
            low.grad = None

    @torch.no_grad()
    def master_to_model(self) -> None:
        for master, low in zip(self.params, self.low):
            low.copy_(master)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = dict(self.model.state_dict())
        state.update({name: master.detach() for name, master in zip(self.names, self.params)})
        return state


__all__ = ["AUTO", "BF16_WEIGHTS", "DTYPES", "MasterWeights", "autocast", "bf16_weights", "cpu_flags", "inference_precision",
           "native_bf16", "resolve_dtype"]
