"""From model outputs to faces: an image staged for the models, output validation, per-face merging.

`EmotionClient` and `AsyncEmotionClient` share these steps; only how the requests are sent differs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from . import spec
from .detection import Detection
from .errors import ServerError
from .preprocess import CropTransform
from .result import Face, Prediction
from .transport import ModelRef


@dataclass
class StagedImage:
    """One image between preprocessing and inference."""

    image: np.ndarray
    source: str | None
    detections: list[Detection]
    kp_batch: np.ndarray
    em_batch: np.ndarray
    kp_transforms: list[CropTransform]
    t_start: float
    timings: dict[str, float]
    faces: list[Face] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)

    def prediction(self) -> Prediction:
        timings = dict(self.timings)
        timings["total"] = (time.perf_counter() - self.t_start) * 1e3
        h, w = self.image.shape[:2]
        return Prediction(
            faces=self.faces,
            image_size=(w, h),
            timings_ms=timings,
            source=self.source,
            image=self.image,
            models=dict(self.models),
        )


def _pick_output(outputs: dict[str, np.ndarray], key: str, ref: ModelRef) -> np.ndarray:
    if key in outputs:
        return outputs[key]
    if key != spec.CLASSES_OUTPUT_KEY and len(outputs) == 1:
        return next(iter(outputs.values()))  # REST omits the name of a signature's only output
    raise ServerError(f"{ref.describe()} returned outputs {sorted(outputs)}, expected {key!r}")


def model_batches(staged: list[StagedImage]) -> tuple[list[StagedImage], np.ndarray, np.ndarray] | None:
    """(images with faces, keypoints-model batch, emotion-model batch) for one request per model, or
    None when no image has a face; every image's model timings start at 0."""
    for s in staged:
        s.timings.setdefault("keypoints", 0.0)
        s.timings.setdefault("emotion", 0.0)
    with_faces = [s for s in staged if s.detections]
    if not with_faces:
        return None
    return (with_faces, np.concatenate([s.kp_batch for s in with_faces]),
            np.concatenate([s.em_batch for s in with_faces]))


def assign_faces(with_faces: list[StagedImage], keypoints: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                 *, t_kp: float, t_em: float, models: Mapping[str, ModelRef]) -> None:
    """Split the model outputs for `model_batches` back over its images as `Face`s (`merge_faces`);
    `models` ("keypoints"/"emotion" -> the `ModelRef` that answered) names them in each image's result."""
    names = {task: ref.name for task, ref in models.items()}
    start = 0
    for s in with_faces:
        n = len(s.detections)
        s.faces = merge_faces(s.detections, s.kp_transforms, keypoints[start : start + n],
                              scores[start : start + n], classes[start : start + n])
        s.timings["keypoints"] = t_kp
        s.timings["emotion"] = t_em
        s.models = dict(names)
        start += n


def face_chunks(batch: np.ndarray, step: int) -> list[np.ndarray]:
    """`batch` split into requests of at most `step` faces (`max_faces_per_request`)."""
    return [batch[i : i + step] for i in range(0, len(batch), step)]


def keypoints_output(outputs: dict[str, np.ndarray], ref: ModelRef, n: int) -> np.ndarray:
    """The [n, 15, 2] keypoints of a keypoints-model reply, or ServerError."""
    kp = _pick_output(outputs, spec.KEYPOINTS_OUTPUT_KEY, ref)
    try:
        return np.asarray(kp, dtype=np.float64).reshape(n, len(spec.KEYPOINT_NAMES), 2)
    except ValueError as exc:
        raise ServerError(
            f"{ref.describe()} returned keypoints of shape {np.shape(kp)}, expected "
            f"[{n}, {len(spec.KEYPOINT_NAMES)}, 2]"
        ) from exc


def emotion_output(outputs: dict[str, np.ndarray], ref: ModelRef, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores [n, K], classes [n, K]) of an emotion-model reply, or ServerError."""
    scores = np.asarray(_pick_output(outputs, spec.SCORES_OUTPUT_KEY, ref), dtype=np.float64)
    classes = np.asarray(_pick_output(outputs, spec.CLASSES_OUTPUT_KEY, ref))
    return check_emotion_outputs(scores, classes, n, ref)


def check_emotion_outputs(
    scores: np.ndarray, classes: np.ndarray, n: int, ref: ModelRef
) -> tuple[np.ndarray, np.ndarray]:
    """Validate `scores` [n, K] and `classes` [n, K] (or [K], shared by all rows) and align them."""
    if scores.ndim != 2 or scores.shape[0] != n:
        raise ServerError(
            f"{ref.describe()} returned scores of shape {scores.shape}, expected [{n}, K]"
        )
    if classes.ndim == 1:
        classes = np.broadcast_to(classes, scores.shape)
    if classes.shape != scores.shape:
        raise ServerError(
            f"{ref.describe()} returned classes of shape {classes.shape} "
            f"for scores of shape {scores.shape}"
        )
    return scores, classes.astype(str)


def merge_faces(
    detections: list[Detection],
    kp_transforms: list[CropTransform],
    keypoints: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
) -> list[Face]:
    """Combine detector boxes, model-space keypoints and class scores into `Face`s.

    `keypoints` is [n, 15, 2] in keypoints-model pixels; it is mapped back to the original image
    through each face's crop transform. `classes[i]` names the columns of `scores[i]`.
    """
    faces = []
    for i, det in enumerate(detections):
        pts = kp_transforms[i].to_original(keypoints[i])
        kp = {
            name: (float(x), float(y))
            for name, (x, y) in zip(spec.KEYPOINT_NAMES, pts, strict=True)
        }
        labels = [str(c) for c in classes[i]]
        probs = {label: float(p) for label, p in zip(labels, scores[i], strict=True)}
        top = labels[int(np.nanargmax(scores[i]))] if np.isfinite(scores[i]).any() else labels[0]
        faces.append(
            Face(
                box=tuple(float(v) for v in det.box),  # type: ignore[arg-type]
                detection_score=float(det.score),
                keypoints=kp,
                emotion=top,
                scores=probs,
            )
        )
    return faces
