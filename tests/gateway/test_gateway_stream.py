"""`WS /v1/stream`: predictions per frame with stable track ids and smoothed scores, latest-wins back-pressure,
garbage frames answered with an error message while the stream goes on, and authentication."""

from __future__ import annotations

import asyncio

import cv2
import pytest
from emotion_ai.gateway.stream import CLOSE_POLICY, LatestSlot
from starlette.websockets import WebSocketDisconnect

from .conftest import gateway_client, settings_for

CLIP_FRAMES = 40  # the synthetic clip's period: frames 0..7 swing the face ~25 px per frame


@pytest.fixture(scope="module")
def frames(photos) -> list[bytes]:
    out = []
    for i in range(8):
        ok, buf = cv2.imencode(".jpg", photos.astronaut_clip_frame(i, CLIP_FRAMES), [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert ok
        out.append(buf.tobytes())
    return out


def test_frames_in_lockstep_keep_one_track_with_smoothed_scores(api, frames):
    with api.websocket_connect("/v1/stream?detect_every=3&smoothing=0.5") as ws:
        answers = []
        for frame in frames[:6]:
            ws.send_bytes(frame)
            answers.append(ws.receive_json())
    assert [a["type"] for a in answers] == ["prediction"] * 6
    assert [a["frame"] for a in answers] == list(range(6))
    assert all(a["dropped"] == 0 for a in answers)
    assert [len(a["faces"]) for a in answers] == [1] * 6
    assert len({a["faces"][0]["track_id"] for a in answers}) == 1
    assert any(a["detected"] for a in answers) and not all(a["detected"] for a in answers)  # followed between
    for a in answers:
        face = a["faces"][0]
        assert len(face["keypoints"]) == 15
        assert face["smoothed_emotion"] == "happy" and abs(sum(face["smoothed_scores"].values()) - 1) < 1e-3


def test_a_burst_drops_old_frames_and_answers_the_newest(api, frames):
    sent = 12
    with api.websocket_connect("/v1/stream") as ws:
        for i in range(sent):
            ws.send_bytes(frames[i % len(frames)])
        answers = []
        while not answers or answers[-1]["frame"] != sent - 1:
            answers.append(ws.receive_json())
    numbers = [a["frame"] for a in answers]
    assert numbers == sorted(numbers) and numbers[-1] == sent - 1
    assert all(a["type"] == "prediction" for a in answers)
    # every frame is either answered or counted as dropped: nothing queues without bound
    assert len(answers) + answers[-1]["dropped"] == sent
    assert answers[-1]["dropped"] >= 1  # 12 frames arrive far faster than one is analysed


def test_garbage_frames_get_an_error_and_the_stream_goes_on(api, frames):
    with api.websocket_connect("/v1/stream") as ws:
        ws.send_bytes(b"not an image")
        bad = ws.receive_json()
        ws.send_text("hello")
        text = ws.receive_json()
        ws.send_bytes(frames[0][: len(frames[0]) // 3])
        truncated = ws.receive_json()
        ws.send_bytes(frames[0])
        good = ws.receive_json()
    assert bad["type"] == "error" and bad["frame"] == 0 and bad["problem"]["status"] == 422
    assert text["type"] == "error" and text["problem"]["status"] == 400
    assert truncated["type"] == "error" and truncated["frame"] == 1
    assert good["type"] == "prediction" and good["frame"] == 2 and len(good["faces"]) == 1


def test_stream_needs_the_token_when_auth_is_on(model_server, frames):
    with gateway_client(settings_for(model_server, api_keys=frozenset({"tok"}))) as client:
        with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect("/v1/stream") as ws:
            ws.receive_json()
        assert info.value.code == CLOSE_POLICY
        with client.websocket_connect("/v1/stream?access_token=tok") as ws:
            ws.send_bytes(frames[0])
            assert ws.receive_json()["type"] == "prediction"
        with client.websocket_connect("/v1/stream", headers={"authorization": "Bearer tok"}) as ws:
            ws.send_bytes(frames[0])
            assert len(ws.receive_json()["faces"]) == 1
        metrics = client.get("/metrics").text
        assert 'emotion_ai_gateway_stream_frames_total{outcome="analysed"} 2.0' in metrics


def test_latest_slot_keeps_only_the_newest_item():
    async def scenario() -> list:
        slot = LatestSlot()
        dropped = [slot.put(1), slot.put(2), slot.put(3)]
        first = await slot.get()
        slot.put(4)
        slot.close()
        return [dropped, first, await slot.get(), await slot.get()]

    assert asyncio.run(scenario()) == [[False, True, True], 3, 4, None]


def test_an_unexpected_error_costs_its_frame_not_the_stream(api, frames, monkeypatch):
    from emotion_ai.streaming import FaceStream

    real = FaceStream.process
    calls = []

    def flaky(self, frame, index, color="bgr"):
        calls.append(index)
        if len(calls) == 1:
            raise RuntimeError("secret internals")
        return real(self, frame, index, color)

    monkeypatch.setattr(FaceStream, "process", flaky)
    with api.websocket_connect("/v1/stream") as ws:
        ws.send_bytes(frames[0])
        broken = ws.receive_json()
        ws.send_bytes(frames[1])
        good = ws.receive_json()
    assert broken["type"] == "error" and broken["problem"]["status"] == 500 and "secret" not in str(broken)
    assert good["type"] == "prediction" and good["frame"] == 1 and len(good["faces"]) == 1
