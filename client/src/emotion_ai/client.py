"""`EmotionClient`: detect faces, crop them, ask both served models, merge the answers per face."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, overload

from .balancer import BalancedTransport, transport_for
from .detection import FaceDetector
from .errors import EmotionAIError, ModelNotFoundError, ServerUnavailableError
from .grpc_transport import GrpcTransport
from .images import ColorOrder, ImageInput
from .merge import StagedImage
from .options import ClientOptions, ModelOption, Protocol_, resolve_options
from .pipeline import FacePipeline, FaceStager, ModelRunner
from .rest_transport import RestTransport
from .result import Prediction
from .spec import CropGeometry
from .streaming import FaceStream, StreamOptions
from .transport import ModelRef, SignatureInfo, Transport, VersionStatus, all_available, ladder_refs


class EmotionClient:
    """Face keypoints and facial expression for images, served by TF Serving (gRPC or REST).

    Example:
        with EmotionClient(protocol="grpc") as client:
            for face in client.predict("photo.jpg").faces:
                print(face.box, face.emotion, face.keypoints["left_eye_center"])

    Keyword arguments are the fields of `ClientOptions` (defaults there); pass `options=` instead to
    reuse one (`EmotionClient.from_options`), never both.

    Args:
        host: the server's host name or address (default: `EMOTION_AI_HOST`, else localhost).
        protocol: "grpc" or "rest".
        grpc_port: TF Serving's gRPC port (8500).
        rest_port: TF Serving's REST port (8501).
        timeout: seconds per call, retries included.
        retries: attempts after the first for a failed call that may succeed again.
        models: "keypoints" and/or "emotion" -> a model name or `ModelRef` (a pinned version or label).
        detector: a name ("yunet", the default, "mtcnn", "haar", "yunet:PATH") or any object with
            `detect(image)` (see `emotion_ai.detect`).
        options: a whole `ClientOptions` instead of the keyword arguments above.
        transport: an in-process or test transport instead of the server's.

    Raises:
        ValueError: an invalid option, or `options=` together with option keywords.
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
        options = resolve_options("EmotionClient", options, {
            "host": host, "protocol": protocol, "grpc_port": grpc_port, "rest_port": rest_port, "timeout": timeout,
            "retries": retries, "models": models}, more_options)
        self.options = options
        self.models: dict[str, ModelRef] = options.model_refs()
        stager = FaceStager(options, detector)
        transport = (  # an in-process or test transport may replace the server's
            transport if transport is not None
            else transport_for(options, GrpcTransport, RestTransport, BalancedTransport))
        #: What `predict` runs: staging (decode, detect, crop) and the model requests over `transport`.
        self.pipeline = FacePipeline(stager, ModelRunner(transport, self.models, options))

    @property
    def detector(self) -> FaceDetector:
        """The face detector."""
        return self.pipeline.stager.detector

    @property
    def keypoints_crop(self) -> CropGeometry:
        """The crop geometry of the keypoints model's input."""
        return self.pipeline.stager.keypoints_crop

    @property
    def emotion_crop(self) -> CropGeometry:
        """The crop geometry of the emotion model's input."""
        return self.pipeline.stager.emotion_crop

    @property
    def transport(self) -> Transport:
        """How requests reach the server (an in-process or test transport may replace it)."""
        return self.pipeline.runner.transport

    @transport.setter
    def transport(self, transport: Transport) -> None:
        self.pipeline.runner.transport = transport

    @classmethod
    def from_options(cls, options: ClientOptions, *, detector: str | FaceDetector | None = None,
                     transport: Transport | None = None) -> EmotionClient:
        """A client configured by a `ClientOptions` (e.g. one shared by several clients)."""
        return cls(options=options, detector=detector, transport=transport)

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Close connections and worker threads."""
        self.pipeline.runner.close()
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
        """Block until both models report a version AVAILABLE, or raise ServerUnavailableError.

        Args:
            timeout: seconds to wait in all.
            interval: seconds between two status calls.

        Raises:
            ServerUnavailableError: not every model AVAILABLE within `timeout` seconds.
            ModelNotFoundError: at once, when a pinned version or label is not served while other versions
                of that model are (waiting would not help; the message lists the served versions).
        """
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                states = self.status()
                if all_available(states):
                    return
                last = str(states)
            except ModelNotFoundError as exc:
                if exc.served_versions:
                    raise
                last = str(exc)
            except EmotionAIError as exc:
                last = str(exc)
            if time.monotonic() + interval > deadline:
                raise ServerUnavailableError(f"models not AVAILABLE within {timeout:g} s: {last}")
            time.sleep(interval)

    # -- prediction ------------------------------------------------------------------------------
    def predict(self, image: ImageInput, *, color: ColorOrder = "bgr") -> Prediction:
        """Detect every face in `image` and return keypoints and expression for each.

        Args:
            image: a path, the bytes of an encoded image, or a numpy array (gray, 3- or 4-channel).
            color: the channel order of an array: "bgr" (default, OpenCV's) or "rgb".

        Returns:
            The faces left to right (none when there is no face), the models that answered and the
            timings of each stage.

        Raises:
            InvalidImageError: the image cannot be read, or is too large.
            EmotionAIError: the server errors of `emotion_ai.errors` (ServerUnavailableError,
                ModelNotFoundError, RequestTimeoutError, ServerError).
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
        return self.pipeline.stager.stage(image, color)

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
        self.pipeline.runner.infer([staged])
        return staged.prediction()

    def predict_staged_group(self, staged: Sequence[StagedImage]) -> list[Prediction | EmotionAIError]:
        """`predict_staged` for several staged images at once: their faces share one keypoints and one
        emotion request (bigger batches cost less per face). When that fails, each image is sent on its
        own, so one image's server error does not cost the others their results.

        Args:
            staged: what `stage` returned, in output order (each staged image is sent once).

        Returns:
            Per image, in order, its `Prediction` or the `EmotionAIError` its own requests raised.
        """
        results: list[Prediction | EmotionAIError] = []
        try:
            self.pipeline.runner.infer(list(staged))
            return [st.prediction() for st in staged]
        except EmotionAIError as exc:
            if len(staged) == 1:
                return [exc]
        for st in staged:
            try:
                self.pipeline.runner.infer([st])
                results.append(st.prediction())
            except EmotionAIError as exc:
                results.append(exc)
        return results

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

        Args:
            images: paths, encoded bytes or arrays, as for `predict`.
            color: the channel order of arrays ("bgr" or "rgb").
            errors: "raise" (default) stops at the first failing image; "return" puts an image's
                exception in its place (unreadable, or a server error for its faces) and goes on: a
                group whose request fails is retried image by image, so one bad image does not cost the
                others their results.

        Returns:
            One `Prediction` per image, in order (or its `EmotionAIError` with errors="return").

        Raises:
            InvalidImageError: with errors="raise", for the first unusable image.
            EmotionAIError: with errors="raise", the server errors of `emotion_ai.errors`.
        """
        results: list[Any] = []
        group: list[StagedImage] = []
        slots: list[int] = []

        def flush() -> None:
            if not group:
                return
            if errors == "raise":
                self.pipeline.runner.infer(group)
                answers: list[Prediction | EmotionAIError] = [st.prediction() for st in group]
            else:
                answers = self.predict_staged_group(group)
            for i, answer in zip(slots, answers, strict=True):
                results[i] = answer
            group.clear()
            slots.clear()

        for image in images:
            try:
                staged = self.pipeline.stager.stage(image, color)
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

        Args:
            frames: any iterable of images (e.g. frames read from `cv2.VideoCapture`); it is read a few
                frames ahead in a thread.
            fps: the frames' rate, for their timestamps (index / fps) in smoothing; without it, arrival
                time is used (live streams).
            options: a `StreamOptions` (detection interval, smoothing time constant, occlusion tolerance).
            color: the channel order of array frames ("bgr" or "rgb").

        Returns:
            An iterator of one `Prediction` per frame.

        Raises:
            InvalidImageError: a frame cannot be used.
            EmotionAIError: the server errors of `emotion_ai.errors`.
        """
        return FaceStream(self.pipeline, options, fps).run(frames, color)
