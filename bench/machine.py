"""Machine information stamped on every benchmark result (CPU model, cores, library versions)."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict:
    cores = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    versions = {
        d: _version(d)
        for d in ("tensorflow", "numpy", "opencv-python-headless", "grpcio", "emotion-ai")
    }
    summary = (
        f"{cpu_model()}, {usable} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, TF {versions['tensorflow']}, "
        f"load avg at start {load[0] if load else 'n/a'}"
    )
    return {
        "cpu_model": cpu_model(),
        "cores": usable,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_avg_at_start": load,
        "versions": versions,
        "summary": summary,
    }
