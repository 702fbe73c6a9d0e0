"""An unloaded version's batch queue is closed (threads end, model memory freed) once nothing uses it."""

from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path

import numpy as np
from emotion_ai import spec
from emotion_ai_serving.config import BatchingSettings
from emotion_ai_serving.model_registry import ModelRegistry
from emotion_ai_serving.prediction import PredictionCore
from emotion_ai_serving.servable import Servable


def _batch_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"batch-{name}-")]


def test_dropping_a_servable_closes_its_batch_queue(export_tree: Path) -> None:
    core = PredictionCore(ModelRegistry(), BatchingSettings(num_batch_threads=2))
    servable = Servable(spec.EMOTION_MODEL, 1, export_tree / spec.EMOTION_MODEL / "1")
    signature = servable.signature(spec.SIGNATURE_NAME)
    image = np.zeros((2, spec.EMOTION_INPUT_SIZE, spec.EMOTION_INPUT_SIZE, 1), np.uint8)
    out = core.run(servable, signature, {spec.INPUT_KEY: image}, [spec.SCORES_OUTPUT_KEY], timeout_s=30)
    np.testing.assert_allclose(out[spec.SCORES_OUTPUT_KEY].sum(axis=1), 1.0, atol=1e-5)
    name = f"{spec.EMOTION_MODEL}-1"
    assert len(_batch_threads(name)) == 2

    gone = weakref.ref(servable)
    del servable, signature
    gc.collect()
    assert gone() is None, "the batch queue keeps the unloaded servable alive"
    for thread in _batch_threads(name):
        thread.join(timeout=5)
    assert _batch_threads(name) == []
