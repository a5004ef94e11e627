"""What the host CPU offers int8 inference.

onnxruntime's int8 kernels multiply uint8 activations by int8 weights. They pay off only where the CPU
has int8 dot-product instructions: x86 AVX-512 VNNI, AVX-VNNI or AMX, ARM's dot-product extension. On a CPU
with only AVX2, such as the first EPYC generation, an int8 matrix product runs at about fp32's speed
(bench/precision.md, "int8 GEMM ceiling"), so an int8 model buys nothing there and costs some agreement.
The service says so at start-up and in GET /model instead of leaving the operator to find out.
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
            "): an int8 model runs at about fp32's speed here (bench/precision.md); serve the fp32 export instead")
