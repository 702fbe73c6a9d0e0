"""`GatewaySettings`: every setting of the analysis gateway, validated, with its default defined once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..detect import DETECTORS
from ..images import MAX_PIXELS
from ..options import ClientOptions

#: Environment variable with the accepted bearer tokens, separated by commas or white space.
API_KEYS_ENV = "EMOTION_AI_GATEWAY_API_KEYS"
#: Environment variable naming a file of accepted bearer tokens, one per line (`#` starts a comment).
API_KEYS_FILE_ENV = "EMOTION_AI_GATEWAY_API_KEYS_FILE"
#: Environment variable with the CORS allow-list: origins separated by commas.
CORS_ENV = "EMOTION_AI_GATEWAY_CORS_ORIGINS"


def _tokens(text: str) -> list[str]:
    return [t for t in text.replace(",", " ").split() if t]


def read_api_keys(path: str | os.PathLike) -> frozenset[str]:
    """The bearer tokens of a key file: one per line; blank lines and `#` comments are skipped.

    Args:
        path: the file.

    Returns:
        The tokens.

    Raises:
        ValueError: the file cannot be read or holds no token.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read the API key file {path}: {exc.strerror or exc}") from exc
    keys = frozenset(t for line in lines for t in _tokens(line.split("#", 1)[0]))
    if not keys:
        raise ValueError(f"the API key file {path} holds no key")
    return keys


def keys_from_env(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The bearer tokens named by `API_KEYS_ENV` and the file named by `API_KEYS_FILE_ENV` (both may be set).

    Args:
        environ: the environment (default `os.environ`).

    Returns:
        The tokens; empty when neither variable is set (no authentication).

    Raises:
        ValueError: the key file cannot be read or holds no key.
    """
    env = os.environ if environ is None else environ
    keys = set(_tokens(env.get(API_KEYS_ENV, "")))
    if env.get(API_KEYS_FILE_ENV):
        keys |= read_api_keys(env[API_KEYS_FILE_ENV])
    return frozenset(keys)


def cors_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The CORS allow-list of `CORS_ENV` (empty: no cross-origin browser access)."""
    env = os.environ if environ is None else environ
    return tuple(_tokens(env.get(CORS_ENV, "")))


@dataclass(frozen=True)
class GatewaySettings:
    """Settings of the analysis gateway (`create_app`).

    Attributes:
        client: how the gateway reaches TF Serving or the embedded server (gRPC is the default).
        detector: the face detector's name ("yunet", "mtcnn", "haar"); requests may pick another one.
        api_keys: accepted bearer tokens; empty = no authentication.
        cors_origins: origins a browser may call the gateway from ("*" for any); empty = none.
        max_body_bytes: largest request body (an image, a multipart form or a JSON document).
        max_pixels: largest image, width * height (a decompression bomb is refused before decoding).
        max_batch_images: most images in one batch request.
        deadline: seconds a request may take in all, decoding, detection and both model calls included.
        max_concurrency: requests analysed at once; more are answered 503 with Retry-After at once.
        retry_after: the seconds a 503 asks the caller to wait.
        max_streams: WebSocket streams open at once.
        max_clients: client configurations (detector knobs, model versions) kept ready at once.
        wait_for_models: seconds the gateway waits at start for both models to be AVAILABLE (0: do not
            wait; `/readyz` says when they are).
    """

    client: ClientOptions = field(default_factory=ClientOptions)
    detector: str = "yunet"
    api_keys: frozenset[str] = frozenset()
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_batch_images: int = 16
    deadline: float = 30.0
    max_concurrency: int = 8
    retry_after: int = 1
    max_streams: int = 16
    max_clients: int = 8
    wait_for_models: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_keys", frozenset(self.api_keys))
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))
        for name in ("max_body_bytes", "max_pixels", "max_batch_images", "max_concurrency", "retry_after",
                     "max_streams", "max_clients"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, not {self.detector!r}")
        if self.max_pixels > MAX_PIXELS:
            raise ValueError(f"max_pixels must be at most the client's limit of {MAX_PIXELS:,}")
        if not self.deadline > 0 or self.wait_for_models < 0:
            raise ValueError("deadline must be more than 0 and wait_for_models 0 or more")
        if any(not k or any(c.isspace() for c in k) for k in self.api_keys):
            raise ValueError("an API key must be a non-empty token without white space")


def settings_from_env(environ: Mapping[str, str] | None = None, **overrides: object) -> GatewaySettings:
    """Settings from the client's connection variables (EMOTION_AI_HOST, EMOTION_AI_PROTOCOL,
    EMOTION_AI_GRPC_PORT, EMOTION_AI_REST_PORT; gRPC by default) and the gateway's (`API_KEYS_ENV`,
    `API_KEYS_FILE_ENV`, `CORS_ENV`), for `create_app()` under any ASGI server.

    Args:
        environ: the environment (default `os.environ`).
        overrides: other `GatewaySettings` fields.

    Returns:
        The settings.

    Raises:
        ValueError: an invalid value (a port that is not a number, an unreadable key file, ...).
    """
    env = os.environ if environ is None else environ
    client: dict[str, object] = {}
    for key, name, kind in (("host", "EMOTION_AI_HOST", str), ("protocol", "EMOTION_AI_PROTOCOL", str),
                            ("grpc_port", "EMOTION_AI_GRPC_PORT", int), ("rest_port", "EMOTION_AI_REST_PORT", int)):
        if env.get(name):
            try:
                client[key] = kind(env[name])
            except ValueError:
                raise ValueError(f"{name}={env[name]!r} is not a number") from None
    fields: dict[str, object] = {"client": ClientOptions(**client),  # type: ignore[arg-type]
                                 "api_keys": keys_from_env(env), "cors_origins": cors_from_env(env)}
    return GatewaySettings(**(fields | overrides))  # type: ignore[arg-type]
