"""What every benchmark prints about the machine it ran on."""

import platform
from pathlib import Path


def cpu_model() -> str:
    """``model name`` of /proc/cpuinfo (e.g. "AMD EPYC") with the instruction sets that decide the speed here:
    AVX-512, AVX512-BF16 and AMX (native bf16 matrix units), e.g. "AMD EPYC (AVX2; no AVX-512, no AVX512-BF16,
    no AMX)"; else the platform's processor string."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), platform.processor())
    flags = set(next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), []))
    has = [("AVX2", "avx2" in flags), ("AVX-512", "avx512f" in flags), ("AVX512-BF16", "avx512_bf16" in flags),
           ("AMX", "amx_bf16" in flags)]
    yes = [name for name, ok in has if ok]
    no = [f"no {name}" for name, ok in has if not ok]
    return f"{model} ({', '.join(yes + no)})"
