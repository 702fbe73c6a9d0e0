"""Result dataclasses: one `Prediction` per image holding one `Face` per detected face."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import cv2
import numpy as np

Point = tuple[float, float]
Box = tuple[float, float, float, float]

#: Timing keys of `Prediction.timings_ms`, in pipeline order.
TIMING_KEYS: tuple[str, ...] = ("decode", "detect", "preprocess", "keypoints", "emotion", "total")


def _num(v: float, digits: int = 4) -> float | None:
    """Round for JSON; NaN/inf become None so the output stays strict JSON."""
    f = float(v)
    return round(f, digits) if math.isfinite(f) else None


@dataclass(frozen=True)
class Face:
    """One face.

    Attributes:
        box: (x, y, w, h) of the detector's box in original-image pixels.
        detection_score: the detector's confidence in [0, 1].
        keypoints: Kaggle keypoint name (without `_x/_y`, e.g. "left_eye_center", subject's left)
            -> (x, y) in original-image pixels.
        emotion: the label with the highest score.
        scores: label -> probability; labels come from the emotion model's `classes` output.
        track_id: in a video stream, the face's identity across frames (None for single images).
        smoothed_scores: in a video stream, the track's exponential moving average of `scores`.
    """

    box: Box
    detection_score: float
    keypoints: dict[str, Point]
    emotion: str
    scores: dict[str, float]
    track_id: int | None = None
    smoothed_scores: dict[str, float] | None = None

    @property
    def smoothed_emotion(self) -> str:
        """The label with the highest smoothed score (`emotion` when there is no smoothing)."""
        if not self.smoothed_scores:
            return self.emotion
        return max(self.smoothed_scores, key=self.smoothed_scores.__getitem__)

    def to_dict(self) -> dict[str, Any]:
        """The face as JSON-ready values: box, detection_score, keypoints by name, emotion and scores
        (and track_id / smoothed_scores in a stream), numbers rounded for output."""
        doc: dict[str, Any] = {
            "box": [_num(v, 2) for v in self.box],
            "detection_score": _num(self.detection_score),
            "keypoints": {k: [_num(x, 2), _num(y, 2)] for k, (x, y) in self.keypoints.items()},
            "emotion": self.emotion,
            "scores": {k: _num(v, 6) for k, v in self.scores.items()},
        }
        if self.track_id is not None:
            doc["track_id"] = self.track_id
        if self.smoothed_scores is not None:
            doc["smoothed_emotion"] = self.smoothed_emotion
            doc["smoothed_scores"] = {k: _num(v, 6) for k, v in self.smoothed_scores.items()}
        return doc

    def to_row(self) -> dict[str, Any]:
        """Flat fields: x, y, w, h, detection_score, emotion, score_<label>, (track_id, smoothed_emotion,
        smoothed_<label> in a stream), <keypoint>_x/_y."""
        row: dict[str, Any] = dict(zip(("x", "y", "w", "h"), (_num(v, 2) for v in self.box), strict=True))
        row["detection_score"] = _num(self.detection_score)
        row["emotion"] = self.emotion
        row.update({f"score_{k}": _num(v, 6) for k, v in self.scores.items()})
        if self.track_id is not None:
            row["track_id"] = self.track_id
        if self.smoothed_scores is not None:
            row["smoothed_emotion"] = self.smoothed_emotion
            row.update({f"smoothed_{k}": _num(v, 6) for k, v in self.smoothed_scores.items()})
        for name, (x, y) in self.keypoints.items():
            row[f"{name}_x"], row[f"{name}_y"] = _num(x, 2), _num(y, 2)
        return row


@dataclass
class Prediction:
    """Everything the client found in one image.

    Attributes:
        faces: the faces, ordered left to right (empty list when there is none).
        image_size: (width, height) of the image in pixels.
        timings_ms: milliseconds spent per stage (see `TIMING_KEYS`).
        source: the path the image came from, if any.
        image: the decoded BGR image (kept for `annotate()`; not serialised).
        frame / timestamp: in a video stream, the frame's index and time in seconds.
        detected: in a video stream, whether the face detector ran on this frame (else the faces
            were followed from the previous frame's keypoints).
        models: the served model each task's faces were sent to, e.g. {"keypoints": "keypoints",
            "emotion": "emotion_accurate"} (`ClientOptions.variant` / `models`); empty when no face
            reached the models.
    """

    faces: list[Face]
    image_size: tuple[int, int]
    timings_ms: dict[str, float]
    source: str | None = None
    image: np.ndarray | None = field(default=None, repr=False, compare=False)
    frame: int | None = None
    timestamp: float | None = None
    detected: bool = True
    models: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The `emotion-ai predict --json` object: image, image_size, faces, models, timings_ms (+ frame
        fields)."""
        doc: dict[str, Any] = {"image": self.source} if self.frame is None else {
            "frame": self.frame, "time": _num(self.timestamp or 0.0, 4), "detected": self.detected}
        doc |= {
            "image_size": list(self.image_size),
            "faces": [f.to_dict() for f in self.faces],
            "models": dict(self.models),
            "timings_ms": {k: _num(v, 3) for k, v in self.timings_ms.items()},
        }
        return doc

    def to_json(self, **kwargs: Any) -> str:
        """`to_dict` as a JSON string.

        Args:
            **kwargs: passed to `json.dumps` (e.g. indent=2).

        Returns:
            The prediction's JSON, the object `emotion-ai predict --json` writes.
        """
        return json.dumps(self.to_dict(), **kwargs)

    def to_rows(self) -> list[dict[str, Any]]:
        """One flat dict per face (`Face.to_row` fields after image/frame columns and `face`, its index);
        an image or frame without a face gives one row with only those columns, so it is not lost."""
        lead: dict[str, Any] = {"image": self.source} if self.frame is None else {
            "frame": self.frame, "time": _num(self.timestamp or 0.0, 4)}
        if not self.faces:
            return [{**lead, "face": None}]
        return [{**lead, "face": i, **face.to_row()} for i, face in enumerate(self.faces)]

    def to_pandas(self) -> Any:
        """`to_rows()` as a pandas DataFrame (needs pandas, which the client does not install)."""
        try:
            import pandas as pd  # noqa: PLC0415 -- optional: only to_pandas needs pandas
        except ImportError as exc:
            raise ImportError("Prediction.to_pandas() needs pandas: pip install pandas") from exc
        return pd.DataFrame(self.to_rows())

    def annotate(self, image: np.ndarray | None = None) -> np.ndarray:
        """A BGR copy of the image with each face's box, 15 keypoints and top label/score drawn."""
        base = image if image is not None else self.image
        if base is None:
            raise ValueError("this Prediction has no image; pass one to annotate()")
        return draw_faces(base, self.faces)

    def save(self, path: str | Path) -> Path:
        """Write the annotated image (format from the suffix), or the JSON for a .json suffix."""
        p = Path(path)
        if p.suffix.lower() == ".json":
            p.write_text(self.to_json(indent=2) + "\n", encoding="utf-8")
            return p
        ok, buf = cv2.imencode(p.suffix or ".png", self.annotate())
        if not ok:
            raise ValueError(f"cannot encode an image as {p.suffix!r}")
        p.write_bytes(buf.tobytes())
        return p


_BOX_COLOR = (0, 200, 0)
_POINT_COLOR = (0, 220, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
#: (x0, y0, x1, y1) of a rectangle in image pixels, ends exclusive.
Rect = tuple[int, int, int, int]


@dataclass(frozen=True)
class Caption:
    """A face's label as `draw_faces` draws it.

    Attributes:
        text: the label.
        scale: the font scale.
        rect: its filled background (`Rect`); no two captions of an image overlap.
        origin: the bottom-left corner of the text (`cv2.putText`'s `org`).
    """

    text: str
    scale: float
    rect: Rect
    origin: tuple[int, int]


def _line_thickness(image_size: tuple[int, int]) -> int:
    return max(1, round(max(image_size) / 400))


def place_labels(boxes: list[Box], sizes: list[tuple[int, int]], image_size: tuple[int, int]) -> list[Rect]:
    """Where each box's label goes, so that no two labels overlap: just above its box where that is free,
    else just below it, else the nearest free row above or below (inside the image where one is free).

    Args:
        boxes: the faces' boxes (x, y, w, h), in the order their labels are placed.
        sizes: each label's (width, height) in pixels.
        image_size: (width, height) of the image.

    Returns:
        Each label's `Rect`, left-aligned with its box (shifted left where it would leave the image).
    """
    width, height = image_size
    placed: list[Rect] = []
    for (x, y, _, h), (lw, lh) in zip(boxes, sizes, strict=True):
        x0 = max(0, min(round(x), width - lw))
        above, below = round(y) - lh - 1, round(y + h) + 1
        near = islice(_spots(x0, lw, lh, above, below), 2 * (height // max(1, lh) + 2))  # all those inside
        inside = [r for r in near if r[1] >= 0 and r[3] <= height]
        # The spots are endless and only finitely many labels are placed: a free one is always found.
        placed.append(next(_free(inside, placed), None) or next(_free(_spots(x0, lw, lh, above, below), placed)))
    return placed


def _spots(x0: int, lw: int, lh: int, above: int, below: int) -> Iterator[Rect]:
    """Rows for a label (lw x lh at x0) going outward from its box: `above` (top), `below`, and on (endless)."""
    k = 0
    while True:
        yield x0, above - k * lh, x0 + lw, above - k * lh + lh
        yield x0, below + k * lh, x0 + lw, below + k * lh + lh
        k += 1


def _free(spots: Iterable[Rect], placed: list[Rect]) -> Iterator[Rect]:
    """The `spots` that overlap none of `placed`."""
    return (r for r in spots if not any(_intersect(r, other) for other in placed))


def _intersect(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def captions(faces: list[Face], image_size: tuple[int, int], labels: list[str] | None = None) -> list[Caption]:
    """Each face's caption and where `draw_faces` puts it (`place_labels`: never over another caption).

    Args:
        faces: the faces, in drawing order.
        image_size: (width, height) of the image.
        labels: optional captions replacing `<emotion> <score>`, one per face.

    Returns:
        One `Caption` per face.
    """
    thick = _line_thickness(image_size)
    texts = labels if labels else [_caption(face) for face in faces]
    scales = [max(0.4, face.box[2] / 250) for face in faces]
    metrics = [cv2.getTextSize(text, _FONT, scale, thick) for text, scale in zip(texts, scales, strict=True)]
    sizes = [(tw + 2, th + base + 4) for (tw, th), base in metrics]
    rects = place_labels([face.box for face in faces], sizes, image_size)
    return [Caption(text, scale, rect, (rect[0] + 1, rect[1] + th + 2))
            for text, scale, rect, ((_, th), _) in zip(texts, scales, rects, metrics, strict=True)]


def draw_faces(image: np.ndarray, faces: list[Face], labels: list[str] | None = None) -> np.ndarray:
    """Draw faces on a BGR copy of `image`; `labels` optionally replaces the caption per face.

    Boxes and keypoints are drawn first, then the captions (`captions`), which never overlap each other.
    """
    out = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    size = (out.shape[1], out.shape[0])
    thick = _line_thickness(size)
    for face in faces:
        x, y, w, h = (round(v) for v in face.box)
        cv2.rectangle(out, (x, y), (x + w, y + h), _BOX_COLOR, thick, cv2.LINE_AA)
        r = max(1, round(w / 60))
        for px, py in face.keypoints.values():
            if math.isfinite(px) and math.isfinite(py):
                cv2.circle(out, (round(px), round(py)), r, _POINT_COLOR, -1, cv2.LINE_AA)
    for cap in captions(faces, size, labels):
        x0, y0, x1, y1 = cap.rect
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), _BOX_COLOR, -1)
        cv2.putText(out, cap.text, cap.origin, _FONT, cap.scale, (0, 0, 0), thick, cv2.LINE_AA)
    return out


def _caption(face: Face) -> str:
    """`<emotion> <score>`, or `#<track> <smoothed emotion> <smoothed score>` for a tracked face."""
    if face.track_id is None:
        return f"{face.emotion} {face.scores.get(face.emotion, 0.0):.2f}"
    label = face.smoothed_emotion
    return f"#{face.track_id} {label} {(face.smoothed_scores or face.scores).get(label, 0.0):.2f}"
