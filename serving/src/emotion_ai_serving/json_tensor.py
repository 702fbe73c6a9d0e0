"""JSON request bodies -> tensors with TF Serving's rules (json_tensor.cc): body parsing with rapidjson-like
error texts, then the row (`instances`) or columnar (`inputs`) format into one array per input. Responses
are written by json_render, single JSON values (b64 objects, error renderings) live in json_values."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import UNIMPLEMENTED, ServingError, invalid_argument
from .json_values import decode_b64_object, is_b64_object, json_type_string, json_value_to_string

INT32_RANGE = (-(2**31), 2**31 - 1)
_INT_RANGES: dict[str, tuple[int, int]] = {
    "int8": INT32_RANGE,  # TF Serving only checks that the JSON integer fits int32
    "int16": INT32_RANGE,
    "int32": INT32_RANGE,
    "uint8": INT32_RANGE,
    "int64": (-(2**63), 2**63 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}
_FLOAT_TYPES = {"float": np.float32, "double": np.float64}


@dataclass(frozen=True)
class InputSpec:
    """An input of a signature: TF dtype name (`DataTypeString`, e.g. "uint8") and numpy dtype."""

    dtype_name: str
    np_dtype: Any


# ----------------------------------------------------------------------------------- parsing

_RAPIDJSON_MESSAGES = {
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
    "Invalid control character at": "Invalid encoding in string.",
}


def _innermost_container(text: str, pos: int) -> str:
    """'{' or '[' that is open at `pos` (ignoring brackets inside strings)."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in text[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _rapidjson_error(text: str, exc: json.JSONDecodeError) -> ServingError:
    pos = exc.pos
    if exc.msg == "Expecting ',' delimiter":
        if pos < len(text) and text[pos] == "." and pos > 0 and text[pos - 1].isdigit():
            message, pos = "Missing fraction part in number.", pos + 1
        elif _innermost_container(text, pos) == "{":
            message = "Missing a comma or '}' after an object member."
        else:
            message = "Missing a comma or ']' after an array element."
    else:
        message = _RAPIDJSON_MESSAGES.get(exc.msg, exc.msg + ".")
    offset = len(text[:pos].encode("utf-8"))
    return invalid_argument(f"JSON Parse error: {message} at offset: {offset}")


_DECODER = json.JSONDecoder()


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Parse a request body like TF Serving: NaN/Infinity allowed, trailing data ignored."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid_argument(
            f"JSON Parse error: Invalid encoding in string. at offset: {exc.start}"
        ) from exc
    start = len(text) - len(text.lstrip(" \t\r\n"))
    if start == len(text):
        raise invalid_argument(f"JSON Parse error: The document is empty at offset: {start}")
    try:
        doc, _ = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise _rapidjson_error(text, exc) from exc
    except RecursionError as exc:
        raise invalid_argument("JSON Parse error: Nesting too deep. at offset: 0") from exc
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {json_value_to_string(doc)} Is not object")
    return doc


def signature_name_of(doc: Mapping[str, Any]) -> str:
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {json_value_to_string(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


# -------------------------------------------------------------------------------- conversion


def _type_error(value: Any, spec: InputSpec) -> ServingError:
    return invalid_argument(
        f"JSON Value: {json_value_to_string(value)} Type: {json_type_string(value)} "
        f"is not of expected type: {spec.dtype_name}"
    )


def _convert_scalar(value: Any, spec: InputSpec) -> Any:
    """One leaf value (AddValueToTensor)."""
    name = spec.dtype_name
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if name in _FLOAT_TYPES:
        if not is_number:
            raise _type_error(value, spec)
        return float(value)
    if name in _INT_RANGES:
        low, high = _INT_RANGES[name]
        if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
            raise _type_error(value, spec)
        return value
    if name == "bool":
        if not isinstance(value, bool):
            raise _type_error(value, spec)
        return value
    if name == "string":
        if isinstance(value, dict):
            return decode_b64_object(value)
        if not isinstance(value, str):
            raise _type_error(value, spec)
        return value.encode("utf-8")
    if isinstance(value, dict):
        raise _type_error(value, spec)
    raise ServingError(
        UNIMPLEMENTED, f"Conversion of JSON Value: {json_value_to_string(value)} to type: {name}"
    )


def _dense_shape(value: Any) -> list[int]:
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: Any, level: int, shape: list[int], spec: InputSpec, out: list[Any]) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {json_value_to_string(value)} found at incorrect level: {level + 1}"
                f" in the JSON DOM. Expected at level: {rank}"
            )
        out.append(_convert_scalar(value, spec))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, spec, out)


def _fast_numeric(value: Any, spec: InputSpec) -> np.ndarray | None:
    """Vectorised conversion for the common case (regular nested lists of numbers); None means
    'use the exact element-by-element path', which also produces the error texts."""
    if spec.dtype_name not in _FLOAT_TYPES and spec.dtype_name not in _INT_RANGES:
        return None
    try:
        arr = np.asarray(value)
    except (ValueError, OverflowError):
        return None
    if spec.dtype_name in _FLOAT_TYPES:
        if arr.dtype.kind not in "iuf":
            return None
        return arr.astype(spec.np_dtype)
    if arr.dtype.kind != "i":
        return None
    low, high = _INT_RANGES[spec.dtype_name]
    if arr.size and (arr.min() < low or arr.max() > high):
        return None
    return arr.astype(spec.np_dtype)


def json_to_array(value: Any, spec: InputSpec, may_contain_bools: bool = True) -> np.ndarray:
    """Convert one JSON value (scalar or nested list) to an array of the input's dtype."""
    if not may_contain_bools and isinstance(value, list):
        fast = _fast_numeric(value, spec)
        if fast is not None:
            return fast
    shape = _dense_shape(value)
    flat: list[Any] = []
    _fill(value, 0, shape, spec, flat)
    if spec.dtype_name == "string":
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return arr.reshape(shape)
    if spec.dtype_name in _INT_RANGES and spec.dtype_name != "uint64":
        # Only the int32 range is checked (as TF Serving); narrower types wrap like its static_cast.
        return np.asarray(flat, dtype=np.int64).astype(spec.np_dtype).reshape(shape)
    return np.asarray(flat, dtype=spec.np_dtype).reshape(shape)


def _format_shape(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _instances_to_tensors(
    instances: list[Any], specs: Mapping[str, InputSpec], may_contain_bools: bool
) -> dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList."""
    first = instances[0]
    named = isinstance(first, dict) and not is_b64_object(first)  # a b64 object is a value
    if not named and len(specs) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )
    if not named:
        ((name, spec),) = specs.items()
        if not any(isinstance(e, dict) and not is_b64_object(e) for e in instances):
            fast = None if may_contain_bools else _fast_numeric(instances, spec)
            if fast is not None and fast.ndim >= 1:
                return {name: fast}
    per_name: dict[str, list[np.ndarray]] = {}
    for index, element in enumerate(instances):
        if named:
            if not (isinstance(element, dict) and not is_b64_object(element)):
                raise invalid_argument(
                    f"Expecting object but got list at item {index} of input list"
                )
            items = list(element.items())
        else:
            if isinstance(element, dict) and not is_b64_object(element):
                raise invalid_argument(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            items = [(next(iter(specs)), element)]
        for key, item in items:
            try:
                if key not in specs:
                    raise invalid_argument(f"JSON object: does not have named input: {key}")
                arr = json_to_array(item, specs[key], may_contain_bools)
                previous = per_name.get(key)
                if previous:
                    expected = previous[0]
                    if expected.size != arr.size:
                        raise invalid_argument(
                            f"Expecting tensor size: {expected.size} but got: {arr.size}"
                        )
                    if expected.shape != arr.shape:
                        raise invalid_argument(
                            f"Expecting shape {_format_shape(expected.shape)} but got: "
                            f"{_format_shape(arr.shape)}"
                        )
            except ServingError as exc:
                where = f"{index} key: {key}" if named else f"{index}"
                raise invalid_argument(
                    f"Failed to process element: {where} of 'instances' list. Error: {exc}"
                ) from exc
            per_name.setdefault(key, []).append(arr)
        if named and set(element) != set(specs):
            raise invalid_argument(
                f"Failed to process element: {index} of 'instances' list. JSON object: "
                f"{json_value_to_string(element)} keys must be equal to: {','.join(sorted(specs))}"
            )
    return {name: np.stack(arrays) for name, arrays in per_name.items()}


def _inputs_to_tensors(
    value: Any, specs: Mapping[str, InputSpec], may_contain_bools: bool
) -> dict[str, np.ndarray]:
    """FillTensorMapFromInputsMap."""
    if not isinstance(value, dict) or is_b64_object(value):
        if len(specs) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        ((name, spec),) = specs.items()
        return {name: json_to_array(value, spec, may_contain_bools)}
    tensors: dict[str, np.ndarray] = {}
    for name, spec in specs.items():
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = json_to_array(value[name], spec, may_contain_bools)
    return tensors


def predict_tensors_from_json(
    doc: Mapping[str, Any], specs: Mapping[str, InputSpec], may_contain_bools: bool = True
) -> tuple[dict[str, np.ndarray], bool]:
    """Tensors of a predict body and whether it used the row (`instances`) format."""
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise invalid_argument(
            f"JSON Value: {json_value_to_string(doc)} Not formatted correctly expecting only one "
            "of 'inputs' or 'instances' keys to exist "
        )
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid_argument(
                f"JSON Value: {json_value_to_string(doc)} Expecting 'instances' to be an list/array"
            )
        if not instances:
            raise invalid_argument(
                f"JSON Value: {json_value_to_string(doc)} No values in 'instances' array"
            )
        return _instances_to_tensors(instances, specs, may_contain_bools), True
    if has_inputs:
        return _inputs_to_tensors(doc["inputs"], specs, may_contain_bools), False
    raise invalid_argument("Missing 'inputs' or 'instances' key")


# ------------------------------------------------------------------ fast path: one integer tensor

#: `{"inputs": {"NAME": ` at the start of a body, then the array; after it, `}`, an optional
#: `"signature_name": "..."` and the closing `}` (nothing else, so any other body takes the general path).
_COLUMNAR_HEAD = re.compile(rb'\s*\{\s*"inputs"\s*:\s*\{\s*"([A-Za-z0-9_./-]+)"\s*:\s*(?=\[)')
_COLUMNAR_TAIL = re.compile(rb'\s*\}\s*(?:,\s*"signature_name"\s*:\s*"([A-Za-z0-9_./-]*)"\s*)?\}\s*')
_BLANKS = b" \t\r\n"
_NUMBERS_ONLY = bytes.maketrans(b"[],", b"   ")
#: Every digit to "1" (a run of them is one number's length), separators and blanks to others.
_DIGITS_ONE = bytes.maketrans(b"0123456789[], \t\r\n", b"1111111111   wwww")
_ARRAY_CHARS = b"0123456789[],- \t\r\n"
_MAX_DIGITS = 18  # longer integers (beyond int64's certain range) take the general path


def _bad_numbers(text: bytes) -> bool:
    """Whether `text` (digits, signs, brackets, commas, blanks) holds number text JSON forbids: a leading
    zero, or a sign that is not directly before a digit or that follows one."""
    c = np.frombuffer(b" " + text + b" ", np.uint8)
    digit = (c >= ord("0")) & (c <= ord("9"))
    minus = c == ord("-")
    before, here, after = slice(None, -2), slice(1, -1), slice(2, None)
    leading_zero = (c[here] == ord("0")) & digit[after] & ~digit[before]
    bad_sign = minus[here] & (~digit[after] | digit[before])
    return bool(leading_zero.any() or bad_sign.any())


def fast_columnar_integers(body: bytes) -> tuple[str, str, np.ndarray] | None:
    """(signature name, input name, int64 array) of a body `{"inputs": {NAME: <regular nested array of
    integers>}[, "signature_name": S]}`, the form the client sends face crops in, parsed by numpy without
    building Python lists; None for any other body (it takes the general path, errors included).

    Accepted only when the text is valid JSON for an array of exactly its shape: every number a JSON integer
    (no leading zero, a sign only in front, at most 18 digits, no blank inside: one number per element),
    and the bracket-and-comma skeleton left after the numbers are removed is the one of a regular array of
    the shape its first elements give."""
    head = _COLUMNAR_HEAD.match(body)
    if head is None:
        return None
    stop = body.rfind(b"]") + 1
    tail = _COLUMNAR_TAIL.fullmatch(body, stop) if stop else None
    text = body[head.end() : stop]
    if tail is None or text.translate(None, _ARRAY_CHARS):
        return None
    if _bad_numbers(text) or b"1" * (_MAX_DIGITS + 1) in text.translate(_DIGITS_ONE):
        return None
    packed = text.translate(None, _BLANKS)
    if b"[]" in packed:  # an empty list: no shape to read
        return None
    shape = _leading_shape(packed)
    if shape is None or packed.translate(None, b"0123456789-") != _skeleton(shape):
        return None
    values = np.fromstring(text.translate(_NUMBERS_ONLY), dtype=np.int64, sep=" ")
    if len(values) != int(np.prod(shape)):  # a blank inside an element makes two numbers of it
        return None
    return (tail.group(1) or b"").decode(), head.group(1).decode(), values.reshape(shape)


def _leading_shape(packed: bytes) -> list[int] | None:
    """The shape a regular nested array (no blanks) would have, read off its first list at each depth;
    None for no array, or an empty list first."""
    rank = len(packed) - len(packed.lstrip(b"["))
    if rank == 0:
        return None
    shape = []
    for k in range(rank):  # the first list at depth k ends at the first run of rank - k closing brackets
        inner = rank - k - 1
        end = packed.find(b"]" * (rank - k))
        if end < 0:
            return None
        separator = b"]" * inner + b"," + b"[" * inner if inner else b","
        shape.append(packed[k : end + inner + 1].count(separator) + 1)
    return shape


def _skeleton(shape: list[int]) -> bytes:
    """The brackets and commas of a regular nested array of `shape` with its numbers taken out."""
    text = b"[" + b"," * (shape[-1] - 1) + b"]"
    for n in reversed(shape[:-1]):
        text = b"[" + b",".join([text] * n) + b"]"
    return text


def fast_tensor(values: np.ndarray, spec: InputSpec) -> np.ndarray | None:
    """`values` (int64, from fast_columnar_integers) as the input's dtype under the general path's rules
    (int32 range for the narrow integer types, wrapped as TF Serving's cast does), or None when only the
    general path can say what to do (another dtype, a value out of range)."""
    return _fast_numeric(values, spec)
