"""REST transport: TF Serving's `/v1/models/...` JSON API over the standard library's http.client.

Requests use the columnar `{"inputs": ...}` form; responses in either `outputs` (columnar) or
`predictions` (row) form are accepted, parsed leniently (`NaN`, `Infinity`). Keep-alive
connections are pooled so concurrent calls (keypoints and emotion at once) don't queue.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any
from urllib.parse import quote

import numpy as np

from .errors import ModelNotFoundError, RequestTimeoutError, ServerError, ServerUnavailableError
from .tensors import json_to_numpy, numpy_to_json
from .transport import (
    ModelRef,
    RetryableError,
    RetryPolicy,
    SignatureInfo,
    TensorSpec,
    VersionStatus,
    add_served_versions,
    is_missing_model_text,
    with_retries,
)


def model_path(model: ModelRef) -> str:
    """`/v1/models/NAME[/versions/N | /labels/L]` with the name and label percent-encoded."""
    path = f"/v1/models/{quote(model.name, safe='')}"
    if model.version is not None:
        path += f"/versions/{model.version}"
    elif model.version_label is not None:
        path += f"/labels/{quote(model.version_label, safe='')}"
    return path


def error_text(body: bytes) -> str:
    """TF Serving's `{"error": ...}` message, or the raw body (e.g. an HTML 404 page) trimmed."""
    text = body.decode("utf-8", errors="replace")
    try:
        doc = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:500] or "(empty body)"
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return doc["error"]
    return " ".join(text.split())[:500]


def map_http_error(status: int, body: bytes, model: ModelRef, content_type: str = "") -> Exception:
    """Typed client error for a non-2xx reply (503 is handled by the retry loop, not here)."""
    message = error_text(body)
    if status == 504:
        return RequestTimeoutError(f"{model.describe()}: the server timed out ({message})")
    if status == 404 and "json" in content_type:
        return ModelNotFoundError(message, http_status=status)
    if status == 400 and is_missing_model_text(message):
        return ModelNotFoundError(message, http_status=status)
    if status == 404:
        message = f"not a TF Serving REST endpoint ({message})"
    return ServerError(message, http_status=status)


def decode_reply(status: int, data: bytes, model: ModelRef, content_type: str) -> Any:
    """The JSON document of a 2xx reply; `RetryableError` for 503, `map_http_error` for other statuses."""
    if status == 503:
        raise RetryableError(f"HTTP 503: {error_text(data)}")
    if not 200 <= status < 300:
        raise map_http_error(status, data, model, content_type)
    try:
        return json.loads(data)  # Python's json accepts NaN / Infinity / -Infinity
    except ValueError as exc:
        raise ServerError(f"reply is not JSON: {error_text(data)}", http_status=status) from exc


def grpc_port_error(where: str) -> ServerUnavailableError:
    """The error for a reply that is an HTTP/2 frame: the port is a gRPC port."""
    return ServerUnavailableError(
        f"{where}: that port speaks gRPC (HTTP/2), not REST: use protocol='grpc' "
        "for this port, or TF Serving's REST port (--rest_api_port, 8501 by default)"
    )


def predict_body(model: ModelRef, inputs: dict[str, np.ndarray]) -> bytes:
    """The JSON body of a predict request, in the columnar `{"inputs": ...}` form."""
    fields = [f'"inputs":{{{",".join(f"{json.dumps(k)}:{numpy_to_json(v)}" for k, v in inputs.items())}}}']
    if model.signature_name:
        fields.append(f'"signature_name":{json.dumps(model.signature_name)}')
    return f"{{{','.join(fields)}}}".encode()


class RestTransport:
    """Calls TF Serving's REST API at http://host:port (thread-safe)."""

    def __init__(self, host: str, port: int, *, policy: RetryPolicy | None = None):
        self.host = host
        self.port = port
        self.policy = policy or RetryPolicy()
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _acquire(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                conn = self._idle.pop()
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                return conn, True
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout), False

    def _release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.append(conn)

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None,
        model: ModelRef,
        timeout: float,
        what: str,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        deadline = time.monotonic() + timeout
        where = f"{what} {self.base_url}"

        def attempt(remaining: float) -> Any:
            conn, reused = self._acquire(remaining)
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                status, ctype = resp.status, resp.getheader("Content-Type", "")
                closing = resp.will_close
            except TimeoutError as exc:
                conn.close()
                raise RequestTimeoutError(f"{where}: no answer within the deadline") from exc
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                conn.close()
                if reused:  # a kept-alive socket the server had closed: try a fresh one at once
                    return attempt(remaining)
                raise RetryableError(f"connection dropped ({exc})") from exc
            except OSError as exc:  # refused, unreachable, DNS
                conn.close()
                raise RetryableError(exc.strerror or str(exc)) from exc
            except http.client.HTTPException as exc:
                conn.close()
                if isinstance(exc, http.client.BadStatusLine) and str(exc).startswith("\x00\x00"):
                    raise grpc_port_error(where) from exc
                raise ServerError(f"malformed HTTP reply ({exc!r})") from exc
            if closing:
                conn.close()
            else:
                self._release(conn)
            return decode_reply(status, data, model, ctype)

        try:
            return with_retries(attempt, timeout=timeout, policy=self.policy, what=where)
        except ModelNotFoundError as exc:
            add_served_versions(exc, model, lambda ref: self.status(ref, deadline - time.monotonic()))
            raise

    def predict(
        self, model: ModelRef, inputs: dict[str, np.ndarray], timeout: float
    ) -> dict[str, np.ndarray]:
        doc = self._request(
            "POST",
            model_path(model) + ":predict",
            body=predict_body(model, inputs),
            model=model,
            timeout=timeout,
            what=f"predict {model.describe()} at",
        )
        return parse_predict_response(doc)

    def metadata(self, model: ModelRef, timeout: float) -> dict[str, SignatureInfo]:
        doc = self._request(
            "GET",
            model_path(model) + "/metadata",
            body=None,
            model=model,
            timeout=timeout,
            what=f"metadata {model.describe()} at",
        )
        return parse_metadata_response(doc)

    def status(self, model: ModelRef, timeout: float) -> list[VersionStatus]:
        doc = self._request(
            "GET",
            model_path(model),
            body=None,
            model=model,
            timeout=timeout,
            what=f"status {model.describe()} at",
        )
        return parse_status_response(doc)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def parse_predict_response(doc: Any) -> dict[str, np.ndarray]:
    """Outputs by name from a predict reply in columnar (`outputs`) or row (`predictions`) form.

    A single unnamed output (TF Serving omits the name when a signature has one output) is
    returned under the key "" for the caller to resolve.
    """
    if not isinstance(doc, dict):
        raise ServerError(f"predict reply is not a JSON object: {str(doc)[:200]}")
    try:
        return _predict_outputs(doc)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise ServerError(f"malformed predict reply ({type(exc).__name__}: {exc}): {str(doc)[:200]}") from exc


def parse_metadata_response(doc: Any) -> dict[str, SignatureInfo]:
    """Signatures by name from a `GET .../metadata` reply."""
    try:
        sigs = doc["metadata"]["signature_def"]["signature_def"]
    except (KeyError, TypeError) as exc:
        raise ServerError(f"metadata reply has no signature_def: {str(doc)[:200]}") from exc
    return {name: _signature_info(sd) for name, sd in sigs.items()}


def parse_status_response(doc: Any) -> list[VersionStatus]:
    """Version states from a `GET /v1/models/NAME` reply (a malformed one is a `ServerError`)."""
    out = []
    try:
        for s in doc.get("model_version_status", []):
            st = s.get("status") or {}
            out.append(
                VersionStatus(
                    version=int(s.get("version", 0)),
                    state=str(s.get("state", "UNKNOWN")),
                    error_code=str(st.get("error_code", "OK")),
                    error_message=str(st.get("error_message", "")),
                )
            )
    except (AttributeError, TypeError, ValueError) as exc:
        raise ServerError(f"malformed model status reply: {str(doc)[:200]}") from exc
    return out


def _predict_outputs(doc: dict[str, Any]) -> dict[str, np.ndarray]:
    if "outputs" in doc:
        out = doc["outputs"]
        if isinstance(out, dict) and not ("b64" in out and len(out) == 1):
            return {k: json_to_numpy(v) for k, v in out.items()}
        return {"": json_to_numpy(out)}
    if "predictions" in doc:
        rows = doc["predictions"]
        if rows and isinstance(rows[0], dict) and not ("b64" in rows[0] and len(rows[0]) == 1):
            return {k: json_to_numpy([r[k] for r in rows]) for k in rows[0]}
        return {"": json_to_numpy(rows)}
    raise ServerError(f"predict reply has neither 'outputs' nor 'predictions': {str(doc)[:200]}")


def _tensor_spec(info: dict[str, Any]) -> TensorSpec:
    shape_doc = info.get("tensor_shape") or {}
    if shape_doc.get("unknown_rank"):
        shape = None
    else:
        sizes = [int(d.get("size", -1)) for d in shape_doc.get("dim", [])]
        shape = tuple(None if s < 0 else s for s in sizes)
    return TensorSpec(dtype=str(info.get("dtype", "DT_INVALID")), shape=shape)


def _signature_info(sd: dict[str, Any]) -> SignatureInfo:
    return SignatureInfo(
        inputs={k: _tensor_spec(v) for k, v in (sd.get("inputs") or {}).items()},
        outputs={k: _tensor_spec(v) for k, v in (sd.get("outputs") or {}).items()},
        method_name=str(sd.get("method_name", "")),
    )
