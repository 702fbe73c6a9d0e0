"""The model ladder: `ClientOptions.variant` / `emotion-ai --accurate` pick each task's accurate model
(`emotion_accurate`) over the fast default (`emotion`), over gRPC, REST and asyncio; `emotion-ai status`
lists every rung; `emotion-ai predict DIR` stages images ahead of the model calls, in order, one bad
file costing only its own line."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from emotion_ai import (
    AsyncEmotionClient,
    ClientOptions,
    EmotionClient,
    HaarFaceDetector,
    ModelRef,
    cli_predict,
    cli_support,
    spec,
)
from emotion_ai import cli as cli_mod

from .conftest import FakeTransport

PROTOCOLS = ("grpc", "rest")
ACCURATE = "emotion_accurate"


# -- names and options -------------------------------------------------------------------------------
def test_spec_names_the_ladder_generically():
    assert spec.SERVED_MODELS == ("keypoints", "emotion", ACCURATE)
    assert spec.model_name("emotion") == "emotion" and spec.model_name("emotion", "accurate") == ACCURATE
    assert spec.model_name("keypoints", "accurate") == "keypoints_accurate"  # a future rung: just a name
    assert spec.served_model("keypoints", "accurate") == "keypoints"  # not served: the fast one answers
    assert spec.served_model("emotion", "accurate") == ACCURATE
    with pytest.raises(ValueError, match="unknown model variant 'slow'"):
        spec.model_name("emotion", "slow")
    with pytest.raises(ValueError, match="unknown task 'age'"):
        spec.model_name("age")


def test_client_options_variant_picks_the_accurate_model():
    assert {k: r.name for k, r in ClientOptions().model_refs().items()} == {
        "keypoints": "keypoints", "emotion": "emotion"}
    accurate = ClientOptions(variant="accurate")
    assert accurate.model_refs() == {"keypoints": ModelRef("keypoints"), "emotion": ModelRef(ACCURATE)}
    assert ClientOptions(models={"emotion": ACCURATE}).model_refs() == accurate.model_refs()  # spelled out
    assert dataclasses.replace(ClientOptions(), variant="accurate").model_refs() == accurate.model_refs()
    pinned = ClientOptions(variant="accurate", models={"emotion": ModelRef(ACCURATE, version=8)})
    assert pinned.model_refs()["emotion"] == ModelRef(ACCURATE, version=8)  # an entry wins for its task


@pytest.mark.parametrize("bad", ["Accurate", "slow", ""])
def test_an_unknown_variant_is_a_value_error(bad):
    with pytest.raises(ValueError, match=f"variant must be one of 'fast', 'accurate', not '{bad}'"):
        ClientOptions(variant=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="variant"):
        EmotionClient(variant=bad, transport=FakeTransport())


def test_the_accurate_variant_reaches_the_accurate_model_with_the_same_output_contract(astronaut_bgr):
    for variant, emotion_model in (("fast", "emotion"), ("accurate", ACCURATE)):
        transport = FakeTransport()
        with EmotionClient(variant=variant, timeout=5, transport=transport) as client:
            pred = client.predict(astronaut_bgr)
        assert sorted({name for name, _ in transport.calls}) == sorted({"keypoints", emotion_model})
        assert pred.models == {"keypoints": "keypoints", "emotion": emotion_model}
        assert pred.faces and set(pred.faces[0].scores) == set(spec.EMOTION_LABELS)  # merge code unchanged


def test_cli_accurate_flag_builds_an_accurate_client():
    args = cli_mod.build_parser().parse_args(["predict", "x.jpg", "--accurate", "--emotion-version", "8"])
    with cli_support.client_from_args(args) as client:
        assert client.options.variant == "accurate"
        assert client.models == {"keypoints": ModelRef("keypoints"), "emotion": ModelRef(ACCURATE, version=8)}
    args = cli_mod.build_parser().parse_args(["status"])
    with cli_support.client_from_args(args) as client:
        assert client.models == {"keypoints": ModelRef("keypoints"), "emotion": ModelRef("emotion")}


# -- folder runs: a bounded pipeline -----------------------------------------------------------------
def test_stage_ahead_keeps_order_and_bounds_the_images_in_flight():
    started: list[int] = []
    lock = threading.Lock()

    class Stager:
        def stage(self, item: int) -> int:
            with lock:
                started.append(item)
            return item

    for i, future in enumerate(cli_predict.stage_ahead(Stager(), range(10), depth=3, workers=2)):  # type: ignore[arg-type]
        assert future.result() == i
        assert len(started) <= i + 3
    assert sorted(started) == list(range(10))


def test_predict_folder_pipeline_keeps_order_and_survives_a_corrupt_file(
        astronaut_jpeg, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(astronaut_jpeg)
    (folder / "b.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    ok, blank = cv2.imencode(".png", np.full((64, 64, 3), 128, np.uint8))
    assert ok
    (folder / "c.png").write_bytes(blank.tobytes())  # no face
    for name in ("d.jpg", "e.jpg", "f.jpg"):
        (folder / name).write_bytes(astronaut_jpeg)
    stage_threads: set[str] = set()

    class Recording(EmotionClient):
        def stage(self, image, *, color="bgr"):
            stage_threads.add(threading.current_thread().name)
            return super().stage(image, color=color)

    transport = FakeTransport()
    monkeypatch.setattr(cli_support, "client_from_args", lambda args: Recording(timeout=5, transport=transport,
                                                                   detector=HaarFaceDetector()))
    code = cli_mod.main(["predict", str(folder), "--json"])
    out, err = capsys.readouterr()
    assert code == cli_mod.EXIT_SOME_FAILED
    docs = [json.loads(line) for line in out.splitlines()]
    assert [Path(d["image"]).name for d in docs] == ["a.jpg", "b.jpg", "c.png", "d.jpg", "e.jpg", "f.jpg"]
    assert "not an image" in docs[1]["error"] and "faces" not in docs[1]  # the failed file keeps its place
    assert [len(d["faces"]) for d in docs if "faces" in d] == [1, 0, 1, 1, 1]
    bad = [line for line in err.splitlines() if "b.jpg" in line]
    assert len(bad) == 1 and bad[0].startswith("emotion-ai: skipped")
    assert stage_threads and all(t.startswith("emotion-ai-stage") for t in stage_threads)
    # the faces of --batch-images consecutive images share a request
    groups = -(-len(docs) // ClientOptions.batch_images)
    assert [name for name, _ in transport.calls].count("emotion") == groups


# -- against the embedded server ---------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_both_variants_answer_over_grpc_and_rest(server, protocol, astronaut_bgr):
    with server.client(protocol, timeout=30) as fast, server.client(protocol, timeout=30, variant="accurate") as slow:
        fast_pred, slow_pred = fast.predict(astronaut_bgr), slow.predict(astronaut_bgr)
    assert fast_pred.models["emotion"] == "emotion" and slow_pred.models["emotion"] == ACCURATE
    assert len(fast_pred.faces) == len(slow_pred.faces) == 1
    fast_face, slow_face = fast_pred.faces[0], slow_pred.faces[0]
    assert set(fast_face.scores) == set(slow_face.scores) == set(spec.EMOTION_LABELS)
    np.testing.assert_allclose([fast_face.keypoints[n] for n in spec.KEYPOINT_NAMES],  # the same keypoints model
                               [slow_face.keypoints[n] for n in spec.KEYPOINT_NAMES], atol=1e-3)
    assert fast_face.scores != pytest.approx(slow_face.scores)  # another emotion model answered


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_async_client_takes_the_same_variant(server, protocol, astronaut_bgr):
    async def main():
        async with AsyncEmotionClient("127.0.0.1", protocol=protocol, grpc_port=server.grpc_port,
                                      rest_port=server.rest_port, timeout=30, variant="accurate") as client:
            return await client.predict(astronaut_bgr), await client.model_status()

    pred, states = asyncio.run(main())
    assert pred.models == {"keypoints": "keypoints", "emotion": ACCURATE} and len(pred.faces) == 1
    assert list(states) == list(spec.SERVED_MODELS)
    assert all(v and v[0].state == "AVAILABLE" for v in states.values())


def test_cli_accurate_reaches_the_accurate_model_and_status_lists_the_ladder(server, astronaut_jpeg, tmp_path,
                                                                              capsys):
    img = tmp_path / "astronaut.jpg"
    img.write_bytes(astronaut_jpeg)
    ports = ["--host", "127.0.0.1", "--grpc-port", str(server.grpc_port), "--rest-port", str(server.rest_port),
             "--timeout", "30"]
    scores = {}
    for flags, model in (([], "emotion"), (["--accurate"], ACCURATE)):
        assert cli_mod.main(["predict", str(img), "--json", *flags, *ports]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["models"] == {"keypoints": "keypoints", "emotion": model}
        scores[model] = doc["faces"][0]["scores"]
    assert scores["emotion"] != scores[ACCURATE]
    assert cli_mod.main(["status", "--json", "--accurate", *ports]) == 0
    status = json.loads(capsys.readouterr().out)
    assert list(status) == list(spec.SERVED_MODELS)
    assert {name: s["in_use"] for name, s in status.items()} == {"keypoints": True, "emotion": False, ACCURATE: True}
    assert all(s["versions"][0]["state"] == "AVAILABLE" for s in status.values())
    assert cli_mod.main(["status", *ports]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == list(spec.SERVED_MODELS)
    assert lines[1].endswith("(in use for emotion)") and "in use" not in lines[2]
