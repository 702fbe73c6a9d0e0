"""`EmotionClient`: detect faces, crop them, ask both served models, merge the answers per face."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from . import spec
from .balancer import BalancedTransport
from .detect import Detection, FaceDetector, crops_for, make_detector
from .errors import EmotionAIError, ServerError, ServerUnavailableError
from .grpc_transport import GrpcTransport
from .images import ColorOrder, ImageInput, load_image
from .options import ClientOptions, ModelOption, Protocol_
from .preprocess import CropTransform, model_inputs, to_gray
from .rest_transport import RestTransport
from .result import Face, Prediction
from .streaming import FaceStream, StreamOptions
from .transport import ModelRef, RetryPolicy, SignatureInfo, Transport, VersionStatus, all_available


class EmotionClient:
    """Face keypoints and facial expression for images, served by TF Serving (gRPC or REST).

    Example:
        with EmotionClient(protocol="grpc") as client:
            for face in client.predict("photo.jpg").faces:
                print(face.box, face.emotion, face.keypoints["left_eye_center"])

    Keyword arguments are the fields of `ClientOptions` (defaults there); pass `options=` instead to
    reuse one (`EmotionClient.from_options`), never both. `detector` is a name ("mtcnn", the default,
    "haar", "yunet:PATH") or any object with `detect(image)` (see `emotion_ai.detect`).
    """

    def __init__(
        self,
        host: str | None = None,
        *,
        protocol: Protocol_ | None = None,
        grpc_port: int | None = None,
        rest_port: int | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        models: Mapping[str, ModelOption] | None = None,
        detector: str | FaceDetector | None = None,
        options: ClientOptions | None = None,
        transport: Transport | None = None,
        **more_options: Any,
    ):
        given = {k: v for k, v in {"host": host, "protocol": protocol, "grpc_port": grpc_port,
                                   "rest_port": rest_port, "timeout": timeout, "retries": retries,
                                   "models": models}.items() if v is not None} | more_options
        if options is not None and given:
            raise TypeError(f"EmotionClient takes options= or keyword options, not both (got options= and "
                            f"{', '.join(sorted(given))})")
        if options is None:
            options = ClientOptions(**given)
        self.options = options
        self.models: dict[str, ModelRef] = dict(options.models)  # type: ignore[arg-type]
        self.detector: FaceDetector = make_detector(detector)
        crops = crops_for(self.detector)
        self.keypoints_crop = options.keypoints_crop or crops.keypoints
        self.emotion_crop = options.emotion_crop or crops.emotion
        policy = RetryPolicy(retries=options.retries, backoff=options.backoff)
        self.transport: Transport
        if transport is not None:  # e.g. an in-process or test transport instead of a server
            self.transport = transport
        elif len(options.endpoints) > 1:
            single = RetryPolicy(retries=0)  # the balancer retries, on the other endpoints first
            self.transport = BalancedTransport(
                [self._transport(e, single) for e in options.endpoints], options.endpoints, policy=policy)
        else:
            default = f"{options.host}:{options.grpc_port if options.protocol == 'grpc' else options.rest_port}"
            self.transport = self._transport((options.endpoints or (default,))[0], policy)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="emotion-ai")

    def _transport(self, endpoint: str, policy: RetryPolicy) -> Transport:
        """The transport of `options.protocol` to one endpoint (`host:port`, or a gRPC `dns:` target)."""
        if self.options.protocol == "grpc":
            return GrpcTransport(endpoint, policy=policy, max_message_bytes=self.options.max_message_bytes)
        host, port = endpoint.rsplit(":", 1)
        return RestTransport(host.strip("[]"), int(port), policy=policy)

    @classmethod
    def from_options(cls, options: ClientOptions, *, detector: str | FaceDetector | None = None,
                     transport: Transport | None = None) -> EmotionClient:
        """A client configured by a `ClientOptions` (e.g. one shared by several clients)."""
        return cls(options=options, detector=detector, transport=transport)

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Close connections and worker threads."""
        self._pool.shutdown(wait=True)
        self.transport.close()

    def __enter__(self) -> EmotionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- server information ----------------------------------------------------------------------
    def status(self) -> dict[str, list[VersionStatus]]:
        """Version states of both models, keyed "keypoints" / "emotion"."""
        return {
            key: self.transport.status(ref, self.options.timeout)
            for key, ref in self.models.items()
        }

    def metadata(self, key: str) -> dict[str, SignatureInfo]:
        """Signature definitions of the "keypoints" or "emotion" model."""
        return self.transport.metadata(self.models[key], self.options.timeout)

    def wait_until_available(self, timeout: float = 30.0, interval: float = 0.2) -> None:
        """Block until both models report a version AVAILABLE, or raise ServerUnavailableError."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                states = self.status()
                if all_available(states):
                    return
                last = str(states)
            except EmotionAIError as exc:
                last = str(exc)
            if time.monotonic() + interval > deadline:
                raise ServerUnavailableError(f"models not AVAILABLE within {timeout:g} s: {last}")
            time.sleep(interval)

    # -- prediction ------------------------------------------------------------------------------
    def predict(self, image: ImageInput, *, color: ColorOrder = "bgr") -> Prediction:
        """Detect every face in `image` and return keypoints and expression for each.

        `image` is a path, the bytes of an encoded image, or a numpy array (BGR by default,
        `color="rgb"` for RGB; gray and 4-channel arrays work too). Raises `InvalidImageError`
        for unusable input and the server errors of `emotion_ai.errors`.
        """
        staged = self._stage(image, color)
        self._infer([staged])
        return staged.prediction()

    def predict_batch(
        self,
        images: Iterable[ImageInput],
        *,
        color: ColorOrder = "bgr",
        errors: Literal["raise", "return"] = "raise",
    ) -> list[Prediction | EmotionAIError]:
        """`predict` for many images; faces of `batch_images` images share one request per model.

        With errors="return", an image that fails (unreadable, or a server error for its faces) yields
        its exception in its place instead of stopping the batch: a group whose request fails is
        retried image by image, so one bad image does not cost the others their results.
        """
        results: list[Any] = []
        group: list[_Staged] = []
        slots: list[int] = []

        def flush() -> None:
            if not group:
                return
            try:
                self._infer(group)
                for i, st in zip(slots, group, strict=True):
                    results[i] = st.prediction()
            except EmotionAIError:
                if errors == "raise":
                    raise
                for i, st in zip(slots, group, strict=True):
                    try:
                        self._infer([st])
                        results[i] = st.prediction()
                    except EmotionAIError as exc:
                        results[i] = exc
            group.clear()
            slots.clear()

        for image in images:
            try:
                staged = self._stage(image, color)
            except EmotionAIError as exc:
                if errors == "raise":
                    raise
                results.append(exc)
                continue
            results.append(None)  # replaced once its group has run
            slots.append(len(results) - 1)
            group.append(staged)
            if len(group) >= self.options.batch_images:
                flush()
        flush()
        return results

    def stream(
        self,
        frames: Iterable[ImageInput],
        *,
        fps: float | None = None,
        options: StreamOptions | None = None,
        color: ColorOrder = "bgr",
    ) -> Iterator[Prediction]:
        """A `Prediction` per frame of a video, in order, lazily: faces carry a stable `track_id` and
        `smoothed_scores`; `Prediction.detected` says whether the detector ran on that frame.

        `frames` is any iterable of images (e.g. frames read from `cv2.VideoCapture`); it is read a few
        frames ahead in a thread. `fps` gives the frames' timestamps (index / fps) for smoothing; without
        it, arrival time is used (live streams). `options` is a `StreamOptions` (detection interval,
        smoothing time constant, occlusion tolerance).
        """
        return FaceStream(self, options, fps).run(frames, color)

    # -- internals -------------------------------------------------------------------------------
    def _stage(self, image: ImageInput, color: ColorOrder) -> _Staged:
        t0 = time.perf_counter()
        bgr = load_image(image, color=color, max_pixels=self.options.max_pixels)
        t1 = time.perf_counter()
        detections = sorted(self.detector.detect(bgr), key=lambda d: (d.box[0], d.box[1]))
        t2 = time.perf_counter()
        source = str(image) if isinstance(image, str) or hasattr(image, "__fspath__") else None
        timings = {"decode": (t1 - t0) * 1e3, "detect": (t2 - t1) * 1e3}
        return self._stage_faces(bgr, detections, source=source, t_start=t0, timings=timings)

    def _stage_faces(self, bgr: np.ndarray, detections: list[Detection], *, source: str | None,
                     t_start: float, timings: dict[str, float]) -> _Staged:
        """Model inputs for faces already located in `bgr` (by the detector, or by tracking)."""
        t = time.perf_counter()
        boxes = [d.box for d in detections]
        gray = to_gray(bgr)
        kp_batch, kp_tf = model_inputs(gray, boxes, self.keypoints_crop, spec.KEYPOINTS_INPUT_SIZE)
        em_batch, _ = model_inputs(gray, boxes, self.emotion_crop, spec.EMOTION_INPUT_SIZE)
        timings["preprocess"] = (time.perf_counter() - t) * 1e3
        return _Staged(image=bgr, source=source, detections=detections, kp_batch=kp_batch, em_batch=em_batch,
                       kp_transforms=kp_tf, t_start=t_start, timings=timings)

    def _infer(self, staged: list[_Staged]) -> None:
        """One keypoints and one emotion request (run concurrently) for all faces in `staged`."""
        batches = model_batches(staged)
        if batches is None:
            return
        with_faces, kp_in, em_in = batches
        kp_future = self._pool.submit(_timed, self._run_keypoints, kp_in)
        em_future = self._pool.submit(_timed, self._run_emotion, em_in)
        keypoints, t_kp = kp_future.result()
        (scores, classes), t_em = em_future.result()
        assign_faces(with_faces, keypoints, scores, classes, t_kp=t_kp, t_em=t_em)

    def _chunks(self, batch: np.ndarray) -> list[np.ndarray]:
        return face_chunks(batch, self.options.max_faces_per_request)

    def _run_keypoints(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) > self.options.max_faces_per_request:
            return np.concatenate([self._run_keypoints(c) for c in self._chunks(batch)])
        ref = self.models["keypoints"]
        outputs = self.transport.predict(ref, {spec.INPUT_KEY: batch}, self.options.timeout)
        return keypoints_output(outputs, ref, batch.shape[0])

    def _run_emotion(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(batch) > self.options.max_faces_per_request:
            parts = [self._run_emotion(c) for c in self._chunks(batch)]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        ref = self.models["emotion"]
        outputs = self.transport.predict(ref, {spec.INPUT_KEY: batch}, self.options.timeout)
        return emotion_output(outputs, ref, batch.shape[0])


@dataclass
class _Staged:
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
        )


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t) * 1e3


def _pick_output(outputs: dict[str, np.ndarray], key: str, ref: ModelRef) -> np.ndarray:
    if key in outputs:
        return outputs[key]
    if key != spec.CLASSES_OUTPUT_KEY and len(outputs) == 1:
        return next(iter(outputs.values()))  # REST omits the name of a signature's only output
    raise ServerError(f"{ref.describe()} returned outputs {sorted(outputs)}, expected {key!r}")


def model_batches(staged: list[_Staged]) -> tuple[list[_Staged], np.ndarray, np.ndarray] | None:
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


def assign_faces(with_faces: list[_Staged], keypoints: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                 *, t_kp: float, t_em: float) -> None:
    """Split the model outputs for `model_batches` back over its images as `Face`s (`merge_faces`)."""
    start = 0
    for s in with_faces:
        n = len(s.detections)
        s.faces = merge_faces(s.detections, s.kp_transforms, keypoints[start : start + n],
                              scores[start : start + n], classes[start : start + n])
        s.timings["keypoints"] = t_kp
        s.timings["emotion"] = t_em
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
