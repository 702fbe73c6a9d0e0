"""Tiny untrained models for benchmark runs without a trained export.

`make_export_tree` is the tests' helper (tests/support/tiny_models.py): tests/ is not an installed package,
so it is loaded from its file here, the one place bench/ reaches into tests/.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from types import ModuleType

SOURCE = Path(__file__).resolve().parents[1] / "tests" / "support" / "tiny_models.py"


@cache
def _support() -> ModuleType:
    spec = importlib.util.spec_from_file_location("emotion_ai_tests_tiny_models", SOURCE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {SOURCE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_export_tree(root: str | Path, versions: tuple[int, ...] = (1,), seed: int = 0) -> Path:
    """Write root/<model>/<v> for every served model (keypoints, emotion, emotion_accurate): tiny, untrained,
    contract-exact SavedModels."""
    return _support().make_export_tree(root, versions, seed)
