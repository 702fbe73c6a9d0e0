"""The two halves of a prediction that every client runs: load -> detect -> stage faces (`FaceStager`), then
one request per model over a transport -> merge per face (`ModelRunner`).

`EmotionClient` and `FaceStream` run a `FacePipeline` (both halves); `AsyncEmotionClient` stages with a
`FaceStager` and sends the requests over its async transport (the merging steps are in `merge`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from . import spec
from .allocator import keep_freed_memory
from .detect import crops_for, make_detector
from .detection import Detection, FaceDetector
from .images import ColorOrder, ImageInput, load_image
from .merge import StagedImage, assign_faces, emotion_output, face_chunks, keypoints_output, model_batches
from .options import ClientOptions
from .preprocess import level_angle, model_inputs, to_gray
from .transport import ModelRef, Transport

T = TypeVar("T")


class FaceStager:
    """The first half of a prediction, without a server: decode an image, detect its faces and crop them
    for both models (the crop geometry calibrated for the detector unless `options` overrides it).
    Thread-safe when the detector is.

    Args:
        options: the client's options (`max_pixels`, `level_faces`, crop overrides).
        detector: a detector name or object, as `emotion_ai.detect.make_detector` takes.

    Raises:
        ValueError, TypeError, FileNotFoundError: an unusable `detector` (see `make_detector`).
    """

    def __init__(self, options: ClientOptions, detector: str | FaceDetector | None = None) -> None:
        self.options = options
        if options.keep_freed_memory:
            keep_freed_memory()
        self.detector: FaceDetector = make_detector(detector)
        crops = crops_for(self.detector)
        self.keypoints_crop: spec.CropGeometry = options.keypoints_crop or crops.keypoints
        self.emotion_crop: spec.CropGeometry = options.emotion_crop or crops.emotion

    def load(self, image: ImageInput, color: ColorOrder = "bgr") -> np.ndarray:
        """Decode `image` into a BGR array.

        Args:
            image: a path, the bytes of an encoded image, or a numpy array.
            color: "bgr" or "rgb", the channel order of an array.

        Returns:
            The BGR image.

        Raises:
            InvalidImageError: the image cannot be read or has more than `options.max_pixels` pixels.
        """
        return load_image(image, color=color, max_pixels=self.options.max_pixels)

    def stage(self, image: ImageInput, color: ColorOrder = "bgr") -> StagedImage:
        """Decode `image`, detect its faces and crop them for the models, timing each step.

        Args:
            image: a path, the bytes of an encoded image, or a numpy array.
            color: "bgr" or "rgb", the channel order of an array.

        Returns:
            The image with its faces' model inputs and its "decode", "detect" and "preprocess" timings.

        Raises:
            InvalidImageError: the image cannot be read or is too large.
        """
        t0 = time.perf_counter()
        bgr = self.load(image, color)
        t1 = time.perf_counter()
        detections = self.detect(bgr)
        t2 = time.perf_counter()
        source = str(image) if isinstance(image, str) or hasattr(image, "__fspath__") else None
        timings = {"decode": (t1 - t0) * 1e3, "detect": (t2 - t1) * 1e3}
        return self.stage_faces(bgr, detections, source=source, t_start=t0, timings=timings)

    def detect(self, bgr: np.ndarray) -> list[Detection]:
        """The detector's faces in `bgr`, left to right.

        Args:
            bgr: the image.

        Returns:
            The detections, sorted by box position.
        """
        return sorted(self.detector.detect(bgr), key=lambda d: (d.box[0], d.box[1]))

    def stage_faces(self, bgr: np.ndarray, detections: list[Detection], *, source: str | None,
                    t_start: float, timings: dict[str, float]) -> StagedImage:
        """Model inputs for faces already located in `bgr` (by the detector, or by tracking).

        Args:
            bgr: the image.
            detections: the faces to crop, in the order their results should have.
            source: the image's path, if it came from one.
            t_start: `time.perf_counter()` when work on the image began (for its "total" timing).
            timings: the image's timings so far; "preprocess" is added to it.

        Returns:
            The image with both models' input batches and the keypoints crops' transforms.
        """
        t = time.perf_counter()
        boxes = [d.box for d in detections]
        gray = to_gray(bgr)
        angles = [level_angle(d.landmarks) for d in detections] if self.options.level_faces else None
        kp_batch, kp_tf = model_inputs(gray, boxes, self.keypoints_crop, spec.KEYPOINTS_INPUT_SIZE, angles)
        em_batch, _ = model_inputs(gray, boxes, self.emotion_crop, spec.EMOTION_INPUT_SIZE, angles)
        timings["preprocess"] = (time.perf_counter() - t) * 1e3
        return StagedImage(image=bgr, source=source, detections=detections, kp_batch=kp_batch, em_batch=em_batch,
                           kp_transforms=kp_tf, t_start=t_start, timings=timings)


class ModelRunner:
    """The second half of a prediction: one keypoints and one emotion request (run concurrently, in worker
    threads) over a sync `Transport` for the faces of staged images, merged into their faces.

    `transport` may be replaced between calls; it belongs to the caller (`close` leaves it open).

    Args:
        transport: how the requests are sent.
        models: "keypoints" and "emotion" -> the served model to call.
        options: the client's options (`timeout`, `max_faces_per_request`).
    """

    def __init__(self, transport: Transport, models: Mapping[str, ModelRef], options: ClientOptions) -> None:
        self.transport = transport
        self.models = models
        self.options = options
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="emotion-ai")

    def close(self) -> None:
        """Stop the worker threads (not the transport)."""
        self._pool.shutdown(wait=True)

    def infer(self, staged: list[StagedImage]) -> None:
        """Ask both models about all faces of `staged` and store each image's faces, timings and models.

        Args:
            staged: the images (those without faces get zero model timings and no request).

        Raises:
            EmotionAIError: the server errors of `emotion_ai.errors`.
        """
        batches = model_batches(staged)
        if batches is None:
            return
        with_faces, kp_in, em_in = batches
        kp_future = self._pool.submit(_timed, self._run_keypoints, kp_in)
        em_future = self._pool.submit(_timed, self._run_emotion, em_in)
        keypoints, t_kp = kp_future.result()
        (scores, classes), t_em = em_future.result()
        assign_faces(with_faces, keypoints, scores, classes, t_kp=t_kp, t_em=t_em, models=self.models)

    def _run_keypoints(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) > self.options.max_faces_per_request:
            chunks = face_chunks(batch, self.options.max_faces_per_request)
            return np.concatenate([self._run_keypoints(c) for c in chunks])
        ref = self.models["keypoints"]
        outputs = self.transport.predict(ref, {spec.INPUT_KEY: batch}, self.options.timeout)
        return keypoints_output(outputs, ref, batch.shape[0])

    def _run_emotion(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(batch) > self.options.max_faces_per_request:
            parts = [self._run_emotion(c) for c in face_chunks(batch, self.options.max_faces_per_request)]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        ref = self.models["emotion"]
        outputs = self.transport.predict(ref, {spec.INPUT_KEY: batch}, self.options.timeout)
        return emotion_output(outputs, ref, batch.shape[0])


@dataclass(frozen=True)
class FacePipeline:
    """Both halves of a prediction over a sync transport: what `EmotionClient` and `FaceStream` run."""

    stager: FaceStager
    runner: ModelRunner


def _timed(fn: Callable[[np.ndarray], T], batch: np.ndarray) -> tuple[T, float]:
    t = time.perf_counter()
    out = fn(batch)
    return out, (time.perf_counter() - t) * 1e3
