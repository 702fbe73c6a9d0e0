"""`AsyncEmotionClient`: `EmotionClient` for asyncio applications."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar, overload

import numpy as np

from . import spec
from .aio_transport import AsyncBalancedTransport, AsyncGrpcTransport, AsyncRestTransport, AsyncTransport
from .balancer import transport_for
from .detection import FaceDetector
from .errors import EmotionAIError, ModelNotFoundError, ServerUnavailableError
from .images import ColorOrder, ImageInput
from .merge import StagedImage, assign_faces, emotion_output, face_chunks, keypoints_output, model_batches
from .options import ClientOptions, ModelOption, Protocol_, resolve_options
from .pipeline import FacePipeline, FaceStager, ModelRunner
from .result import Prediction
from .streaming import FaceStream, StreamOptions
from .transport import ModelRef, SignatureInfo, VersionStatus, all_available, ladder_refs

T = TypeVar("T")


class AsyncEmotionClient:
    """`EmotionClient` with `async` methods, on `grpc.aio` or an asyncio HTTP/1.1 connection pool.

    Example:
        async with AsyncEmotionClient(protocol="grpc") as client:
            predictions = await asyncio.gather(*(client.predict(p) for p in paths))

    Takes the arguments of `EmotionClient` (`transport=` is an `aio_transport.AsyncTransport`) and
    behaves like it: the same results, errors, deadlines (`timeout` per server call, retries
    included), retries and endpoint failover. Decoding, detection and cropping run in worker threads;
    the keypoints and emotion requests of an image run concurrently; cancelling a call cancels its
    requests. Use one client within one event loop.

    Args:
        host, protocol, grpc_port, rest_port, timeout, retries, models, detector, options: as for
            `EmotionClient`.
        transport: an `aio_transport.AsyncTransport` instead of the server's.
        **more_options: further `ClientOptions` fields.

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
        transport: AsyncTransport | None = None,
        **more_options: Any,
    ):
        options = resolve_options("AsyncEmotionClient", options, {
            "host": host, "protocol": protocol, "grpc_port": grpc_port, "rest_port": rest_port, "timeout": timeout,
            "retries": retries, "models": models}, more_options)
        self.options = options
        self.models: dict[str, ModelRef] = options.model_refs()
        self._stager = FaceStager(options, detector)  # the sync client's staging, so both preprocess alike
        self.detector: FaceDetector = self._stager.detector
        self.transport: AsyncTransport = (
            transport if transport is not None
            else transport_for(options, AsyncGrpcTransport, AsyncRestTransport, AsyncBalancedTransport))
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="emotion-ai-aio")

    @classmethod
    def from_options(cls, options: ClientOptions, *, detector: str | FaceDetector | None = None,
                     transport: AsyncTransport | None = None) -> AsyncEmotionClient:
        """A client configured by a `ClientOptions` (e.g. one shared by several clients)."""
        return cls(options=options, detector=detector, transport=transport)

    # -- lifecycle -------------------------------------------------------------------------------
    async def close(self) -> None:
        """Close connections and worker threads."""
        await self.transport.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> AsyncEmotionClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- server information ----------------------------------------------------------------------
    async def status(self) -> dict[str, list[VersionStatus]]:
        """Version states of both models, keyed "keypoints" / "emotion"."""
        keys = list(self.models)
        states = await _gather(*(self.transport.status(self.models[k], self.options.timeout) for k in keys))
        return dict(zip(keys, states, strict=True))

    async def model_status(self) -> dict[str, list[VersionStatus] | None]:
        """`EmotionClient.model_status`: version states of every model of the ladder and of those in use
        (None for a ladder model the server does not serve; ModelNotFoundError for one in use)."""
        in_use, refs = ladder_refs(self.models)

        async def one(name: str, ref: ModelRef) -> list[VersionStatus] | None:
            try:
                return await self.transport.status(ref, self.options.timeout)
            except ModelNotFoundError:
                if name in in_use:
                    raise
                return None

        states = await _gather(*(one(name, ref) for name, ref in refs.items()))
        return dict(zip(refs, states, strict=True))

    async def metadata(self, key: str) -> dict[str, SignatureInfo]:
        """Signature definitions of the "keypoints" or "emotion" model."""
        return await self.transport.metadata(self.models[key], self.options.timeout)

    async def wait_until_available(self, timeout: float = 30.0, interval: float = 0.2) -> None:
        """`EmotionClient.wait_until_available`: wait until both models report a version AVAILABLE.

        Args:
            timeout: seconds to wait in all.
            interval: seconds between two status calls.

        Raises:
            ServerUnavailableError: not within `timeout` seconds.
            ModelNotFoundError: at once, when a pinned version or label is not served while other versions
                of that model are (the message lists the served versions).
        """
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                states = await self.status()
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
            await asyncio.sleep(interval)

    # -- prediction ------------------------------------------------------------------------------
    async def predict(self, image: ImageInput, *, color: ColorOrder = "bgr") -> Prediction:
        """`EmotionClient.predict`: keypoints and expression of every face in `image`.

        Args:
            image: a path, the bytes of an encoded image, or a numpy array (gray, 3- or 4-channel).
            color: the channel order of an array: "bgr" (default) or "rgb".

        Returns:
            The image's faces (left to right), the models that answered and the stage timings.

        Raises:
            InvalidImageError: the image cannot be read, or is too large.
            EmotionAIError: the server errors of `emotion_ai.errors`.
        """
        staged = await self._stage(image, color)
        await self._infer([staged])
        return staged.prediction()

    async def stream(
        self,
        frames: Iterable[ImageInput] | AsyncIterable[ImageInput],
        *,
        fps: float | None = None,
        options: StreamOptions | None = None,
        color: ColorOrder = "bgr",
    ) -> AsyncIterator[Prediction]:
        """`EmotionClient.stream` as an async generator over a sync or async iterable of frames: each
        frame is processed in a worker thread (detection, tracking) whose model calls run on this loop.

        Args:
            frames: a sync or async iterable of images.
            fps: the frames' rate, for their timestamps in smoothing (default: arrival time).
            options: a `StreamOptions` (detection interval, smoothing, occlusion tolerance).
            color: the channel order of array frames ("bgr" or "rgb").

        Returns:
            An async iterator of one `Prediction` per frame, with track ids and smoothed scores.

        Raises:
            InvalidImageError: a frame cannot be used.
            EmotionAIError: the server errors of `emotion_ai.errors`.
        """
        runner = ModelRunner(_LoopBridge(self.transport, asyncio.get_running_loop()), self.models, self.options)
        engine = FaceStream(FacePipeline(self._stager, runner), options, fps)
        try:
            index = 0
            async for frame in _as_async(frames):
                yield await asyncio.get_running_loop().run_in_executor(self._pool, engine.process, frame, index, color)
                index += 1
        finally:
            engine.close()
            runner.close()

    @overload
    async def predict_batch(self, images: Iterable[ImageInput], *, color: ColorOrder = ...,
                      errors: Literal["raise"] = ...) -> list[Prediction]: ...
    @overload
    async def predict_batch(self, images: Iterable[ImageInput], *, color: ColorOrder = ...,
                      errors: Literal["return"]) -> list[Prediction | EmotionAIError]: ...

    async def predict_batch(
        self,
        images: Iterable[ImageInput],
        *,
        color: ColorOrder = "bgr",
        errors: Literal["raise", "return"] = "raise",
    ) -> list[Prediction] | list[Prediction | EmotionAIError]:
        """`EmotionClient.predict_batch`: faces of `batch_images` images share one request per model.

        Args:
            images: paths, encoded bytes or arrays, as for `predict`.
            color: the channel order of arrays ("bgr" or "rgb").
            errors: "raise" (default) stops at the first failing image; "return" puts a failed image's
                exception in its place (a failed group is retried image by image).

        Returns:
            One `Prediction` per image, in order (or its `EmotionAIError` with errors="return").

        Raises:
            InvalidImageError: with errors="raise", for the first unusable image.
            EmotionAIError: with errors="raise", the server errors of `emotion_ai.errors`.
        """
        results: list[Any] = []
        group: list[StagedImage] = []
        slots: list[int] = []

        async def flush() -> None:
            if not group:
                return
            try:
                await self._infer(group)
                for i, st in zip(slots, group, strict=True):
                    results[i] = st.prediction()
            except EmotionAIError:
                if errors == "raise":
                    raise
                for i, st in zip(slots, group, strict=True):
                    try:
                        await self._infer([st])
                        results[i] = st.prediction()
                    except EmotionAIError as exc:
                        results[i] = exc
            group.clear()
            slots.clear()

        for image in images:
            try:
                staged = await self._stage(image, color)
            except EmotionAIError as exc:
                if errors == "raise":
                    raise
                results.append(exc)
                continue
            results.append(None)  # replaced once its group has run
            slots.append(len(results) - 1)
            group.append(staged)
            if len(group) >= self.options.batch_images:
                await flush()
        await flush()
        return results

    # -- internals -------------------------------------------------------------------------------
    async def _stage(self, image: ImageInput, color: ColorOrder) -> StagedImage:
        """Decode, detect and crop in a worker thread (the event loop stays free)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._stager.stage, image, color)

    async def _infer(self, staged: list[StagedImage]) -> None:
        """One keypoints and one emotion request (run concurrently) for all faces in `staged`."""
        batches = model_batches(staged)
        if batches is None:
            return
        with_faces, kp_in, em_in = batches
        (keypoints, t_kp), ((scores, classes), t_em) = await _gather(
            _timed(self._run_keypoints(kp_in)), _timed(self._run_emotion(em_in)))
        assign_faces(with_faces, keypoints, scores, classes, t_kp=t_kp, t_em=t_em, models=self.models)

    async def _run_keypoints(self, batch: np.ndarray) -> np.ndarray:
        ref = self.models["keypoints"]
        parts = [
            keypoints_output(await self.transport.predict(ref, {spec.INPUT_KEY: c}, self.options.timeout), ref, len(c))
            for c in face_chunks(batch, self.options.max_faces_per_request)
        ]
        return np.concatenate(parts)

    async def _run_emotion(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ref = self.models["emotion"]
        parts = [
            emotion_output(await self.transport.predict(ref, {spec.INPUT_KEY: c}, self.options.timeout), ref, len(c))
            for c in face_chunks(batch, self.options.max_faces_per_request)
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class _LoopBridge:
    """A sync transport for a worker thread that runs each call on the event loop's async transport."""

    def __init__(self, inner: AsyncTransport, loop: asyncio.AbstractEventLoop):
        self.inner, self.loop = inner, loop

    def predict(self, model: ModelRef, inputs: dict[str, np.ndarray], timeout: float) -> dict[str, np.ndarray]:
        return asyncio.run_coroutine_threadsafe(self.inner.predict(model, inputs, timeout), self.loop).result()

    def metadata(self, model: ModelRef, timeout: float) -> dict[str, SignatureInfo]:
        return asyncio.run_coroutine_threadsafe(self.inner.metadata(model, timeout), self.loop).result()

    def status(self, model: ModelRef, timeout: float) -> list[VersionStatus]:
        return asyncio.run_coroutine_threadsafe(self.inner.status(model, timeout), self.loop).result()

    def close(self) -> None:
        pass  # the async client owns and closes the transport


async def _timed(aw: Awaitable[T]) -> tuple[T, float]:
    t = time.perf_counter()
    out = await aw
    return out, (time.perf_counter() - t) * 1e3


async def _gather(*aws: Awaitable[Any]) -> list[Any]:
    """`asyncio.gather` that cancels the other awaitables as soon as one fails (none is left running)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


async def _as_async(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    """Iterate a sync or async iterable asynchronously."""
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
