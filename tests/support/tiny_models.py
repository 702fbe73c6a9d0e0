"""Tiny, randomly initialised models exported exactly like the real ones (the serving contract of spec.py).

For tests (`from ..support.tiny_models import make_export_tree`) and for benchmark runs without a trained
export (bench/tiny_models.py loads this file by path). Only absolute imports here, so it loads either way.
"""

from __future__ import annotations

from pathlib import Path

import keras
from emotion_ai.spec import EMOTION_LABELS, KEYPOINTS_MODEL, MODEL_VARIANTS, model_name
from emotion_ai_training.export import export_model
from emotion_ai_training.models import TINY_RESNET, build_emotion_model, build_keypoints_model


def _export_tiny(task: str, name: str, root: Path, version: int) -> None:
    """One tiny untrained model of `task` as root/<name>/<version>."""
    if task == KEYPOINTS_MODEL:
        export_model(build_keypoints_model(TINY_RESNET), task, root / name, version=version,
                     card={"note": "tiny untrained test model"})
    else:
        export_model(build_emotion_model(len(EMOTION_LABELS), TINY_RESNET), task, root / name, version=version,
                     labels=EMOTION_LABELS, card={"note": "tiny untrained test model"})


def make_export_tree(root: str | Path, versions: tuple[int, ...] = (1,), seed: int = 0) -> Path:
    """Write root/<model>/<v> SavedModels (tiny, untrained, contract-exact) for every served model
    (`spec.MODEL_VARIANTS`: keypoints, emotion and emotion_accurate, each variant differently seeded), so
    serving/models.config serves the tree as it serves models_export/."""
    root = Path(root)
    keras.mixed_precision.set_global_policy("float32")
    for v in versions:
        keras.utils.set_random_seed(seed + v)
        for task in MODEL_VARIANTS:
            _export_tiny(task, model_name(task), root, v)
        for task, variants in MODEL_VARIANTS.items():
            for rung, variant in enumerate(variants[1:], start=1):
                keras.utils.set_random_seed(seed + v + 1000 * rung)
                _export_tiny(task, model_name(task, variant), root, v)
    return root
