"""A remote engine: a server started with ``python -m engine serve`` on another machine (or this one), reached
through the engine's relay (``python -m engine.remote.relay``), which speaks the worker's protocol on stdin/stdout
and moves every job's files through the connection. So each operator runs unchanged: only its `WorkerLaunch`
differs. The relay needs only the standard library and ``websockets`` in the engine's Python; it reads the server's
address and token from its environment (never from its command line, which other users can read)."""

from pathlib import Path
from urllib.parse import urlsplit

from .errors import EngineError
from .worker_client import REMOTE_RELAY_MODULE, WorkerLaunch

URL_VARIABLE = "NEURAL_SDF_REMOTE_URL"
TOKEN_VARIABLE = "NEURAL_SDF_REMOTE_TOKEN"
DEFAULT_URL = "ws://127.0.0.1:8765"
"""`python -m engine serve`'s own default address."""


def checked_url(url: str) -> str:
    """The server's address, stripped; raises `EngineError` saying what to type when it is no ws:// or wss:// URL
    with a host."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise EngineError(f"The remote engine address '{url}' is not a valid URL ({error}): {_EXAMPLE}") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise EngineError(f"The remote engine address '{url}' must start with ws:// or wss:// and name a host: {_EXAMPLE}")
    if port == 0:
        raise EngineError(f"The remote engine address '{url}' has port 0: {_EXAMPLE}")
    return url


_EXAMPLE = (
    "type it as the server prints it, e.g. ws://gpu-box:8765 (wss:// behind TLS), in the add-on preferences "
    "(Engine: Remote)"
)


def remote_launch(python: str, engine_root: Path, url: str, token: str) -> WorkerLaunch:
    """The launch of the relay to the server at ``url``; raises `EngineError` for an unusable address. Local thread
    settings do not apply: the server has its own."""
    environment = {URL_VARIABLE: checked_url(url), TOKEN_VARIABLE: token.strip()}
    return WorkerLaunch(python, engine_root, environment, module=REMOTE_RELAY_MODULE)
