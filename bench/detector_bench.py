"""Face detector benchmark: recall, false boxes, speed and keypoints accuracy on composite scenes.

    .venv/bin/python bench/detector_bench.py                                  # 200 scenes, haar + mtcnn, keypoints RMSE
    .venv/bin/python bench/detector_bench.py --detectors haar --no-models     # detectors only (no TensorFlow)
    .venv/bin/python bench/detector_bench.py --scenes 500 --seed 1 --models DIR
    .venv/bin/python bench/detector_bench.py --detectors haar mtcnn mtcnn-upright   # + MTCNN without turned looks
    .venv/bin/python bench/detector_bench.py --tiny                           # CI size: 8 scenes, seconds
    .venv/bin/python bench/detector_bench.py --detectors yunet yunet-no-enhance mtcnn haar --out bench/results/yunet
    .venv/bin/python bench/detector_bench.py --detectors yunet yunet-from-0.1 yunet-unverified mtcnn \
        --out bench/results/yunet_verified
    .venv/bin/python bench/detector_bench.py --detectors yunet mtcnn mtcnn-upright mtcnn-first-stage --no-models \
        --out bench/results/detection_floor  # + P-Net alone (a time floor)

Scenes: VALIDATION faces of facial_keypoints.csv.gz (the training package's by-subject split,
`emotion_ai_training.data.load_keypoints(...).split == "validation"`, split seed `--split-seed` as in
training) pasted onto face-free scikit-image photos (`BACKGROUNDS`; astronaut, camera and coins, whose
coins bear portrait heads, are left out), flipped/tiled/cropped to 640x480 (70 %) or 320x240, 480x640,
1024x768. A scene holds 1-6 faces (15 % of scenes hold none: false positives on backgrounds alone);
each face is its 96x96 frame as BGR, edge-padded by `PAD_PX` on each side (context instead of a
hard edge through the chin and brows), scaled so its reference box is 24-300 px (log-uniform), rotated by
±30° (uniform), blended with a feathered square mask, and never overlapping another face's patch or box.

Reference box: the axis-aligned square on the eyes/brows/mouth keypoints (all but the nose tip) with
side `BOX_SCALE` x the mean of their extent's width and height, centred on the extent's centre moved up
by `BOX_SHIFT_Y` x side. Constants fitted to the Haar cascade's boxes on 563 padded training frames
(median IoU with them 0.87). On a pasted face the box centre follows the paste's scale + rotation and
its side the scale only (detectors draw upright boxes the size of the face, not of a tilted square).

Match rule, the same for every detector: a detection finds a reference face when its centre lies
inside the reference box and its size (sqrt(w*h)) is within a factor `MATCH_SIZE_FACTOR` of the box's
side (box tightness differs between detectors, so no IoU threshold); matching is one-to-one, closest
centres first, and every detection left unmatched (a duplicate included) is a false box.

Keypoints RMSE (unless `--no-models`): each matched face is cropped from the scene by its detection
with the detector's calibrated keypoints crop geometry, run through the keypoints SavedModel in-process
(bench/run_benchmarks.py's `InProcessTransport`), mapped back with `CropTransform.to_original` and
compared with the transformed reference keypoints; errors are divided by crop side / 96, so the figure
is in pixels of the 96-px model input like the training RMSE. Reported over the faces every detector
found (common) and over each detector's own matches, plus the reference boxes themselves as a floor.

Subsets (`--subset-scenes` each, 0 to skip): besides the main scenes' small faces (< 32 px), tilted faces
(20-30°) and face-free images, two scene sets of their own, generated like the main ones from their own
seeds: "dark" (the whole scene scaled by a gain drawn log-uniform in `DARK_GAIN`, plus gaussian noise of
`DARK_NOISE` gray levels: under-exposed photos, gray mean ~5-40) and "profile" (every face turned away by a
yaw drawn in `YAW_DEGREES`, simulated by a perspective warp of the frontal frame: the far half narrowed and
shortened; three-quarter views, not true profiles, since the dataset has no such faces).

Timing: every scene goes to each detector in turn, the order rotating from scene to scene, so a change
in the machine's load falls on all detectors alike; compare times only within one run.

Writes bench/results/detectors.json and .md (`--tiny`: detectors_tiny.*), with machine info (CPU model).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from bench_common import display_path, write_results  # bench/ is on sys.path as a script
from emotion_ai import detect, spec
from emotion_ai.detection import Detection, FaceDetector
from emotion_ai.mtcnn import Mtcnn
from emotion_ai.preprocess import level_angle, model_inputs, to_gray
from emotion_ai.versions import latest_version
from emotion_ai_training.data import load_keypoints
from emotion_ai_training.dataset_files import default_data
from machine import machine_info

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DATA = default_data("keypoints")

#: scikit-image sample photos without human faces (checked by eye; chelsea is a cat).
BACKGROUNDS: tuple[str, ...] = (
    "coffee", "chelsea", "rocket", "page", "text", "brick", "grass", "gravel", "logo", "immunohistochemistry",
    "hubble_deep_field", "moon", "retina", "stereo_motorcycle", "horse", "colorwheel",
)
#: (width, height) of scenes and how often each is drawn.
SCENE_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (320, 240), (480, 640), (1024, 768))
SCENE_SIZE_WEIGHTS: tuple[float, ...] = (0.7, 0.1, 0.1, 0.1)
FACE_PX = (24.0, 300.0)  # reference box side in the scene, drawn log-uniform
MAX_ANGLE = 30.0  # degrees, drawn uniform in ±MAX_ANGLE
FACES_PER_SCENE = (1, 6)
NO_FACE_FRACTION = 0.15
PLACE_TRIES = 40
FEATHER = 0.08  # mask ramps from 0 to 1 over this fraction of the patch side
#: Each 96-px frame is edge-padded by this many pixels before pasting (as `calibrate-crop` pads it), so
#: the feathered edge blends padding into the background, not the chin and brows of the tight crop.
PAD_PX = 24
GAP_PX = 2  # free pixels between two faces' regions

#: Keypoints that span the reference box: eyes, brows and mouth (every point but the nose tip).
BOX_POINTS: tuple[int, ...] = tuple(i for i, n in enumerate(spec.KEYPOINT_NAMES) if n != "nose_tip")
BOX_SCALE = 1.54
BOX_SHIFT_Y = -0.072
MATCH_SIZE_FACTOR = 2.0

SIZE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("<32", 0, 32), ("32-64", 32, 64), ("64-128", 64, 128), (">=128", 128, math.inf))
ANGLE_BUCKETS: tuple[tuple[str, float, float], ...] = (("<10", 0, 10), ("10-20", 10, 20), ("20-30", 20, math.inf))
#: Fallback classes by name when `emotion_ai.detect` has no `make_detector`.
DEFAULT_DETECTORS = ("haar", "mtcnn", "yunet")
DEFAULT_SCENES, TINY_SCENES = 200, 8
#: Scene sets of their own (seed = --seed + offset), each `--subset-scenes` scenes.
SUBSET_SEEDS: dict[str, int] = {"dark": 1000, "profile": 2000}
DEFAULT_SUBSET_SCENES, TINY_SUBSET_SCENES = 100, 4
DARK_GAIN = (0.05, 0.3)  # "dark" scenes: every pixel times this gain (log-uniform) ...
DARK_NOISE = 2.0  # ... plus gaussian noise of this standard deviation (gray levels)
YAW_DEGREES = (35.0, 60.0)  # "profile" faces: turned away by this yaw (uniform), to either side

Box = tuple[float, float, float, float]  # x, y, w, h


# -- scenes ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Face:
    """A pasted face: reference `box`, its 15 `points` (NaN = missing), tilt, dataset row, patch region."""

    box: Box
    points: np.ndarray
    angle: float
    row: int
    region: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) of the pasted patch

    @property
    def size(self) -> float:
        """Side of the reference box in scene pixels (what the size buckets use)."""
        return self.box[2]


@dataclass
class Scene:
    """A composite image and the faces pasted into it."""

    image: np.ndarray  # H x W x 3 BGR uint8
    background: str
    faces: list[Face] = field(default_factory=list)


@dataclass(frozen=True)
class FaceSource:
    """The 96x96 gray frames and their keypoints that scenes draw from."""

    images: np.ndarray
    points: np.ndarray
    rows: np.ndarray  # dataset row of each frame


def validation_faces(path: Path, cache_dir: str | None, split_seed: int) -> FaceSource:
    """The by-subject validation faces of the keypoints dataset, exactly as training splits them."""
    data = load_keypoints(path, cache_dir=cache_dir, seed=split_seed)
    rows = np.flatnonzero(data.split == "validation")
    return FaceSource(data.images[rows], data.points[rows].astype(np.float64), rows)


def load_backgrounds(names: Iterable[str] = BACKGROUNDS) -> dict[str, np.ndarray]:
    """The named scikit-image photos as BGR uint8."""
    from skimage import data

    out = {}
    for name in names:
        img = getattr(data, name)()
        img = np.asarray(img[0] if isinstance(img, tuple) else img)  # stereo_motorcycle: (left, right, disparity)
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.ndim == 2:
            img = np.dstack([img] * 3)
        out[name] = np.ascontiguousarray(img[..., 2::-1])  # RGB(A) -> BGR
    return out


def make_background(rng: np.random.Generator, photo: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`photo` randomly flipped, mirror-tiled when small, and a random crop of it resized to `size` (w, h)."""
    w, h = size
    if rng.random() < 0.5:
        photo = photo[:, ::-1]
    if rng.random() < 0.3:
        photo = photo[::-1]
    reps_y, reps_x = math.ceil(h / photo.shape[0]), math.ceil(w / photo.shape[1])
    if reps_x > 1 or reps_y > 1:
        row = np.hstack([photo if i % 2 == 0 else photo[:, ::-1] for i in range(reps_x)])
        photo = np.vstack([row if i % 2 == 0 else row[::-1] for i in range(reps_y)])
    ph, pw = photo.shape[:2]
    zoom = rng.uniform(0.6, 1.0) * min(pw / w, ph / h)
    cw, ch = max(1, round(w * zoom)), max(1, round(h * zoom))
    x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
    crop = np.ascontiguousarray(photo[y0 : y0 + ch, x0 : x0 + cw])
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if zoom > 1 else cv2.INTER_LINEAR)


def reference_square(points: np.ndarray) -> tuple[float, float, float]:
    """(centre x, centre y, side) of the reference box of a face's keypoints (module docstring rule)."""
    pts = points[list(BOX_POINTS)]
    x0, y0 = np.nanmin(pts, axis=0)
    x1, y1 = np.nanmax(pts, axis=0)
    side = BOX_SCALE * ((x1 - x0) + (y1 - y0)) / 2
    return float((x0 + x1) / 2), float((y0 + y1) / 2 + BOX_SHIFT_Y * side), float(side)


def feather_mask(n: int) -> np.ndarray:
    """n x n float32 mask: 1 inside, ramping linearly to 0 over the outer `FEATHER` of the side."""
    ramp = max(1.0, FEATHER * n)
    d = np.minimum(np.arange(n), np.arange(n)[::-1]) + 0.5
    edge = np.clip(d / ramp, 0, 1).astype(np.float32)
    return np.minimum.outer(edge, edge)


@dataclass(frozen=True)
class Patch:
    """A face frame scaled and rotated into an m x m BGR tile, its mask, and the frame->tile affine map."""

    tile: np.ndarray
    mask: np.ndarray
    affine: np.ndarray  # 2 x 3, frame pixel (x, y) -> tile pixel
    side: float  # reference box side in the tile


def make_patch(frame: np.ndarray, box_side96: float, face_px: float, angle: float) -> Patch:
    """Scale `frame` (96x96 gray) so its reference box is `face_px` wide, then rotate it by `angle`°."""
    n = max(2, round(frame.shape[1] * face_px / box_side96))
    s = n / frame.shape[1]
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    small = cv2.cvtColor(cv2.resize(frame, (n, n), interpolation=interp), cv2.COLOR_GRAY2BGR)
    rad = math.radians(angle)
    m = math.ceil(n * (abs(math.cos(rad)) + abs(math.sin(rad)))) + 2
    rot = cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), angle, 1.0)
    rot[:, 2] += (m - n) / 2
    tile = cv2.warpAffine(small, rot, (m, m), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mask = cv2.warpAffine(feather_mask(n), rot, (m, m), flags=cv2.INTER_LINEAR, borderValue=0)
    resize = np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1]])  # pixel-centre convention
    return Patch(tile, mask, rot @ resize, box_side96 * s)


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(n, 2) points through a 2 x 3 affine map (NaN stays NaN)."""
    return points @ affine[:, :2].T + affine[:, 2]


def paste(image: np.ndarray, patch: Patch, x0: int, y0: int) -> None:
    """Blend `patch` into `image` with its top-left corner at (x0, y0), in place."""
    m = patch.tile.shape[0]
    roi = image[y0 : y0 + m, x0 : x0 + m]
    alpha = patch.mask[..., None]
    roi[:] = np.rint(alpha * patch.tile + (1 - alpha) * roi).astype(np.uint8)


def place_face(
    rng: np.random.Generator, image: np.ndarray, frame: np.ndarray, points: np.ndarray, row: int,
    taken: list[tuple[float, float, float, float]], *, size: float | None = None, angle: float | None = None,
) -> Face | None:
    """Paste one face at a random (or the given) size and tilt and a free place; None when none was free."""
    h, w = image.shape[:2]
    frame = cv2.copyMakeBorder(frame, PAD_PX, PAD_PX, PAD_PX, PAD_PX, cv2.BORDER_REPLICATE)
    points = points + PAD_PX
    cx96, cy96, side96 = reference_square(points)
    angle = float(rng.uniform(-MAX_ANGLE, MAX_ANGLE)) if angle is None else angle
    rad = math.radians(angle)
    grow = (abs(math.cos(rad)) + abs(math.sin(rad))) * frame.shape[1] / side96  # tile side / face px
    biggest = min(FACE_PX[1], (min(w, h) - 4) / grow)
    if biggest < FACE_PX[0]:
        return None
    face_px = float(np.exp(rng.uniform(math.log(FACE_PX[0]), math.log(FACE_PX[1])))) if size is None else size
    patch = make_patch(frame, side96, min(face_px, biggest), angle)
    m = patch.tile.shape[0]
    (cx, cy), half = apply_affine(patch.affine, np.array([[cx96, cy96]]))[0], patch.side / 2
    for _ in range(PLACE_TRIES):
        x0, y0 = int(rng.integers(0, w - m + 1)), int(rng.integers(0, h - m + 1))
        box = (x0 + cx - half, y0 + cy - half, patch.side, patch.side)
        if not box_inside(box, w, h):
            continue
        region = (min(x0, box[0]), min(y0, box[1]), max(x0 + m, box[0] + box[2]), max(y0 + m, box[1] + box[3]))
        if any(_overlaps(region, other) for other in taken):
            continue
        taken.append(region)
        paste(image, patch, x0, y0)
        shifted = patch.affine + np.array([[0, 0, x0], [0, 0, y0]])
        return Face(box, apply_affine(shifted, points), angle, row, (x0, y0, x0 + m, y0 + m))
    return None


def box_inside(box: Box, w: int, h: int) -> bool:
    """Whether `box` lies within a w x h image."""
    return box[0] >= 0 and box[1] >= 0 and box[0] + box[2] <= w and box[1] + box[3] <= h


def _overlaps(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] + GAP_PX and b[0] < a[2] + GAP_PX and a[1] < b[3] + GAP_PX and b[1] < a[3] + GAP_PX


def yaw_warp(rng: np.random.Generator, frame: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`frame` (and its keypoints) with the face turned away by a yaw drawn in `YAW_DEGREES`, to a random side:
    a perspective warp that narrows the frame to cos(yaw) and shortens its far edge by 0.35 sin(yaw)."""
    n = frame.shape[1]
    yaw = math.radians(rng.uniform(*YAW_DEGREES))
    width, short = n * math.cos(yaw), n * 0.35 * math.sin(yaw) / 2
    x0 = (n - width) / 2
    near = [[x0, 0], [x0, n - 1]]
    far = [[x0 + width, short], [x0 + width, n - 1 - short]]
    dst = np.float32([near[0], far[0], far[1], near[1]])
    if rng.random() < 0.5:  # the other side turned away
        dst[:, 0] = n - 1 - dst[:, 0]
        dst = dst[[1, 0, 3, 2]]
    src = np.float32([[0, 0], [n - 1, 0], [n - 1, n - 1], [0, n - 1]])
    m = cv2.getPerspectiveTransform(src, dst)
    warped = cv2.warpPerspective(frame, m, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return warped, cv2.perspectiveTransform(points.reshape(-1, 1, 2), m).reshape(-1, 2)


def darken(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """`image` under-exposed: times a gain drawn log-uniform in `DARK_GAIN`, plus `DARK_NOISE` gaussian noise."""
    gain = math.exp(rng.uniform(math.log(DARK_GAIN[0]), math.log(DARK_GAIN[1])))
    noisy = image * gain + rng.normal(0, DARK_NOISE, image.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def make_scenes(
    faces: FaceSource, backgrounds: dict[str, np.ndarray], n: int, seed: int = 0,
    no_face_fraction: float = NO_FACE_FRACTION, condition: str | None = None,
) -> list[Scene]:
    """`n` seeded composite scenes; the first round(n * no_face_fraction) (at least one) hold no face.

    `condition` "dark" darkens every scene (`darken`), "profile" turns every face away (`yaw_warp`)."""
    if condition not in (None, "dark", "profile"):
        raise ValueError(f"unknown scene condition {condition!r}")
    rng = np.random.default_rng(seed)
    names = sorted(backgrounds)
    order = rng.permutation(len(faces.images))
    cursor = 0
    empty = max(1, round(n * no_face_fraction)) if n > 1 else 0
    scenes = []
    for k in range(n):
        size = SCENE_SIZES[rng.choice(len(SCENE_SIZES), p=SCENE_SIZE_WEIGHTS)]
        name = names[int(rng.integers(len(names)))]
        scene = Scene(make_background(rng, backgrounds[name], size), name)
        wanted = 0 if k < empty else int(rng.integers(FACES_PER_SCENE[0], FACES_PER_SCENE[1] + 1))
        taken: list[tuple[float, float, float, float]] = []
        for _ in range(wanted):
            i = order[cursor % len(order)]
            cursor += 1
            frame, points = faces.images[i], faces.points[i]
            if condition == "profile":
                frame, points = yaw_warp(rng, frame, points)
            face = place_face(rng, scene.image, frame, points, int(faces.rows[i]), taken)
            if face is not None:
                scene.faces.append(face)
        if condition == "dark":
            scene.image = darken(rng, scene.image)
        scenes.append(scene)
    return scenes


# -- matching and metrics --------------------------------------------------------------------------
def is_match(det: Box, ref: Box) -> bool:
    """The match rule: detection centre inside the reference box, size within MATCH_SIZE_FACTOR of its side."""
    cx, cy = det[0] + det[2] / 2, det[1] + det[3] / 2
    inside = ref[0] <= cx <= ref[0] + ref[2] and ref[1] <= cy <= ref[1] + ref[3]
    ratio = math.sqrt(max(det[2] * det[3], 0.0)) / ref[2]
    return inside and 1 / MATCH_SIZE_FACTOR <= ratio <= MATCH_SIZE_FACTOR


def match(refs: Sequence[Box], dets: Sequence[Box]) -> tuple[list[int | None], int]:
    """One-to-one matching, closest centres first: the detection index per reference face, and false boxes."""
    pairs = []
    for r, ref in enumerate(refs):
        for d, det in enumerate(dets):
            if is_match(det, ref):
                dist = math.hypot(det[0] + det[2] / 2 - ref[0] - ref[2] / 2, det[1] + det[3] / 2 - ref[1] - ref[3] / 2)
                pairs.append((dist / ref[2], r, d))
    found: list[int | None] = [None] * len(refs)
    used: set[int] = set()
    for _, r, d in sorted(pairs):
        if found[r] is None and d not in used:
            found[r] = d
            used.add(d)
    return found, len(dets) - len(used)


@dataclass
class SceneResult:
    boxes: list[Box]
    ms: float
    found: list[int | None]  # matched detection per reference face
    false_boxes: int
    rolls: list[float] = field(default_factory=list)  # per detection: the client's leveling angle


def detect_scene(detector: detect.FaceDetector, scene: Scene) -> SceneResult:
    """One timed detector call on `scene`, matched against its reference faces."""
    t = time.perf_counter()
    found = detector.detect(scene.image)
    ms = (time.perf_counter() - t) * 1e3
    boxes = [tuple(float(v) for v in d.box) for d in found]
    matched, false_boxes = match([f.box for f in scene.faces], boxes)
    return SceneResult(boxes, ms, matched, false_boxes, [level_angle(d.landmarks) for d in found])


def run_detector(detector: detect.FaceDetector, scenes: Sequence[Scene]) -> list[SceneResult]:
    """Detect on every scene (after one untimed warm-up call) and match against the reference faces."""
    return run_detectors({"detector": detector}, scenes)["detector"]


def run_detectors(detectors: dict[str, detect.FaceDetector], scenes: Sequence[Scene]) -> dict[str, list[SceneResult]]:
    """`run_detector` for several detectors, interleaved: each scene goes to every detector in turn, the order
    rotating from scene to scene, so a change in the machine's load falls on all of them alike."""
    names = list(detectors)
    for name in names:
        detectors[name].detect(scenes[0].image)
    results: dict[str, list[SceneResult]] = {name: [] for name in names}
    for k, scene in enumerate(scenes):
        for j in range(len(names)):
            name = names[(k + j) % len(names)]
            results[name].append(detect_scene(detectors[name], scene))
    return results


def _bucket(value: float, buckets: Sequence[tuple[str, float, float]]) -> str:
    return next(name for name, lo, hi in buckets if lo <= value < hi)


def _recall(hits: Sequence[bool]) -> dict:
    return {"faces": len(hits), "recall": round(sum(hits) / len(hits), 4) if hits else None}


def detection_metrics(scenes: Sequence[Scene], results: Sequence[SceneResult]) -> dict:
    """Recall (overall, by size and |rotation| bucket), false boxes per image and ms per image."""
    hits = [(f, r is not None) for s, res in zip(scenes, results, strict=True) for f, r in zip(s.faces, res.found,
                                                                                             strict=True)]
    ms = np.array([r.ms for r in results])
    false_boxes = sum(r.false_boxes for r in results)
    empty = [r.false_boxes for s, r in zip(scenes, results, strict=True) if not s.faces]
    return {
        "images": len(scenes),
        "faces": len(hits),
        "found": sum(h for _, h in hits),
        "recall": _recall([h for _, h in hits])["recall"],
        "false_boxes": false_boxes,
        "false_boxes_per_image": round(false_boxes / len(scenes), 4),
        "false_boxes_per_no_face_image": round(sum(empty) / len(empty), 4) if empty else None,
        "ms_mean": round(float(ms.mean()), 2),
        "ms_p95": round(float(np.percentile(ms, 95)), 2),
        "ms_mean_by_scene_size": {size: round(float(np.mean([r.ms for s, r in zip(scenes, results, strict=True)
                                                             if _size_name(s) == size])), 2)
                                  for size in sorted({_size_name(s) for s in scenes})},
        "recall_by_size": {name: _recall([h for f, h in hits if _bucket(f.size, SIZE_BUCKETS) == name])
                           for name, _, _ in SIZE_BUCKETS},
        "recall_by_rotation": {name: _recall([h for f, h in hits if _bucket(abs(f.angle), ANGLE_BUCKETS) == name])
                               for name, _, _ in ANGLE_BUCKETS},
    }


def subset_metrics(scenes: Sequence[Scene], results: Sequence[SceneResult],
                   extra: dict[str, tuple[Sequence[Scene], Sequence[SceneResult]]]) -> dict:
    """Recall, false boxes per image and ms per image on each subset: the main scenes' small (< 32 px) and
    tilted (20-30°) faces and face-free images (recall only / false boxes only), and each `extra` scene set."""
    hits = [(f, r is not None) for s, res in zip(scenes, results, strict=True)
            for f, r in zip(s.faces, res.found, strict=True)]
    empty = [r for s, r in zip(scenes, results, strict=True) if not s.faces]
    out = {
        "all": _subset(scenes, results),
        "small": _recall([h for f, h in hits if f.size < SIZE_BUCKETS[0][2]]),
        "tilted": _recall([h for f, h in hits if abs(f.angle) >= ANGLE_BUCKETS[-1][1]]),
        "no_face": {"images": len(empty), "false_boxes_per_image": round(sum(r.false_boxes for r in empty)
                                                                         / len(empty), 4) if empty else None,
                    "ms_mean": round(float(np.mean([r.ms for r in empty])), 2) if empty else None},
    }
    for name, (s, r) in extra.items():
        out[name] = _subset(s, r)
    return out


def _subset(scenes: Sequence[Scene], results: Sequence[SceneResult]) -> dict:
    hits = [r is not None for res in results for r in res.found]
    return _recall(hits) | {"images": len(scenes),
                            "false_boxes_per_image": round(sum(r.false_boxes for r in results) / len(scenes), 4),
                            "ms_mean": round(float(np.mean([r.ms for r in results])), 2)}


# -- detectors -------------------------------------------------------------------------------------
#: Bench-only names for a client detector with other settings.
VARIANTS: dict[str, tuple[str, dict]] = {
    "mtcnn-upright": ("mtcnn", {"tilts": ()}),
    "yunet-no-enhance": ("yunet", {"enhance": False}),  # what the CLAHE copy adds (dark subset)
    "yunet-unverified": ("yunet", {"verify_score": None}),  # YuNet's own score alone (no O-Net second opinion)
    "yunet-from-0.1": ("yunet", {"candidate_score": 0.1}),  # second opinions from YuNet score 0.1 (default 0.3)
}


class MtcnnFirstStage:
    """MTCNN's first network alone over the image pyramid of the client's default MTCNN search (faces from
    `min_face_size` px): the least any MTCNN search costs, before R-Net and O-Net see a candidate. A time
    floor, not a detector: no candidate passes (P-Net threshold above 1), so it finds no face."""

    name = "mtcnn"

    def __init__(self, min_face_size: float = 20.0):
        self.min_face_size = min_face_size
        self._net = Mtcnn(thresholds=(1.01, 1.0, 1.0))

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Run P-Net over the pyramid of the BGR `image`; returns no face."""
        self._net.detect(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), self.min_face_size)
        return []


#: Pseudo-detectors that only measure a cost (`--detectors mtcnn-first-stage`).
TIME_FLOORS: dict[str, Callable[[], FaceDetector]] = {"mtcnn-first-stage": MtcnnFirstStage}


def build_detector(name: str) -> detect.FaceDetector:
    """The client's detector of that name (`emotion_ai.detect.make_detector`), a `VARIANTS` entry, or a
    `TIME_FLOORS` entry."""
    if name in TIME_FLOORS:
        return TIME_FLOORS[name]()
    base, options = VARIANTS.get(name, (name, {}))
    try:
        return detect.make_detector(base, **options)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc


def haar_keypoints_crop() -> spec.CropGeometry:
    """The keypoints crop geometry calibrated for Haar boxes (the reference boxes are fitted to those)."""
    return spec.CROPS["haar"].keypoints


def keypoints_crop(detector: detect.FaceDetector, name: str) -> tuple[spec.CropGeometry, str]:
    """The keypoints crop geometry the client uses for `detector`, and whose calibration it is."""
    own = getattr(detector, "name", None) in spec.CROPS
    return detect.crops_for(detector).keypoints, detector.name if own else "haar's (no own calibration)"


# -- keypoints through detected crops --------------------------------------------------------------
Predict = Callable[[np.ndarray], np.ndarray]  # (n, 96, 96, 1) uint8 -> (n, 15, 2) model pixels
FaceKey = tuple[int, int]  # (scene index, face index)


def keypoint_errors(scenes: Sequence[Scene], boxes: dict[FaceKey, Box], geometry: spec.CropGeometry,
                    predict: Predict, rolls: dict[FaceKey, float] | None = None) -> dict[FaceKey, np.ndarray]:
    """Per face: (15, 2) keypoint error in 96-px model-crop pixels of the crop cut at its given box (turned
    level by its roll when `rolls` are given, as the client does with `level_faces`)."""
    out: dict[FaceKey, np.ndarray] = {}
    for si, scene in enumerate(scenes):
        keys = [k for k in boxes if k[0] == si]
        if not keys:
            continue
        gray = to_gray(scene.image)
        angles = [rolls[k] for k in keys] if rolls else None
        batch, transforms = model_inputs(gray, [boxes[k] for k in keys], geometry, spec.KEYPOINTS_INPUT_SIZE, angles)
        pred = predict(batch)
        for k, t, p in zip(keys, transforms, pred, strict=True):
            out[k] = (t.to_original(p) - scene.faces[k[1]].points) / t.scale
    return out


def tilt_rmse(scenes: Sequence[Scene], errors: dict[FaceKey, np.ndarray]) -> dict:
    """RMSE per |tilt| bucket of the faces in `errors`."""
    return {name: rmse(errors, sorted(k for k in errors if lo <= abs(scenes[k[0]].faces[k[1]].angle) < hi))["rmse"]
            for name, lo, hi in ANGLE_BUCKETS}


def rmse(errors: dict[FaceKey, np.ndarray], keys: Iterable[FaceKey]) -> dict:
    """RMSE over the present coordinates of the given faces (the training evaluator's definition)."""
    chosen = [errors[k] for k in keys]
    if not chosen:
        return {"faces": 0, "rmse": None}
    e = np.stack(chosen)
    present = ~np.isnan(e)
    return {"faces": len(chosen), "rmse": round(float(np.sqrt(np.sum(e[present] ** 2) / present.sum())), 4)}


def model_predict(models: Path) -> tuple[Predict, str]:
    """The keypoints model of `models` run in-process, and a description of the version used."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from emotion_ai.transport import ModelRef
    from run_benchmarks import InProcessTransport  # imports TensorFlow

    transport = InProcessTransport(models)
    ref = ModelRef(spec.KEYPOINTS_MODEL)

    def predict(batch: np.ndarray) -> np.ndarray:
        return transport.predict(ref, {spec.INPUT_KEY: batch}, 120)[spec.KEYPOINTS_OUTPUT_KEY]

    return predict, display_path(latest_version(models / spec.KEYPOINTS_MODEL), REPO)


def keypoints_report(scenes: Sequence[Scene], results: dict[str, list[SceneResult]],
                     geometries: dict[str, spec.CropGeometry], predict: Predict) -> dict:
    """Keypoints RMSE per detector over the faces all detectors found and over its own, plus reference boxes."""
    found = {name: {(si, fi): res[si].boxes[d] for si in range(len(scenes))
                    for fi, d in enumerate(res[si].found) if d is not None} for name, res in results.items()}
    common = set.intersection(*(set(f) for f in found.values())) if found else set()
    out = {"common_faces": len(common), "detectors": {}}
    for name, boxes in found.items():
        errors = keypoint_errors(scenes, boxes, geometries[name], predict)
        out["detectors"][name] = {"common": rmse(errors, sorted(common)), "own": rmse(errors, sorted(boxes))}
        res = results[name]
        rolls = {(si, fi): res[si].rolls[d] for si in range(len(scenes)) for fi, d in enumerate(res[si].found)
                 if d is not None}
        if any(rolls.values()):  # a detector with landmarks: also cropped level
            level = keypoint_errors(scenes, boxes, geometries[name], predict, rolls)
            out["detectors"][name]["level"] = {
                "common": rmse(level, sorted(common)), "own": rmse(level, sorted(boxes)),
                "by_tilt": tilt_rmse(scenes, level), "upright_by_tilt": tilt_rmse(scenes, errors)}
    refs = {(si, fi): f.box for si, s in enumerate(scenes) for fi, f in enumerate(s.faces)}
    errors = keypoint_errors(scenes, refs, haar_keypoints_crop(), predict)
    out["reference_boxes"] = {"common": rmse(errors, sorted(common)), "all": rmse(errors, sorted(refs))}
    return out


# -- report ----------------------------------------------------------------------------------------
def _fmt(value: float | None, pattern: str = "{:.1%}") -> str:
    return "n/a" if value is None else pattern.format(value)


def _buckets(split: dict) -> str:
    return " / ".join(_fmt(v["recall"], "{:.0%}") for v in split.values())


def markdown(doc: dict) -> str:
    kp = doc.get("keypoints")
    sizes = " / ".join(name for name, _, _ in SIZE_BUCKETS)
    angles = " / ".join(name for name, _, _ in ANGLE_BUCKETS)
    lines = [
        f"# Face detectors on composite scenes{' (tiny: CI size, indicative only)' if doc['tiny'] else ''}",
        "",
        f"Command: `{doc['command']}`  ",
        f"Machine: {doc['machine']['summary']}  ",
        f"Scenes: {doc['scenes']['images']} ({doc['scenes']['no_face_images']} without faces), "
        f"{doc['scenes']['faces']} validation faces, seed {doc['scenes']['seed']}  ",
        f"Match rule: {doc['rules']['match']}  ",
        f"Timing: {doc['rules'].get('timing', 'each detector over all scenes in turn')}",
        "",
        f"| detector | recall | false boxes/img | ms/img mean / p95 | recall by size ({sizes} px) "
        f"| by rotation ({angles}°) | keypoints RMSE common / own |",
        "|---|---:|---:|---:|---|---|---:|",
    ]
    for name, m in doc["detectors"].items():
        rm = "n/a"
        if kp:
            r = kp["detectors"][name]
            rm = f"{_fmt(r['common']['rmse'], '{:.3f}')} / {_fmt(r['own']['rmse'], '{:.3f}')} ({r['own']['faces']})"
        lines.append(
            f"| {name} | {_fmt(m['recall'])} ({m['found']}/{m['faces']}) | {m['false_boxes_per_image']:.3f} "
            f"| {m['ms_mean']:.1f} / {m['ms_p95']:.1f} | {_buckets(m['recall_by_size'])} "
            f"| {_buckets(m['recall_by_rotation'])} | {rm} |")
    subsets = doc.get("subsets")
    if subsets:
        names = list(subsets)
        lines += ["", "Per subset: recall (faces) · false boxes per image · ms per image; small = main scenes' faces "
                  "< 32 px, tilted = 20-30°, no face = the main scenes without faces, dark and profile = scene sets "
                  "of their own (module docstring).", "",
                  "| subset | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for subset in next(iter(subsets.values())):
            cells = [_subset_cell(subsets[n][subset]) for n in names]
            lines.append(f"| {subset.replace('_', ' ')} | " + " | ".join(cells) + " |")
    first = next(iter(doc["detectors"].values()))
    lines += ["", "Faces per bucket: size " + " / ".join(str(v["faces"]) for v in first["recall_by_size"].values())
              + "; rotation " + " / ".join(str(v["faces"]) for v in first["recall_by_rotation"].values()) + "."]
    if kp:
        ref = kp["reference_boxes"]
        lines += [
            f"Keypoints: {kp['model']}, RMSE in px of the 96-px crop; common = the {kp['common_faces']} faces every "
            f"detector found. Cropped at the reference boxes instead: {_fmt(ref['common']['rmse'], '{:.3f}')} "
            f"(common), {_fmt(ref['all']['rmse'], '{:.3f}')} (all {ref['all']['faces']} faces). "
            "Crop geometry: " + ", ".join(f"{n}: {g}" for n, g in kp["geometry"].items()) + "."]
        level = {n: r["level"] for n, r in kp["detectors"].items() if "level" in r}
        if level:
            lines += ["", f"Crops turned level by the detector's eye landmarks (the client's default, `level_faces`), "
                      f"keypoints RMSE common / own, and by tilt ({angles}°) upright → level:", "",
                      "| detector | upright crop | level crop | by tilt, upright crop | by tilt, level crop |",
                      "|---|---:|---:|---|---|"]
            for n, r in level.items():
                up = kp["detectors"][n]
                lines.append(f"| {n} | {_fmt(up['common']['rmse'], '{:.3f}')} / {_fmt(up['own']['rmse'], '{:.3f}')} "
                             f"| {_fmt(r['common']['rmse'], '{:.3f}')} / {_fmt(r['own']['rmse'], '{:.3f}')} "
                             f"| {' / '.join(_fmt(v, '{:.3f}') for v in r['upright_by_tilt'].values())} "
                             f"| {' / '.join(_fmt(v, '{:.3f}') for v in r['by_tilt'].values())} |")
    return "\n".join(lines) + "\n"


def _subset_cell(m: dict) -> str:
    parts = []
    if "recall" in m:
        parts.append(f"{_fmt(m['recall'])} ({m['faces']})")
    if m.get("false_boxes_per_image") is not None:
        parts.append(f"{m['false_boxes_per_image']:.3f}")
    if m.get("ms_mean") is not None:
        parts.append(f"{m['ms_mean']:.1f} ms")
    return " · ".join(parts)


def _size_name(scene: Scene) -> str:
    return f"{scene.image.shape[1]}x{scene.image.shape[0]}"


def scene_summary(scenes: Sequence[Scene], seed: int) -> dict:
    """What was generated, and with which settings."""
    faces = [f for s in scenes for f in s.faces]
    return {"images": len(scenes), "no_face_images": sum(not s.faces for s in scenes), "faces": len(faces),
            "seed": seed, "sizes": {name: sum(_size_name(s) == name for s in scenes)
                                    for name in sorted({_size_name(s) for s in scenes})},
            "backgrounds": sorted({s.background for s in scenes}),
            "settings": {"face_px": FACE_PX, "max_angle_deg": MAX_ANGLE, "faces_per_scene": FACES_PER_SCENE,
                         "no_face_fraction": NO_FACE_FRACTION, "feather": FEATHER,
                         "scene_sizes": dict(zip([f"{w}x{h}" for w, h in SCENE_SIZES], SCENE_SIZE_WEIGHTS,
                                                 strict=True))}}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--detectors", nargs="+", default=list(DEFAULT_DETECTORS))
    p.add_argument("--scenes", type=int, default=DEFAULT_SCENES)
    p.add_argument("--tiny", action="store_true", help=f"{TINY_SCENES} scenes, for CI (seconds)")
    p.add_argument("--seed", type=int, default=0, help="scene generation seed")
    p.add_argument("--subset-scenes", type=int, default=None,
                   help=f"scenes in each of the dark and profile sets (default {DEFAULT_SUBSET_SCENES}, "
                   f"--tiny {TINY_SUBSET_SCENES}; 0: none)")
    p.add_argument("--split-seed", type=int, default=0, help="keypoints validation split seed used in training")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--cache-dir", default=str(REPO / "cache"))
    p.add_argument("--models", type=Path, default=REPO / "models_export")
    p.add_argument("--no-models", action="store_true", help="detectors only; no keypoints RMSE (no TensorFlow)")
    p.add_argument("--out", type=Path, default=BENCH / "results")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    n = TINY_SCENES if args.tiny else args.scenes

    subset_n = args.subset_scenes if args.subset_scenes is not None else (
        TINY_SUBSET_SCENES if args.tiny else DEFAULT_SUBSET_SCENES)

    machine = machine_info()
    faces, backgrounds = validation_faces(args.data, args.cache_dir, args.split_seed), load_backgrounds()
    scenes = make_scenes(faces, backgrounds, n, args.seed)
    extra_scenes = {name: make_scenes(faces, backgrounds, subset_n, args.seed + offset, condition=name)
                    for name, offset in SUBSET_SEEDS.items()} if subset_n else {}
    print(f"{len(scenes)} scenes, {sum(len(s.faces) for s in scenes)} faces; CPU: {machine['cpu_model']}", flush=True)
    detectors = {name: build_detector(name) for name in args.detectors}
    results = run_detectors(detectors, scenes)
    extra_results = {s: run_detectors(detectors, sc) for s, sc in extra_scenes.items()}
    metrics, subsets = {}, {}
    for name in detectors:
        metrics[name] = detection_metrics(scenes, results[name])
        extra = {s: (sc, extra_results[s][name]) for s, sc in extra_scenes.items()}
        subsets[name] = subset_metrics(scenes, results[name], extra)
        print(f"{name}: recall {metrics[name]['recall']}, {metrics[name]['false_boxes_per_image']} false/img, "
              f"{metrics[name]['ms_mean']} ms/img; " + ", ".join(
                  f"{s} {m.get('recall')}" for s, m in subsets[name].items() if s in extra_scenes), flush=True)
    doc = {
        "command": "python bench/detector_bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "tiny": args.tiny,
        "machine": machine,
        "scenes": scene_summary(scenes, args.seed),
        "rules": {
            "reference_box": f"square, side {BOX_SCALE} x mean(width, height) of the eyes/brows/mouth keypoint "
                             f"extent, centre = extent centre + ({BOX_SHIFT_Y} x side) in y; scaled/rotated with "
                             "the paste (side: scale only)",
            "timing": "detectors interleaved: each scene goes to every detector in turn, the order rotating "
                      "from scene to scene",
            "match": f"detection centre inside the reference box and sqrt(w*h) within x{MATCH_SIZE_FACTOR:g} of its "
                     "side; one-to-one, closest first; unmatched detections (duplicates too) are false boxes",
        },
        "detectors": metrics,
        "subsets": subsets,
        "subset_scenes": {name: scene_summary(sc, args.seed + SUBSET_SEEDS[name]) for name, sc in extra_scenes.items()},
    }
    if not args.no_models:
        crops = {name: keypoints_crop(det, name) for name, det in detectors.items()}
        predict, model = model_predict(args.models)
        doc["keypoints"] = {"model": model, "geometry": {n: f"{g} ({src})" for n, (g, src) in crops.items()}} | \
            keypoints_report(scenes, results, {n: g for n, (g, _) in crops.items()}, predict)
    write_results(args.out, "detectors_tiny" if args.tiny else "detectors", doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
