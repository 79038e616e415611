"""What a run computes in: the autocast dtype, the dtype the weights are stored in, and whether bf16 is native."""
from __future__ import annotations

import torch

from weitiao.config import Config


def autocast_dtype(precision: str, device: str):
    """The dtype of mixed-precision autocast, or None for full fp32."""
    if precision == "auto":
        return torch.bfloat16 if fast_bf16(device) else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def weights_dtype(cfg: Config, device: str) -> str:
    """model.dtype as a training run resolves it (see its doc): `auto` is bfloat16 on a GPU that supports it, and
    on a CPU for a LoRA SFT run (its base weights stay frozen) under bf16 autocast. Under autocast a frozen fp32
    weight is cast to bf16 in every forward (autocast caches the casts of trainable weights only) and its bf16 copy
    is kept for the backward; stored in bf16, neither happens, and the matmuls see the same bf16 values. The
    virtual-token methods freeze the base too, but were not measured so; qlora quantizes it."""
    if cfg.model.dtype != "auto":
        return cfg.model.dtype
    if device == "cuda":
        return "bfloat16" if fast_bf16(device) else "float32"
    from weitiao.methods import method_of

    frozen_base = cfg.task == "sft" and method_of(cfg.method).frozen_dense_base
    return "bfloat16" if frozen_base and autocast_dtype(cfg.train.precision, device) == torch.bfloat16 \
        and fast_bf16(device) else "float32"


def fast_bf16(device: str) -> bool:
    """Whether bf16 matmuls run faster than fp32 here: a CUDA GPU that supports bf16, or a CPU with AMX.

    Measured with torch 2.13 on one core: on a 2-core AVX2 EPYC bf16 is emulated (a 1024^3 matmul at 0.8 GFLOP/s
    against 74 in fp32); on a Xeon with AMX, bf16 was about 4x fp32; on a Xeon that exposes avx512_bf16 but not
    AMX, a 1024x576x1536 matmul ran at 90 GFLOP/s in bf16 against 164 in fp32, and a quickstart LoRA step took
    5.4 s under bf16 autocast against 2.6 s in fp32 (2026-12-05). So avx512_bf16 alone does not count.
    """
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cpu_bf16_native()


def cpu_bf16_native(flags: set[str] | None = None) -> bool:
    """Whether this CPU (or one with these /proc/cpuinfo `flags`) multiplies bf16 in hardware tiles: AMX."""
    return "amx_bf16" in (cpu_flags() if flags is None else flags)


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return set()  # not Linux: no flags, so fp32, the safe default


def precision_warning(precision: str, device: str) -> str | None:
    """A warning when the config asks for bf16 on a device where it is slower than fp32."""
    if precision == "bf16" and not fast_bf16(device):
        return (f"warning: train.precision bf16 on this {device}, which has no fast bf16 (no AMX on a CPU): bf16 "
                "is emulated or unaccelerated here and can be far slower than fp32; train.precision auto picks "
                "bf16 only where it is fast")
    return None


def precision_name(amp) -> str:
    """`fp32`, `bf16` or `fp16`: what the run computed in (an autocast dtype, or None for none)."""
    return "fp32" if amp is None else str(amp).replace("torch.", "").replace("bfloat16", "bf16").replace(
        "float16", "fp16")
