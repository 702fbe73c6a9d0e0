"""Screenshot of the gateway's web page with an analysed photo, for the docs (docs/gateway_page.png).

    .venv/bin/python scripts/gateway_screenshot.py                      # the astronaut -> docs/gateway_page.png
    .venv/bin/python scripts/gateway_screenshot.py --photo four --out /tmp/page.png

Starts the embedded server with the committed models and `emotion-ai gateway` (uvicorn) on free loopback ports,
opens the page in headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium: the same code
as tests/gateway/test_gateway_browser.py, bench/gateway_support.py), chooses the photo in the page's file input,
waits for the result and saves the page, at most `--width` pixels wide, as a 256-colour PNG.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import gateway_support  # noqa: E402
import photos  # noqa: E402
from emotion_ai_serving.local_server import LocalServer  # noqa: E402

PHOTOS = {"one": photos.one_face_jpeg, "four": photos.four_face_jpeg, "six": photos.six_face_jpeg}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photo", choices=sorted(PHOTOS), default="one", help="bench/photos.py photo (default: one)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "gateway_page.png")
    p.add_argument("--models", type=Path, default=REPO / "models_export")
    p.add_argument("--width", type=int, default=1000, help="browser window and image width in pixels")
    p.add_argument("--height", type=int, default=620, help="browser window height in pixels")
    args = p.parse_args()
    if (why := gateway_support.have_chromium()) is not None:
        print(f"gateway_screenshot: {why}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp, LocalServer(args.models) as server, \
            gateway_support.gateway(server.grpc_port) as url, \
            gateway_support.chromium(size=(args.width, args.height)) as driver:
        photo = Path(tmp) / f"{args.photo}.jpg"
        photo.write_bytes(PHOTOS[args.photo]())
        state = gateway_support.analyze_in_page(driver, url, photo)
        if state["error"]:
            print(f"gateway_screenshot: the page says {state['status']!r}", file=sys.stderr)
            return 1
        gateway_support.screenshot_png(driver, args.out, width=args.width)
    print(f"{args.out}: {state['status']} ({args.out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
