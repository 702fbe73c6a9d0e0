"""numpy <-> tensorflow.TensorProto, writing outputs in typed `*_val` fields like TF Serving does
(unless tensor_content is asked for)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from .errors import invalid_argument

#: TF's DataTypeString names where they differ from numpy's / tf.DType.name.
_DATA_TYPE_STRING = {"float32": "float", "float64": "double", "float16": "half"}


def data_type_string(dtype_enum: int) -> str:
    """`DataTypeString` of a types_pb2 enum value, e.g. DT_FLOAT -> "float"."""
    name = tf.dtypes.as_dtype(dtype_enum).name
    return _DATA_TYPE_STRING.get(name, name)


def to_ndarray(proto: tensor_pb2.TensorProto, alias: str) -> np.ndarray:
    try:
        return tf.make_ndarray(proto)
    except Exception as exc:  # malformed content / unsupported dtype
        raise invalid_argument(f"tensor parsing error: {alias}") from exc


def from_ndarray(arr: np.ndarray) -> tensor_pb2.TensorProto:
    """TensorProto with shape and values in the typed repeated field for the dtype."""
    if arr.dtype.kind in "OSU":
        proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
        proto.string_val.extend(
            v if isinstance(v, bytes) else str(v).encode("utf-8") for v in arr.reshape(-1).tolist()
        )
    else:
        dtype = tf.dtypes.as_dtype(arr.dtype)
        proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum)
        flat = np.ascontiguousarray(arr).reshape(-1)
        if dtype == tf.float32:
            proto.float_val.extend(flat.tolist())
        elif dtype == tf.float64:
            proto.double_val.extend(flat.tolist())
        elif dtype in (tf.int32, tf.int16, tf.int8, tf.uint8, tf.uint16):
            proto.int_val.extend(flat.tolist())
        elif dtype == tf.int64:
            proto.int64_val.extend(flat.tolist())
        elif dtype == tf.bool:
            proto.bool_val.extend(flat.tolist())
        elif dtype == tf.uint32:
            proto.uint32_val.extend(flat.tolist())
        elif dtype == tf.uint64:
            proto.uint64_val.extend(flat.tolist())
        elif dtype == tf.float16:
            proto.half_val.extend(flat.view(np.uint16).tolist())
        else:
            proto.tensor_content = flat.tobytes()
    for dim in arr.shape:
        proto.tensor_shape.dim.add(size=dim)
    return proto
