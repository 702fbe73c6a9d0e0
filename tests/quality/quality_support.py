"""Helpers of the reliability/security suite: the benchmark modules, listening sockets,
the generated bad-input corpus, and small statistics.  Nothing here stands in for a server."""

from __future__ import annotations

import importlib
import io
import os
import socket
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np

STARTUP_TIMEOUT_S = 180.0
BENCH = Path(__file__).resolve().parents[2] / "bench"


# -- benchmark modules -----------------------------------------------------------------------------
def bench_module(name: str) -> ModuleType:
    """`bench/<name>.py` as a module: the one way tests import benchmark code (`bench_module("photos")`).

    bench/ is not a package: its scripts run as `python bench/<name>.py` and import their siblings by
    plain name (`from bench_common import ...`), so bench/ is put first on sys.path (as it is for a script)
    and the module imported normally, once per session. A same-named module found elsewhere is an error.
    """
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    module = importlib.import_module(name)
    if Path(module.__file__ or "").resolve().parent != BENCH:
        raise ImportError(f"{name!r} resolved to {module.__file__}, not to a module in {BENCH}")
    return module


# -- listening sockets (Linux /proc) ---------------------------------------------------------------
def listening_addresses(port: int) -> set[str]:
    """Addresses with a LISTEN socket on `port`, from /proc/net/tcp{,6} ("127.0.0.1", "::", ...)."""
    found: set[str] = set()
    for name, fam in (("tcp", 4), ("tcp6", 6)):
        table = Path("/proc/net") / name
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            parts = line.split()
            local, state = parts[1], parts[3]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(addr_hex)
            if fam == 4:
                found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


# -- images ----------------------------------------------------------------------------------------
def astronaut_bgr(size: int = 320) -> np.ndarray:
    """skimage's astronaut photo (one real frontal face), BGR, resized to size x size."""
    return cv2.resize(bench_module("photos").astronaut_bgr(), (size, size), interpolation=cv2.INTER_AREA)


def encode(image: np.ndarray, ext: str = ".jpg") -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def png_bomb(width: int, height: int, *, complete: bool) -> bytes:
    """A 1-bit grayscale PNG claiming width x height. complete=True adds a real, highly
    compressed all-zero IDAT (a genuine decompression bomb); False stops after the header."""
    head = b"\x89PNG\r\n\x1a\n" + _png_chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    )
    if not complete:
        return head + _png_chunk(b"IEND", b"")
    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return head + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def jpeg_bomb(width: int = 65000, height: int = 65000) -> bytes:
    """A real JPEG's bytes with its SOF0 frame header rewritten to claim width x height."""
    data = bytearray(encode(np.full((16, 16, 3), 127, np.uint8)))
    i = data.index(b"\xff\xc0")
    data[i + 5 : i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@dataclass(frozen=True)
class Case:
    """One corpus entry: how the client must treat it.

    outcome: "error" (InvalidImageError), "faces" (decodes; at least one face found) or
    "ok" (decodes; any number of faces, including none).
    """

    name: str
    filename: str | bytes
    outcome: str
    note: str = ""


def build_corpus(root: Path) -> dict[str, tuple[Case, Path]]:
    """Write the bad-input corpus under `root` (generated here, nothing committed)."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    face = astronaut_bgr(320)
    face_rgb = face[..., ::-1]
    jpg = encode(face, ".jpg")
    png = encode(face, ".png")
    out: dict[str, tuple[Case, Path]] = {}

    def put(case: Case, payload: bytes | None) -> None:
        name = os.fsdecode(case.filename) if isinstance(case.filename, bytes) else case.filename
        path = root / name
        if payload is not None:
            path.write_bytes(payload)
        out[case.name] = (case, path)

    def pil_bytes(img: Image.Image, fmt: str, **kw: object) -> bytes:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        return buf.getvalue()

    put(Case("empty", "empty.jpg", "error"), b"")
    put(Case("text_as_jpg", "notes.jpg", "error"), b"this is a text file, not a JPEG\n" * 20)
    put(Case("truncated_jpeg", "truncated.jpg", "error"), jpg[: len(jpg) // 3])
    put(Case("truncated_png", "truncated.png", "error"), png[: len(png) // 3])
    bad_header = bytearray(jpg)
    bad_header[2:40] = b"\x00" * 38  # wipe the APP0/DQT markers right after SOI
    put(Case("corrupt_jpeg_header", "corrupt_header.jpg", "error"), bytes(bad_header))
    put(Case("one_pixel", "one_pixel.png", "ok"), encode(np.zeros((1, 1, 3), np.uint8), ".png"))
    put(
        Case("png16", "sixteen_bit.png", "faces"),
        encode((face.astype(np.uint16) * 257), ".png"),
    )
    rgba = np.dstack([face_rgb, np.full(face.shape[:2], 200, np.uint8)])
    put(Case("rgba_png", "rgba.png", "faces"), pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG"))
    gray = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    put(Case("grayscale", "gray.jpg", "faces"), encode(gray, ".jpg"))
    cmyk = Image.fromarray(np.ascontiguousarray(face_rgb), "RGB").convert("CMYK")
    put(Case("cmyk_jpeg", "cmyk.jpg", "faces"), pil_bytes(cmyk, "JPEG", quality=92))
    put(
        Case("png_bomb_header", "bomb_header.png", "error"),
        png_bomb(100_000, 100_000, complete=False),
    )
    put(Case("png_bomb", "bomb.png", "error"), png_bomb(20_000, 20_000, complete=True))
    put(Case("jpeg_bomb_header", "bomb.jpg", "error"), jpeg_bomb())
    frames = [
        Image.fromarray(np.ascontiguousarray(np.roll(face_rgb, 8 * k, axis=1))).convert("P")
        for k in range(3)
    ]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    put(Case("animated_gif", "animated.gif", "faces"), gif.getvalue())
    folder = root / "folder.jpg"
    folder.mkdir(exist_ok=True)
    put(Case("directory", "folder.jpg", "error"), None)
    put(Case("missing", "does_not_exist.jpg", "error"), None)
    put(Case("non_utf8_name_ok", b"caf\xe9-\xff.jpg", "faces"), jpg)
    put(Case("non_utf8_name_bad", b"bad-\xfe\xff.png", "error"), b"\x89PNG\r\n\x1a\nrubbish")
    put(Case("good_jpeg", "good.jpg", "faces"), jpg)
    return out
