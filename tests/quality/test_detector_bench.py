"""bench/detector_bench.py: the composite-scene generator's invariants, the match rule on hand-made boxes,
the keypoint mapping, and the Haar detector through the bench's metric function (seconds, no TensorFlow)."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
from emotion_ai import detect, spec
from emotion_ai.preprocess import square_for_box

from .quality_support import bench_module

db = bench_module("detector_bench")

#: Frontal keypoints of a 96x96 frame, roughly where the dataset has them (x, y), in spec order.
FRONTAL = np.array([
    [66, 38], [30, 38], [59, 38], [73, 38], [37, 38], [23, 38], [56, 29], [79, 29], [40, 29], [17, 29],
    [48, 56], [63, 76], [33, 76], [48, 72], [48, 82]], np.float64)
TINY = 6


def synthetic_faces(n: int = 12) -> db.FaceSource:
    """Textured 96x96 frames (gray levels 60-200) with jittered frontal keypoints; one point missing per frame."""
    rng = np.random.default_rng(7)
    images = rng.integers(60, 201, (n, 96, 96)).astype(np.uint8)
    points = FRONTAL[None] + rng.normal(0, 1.5, (n, 15, 2))
    points[np.arange(n), rng.integers(0, 15, n)] = np.nan
    return db.FaceSource(images, points, np.arange(n))


def black_backgrounds() -> dict[str, np.ndarray]:
    return {"black": np.zeros((300, 400, 3), np.uint8)}


@pytest.fixture(scope="module")
def scenes() -> list[db.Scene]:
    return db.make_scenes(synthetic_faces(), black_backgrounds(), TINY, seed=3)


@pytest.fixture(scope="module")
def real_faces() -> db.FaceSource | None:
    """The bench's validation faces when the shared data is here (None otherwise)."""
    return db.validation_faces(db.DATA, None, 0) if db.DATA.is_file() else None


def test_generation_is_seeded(scenes):
    again = db.make_scenes(synthetic_faces(), black_backgrounds(), TINY, seed=3)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(scenes, again, strict=True))
    other = db.make_scenes(synthetic_faces(), black_backgrounds(), TINY, seed=4)
    assert not all(np.array_equal(a.image, b.image) for a, b in zip(scenes, other, strict=True))


def test_scenes_hold_faces_of_the_promised_sizes_and_tilts(scenes):
    assert not scenes[0].faces  # a no-face scene for false positives
    assert all(1 <= len(s.faces) <= 6 for s in scenes[1:])
    for face in (f for s in scenes for f in s.faces):
        assert db.FACE_PX[0] - 1 <= face.size <= db.FACE_PX[1] + 1
        assert abs(face.angle) <= db.MAX_ANGLE
        assert face.box[2] == face.box[3]


def test_reference_boxes_lie_inside_the_image_and_faces_do_not_overlap(scenes):
    _check_layout(scenes)


def test_validation_face_scenes_keep_the_layout_invariants(real_faces):
    """Real frames: their reference boxes reach past the 96-px frame, so the inside-the-image check bites."""
    if real_faces is None:
        pytest.skip(f"no keypoints data at {db.DATA}")
    scenes = db.make_scenes(real_faces, {"black": np.zeros((480, 640, 3), np.uint8)}, 30, seed=1)
    assert sum(len(s.faces) for s in scenes) > 50
    _check_layout(scenes)


def _check_layout(scenes: list[db.Scene]) -> None:
    for s in scenes:
        h, w = s.image.shape[:2]
        for f in s.faces:
            assert db.box_inside(f.box, w, h), f.box
            x0, y0, x1, y1 = f.region
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        for a, b in itertools.combinations(s.faces, 2):
            assert not _intersect(a.region, b.region)
            assert not _intersect(_corners(a.box), _corners(b.box))


def test_reference_keypoints_land_on_the_pasted_face(scenes):
    """On a black background every present keypoint must fall on face pixels (gray >= 60 before blending)."""
    checked = 0
    for s in scenes:
        gray = cv2.cvtColor(s.image, cv2.COLOR_BGR2GRAY)
        for f in s.faces:
            present = ~np.isnan(f.points[:, 0])
            assert (~present).sum() == 1  # the missing point stays missing
            for x, y in f.points[present]:
                assert gray[round(y), round(x)] > 30, (x, y, f.box)
                checked += 1
    assert checked > 0


@pytest.mark.parametrize(("size", "angle"), [(40.0, 0.0), (150.0, 25.0), (90.0, -30.0)])
def test_a_keypoint_is_transformed_with_the_pasted_pixels(size, angle):
    """A Gaussian dot at one keypoint of a black frame must land where the face's transformed point says."""
    frame = np.zeros((96, 96), np.uint8)
    yy, xx = np.mgrid[:96, :96]
    dot = np.array([30.0, 60.0])
    frame[:] = np.clip(255 * np.exp(-((xx - dot[0]) ** 2 + (yy - dot[1]) ** 2) / (2 * 3.0**2)), 0, 255)
    points = FRONTAL.copy()
    points[0] = dot
    image = np.zeros((400, 400, 3), np.uint8)
    face = db.place_face(np.random.default_rng(0), image, frame, points, 0, [], size=size, angle=angle)
    assert face is not None
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float64)
    centroid = np.array([(gray * np.mgrid[:400, :400][1]).sum(), (gray * np.mgrid[:400, :400][0]).sum()]) / gray.sum()
    assert np.linalg.norm(centroid - face.points[0]) < 0.1, (centroid, face.points[0])
    assert face.size == pytest.approx(size, abs=1.0)
    assert face.angle == angle


def test_match_rule_on_hand_made_boxes():
    ref = (100.0, 100.0, 50.0, 50.0)
    assert db.is_match((105, 105, 45, 45), ref)
    assert db.is_match((90, 90, 80, 80), ref)  # looser box, same centre
    assert not db.is_match((160, 100, 50, 50), ref)  # centre outside the reference box
    assert not db.is_match((50, 50, 150, 150), ref)  # 3x too big
    assert not db.is_match((120, 120, 10, 10), ref)  # 5x too small
    found, false_boxes = db.match([ref], [(300, 300, 40, 40)])
    assert found == [None] and false_boxes == 1
    found, false_boxes = db.match([ref], [(102, 106, 50, 50), (100, 100, 50, 50)])  # a duplicate detection
    assert found == [1] and false_boxes == 1  # the closer one matches, the other is a false box
    other = (200.0, 100.0, 50.0, 50.0)
    found, false_boxes = db.match([ref, other], [(201, 99, 50, 50), (99, 101, 52, 52)])
    assert found == [1, 0] and false_boxes == 0
    assert db.match([], []) == ([], 0)


def test_keypoint_errors_map_model_pixels_back_exactly(scenes):
    """A predictor answering the true points in model pixels must give zero error through the crop mapping."""
    geometry = db.haar_keypoints_crop()
    boxes = {(si, fi): f.box for si, s in enumerate(scenes) for fi, f in enumerate(s.faces)}
    answers = iter(
        square_for_box(boxes[k], geometry, spec.KEYPOINTS_INPUT_SIZE).to_crop(scenes[k[0]].faces[k[1]].points)
        for k in boxes
    )

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.stack([next(answers) for _ in range(len(batch))])

    errors = db.keypoint_errors(scenes, boxes, geometry, predict)
    assert set(errors) == set(boxes)
    result = db.rmse(errors, boxes)
    assert result["faces"] == len(boxes) and result["rmse"] == pytest.approx(0.0, abs=1e-9)
    shifted = {k: e + 1.0 for k, e in errors.items()}
    assert db.rmse(shifted, boxes)["rmse"] == pytest.approx(1.0)


def test_haar_through_the_metric_function(real_faces):
    backgrounds = db.load_backgrounds(("brick", "coffee"))
    faces = real_faces or synthetic_faces()
    scenes = db.make_scenes(faces, backgrounds, 3, seed=0)
    results = db.run_detector(db.build_detector("haar"), scenes)
    m = db.detection_metrics(scenes, results)
    assert m["images"] == 3 and m["faces"] == sum(len(s.faces) for s in scenes) > 0
    assert 0 <= m["found"] <= m["faces"] and m["recall"] == pytest.approx(m["found"] / m["faces"], abs=1e-4)
    assert m["false_boxes"] == sum(len(r.boxes) for r in results) - m["found"] >= 0
    assert m["false_boxes_per_image"] == pytest.approx(m["false_boxes"] / 3, abs=1e-4)
    assert m["ms_mean"] > 0 and m["ms_p95"] > 0
    for split in ("recall_by_size", "recall_by_rotation"):
        assert sum(b["faces"] for b in m[split].values()) == m["faces"]
        assert all(b["recall"] is None or 0 <= b["recall"] <= 1 for b in m[split].values())
    assert db.markdown({"tiny": True, "command": "x", "machine": {"summary": "m"}, "rules": {"match": "r"},
                        "scenes": db.scene_summary(scenes, 0), "detectors": {"haar": m}}).count("| haar |") == 1


def test_haar_finds_a_large_upright_validation_face(real_faces):
    faces = real_faces
    if faces is None:
        pytest.skip(f"no keypoints data at {db.DATA}")
    image = db.load_backgrounds(("brick",))["brick"][:480, :480].copy()
    face = db.place_face(np.random.default_rng(0), image, faces.images[0], faces.points[0], 0, [], size=150, angle=0)
    scene = db.Scene(image, "brick", [face])
    (result,) = db.run_detector(db.build_detector("haar"), [scene])
    assert result.found == [0] and result.false_boxes == 0, result.boxes


def _corners(box: db.Box) -> tuple[float, float, float, float]:
    return box[0], box[1], box[0] + box[2], box[1] + box[3]


def _intersect(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("angle", [-28.0, 28.0])
def test_mtcnn_tilt_search_finds_the_tilted_faces_the_upright_search_misses(real_faces, angle):
    """Validation faces tilted 28°: the default (doubtful candidates looked at turned ±25° too) finds them
    all, the upright look misses some; neither draws a false box."""
    if real_faces is None:
        pytest.skip(f"no keypoints data at {db.DATA}")
    image = db.load_backgrounds(("brick",))["brick"][:480, :640].copy()
    rng = np.random.default_rng(1)
    taken: list = []
    faces = [db.place_face(rng, image, real_faces.images[i], real_faces.points[i], i, taken, size=70, angle=angle)
             for i in range(0, 60, 6)]
    scene = db.Scene(image, "brick", [f for f in faces if f is not None])
    assert len(scene.faces) >= 6
    (upright,) = db.run_detector(detect.MtcnnFaceDetector(tilts=()), [scene])
    (tilted,) = db.run_detector(detect.MtcnnFaceDetector(), [scene])
    assert None not in tilted.found and tilted.false_boxes == 0
    assert upright.found.count(None) >= 1 and upright.false_boxes == 0
    assert set(upright.boxes) < set(tilted.boxes)  # the turned looks only add faces: the upright ones keep their boxes


def test_mtcnn_first_stage_runs_p_net_alone_and_reports_no_face(real_faces):
    """The time floor finds nothing where the full search finds the face."""
    if real_faces is None:
        pytest.skip(f"no keypoints data at {db.DATA}")
    floor = db.build_detector("mtcnn-first-stage")
    assert isinstance(floor, db.MtcnnFirstStage) and floor.name == "mtcnn"
    image = db.load_backgrounds(("brick",))["brick"][:480, :480].copy()
    face = db.place_face(np.random.default_rng(0), image, real_faces.images[0], real_faces.points[0], 0, [],
                         size=150, angle=0)
    scene = db.Scene(image, "brick", [face])
    (full,) = db.run_detector(db.build_detector("mtcnn"), [scene])
    (first,) = db.run_detector(floor, [scene])
    assert full.found == [0] and first.found == [None] and first.boxes == []


def test_detectors_take_each_scene_in_turn_in_a_rotating_order(scenes):
    calls: list[tuple[str, int]] = []

    class Recorder:
        def __init__(self, name: str):
            self.name = name

        def detect(self, image):
            calls.append((self.name, next(k for k, s in enumerate(scenes) if s.image is image)))
            return []

    results = db.run_detectors({"a": Recorder("a"), "b": Recorder("b"), "c": Recorder("c")}, scenes)
    assert calls[:3] == [("a", 0), ("b", 0), ("c", 0)]  # untimed warm-ups
    timed = calls[3:]
    assert [k for _, k in timed] == [k for k in range(len(scenes)) for _ in range(3)]
    assert [timed[3 * k][0] for k in range(len(scenes))] == ["abc"[k % 3] for k in range(len(scenes))]
    for name in "abc":
        assert len(results[name]) == len(scenes)
        assert [r.found for r in results[name]] == [[None] * len(s.faces) for s in scenes]
