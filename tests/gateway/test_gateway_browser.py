"""The web page in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`, via Selenium)
on `emotion-ai gateway` (uvicorn, a subprocess) in front of the embedded server with the committed models.

A photo chosen in the page's file input comes back drawn with one box per face and a card per face; the camera
(Chromium's fake camera playing a Y4M clip of the astronaut) streams over `WS /v1/stream` and the live results
keep coming. Skips where chromium, its driver or selenium are missing (.ci/run installs them).
"""

from __future__ import annotations

import json
import re

import pytest

from ..quality.quality_support import bench_module

support = bench_module("gateway_support")
pytestmark = pytest.mark.skipif(support.have_chromium() is not None, reason=str(support.have_chromium()))


@pytest.fixture(scope="module")
def page_url(model_server):
    with support.gateway(model_server.grpc_port) as url:
        yield url


@pytest.fixture(scope="module")
def clip(tmp_path_factory, photos):
    """Two seconds of the astronaut swinging left-right (10 fps, looped by Chromium): the fake camera."""
    frames = [photos.astronaut_clip_frame(i, 20) for i in range(20)]
    return support.write_y4m(tmp_path_factory.mktemp("camera") / "astronaut.y4m", frames, fps=10)


@pytest.fixture(scope="module")
def browser(clip):
    with support.chromium(fake_video=clip) as driver:
        yield driver


def _is_box_green(rgba: list[int]) -> bool:
    """The page strokes face boxes in #00c800 (anti-aliased over the photo where a box edge is fractional)."""
    r, g, b, _ = rgba
    return g >= 150 and r <= 110 and b <= 110


def _severe_console_messages(driver) -> list[str]:
    return [m["message"] for m in driver.get_log("browser") if m["level"] == "SEVERE"]


@pytest.mark.parametrize("name", ["one_face", "four_face"])
def test_a_chosen_photo_is_drawn_with_its_faces_and_labels(browser, page_url, photos, tmp_path, name):
    photo = tmp_path / f"{name}.jpg"
    photo.write_bytes(getattr(photos, f"{name}_jpeg")())
    state = support.analyze_in_page(browser, page_url, photo)
    assert not state["error"], state["status"]
    doc = json.loads(state["json"])  # the JSON panel holds the gateway's answer, parseable
    faces = doc["faces"]
    assert len(faces) == {"one_face": 1, "four_face": 4}[name]
    assert state["status"] == f"{len(faces)} face(s) in {round(doc['timings_ms']['total'])} ms."
    assert state["canvas"] == [640, 480]  # the photo's size: boxes are drawn in its pixel coordinates
    assert len(state["cards"]) == len(faces)  # a card (title + 7 score bars) per face
    assert [re.sub(r"^Face \d+: ", "", c) for c in state["cards"]] == [f["emotion"] for f in faces]
    assert all(f["emotion"] == "happy" for f in faces)
    assert len(state["edges"]) == len(faces) and all(_is_box_green(px) for px in state["edges"]), state["edges"]
    assert not _severe_console_messages(browser)  # no script error, CSP violation or failed load


def test_the_camera_streams_over_the_websocket(browser, page_url):
    from selenium.webdriver.common.by import By

    browser.get(page_url + "/")
    browser.find_element(By.ID, "camera").click()
    frame = re.compile(r"^Frame (\d+): (\d+) face\(s\), (\d+) frame\(s\) skipped so far\.$")

    def live(after: int = -1):
        state = support.page_state(browser)
        assert not state["error"], state["status"]
        found = frame.match(state["status"])
        return (int(found.group(1)), state) if found and int(found.group(1)) > after else None

    first, _ = support.wait_for(live, 30, "the first live result over WS /v1/stream")
    later, state = support.wait_for(lambda: live(first + 3), 30, "more live results")
    assert later > first + 3 and state["camera"] == "Stop camera"
    doc = json.loads(state["json"])
    assert doc["type"] == "prediction" and doc["frame"] == later
    assert len(doc["faces"]) == 1 and doc["faces"][0]["track_id"] is not None
    face = doc["faces"][0]
    assert state["cards"] == [f"Face 1 (track {face['track_id']}): {face['smoothed_emotion'] or face['emotion']}"]
    assert face["smoothed_emotion"] == "happy"
    browser.find_element(By.ID, "camera").click()  # stop: the page closes the socket normally
    support.wait_for(lambda: support.page_state(browser)["camera"] == "Start camera", 10, "the camera to stop")
    assert not support.page_state(browser)["error"]
    assert not _severe_console_messages(browser)
