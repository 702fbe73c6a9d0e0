"""The gateway's clients: one `AsyncEmotionClient` per requested configuration (detector knobs, model
versions, variant), kept in a small LRU, and the bounded-concurrency gate in front of them."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal

from .. import spec
from ..aio import AsyncEmotionClient
from ..client import EmotionClient
from ..detect import DEFAULT_DETECTOR, THOROUGH_DETECTOR, FaceDetector, make_detector
from ..options import ClientOptions
from ..transport import ModelRef
from .problems import ProblemError
from .settings import GatewaySettings

DetectorName = Literal["yunet", "mtcnn", "haar"]


@dataclass(frozen=True)
class AnalysisOptions:
    """What a request may choose (its query parameters); hashable, the key of a configured client.

    Attributes:
        detector: the detector's name (None: the gateway's).
        min_face_size / max_side / min_score: detector knobs (None: the detector's defaults).
        thorough: search with the thorough detector (mtcnn with its turned looks).
        variant: "fast" or "accurate" (each task's accurate model where the server has one).
        keypoints_version / keypoints_label / emotion_version / emotion_label: pin a model version or label.
    """

    detector: DetectorName | None = None
    min_face_size: float | None = None
    max_side: int | None = None
    min_score: float | None = None
    thorough: bool = False
    variant: spec.Variant = "fast"
    keypoints_version: int | None = None
    keypoints_label: str | None = None
    emotion_version: int | None = None
    emotion_label: str | None = None

    def client_options(self, base: ClientOptions, max_pixels: int) -> ClientOptions:
        """`base` with this variant and these model pins.

        Raises:
            ProblemError: 400 invalid-request for a version and a label of the same model.
        """
        models = dict(base.models) if self.variant == base.variant else {}
        for key in (spec.KEYPOINTS_MODEL, spec.EMOTION_MODEL):
            version, label = getattr(self, f"{key}_version"), getattr(self, f"{key}_label")
            if version is not None and label is not None:
                raise ProblemError(400, "invalid-request", f"{key}_version and {key}_label do not combine")
            if version is not None or label is not None:
                models[key] = ModelRef(spec.served_model(key, self.variant), version=version, version_label=label)
        return replace(base, variant=self.variant, models=models, max_pixels=min(base.max_pixels, max_pixels))

    def make_detector(self, default: str) -> FaceDetector:
        """The detector these options ask for.

        Args:
            default: the gateway's detector name.

        Raises:
            ProblemError: 400 invalid-request for a knob the detector does not have or a value it refuses.
        """
        if self.thorough and self.detector not in (None, THOROUGH_DETECTOR):
            raise ProblemError(400, "invalid-request", f"thorough searches with {THOROUGH_DETECTOR}; it does not "
                               f"combine with detector={self.detector}")
        name = self.detector or (THOROUGH_DETECTOR if self.thorough else default or DEFAULT_DETECTOR)
        knobs: dict[str, Any] = {k: getattr(self, k) for k in ("min_face_size", "max_side", "min_score")
                                 if getattr(self, k) is not None}
        if name == "haar" and "min_face_size" in knobs:
            knobs["min_size"] = round(knobs.pop("min_face_size"))
        try:
            return make_detector(name, **knobs)
        except (TypeError, ValueError) as exc:
            raise ProblemError(400, "invalid-request", f"detector {name}: {exc}") from None


class ClientPool:
    """Configured `AsyncEmotionClient`s, the least recently used closed once more than `size` exist.

    Args:
        settings: the gateway's settings (`client`, `detector`, `max_clients`, `max_pixels`).
    """

    def __init__(self, settings: GatewaySettings):
        self.settings = settings
        self._clients: OrderedDict[AnalysisOptions, AsyncEmotionClient] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, options: AnalysisOptions) -> AsyncEmotionClient:
        """The client for `options`, made on first use (call it on the event loop).

        Raises:
            ProblemError: 400 invalid-request for options the client or the detector refuses.
        """
        client = self._clients.get(options)
        if client is not None:
            self._clients.move_to_end(options)
            return client
        try:
            client_options = options.client_options(self.settings.client, self.settings.max_pixels)
        except ValueError as exc:
            raise ProblemError(400, "invalid-request", str(exc)) from None
        client = AsyncEmotionClient.from_options(client_options,
                                                 detector=options.make_detector(self.settings.detector))
        self._clients[options] = client
        while len(self._clients) > self.settings.max_clients:
            _, old = self._clients.popitem(last=False)
            task = asyncio.get_running_loop().create_task(self._close_later(old))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return client

    async def _close_later(self, client: AsyncEmotionClient) -> None:
        await asyncio.sleep(self.settings.deadline)  # its requests in flight finish first
        await client.close()

    def stream_client(self) -> EmotionClient:
        """A new synchronous client with the gateway's configuration, for one WebSocket stream (the caller
        closes it)."""
        options = AnalysisOptions().client_options(self.settings.client, self.settings.max_pixels)
        return EmotionClient.from_options(options, detector=self.settings.detector)

    async def close(self) -> None:
        """Close every client."""
        for task in list(self._closing):
            task.cancel()
        clients, self._clients = list(self._clients.values()), OrderedDict()
        for client in clients:
            await client.close()


class ConcurrencyGate:
    """At most `limit` analyses at once; the next one is refused at once (no queue builds up).

    Args:
        limit: analyses at once.
        retry_after: the seconds a refusal asks the caller to wait.
    """

    def __init__(self, limit: int, retry_after: int):
        self.limit, self.retry_after, self.active = limit, retry_after, 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one place for the block.

        Raises:
            ProblemError: 503 overloaded, with Retry-After, when every place is taken.
        """
        if self.active >= self.limit:
            raise ProblemError(503, "overloaded", f"the gateway is analysing {self.active} requests, its limit; "
                               f"retry after {self.retry_after} s", headers={"Retry-After": str(self.retry_after)})
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
