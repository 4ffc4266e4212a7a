"""The settings of ``python -m engine serve`` (`engine.remote.server`): its options, checked before anything starts.

A host that is not a loopback address needs a token file (readable by its owner only, not empty); the token is the
file's content, stripped. ``--certfile``/``--keyfile`` make the TLS context of a wss:// server.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from .workers import log

DEFAULT_PORT = 8765
MB = 1 << 20


class ServeError(ValueError):
    """Settings the server refuses to start with; the message says what to change."""


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    token: str | None
    workers: int
    max_message_bytes: int
    max_pending_bytes: int
    ssl_context: ssl.SSLContext | None
    hang_timeout_s: float

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.ssl_context else 'ws'}://{host}:{self.port}"


def parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine serve", description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine "
                        "only; any other needs --token-file)")  # fmt: skip
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT}; 0: any free)")
    parser.add_argument("--token-file", type=Path, help="file holding the token clients must send (readable by its "
                        "owner only)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="engine workers, one job each at a time; with several, "
                        "worker i uses GPU i (default: 1)")  # fmt: skip
    parser.add_argument("--max-message-mb", type=float, default=1024.0, help="largest message a client may send, in "
                        "MiB (default: 1024)")  # fmt: skip
    parser.add_argument("--max-pending-mb", type=float, default=2048.0, help="uploads of a client's unfinished jobs "
                        "at most, in MiB (default: 2048)")  # fmt: skip
    parser.add_argument("--certfile", type=Path, help="TLS certificate (PEM): serve wss://")
    parser.add_argument("--keyfile", type=Path, help="TLS private key (PEM), if not in the certificate file")
    parser.add_argument("--hang-timeout", type=float, default=60.0, help="seconds a busy worker may stay silent "
                        "before it is restarted (default: 60)")  # fmt: skip
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """The checked settings; raises `ServeError` naming the option and what to do."""
    if not 0 <= args.port <= 65535:
        raise ServeError(f"--port must be 0 to 65535, got {args.port}")
    if args.workers < 1:
        raise ServeError(f"--workers must be at least 1, got {args.workers}")
    for name in ("max_message_mb", "max_pending_mb", "hang_timeout"):
        if not getattr(args, name) > 0:
            raise ServeError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    token = read_token(args.token_file) if args.token_file is not None else None
    if token is None and not is_loopback(args.host):
        raise ServeError(
            f"--host {args.host!r} lets other machines connect, so it needs --token-file: write a long random token "
            "into a file only you can read (python -c \"import secrets; print(secrets.token_urlsafe(32))\" > token; "
            "chmod 600 token) and type the same token in the add-on preferences (Engine: Remote)"
        )
    return Settings(
        host=args.host, port=args.port, token=token, workers=args.workers,
        max_message_bytes=int(args.max_message_mb * MB), max_pending_bytes=int(args.max_pending_mb * MB),
        ssl_context=tls_context(args.certfile, args.keyfile), hang_timeout_s=args.hang_timeout,
    )  # fmt: skip


def read_token(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ServeError(f"--token-file {path} cannot be read: {getattr(error, 'strerror', None) or error}") from None
    if os.name == "posix" and mode & 0o077:
        raise ServeError(f"--token-file {path} can be read by other users (mode {mode & 0o777:o}): chmod 600 {path}")
    if not token:
        raise ServeError(f"--token-file {path} is empty: write a long random token into it")
    if not all(33 <= ord(char) <= 126 for char in token):
        raise ServeError(f"--token-file {path}: the token must be printable ASCII without spaces (it travels in an "
                         "HTTP header)")  # fmt: skip
    if len(token) < 16:
        log(f"warning: the token in {path} has only {len(token)} characters; 32 random ones are better")
    return token


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` stands for is a loopback one (127.0.0.0/8, ::1); names are resolved."""
    if not host.strip():
        return False  # every interface
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except (socket.gaierror, UnicodeError) as error:
        raise ServeError(f"--host {host!r} cannot be resolved: {error}") from None
    return all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses)


def tls_context(certfile: Path | None, keyfile: Path | None) -> ssl.SSLContext | None:
    if certfile is None:
        if keyfile is not None:
            raise ServeError("--keyfile needs --certfile")
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as error:
        raise ServeError(f"--certfile {certfile} / --keyfile {keyfile}: cannot load them ({error})") from None
    return context
