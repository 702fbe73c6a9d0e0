"""Inputs found by `bench/fuzz.py` that once escaped the typed errors, and a seconds-long fuzzing smoke run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from emotion_ai.errors import InvalidImageError
from emotion_ai.images import decode_bytes
from emotion_ai_serving.errors import ServingError
from emotion_ai_serving.json_tensor import InputSpec, parse_json_object, predict_tensors_from_json

REPO = Path(__file__).resolve().parents[2]
UINT8 = InputSpec("uint8", np.uint8)


def test_b64_instances_for_a_multi_input_signature_are_a_serving_error() -> None:
    # Found by the rest target: ValueError (tuple unpacking) instead of TF Serving's message.
    doc = parse_json_object(b'{"instances": [{"b64": "AAAA"}]}')
    with pytest.raises(ServingError, match="instances is a plain list, but expecting list of objects"):
        predict_tensors_from_json(doc, {"image": UINT8, "extra": InputSpec("float", np.float32)})


@pytest.mark.parametrize("may_contain_bools", [True, False])
def test_uint8_values_past_255_wrap_on_both_paths(may_contain_bools: bool) -> None:
    # Found by the rest target: OverflowError on the element-by-element path. TF Serving checks only
    # the int32 range for uint8 and casts, so 11111 becomes 11111 % 256 on every path.
    doc = parse_json_object(b'{"inputs": {"image": [[[[[0], [11111]]]]]}}')
    tensors, row_format = predict_tensors_from_json(doc, {"image": UINT8}, may_contain_bools)
    assert not row_format
    assert tensors["image"].dtype == np.uint8
    assert tensors["image"].ravel().tolist() == [0, 11111 % 256]


#: Found by the image target as a 3-5 s "slow unit": its IEND chunk claims 3.8 GB, which OpenCV allocated.
SLOW_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d494844520000000c000000100802000000ad03095000000061494441a7d71585c1d10143"
    "300045512fd7470621310ae92aa5ab94ae82ae52ba8c0dbc731454e128b50d8ecad0e3681a9f385ae6378ef66dc5d179"
    "fcb8154104e128a716478f32e0e8358d38fa2c338ebefb86a3ff7970462b541370d4e5840d8ecad0e3681a9f385ae637"
    "8e0049454e44ae426082"
)


def test_png_chunks_that_run_past_the_data_are_refused_before_decoding() -> None:
    with pytest.raises(InvalidImageError, match="not four letters"):
        decode_bytes(SLOW_PNG)
    head = SLOW_PNG[:33]  # signature + a valid IHDR
    with pytest.raises(InvalidImageError, match=r"cut off in a IEND chunk of 3,862,400,512 bytes"):
        decode_bytes(head + bytes.fromhex("e6378e00") + b"IEND" + b"\0" * 8)
    with pytest.raises(InvalidImageError, match="IEND chunk with a payload"):
        decode_bytes(head + bytes.fromhex("00000001") + b"IEND" + b"x" + b"\0" * 4)


def test_fuzzing_smoke_run_finds_nothing(tmp_path: Path) -> None:
    import atheris  # noqa: F401  (a test requirement: missing is a broken setup, not a skip)
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "fuzz.py"), "--seconds", "4", "--out", str(tmp_path),
         "--artifacts", str(tmp_path / "artifacts")],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "fuzz.json").read_text())["results"]
    assert [r["target"] for r in results] == ["rest", "image", "gateway"]
    for r in results:
        assert r["executions"] > 100 and r["findings"] == [] and r["exit_code"] == 0
