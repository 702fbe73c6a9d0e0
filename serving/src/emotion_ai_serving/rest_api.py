"""TF Serving's REST API (http_rest_api_handler.cc) on a threaded stdlib HTTP/1.1 server."""

from __future__ import annotations

import logging
import re
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from .config import MonitoringSettings
from .errors import ServingError, invalid_argument
from .json_render import render_error
from .metrics import Metrics
from .prediction import PredictionCore, Target

log = logging.getLogger(__name__)

_VERSION_OR_LABEL = r"(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
POST_PATTERN = re.compile(
    r"/v1/models/([^/:]+)" + _VERSION_OR_LABEL + r":(classify|regress|predict)", re.IGNORECASE
)
GET_PATTERN = re.compile(
    r"/v1/models(?:/([^/:]+))?" + _VERSION_OR_LABEL + r"(?:/(metadata))?", re.IGNORECASE
)
V1_PATTERN = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
INT64_MAX = 2**63 - 1

NOT_FOUND_HTML = (
    b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n"
    b"</BODY></HTML>\n"
)
ORIGIN_PATTERN = re.compile(r"https?://.*")


@dataclass
class RestSettings:
    timeout_s: float | None
    max_request_bytes: int
    monitoring: MonitoringSettings


class BodyTooLargeError(Exception):
    pass


class InFlight:
    """Counts requests being handled, so shutdown can wait for them."""

    def __init__(self) -> None:
        self._count = 0
        self._cond = threading.Condition()

    def __enter__(self) -> None:
        with self._cond:
            self._count += 1

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._count -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._count == 0, timeout=timeout)


def _target(name: str, version: str | None, label: str | None) -> Target:
    parsed = None
    if version is not None:
        parsed = int(version)
        if parsed > INT64_MAX:
            raise invalid_argument(f"Failed to convert version: {version} to numeric.")
    return Target(unquote(name), parsed, unquote(label) if label is not None else None)


class RestHandler(BaseHTTPRequestHandler):
    """One instance per connection; `server` carries the core, metrics and settings."""

    protocol_version = "HTTP/1.1"
    server_version = "emotion-ai-serve"
    timeout = 120  # idle keep-alive connections are dropped after this many seconds
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid the 40 ms stall

    server: RestServer

    # ------------------------------------------------------------------ plumbing
    def log_message(self, format: str, *args: object) -> None:
        log.debug("http " + format % args)

    def _send(
        self, status: int, body: bytes, content_type: str | None, close: bool = False
    ) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if close or self.server.stopping:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, text: str) -> None:
        self._send(status, text.encode("utf-8"), "application/json")

    def _read_body(self) -> bytes:
        cap = self.server.settings.max_request_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > cap:
                    raise BodyTooLargeError(total)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(chunks)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length > cap:
                raise BodyTooLargeError(length)
            body = self.rfile.read(length) if length else b""
        if "gzip" in self.headers.get("Content-Encoding", "").lower():
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                body = inflater.decompress(body, cap + 1)
            except zlib.error as exc:
                raise invalid_argument(f"Failed to decompress gzip body: {exc}") from exc
            if len(body) > cap:
                raise BodyTooLargeError(len(body))
        return body

    # ------------------------------------------------------------------ dispatch
    def _dispatch(self) -> None:
        with self.server.in_flight:
            started = time.monotonic()
            path = self.path.split("?", 1)[0]
            try:
                body = self._read_body()
            except BodyTooLargeError as exc:
                cap = self.server.settings.max_request_bytes
                message = f"Request body of {exc.args[0]} bytes exceeds the limit of {cap} bytes"
                log.warning("request body too large", extra={"path": path, "bytes": exc.args[0]})
                self._send(413, render_error(message).encode(), "application/json", close=True)
                return
            except ServingError as exc:
                self._send_json(exc.http_status, render_error(exc.message))
                return
            monitoring = self.server.settings.monitoring
            if monitoring.prometheus_enabled and path == monitoring.prometheus_path:
                text = self.server.metrics.render()
                self._send(200, text.encode(), "text/plain")
            elif V1_PATTERN.fullmatch(path):
                self._handle_v1(path, body, started)
            else:
                self._send(404, NOT_FOUND_HTML, "text/html", close=True)


    # Every method goes through the router, which answers unknown ones as TF Serving does.
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch  # noqa: N815 (http.server names)

    def _handle_v1(self, path: str, body: bytes, started: float) -> None:
        method = self.command
        if method == "OPTIONS":
            origin = self.headers.get("Origin", "")
            self._send(200 if ORIGIN_PATTERN.match(origin) else 400, b"", None)
            return
        api, model = None, None
        try:
            if method == "POST" and (match := POST_PATTERN.fullmatch(path)):
                name, version, label, verb = match.groups()
                if verb not in ("classify", "regress", "predict"):
                    raise invalid_argument(f"Malformed request: {method} {path}")
                api, target = verb, _target(name, version, label)
                model = target.name
                timeout = self.server.settings.timeout_s
                if verb == "predict":
                    text = self.server.core.predict_json(target, body, timeout)
                else:
                    text = self.server.core.classify_regress_json(target, body, verb, timeout)
            elif method == "GET" and (match := GET_PATTERN.fullmatch(path)):
                name, version, label, sub = match.groups()
                if sub is not None and sub != "metadata":
                    raise invalid_argument(f"Malformed request: {method} {path}")
                if not name:
                    raise invalid_argument("Missing model name in request.")
                target = _target(name, version, label)
                if sub == "metadata":
                    text = self.server.core.metadata_json(target)
                else:
                    text = self.server.core.status_json(target)
            else:
                raise invalid_argument(f"Malformed request: {method} {path}")
        except ServingError as exc:
            self._finish(api, model, exc.code, started)
            self._send_json(exc.http_status, render_error(exc.message))
            return
        except Exception as exc:
            log.exception("unexpected error", extra={"path": path})
            self._finish(api, model, "INTERNAL", started)
            self._send_json(500, render_error(f"{type(exc).__name__}: {exc}"))
            return
        self._finish(api, model, "OK", started)
        self._send_json(200, text)

    def _finish(self, api: str | None, model: str | None, code: str, started: float) -> None:
        elapsed_us = (time.monotonic() - started) * 1e6
        if api is not None and model is not None:
            self.server.metrics.observe(model, api, "REST", code, elapsed_us)
        log.debug(
            "rest request",
            extra={
                "method": self.command,
                "path": self.path,
                "status": code,
                "ms": round(elapsed_us / 1000, 2),
            },
        )


class RestServer(ThreadingHTTPServer):
    """The REST listener; `stop()` stops accepting and waits for in-flight requests."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self, host: str, port: int, core: PredictionCore, metrics: Metrics, settings: RestSettings
    ) -> None:
        super().__init__((host, port), RestHandler)
        self.core, self.metrics, self.settings = core, metrics, settings
        self.in_flight = InFlight()
        self.stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="rest", daemon=True)
        self._thread.start()

    def stop(self, grace_s: float) -> bool:
        self.stopping = True
        self.shutdown()
        idle = self.in_flight.wait_idle(grace_s)
        self.server_close()
        return idle
