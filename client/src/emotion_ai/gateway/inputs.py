"""Reading images out of requests: raw bodies, multipart forms and JSON base64, within the size limits.

Images arrive as bytes only; a URL or a path is never fetched or opened.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from ..errors import InvalidImageError
from ..images import probe_size
from .problems import ProblemError

#: Media types of a raw image body (OpenCV decodes these; `image/*` in general is accepted too).
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif", "image/tiff")
#: Media types a request may carry images in.
REQUEST_TYPES = (*IMAGE_TYPES, "application/octet-stream", "multipart/form-data", "application/json")


@dataclass(frozen=True)
class ImagePart:
    """One image of a request.

    Attributes:
        data: the encoded image.
        name: its name in the request (a multipart file name, "images[2]" in JSON, "body" for a raw body).
    """

    data: bytes
    name: str


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused once it passes `limit` bytes (before all of it is read).

    Args:
        request: the request.
        limit: the most bytes accepted.

    Returns:
        The body.

    Raises:
        ProblemError: 413 body-too-large.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ProblemError:
    return ProblemError(413, "body-too-large", f"the request body is larger than the limit of {limit:,} bytes")


def media_type(request: Request) -> str:
    """The request's media type, lower case, without parameters ("" when there is no Content-Type)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_images(request: Request, *, limit: int, max_images: int) -> list[ImagePart]:
    """The images of a request, in order.

    A raw image body (`image/*` or `application/octet-stream`) is one image; a `multipart/form-data`
    form gives each of its files; JSON is `{"image": {"b64": ...}}` or `{"images": [{"b64": ...}, ...]}`.

    Args:
        request: the request.
        limit: the most body bytes accepted.
        max_images: the most images accepted.

    Returns:
        At least one image.

    Raises:
        ProblemError: 413 body-too-large or too-many-images, 415 unsupported-media-type, 400 invalid-request
            (no image, malformed JSON or base64, an empty image).
    """
    kind = media_type(request)
    body = await read_body(request, limit)
    if kind == "multipart/form-data":
        parts = await _multipart(request, body, max_images)
    elif kind == "application/json" or kind.endswith("+json"):
        parts = _json_images(body)
    elif kind.startswith("image/") or kind == "application/octet-stream":
        parts = [ImagePart(body, "body")]
    else:
        raise ProblemError(415, "unsupported-media-type", f"Content-Type {kind or '(none)'!r} is not an image, "
                           "multipart/form-data or application/json", accepted=list(REQUEST_TYPES))
    if not parts:
        raise ProblemError(400, "invalid-request", "the request holds no image")
    if len(parts) > max_images:
        raise ProblemError(413, "too-many-images", f"{len(parts)} images, more than the limit of {max_images}")
    for part in parts:
        if not part.data:
            raise ProblemError(400, "invalid-request", f"the image {part.name!r} is empty (0 bytes)")
    return parts


async def _multipart(request: Request, body: bytes, max_images: int) -> list[ImagePart]:
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=max_images, max_fields=max_images + 16)
    except Exception as exc:  # python-multipart's and Starlette's parse errors have no common base
        if "too many files" in str(exc).lower():
            raise ProblemError(413, "too-many-images", f"more than the limit of {max_images} images") from None
        raise ProblemError(400, "invalid-request", f"malformed multipart/form-data: {exc}") from None
    try:
        files = [(key, v) for key, v in form.multi_items() if isinstance(v, UploadFile)]
        return [ImagePart(await f.read(), f.filename or key) for key, f in files]
    finally:
        await form.close()


def _json_images(body: bytes) -> list[ImagePart]:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProblemError(400, "invalid-request", f"malformed JSON: {exc}") from None
    if isinstance(doc, dict) and "image" in doc:
        return [ImagePart(_b64(doc["image"], "image"), "image")]
    if isinstance(doc, dict) and isinstance(doc.get("images"), list):
        return [ImagePart(_b64(item, f"images[{i}]"), f"images[{i}]") for i, item in enumerate(doc["images"])]
    raise ProblemError(400, "invalid-request", 'JSON must be {"image": {"b64": "..."}} or {"images": [{"b64": "..."}]}')


def _b64(item: object, where: str) -> bytes:
    if not (isinstance(item, dict) and isinstance(item.get("b64"), str)):
        hint = " (URLs are not fetched: send the image's bytes)" if isinstance(item, dict) and "url" in item else ""
        raise ProblemError(400, "invalid-request", f'{where} must be {{"b64": "<base64 of the image>"}}{hint}')
    try:
        return base64.b64decode(item["b64"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProblemError(400, "invalid-request", f"{where}.b64 is not valid base64: {exc}") from None


def check_pixels(data: bytes, max_pixels: int) -> None:
    """Refuse an image whose header says it has more than `max_pixels` pixels, before it is decoded.

    Args:
        data: the encoded image.
        max_pixels: the most pixels (width * height) accepted.

    Raises:
        ProblemError: 413 too-many-pixels.
        InvalidImageError: a known format whose header is cut short.
    """
    size = probe_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ProblemError(413, "too-many-pixels",
                           f"the image is {size[0]} x {size[1]} pixels, more than the limit of {max_pixels:,}")


def problem_or_none(parts: Iterable[ImagePart], max_pixels: int) -> list[ProblemError | InvalidImageError | None]:
    """`check_pixels` for each image, its error in its place (None when it passed).

    Args:
        parts: the images.
        max_pixels: the most pixels accepted.

    Returns:
        One entry per image.
    """
    out: list[ProblemError | InvalidImageError | None] = []
    for part in parts:
        try:
            check_pixels(part.data, max_pixels)
            out.append(None)
        except (ProblemError, InvalidImageError) as exc:
            out.append(exc)
    return out
