"""One loaded SavedModel version: its signatures, input validation, a forward pass and warmup."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from emotion_ai.spec import MODEL_CARD, ONEDNN_SETTING
from tensorflow.core.protobuf import error_codes_pb2, meta_graph_pb2, saved_model_pb2
from tensorflow.python.util import _pywrap_util_port  # IsMklEnabled: is oneDNN on
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_log_pb2

from .errors import FAILED_PRECONDITION, INVALID_ARGUMENT, ServingError, invalid_argument
from .json_tensor import InputSpec
from .tensor_proto import data_type_string, to_ndarray

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000
SERVE_TAG = tf.saved_model.SERVING


def _join(names: Iterable[str]) -> str:
    return ",".join(sorted(names))


@dataclass
class Signature:
    """A callable signature plus what validation and metadata need to know about it."""

    name: str
    proto: meta_graph_pb2.SignatureDef
    function: Any
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    input_shapes: dict[str, tf.TensorShape] = field(default_factory=dict)

    def validate_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Check aliases, dtypes and shapes like TF Serving's PreProcessPrediction + the runtime."""
        sent, expected = set(inputs), set(self.inputs)
        if len(sent) != len(expected):
            raise invalid_argument(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{_join(sent)}}}) != len({{{_join(expected)}}}). "
                f"Sent extra: {{{_join(sent - expected)}}}. "
                f"Missing but required: {{{_join(expected - sent)}}}."
            )
        for index, alias in enumerate(sorted(inputs)):
            if alias not in self.inputs:
                raise invalid_argument(
                    f"input tensor alias not found in signature: {alias}. "
                    f"Inputs expected to be in the set {{{_join(expected)}}}."
                )
            spec, arr = self.inputs[alias], inputs[alias]
            sent_type = (
                "string"
                if arr.dtype.kind in "OSU"
                else data_type_string(tf.dtypes.as_dtype(arr.dtype).as_datatype_enum)
            )
            if sent_type != spec.dtype_name:
                raise invalid_argument(
                    f"Expects arg[{index}] to be {spec.dtype_name} but {sent_type} is provided"
                )
            shape = self.input_shapes[alias]
            if not shape.is_compatible_with(arr.shape):
                raise invalid_argument(
                    f"input tensor '{alias}' has shape [{','.join(map(str, arr.shape))}], which is "
                    f"incompatible with the signature shape {_shape_text(shape)}"
                )

    def output_names(self, output_filter: Iterable[str] = ()) -> list[str]:
        wanted = list(output_filter)
        if not wanted:
            return sorted(self.proto.outputs)
        seen: set[str] = set()
        for alias in wanted:
            if alias not in self.proto.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be "
                    f"in the set {{{_join(self.proto.outputs)}}}."
                )
            if alias in seen:
                raise invalid_argument(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        return wanted


def _shape_text(shape: tf.TensorShape) -> str:
    if shape.rank is None:
        return "[?]"
    return "[" + ",".join("?" if d is None else str(d) for d in shape.as_list()) + "]"


def read_signature_defs(version_dir: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The `serve` MetaGraph's signature_def map, read from saved_model.pb (what TF Serving's
    metadata endpoint reports, `__saved_model_init_op` included)."""
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    for meta_graph in saved.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ServingError(
        "NOT_FOUND", f"Could not find meta graph def matching supplied tags: {{ {SERVE_TAG} }}."
    )


class Servable:
    """A SavedModel version loaded with `tf.saved_model.load`."""

    def __init__(self, name: str, version: int, path: Path) -> None:
        self.name, self.version, self.path = name, version, path
        started = time.monotonic()
        _check_runtime(path)
        self._loaded = tf.saved_model.load(str(path), tags=[SERVE_TAG])
        self.signature_defs = read_signature_defs(path)
        self.signatures: dict[str, Signature] = {}
        for sig_name, proto in self.signature_defs.items():
            function = self._loaded.signatures.get(sig_name)
            if function is None:
                continue  # e.g. __saved_model_init_op: listed in metadata, not callable
            signature = Signature(sig_name, proto, function)
            for alias, info in proto.inputs.items():
                dtype = tf.dtypes.as_dtype(info.dtype)
                signature.inputs[alias] = InputSpec(
                    data_type_string(info.dtype),
                    dtype.as_numpy_dtype if dtype != tf.string else object,
                )
                signature.input_shapes[alias] = tf.TensorShape(info.tensor_shape)
            self.signatures[sig_name] = signature
        self.load_seconds = time.monotonic() - started

    def signature(self, name: str) -> Signature:
        """Signature by name ("" = serving_default); REST text, callers adapt it for gRPC."""
        resolved = name or DEFAULT_SIGNATURE
        found = self.signatures.get(resolved)
        if found is None:
            raise ServingError(
                INVALID_ARGUMENT, f'Serving signature name: "{resolved}" not found in signature def'
            )
        return found

    def signature_def_map(self) -> get_model_metadata_pb2.SignatureDefMap:
        result = get_model_metadata_pb2.SignatureDefMap()
        for key, proto in self.signature_defs.items():
            result.signature_def[key].CopyFrom(proto)
        return result

    def run(
        self, signature: Signature, inputs: Mapping[str, np.ndarray], output_names: list[str]
    ) -> dict[str, np.ndarray]:
        """Forward pass; `inputs` must have passed `signature.validate_inputs`."""
        tensors = {
            alias: tf.constant(arr, dtype=tf.string if arr.dtype.kind in "OSU" else None)
            for alias, arr in inputs.items()
        }
        try:
            result = signature.function(**tensors)
        except tf.errors.OpError as exc:
            raise ServingError(_tf_code_name(exc), exc.message) from exc
        except (TypeError, ValueError) as exc:
            raise invalid_argument(str(exc)) from exc
        return {name: result[name].numpy() for name in output_names}

    def warmup(self) -> int:
        """Replay assets.extra/tf_serving_warmup_requests (predict logs); returns the count."""
        path = self.path / WARMUP_FILE
        if not path.exists():
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(str(path)):
            count += 1
            if count > MAX_WARMUP_RECORDS:
                raise invalid_argument(
                    f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
                )
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if entry.WhichOneof("log_type") != "predict_log":
                log.warning("skipping non-predict warmup record", extra={"model": self.name})
                continue
            request = entry.predict_log.request
            signature = self.signature(request.model_spec.signature_name)
            inputs = {k: to_ndarray(v, k) for k, v in request.inputs.items()}
            signature.validate_inputs(inputs)
            self.run(signature, inputs, signature.output_names(request.output_filter))
        return count


def _check_runtime(path: Path) -> None:
    """Refuse, with the remedy, an int8 version (its model card says so) when oneDNN is off: its kernels
    would only fail at the first request ("Missing 0-th output")."""
    card = path / MODEL_CARD
    try:
        int8 = json.loads(card.read_text()).get("compute_dtype") == "int8" if card.is_file() else False
    except (OSError, ValueError, AttributeError):
        return  # a card is optional for serving; the SavedModel itself decides
    if int8 and not _pywrap_util_port.IsMklEnabled():
        raise ServingError(
            FAILED_PRECONDITION,
            f"{path} is an int8 model and needs TensorFlow's oneDNN kernels, which are off in this process: "
            f"start the server with {ONEDNN_SETTING}",
        )


def _tf_code_name(exc: tf.errors.OpError) -> str:
    try:
        return error_codes_pb2.Code.Name(exc.error_code)
    except ValueError:
        return "UNKNOWN"
