"""numpy arrays <-> TensorProto (the client's own wire-compatible copy) and REST JSON values."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from ._proto import tfs_pb2 as pb

_NP_TO_DT: dict[np.dtype, pb.DataType] = {
    np.dtype(np.float32): pb.DT_FLOAT,
    np.dtype(np.float64): pb.DT_DOUBLE,
    np.dtype(np.int32): pb.DT_INT32,
    np.dtype(np.uint8): pb.DT_UINT8,
    np.dtype(np.int16): pb.DT_INT16,
    np.dtype(np.int8): pb.DT_INT8,
    np.dtype(np.int64): pb.DT_INT64,
    np.dtype(np.bool_): pb.DT_BOOL,
    np.dtype(np.uint16): pb.DT_UINT16,
    np.dtype(np.float16): pb.DT_HALF,
    np.dtype(np.uint32): pb.DT_UINT32,
    np.dtype(np.uint64): pb.DT_UINT64,
}
_DT_TO_NP: dict[int, np.dtype] = {v: k for k, v in _NP_TO_DT.items()}

# Which repeated `*_val` field holds each dtype when tensor_content is empty.
_VAL_FIELD: dict[int, str] = {
    pb.DT_FLOAT: "float_val",
    pb.DT_DOUBLE: "double_val",
    pb.DT_INT32: "int_val",
    pb.DT_UINT8: "int_val",
    pb.DT_INT16: "int_val",
    pb.DT_INT8: "int_val",
    pb.DT_UINT16: "int_val",
    pb.DT_INT64: "int64_val",
    pb.DT_BOOL: "bool_val",
    pb.DT_HALF: "half_val",
    pb.DT_UINT32: "uint32_val",
    pb.DT_UINT64: "uint64_val",
    pb.DT_STRING: "string_val",
}


def dtype_name(dtype: int) -> str:
    """`DT_FLOAT`-style name of a DataType value (or `DT_<number>` for values not in the copy)."""
    try:
        return pb.DataType.Name(dtype)
    except ValueError:
        return f"DT_{dtype}"


def make_tensor_proto(array: np.ndarray) -> pb.TensorProto:
    """Numbers go in `tensor_content` (little-endian, C order), strings in `string_val`."""
    a = np.asarray(array)
    proto = pb.TensorProto()
    proto.tensor_shape.dim.extend(pb.TensorShapeProto.Dim(size=int(d)) for d in a.shape)
    if a.dtype.kind in ("U", "S", "O"):
        proto.dtype = pb.DT_STRING
        proto.string_val.extend(
            v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in a.ravel()
        )
        return proto
    dt = _NP_TO_DT.get(a.dtype.newbyteorder("=") if a.dtype.byteorder == ">" else a.dtype)
    if dt is None:
        raise TypeError(f"cannot send numpy dtype {a.dtype} to TF Serving")
    proto.dtype = dt
    proto.tensor_content = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
    return proto


def tensor_proto_to_numpy(proto: pb.TensorProto) -> np.ndarray:
    """Decode a TensorProto whose values are in `tensor_content` or in the `*_val` fields.

    Strings become a numpy array of `str` (UTF-8 decoded). A single `*_val` value for a larger
    shape is broadcast, as TensorFlow does.
    """
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if proto.dtype == pb.DT_STRING:
        values = np.array(
            [v.decode("utf-8", errors="replace") for v in proto.string_val], dtype=object
        )
        return _fill(values, shape, count).astype(str)
    np_dtype = _DT_TO_NP.get(proto.dtype)
    if np_dtype is None:
        raise TypeError(f"cannot decode tensor dtype {dtype_name(proto.dtype)}")
    if proto.tensor_content:
        return (
            np.frombuffer(proto.tensor_content, dtype=np_dtype.newbyteorder("<"))
            .astype(np_dtype)
            .reshape(shape)
        )
    field = _VAL_FIELD[proto.dtype]
    raw = getattr(proto, field)
    if proto.dtype == pb.DT_HALF:
        values = np.array(raw, dtype=np.uint16).view(np.float16)
    else:
        values = np.array(raw, dtype=np_dtype)
    return _fill(values, shape, count)


def _fill(values: np.ndarray, shape: tuple[int, ...], count: int) -> np.ndarray:
    if values.size == count:
        return values.reshape(shape)
    if values.size == 1:
        return np.full(shape, values[0], dtype=values.dtype)
    if values.size == 0 and count == 0:
        return values.reshape(shape)
    raise ValueError(f"tensor has {values.size} values for shape {list(shape)}")


def json_to_numpy(value: Any) -> np.ndarray:
    """Convert a REST output value (nested lists, strings, `{"b64": ...}`) to a numpy array."""
    if _has_b64(value):
        return np.array(_decode_b64(value), dtype=object).astype(str)
    array = np.array(value)
    if array.dtype.kind in ("U", "O"):
        return array.astype(str)
    return array


def _has_b64(value: Any) -> bool:
    while isinstance(value, list) and value:
        value = value[0]
    return isinstance(value, dict) and "b64" in value


def _decode_b64(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode_b64(v) for v in value]
    return base64.b64decode(value["b64"]).decode("utf-8", errors="replace")


_INT64_MAX = np.iinfo(np.int64).max


def numpy_to_json(array: np.ndarray) -> str:
    """JSON text of an array as nested lists (the REST `inputs` value).

    Integer arrays (images) are rendered by numpy without building Python lists: each number is
    right-aligned in one fixed width (JSON allows the leading spaces), then every axis is bracketed and
    comma-joined as whole blocks of bytes. The nested lists `tolist()` builds cost a garbage-collection
    pass over the whole heap every few thousand lists, which in a process holding a large framework
    (TensorFlow) made an 8-face request's encoding take hundreds of milliseconds. Other dtypes, empty
    arrays and values beyond int64 take `json.dumps(array.tolist())`.
    """
    a = np.asarray(array)
    if a.dtype.kind not in "iu" or a.size == 0 or (a.dtype.kind == "u" and int(a.max()) > _INT64_MAX):
        return json.dumps(a.tolist(), separators=(",", ":"))
    values = a.astype(np.int64)
    magnitude = np.abs(values).astype(np.uint64)  # |int64 min| fits in uint64
    digits = np.ones(a.shape, np.int64)  # of each number
    for k in range(1, len(str(int(magnitude.max())))):
        digits += magnitude >= np.uint64(10**k)
    width = int((digits + (values < 0)).max())
    text = np.full((*a.shape, width), ord(" "), np.uint8)
    rest = magnitude.copy()
    for k in range(width - 1, -1, -1):  # digits from the right; blanks stay left of the number
        column = width - 1 - k
        shown = column < digits
        text[..., k] = np.where(shown, ord("0") + (rest % np.uint64(10)).astype(np.uint8), text[..., k])
        rest //= np.uint64(10)
    negative = values < 0
    if negative.any():
        sign_at = (width - 1 - digits)[negative]
        text[negative, sign_at] = ord("-")
    for _ in range(a.ndim):  # bracket the innermost axis left: (..., n, L) -> (..., 1 + n * (L + 1))
        n, length = text.shape[-2:]
        joined = np.concatenate([text, np.full((*text.shape[:-1], 1), ord(","), np.uint8)], axis=-1)
        joined = joined.reshape(*text.shape[:-2], n * (length + 1))
        joined[..., -1] = ord("]")
        text = np.concatenate([np.full((*joined.shape[:-1], 1), ord("["), np.uint8), joined], axis=-1)
    return text.tobytes().decode("ascii")
