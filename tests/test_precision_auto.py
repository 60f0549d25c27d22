"""``auto`` precision: bf16 only where the hardware multiplies bf16 natively.

Why it exists: on an AVX2-only CPU torch's bf16 GEMM is a scalar fallback (measured: ~35 s per
small-preset pretraining step in bf16 autocast against ~3.9 s in fp32 on the same 2-core machine),
so a preset that asks for bf16 unconditionally makes `make demo` take hours there."""

from __future__ import annotations

import pytest
import torch

from actbert.train.config import load_pretrain_config
from actbert.utils import precision


@pytest.mark.parametrize("flags, native", [
    ({"fpu", "avx2", "fma"}, False),                       # AVX2 only (e.g. AMD EPYC Rome)
    ({"avx2", "avx512f", "avx512_bf16"}, True),            # Cooper Lake / Zen 4
    ({"avx2", "avx512f", "amx_tile", "amx_bf16"}, True),   # Sapphire Rapids
    ({"fp", "asimd", "bf16"}, True),                       # ARMv8.6 (Graviton 3)
    (set(), False),                                        # no /proc/cpuinfo
])
def test_auto_is_bf16_exactly_where_the_cpu_flags_say_so(monkeypatch, flags, native):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    assert precision.native_bf16("cpu") is native
    assert precision.resolve_dtype("auto", "cpu") == ("bf16" if native else "fp32")
    assert precision.resolve_dtype("bf16", "cpu") == "bf16" and precision.resolve_dtype("fp32", "cpu") == "fp32"
    # the context follows the decision: a matmul inside comes out in bf16 only with native bf16
    with precision.autocast("auto", "cpu"):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == (torch.bfloat16 if native else torch.float32)


def test_cpu_flags_reads_this_machine():
    """On Linux the flags line is found (the machine's own, whatever it has); no crash elsewhere."""
    flags = precision.cpu_flags()
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        assert flags == frozenset()
        return
    keys = [line.split(":", 1)[0].strip() for line in text.splitlines() if ":" in line]
    assert bool(flags) == ("flags" in keys or "Features" in keys)


def test_train_bf16_accepts_auto_and_names_the_field_otherwise():
    cfg = load_pretrain_config("small", ["data.random=true"])
    assert cfg.train.bf16 == "auto"  # the preset's choice
    assert load_pretrain_config("small", ["data.random=true", "train.bf16=false"]).train.bf16 is False
    with pytest.raises(Exception, match=r"train\.bf16"):
        load_pretrain_config("small", ["data.random=true", "train.bf16=maybe"])
