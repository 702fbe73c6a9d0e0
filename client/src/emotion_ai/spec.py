"""The one definition of labels, keypoint names, flip pairs, input sizes and crop geometry.

Training, export, the server tests and the client all import these names from here, so the
numbers a model was trained with are the numbers the client preprocesses with.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Literal, get_args

#: FER-2013 labels 0..6, in dataset order (the order of the emotion model's `classes` output).
EMOTION_LABELS: tuple[str, ...] = (
    "angry",
    "disgust",
    "fear",
    "happy",
    "sad",
    "surprise",
    "neutral",
)
#: The 5-class subset also reported (anger, disgust, sad, happy, surprise), in canonical order.
EMOTION_LABELS_5: tuple[str, ...] = ("angry", "disgust", "happy", "sad", "surprise")

#: The 15 Kaggle Facial Keypoints, in the dataset's column order. "Left" is the subject's left.
KEYPOINT_NAMES: tuple[str, ...] = (
    "left_eye_center",
    "right_eye_center",
    "left_eye_inner_corner",
    "left_eye_outer_corner",
    "right_eye_inner_corner",
    "right_eye_outer_corner",
    "left_eyebrow_inner_end",
    "left_eyebrow_outer_end",
    "right_eyebrow_inner_end",
    "right_eyebrow_outer_end",
    "nose_tip",
    "mouth_left_corner",
    "mouth_right_corner",
    "mouth_center_top_lip",
    "mouth_center_bottom_lip",
)
#: CSV columns: `<name>_x, <name>_y` for each keypoint, in order.
KEYPOINT_COLUMNS: tuple[str, ...] = tuple(f"{n}_{a}" for n in KEYPOINT_NAMES for a in ("x", "y"))


def _flip_permutation() -> tuple[int, ...]:
    """Index permutation that swaps every left_* point with its right_* twin."""
    index = {name: i for i, name in enumerate(KEYPOINT_NAMES)}
    perm = []
    for name in KEYPOINT_NAMES:
        if name.startswith("left_"):
            twin = "right_" + name[len("left_") :]
        elif name.startswith("right_"):
            twin = "left_" + name[len("right_") :]
        elif name == "mouth_left_corner":
            twin = "mouth_right_corner"
        elif name == "mouth_right_corner":
            twin = "mouth_left_corner"
        else:
            twin = name
        perm.append(index[twin])
    return tuple(perm)


#: After a horizontal flip, new point i is old point FLIP_PERMUTATION[i].
FLIP_PERMUTATION: tuple[int, ...] = _flip_permutation()
#: The left/right pairs (by name) that a horizontal flip swaps.
FLIP_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (KEYPOINT_NAMES[i], KEYPOINT_NAMES[j]) for i, j in enumerate(FLIP_PERMUTATION) if i < j
)

KEYPOINTS_INPUT_SIZE = 96
EMOTION_INPUT_SIZE = 48

#: Served model names and their signature's tensor names (the export contract).
KEYPOINTS_MODEL = "keypoints"
EMOTION_MODEL = "emotion"

#: The model ladder: each task is served as a fast default under the task's own name and, where one
#: pays, as further variants named `<task>_<variant>` (`model_name`), each a model with its own versions.
Variant = Literal["fast", "accurate"]
FAST: Variant = "fast"
ACCURATE: Variant = "accurate"
VARIANTS: tuple[str, ...] = get_args(Variant)
#: The variants served for each task (what models.config lists); a task without "accurate" answers an
#: accurate request with its fast model. Adding "accurate" to keypoints (and `keypoints_accurate` to the
#: configs) is all a keypoints ladder needs.
MODEL_VARIANTS: dict[str, tuple[str, ...]] = {
    KEYPOINTS_MODEL: (FAST,),
    EMOTION_MODEL: (FAST, ACCURATE),
}


def model_name(task: str, variant: str = FAST) -> str:
    """The served model name of `task`'s `variant`: the task name itself for "fast", else `<task>_<variant>`.

    Args:
        task: "keypoints" or "emotion" (a key of `MODEL_VARIANTS`).
        variant: one of `VARIANTS`.

    Returns:
        The model name, e.g. "emotion" or "emotion_accurate".

    Raises:
        ValueError: for an unknown task or variant.
    """
    if task not in MODEL_VARIANTS:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(MODEL_VARIANTS)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown model variant {variant!r}; use one of {', '.join(VARIANTS)}")
    return task if variant == FAST else f"{task}_{variant}"


def served_model(task: str, variant: str = FAST) -> str:
    """The model that answers `task` for `variant`: `model_name(task, variant)` when that variant is
    served (`MODEL_VARIANTS`), else the task's fast model.

    Raises:
        ValueError: for an unknown task or variant.
    """
    name = model_name(task, variant)
    return name if variant in MODEL_VARIANTS[task] else task


#: Every served model name, in config order: "keypoints", "emotion", "emotion_accurate".
SERVED_MODELS: tuple[str, ...] = tuple(model_name(t, v) for t, vs in MODEL_VARIANTS.items() for v in vs)
SIGNATURE_NAME = "serving_default"
#: What an exported version says of itself (training, metrics, types), beside its saved_model.pb.
MODEL_CARD = "model_card.json"
INPUT_KEY = "image"
KEYPOINTS_OUTPUT_KEY = "keypoints"
SCORES_OUTPUT_KEY = "scores"
CLASSES_OUTPUT_KEY = "classes"

#: The served int8 models' convolutions are oneDNN kernels, which TensorFlow (and TF Serving) runs only with
#: oneDNN on; on Linux it turns oneDNN on by itself only on CPUs with AVX512_VNNI, AVX512_BF16, AVX_VNNI or
#: AMX. Every process that loads the models sets these variables (unless already set) before TensorFlow
#: starts: the embedded server, the training CLI, Compose, Kubernetes (`use_onednn`).
ONEDNN_ENV: dict[str, str] = {"TF_ENABLE_ONEDNN_OPTS": "1"}
#: `ONEDNN_ENV` as shell assignments ("TF_ENABLE_ONEDNN_OPTS=1"), for messages and model cards.
ONEDNN_SETTING = " ".join(f"{name}={value}" for name, value in ONEDNN_ENV.items())


def use_onednn(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set `ONEDNN_ENV` in `environ` where it is unset; call it before TensorFlow is imported."""
    for name, value in ONEDNN_ENV.items():
        environ.setdefault(name, value)


# TF Serving's default ports (tensorflow_model_server --port / --rest_api_port): the client's, the
# embedded server's and the benchmarks' defaults.
GRPC_PORT = 8500
REST_PORT = 8501


@dataclass(frozen=True)
class CropGeometry:
    """How a square model crop is placed relative to a face detector's box (x, y, w, h).

    The crop is a square of side `scale * w`, centred at
    (x + w/2 + shift_x * w, y + h/2 + shift_y * h). Parts outside the image are padded
    by edge replication.
    """

    scale: float
    shift_x: float = 0.0
    shift_y: float = 0.0

    def square(self, box: tuple[float, float, float, float]) -> tuple[float, float, float]:
        """Return (left, top, side) of the square crop for a detector box, in image pixels."""
        x, y, w, h = box
        side = self.scale * w
        cx = x + w / 2 + self.shift_x * w
        cy = y + h / 2 + self.shift_y * h
        return cx - side / 2, cy - side / 2, side


@dataclass(frozen=True)
class DetectorCrops:
    """The crop geometry of each model for one face detector's boxes."""

    keypoints: CropGeometry
    emotion: CropGeometry


#: Crop geometry per detector (`detect.FaceDetector.name`), calibrated on the training frames themselves
#: (`emotion-ai-train calibrate-crop keypoints|emotion --detector NAME --samples 1500`): the medians over
#: the frames in which the detector found exactly one face (counts and spread in the README).
CROPS: dict[str, DetectorCrops] = {
    "haar": DetectorCrops(
        keypoints=CropGeometry(scale=1.011, shift_x=0.0, shift_y=0.01),  # 1424/1500 frames, scale IQR 0.96-1.08
        emotion=CropGeometry(scale=1.021, shift_x=0.0, shift_y=0.0),  # 1105/1500 frames
    ),
    "mtcnn": DetectorCrops(
        keypoints=CropGeometry(scale=1.229, shift_x=0.026, shift_y=-0.002),  # 1474/1500, IQR 1.18-1.28
        emotion=CropGeometry(scale=1.249, shift_x=0.018, shift_y=0.0),  # 1270/1500, IQR 1.15-1.37
    ),
    "yunet": DetectorCrops(  # YuNet's own boxes (min_score 0.7)
        keypoints=CropGeometry(scale=1.211, shift_x=0.004, shift_y=0.008),  # 1494/1500, IQR 1.17-1.27
        emotion=CropGeometry(scale=1.306, shift_x=0.006, shift_y=0.008),  # 1357/1500, IQR 1.22-1.41
    ),
}
