"""`WS /v1/stream`: video frames in, one prediction per analysed frame out, with track ids and smoothed scores.

The client sends each frame as a binary message (an encoded image, e.g. JPEG). The gateway keeps one
tracker (`FaceStream`) per connection and a one-frame slot: a frame that arrives while the previous one
is still being analysed replaces the one waiting, so a client that sends faster than the models answer
gets the newest frames and never an unbounded queue. Every answer is a text message with JSON:

- `{"type": "prediction", "frame": n, ..., "dropped": d}`: `Prediction.to_dict()` of frame n (its
  0-based number among the frames received), d frames dropped so far;
- `{"type": "error", "frame": n, "problem": {...}}`: frame n could not be analysed (problem details);
  the stream goes on.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import FastAPI, Query, WebSocket, WebSocketDisconnect

from ..errors import EmotionAIError
from ..streaming import FaceStream, StreamOptions
from .auth import bearer_token, check_token
from .inputs import check_pixels
from .problems import ProblemError, from_client_error, log
from .state import Gateway

#: WebSocket close codes: policy violation (authentication) and try again later (too many streams).
CLOSE_POLICY, CLOSE_TRY_LATER = 1008, 1013


class LatestSlot:
    """A one-item slot where the newest item wins: `put` never waits and replaces an item not yet taken."""

    def __init__(self) -> None:
        self._item: Any = None
        self._ready = asyncio.Event()
        self._closed = False

    def put(self, item: Any) -> bool:
        """Offer `item`; True when it replaced (dropped) one that was waiting."""
        dropped = self._item is not None
        self._item = item
        self._ready.set()
        return dropped

    async def get(self) -> Any:
        """The waiting item, once there is one; None once the slot is closed and empty."""
        while self._item is None:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        item, self._item = self._item, None
        return item

    def close(self) -> None:
        """No more items: `get` returns None once the slot is empty."""
        self._closed = True
        self._ready.set()


def add_stream_route(app: FastAPI, gw: Gateway) -> None:
    """Add `WS /v1/stream` to `app`.

    Args:
        app: the application.
        gw: its shared state (settings, metrics, clients).
    """
    settings = gw.settings

    @app.websocket("/v1/stream")
    async def stream(
        ws: WebSocket,
        detect_every: Annotated[int, Query(ge=1, le=1000)] = StreamOptions.detect_every,
        smoothing: Annotated[float, Query(ge=0, le=60)] = StreamOptions.smoothing,
        access_token: Annotated[str | None, Query(description="the bearer token, for browsers (they cannot set "
                                                  "a WebSocket's Authorization header)")] = None,
    ) -> None:
        try:
            check_token(bearer_token(ws.headers.get("authorization")) or access_token, settings.api_keys)
        except ProblemError as exc:
            gw.metrics.rejected.labels("unauthorized").inc()
            await ws.close(CLOSE_POLICY, exc.detail)
            return
        if gw.streams >= settings.max_streams:
            gw.metrics.rejected.labels("streams").inc()
            await ws.close(CLOSE_TRY_LATER, f"{gw.streams} streams are open, the limit")
            return
        gw.streams += 1
        try:
            await ws.accept()
            await _run(ws, gw, StreamOptions(detect_every=detect_every, smoothing=smoothing))
        finally:
            gw.streams -= 1


async def _run(ws: WebSocket, gw: Gateway, options: StreamOptions) -> None:
    """Receive frames into a `LatestSlot` while a worker analyses them one at a time, until the client leaves."""
    settings, metrics = gw.settings, gw.metrics
    slot = LatestSlot()
    send_lock = asyncio.Lock()
    dropped = 0

    async def send(doc: dict[str, Any]) -> None:
        async with send_lock:
            await ws.send_json(doc)

    async def receive() -> None:
        nonlocal dropped
        number = 0
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes")
                if data is None:
                    not_binary = ProblemError(400, "invalid-request",
                                              "send each frame as a binary message (an encoded image)")
                    await send({"type": "error", "frame": None, "problem": not_binary.document()})
                    continue
                if len(data) > settings.max_body_bytes:
                    metrics.frames.labels("failed").inc()
                    too_large = ProblemError(413, "body-too-large",
                                             f"the frame is larger than {settings.max_body_bytes:,} bytes")
                    await send({"type": "error", "frame": number, "problem": too_large.document()})
                elif slot.put((number, data)):
                    dropped += 1
                    metrics.frames.labels("dropped").inc()
                number += 1
        except WebSocketDisconnect:
            return
        finally:
            slot.close()

    receiver = asyncio.create_task(receive())
    client = await asyncio.to_thread(gw.clients.stream_client)
    engine = FaceStream(client, options)
    try:
        while (item := await slot.get()) is not None:
            number, data = item
            try:
                check_pixels(data, settings.max_pixels)
                prediction = await asyncio.to_thread(engine.process, data, number)
            except (ProblemError, EmotionAIError) as exc:
                metrics.frames.labels("failed").inc()
                problem = exc if isinstance(exc, ProblemError) else from_client_error(exc, settings.retry_after)
                await send({"type": "error", "frame": number, "problem": problem.document()})
                continue
            except Exception as exc:  # a bug costs its frame, not the stream; its details stay in the log
                log.error("stream frame %d failed", number, exc_info=exc)
                metrics.frames.labels("failed").inc()
                internal = ProblemError(500, "internal-error", "internal error (see the gateway's log)")
                await send({"type": "error", "frame": number, "problem": internal.document()})
                continue
            metrics.frames.labels("analysed").inc()
            metrics.faces.observe(len(prediction.faces))
            await send({"type": "prediction", **prediction.to_dict(), "dropped": dropped})
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client left while an answer was being sent
    finally:
        receiver.cancel()
        engine.close()
        await asyncio.to_thread(client.close)
