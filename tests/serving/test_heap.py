"""Loaded model versions are frozen out of the garbage collector's full collections; unloaded ones are freed."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

from emotion_ai_serving.config import ModelEntry, ServerOptions
from emotion_ai_serving.model_registry import AVAILABLE, END, ModelRegistry
from emotion_ai_serving.version_watcher import VersionWatcher

from .conftest import make_export_tree


def test_a_load_freezes_the_heap_and_an_unload_frees_the_version(tmp_path: Path) -> None:
    root = make_export_tree(tmp_path / "models")
    registry = ModelRegistry()
    registry.set_models([ModelEntry("emotion", root / "emotion")], allow_unavailable_labels=False)
    watcher = VersionWatcher(registry, ServerOptions(enable_model_warmup=False))
    gc.unfreeze()
    gc.collect()
    scanned_before = len(gc.get_objects())  # what a full collection walks
    try:
        watcher._load("emotion", 1, root / "emotion" / "1", (), 1)
        state = registry.version_state("emotion", 1)
        assert state.state == AVAILABLE
        servable = weakref.ref(state.servable)
        # The model's objects (and everything before them) sit in the permanent generation now.
        assert gc.get_freeze_count() > scanned_before
        assert len(gc.get_objects()) < scanned_before / 10
        watcher._unload("emotion", 1)
        assert registry.version_state("emotion", 1).state == END
        assert servable() is None  # collected, although it had been frozen
    finally:
        gc.unfreeze()
