"""`EmotionClient`: detect faces, crop them, ask both served models, merge the answers per face."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, overload

import numpy as np

from . import spec
from .balancer import BalancedTransport, transport_for
from .detect import Detection, FaceDetector, crops_for, make_detector
from .errors import EmotionAIError, ModelNotFoundError, ServerUnavailableError
from .grpc_transport import GrpcTransport
from .images import ColorOrder, ImageInput, load_image
from .merge import StagedImage, assign_faces, emotion_output, face_chunks, keypoints_output, model_batches
from .options import ClientOptions, ModelOption, Protocol_
from .preprocess import level_angle, model_inputs, to_gray
from .rest_transport import RestTransport
from .result import Prediction
from .streaming import FaceStream, StreamOptions
from .transport import ModelRef, SignatureInfo, Transport, VersionStatus, all_available, ladder_refs


class EmotionClient:
    """Face keypoints and facial expression for images, served by TF Serving (gRPC or REST).

    Example:
        with EmotionClient(protocol="grpc") as client:
            for face in client.predict("photo.jpg").faces:
                print(face.box, face.emotion, face.keypoints["left_eye_center"])

    Keyword arguments are the fields of `ClientOptions` (defaults there); pass `options=` instead to
    reuse one (`EmotionClient.from_options`), never both. `detector` is a name ("yunet", the default,
    "mtcnn", "haar", "yunet:PATH") or any object with `detect(image)` (see `emotion_ai.detect`).
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
        self.models: dict[str, ModelRef] = options.model_refs()
        self.detector: FaceDetector = make_detector(detector)
        crops = crops_for(self.detector)
        self.keypoints_crop = options.keypoints_crop or crops.keypoints
        self.emotion_crop = options.emotion_crop or crops.emotion
        self.transport: Transport = (  # an in-process or test transport may replace the server's
            transport if transport is not None
            else transport_for(options, GrpcTransport, RestTransport, BalancedTransport))
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="emotion-ai")

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

    def model_status(self) -> dict[str, list[VersionStatus] | None]:
        """Version states of every rung of the model ladder (`spec.SERVED_MODELS`) and of the models in use.

        Returns:
            Model name -> its versions' states, in `spec.SERVED_MODELS` order (then any other model in use);
            None for a ladder model this server does not serve.

        Raises:
            ModelNotFoundError: a model in use (`self.models`) is not served.
            EmotionAIError: the other server errors of `emotion_ai.errors`.
        """
        in_use, refs = ladder_refs(self.models)
        found: dict[str, list[VersionStatus] | None] = {}
        for name, ref in refs.items():
            try:
                found[name] = self.transport.status(ref, self.options.timeout)
            except ModelNotFoundError:
                if name in in_use:
                    raise
                found[name] = None
        return found

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
        return self.predict_staged(self.stage(image, color=color))

    def stage(self, image: ImageInput, *, color: ColorOrder = "bgr") -> StagedImage:
        """The first half of `predict`, without a server call: decode `image`, detect its faces and crop
        them for the models. Thread-safe, so a pipeline can stage the next images in worker threads while
        `predict_staged` sends the current ones (what `emotion-ai predict DIR` does).

        Args:
            image: a path, the bytes of an encoded image, or a numpy array (see `predict`).
            color: "bgr" (default) or "rgb", the channel order of an array.

        Returns:
            The image with its faces' model inputs, for `predict_staged`.

        Raises:
            InvalidImageError: the image cannot be read or is too large.
        """
        return self._stage(image, color)

    def predict_staged(self, staged: StagedImage) -> Prediction:
        """The second half of `predict`: one keypoints and one emotion request for the faces of a
        `stage`d image (none when it has no face), merged into its `Prediction`.

        Args:
            staged: what `stage` returned (each staged image is sent once).

        Returns:
            The image's prediction.

        Raises:
            EmotionAIError: the server errors of `emotion_ai.errors` (ServerUnavailableError,
                ModelNotFoundError, RequestTimeoutError, ServerError).
        """
        self._infer([staged])
        return staged.prediction()

    @overload
    def predict_batch(self, images: Iterable[ImageInput], *, color: ColorOrder = ...,
                      errors: Literal["raise"] = ...) -> list[Prediction]: ...
    @overload
    def predict_batch(self, images: Iterable[ImageInput], *, color: ColorOrder = ...,
                      errors: Literal["return"]) -> list[Prediction | EmotionAIError]: ...

    def predict_batch(
        self,
        images: Iterable[ImageInput],
        *,
        color: ColorOrder = "bgr",
        errors: Literal["raise", "return"] = "raise",
    ) -> list[Prediction] | list[Prediction | EmotionAIError]:
        """`predict` for many images; faces of `batch_images` images share one request per model.

        With errors="return", an image that fails (unreadable, or a server error for its faces) yields
        its exception in its place instead of stopping the batch: a group whose request fails is
        retried image by image, so one bad image does not cost the others their results.
        """
        results: list[Any] = []
        group: list[StagedImage] = []
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
    def _stage(self, image: ImageInput, color: ColorOrder) -> StagedImage:
        t0 = time.perf_counter()
        bgr = load_image(image, color=color, max_pixels=self.options.max_pixels)
        t1 = time.perf_counter()
        detections = self._detect(bgr)
        t2 = time.perf_counter()
        source = str(image) if isinstance(image, str) or hasattr(image, "__fspath__") else None
        timings = {"decode": (t1 - t0) * 1e3, "detect": (t2 - t1) * 1e3}
        return self._stage_faces(bgr, detections, source=source, t_start=t0, timings=timings)

    def _detect(self, bgr: np.ndarray) -> list[Detection]:
        """The detector's faces, left to right."""
        return sorted(self.detector.detect(bgr), key=lambda d: (d.box[0], d.box[1]))

    def _stage_faces(self, bgr: np.ndarray, detections: list[Detection], *, source: str | None,
                     t_start: float, timings: dict[str, float]) -> StagedImage:
        """Model inputs for faces already located in `bgr` (by the detector, or by tracking)."""
        t = time.perf_counter()
        boxes = [d.box for d in detections]
        gray = to_gray(bgr)
        angles = [level_angle(d.landmarks) for d in detections] if self.options.level_faces else None
        kp_batch, kp_tf = model_inputs(gray, boxes, self.keypoints_crop, spec.KEYPOINTS_INPUT_SIZE, angles)
        em_batch, _ = model_inputs(gray, boxes, self.emotion_crop, spec.EMOTION_INPUT_SIZE, angles)
        timings["preprocess"] = (time.perf_counter() - t) * 1e3
        return StagedImage(image=bgr, source=source, detections=detections, kp_batch=kp_batch, em_batch=em_batch,
                       kp_transforms=kp_tf, t_start=t_start, timings=timings)

    def _infer(self, staged: list[StagedImage]) -> None:
        """One keypoints and one emotion request (run concurrently) for all faces in `staged`."""
        batches = model_batches(staged)
        if batches is None:
            return
        with_faces, kp_in, em_in = batches
        kp_future = self._pool.submit(_timed, self._run_keypoints, kp_in)
        em_future = self._pool.submit(_timed, self._run_emotion, em_in)
        keypoints, t_kp = kp_future.result()
        (scores, classes), t_em = em_future.result()
        assign_faces(with_faces, keypoints, scores, classes, t_kp=t_kp, t_em=t_em, models=self.models)

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


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t) * 1e3
