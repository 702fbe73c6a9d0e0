"""Turn whatever the caller passes (path, encoded bytes, numpy array) into a BGR uint8 image.

Every failure becomes an `InvalidImageError` with a sentence a person can act on; nothing here
lets an OpenCV assertion or a decoder crash escape. Encoded images have their header dimensions
checked *before* decoding, so a tiny file that claims to be 100000 x 100000 pixels is refused
without allocating gigabytes.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from .errors import InvalidImageError

#: Default upper bound on width * height of an input image (about 8000 x 8000).
MAX_PIXELS = 64_000_000
#: Default upper bound on an encoded image file.
MAX_FILE_BYTES = 256 * 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray
ColorOrder = Literal["bgr", "rgb"]


def probe_size(data: bytes) -> tuple[int, int] | None:
    """Read (width, height) from a PNG, JPEG, GIF, BMP or WebP header without decoding.

    Returns None for formats it does not know (OpenCV's own limits then apply) and raises
    `InvalidImageError` for a known format whose header is cut short.
    """
    try:
        if data[:8] == PNG_SIGNATURE:
            w, h = struct.unpack(">II", data[16:24])
            return w, h
        if data[:6] in (b"GIF87a", b"GIF89a"):
            w, h = struct.unpack("<HH", data[6:10])
            return w, h
        if data[:2] == b"BM":
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
    except struct.error as exc:
        raise InvalidImageError("the image header is truncated") from exc
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF_MARKERS:
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + length
    return None


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"the image has no pixels ({width} x {height})")
    if width * height > max_pixels:
        raise InvalidImageError(
            f"the image is {width} x {height} pixels, more than the limit of {max_pixels:,} pixels"
        )


def _png_problem(data: bytes) -> str | None:
    """What is wrong with a PNG's chunk chain, or None when it reaches IEND intact (bytes after IEND are
    allowed). A chunk whose length runs past the data (OpenCV would allocate it: a 154-byte file with a
    4 GB IEND length took 3-5 s), a type that is not four ASCII letters, or no IEND, are refused."""
    pos = len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        if not kind.isalpha():
            return f"PNG chunk type {kind!r} is not four letters"
        if pos + 12 + length > len(data):
            return f"PNG without its IEND chunk (cut off in a {kind.decode()} chunk of {length:,} bytes)"
        if kind == b"IEND":
            return None if length == 0 else "PNG IEND chunk with a payload"
        pos += 12 + length  # length, type, payload, CRC
    return "PNG without its IEND chunk"


def decode_bytes(data: bytes, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an encoded image (any format OpenCV reads; GIF gives its first frame) to BGR uint8."""
    if len(data) == 0:
        raise InvalidImageError("the image is empty (0 bytes)")
    size = probe_size(data)
    if size is not None:
        _check_pixels(*size, max_pixels)
    problem = _png_problem(data) if data[:8] == PNG_SIGNATURE else None
    if problem:  # caught here so that libpng never prints its own error, nor OpenCV allocates a bogus length
        raise InvalidImageError(f"the data is a truncated or corrupt image ({problem})")
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        # IMREAD_COLOR: 16-bit -> 8-bit, gray/CMYK/palette -> BGR, no alpha, EXIF rotation applied.
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise InvalidImageError(f"the image could not be decoded ({_first_line(exc)})") from exc
    if image is None:
        kind = (
            "a truncated or corrupt image" if size is not None else "not an image OpenCV can read"
        )
        raise InvalidImageError(f"the data is {kind}")
    _check_pixels(image.shape[1], image.shape[0], max_pixels)
    return image


def read_path(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read and decode an image file (unicode paths work; folders and huge files are refused)."""
    p = Path(path)
    try:
        if p.is_dir():
            raise InvalidImageError(f"{p} is a directory, not an image")
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InvalidImageError(f"{p} is {size:,} bytes, larger than {MAX_FILE_BYTES:,} bytes")
        data = p.read_bytes()
    except FileNotFoundError as exc:
        raise InvalidImageError(f"{p}: no such file") from exc
    except OSError as exc:
        raise InvalidImageError(f"{p}: cannot read the file ({exc.strerror or exc})") from exc
    try:
        return decode_bytes(data, max_pixels=max_pixels)
    except InvalidImageError as exc:
        raise InvalidImageError(f"{p}: {exc}") from exc


def from_array(
    array: np.ndarray, *, color: ColorOrder = "bgr", max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Normalise a numpy image to contiguous BGR uint8.

    Accepts H x W (gray), H x W x 1, H x W x 3 (BGR, or RGB with color="rgb") and
    H x W x 4 (BGRA/RGBA).
    uint8 is taken as is, uint16 is scaled by 1/257, bool to 0/255, floats in [0, 1] are scaled by
    255 (otherwise clipped to 0..255).
    """
    if not isinstance(array, np.ndarray):
        raise InvalidImageError(f"expected a numpy array, got {type(array).__name__}")
    if color not in ("bgr", "rgb"):
        raise InvalidImageError(f"color must be 'bgr' or 'rgb', not {color!r}")
    a = array
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise InvalidImageError(
            f"an image array must be H x W, H x W x 1, H x W x 3 or H x W x 4, not {array.shape}"
        )
    _check_pixels(a.shape[1], a.shape[0], max_pixels)
    a = _to_uint8(a)
    if a.ndim == 2:
        out = cv2.cvtColor(a, cv2.COLOR_GRAY2BGR)
    elif a.shape[2] == 4:
        out = cv2.cvtColor(a, cv2.COLOR_RGBA2BGR if color == "rgb" else cv2.COLOR_BGRA2BGR)
    elif color == "rgb":
        out = cv2.cvtColor(a, cv2.COLOR_RGB2BGR)
    else:
        out = a
    return np.ascontiguousarray(out)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        return (a.astype(np.uint32) // 257).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InvalidImageError("the image array contains NaN or infinite values")
        scale = 255.0 if a.size and float(a.max()) <= 1.0 else 1.0
        return np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        return np.clip(a, 0, 255).astype(np.uint8)
    raise InvalidImageError(f"unsupported image array dtype {a.dtype}")


def load_image(
    image: ImageInput, *, color: ColorOrder = "bgr", max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Load a path, encoded bytes or numpy array as a contiguous BGR uint8 image."""
    if isinstance(image, np.ndarray):
        return from_array(image, color=color, max_pixels=max_pixels)
    if isinstance(image, bytes | bytearray | memoryview):
        return decode_bytes(bytes(image), max_pixels=max_pixels)
    if isinstance(image, str | os.PathLike):
        return read_path(image, max_pixels=max_pixels)
    raise InvalidImageError(
        f"cannot read an image from a {type(image).__name__}; pass a path, bytes or a numpy array"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
