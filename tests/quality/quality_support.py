"""Helpers of the reliability/security suite: a real `emotion-ai-serve` process on fixed ports,
the generated bad-input corpus, and small statistics.  Nothing here stands in for a server."""

from __future__ import annotations

import io
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from emotion_ai.local_server import free_port, model_config, port_open, serve_executable

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))  # the benchmark modules
import photos

STARTUP_TIMEOUT_S = 180.0


@dataclass
class ServeProcess:
    """`emotion-ai-serve` in a subprocess on ports that survive a restart (for fault tests).

    No `--host` is passed unless `host` is set, so the server's own default bind is what runs.
    """

    models_root: Path
    workdir: Path
    extra_args: list[str] = field(default_factory=list)
    host: str | None = None
    grpc_port: int = field(default_factory=free_port)
    rest_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"server-{self.starts}.log"

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> ServeProcess:
        exe = serve_executable()
        assert exe is not None, "emotion-ai-serve is not installed (pip install -e serving)"
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "models.config"
        config.write_text(model_config(self.models_root))
        self.starts += 1
        cmd = [
            exe,
            f"--port={self.grpc_port}",
            f"--rest_api_port={self.rest_port}",
            f"--model_config_file={config}",
            *([f"--host={self.host}"] if self.host else []),
            *self.extra_args,
        ]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while not (port_open(self.rest_port) and port_open(self.grpc_port)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"server not ready in {timeout:g} s:\n{self.log()}")
            time.sleep(0.2)
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the crash case, no graceful shutdown."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode

    def client(self, protocol: str = "grpc", **kwargs):
        from emotion_ai import EmotionClient

        return EmotionClient(
            host="127.0.0.1",
            protocol=protocol,
            grpc_port=self.grpc_port,
            rest_port=self.rest_port,
            **kwargs,
        )

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


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
    return cv2.resize(photos.astronaut_bgr(), (size, size), interpolation=cv2.INTER_AREA)


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
