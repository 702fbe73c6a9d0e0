"""JSON values as TF Serving's json_tensor.cc writes and reads them outside a tensor: a parsed value
rendered for error messages (floats by WriteDecimal), its rapidjson type name, and `{"b64": ...}` objects
carrying bytes."""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import numpy as np

from .errors import invalid_argument

B64_KEY = "b64"


def render_float(value: float, np_type: Any) -> str:
    """WriteDecimal: shortest of %.6g / max_digits10, '.0' appended to whole numbers."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:.6g}"
    if np_type(text) != np_type(value):
        text = f"{value:.{9 if np_type is np.float32 else 17}g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def json_value_to_string(value: Any) -> str:
    """Render a parsed JSON value for error messages (rapidjson PrettyWriter style)."""
    if isinstance(value, float):
        return render_float(value, np.float64)
    return json.dumps(value, indent=4)


def json_type_string(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def is_b64_object(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(B64_KEY), str)


def decode_b64_object(value: Any) -> bytes:
    if not is_b64_object(value):
        raise invalid_argument(
            f"JSON Value: {json_value_to_string(value)} not formatted correctly for base64 data"
        )
    text = value[B64_KEY]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid_argument("Unable to base64 decode") from exc


def encode_b64_object(raw: bytes) -> str:
    """The JSON text of `{"b64": ...}` holding `raw` (a `_bytes` output's value in a response)."""
    return '{"' + B64_KEY + '": "' + base64.b64encode(raw).decode("ascii") + '"}'
