"""AsyncEmotionClient, driven by `asyncio.run`, against the embedded server (REST and gRPC): the sync
client's answers, concurrency, deadlines, cancellation (no cancelled connection back in the REST pool),
typed errors; and the asyncio HTTP/1.1 client against a scripted server (503 retry, keep-alive, chunked)."""

from __future__ import annotations

import asyncio
import re
import time

import numpy as np
import pytest
from emotion_ai import (
    AsyncEmotionClient,
    HaarFaceDetector,
    InvalidImageError,
    ModelNotFoundError,
    ModelRef,
    Prediction,
    RequestTimeoutError,
    ServerUnavailableError,
    spec,
)
from emotion_ai.aio_transport import AsyncBalancedTransport, AsyncRestTransport
from emotion_ai.transport import RetryPolicy, all_available

from .test_client_integration import _assert_same, _two_faces

PROTOCOLS = ("grpc", "rest")


@pytest.fixture(scope="module")
def detector() -> HaarFaceDetector:
    """One detector for the sync and async clients, so both see the same faces."""
    return HaarFaceDetector()


def _client(server, protocol: str, detector, **options) -> AsyncEmotionClient:
    return AsyncEmotionClient("127.0.0.1", protocol=protocol, grpc_port=server.grpc_port,
                              rest_port=server.rest_port, detector=detector, **options)


def _expected(server, protocol: str, detector, images: list) -> list[Prediction]:
    with server.client(protocol, detector=detector) as sync:
        return [sync.predict(image) for image in images]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_same_answers_as_the_sync_client(server, protocol, detector, astronaut_bgr):
    image = _two_faces(astronaut_bgr)
    (expected,) = _expected(server, protocol, detector, [image])
    assert len(expected.faces) == 2

    async def main():
        async with _client(server, protocol, detector) as client, \
                _client(server, protocol, detector, max_faces_per_request=1) as one_face_per_request:
            return (await client.predict(image), await one_face_per_request.predict(image),
                    await client.status(), await client.metadata("keypoints"))

    pred, chunked, states, signatures = asyncio.run(main())
    _assert_same(pred, expected)
    _assert_same(chunked, expected)
    assert set(pred.timings_ms) >= {"decode", "detect", "preprocess", "keypoints", "emotion", "total"}
    assert set(states) == {"keypoints", "emotion"} and all_available(states)
    assert signatures[spec.SIGNATURE_NAME].inputs[spec.INPUT_KEY].shape == (None, 96, 96, 1)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sixteen_concurrent_predicts_are_all_correct(server, protocol, detector, astronaut_bgr, astronaut_jpeg):
    distinct = [astronaut_jpeg, _two_faces(astronaut_bgr), np.full((120, 160, 3), 90, np.uint8)]
    expected = _expected(server, protocol, detector, distinct)
    images = [i % len(distinct) for i in range(16)]

    async def main():
        async with _client(server, protocol, detector) as client:
            preds = await asyncio.gather(*(client.predict(distinct[i]) for i in images))
            return preds, getattr(client.transport, "pool_stats", dict)()

    preds, pool = asyncio.run(main())
    for i, pred in zip(images, preds, strict=True):
        _assert_same(pred, expected[i])
    if protocol == "rest":  # every connection is back in the pool (a few, reused) or closed
        assert pool["busy"] == 0 and pool["opened"] - pool["closed"] == pool["idle"] >= 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_deadline_that_is_too_short_is_a_request_timeout(server, protocol, detector, astronaut_bgr):
    async def main():
        async with _client(server, protocol, detector, timeout=0.001) as client:
            await client.predict(astronaut_bgr)

    with pytest.raises(RequestTimeoutError):
        asyncio.run(main())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_version_that_is_not_served_names_the_served_ones_at_once(server, protocol, detector, astronaut_bgr):
    models = {"keypoints": ModelRef(spec.KEYPOINTS_MODEL), "emotion": ModelRef(spec.EMOTION_MODEL, version=99)}

    async def main():
        async with _client(server, protocol, detector, models=models) as client:
            with pytest.raises(ModelNotFoundError) as predicted:
                await client.predict(astronaut_bgr)
            start = time.monotonic()
            with pytest.raises(ModelNotFoundError, match=r"versions available on the server: \d"):
                await client.wait_until_available(timeout=20)
            return predicted.value.served_versions, time.monotonic() - start

    served, waited = asyncio.run(main())
    with server.client(protocol) as sync:
        expected = tuple(sorted(v.version for v in sync.status()[spec.EMOTION_MODEL] if v.state == "AVAILABLE"))
    assert served == expected and expected and 99 not in served
    assert waited < 5  # at once, not after the 20 s deadline


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cancelling_a_pending_predict_leaves_the_client_usable(server, protocol, detector, astronaut_bgr):
    async def main():
        async with _client(server, protocol, detector) as client:
            first = await client.predict(astronaut_bgr)  # REST: leaves its connections in the pool
            pool = getattr(client.transport, "pool_stats", None)
            before = pool() if pool else {}
            cancelled: dict[str, int] = {}
            task = asyncio.create_task(client.predict(astronaut_bgr))
            if pool:  # cancel while a request is on a connection
                t_end = time.monotonic() + 30
                while pool()["busy"] == 0 and not task.done() and time.monotonic() < t_end:
                    await asyncio.sleep(0)
                cancelled = pool()
                assert cancelled["busy"] >= 1
            else:
                await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            after = pool() if pool else {}
            again = await client.predict(astronaut_bgr)
            return first, again, before, cancelled, after

    first, again, before, cancelled, after = asyncio.run(main())
    _assert_same(again, first)
    if protocol == "rest":
        # the cancelled connections were closed, not pooled (their late replies would answer the next call)
        assert after["busy"] == 0
        assert after["closed"] - before["closed"] == cancelled["busy"]
        assert after["opened"] - after["closed"] == after["idle"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unreachable_server_is_unavailable_after_retries(protocol, detector):
    async def main():
        async with AsyncEmotionClient("127.0.0.1", protocol=protocol, grpc_port=9, rest_port=9, timeout=3,
                                      retries=2, backoff=0.05, detector=detector) as client:
            await client.status()

    t = time.perf_counter()
    with pytest.raises(ServerUnavailableError, match="gave up after 3 attempt"):
        asyncio.run(main())
    assert time.perf_counter() - t < 3.5


def test_a_client_on_the_other_protocols_port_is_told_so(server, detector):
    crossed = {"rest": {"rest_port": server.grpc_port}, "grpc": {"grpc_port": server.rest_port}}
    hints = {"rest": "speaks gRPC (HTTP/2), not REST", "grpc": "speaks HTTP/1.1 (REST?), not gRPC"}

    async def main(protocol: str):
        async with AsyncEmotionClient("127.0.0.1", protocol=protocol, timeout=5, detector=detector,
                                      **crossed[protocol]) as client:
            await client.status()

    for protocol, hint in hints.items():
        with pytest.raises(ServerUnavailableError, match=re.escape(hint)):
            asyncio.run(main(protocol))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_images_and_predict_batch_errors(server, protocol, detector, astronaut_bgr, astronaut_jpeg):
    images = [astronaut_jpeg, np.full((200, 300, 3), 90, np.uint8), _two_faces(astronaut_bgr), b"junk"]
    with server.client(protocol, detector=detector) as sync:
        expected = sync.predict_batch(images, errors="return")

    async def main():
        async with _client(server, protocol, detector, batch_images=2) as client:
            with pytest.raises(InvalidImageError):
                await client.predict(b"junk")
            with pytest.raises(InvalidImageError):
                await client.predict_batch(images)
            return await client.predict_batch(images, errors="return")

    batch = asyncio.run(main())
    assert isinstance(batch[3], InvalidImageError) and isinstance(expected[3], InvalidImageError)
    assert [len(p.faces) for p in batch[:3]] == [len(p.faces) for p in expected[:3]] == [1, 0, 2]
    for got, want in zip(batch[:3], expected[:3], strict=True):
        _assert_same(got, want, tol=1e-3)  # float32 results depend slightly on the batch size


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_several_endpoints_fail_over_to_the_live_one(server, protocol, detector, astronaut_bgr):
    live = f"127.0.0.1:{server.grpc_port if protocol == 'grpc' else server.rest_port}"

    async def main():
        async with AsyncEmotionClient(protocol=protocol, endpoints=("127.0.0.1:9", live), timeout=5,
                                      detector=detector) as client:
            assert isinstance(client.transport, AsyncBalancedTransport)
            preds = [await client.predict(astronaut_bgr) for _ in range(3)]
            return preds, client.transport.counts()

    preds, counts = asyncio.run(main())
    assert all(len(p.faces) == 1 for p in preds)
    assert counts[live]["ok"] == 6 and counts[live]["failed"] == 0  # 2 models x 3 predicts
    assert counts["127.0.0.1:9"]["failed"] >= 1 and counts["127.0.0.1:9"]["ok"] == 0


# -- the asyncio HTTP/1.1 client against a scripted server ------------------------------------------
STATUS_JSON = b'{"model_version_status": [{"version": "3", "state": "AVAILABLE", "status": {}}]}'


def _reply(status: str, body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{head}\r\n".encode() + body


def _chunked(body: bytes) -> bytes:
    half = len(body) // 2
    chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in (body[:half], body[half:]))
    return _reply("200 OK", chunks + b"0\r\n\r\n", "Transfer-Encoding: chunked")


def test_rest_pool_retries_503_reconnects_after_server_close_and_reads_chunked():
    replies = [  # (bytes, close the connection afterwards)
        (_reply("503 Service Unavailable", b'{"error": "loading"}', "Content-Length: 20"), False),
        (_reply("200 OK", STATUS_JSON, f"Content-Length: {len(STATUS_JSON)}"), True),
        (_chunked(STATUS_JSON), False),
    ]
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while replies:
                requests.append(await reader.readuntil(b"\r\n\r\n"))
                reply, close = replies.pop(0)
                writer.write(reply)
                await writer.drain()
                if close:
                    break
        except asyncio.IncompleteReadError:  # the client closed its connection
            pass
        writer.close()

    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = AsyncRestTransport("127.0.0.1", port, policy=RetryPolicy(retries=2, backoff=0.01))
        try:
            first = await transport.status(ModelRef("m"), 5)
            await asyncio.sleep(0.05)  # the server's close reaches the pooled connection
            second = await transport.status(ModelRef("m"), 5)
            return first, second, transport.pool_stats()
        finally:
            await transport.close()
            server.close()

    first, second, pool = asyncio.run(main())
    assert first == second and first[0].version == 3 and first[0].state == "AVAILABLE"
    assert pool == {"idle": 1, "busy": 0, "opened": 2, "closed": 1}
    assert all(r.startswith(b"GET /v1/models/m HTTP/1.1\r\n") and b"Host: 127.0.0.1:" in r for r in requests)
