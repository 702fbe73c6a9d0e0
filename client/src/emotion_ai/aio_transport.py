"""asyncio transports: gRPC on `grpc.aio`, REST on asyncio streams, and round robin over several endpoints.

They make the same requests, parse the same replies, map errors the same way and follow the same
retry/backoff/deadline policy as the sync transports (whose functions they call); only the waiting
differs. Cancelling the awaiting task cancels the in-flight RPC or closes the HTTP connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc
import grpc.aio
import numpy as np

from .balancer import FAILOVER_ERRORS, EndpointRotation
from .errors import ModelNotFoundError, RequestTimeoutError, ServerError
from .grpc_transport import (
    MAX_MESSAGE_BYTES,
    bind_methods,
    channel_options,
    metadata_request,
    outputs_from_reply,
    predict_request,
    rpc_failure,
    signatures_from_reply,
    status_request,
    versions_from_reply,
)
from .rest_transport import (
    decode_reply,
    grpc_port_error,
    model_path,
    parse_metadata_response,
    parse_predict_response,
    parse_status_response,
    predict_body,
)
from .transport import (
    ModelRef,
    RetryableError,
    RetryPolicy,
    RetrySchedule,
    SignatureInfo,
    VersionStatus,
    add_served_versions_async,
)

T = TypeVar("T")


class AsyncTransport(Protocol):
    """`transport.Transport` with awaitable calls; `timeout` is the whole call's budget in seconds."""

    async def predict(self, model: ModelRef, inputs: dict[str, np.ndarray], timeout: float) -> dict[str, np.ndarray]:
        ...

    async def metadata(self, model: ModelRef, timeout: float) -> dict[str, SignatureInfo]:
        ...

    async def status(self, model: ModelRef, timeout: float) -> list[VersionStatus]:
        ...

    async def close(self) -> None:
        ...


async def with_retries_async(
    attempt: Callable[[float], Awaitable[T]], *, timeout: float, policy: RetryPolicy, what: str
) -> T:
    """`transport.with_retries` for coroutines: the same schedule, waiting with `asyncio.sleep`
    (`policy.sleep` is for the sync loop)."""
    schedule = RetrySchedule(timeout=timeout, policy=policy, what=what)
    while (remaining := schedule.remaining()) is not None:
        try:
            return await attempt(remaining)
        except RetryableError as exc:
            delay = schedule.backoff(exc)
            if delay is None:
                break
            await asyncio.sleep(delay)
    raise schedule.give_up()


class AsyncGrpcTransport:
    """TF Serving over one `grpc.aio` channel, opened on first use in the running event loop."""

    def __init__(self, target: str, *, policy: RetryPolicy | None = None,
                 max_message_bytes: int = MAX_MESSAGE_BYTES):
        self.target = target
        self.policy = policy or RetryPolicy()
        self.max_message_bytes = max_message_bytes
        self._channel: grpc.aio.Channel | None = None
        self._methods: dict[str, Any] = {}

    async def _call(self, name: str, request: Any, model: ModelRef, timeout: float, what: str) -> Any:
        if self._channel is None:  # a grpc.aio channel belongs to the loop it was created in
            self._channel = grpc.aio.insecure_channel(
                self.target, options=channel_options(self.target, self.max_message_bytes))
            self._methods = dict(zip(("predict", "metadata", "status"), bind_methods(self._channel), strict=True))
        method = self._methods[name]
        where = f"{what} {self.target}"

        async def attempt(remaining: float) -> Any:
            try:
                return await method(request, timeout=remaining)
            except grpc.RpcError as err:
                raise rpc_failure(err, model, where) from err

        deadline = time.monotonic() + timeout
        try:
            return await with_retries_async(attempt, timeout=timeout, policy=self.policy, what=where)
        except ModelNotFoundError as exc:
            await add_served_versions_async(exc, model, lambda ref: self.status(ref, deadline - time.monotonic()))
            raise

    async def predict(self, model: ModelRef, inputs: dict[str, np.ndarray], timeout: float) -> dict[str, np.ndarray]:
        request = predict_request(model, inputs)
        reply = await self._call("predict", request, model, timeout, f"predict {model.describe()} at")
        return outputs_from_reply(reply, self.target)

    async def metadata(self, model: ModelRef, timeout: float) -> dict[str, SignatureInfo]:
        reply = await self._call("metadata", metadata_request(model), model, timeout, f"metadata {model.describe()} at")
        return signatures_from_reply(reply)

    async def status(self, model: ModelRef, timeout: float) -> list[VersionStatus]:
        reply = await self._call("status", status_request(model), model, timeout, f"status {model.describe()} at")
        return versions_from_reply(reply)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


@dataclass(eq=False)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    closed: bool = False


class _DroppedError(Exception):
    """The server closed the connection before a complete reply."""


class _NotHttp1Error(Exception):
    """The reply starts with an HTTP/2 frame (a gRPC port)."""


class AsyncRestTransport:
    """TF Serving's REST API over asyncio streams: HTTP/1.1 keep-alive pool, Content-Length bodies.

    A connection goes back to the pool only after a complete reply the server did not mark
    `Connection: close`; one whose call failed, timed out or was cancelled is closed, so a late
    reply can never be read as the answer to another request.
    """

    def __init__(self, host: str, port: int, *, policy: RetryPolicy | None = None):
        self.host = host
        self.port = port
        self.policy = policy or RetryPolicy()
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._opened = 0
        self._closed = 0
        authority = f"[{host}]" if ":" in host else host
        self._host_header = f"{authority}:{port}"

    @property
    def base_url(self) -> str:
        return f"http://{self._host_header}"

    def pool_stats(self) -> dict[str, int]:
        """Connections idle in the pool, in use, opened and closed so far (opened - closed = idle + busy)."""
        return {"idle": len(self._idle), "busy": len(self._busy), "opened": self._opened, "closed": self._closed}

    def _close(self, conn: _Connection) -> None:
        if not conn.closed:
            conn.closed = True
            conn.writer.close()
            self._closed += 1

    async def _acquire(self) -> tuple[_Connection, bool]:
        while self._idle:
            conn = self._idle.pop()
            if not (conn.reader.at_eof() or conn.writer.is_closing()):
                return conn, True
            self._close(conn)  # the server closed it while idle
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._opened += 1
        return _Connection(reader, writer), False

    async def _exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send `request` on a pooled (or new) connection and read the reply; retries once on a fresh
        connection when a kept-alive one turns out to have been closed by the server."""
        while True:
            conn, reused = await self._acquire()
            self._busy.add(conn)
            keep = False
            try:
                conn.writer.write(request)
                await conn.writer.drain()
                status, headers, body, keep = await _read_reply(conn.reader)
                return status, headers, body
            except (_DroppedError, ConnectionResetError, BrokenPipeError):
                if not reused:
                    raise
            finally:
                self._busy.discard(conn)
                if keep and not conn.closed:
                    self._idle.append(conn)
                else:
                    self._close(conn)

    async def _request(self, method: str, path: str, body: bytes | None, model: ModelRef, timeout: float,
                       what: str) -> Any:
        deadline = time.monotonic() + timeout
        try:
            return await self._request_once(method, path, body, model, timeout, what)
        except ModelNotFoundError as exc:
            await add_served_versions_async(exc, model, lambda ref: self.status(ref, deadline - time.monotonic()))
            raise

    async def _request_once(self, method: str, path: str, body: bytes | None, model: ModelRef, timeout: float,
                            what: str) -> Any:
        where = f"{what} {self.base_url}"
        head = f"{method} {path} HTTP/1.1\r\nHost: {self._host_header}\r\nAccept: application/json\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        request = (head + "\r\n").encode("latin-1") + (body or b"")

        async def attempt(remaining: float) -> Any:
            try:
                status, headers, data = await asyncio.wait_for(self._exchange(request), remaining)
            except asyncio.TimeoutError as exc:  # noqa: UP041 -- not TimeoutError before 3.11 (3.10 is supported)
                raise RequestTimeoutError(f"{where}: no answer within the deadline") from exc
            except _NotHttp1Error as exc:
                raise grpc_port_error(where) from exc
            except (_DroppedError, ConnectionResetError, BrokenPipeError) as exc:
                raise RetryableError(f"connection dropped ({exc or type(exc).__name__})") from exc
            except OSError as exc:  # refused, unreachable, DNS
                raise RetryableError(exc.strerror or str(exc)) from exc
            except ValueError as exc:  # a status line, header or chunk size that does not parse
                raise ServerError(f"malformed HTTP reply ({exc})") from exc
            return decode_reply(status, data, model, headers.get("content-type", ""))

        return await with_retries_async(attempt, timeout=timeout, policy=self.policy, what=where)

    async def predict(self, model: ModelRef, inputs: dict[str, np.ndarray], timeout: float) -> dict[str, np.ndarray]:
        body = await asyncio.to_thread(predict_body, model, inputs)  # JSON of a big batch takes a while
        doc = await self._request("POST", model_path(model) + ":predict", body, model, timeout,
                                  f"predict {model.describe()} at")
        return parse_predict_response(doc)

    async def metadata(self, model: ModelRef, timeout: float) -> dict[str, SignatureInfo]:
        doc = await self._request("GET", model_path(model) + "/metadata", None, model, timeout,
                                  f"metadata {model.describe()} at")
        return parse_metadata_response(doc)

    async def status(self, model: ModelRef, timeout: float) -> list[VersionStatus]:
        doc = await self._request("GET", model_path(model), None, model, timeout, f"status {model.describe()} at")
        return parse_status_response(doc)

    async def close(self) -> None:
        """Close every connection, idle or in use (in-flight calls then fail)."""
        conns, self._idle = [*self._idle, *self._busy], []
        self._busy.clear()
        for conn in conns:
            self._close(conn)
        for conn in conns:
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, headers with lower-case names, body, whether the connection may be reused)."""
    line = await reader.readline()
    if line.startswith(b"\x00\x00"):
        raise _NotHttp1Error()
    if not line:
        raise _DroppedError("no reply")
    version, status, *_ = [*line.split(None, 2), b""]
    if not version.startswith(b"HTTP/1."):
        raise ValueError(f"status line {line[:80]!r}")
    headers: dict[str, str] = {}
    while (field := await reader.readline()) not in (b"\r\n", b"\n"):
        if not field:
            raise _DroppedError("reply headers cut short")
        name, _, value = field.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:  # the body ends where the connection does
            return int(status), headers, await reader.read(), False
    except asyncio.IncompleteReadError as exc:
        raise _DroppedError("reply body cut short") from exc
    keep = version == b"HTTP/1.1" and headers.get("connection", "").lower() != "close"
    return int(status), headers, body, keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        line = await reader.readline()
        if not line:
            raise _DroppedError("chunked reply cut short")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            break
        parts.append((await reader.readexactly(size + 2))[:size])  # each chunk ends with CRLF
    while (await reader.readline()) not in (b"\r\n", b"\n", b""):  # trailers
        pass
    return b"".join(parts)


class AsyncBalancedTransport(EndpointRotation):
    """`balancer.BalancedTransport` for async transports: the same rotation, cooldowns and failover."""

    transports: list[AsyncTransport]

    async def _call(self, method: str, *args: Any, timeout: float) -> Any:
        deadline = self.clock() + timeout
        errors: list[Exception] = []
        for round_ in range(self.policy.retries + 1):
            for i, budget in self._plan(deadline):
                try:
                    result = await getattr(self.transports[i], method)(*args, timeout=budget)
                except FAILOVER_ERRORS as exc:
                    self._failed(i, method, exc, errors)
                    continue
                self._mark(i, ok=True)
                return result
            delay = self._backoff(round_, deadline)
            if delay is None:
                break
            await asyncio.sleep(delay)
        raise self._failure(method, errors, timeout)

    async def predict(self, model: ModelRef, inputs: dict[str, np.ndarray], timeout: float) -> dict[str, np.ndarray]:
        return await self._call("predict", model, inputs, timeout=timeout)

    async def metadata(self, model: ModelRef, timeout: float) -> dict[str, SignatureInfo]:
        return await self._call("metadata", model, timeout=timeout)

    async def status(self, model: ModelRef, timeout: float) -> list[VersionStatus]:
        return await self._call("status", model, timeout=timeout)

    async def close(self) -> None:
        await asyncio.gather(*(t.close() for t in self.transports))
