"""Real test photos and clips for the benchmarks and the quality tests, made from scikit-image's photos."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import cv2
import numpy as np
from skimage import data


def astronaut_bgr() -> np.ndarray:
    """The 512×512 astronaut photo (one real frontal face), BGR."""
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def one_face_jpeg() -> bytes:
    """640×480 JPEG: the astronaut resized to 480×480 on a grey canvas."""
    face = cv2.resize(astronaut_bgr(), (480, 480), interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 640, 3), 128, np.uint8)
    canvas[:, 80:560] = face
    ok, buf = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def four_face_jpeg() -> bytes:
    """640x480: four 320x240 crops of the astronaut photo (zoom, mirror, exposure differ)."""
    a = astronaut_bgr()
    cx, cy = 224, 113  # centre of the face the Haar detector finds in the 512x512 photo

    def cell(half_w: int, flip: bool, gain: float = 1.0, bias: float = 0.0) -> np.ndarray:
        half_h = half_w * 3 // 4
        x0, y0 = max(cx - half_w, 0), max(cy - half_h, 0)
        crop = a[y0 : y0 + 2 * half_h, x0 : x0 + 2 * half_w]
        crop = cv2.convertScaleAbs(
            cv2.resize(crop, (320, 240), interpolation=cv2.INTER_AREA), alpha=gain, beta=bias
        )
        return crop[:, ::-1] if flip else crop

    cells = [
        cell(150, False),
        cell(170, True),
        cell(130, False, 0.85, 25),
        cell(160, True, 1.1, -10),
    ]
    canvas = np.vstack([np.hstack(cells[:2]), np.hstack(cells[2:])])
    ok, buf = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def _jpeg(canvas: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def six_face_jpeg() -> bytes:
    """640x480: six astronaut head crops (150-200 px, some mirrored or dimmed) over skimage's rocket photo."""
    head = astronaut_bgr()[8:228, 114:334]  # 220x220 around the face
    canvas = cv2.resize(np.ascontiguousarray(data.rocket()[:, :, ::-1]), (640, 480), interpolation=cv2.INTER_AREA)
    spots = [(10, 20, 170, False, 1.0), (230, 10, 150, True, 0.9), (440, 30, 190, False, 1.1),
             (30, 260, 200, True, 1.0), (270, 250, 160, False, 0.8), (470, 300, 150, True, 1.05)]
    for x, y, size, flip, gain in spots:
        crop = cv2.convertScaleAbs(cv2.resize(head, (size, size), interpolation=cv2.INTER_AREA), alpha=gain)
        canvas[y : y + size, x : x + size] = crop[:, ::-1] if flip else crop
    return _jpeg(canvas)


def twelve_face_jpeg() -> bytes:
    """640x480 grey: the first 12 faces of skimage's LFW subset (12 people, 25x25) upscaled to 120 px, 4x3 grid."""
    faces = data.lfw_subset()[:12]
    canvas = np.full((480, 640, 3), 128, np.uint8)
    for i, face in enumerate(faces):
        row, col = divmod(i, 4)
        y, x = row * 160 + 20, col * 160 + 20
        big = cv2.resize((face * 255).astype(np.uint8), (120, 120), interpolation=cv2.INTER_CUBIC)
        canvas[y : y + 120, x : x + 120] = big[:, :, None]
    return _jpeg(canvas)


@cache
def _clip_face() -> np.ndarray:
    face = astronaut_bgr()[0:400, 56:456].copy()
    face.flags.writeable = False
    return face


def astronaut_clip_frame(i: int, frames: int, zoom: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Frame `i` of `frames` (640x480 BGR): a 400x400 astronaut crop around her face, 300 px at zoom 1, its centre
    swinging left-right once (sine) while its zoom goes from zoom[0] to zoom[1] at mid-clip and back (cosine)."""
    period = max(frames, 2)
    scale = zoom[0] + (zoom[1] - zoom[0]) * (1 - np.cos(2 * np.pi * i / period)) / 2
    size = min(round(300 * scale), 480)
    face = cv2.resize(_clip_face(), (size, size), interpolation=cv2.INTER_AREA)
    cx = int(320 + 160 * np.sin(2 * np.pi * i / period))
    x, y = min(max(cx - size // 2, 0), 640 - size), 240 - size // 2
    frame = np.full((480, 640, 3), 96, np.uint8)
    frame[y : y + size, x : x + size] = face
    return frame


def write_astronaut_clip(path: Path, frames: int, zoom: tuple[float, float] = (1.0, 1.0), fps: float = 25.0) -> Path:
    """Write `astronaut_clip_frame` 0..frames-1 as a 640x480 mp4v MP4 at `fps`; returns `path`."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 480))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    try:
        for i in range(frames):
            writer.write(astronaut_clip_frame(i, frames, zoom))
    finally:
        writer.release()
    return path
