"""Optional bearer-token authentication (`GatewaySettings.api_keys`)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from .problems import ProblemError


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (None for none or another scheme)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def check_token(token: str | None, keys: Iterable[str]) -> None:
    """Accept `token` when it is one of `keys` (compared in constant time); no keys: accept everything.

    Args:
        token: the caller's token, if any.
        keys: the accepted tokens.

    Raises:
        ProblemError: 401 unauthorized, with `WWW-Authenticate: Bearer`.
    """
    keys = list(keys)
    if not keys:
        return
    if token is not None:
        given = token.encode()
        if any(hmac.compare_digest(given, key.encode()) for key in keys):
            return
    detail = "a bearer token is required (Authorization: Bearer <key>)" if token is None else "the token is not valid"
    error = "" if token is None else ', error="invalid_token"'
    raise ProblemError(401, "unauthorized", detail, headers={"WWW-Authenticate": f'Bearer realm="emotion-ai"{error}'})
