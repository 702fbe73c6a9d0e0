"""The `emotion-ai` CLI never surprises: one-line usage errors (exit 2), unreadable inputs and stopped runs
reported (on stderr and in the JSON / CSV outputs), no empty outputs when the server is down, error messages
that name the address and the served versions, captions that do not overlap, detector knobs with units."""

from __future__ import annotations

import csv
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import pytest
from emotion_ai import cli as cli_mod
from emotion_ai import cli_support, spec
from emotion_ai._proto import tfs_pb2 as pb
from emotion_ai.errors import ModelNotFoundError, RequestTimeoutError, ServerUnavailableError
from emotion_ai.grpc_transport import GrpcTransport
from emotion_ai.rest_transport import RestTransport
from emotion_ai.result import Face, captions, draw_faces, place_labels
from emotion_ai.transport import ModelRef, RetryPolicy

from ..support.cli import run_cli as _run
from .conftest import FakeRpcError


@pytest.fixture
def cli_client(monkeypatch, fake_client):
    """The CLI's client is `fake_client` (its FakeTransport answers; nothing closes it)."""

    class NoClose:
        def __enter__(self):
            return fake_client

        def __exit__(self, *exc):
            return None

    monkeypatch.setattr(cli_support, "client_from_args", lambda args: NoClose())
    return fake_client


# -- 1. usage errors: one line, exit 2 ------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "env", "line"),
    [
        (["status", "--emotion-version", "0"], {},
         "emotion-ai status: error: argument --emotion-version: must be at least 1, not 0 "
         "(see emotion-ai status --help)"),
        (["status", "--keypoints-version", "-2"], {},
         "emotion-ai status: error: argument --keypoints-version: must be at least 1, not -2 "
         "(see emotion-ai status --help)"),
        (["status", "--timeout", "0"], {},
         "emotion-ai status: error: argument --timeout: must be more than 0, not 0 (see emotion-ai status --help)"),
        (["status", "--timeout", "-1"], {},
         "emotion-ai status: error: argument --timeout: must be more than 0, not -1 (see emotion-ai status --help)"),
        (["status", "--timeout", "nan"], {},
         "emotion-ai status: error: argument --timeout: 'nan' is not a finite number (see emotion-ai status --help)"),
        (["status", "--endpoint", "badformat"], {},
         "emotion-ai status: error: argument --endpoint: endpoint 'badformat' is not host:port "
         "(e.g. 10.0.0.5:8500, [::1]:8501) (see emotion-ai status --help)"),
        (["status", "--endpoint", "10.0.0.5:70000"], {},
         "emotion-ai status: error: argument --endpoint: the port of endpoint '10.0.0.5:70000' must be in "
         "1..65535, not 70000 (see emotion-ai status --help)"),
        (["status", "--grpc-port", "70000"], {},
         "emotion-ai status: error: argument --grpc-port: port must be in 1..65535, not 70000 "
         "(see emotion-ai status --help)"),
        (["predict", "x.jpg", "--rest-port", "0"], {},
         "emotion-ai predict: error: argument --rest-port: port must be in 1..65535, not 0 "
         "(see emotion-ai predict --help)"),
        (["video", "x.mp4", "--max-frames", "0"], {},
         "emotion-ai video: error: argument --max-frames: must be at least 1, not 0 (see emotion-ai video --help)"),
        (["video", "x.mp4", "--smoothing", "-1"], {},
         "emotion-ai video: error: argument --smoothing: must be 0 or more, not -1 (see emotion-ai video --help)"),
        (["status", "--endpoint", "dns:///serving:8500", "--protocol", "rest"], {},
         "emotion-ai: error: 'dns:///serving:8500': a dns: target is for gRPC, as the only endpoint"),
        (["status"], {"EMOTION_AI_PROTOCOL": "http"},
         "emotion-ai: error: EMOTION_AI_PROTOCOL='http': 'http' is not one of grpc, rest"),
        (["status"], {"EMOTION_AI_GRPC_PORT": "70000"},
         "emotion-ai: error: EMOTION_AI_GRPC_PORT='70000': port must be in 1..65535, not 70000"),
        (["status"], {"EMOTION_AI_REST_PORT": "-1"},
         "emotion-ai: error: EMOTION_AI_REST_PORT='-1': port must be in 1..65535, not -1"),
        (["status"], {"EMOTION_AI_HOST": ""},
         "emotion-ai: error: EMOTION_AI_HOST='': host must be a host name or address, not ''"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv, env, line, monkeypatch, capsys):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _run(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == line + "\n"
    assert captured.out == ""


def test_port_flags_take_the_whole_range(capsys):
    args = cli_mod.build_parser().parse_args(["status", "--grpc-port", "65535", "--rest-port", "1"])
    assert (args.grpc_port, args.rest_port) == (65535, 1)


# -- 2. a file that is not a video ----------------------------------------------------------------
def test_video_of_a_file_that_is_not_a_video_fails_with_one_line(tmp_path, capsys):
    text = tmp_path / "text.jpg"
    text.write_text("this is text, not an image")
    out = tmp_path / "y.jsonl"
    assert _run(["video", str(text), "--out", str(out)]) == 1  # like a missing file: an input error
    assert capsys.readouterr().err == f"emotion-ai: {text}: not a video, camera or stream OpenCV can read\n"
    assert not out.exists()


# -- 3. server down: no output created -------------------------------------------------------------
def test_predict_with_the_server_down_creates_no_output(tmp_path, astronaut_jpeg, capsys):
    img = tmp_path / "a.jpg"
    img.write_bytes(astronaut_jpeg)
    csv_path, ann = tmp_path / "out.csv", tmp_path / "ann"
    code = _run(["predict", str(img), "--csv", str(csv_path), "--annotate", str(ann), "--grpc-port", "9",
                 "--timeout", "1"])
    assert code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("emotion-ai: error: models not AVAILABLE within 1 s")
    assert not csv_path.exists() and not ann.exists()


def test_predict_of_files_that_do_not_exist_says_so_without_asking_the_server(tmp_path, capsys):
    missing = [tmp_path / "a.jpg", tmp_path / "typo.jpg"]
    csv_path = tmp_path / "out.csv"
    # port 9 has no server: reaching it would take --timeout and end in a server error (exit 2)
    code = _run(["predict", *map(str, missing), "--json", "--csv", str(csv_path), "--grpc-port", "9",
                 "--timeout", "30"])
    assert code == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"emotion-ai: skipped {m}: no such file" for m in missing]
    assert [json.loads(line) for line in out.splitlines()] == [
        {"image": str(m), "error": f"{m}: no such file"} for m in missing]
    assert not csv_path.exists()


# -- 4. and 5. failed and never-processed files in the JSON and CSV outputs --------------------------
@pytest.fixture
def folder(tmp_path, astronaut_jpeg):
    root = tmp_path / "imgs"
    root.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        (root / name).write_bytes(astronaut_jpeg)
    (root / "b.jpg").write_bytes(b"not a jpeg")
    return root


def test_failed_files_are_records_in_json_and_csv(cli_client, folder, tmp_path, capsys):
    csv_path = tmp_path / "faces.csv"
    assert _run(["predict", str(folder), "--json", "--csv", str(csv_path)]) == 1
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    b = str(folder / "b.jpg")
    assert [r["image"] for r in records] == [str(folder / n) for n in ("a.jpg", "b.jpg", "c.jpg", "d.jpg")]
    assert records[1] == {"image": b, "error": f"{b}: the data is not an image OpenCV can read"}
    assert [set(r) >= {"faces"} for r in records] == [True, False, True, True]
    assert f"emotion-ai: skipped {b}: the data is not an image OpenCV can read" in err.splitlines()
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[-1] == "error"
    assert [(r["image"], r["face"], r["error"]) for r in rows] == [
        (str(folder / "a.jpg"), "0", ""),
        (b, "", f"{b}: the data is not an image OpenCV can read"),
        (str(folder / "c.jpg"), "0", ""),
        (str(folder / "d.jpg"), "0", ""),
    ]


def test_server_dying_mid_run_lists_the_files_never_processed(cli_client, folder, tmp_path, capsys):
    (folder / "b.jpg").write_bytes((folder / "a.jpg").read_bytes())
    real = cli_client.transport.predict
    calls = []

    def dies_after_first_image(model, inputs, timeout):
        calls.append(model.name)
        if len(calls) > 2:  # both model calls of the first image answered
            raise ServerUnavailableError("predict emotion at localhost:8500: server unavailable (refused)")
        return real(model, inputs, timeout)

    cli_client.transport.predict = dies_after_first_image
    csv_path = tmp_path / "faces.csv"
    # one image per request, so it dies after the first image
    assert _run(["predict", str(folder), "--json", "--csv", str(csv_path), "--batch-images", "1"]) == 2
    out, err = capsys.readouterr()
    reason = "predict emotion at localhost:8500: server unavailable (refused)"
    names = [str(folder / n) for n in ("a.jpg", "b.jpg", "c.jpg", "d.jpg")]
    assert err.splitlines() == [
        f"emotion-ai: failed {names[1]}",
        f"emotion-ai: not processed {names[2]}",
        f"emotion-ai: not processed {names[3]}",
        f"emotion-ai: error: {reason}; 2 more file(s) not processed",
    ]
    records = [json.loads(line) for line in out.splitlines()]
    assert records[0]["image"] == names[0] and len(records[0]["faces"]) == 1
    assert records[1:] == [
        {"image": names[1], "error": reason},
        {"image": names[2], "error": f"not processed: {reason}"},
        {"image": names[3], "error": f"not processed: {reason}"},
    ]
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["image"], r["error"]) for r in rows] == [
        (names[0], ""), (names[1], reason), (names[2], f"not processed: {reason}"),
        (names[3], f"not processed: {reason}")]


def test_a_folder_shares_requests_across_images_with_the_same_answers(cli_client, folder, capsys):
    """Groups of --batch-images images share one request per model; the output is what one-by-one gives,
    and an unreadable file in a group costs only its own record."""
    real = cli_client.transport.predict
    batches: list[tuple[str, int]] = []

    def counted(model, inputs, timeout):
        batches.append((model.name, len(inputs["image"])))
        return real(model, inputs, timeout)

    cli_client.transport.predict = counted
    runs = {}
    for group in (1, 4):
        batches.clear()
        assert _run(["predict", str(folder), "--json", "--batch-images", str(group)]) == 1  # b.jpg: not an image
        records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        # what detection and the grouping decide (the fake transport's scores depend on the batch)
        records = [{"image": r["image"], "error": r.get("error"), "boxes": [f["box"] for f in r.get("faces", [])]}
                   for r in records]
        runs[group] = (records, sorted(batches))
    assert runs[4][0] == runs[1][0] and len(runs[4][0]) == 4 and runs[4][0][1]["error"]
    assert sum(len(r["boxes"]) for r in runs[1][0]) == 3
    assert runs[1][1] == sorted([(spec.EMOTION_MODEL, 1), (spec.KEYPOINTS_MODEL, 1)] * 3)
    assert runs[4][1] == sorted([(spec.EMOTION_MODEL, 3), (spec.KEYPOINTS_MODEL, 3)])


# -- 6. the REST timeout names the address ----------------------------------------------------------
def test_rest_timeout_message_names_the_address():
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        transport = RestTransport("127.0.0.1", port)
        try:
            with pytest.raises(RequestTimeoutError) as exc:
                transport.status(ModelRef("emotion"), 0.3)
        finally:
            transport.close()
    assert str(exc.value) == f"status emotion at http://127.0.0.1:{port}: no answer within the deadline"


# -- 7. captions never overlap ----------------------------------------------------------------------
def _face(box, emotion="happy"):
    return Face(box=box, detection_score=0.9, keypoints={}, emotion=emotion, scores={emotion: 0.9})


def _disjoint(rects):
    return all(not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
               for i, a in enumerate(rects) for b in rects[i + 1:])


@pytest.mark.parametrize("top", [100, 0])  # room above the boxes, and none
def test_captions_of_adjacent_faces_do_not_overlap(top):
    faces = [_face((100, top, 40, 40), "happy"), _face((141, top, 40, 40), "surprise"),
             _face((182, top, 40, 40), "neutral")]
    placed = captions(faces, (400, 300))
    rects = [c.rect for c in placed]
    assert rects[0][2] > 141  # "happy 0.90" is wider than its box: it would reach over the next one's
    assert _disjoint(rects)
    assert all(r[0] >= 0 and r[2] <= 400 and r[1] >= 0 and r[3] <= 300 for r in rects)
    image = draw_faces(np.zeros((300, 400, 3), np.uint8), faces)
    for r in rects:  # each caption's background is drawn where it was placed
        assert (image[r[1] + 1, r[0] + 1] != 0).any()


def test_place_labels_first_tries_above_then_below_then_further_out():
    boxes = [(10, 50, 20, 20), (12, 50, 20, 20), (14, 50, 20, 20)]
    rects = place_labels(boxes, [(60, 10)] * 3, (200, 200))
    assert rects == [(10, 39, 70, 49), (12, 71, 72, 81), (14, 29, 74, 39)]
    assert _disjoint(rects)
    crowd = [(x, y, 10, 10) for x in range(0, 60, 12) for y in range(0, 60, 12)]
    assert _disjoint(place_labels(crowd, [(40, 9)] * len(crowd), (64, 64)))  # more labels than room: still apart


# -- 8. detector knobs say their unit ---------------------------------------------------------------
def test_detector_knobs_help_states_units_and_defaults(capsys):
    assert _run(["predict", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert ("--min-face-size PX smallest face reported: the longer side of the detector's box, in pixels of the "
            "original image") in text
    assert "(default: yunet 10, mtcnn 20, haar 30)" in text
    assert "--max-side PX detect on a copy whose longer side is at most this many pixels" in text
    assert "in [0, 1] (default: yunet 0.7" in text


# -- 9. a version that is not served: the error says which are ---------------------------------------
class _TinyRest(BaseHTTPRequestHandler):
    """TF Serving's REST answers for a server with emotion versions 3 (unloaded) and 9 (AVAILABLE)."""

    status_calls = 0

    def do_POST(self):
        self._reply(404, {"error": "Servable not found for request: Specific(emotion, 99)"})

    def do_GET(self):
        type(self).status_calls += 1
        if self.path == "/v1/models/emotion":
            self._reply(200, {"model_version_status": [
                {"version": "3", "state": "END", "status": {"error_code": "OK", "error_message": ""}},
                {"version": "9", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})
        else:
            self._reply(404, {"error": "Could not find any versions of model nope"})

    def _reply(self, code, doc):
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def tiny_rest():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TinyRest)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _TinyRest.status_calls = 0
    yield RestTransport("127.0.0.1", server.server_address[1], policy=RetryPolicy(retries=0))
    server.shutdown()
    server.server_close()


def test_rest_model_not_found_names_the_served_versions(tiny_rest):
    batch = {spec.INPUT_KEY: np.zeros((1, 48, 48, 1), np.uint8)}
    with pytest.raises(ModelNotFoundError) as exc:
        tiny_rest.predict(ModelRef("emotion", version=99), batch, 5.0)
    assert str(exc.value) == ("model not found: Servable not found for request: Specific(emotion, 99) "
                              "(versions available on the server: 9)")
    assert exc.value.served_versions == (9,)
    with pytest.raises(ModelNotFoundError) as exc:
        tiny_rest.predict(ModelRef("nope", version_label="stable"), batch, 5.0)
    assert str(exc.value).endswith("(versions available on the server: none)")
    _TinyRest.status_calls = 0
    with pytest.raises(ModelNotFoundError) as exc:  # the latest version: nothing to list, no status call
        tiny_rest.predict(ModelRef("emotion"), batch, 5.0)
    assert exc.value.served_versions is None and _TinyRest.status_calls == 0
    tiny_rest.close()




def test_grpc_model_not_found_names_the_served_versions():
    transport = GrpcTransport("127.0.0.1:9", policy=RetryPolicy(retries=0))
    asked = []

    def predict(request, timeout):
        raise FakeRpcError(grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(emotion, 99)")

    def status(request, timeout):
        asked.append((request.model_spec.name, request.model_spec.HasField("version")))
        reply = pb.GetModelStatusResponse()
        for version, state in ((9, pb.ModelVersionStatus.AVAILABLE), (4, pb.ModelVersionStatus.AVAILABLE)):
            reply.model_version_status.add(version=version, state=state)
        return reply

    transport._predict, transport._status = predict, status
    try:
        with pytest.raises(ModelNotFoundError) as exc:
            transport.predict(ModelRef("emotion", version=99), {spec.INPUT_KEY: np.zeros((1, 48, 48, 1), np.uint8)},
                              5.0)
    finally:
        transport.close()
    assert str(exc.value) == ("model not found: Servable not found for request: Specific(emotion, 99) "
                              "(versions available on the server: 4, 9)")
    assert asked == [("emotion", False)]  # one status call, for the model's latest versions


def test_waiting_for_a_version_that_is_not_served_fails_at_once() -> None:
    import time

    from emotion_ai import EmotionClient

    from .conftest import FakeTransport

    class PinnedElsewhere(FakeTransport):
        def status(self, model, timeout):
            if model.name != spec.EMOTION_MODEL:
                return super().status(model, timeout)
            exc = ModelNotFoundError("Servable not found for request: Specific(emotion, 99)", code="NOT_FOUND")
            exc.set_served_versions((9, 10))
            raise exc

    with EmotionClient(timeout=5, transport=PinnedElsewhere()) as client:
        start = time.monotonic()
        with pytest.raises(ModelNotFoundError, match=r"versions available on the server: 9, 10"):
            client.wait_until_available(timeout=20)
        assert time.monotonic() - start < 5  # not the 20 s deadline
