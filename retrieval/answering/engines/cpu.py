"""What this CPU can do, for choosing precisions and for printing beside every speed figure.

int8 kernels are only fast (and only match the figures measured on a Xeon) where the CPU has int8 dot-product
instructions: AVX-512 VNNI, AVX-VNNI or AMX. On an AVX2-only CPU (seen: AMD EPYC here) CTranslate2 int8 took
3-9 s an answer and gave different text, so there the engine computes in float32.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16")


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    for line in (cpuinfo if cpuinfo is not None else _cpuinfo()).splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model(cpuinfo: str | None = None) -> str:
    for line in (cpuinfo if cpuinfo is not None else _cpuinfo()).splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def has_int8_acceleration(flags: frozenset[str] | None = None) -> bool:
    return bool((cpu_flags() if flags is None else flags) & INT8_FLAGS)


def describe(cpuinfo: str | None = None) -> str:
    """One line for speed tables: model, cores, and the flags that decide precision."""
    flags = cpu_flags(cpuinfo)
    present = [f for f in SHOWN_FLAGS if f in flags]
    return f"{cpu_model(cpuinfo)}, {os.cpu_count()} cores, flags: {' '.join(present) or 'none of ' + '/'.join(SHOWN_FLAGS)}"
