"""Where bf16 autocast pays.

On a GPU it always does. On a CPU it pays only with bf16 matrix instructions (x86 AVX512-BF16 or AMX,
the Arm BF16 extension); without them PyTorch emulates bf16 matmuls, several times slower than fp32
(a MAETok-XS training step ~8x on an AVX2-only CPU). The configs' `bf16` flags are therefore read as
"where the hardware has it", so one params.yaml runs fast on both kinds of CPU. MAETOK_CPU_BF16=1 / 0
overrides the detection.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # /proc/cpuinfo `flags` (x86) or `Features` (Arm)


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (Linux /proc/cpuinfo; False where it cannot tell)."""
    override = os.environ.get("MAETOK_CPU_BF16")
    if override in ("0", "1"):
        return override == "1"
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return False
    flags = {f for line in lines if line.startswith(("flags", "Features")) for f in line.split(":", 1)[1].split()}
    return bool(flags & CPU_BF16_FLAGS)


def bf16_enabled(device_type: str, enabled: bool) -> bool:
    """The config's bf16 flag, kept on a CPU only where it has bf16 instructions."""
    return enabled and (device_type != "cpu" or cpu_has_bf16())


def bf16_autocast(device_type: str, enabled: bool):
    """bf16 autocast on `device_type` where it pays (see the module docstring)."""
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=bf16_enabled(device_type, enabled))


def compile_enabled(flag: bool) -> bool:
    """Whether to torch.compile: the config's flag (`optim.compile`, `finetune.compile`), unless the
    environment variable MAETOK_NO_COMPILE=1 turns it off for a run (the test suite sets it: its
    many short trainings would each pay the compile). On a CPU Inductor needs a C++ compiler; the
    first compile of a graph is cached on disk (TORCHINDUCTOR_CACHE_DIR, default
    /tmp/torchinductor_$USER) for the next jobs."""
    return bool(flag) and not os.environ.get("MAETOK_NO_COMPILE")
