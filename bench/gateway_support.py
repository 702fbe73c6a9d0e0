"""The gateway for real, shared by the browser test, scripts/gateway_screenshot.py and bench/gateway_bench.py:
`emotion-ai gateway` under uvicorn in a subprocess, headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium) on its web page, and a Y4M clip for Chromium's fake camera.

Nothing here downloads anything: Selenium is given /usr/bin/chromedriver, so Selenium Manager never runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import requests
from emotion_ai_serving.local_server import free_port

#: Where Debian's packages put the browser and its driver (`apt-get install chromium chromium-driver`).
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMEDRIVER_CANDIDATES = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) executables, `CHROMIUM` / `CHROMEDRIVER` first, or None where either is missing."""
    def first(env: str, names: tuple[str, ...]) -> str | None:
        for name in (os.environ.get(env, ""), *names):
            if name and Path(name).is_file() and os.access(name, os.X_OK):
                return name
        return None

    browser, driver = first("CHROMIUM", CHROMIUM_CANDIDATES), first("CHROMEDRIVER", CHROMEDRIVER_CANDIDATES)
    return (browser, driver) if browser and driver else None


@contextmanager
def gateway(grpc_port: int, *flags: str, env: dict[str, str] | None = None,
            startup_s: float = 60.0) -> Iterator[str]:
    """`emotion-ai gateway` (uvicorn) on a free loopback port in front of the model server at 127.0.0.1:`grpc_port`;
    yields its base URL (`http://127.0.0.1:PORT`) once /readyz answers 200, and kills it after."""
    port = free_port()
    # Its log goes to a file, not a pipe: a pipe nobody reads would block the gateway once it filled up.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "emotion_ai.cli", "gateway", "--port", str(port), "--grpc-port", str(grpc_port),
             "--wait", "30", *flags],
            env=dict(os.environ, EMOTION_AI_HOST="127.0.0.1", **(env or {})), stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + startup_s
        try:
            while True:
                try:
                    if requests.get(url + "/readyz", timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    log.seek(0)
                    raise RuntimeError(f"the gateway did not start:\n{log.read().decode(errors='replace')}")
                time.sleep(0.2)
            yield url
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """Write BGR frames (all the same size, even sides) as an uncompressed 4:2:0 Y4M clip: the format
    Chromium's `--use-file-for-fake-video-capture` plays (looped) as the camera."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())  # Y, then U, then V planes
    return path


@contextmanager
def chromium(fake_video: Path | None = None, size: tuple[int, int] = (1100, 900)) -> Iterator[Any]:
    """A headless Chromium (Selenium WebDriver); with `fake_video`, its camera is that Y4M clip and
    camera permission is granted without a prompt."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = chromium_paths()
    if found is None:
        raise RuntimeError("no chromium and chromedriver (apt-get install chromium chromium-driver)")
    browser, driver_path = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                f"--window-size={size[0]},{size[1]}"):
        options.add_argument(arg)
    if fake_video is not None:
        options.add_argument("--use-fake-ui-for-media-stream")
        options.add_argument("--use-fake-device-for-media-stream")
        options.add_argument(f"--use-file-for-fake-video-capture={fake_video}")
    service = Service(executable_path=driver_path, log_output=subprocess.DEVNULL)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


def wait_for(condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.1) -> Any:
    """Poll `condition()` until it is truthy (returned), or raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(poll)


#: What the page shows, read in the browser: the status line, the JSON panel, each face card's title,
#: the canvas size, and the canvas pixel on the middle of each face box's left edge (RGBA).
PAGE_STATE_JS = """
const canvas = document.getElementById('canvas');
const text = document.getElementById('json').textContent;
let doc = null; try { doc = JSON.parse(text); } catch (e) {}
const ctx = canvas.getContext('2d');
const edges = doc && doc.faces ? doc.faces.map(f => Array.from(
    ctx.getImageData(Math.round(f.box[0]), Math.round(f.box[1] + f.box[3] / 2), 1, 1).data)) : [];
return {status: document.getElementById('status').textContent,
        error: document.getElementById('status').className === 'error',
        json: text,
        cards: Array.from(document.querySelectorAll('#faces .face h2')).map(h => h.textContent),
        canvas: [canvas.width, canvas.height], edges: edges,
        camera: document.getElementById('camera').textContent};
"""


def page_state(driver: Any) -> dict:
    return driver.execute_script(PAGE_STATE_JS)


def analyze_in_page(driver: Any, url: str, photo: Path, timeout: float = 60.0) -> dict:
    """Open the page at `url`, choose `photo` in its file input, wait for the result; the page's state after."""
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    driver.execute_script("document.getElementById('json').textContent = '';")
    driver.find_element(By.ID, "file").send_keys(str(photo.resolve()))

    def done() -> dict | None:
        state = page_state(driver)
        return state if state["error"] or state["json"] else None

    return wait_for(done, timeout, f"the page to show the analysis of {photo.name}")


def screenshot_png(driver: Any, path: Path, width: int = 1000) -> Path:
    """Save the whole page (its full height, not only the window) as a PNG at most `width` pixels wide
    (256 colours, to keep it small)."""
    from PIL import Image

    size = driver.execute_script("return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False})
    try:
        raw = driver.get_screenshot_as_png()
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".raw.png")
    tmp.write_bytes(raw)
    try:
        with Image.open(tmp) as shot:
            rgb = shot.convert("RGB")
            if rgb.width > width:
                rgb = rgb.resize((width, round(rgb.height * width / rgb.width)), Image.LANCZOS)
            rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
                path, optimize=True)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def have_chromium() -> str | None:
    """None where the browser test can run, else why not (for a skip reason)."""
    if chromium_paths() is None:
        return "no chromium and chromedriver here (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -r requirements-dev.txt)"
    return None


__all__ = ["analyze_in_page", "chromium", "chromium_paths", "gateway", "have_chromium", "page_state",
           "screenshot_png", "wait_for", "write_y4m"]
