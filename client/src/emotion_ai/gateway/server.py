"""`serve`: run the gateway under uvicorn (what `emotion-ai gateway` does)."""

from __future__ import annotations

import math

import uvicorn

from .app import create_app
from .settings import GatewaySettings


def serve(settings: GatewaySettings, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info",
          proxy_headers: bool = False) -> None:
    """Serve the gateway until interrupted (SIGINT / SIGTERM end it gracefully).

    Args:
        settings: the gateway's settings.
        host: the address to listen on ("0.0.0.0" for every interface).
        port: the TCP port.
        log_level: uvicorn's log level.
        proxy_headers: trust X-Forwarded-For / -Proto (behind a reverse proxy).
    """
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, ws="wsproto",
                ws_max_size=settings.max_body_bytes, proxy_headers=proxy_headers, server_header=False,
                timeout_graceful_shutdown=math.ceil(settings.deadline))
