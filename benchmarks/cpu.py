"""What every benchmark prints about the machine it ran on."""

import platform
from pathlib import Path


def cpu_model() -> str:
    """``model name`` of /proc/cpuinfo (e.g. "AMD EPYC"), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
