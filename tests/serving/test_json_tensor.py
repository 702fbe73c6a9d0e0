"""TF Serving's JSON tensor rules (json_tensor.cc / json_tensor_test.cc), checked in-process."""

from __future__ import annotations

import json

import numpy as np
import pytest
from emotion_ai_serving.errors import ServingError
from emotion_ai_serving.json_render import render_predict_response
from emotion_ai_serving.json_tensor import (
    InputSpec,
    fast_columnar_integers,
    fast_tensor,
    parse_json_object,
    predict_tensors_from_json,
)

FLOAT = InputSpec("float", np.float32)
UINT8 = InputSpec("uint8", np.uint8)
STRING = InputSpec("string", object)


def test_float_rendering_matches_json_tensor_test():
    arr = np.array([[9000000, 999999, 0.5], [0.0003, 0.00003, 555557.5]], np.float32)
    assert '"predictions": [[9e+06, 999999.0, 0.5], [0.0003, 3e-05, 555557.5]]' in (
        render_predict_response({"x": arr}, row_format=True)
    )
    special = np.array([[np.nan, np.inf], [3, -np.inf]], np.float32)
    assert "[[NaN, Infinity], [3.0, -Infinity]]" in render_predict_response({"x": special}, True)
    assert "0.2" in render_predict_response({"x": np.array([0.2], np.float32)}, False)
    assert "0.200000003" not in render_predict_response({"x": np.array([0.2], np.float32)}, False)


def test_int_bytes_and_multi_output_rendering():
    ints = np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], np.int32)
    assert '"predictions": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]]' in (
        render_predict_response({"int_tensor": ints}, True)
    )
    raw = np.array([[b"hello", b"world"], [b"tf", b"serving"]], object)
    text = render_predict_response({"str_tensor_bytes": raw}, True)
    assert (
        '[[{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}], [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]]'
        in text
    )
    plain = render_predict_response({"str_tensor": raw}, False)
    assert '"outputs": [["hello", "world"], ["tf", "serving"]]' in plain
    multi = render_predict_response(
        {"a": np.array([8.0, 9.0], np.float64), "b": np.array([[1], [2]], np.int64)}, True
    )
    assert '{"a": 8.0, "b": [1]}, {"a": 9.0, "b": [2]}' in multi
    assert '"predictions": []' in render_predict_response({"x": np.zeros((0, 2), np.float32)}, True)


def test_row_errors_for_inconsistent_outputs():
    with pytest.raises(ServingError, match="inconsistent batch size: 3 expecting: 2"):
        render_predict_response({"a": np.zeros(2), "b": np.zeros(3)}, True)
    with pytest.raises(ServingError, match="has no shape information"):
        render_predict_response({"a": np.float32(1)}, True)


def test_b64_string_inputs_row_and_columnar():
    doc = parse_json_object(b'{"instances": [{"b64": "aGVsbG8="}, "plain"]}')
    tensors, row = predict_tensors_from_json(doc, {"s": STRING})
    assert row and list(tensors["s"]) == [b"hello", b"plain"]
    doc = parse_json_object(b'{"inputs": {"b64": "aGVsbG8="}}')
    tensors, row = predict_tensors_from_json(doc, {"s": STRING})
    assert not row and tensors["s"].shape == () and tensors["s"].item() == b"hello"
    single_named = parse_json_object(
        b'{"instances":[{"default":[[{"b64":"aGVsbG8="}],[{"b64":"d29ybGQ="}]]}]}'
    )
    tensors, _ = predict_tensors_from_json(single_named, {"default": STRING})
    assert tensors["default"].shape == (1, 2, 1)
    with pytest.raises(ServingError, match="Unable to base64 decode"):
        predict_tensors_from_json(parse_json_object(b'{"inputs": {"b64": "a-_b"}}'), {"s": STRING})


def test_value_conversion_rules():
    tensors, _ = predict_tensors_from_json(
        parse_json_object(b'{"inputs": [1, 2.5, NaN]}'), {"x": FLOAT}
    )
    assert tensors["x"].dtype == np.float32 and np.isnan(tensors["x"][2])
    with pytest.raises(ServingError, match=r"JSON Value: 1.0 Type: Number is not of expected"):
        predict_tensors_from_json(parse_json_object(b'{"inputs": [1.0]}'), {"x": UINT8})
    with pytest.raises(ServingError, match="Type: True is not of expected type: uint8"):
        predict_tensors_from_json(parse_json_object(b'{"inputs": [1, true]}'), {"x": UINT8})
    with pytest.raises(ServingError, match="Conversion of JSON Value: 1 to type: half") as info:
        predict_tensors_from_json(
            parse_json_object(b'{"inputs": [1]}'), {"x": InputSpec("half", np.float16)}
        )
    assert info.value.http_status == 501
    with pytest.raises(ServingError, match="Expecting tensor size: 2 but got: 3"):
        predict_tensors_from_json(
            parse_json_object(b'{"instances": [[1, 2], [1, 2, 3]]}'), {"x": FLOAT}
        )
    with pytest.raises(ServingError, match=r"Expecting shape \[1,2\] but got: \[2,1\]"):
        predict_tensors_from_json(
            parse_json_object(b'{"instances": [[[1, 2]], [[1], [2]]]}'), {"x": FLOAT}
        )
    with pytest.raises(ServingError, match="Encountered list at unexpected size"):
        predict_tensors_from_json(parse_json_object(b'{"inputs": [[1, 2], [1]]}'), {"x": FLOAT})
    with pytest.raises(
        ServingError, match="instances is a plain list, but expecting list of objects"
    ):
        predict_tensors_from_json(
            parse_json_object(b'{"instances": [1]}'), {"a": FLOAT, "b": FLOAT}
        )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "JSON Parse error: The document is empty"),
        (b"{", "JSON Parse error: Missing a name for object member. at offset: 1"),
        (b'{"a": 1.}', "JSON Parse error: Missing fraction part in number. at offset: 8"),
        (
            b'{"a": 1 "b": 2}',
            "JSON Parse error: Missing a comma or '}' after an object member. at offset: 8",
        ),
        (
            b'{"a": [1 2]}',
            "JSON Parse error: Missing a comma or ']' after an array element. at offset: 9",
        ),
        (b"nope", "JSON Parse error: Invalid value. at offset: 0"),
        (b"[1]", "JSON Value: [\n    1\n] Is not object"),
    ],
)
def test_parse_errors_follow_rapidjson(body, message):
    with pytest.raises(ServingError) as info:
        parse_json_object(body)
    assert info.value.message == message
    assert info.value.http_status == 400


def test_trailing_garbage_after_root_is_ignored():
    assert parse_json_object(b'{"a": 1} trailing') == {"a": 1}


# -- the numpy path for one integer tensor (the client's face crops) ---------------------------------
def _general(body: bytes, spec: InputSpec) -> np.ndarray:
    doc = parse_json_object(body)
    return predict_tensors_from_json(doc, {"x": spec}, b"true" in body or b"false" in body)[0]["x"]


@pytest.mark.parametrize("shape", [(1,), (7,), (2, 3), (3, 4, 5, 1), (1, 1, 1), (2, 96, 96, 1)])
def test_fast_integer_path_equals_the_general_path(shape):
    rng = np.random.default_rng(sum(shape))
    values = rng.integers(-300, 300, size=shape)
    compact = json.dumps({"inputs": {"x": values.tolist()}}, separators=(",", ":")).encode()
    spaced = json.dumps({"inputs": {"x": values.tolist()}, "signature_name": "serving_default"}).encode()
    for body in (compact, spaced, b" \n" + compact + b"\n"):
        found = fast_columnar_integers(body)
        assert found is not None and found[1] == "x"
        np.testing.assert_array_equal(found[2], values)
        for spec in (UINT8, InputSpec("int32", np.int32), FLOAT):
            tensor = fast_tensor(found[2], spec)
            general = _general(body, spec)
            assert tensor is not None and tensor.dtype == general.dtype
            np.testing.assert_array_equal(tensor, general)  # uint8 wraps out-of-range values, as the cast does
    assert fast_columnar_integers(spaced)[0] == "serving_default" and fast_columnar_integers(compact)[0] == ""


@pytest.mark.parametrize("text", [
    b"[01,2]", b"[1 2]", b"[1,,2]", b"[1,2,]", b"[-]", b"[--1]", b"[- 1]", b"[1-2]", b"[1,-00]", b"[[1,2][3,4]]",
    b"[[1],[2]]]", b"[[1,2]],[[3]]",  # not JSON
    b"[]", b"[[]]", b"[[1,2],[3]]", b"[1.5]", b"[true]", b"[99999999999999999999]", b"7", b'["a"]',  # JSON, not ours
])
def test_fast_integer_path_leaves_everything_else_to_the_general_path(text):
    assert fast_columnar_integers(b'{"inputs":{"x":' + text + b"}}") is None
    for body in (b'{"inputs":{"x":[1,2]},"other":1}', b'{"inputs":{"x":[1],"y":[2]}}', b'{"instances":[1,2]}',
                 b'{"inputs":{"x":[1,2]}}trailing', b'{"signature_name":"s","inputs":{"x":[1]}}'):
        assert fast_columnar_integers(body) is None
    assert fast_tensor(np.array([2**40]), UINT8) is None  # out of the int32 range: the general path's error


def test_a_classification_without_classes_or_scores_is_empty_groups():
    from emotion_ai_serving.classify_regress import classification_result

    result = classification_result({}, 2)
    assert len(result.classifications) == 2 and all(len(g.classes) == 0 for g in result.classifications)
    labelled = classification_result({"classes": np.array([[b"a", b"b"], [b"c", b"d"]])}, 2)
    assert [[c.label for c in g.classes] for g in labelled.classifications] == [["a", "b"], ["c", "d"]]
