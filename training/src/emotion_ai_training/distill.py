"""Knowledge distillation: teachers, their cached outputs and the distillation loss.

A teacher is one or more exported SavedModels (any views or ensemble inside their graph) or `.keras`
checkpoints; several are averaged. Teachers run offline, once per training set: their outputs on
the un-augmented training images are cached under `cache_dir/teacher/`, one file per teacher (keyed by its
files and the images themselves), and reused by every epoch and every run that uses that teacher. The emotion
teachers shipped here average the mirror image, so their output is already the one of a flipped copy.

- emotion: targets are `[one-hot label ‖ teacher probabilities]`; `DistillationLoss` is
  α·T²·KL(teacher_T ∥ student_T) + (1 − α)·cross-entropy(label), both softened at temperature T.
- keypoints: the teacher's points fill missing labels, and `α` mixes teacher and label where both exist
  (targets then go through the same augmentation as labels, so points stay consistent).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from emotion_ai.spec import INPUT_KEY, KEYPOINTS_OUTPUT_KEY, SCORES_OUTPUT_KEY
from keras import ops

from emotion_ai_training.config import DISTILL_ALPHA, DISTILL_TEMPERATURE

log = logging.getLogger(__name__)

TEACHER_BATCH = 256
_EPS = 1e-7


def _teacher_fingerprint(path: Path) -> str:
    """sha256 of the files that define a teacher (saved_model.pb + variables, or the .keras file)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file() and "assets.extra" not in p.parts) \
        if path.is_dir() else [path]
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _load_teacher(path: Path, task: str):
    """A callable float32 pixels [B, H, W, 1] (0..255) → teacher output, for a SavedModel or a .keras file."""
    if not path.exists():
        raise FileNotFoundError(f"teacher {path} does not exist")
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise FileNotFoundError(f"teacher {path}: no saved_model.pb (expected a version folder)")
        signature = tf.saved_model.load(str(path)).signatures["serving_default"]
        key = SCORES_OUTPUT_KEY if task == "emotion" else KEYPOINTS_OUTPUT_KEY

        def run(x: np.ndarray) -> np.ndarray:
            pixels = tf.constant(np.clip(np.rint(x), 0, 255).astype(np.uint8))
            return signature(**{INPUT_KEY: pixels})[key].numpy()

        return run
    model = keras.models.load_model(path, compile=False)
    return lambda x: np.asarray(model.predict(x.astype(np.float32), batch_size=TEACHER_BATCH, verbose=0))


def teacher_outputs(teachers: Sequence[str | Path], task: str, images: np.ndarray,
                    cache_dir: str | Path | None) -> np.ndarray:
    """Mean teacher output on `images` (uint8 [N, H, W]); each teacher's outputs are computed once and
    cached on their own, so adding a member to an ensemble teacher reruns only the new member."""
    paths = [Path(t) for t in teachers]
    if not paths:
        raise ValueError("no teacher given")
    return np.asarray(np.mean([teacher_output(path, task, images, cache_dir) for path in paths], axis=0,
                              dtype=np.float32))


def teacher_output(path: Path, task: str, images: np.ndarray, cache_dir: str | Path | None) -> np.ndarray:
    """One teacher's outputs on `images`, from `cache_dir/teacher/` or computed (and cached)."""
    key = hashlib.sha256(json.dumps([_teacher_fingerprint(path)]).encode())  # a list: one-teacher caches stay valid
    key.update(np.ascontiguousarray(images).tobytes())
    cache = Path(cache_dir) / "teacher" / f"{task}-{key.hexdigest()[:16]}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            log.info("teacher %s outputs from %s (%d images)", path, cache, len(z["outputs"]))
            return z["outputs"]
    t0 = time.perf_counter()
    run = _load_teacher(path, task)
    outputs = np.concatenate([run(images[i:i + TEACHER_BATCH, ..., None].astype(np.float32))
                              for i in range(0, len(images), TEACHER_BATCH)]).astype(np.float32)
    seconds = time.perf_counter() - t0
    log.info("teacher %s outputs for %d images in %.0f s (%.1f images/s)", path, len(images), seconds,
             len(images) / max(seconds, 1e-9))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.stem + ".tmp.npz")
        np.savez(tmp, outputs=outputs, teacher=str(path), seconds=seconds)
        tmp.replace(cache)
    return outputs


def keypoint_targets(labels: np.ndarray, teacher: np.ndarray, alpha: float) -> np.ndarray:
    """Teacher points where a label is missing (NaN); α·teacher + (1 − α)·label where both exist."""
    if labels.shape != teacher.shape:
        raise ValueError(f"teacher points {teacher.shape} do not match the labels {labels.shape}")
    mixed = alpha * teacher + (1.0 - alpha) * np.nan_to_num(labels)
    return np.where(np.isnan(labels), teacher, mixed).astype(np.float32)


@keras.saving.register_keras_serializable("emotion_ai")
class DistillationLoss(keras.losses.Loss):
    """α·T²·KL(teacher_T ∥ student_T) + (1 − α)·CE(label, student) on targets [label ‖ teacher] of width 2K.

    The model outputs probabilities; softening at T is softmax(log p / T), the same as softening the logits.
    """

    def __init__(self, alpha: float = DISTILL_ALPHA["emotion"], temperature: float = DISTILL_TEMPERATURE,
                 label_smoothing: float = 0.0,
                 name: str = "distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha, self.temperature, self.label_smoothing = alpha, temperature, label_smoothing

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        k = ops.shape(y_pred)[-1]
        labels, teacher = ops.cast(y_true[:, :k], "float32"), ops.cast(y_true[:, k:], "float32")
        ce = keras.losses.categorical_crossentropy(labels, y_pred, label_smoothing=self.label_smoothing)
        t = self.temperature
        log_student = ops.log_softmax(ops.log(ops.clip(y_pred, _EPS, 1.0)) / t, axis=-1)
        log_teacher = ops.log_softmax(ops.log(ops.clip(teacher, _EPS, 1.0)) / t, axis=-1)
        kl = ops.sum(ops.exp(log_teacher) * (log_teacher - log_student), axis=-1)
        return self.alpha * t * t * kl + (1.0 - self.alpha) * ce

    def get_config(self):
        return super().get_config() | {"alpha": self.alpha, "temperature": self.temperature,
                                       "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable("emotion_ai")
class LabelAccuracy(keras.metrics.Metric):
    """Accuracy against the label half of [label ‖ teacher] targets (plain one-hot targets work too)."""

    def __init__(self, name: str = "accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.right = self.add_variable((), initializer="zeros", name="right")
        self.count = self.add_variable((), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        k = ops.shape(y_pred)[-1]
        hit = ops.cast(ops.argmax(y_true[:, :k], axis=-1) == ops.argmax(y_pred, axis=-1), "float32")
        self.right.assign_add(ops.sum(hit))
        self.count.assign_add(ops.cast(ops.shape(hit)[0], "float32"))

    def result(self):
        return self.right / ops.maximum(self.count, 1.0)
