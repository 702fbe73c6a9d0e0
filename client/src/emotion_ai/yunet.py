"""`YuNetFaceDetector`, the default detector: YuNet (OpenCV Zoo's `face_detection_yunet_2023mar.onnx`, shipped in
this package under Apache-2.0, `models/NOTICE`) run by OpenCV's `cv2.FaceDetectorYN`, with MTCNN's O-Net as a
second opinion on the faces it is unsure of."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import cv2
import numpy as np

from .detection import DARK_MEAN, FLAT_STD, Detection
from .mtcnn import ONET_SURE, Mtcnn
from .preprocess import to_gray

YUNET_MODEL = Path(__file__).resolve().parent / "models" / "face_detection_yunet_2023mar.onnx"
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
#: Images whose shorter side is below this many pixels hold no face YuNet can find (its floor is ~10 px);
#: they give no detections (YuNet returns garbage rows on some such inputs).
YUNET_MIN_SIDE = 10
#: With a `min_face_size` above this, the working copy is shrunk so such faces are this many pixels, which
#: YuNet still finds reliably (and the search is cheaper).
YUNET_RELIABLE_PX = 24.0


def as_bgr(image: np.ndarray) -> np.ndarray:
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
        bgr = as_bgr(image)
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
        keep[np.flatnonzero(unsure)[scores >= self.verify_score]] = True
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
