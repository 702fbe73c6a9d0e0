"""Request handling shared by the REST and gRPC front ends: model lookup, validation, running
(with timeout and optional batching), and building TF Serving's responses."""

from __future__ import annotations

import json
import logging
import os
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import numpy as np
from google.protobuf import json_format
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)

from . import classify_regress as cr
from .batching import BatchQueue
from .config import BatchingSettings
from .errors import DEADLINE_EXCEEDED, FAILED_PRECONDITION, ServingError, invalid_argument
from .json_render import render_predict_response
from .json_tensor import (
    fast_columnar_integers,
    fast_tensor,
    parse_json_object,
    predict_tensors_from_json,
    signature_name_of,
)
from .model_registry import ModelRegistry
from .servable import DEFAULT_SIGNATURE, Servable, Signature
from .tensor_proto import from_ndarray, to_ndarray

log = logging.getLogger(__name__)

SIGNATURE_DEF_FIELD = "signature_def"


@dataclass(frozen=True)
class Target:
    """The model a request names: a version, a label, or neither (= latest)."""

    name: str
    version: int | None = None
    label: str | None = None


def target_from_spec(spec: model_pb2.ModelSpec, has_spec: bool = True) -> Target:
    if not has_spec:
        raise invalid_argument("Missing ModelSpec")
    if not spec.name:
        raise invalid_argument("ModelSpec has no name specified.")
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return Target(spec.name, version=spec.version.value)
    if choice == "version_label":
        return Target(spec.name, label=spec.version_label)
    return Target(spec.name)


class PredictionCore:
    """Everything a front end needs; one instance per server."""

    def __init__(
        self,
        registry: ModelRegistry,
        batching: BatchingSettings | None = None,
    ) -> None:
        self.registry = registry
        self.batching = batching
        self._executor = ThreadPoolExecutor(max_workers=4 * (os.cpu_count() or 1), thread_name_prefix="runtime")
        self._queues: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._queues_lock = threading.Lock()

    # ------------------------------------------------------------------------- running
    def servable(self, target: Target) -> Servable:
        return self.registry.servable(target.name, target.version, target.label)

    def run(
        self,
        servable: Servable,
        signature: Signature,
        inputs: dict[str, np.ndarray],
        output_names: list[str],
        timeout_s: float | None,
    ) -> dict[str, np.ndarray]:
        signature.validate_inputs(inputs)
        future: Future
        if self.batching is not None:
            future = self._batch_queue(servable, signature, output_names).submit(inputs)
        else:
            future = self._executor.submit(servable.run, signature, inputs, output_names)
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout as exc:
            raise ServingError(DEADLINE_EXCEEDED, "Deadline Exceeded") from exc

    def _batch_queue(
        self, servable: Servable, signature: Signature, outputs: list[str]
    ) -> BatchQueue:
        key = (signature.name, tuple(outputs))
        with self._queues_lock:
            per_servable = self._queues.setdefault(servable, {})
            found = per_servable.get(key)
            if found is None:
                assert self.batching is not None
                # The queue must not keep the servable alive: once a version is unloaded and its
                # last request is done, the finalizer closes the queue and its threads end.
                # (A request in flight holds the servable itself, so `live()` is set while it runs.)
                live = weakref.ref(servable)

                def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                    target = live()
                    assert target is not None  # a request in flight holds its servable
                    return target.run(signature, inputs, outputs)

                found = BatchQueue(
                    run,
                    self.batching,
                    f"{servable.name}-{servable.version}",
                )
                weakref.finalize(servable, found.close)
                per_servable[key] = found
            return found

    # ------------------------------------------------------------------------- predict
    def predict_json(self, target: Target, body: bytes, timeout_s: float | None) -> str:
        """REST :predict, in TF Serving's processing order (JSON errors before lookup). A body holding one
        integer tensor in the columnar form (the client's face crops) is parsed by numpy when its input
        and dtype allow (`fast_columnar_integers`); every other body, and every error, takes the general
        path."""
        fast = fast_columnar_integers(body)
        if fast is not None:
            signature_name, name, values = fast
            servable = self.servable(target)
            signature = servable.signature(signature_name)
            tensor = fast_tensor(values, signature.inputs[name]) if list(signature.inputs) == [name] else None
            if tensor is not None:
                outputs = self.run(servable, signature, {name: tensor}, signature.output_names(), timeout_s)
                return render_predict_response(outputs, False)
        doc = parse_json_object(body)
        signature_name = signature_name_of(doc)
        servable = self.servable(target)
        signature = servable.signature(signature_name)
        if not signature.inputs:
            raise invalid_argument(
                f"Failed to get input map for signature: {signature_name or 'DEFAULT'}"
            )
        may_contain_bools = b"true" in body or b"false" in body
        tensors, row_format = predict_tensors_from_json(doc, signature.inputs, may_contain_bools)
        outputs = self.run(servable, signature, tensors, signature.output_names(), timeout_s)
        return render_predict_response(outputs, row_format)

    def predict_proto(
        self, request: predict_pb2.PredictRequest, timeout_s: float | None
    ) -> predict_pb2.PredictResponse:
        target = target_from_spec(request.model_spec, request.HasField("model_spec"))
        servable = self.servable(target)
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = servable.signatures.get(name)
        if signature is None:
            raise ServingError(FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')
        expected = set(signature.inputs)
        if len(request.inputs) == len(expected):
            for alias in sorted(request.inputs):
                if alias not in expected:
                    raise invalid_argument(
                        f"input tensor alias not found in signature: {alias}. Inputs expected to "
                        f"be in the set {{{','.join(sorted(expected))}}}."
                    )
        inputs = {alias: to_ndarray(t, alias) for alias, t in request.inputs.items()}
        output_names = signature.output_names(request.output_filter)
        outputs = self.run(servable, signature, inputs, output_names, timeout_s)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.signature_name = name
        response.model_spec.version.value = servable.version
        for alias, arr in outputs.items():
            response.outputs[alias].CopyFrom(from_ndarray(arr))
        return response

    # ------------------------------------------------------------------ classify / regress
    def _classify_regress(self, target: Target, signature_name: str, method: str, inp, timeout_s):
        servable = self.servable(target)
        name = signature_name or DEFAULT_SIGNATURE
        proto = servable.signature_defs.get(name)
        signature = servable.signatures.get(name)
        if proto is None or signature is None:
            raise invalid_argument(f"No signature was found with the name: {name}")
        input_alias, output_aliases = cr.check_signature(proto, method)
        examples = cr.serialized_examples(inp)
        outputs = self.run(servable, signature, {input_alias: examples}, output_aliases, timeout_s)
        if method == cr.CLASSIFY:
            return servable, name, cr.classification_result(outputs, len(examples))
        return servable, name, cr.regression_result(outputs, len(examples))

    def classify_regress_json(self, target: Target, body: bytes, method: str, timeout_s) -> str:
        doc = parse_json_object(body)
        signature_name = signature_name_of(doc)
        inp = cr.input_from_json(doc, method)
        _, _, result = self._classify_regress(target, signature_name, method, inp, timeout_s)
        return cr.results_json(method, result)

    def classify_regress_proto(self, request, method: str, timeout_s, response):
        target = target_from_spec(request.model_spec, request.HasField("model_spec"))
        servable, name, result = self._classify_regress(
            target, request.model_spec.signature_name, method, request.input, timeout_s
        )
        response.result.CopyFrom(result)
        response.model_spec.name = servable.name
        response.model_spec.signature_name = name
        response.model_spec.version.value = servable.version
        return response

    def multi_inference(self, request, timeout_s, response):
        if not request.tasks:
            raise invalid_argument("Expected at least one task in MultiInferenceRequest")
        names = {task.model_spec.name for task in request.tasks}
        if len(names) != 1:
            raise invalid_argument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name."
            )
        first = target_from_spec(request.tasks[0].model_spec)
        for task in request.tasks:
            if task.method_name not in cr.METHOD_BY_NAME:
                raise ServingError(
                    "UNIMPLEMENTED", f"Unsupported signature method_name: {task.method_name}"
                )
        for task in request.tasks:
            method = cr.METHOD_BY_NAME[task.method_name]
            servable, name, result = self._classify_regress(
                first, task.model_spec.signature_name, method, request.input, timeout_s
            )
            item = response.results.add()
            item.model_spec.name = servable.name
            item.model_spec.signature_name = name
            item.model_spec.version.value = servable.version
            if method == cr.CLASSIFY:
                item.classification_result.CopyFrom(result)
            else:
                item.regression_result.CopyFrom(result)
        return response

    # ------------------------------------------------------------------ metadata / status
    def metadata_proto(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        target = target_from_spec(request.model_spec, request.HasField("model_spec"))
        if not request.metadata_field:
            raise invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for field_name in request.metadata_field:
            if field_name != SIGNATURE_DEF_FIELD:
                raise invalid_argument(f"Metadata field {field_name} is not supported")
        servable = self.servable(target)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(servable.signature_def_map())
        return response

    def metadata_json(self, target: Target) -> str:
        servable = self.servable(target)
        sig_map = json_format.MessageToDict(
            servable.signature_def_map(),
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        doc = {
            "model_spec": {
                "name": servable.name,
                "signature_name": "",
                "version": str(servable.version),
            },
            "metadata": {SIGNATURE_DEF_FIELD: sig_map},
        }
        return json.dumps(doc, indent=1)

    def status_proto(self, target: Target) -> get_model_status_pb2.GetModelStatusResponse:
        """The label is ignored, as GetModelStatusImpl only looks at the version."""
        response = get_model_status_pb2.GetModelStatusResponse()
        for entry in self.registry.status(target.name, target.version):
            item = response.model_version_status.add()
            item.version = entry.version
            item.state = get_model_status_pb2.ModelVersionStatus.State.Value(entry.state)
            item.status.error_code = error_code_value(entry.error_code)
            item.status.error_message = entry.error_message
        return response

    def status_json(self, target: Target) -> str:
        return json_format.MessageToJson(
            self.status_proto(target),
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
            indent=1,
        )


def error_code_value(name: str) -> int:
    return error_codes_pb2.Code.Value(name)
