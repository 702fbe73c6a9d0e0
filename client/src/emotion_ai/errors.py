"""Typed errors raised by the client, worded for a person reading them."""

from __future__ import annotations


class EmotionAIError(Exception):
    """Base class of every error the client raises on purpose."""


class InvalidImageError(EmotionAIError, ValueError):
    """The input is not a usable image: unreadable, empty, not an image, truncated or too large."""


class ServerUnavailableError(EmotionAIError, ConnectionError):
    """The server could not be reached (refused, UNAVAILABLE, HTTP 503) after all retries."""


class RequestTimeoutError(EmotionAIError, TimeoutError):
    """The call missed its deadline (client deadline, DEADLINE_EXCEEDED or HTTP 504)."""


class ServerError(EmotionAIError):
    """The server answered with an error; `message` is TF Serving's own error text.

    Args:
        message: the server's error text.
        code: the gRPC status name, or None.
        http_status: the HTTP status for REST, else None.

    Attributes:
        message: the server's error text (REST `{"error": ...}` body or gRPC status details).
        code: the gRPC status name (e.g. "INVALID_ARGUMENT") or None.
        http_status: the HTTP status code for REST, else None.
    """

    def __init__(self, message: str, *, code: str | None = None, http_status: int | None = None):
        where = f"HTTP {http_status}" if http_status is not None else (code or "error")
        super().__init__(f"server error ({where}): {message}")
        self.message = message
        self.code = code
        self.http_status = http_status


class ModelNotFoundError(ServerError):
    """The server does not serve the requested model, version, version label or signature.

    Args:
        message: the error text (the server's own, e.g. "Servable not found for request: ...").
        code: the gRPC status name, or None.
        http_status: the HTTP status for REST, else None.

    Attributes:
        served_versions: for a request that named a version or label, the versions of the model the
            server has AVAILABLE (empty when it has none), which the message lists too; None when not
            asked (`set_served_versions`).
    """

    def __init__(self, message: str, *, code: str | None = None, http_status: int | None = None):
        super().__init__(message, code=code, http_status=http_status)
        self.served_versions: tuple[int, ...] | None = None
        self.args = (f"model not found: {message}",)

    def set_served_versions(self, versions: tuple[int, ...]) -> None:
        """Record the versions the server has AVAILABLE and name them in the message.

        Args:
            versions: the AVAILABLE versions of the requested model, ascending (empty for none).
        """
        self.served_versions = versions
        served = ", ".join(map(str, versions)) if versions else "none"
        self.args = (f"model not found: {self.message} (versions available on the server: {served})",)
