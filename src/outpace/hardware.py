"""What the machine can do: CPU model and the SIMD flags that decide the fastest dtype."""

from __future__ import annotations

import platform

#: CPU flags with native bf16 matmuls (x86 AVX512-BF16 / AMX, Arm BF16): without one, torch
#: emulates bf16 on a CPU and float32 is as fast (and exact).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU model name from /proc/cpuinfo (or `cpuinfo` text), else the platform's guess."""
    if cpuinfo is None:
        cpuinfo = _cpuinfo()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags(cpuinfo: str | None = None, wanted: tuple[str, ...] = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")) -> list[str]:
    """Which of the SIMD flags that matter for CPU inference the CPU reports."""
    if cpuinfo is None:
        cpuinfo = _cpuinfo()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):  # x86, Arm
            flags = set(line.partition(":")[2].split())
            return [w for w in wanted if w in flags]
    return []


def auto_dtype(cuda: bool, cpuinfo: str | None = None) -> str:
    """The dtype `--dtype auto` means: bfloat16 on a GPU or a CPU with native bf16 matmuls,
    else float32 (emulated bf16 is no faster on a CPU and rounds batched and single-token
    forwards differently, which costs exactness against autoregressive decoding)."""
    if cuda or cpu_flags(cpuinfo, NATIVE_BF16_FLAGS):
        return "bfloat16"
    return "float32"


def resolve_dtype(dtype: str) -> str:
    """`auto` -> `auto_dtype` for this machine; other names pass through (checked by the loader)."""
    if dtype != "auto":
        return dtype
    import torch

    return auto_dtype(torch.cuda.is_available())
