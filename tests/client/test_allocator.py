"""`ClientOptions.keep_freed_memory`: a staged image no longer faults its buffers in again (glibc)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
from emotion_ai.allocator import keep_freed_memory

# A fresh process per setting: the malloc settings are process-wide and cannot be undone.
PROBE = """
import resource, sys
import cv2, numpy as np
from emotion_ai.yunet import YuNetFaceDetector
from emotion_ai.options import ClientOptions
from emotion_ai.pipeline import FaceStager
image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
jpeg = cv2.imencode(".jpg", cv2.GaussianBlur(image, (9, 9), 3))[1].tobytes()
# YuNet alone: loading O-Net for its second opinion happens to raise glibc's dynamic mmap threshold, which
# spares this process the faults; the setting is for every process, whatever its allocation history.
stager = FaceStager(ClientOptions(keep_freed_memory=sys.argv[1] == "1"), YuNetFaceDetector(verify_score=None))
for _ in range(3):
    stager.stage(jpeg)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    stager.stage(jpeg)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings exist only in glibc")


def _faults_per_image(keep: bool) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, "1" if keep else "0"], capture_output=True, text=True,
                         timeout=120, check=True)
    return float(out.stdout.strip().splitlines()[-1])


@glibc
def test_a_staged_640x480_photo_stops_faulting_its_buffers_in_again() -> None:
    default, kept = _faults_per_image(False), _faults_per_image(True)
    # glibc's defaults: ~3,700 minor faults per 640x480 photo (decode + YuNet's blobs); kept: next to none.
    assert default > 1000, default
    assert kept < 50, kept


@glibc
def test_keep_freed_memory_reports_that_it_took_effect() -> None:
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # once per process; a second call answers the same
