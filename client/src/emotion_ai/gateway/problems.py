"""RFC 9457 problem details: every error the gateway answers is `application/problem+json`, never a traceback."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    EmotionAIError,
    InvalidImageError,
    ModelNotFoundError,
    RequestTimeoutError,
    ServerError,
    ServerUnavailableError,
)

PROBLEM_JSON = "application/problem+json"
#: Prefix of the `type` URI of the gateway's own problem kinds (e.g. "urn:emotion-ai:problem:invalid-image").
TYPE_PREFIX = "urn:emotion-ai:problem:"
log = logging.getLogger("emotion_ai.gateway")


class ProblemError(Exception):
    """An error answered as a problem details document.

    Args:
        status: the HTTP status code.
        kind: the problem kind, the last part of its `type` URI (e.g. "invalid-image").
        detail: what went wrong with this request, for a person.
        headers: extra response headers (e.g. Retry-After).
        extra: extension members of the document.
    """

    def __init__(self, status: int, kind: str, detail: str, *, headers: dict[str, str] | None = None,
                 **extra: Any):
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail
        self.headers = headers or {}
        self.extra = extra

    def document(self, instance: str | None = None) -> dict[str, Any]:
        """The problem details object.

        Args:
            instance: the request path it happened on.

        Returns:
            type, title, status, detail (and instance and the extension members).
        """
        doc: dict[str, Any] = {
            "type": TYPE_PREFIX + self.kind,
            "title": HTTPStatus(self.status).phrase,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            doc["instance"] = instance
        return doc | self.extra

    def response(self, instance: str | None = None) -> JSONResponse:
        """The problem as an `application/problem+json` response."""
        return JSONResponse(self.document(instance), status_code=self.status, headers=self.headers,
                            media_type=PROBLEM_JSON)


def from_client_error(exc: EmotionAIError, retry_after: int = 1) -> ProblemError:
    """The problem for a client library error: the image's fault is a 4xx, the model server's a 5xx.

    Args:
        exc: the error `EmotionClient` / `AsyncEmotionClient` raised.
        retry_after: seconds for the Retry-After header of a 503.

    Returns:
        422 invalid-image, 404 model-not-found, 503 model-server-unavailable (Retry-After), 504
        model-server-timeout, 502 model-server-error.
    """
    if isinstance(exc, InvalidImageError):
        return ProblemError(422, "invalid-image", str(exc))
    if isinstance(exc, ModelNotFoundError):
        return ProblemError(404, "model-not-found", str(exc))
    if isinstance(exc, ServerUnavailableError):
        return ProblemError(503, "model-server-unavailable", str(exc), headers={"Retry-After": str(retry_after)})
    if isinstance(exc, RequestTimeoutError):
        return ProblemError(504, "model-server-timeout", str(exc))
    if isinstance(exc, ServerError):
        return ProblemError(502, "model-server-error", str(exc))
    return ProblemError(500, "client-error", str(exc))


def install_handlers(app: FastAPI, retry_after: int) -> None:
    """Answer every error of `app` with problem details: `ProblemError`, the client library's errors, FastAPI's
    validation errors, Starlette's HTTP errors (404, 405, ...) and, without its traceback, any other.

    Args:
        app: the application.
        retry_after: seconds for the Retry-After header of a 503.
    """

    async def problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return exc.response(request.url.path)

    async def client_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, EmotionAIError)
        return from_client_error(exc, retry_after).response(request.url.path)

    async def validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        invalid = ProblemError(400, "invalid-request", detail or "invalid request", errors=errors)
        return invalid.response(request.url.path)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return ProblemError(exc.status_code, kind, str(exc.detail), headers=dict(exc.headers or {})).response(
            request.url.path)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s", request.url.path, exc_info=exc)
        return ProblemError(500, "internal-error", "internal error (see the gateway's log)").response(request.url.path)

    app.add_exception_handler(ProblemError, problem)
    app.add_exception_handler(EmotionAIError, client_error)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
