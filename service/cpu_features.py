"""What the host CPU offers int8 inference.

onnxruntime's int8 kernels multiply uint8 activations by int8 weights. They pay off surely where the CPU
has int8 dot-product instructions: x86 AVX-512 VNNI, AVX-VNNI or AMX, ARM's dot-product extension. Without
them it depends on the core: on the first EPYC generation (AVX2 only) an int8 matrix product ran at
fp32's speed (bench/precision.md, "int8 GEMM ceiling"), so an int8 model bought nothing there and cost
some agreement; other AVX2 cores were not measured. The service says so at start-up and in GET /model,
and `bench/bench_int8_gemm.py` measures any CPU in seconds.
"""

from __future__ import annotations

import platform
from pathlib import Path

#: /proc/cpuinfo flags (x86 "flags", ARM "Features") naming int8 dot-product instructions, best first.
INT8_DOT_PRODUCT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "i8mm", "asimddp")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The instruction-set flags of the first CPU in ``cpuinfo``; None where the file cannot tell (not Linux)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def int8_dot_product(flags: set[str] | None) -> str | None:
    """The best int8 dot-product flag among ``flags``, or None when the CPU has none."""
    if not flags:
        return None
    return next((flag for flag in INT8_DOT_PRODUCT_FLAGS if flag in flags), None)


def int8_advice(flags: set[str] | None) -> str | None:
    """A warning for an int8 model on this CPU, or None when int8 should pay off (or the CPU cannot be read)."""
    if flags is None or int8_dot_product(flags) is not None:
        return None
    return (f"this {platform.machine()} CPU has no int8 dot-product instructions ({', '.join(INT8_DOT_PRODUCT_FLAGS)}"
            "), so int8 may run no faster than fp32 here (it ran at fp32's speed on an AVX2-only EPYC, "
            "bench/precision.md); measure with bench/bench_int8_gemm.py, and serve the fp32 export if it does not pay")
