"""The machine a measurement ran on (CPU model, cores, Python, load): printed by every benchmark and
recorded in the pipeline's and the caption job's summary.json, so a clips/s or images/s number always
says where it was measured."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what `platform` knows, else "unknown CPU"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> float:
    """The 1-minute load average (nan where the OS has none): how much else shared the CPU."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def machine_line(*extra: str) -> str:
    """`<CPU>, <n> cores, Python <version>` followed by `extra` parts, comma separated."""
    return ", ".join([f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}", *extra])
