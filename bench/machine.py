"""Machine information stamped on every benchmark result (CPU model, its relevant flags, cores, library
versions, and `ONEDNN_MAX_CPU_ISA` when set: oneDNN's switch that hides AVX-512/AMX, e.g. `=AVX2`)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

#: CPU flags that decide which kernels oneDNN (TensorFlow's CPU backend) can use.
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The `RELEVANT_FLAGS` this CPU has (from /proc/cpuinfo; empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in RELEVANT_FLAGS if f in have]
    except OSError:
        pass
    return []


def onednn_isa() -> str:
    """The instruction set oneDNN reports using for TensorFlow's kernels here (`ONEDNN_VERBOSE=1` on one small
    convolution in a subprocess, under this environment's `ONEDNN_MAX_CPU_ISA`), or "unknown"."""
    probe = ("import tensorflow as tf; tf.nn.conv2d(tf.ones([1, 8, 8, 4]), tf.ones([3, 3, 4, 4]), 1, 'SAME')")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False,
                         env=dict(os.environ, ONEDNN_VERBOSE="1", TF_CPP_MIN_LOG_LEVEL="2"))
    found = re.search(r"onednn_verbose,.*?isa:([^\n]+)", run.stdout + run.stderr)
    return found.group(1).strip() if found else "unknown"


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
    flags = cpu_flags()
    isa_cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    summary = (
        f"{cpu_model()} ({' '.join(flags) or 'flags unknown'}"
        f"{f'; ONEDNN_MAX_CPU_ISA={isa_cap}' if isa_cap else ''}), {usable} cores, "
        f"{platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, TF {versions['tensorflow']}, "
        f"load avg at start {load[0] if load else 'n/a'}"
    )
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": flags,
        "onednn_max_cpu_isa": isa_cap or None,
        "cores": usable,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_avg_at_start": load,
        "versions": versions,
        "summary": summary,
    }
