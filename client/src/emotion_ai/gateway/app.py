"""`create_app`: the analysis gateway as a FastAPI application (any ASGI server can run it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import cv2
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from .. import __version__
from ..errors import EmotionAIError
from ..result import Prediction
from ..transport import all_available
from .auth import bearer_token, check_token
from .clients import AnalysisOptions, ClientPool, ConcurrencyGate, DetectorName
from .inputs import IMAGE_TYPES, ImagePart, check_pixels, problem_or_none, read_images
from .metrics import GatewayMetrics, MetricsMiddleware
from .problems import PROBLEM_JSON, ProblemError, from_client_error, install_handlers
from .schemas import BatchOut, PredictionOut, ProblemOut, ReadyOut
from .settings import GatewaySettings, settings_from_env
from .state import Gateway
from .stream import add_stream_route

#: JPEG quality of annotated images.
JPEG_QUALITY = 90
#: Seconds `/readyz` waits for the model server's answer.
READY_TIMEOUT = 5.0
#: The web page's files (package data).
STATIC = Path(__file__).parent / "static"
#: The web page loads only its own files and talks only to this gateway.
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self' ws: wss:; "
            "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def _problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    schema = {"schema": {"$ref": "#/components/schemas/ProblemOut"}}
    return {code: {"description": "problem details (RFC 9457)", "content": {PROBLEM_JSON: schema}}
            for code in codes}


_IMAGE_BODY = {
    "required": True,
    "description": "An image as the raw body, a multipart/form-data form with the image as a file, or JSON "
    '`{"image": {"b64": "<base64>"}}`. URLs are never fetched.',
    "content": {
        **{t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "image": {"type": "string", "format": "binary"}}}},
        "application/json": {"schema": {"type": "object", "properties": {
            "image": {"type": "object", "properties": {"b64": {"type": "string", "format": "byte"}}}}}},
    },
}
_BATCH_BODY = {
    "required": True,
    "description": "Several images: a multipart/form-data form with one file each, or JSON "
    '`{"images": [{"b64": "<base64>"}, ...]}`.',
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "images": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
        "application/json": {"schema": {"type": "object", "properties": {"images": {"type": "array", "items": {
            "type": "object", "properties": {"b64": {"type": "string", "format": "byte"}}}}}}},
    },
}


_LABEL = Query(max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="a version label (e.g. stable)")


def analysis_options(
    detector: Annotated[DetectorName | None, Query(description="face detector (default: the gateway's)")] = None,
    min_face_size: Annotated[float | None, Query(gt=0, description="smallest face reported, in pixels")] = None,
    max_side: Annotated[int | None, Query(ge=32, le=8192, description="detect on a copy at most this long")] = None,
    min_score: Annotated[float | None, Query(ge=0, le=1, description="detection score a face needs")] = None,
    thorough: Annotated[bool, Query(description="search with mtcnn and its turned looks (slower)")] = False,
    variant: Annotated[str, Query(pattern="^(fast|accurate)$", description="model ladder rung")] = "fast",
    keypoints_version: Annotated[int | None, Query(ge=1, description="pin a keypoints version")] = None,
    keypoints_label: Annotated[str | None, _LABEL] = None,
    emotion_version: Annotated[int | None, Query(ge=1, description="pin an emotion version")] = None,
    emotion_label: Annotated[str | None, _LABEL] = None,
) -> AnalysisOptions:
    """The analysis options of a request's query string (a FastAPI dependency)."""
    return AnalysisOptions(detector, min_face_size, max_side, min_score, thorough, variant,  # type: ignore[arg-type]
                           keypoints_version, keypoints_label, emotion_version, emotion_label)


def wants_jpeg(accept: str | None) -> bool:
    """Does an Accept header prefer image/jpeg to JSON?

    Args:
        accept: the header's value.

    Returns:
        True when image/jpeg has a higher quality value than application/json (absent: 0).
    """
    if not accept:
        return False
    quality: dict[str, float] = {}
    for item in accept.split(","):
        kind, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        quality[kind.lower()] = q
    return quality.get("image/jpeg", 0.0) > max(quality.get("application/json", 0.0),
                                                   quality.get("application/problem+json", 0.0))


def encode_jpeg(prediction: Prediction) -> bytes:
    """The annotated image (boxes, keypoints, labels) as a JPEG."""
    ok, buf = cv2.imencode(".jpg", prediction.annotate(), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ProblemError(500, "internal-error", "the annotated image could not be encoded")
    return buf.tobytes()


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """The analysis gateway: `POST /v1/faces:analyze`, `POST /v1/faces:batchAnalyze`, `WS /v1/stream`,
    `/healthz`, `/readyz`, `/metrics`, and the OpenAPI schema with its interactive docs at `/docs`.

    An ASGI app factory: `uvicorn --factory emotion_ai.gateway:create_app` builds it from the environment
    (`settings_from_env`). The model server is reached through the client library (gRPC by default).

    Args:
        settings: the gateway's settings (default: `settings_from_env()`).

    Returns:
        The application; `app.state.gateway` is its `Gateway`.

    Raises:
        ValueError: an invalid setting in the environment.
    """
    settings = settings if settings is not None else settings_from_env()
    gw = Gateway(settings, GatewayMetrics(), ClientPool(settings),
                 ConcurrencyGate(settings.max_concurrency, settings.retry_after))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        default = gw.clients.get(AnalysisOptions())
        if settings.wait_for_models:
            await default.wait_until_available(timeout=settings.wait_for_models)
        try:
            yield
        finally:
            await gw.clients.close()

    app = FastAPIOffline(
        title="Emotion AI gateway",
        version=__version__,
        description="Faces, 15 facial keypoints and expression scores per face, over HTTP and WebSocket. "
        "Errors are RFC 9457 problem details (application/problem+json).",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.gateway = gw
    install_handlers(app, settings.retry_after)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Accept"], max_age=600)
    app.add_middleware(MetricsMiddleware, metrics=gw.metrics)

    def authorized(request: Request) -> None:
        try:
            check_token(bearer_token(request.headers.get("authorization")), settings.api_keys)
        except ProblemError:
            gw.metrics.rejected.labels("unauthorized").inc()
            raise

    async def analyze_one(options: AnalysisOptions, part: ImagePart) -> Prediction:
        check_pixels(part.data, settings.max_pixels)
        client = gw.clients.get(options)
        try:
            prediction = await asyncio.wait_for(client.predict(part.data), settings.deadline)
        except TimeoutError:
            raise ProblemError(504, "deadline-exceeded", f"the analysis took longer than the deadline of "
                               f"{settings.deadline:g} s") from None
        gw.metrics.faces.observe(len(prediction.faces))
        return prediction

    app.mount("/ui", StaticFiles(directory=STATIC), name="ui")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={
            "Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})

    @app.get("/healthz", tags=["operations"], summary="Is the gateway process up?")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Are both models AVAILABLE behind the gateway?",
             responses={200: {"model": ReadyOut}, **_problem_responses(503)})
    async def readyz() -> JSONResponse:
        client = gw.clients.get(AnalysisOptions())
        try:
            states = await asyncio.wait_for(client.status(), READY_TIMEOUT)
        except (EmotionAIError, TimeoutError) as exc:
            raise ProblemError(503, "not-ready", f"the model server does not answer: {exc}",
                               headers={"Retry-After": str(settings.retry_after)}) from None
        doc = {key: [{"version": v.version, "state": v.state} for v in versions] for key, versions in states.items()}
        if not all_available(states):
            raise ProblemError(503, "not-ready", "not every model has a version AVAILABLE", models=doc,
                               headers={"Retry-After": str(settings.retry_after)})
        return JSONResponse({"status": "ready", "models": doc})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def metrics() -> Response:
        body, content_type = gw.metrics.exposition()
        return Response(body, media_type=content_type)

    @app.post(
        "/v1/faces:analyze", tags=["analysis"], summary="Faces, keypoints and expression of one image",
        dependencies=[Depends(authorized)], openapi_extra={"requestBody": _IMAGE_BODY},
        responses={200: {"description": "`Prediction.to_json()`: image_size, faces (box, detection_score, "
                         "15 keypoints, emotion, scores), models, timings_ms; or with annotate the annotated JPEG",
                         "model": PredictionOut, "content": {"image/jpeg": {"schema": {
                             "type": "string", "format": "binary"}}}},
                   **_problem_responses(400, 401, 404, 413, 415, 422, 502, 503, 504)},
    )
    async def analyze(
        request: Request,
        options: Annotated[AnalysisOptions, Depends(analysis_options)],
        annotate: Annotated[bool, Query(description="answer the annotated image (image/jpeg) instead of JSON")] = False,
    ) -> Response:
        with gw.gate.slot():
            parts = await read_images(request, limit=settings.max_body_bytes, max_images=1)
            prediction = await analyze_one(options, parts[0])
            if annotate or wants_jpeg(request.headers.get("accept")):
                return Response(await asyncio.to_thread(encode_jpeg, prediction), media_type="image/jpeg")
            return Response(prediction.to_json(), media_type="application/json")

    @app.post(
        "/v1/faces:batchAnalyze", tags=["analysis"], summary="Several images in one request",
        dependencies=[Depends(authorized)], openapi_extra={"requestBody": _BATCH_BODY},
        responses={200: {"description": '`{"results": [...]}`, one per image in order: `{"index", "name", '
                         '"prediction"}` or `{"index", "name", "error": <problem details>}`', "model": BatchOut},
                   **_problem_responses(400, 401, 413, 415, 503, 504)},
    )
    async def batch_analyze(request: Request,
                            options: Annotated[AnalysisOptions, Depends(analysis_options)]) -> JSONResponse:
        with gw.gate.slot():
            parts = await read_images(request, limit=settings.max_body_bytes, max_images=settings.max_batch_images)
            errors: list[Any] = problem_or_none(parts, settings.max_pixels)
            todo = [i for i, e in enumerate(errors) if e is None]
            client = gw.clients.get(options)
            try:
                found = await asyncio.wait_for(
                    client.predict_batch([parts[i].data for i in todo], errors="return"), settings.deadline)
            except TimeoutError:
                raise ProblemError(504, "deadline-exceeded", f"the batch took longer than the deadline of "
                                   f"{settings.deadline:g} s") from None
            outcome: list[Any] = list(errors)
            for i, result in zip(todo, found, strict=True):
                outcome[i] = result
            results = []
            for i, (part, result) in enumerate(zip(parts, outcome, strict=True)):
                entry: dict[str, Any] = {"index": i, "name": part.name}
                if isinstance(result, Prediction):
                    gw.metrics.faces.observe(len(result.faces))
                    entry["prediction"] = result.to_dict()
                else:
                    problem = (result if isinstance(result, ProblemError)
                               else from_client_error(result, settings.retry_after))
                    entry["error"] = problem.document()
                results.append(entry)
            return JSONResponse({"results": results})

    add_stream_route(app, gw)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with the problem details schema and without its 422 validation answers (a bad
    query value is a 400 problem here)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ProblemOut"] = ProblemOut.model_json_schema(ref_template="#/components/schemas/{model}")
        for methods in schema["paths"].values():
            for operation in methods.values():
                answer = operation.get("responses", {}).get("422", {})
                if "HTTPValidationError" in str(answer):
                    del operation["responses"]["422"]
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema
