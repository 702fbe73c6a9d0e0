"""Tiny, randomly initialised models exported exactly like the real ones (the serving contract of spec.py).

For tests (`from ..support.tiny_models import make_export_tree`) and for benchmark runs without a trained
export (bench/tiny_models.py loads this file by path). Only absolute imports here, so it loads either way.
"""

from __future__ import annotations

from pathlib import Path

import keras
from emotion_ai.spec import EMOTION_LABELS, EMOTION_MODEL, KEYPOINTS_MODEL
from emotion_ai_training.export import export_model
from emotion_ai_training.models import TINY_RESNET, build_emotion_model, build_keypoints_model


def make_export_tree(root: str | Path, versions: tuple[int, ...] = (1,), seed: int = 0) -> Path:
    """Write root/keypoints/<v> and root/emotion/<v> SavedModels (tiny, untrained, contract-exact)."""
    root = Path(root)
    keras.mixed_precision.set_global_policy("float32")
    for v in versions:
        keras.utils.set_random_seed(seed + v)
        export_model(build_keypoints_model(TINY_RESNET), KEYPOINTS_MODEL, root / KEYPOINTS_MODEL, version=v,
                     card={"note": "tiny untrained test model"})
        export_model(build_emotion_model(len(EMOTION_LABELS), TINY_RESNET), EMOTION_MODEL, root / EMOTION_MODEL,
                     version=v, labels=EMOTION_LABELS, card={"note": "tiny untrained test model"})
    return root
