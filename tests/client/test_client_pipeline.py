"""Client pipeline with a deterministic fake *transport* (no server): faces, ordering, batching,
concurrency, result schema, annotation, and the CLI's output and exit codes."""

from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest
from emotion_ai import InvalidImageError, Prediction, cli_support, spec
from emotion_ai import cli as cli_mod
from emotion_ai.preprocess import square_for_box

from .conftest import FAKE_LABELS, FakeTransport


def _tiles(*images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.concatenate(images, axis=1))


def test_no_face_gives_empty_list_and_no_request(fake_client):
    pred = fake_client.predict(np.full((240, 320, 3), 127, np.uint8))
    assert pred.faces == []
    assert pred.image_size == (320, 240)
    assert fake_client.transport.calls == []
    assert set(pred.timings_ms) == {
        "decode",
        "detect",
        "preprocess",
        "keypoints",
        "emotion",
        "total",
    }


def test_several_faces_left_to_right_one_request_per_model(fake_client, astronaut_bgr):
    canvas = _tiles(astronaut_bgr[:, ::-1], np.zeros((512, 200, 3), np.uint8), astronaut_bgr)
    barrier = threading.Barrier(2)
    fake_client.transport.barrier = barrier  # times out unless both requests run concurrently
    pred = fake_client.predict(canvas)
    assert len(pred.faces) == 2
    xs = [f.box[0] for f in pred.faces]
    assert xs == sorted(xs) and xs[1] > 512
    calls = sorted(fake_client.transport.calls)
    assert calls == [("emotion", (2, 48, 48, 1)), ("keypoints", (2, 96, 96, 1))]
    assert len(fake_client.transport.threads) == 2
    for i, face in enumerate(pred.faces):
        t = square_for_box(face.box, fake_client.keypoints_crop, spec.KEYPOINTS_INPUT_SIZE)
        expect = t.to_original(np.array([10.0 + i, 20.0 + i]))
        assert face.keypoints["nose_tip"] == pytest.approx(tuple(expect))
        assert face.emotion == FAKE_LABELS[i]  # labels from the model's classes, in its order
        assert list(face.scores) == list(FAKE_LABELS)
        assert 0.5 < face.detection_score <= 1.0


def test_predict_batch_groups_images_and_returns_errors_in_place(
    fake_client, astronaut_bgr, astronaut_jpeg
):
    blank = np.zeros((100, 100, 3), np.uint8)
    out = fake_client.predict_batch(
        [astronaut_jpeg, blank, b"not an image", astronaut_bgr], errors="return"
    )
    assert [type(p).__name__ for p in out] == [
        "Prediction",
        "Prediction",
        "InvalidImageError",
        "Prediction",
    ]
    assert [len(p.faces) for p in out if isinstance(p, Prediction)] == [1, 0, 1]
    # both faces went in one request per model
    assert sorted(fake_client.transport.calls) == [
        ("emotion", (2, 48, 48, 1)),
        ("keypoints", (2, 96, 96, 1)),
    ]
    with pytest.raises(InvalidImageError):
        fake_client.predict_batch([b"", astronaut_jpeg])


def test_prediction_dict_schema_annotate_and_save(fake_client, astronaut_bgr, tmp_path):
    pred = fake_client.predict(astronaut_bgr)
    doc = json.loads(pred.to_json())
    assert set(doc) == {"image", "image_size", "faces", "models", "timings_ms"}
    assert doc["models"] == {"keypoints": "keypoints", "emotion": "emotion"}  # the fast default
    face = doc["faces"][0]
    assert set(face) == {"box", "detection_score", "keypoints", "emotion", "scores"}
    assert len(face["box"]) == 4 and all(isinstance(v, float) for v in face["box"])
    assert list(face["keypoints"]) == list(spec.KEYPOINT_NAMES)
    assert all(len(v) == 2 for v in face["keypoints"].values())
    assert face["emotion"] in face["scores"]
    annotated = pred.annotate()
    assert annotated.shape == astronaut_bgr.shape and not np.array_equal(annotated, astronaut_bgr)
    x, y, w, _ = (round(v) for v in pred.faces[0].box)
    top_edge = annotated[y - 1 : y + 2, x + w // 4 : x + 3 * w // 4].astype(int)
    assert (top_edge[..., 1] - top_edge[..., 0] > 100).any()  # the green box outline is drawn
    saved = pred.save(tmp_path / "out.png")
    assert cv2.imread(str(saved)).shape == astronaut_bgr.shape
    assert (
        json.loads(pred.save(tmp_path / "out.json").read_text())["faces"][0]["emotion"]
        == face["emotion"]
    )


@pytest.fixture
def cli_with_fake(monkeypatch, fake_client):
    monkeypatch.setattr(cli_support, "client_from_args", lambda args: _NoClose(fake_client))
    return fake_client


class _NoClose:
    def __init__(self, client):
        self.client = client

    def __getattr__(self, name):
        return getattr(self.client, name)

    def __enter__(self):
        return self.client

    def __exit__(self, *exc):
        return None


def test_cli_predict_json_schema_csv_annotate_and_exit_codes(
    cli_with_fake, astronaut_jpeg, tmp_path, capsys
):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(astronaut_jpeg)
    (folder / "b.png").write_bytes(cv2.imencode(".png", np.zeros((64, 64), np.uint8))[1].tobytes())
    (folder / "broken.jpg").write_bytes(b"this is text, not a jpeg")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    csv_path, ann = tmp_path / "faces.csv", tmp_path / "ann"
    code = cli_mod.main(
        ["predict", str(folder), "--json", "--csv", str(csv_path), "--annotate", str(ann)]
    )
    out, err = capsys.readouterr()
    assert code == 1  # one unreadable file, the run continued
    lines = [json.loads(line) for line in out.splitlines()]
    assert [len(d["faces"]) for d in lines[:2]] == [1, 0]
    assert lines[0]["image"].endswith("a.jpg")
    assert lines[2] == {"image": str(folder / "broken.jpg"), "error": lines[2]["error"]}  # a failed file's record
    assert "broken.jpg" in lines[2]["error"]
    face = lines[0]["faces"][0]
    assert set(face) == {"box", "detection_score", "keypoints", "emotion", "scores"}
    assert set(lines[0]["timings_ms"]) == {
        "decode",
        "detect",
        "preprocess",
        "keypoints",
        "emotion",
        "total",
    }
    assert sum("broken.jpg" in line for line in err.splitlines()) == 1
    rows = csv_path.read_text().splitlines()
    header = rows[0].split(",")
    assert header[:8] == ["image", "face", "x", "y", "w", "h", "detection_score", "emotion"]
    assert [f"score_{label}" for label in FAKE_LABELS] == header[8:15]
    assert header[15:-1] == list(spec.KEYPOINT_COLUMNS) and header[-1] == "error"
    assert len(rows) == 4  # header + a.jpg's face + b.png's empty row + broken.jpg's error row
    assert rows[1].endswith(",") and rows[3].startswith(str(folder / "broken.jpg") + ",,")
    assert sorted(p.name for p in ann.iterdir()) == ["a.jpg", "b.png"]
    # A second run never overwrites; --recursive keeps relative paths, so x/a.jpg and y/a.jpg stay apart.
    for sub in ("x", "y"):
        (folder / sub).mkdir()
        (folder / sub / "a.jpg").write_bytes(astronaut_jpeg)
    assert cli_mod.main(["predict", str(folder), "--recursive", "--annotate", str(ann)]) == 1
    capsys.readouterr()
    written = sorted(str(p.relative_to(ann)) for p in ann.rglob("*") if p.is_file())
    assert written == ["a-1.jpg", "a.jpg", "b-1.png", "b.png", "x/a.jpg", "y/a.jpg"]

    assert cli_mod.main(["predict", str(folder / "a.jpg")]) == 0
    assert "1 face(s)" in capsys.readouterr().out


def test_cli_exit_code_2_when_server_is_down(tmp_path, astronaut_jpeg, capsys):
    img = tmp_path / "a.jpg"
    img.write_bytes(astronaut_jpeg)
    code = cli_mod.main(["predict", str(img), "--grpc-port", "9", "--timeout", "2"])
    assert code == 2
    assert "server unavailable" in capsys.readouterr().err
    assert cli_mod.main(["status", "--protocol", "rest", "--rest-port", "9", "--timeout", "2"]) == 2
    with pytest.raises(SystemExit) as exc:
        cli_mod.main(["predict"])
    assert exc.value.code == 2


class _SpreadKeypoints(FakeTransport):
    """FakeTransport whose keypoints are spread over the crop (a face-like layout, the same for every face):
    the stream follows faces by their keypoints' centre and spread, which FakeTransport's single point lacks."""

    def predict(self, model, inputs, timeout):
        out = super().predict(model, inputs, timeout)
        if model.name == spec.KEYPOINTS_MODEL:
            n = inputs[spec.INPUT_KEY].shape[0]
            layout = np.stack([np.linspace(30, 66, 15), np.tile([38, 56, 76], 5)], axis=1).astype(np.float32)
            out = {"": np.repeat(layout[None], n, axis=0)}
        return out


def test_cli_video_timeline_with_tracks(cli_with_fake, astronaut_bgr, tmp_path):
    cli_with_fake.transport = _SpreadKeypoints()
    video = tmp_path / "in.avi"
    frame0 = cv2.resize(_tiles(astronaut_bgr[:, ::-1], astronaut_bgr), (640, 320))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 320))
    for i in range(6):
        writer.write(np.roll(frame0, 2 * i, axis=1))
    writer.release()
    out, ann = tmp_path / "t.jsonl", tmp_path / "ann.mp4"
    assert (
        cli_mod.main(
            ["video", str(video), "--out", str(out), "--every", "2", "--annotated", str(ann)]
        )
        == 0
    )
    frames = [json.loads(line) for line in out.read_text().splitlines()]
    assert [f["frame"] for f in frames] == [0, 2, 4]  # one object per analysed frame
    per_frame = [{face["track_id"] for face in f["faces"]} for f in frames]
    steady = set.intersection(*per_frame)
    assert len(steady) == 2  # both faces keep their track id across frames
    for tid in steady:
        xs = [face["box"][0] for f in frames for face in f["faces"] if face["track_id"] == tid]
        assert max(xs) - min(xs) < 20
    for f in frames:
        assert f["time"] == pytest.approx(f["frame"] / 10)
        for face in f["faces"]:
            assert set(face) >= {"box", "emotion", "scores", "keypoints", "smoothed_scores", "smoothed_emotion"}
    cap = cv2.VideoCapture(str(ann))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    cap.release()
    csv_out = tmp_path / "t.csv"
    assert cli_mod.main(["video", str(video), "--out", str(csv_out)]) == 0
    header = csv_out.read_text().splitlines()[0].split(",")
    assert header[:3] == ["frame", "time", "face"] and "track_id" in header and "smoothed_happy" in header
    assert len(csv_out.read_text().splitlines()) >= 1 + 6 * 2
    assert cli_mod.main(["video", str(tmp_path / "missing.mp4")]) == 1


class _GridDetector:
    """Reports `n` faces in a grid (a crowd), whatever the image."""

    def __init__(self, n: int):
        self.n = n

    def detect(self, image):
        from emotion_ai.detect import Detection

        return [Detection(box=(10 + 30 * (i % 20), 10 + 30 * (i // 20), 24, 24), score=1.0) for i in range(self.n)]


def test_crowds_are_split_into_bounded_requests_and_merged_in_order(astronaut_bgr):
    from emotion_ai import EmotionClient

    transport = FakeTransport()
    client = EmotionClient(timeout=5, transport=transport, detector=_GridDetector(70), max_faces_per_request=32)
    try:
        pred = client.predict(astronaut_bgr)
    finally:
        client.close()
    assert len(pred.faces) == 70
    assert sorted(shape[0] for _, shape in transport.calls) == [6, 6, 32, 32, 32, 32]
    # face j was face j % 32 of its request, and FakeTransport gives face i of a request label i % 7
    assert [f.emotion for f in pred.faces] == [FAKE_LABELS[(j % 32) % 7] for j in range(70)]


def test_cli_folder_run_reports_a_timed_out_file_and_goes_on(cli_with_fake, astronaut_jpeg, tmp_path, capsys):
    from emotion_ai.errors import RequestTimeoutError

    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (folder / name).write_bytes(astronaut_jpeg)
    real = cli_with_fake.transport.predict
    calls = []

    def first_image_times_out(model, inputs, timeout):
        calls.append(model.name)
        if len(calls) <= 2:  # both model calls of the first image
            raise RequestTimeoutError("emotion: the request exceeded its deadline")
        return real(model, inputs, timeout)

    cli_with_fake.transport.predict = first_image_times_out
    # one image per request: the first image's calls time out
    assert cli_mod.main(["predict", str(folder), "--json", "--batch-images", "1"]) == 1
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert records[0] == {"image": str(folder / "a.jpg"), "error": "emotion: the request exceeded its deadline"}
    assert records[1]["image"].endswith("b.jpg") and len(records) == 2
    assert "failed" in err and "a.jpg" in err and "--timeout" in err


def test_predict_batch_returns_server_errors_per_image(fake_client, astronaut_bgr):
    from emotion_ai.errors import ServerError

    real = fake_client.transport.predict

    def fails_for_crowds(model, inputs, timeout):
        if inputs["image"].shape[0] > 1:  # the grouped request, and any image with several faces
            raise ServerError("batch too large", code="RESOURCE_EXHAUSTED")
        return real(model, inputs, timeout)

    fake_client.transport.predict = fails_for_crowds
    crowd = np.concatenate([astronaut_bgr, astronaut_bgr], axis=1)  # two faces
    results = fake_client.predict_batch([astronaut_bgr, crowd, astronaut_bgr], errors="return")
    assert [type(r).__name__ for r in results] == ["Prediction", "ServerError", "Prediction"]
    assert len(results[0].faces) == 1
    with pytest.raises(ServerError):
        fake_client.predict_batch([astronaut_bgr, crowd], errors="raise")
