"""Tensors -> JSON response bodies with TF Serving's rules (json_tensor.cc MakeJsonFromTensors): row
(`predictions`) and columnar (`outputs`) formats, its float rendering, b64 objects for `_bytes` outputs."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from .errors import invalid_argument
from .json_values import encode_b64_object, render_float

BYTES_SUFFIX = "_bytes"


def _render_leaf_list(arr: np.ndarray, bytes_output: bool) -> list[str]:
    kind = arr.dtype.kind
    flat = arr.reshape(-1)
    if kind == "f":
        np_type = np.float32 if arr.dtype.itemsize <= 4 else np.float64
        return [render_float(float(v), np_type) for v in flat.tolist()]
    if kind == "b":
        return ["true" if v else "false" for v in flat.tolist()]
    if kind in "iu":
        return [str(v) for v in flat.tolist()]
    if kind in "OSU":
        out = []
        for v in flat.tolist():
            raw = v if isinstance(v, bytes) else str(v).encode("utf-8")
            if bytes_output:
                out.append(encode_b64_object(raw))
            else:
                out.append(json.dumps(raw.decode("utf-8", "replace"), ensure_ascii=False))
        return out
    raise invalid_argument(f"Failed to write JSON value for tensor type: {arr.dtype}")


def _nest(leaves: list[str], shape: tuple[int, ...]) -> str:
    if not shape:
        return leaves[0]
    if len(shape) == 1:
        return "[" + ", ".join(leaves) + "]"
    step = len(leaves) // shape[0] if shape[0] else 0
    return (
        "["
        + ", ".join(_nest(leaves[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0]))
        + "]"
    )


def render_tensor(arr: np.ndarray, name: str) -> str:
    return _nest(_render_leaf_list(arr, name.endswith(BYTES_SUFFIX)), arr.shape)


def render_predict_response(outputs: Mapping[str, np.ndarray], row_format: bool) -> str:
    """MakeJsonFromTensors: `predictions` (row) or `outputs` (columnar)."""
    if not row_format:
        if len(outputs) == 1:
            ((name, arr),) = outputs.items()
            body = render_tensor(arr, name)
        else:
            body = (
                "{"
                + ", ".join(f"{json.dumps(n)}: {render_tensor(a, n)}" for n, a in outputs.items())
                + "}"
            )
        return '{\n    "outputs": ' + body + "\n}"
    batch = None
    for name, arr in outputs.items():
        if arr.ndim == 0:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if batch is None:
            batch = arr.shape[0]
        elif arr.shape[0] != batch:
            raise invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {arr.shape[0]} "
                f"expecting: {batch}"
            )
    rendered = {n: [render_tensor(a[i], n) for i in range(a.shape[0])] for n, a in outputs.items()}
    if len(outputs) == 1:
        (items,) = rendered.values()
    else:
        items = [
            "{" + ", ".join(f"{json.dumps(n)}: {rendered[n][i]}" for n in outputs) + "}"
            for i in range(batch or 0)
        ]
    return '{\n    "predictions": [' + ", ".join(items) + "]\n}"


def render_error(message: str) -> str:
    return json.dumps({"error": message}, indent=4)
