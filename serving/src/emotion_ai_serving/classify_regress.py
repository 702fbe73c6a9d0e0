"""Classify/Regress (REST and gRPC): tf.Example inputs, TF Serving's signature checks, results."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from google.protobuf import text_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from .errors import invalid_argument
from .json_values import (
    decode_b64_object,
    is_b64_object,
    json_type_string,
    json_value_to_string,
    render_float,
)

CLASSIFY = "classify"
REGRESS = "regress"
METHOD_NAMES = {CLASSIFY: "tensorflow/serving/classify", REGRESS: "tensorflow/serving/regress"}
METHOD_BY_NAME = {v: k for k, v in METHOD_NAMES.items()}


# ------------------------------------------------------------------------------ JSON -> Input
def _add_value(feature: feature_pb2.Feature, name: str, value: Any) -> None:
    """AddValueToFeature."""

    def kind_error() -> Exception:
        kind = feature.WhichOneof("kind") or "UNKNOWN"
        kind = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}.get(kind, kind)
        return invalid_argument(
            f"Unexpected element type in feature: {name} expecting type: {kind}"
        )

    def check(kind: str) -> None:
        if feature.WhichOneof("kind") not in (None, kind):
            raise kind_error()

    if (
        value is None
        or isinstance(value, list)
        or (isinstance(value, dict) and not is_b64_object(value))
    ):
        raise invalid_argument(
            f"Feature: {name} has element with unexpected JSON type: {json_type_string(value)}"
        )
    if isinstance(value, bool):
        check("int64_list")
        feature.int64_list.value.append(int(value))
    elif isinstance(value, dict):
        check("bytes_list")
        feature.bytes_list.value.append(decode_b64_object(value))
    elif isinstance(value, str):
        check("bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8"))
    elif isinstance(value, float):
        check("float_list")
        feature.float_list.value.append(value)
    else:
        check("int64_list")
        if value >= 2**63:
            raise invalid_argument(f"Feature: {name} has uint64 element. Only int64 is supported.")
        feature.int64_list.value.append(value)


def _example(value: Any) -> example_pb2.Example:
    if not isinstance(value, dict):
        raise invalid_argument(
            f"Example must be JSON object but got JSON {json_type_string(value)}"
        )
    example = example_pb2.Example()
    for name, content in value.items():
        feature = feature_pb2.Feature()
        for item in content if isinstance(content, list) else [content]:
            _add_value(feature, name, item)
        example.features.feature[name].CopyFrom(feature)
    return example


def input_from_json(doc: Mapping[str, Any], method: str) -> input_pb2.Input:
    """FillClassifyRegressRequestFromJson (after the signature_name check)."""
    result = input_pb2.Input()
    context = None
    if "context" in doc:
        context = _example(doc["context"])
    if "examples" not in doc:
        raise invalid_argument(
            f"JSON Value: {json_value_to_string(doc)} When method is {method}, key 'examples' is "
            "expected and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise invalid_argument(
            f"JSON Value: {json_value_to_string(doc)} "
            "Expecting 'examples' value to be an list/array"
        )
    if not examples:
        raise invalid_argument(
            f"JSON Value: {json_value_to_string(doc)} 'examples' value is an empty array"
        )
    parsed = [_example(e) for e in examples]
    if context is not None:
        result.example_list_with_context.context.CopyFrom(context)
        result.example_list_with_context.examples.extend(parsed)
    else:
        result.example_list.examples.extend(parsed)
    return result


def serialized_examples(inp: input_pb2.Input) -> np.ndarray:
    """One serialized tf.Example per example, context features merged in."""
    kind = inp.WhichOneof("kind")
    if kind == "example_list_with_context":
        context = inp.example_list_with_context.context
        items = []
        for ex in inp.example_list_with_context.examples:
            merged = example_pb2.Example()
            merged.CopyFrom(context)
            merged.MergeFrom(ex)
            items.append(merged.SerializeToString())
    elif kind == "example_list":
        items = [ex.SerializeToString() for ex in inp.example_list.examples]
    else:
        raise invalid_argument("Input is empty.")
    if not items:
        raise invalid_argument("Input is empty.")
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


# ------------------------------------------------------------------------- signature checks
def check_signature(signature: meta_graph_pb2.SignatureDef, method: str) -> tuple[str, list[str]]:
    """PreProcessClassification / PreProcessRegression: (input alias, output aliases)."""

    def debug() -> str:  # the SignatureDef as text, only for the error messages
        return text_format.MessageToString(signature)

    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if method == CLASSIFY:
        if len(signature.outputs) not in (1, 2):
            raise invalid_argument(
                f"Expected one or two output Tensors, found {len(signature.outputs)}"
            )
        if "inputs" not in signature.inputs:
            raise invalid_argument(f"No classification inputs found in SignatureDef: {debug()}")
        outputs = [k for k in ("classes", "scores") if k in signature.outputs]
        if not outputs:
            raise invalid_argument(
                'Expected classification signature outputs to contain at least one of "classes" '
                f'or "scores". Signature was: {debug()}'
            )
        return "inputs", outputs
    if len(signature.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if "inputs" not in signature.inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: {debug()}")
    if "outputs" not in signature.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {debug()}")
    return "inputs", ["outputs"]


# ---------------------------------------------------------------------------------- results
def classification_result(
    outputs: Mapping[str, np.ndarray], num_examples: int
) -> classification_pb2.ClassificationResult:
    result = classification_pb2.ClassificationResult()
    classes, scores = outputs.get("classes"), outputs.get("scores")
    for i in range(num_examples):
        group = result.classifications.add()
        shaped = scores if scores is not None else classes
        width = 0 if shaped is None else shaped.reshape(num_examples, -1).shape[1]
        for j in range(width):
            cls = group.classes.add()
            if classes is not None:
                raw = classes.reshape(num_examples, -1)[i, j]
                cls.label = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            if scores is not None:
                cls.score = float(scores.reshape(num_examples, -1)[i, j])
    return result


def regression_result(
    outputs: Mapping[str, np.ndarray], num_examples: int
) -> regression_pb2.RegressionResult:
    values = outputs["outputs"].reshape(num_examples, -1)
    if values.shape[1] != 1:
        raise invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{list(outputs['outputs'].shape)}"
        )
    result = regression_pb2.RegressionResult()
    for value in values[:, 0]:
        result.regressions.add(value=float(value))
    return result


def results_json(method: str, result: Any) -> str:
    """`{"results": …}` (plural, per the code constant kClassifyRegressResponseKey)."""
    if method == CLASSIFY:
        if not result.classifications:
            raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
        rows = []
        for group in result.classifications:
            pairs = [f'["{c.label}", {render_float(c.score, np.float32)}]' for c in group.classes]
            rows.append("[" + ", ".join(pairs) + "]")
    else:
        if not result.regressions:
            raise invalid_argument("Cannot convert empty RegressionResults to JSON")
        rows = [render_float(r.value, np.float32) for r in result.regressions]
    return '{\n    "results": [' + ", ".join(rows) + "]\n}"
