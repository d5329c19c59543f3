"""Which CPU a benchmark ran on: its model name and the instruction-set flags that change TensorFlow's kernels.
Timings from different CPUs are different machines (no TensorFlow here: the report reads the records)."""

from __future__ import annotations

import platform
from pathlib import Path

_CPUINFO = Path("/proc/cpuinfo")
FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "sve", "asimd")


def cpu_model(cpuinfo: Path = _CPUINFO) -> str:
    """The first 'model name' of /proc/cpuinfo ('' where unreadable), else platform.processor()."""
    return _field(cpuinfo, "model name") or platform.processor() or platform.machine()


def cpu_flags(cpuinfo: Path = _CPUINFO) -> str:
    """The FLAGS the CPU has, space-separated in FLAGS' order ('' where /proc/cpuinfo is unreadable)."""
    present = set((_field(cpuinfo, "flags") or _field(cpuinfo, "Features")).split())
    return " ".join(flag for flag in FLAGS if flag in present)


def _field(cpuinfo: Path, name: str) -> str:
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return ""
