"""The analysis gateway: the client library behind an HTTP/WebSocket API (FastAPI on uvicorn).

Needs the `gateway` extra (`pip install 'emotion-ai[gateway]'`). Start it with `emotion-ai gateway`, or
run the app factory under any ASGI server: `uvicorn --factory emotion_ai.gateway:create_app`.
"""

from .app import create_app
from .server import serve
from .settings import GatewaySettings, settings_from_env

__all__ = ["GatewaySettings", "create_app", "serve", "settings_from_env"]
