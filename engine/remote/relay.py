"""``python -m engine.remote.relay``: a remote engine, seen by the add-on exactly as a local worker.

It speaks the worker's protocol (`engine.protocol`) on stdin/stdout and relays it over one WebSocket to
``python -m engine serve`` (the transport: `engine.remote`). Its settings come from the environment, never the
command line (which other users can read): the server's ws:// or wss:// address in ``NEURAL_SDF_REMOTE_URL``, its
token in ``NEURAL_SDF_REMOTE_TOKEN`` (empty or absent: none), optionally a private certificate authority's PEM file
in ``NEURAL_SDF_REMOTE_CAFILE`` (wss:// is verified against the system's authorities otherwise).

- Start: it connects, and forwards the server's hello with ``"remote": URL``; a server it cannot reach, a refused
  token or another protocol version is one error message (job null) saying what to do, then it exits with 1.
- Jobs: it uploads the job folder's ``inputs.npz`` (if any) and the local file of each file param of the job's kind
  (`engine.protocol.MODEL_FILE_PARAMS`), then sends the job. It writes what the server sends (outputs, a result's
  files, previews) into the local job folder, each file whole (a temporary file, then a rename), before it
  forwards the message that names it: the add-on finds what a local worker would have written.
- Heartbeats: the server's ``alive`` messages are forwarded (the add-on's hang detection covers the server); while a
  large file arrives, the arriving data counts as a heartbeat.
- End of input: it closes the connection (the server cancels this client's jobs) and exits with 0. A connection
  that closes or breaks: one error message saying so, exit 1.

Only the standard library and ``websockets`` are imported: the add-on's machine may have nothing else.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from .. import __version__, protocol
from . import frames

OPEN_TIMEOUT_S = 15.0
"""How long connecting and the server's hello may take (the add-on's hang timeout is 30 s at least)."""
EXIT_FAILED = 1
PREFERENCES = "the add-on preferences (Engine: Remote)"


class RelayError(Exception):
    """A reason to stop, for the user as it is: the relay sends it as an error message (job null) and exits."""


class Output:
    """The protocol's stdout: whole lines; `alive_if_due` sends a heartbeat when nothing went out for a while."""

    def __init__(self, stream):
        self.stream = stream
        self.last = time.monotonic()

    def send(self, message: dict) -> None:
        try:
            self.stream.write(protocol.encode(message))
            self.stream.flush()
        except OSError:
            os._exit(0)  # the add-on is gone: nobody is left to serve or to tell
        self.last = time.monotonic()

    def alive_if_due(self) -> None:
        if time.monotonic() - self.last >= protocol.HEARTBEAT_INTERVAL_S:
            self.send(protocol.alive())


def shown(url: str) -> str:
    """The address without any user or password in it, for messages."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def closed_message(url: str, received, sent, busy: bool) -> str:
    """What the user reads when the connection ends: ``received``/``sent`` are the close frames (code, reason)."""
    code, reason = (received.code, received.reason) if received is not None else (None, "")
    if code == 1009:
        return (
            f"The remote engine at {url} refused a message larger than it accepts ({reason}) and closed the "
            "connection: send less (a lower resolution, a smaller mesh), or start it with a larger --max-message-mb "
            "or --max-pending-mb"
        )
    if code == 1008:
        return f"The remote engine at {url} closed the connection: {reason}"
    if code == 1011:
        problem = reason or "internal error"
        return f"The remote engine at {url} failed ({problem}) and closed the connection; see its log"
    if received is None and sent is not None and sent.code == 1011:
        return (
            f"The connection to the remote engine at {url} was lost ({sent.reason or 'no answer'})"
            + (" while a job ran. Nothing in the scene was changed; " if busy else ". ")
            + "Check the network and try again"
        )
    return f"The remote engine at {url} closed the connection (it was stopped or restarted)" + (
        " while a job ran. Nothing in the scene was changed; try again" if busy else ". Try again"
    )


class Relay:
    def __init__(self, url: str, token: str, out: Output):
        self.url, self.shown, self.token, self.out = url, shown(url), token, out
        self.connection: ClientConnection | None = None
        self.jobs: dict[str, Path] = {}
        """Job id to its local folder, from its job message to its end."""
        self.max_message_bytes: int | None = None
        self.max_pending_bytes: int | None = None

    async def run(self) -> int:
        self.connection = await self._connect()
        try:
            hello = await self._hello()
            self.out.send({**hello, "remote": self.shown})
            addon = asyncio.create_task(self._from_addon(_stdin_lines(asyncio.get_running_loop())))
            server = asyncio.create_task(self._from_server())
            await asyncio.wait({addon, server}, return_when=asyncio.FIRST_COMPLETED)
            if addon.done() and addon.exception() is None:  # end of input: the add-on is done with this engine
                server.cancel()
                await self.connection.close()
                return 0
            for task in (addon, server):
                task.cancel()
            failed = addon if addon.done() and not addon.cancelled() else server
            raise failed.exception()
        except ConnectionClosed as closed:
            raise RelayError(closed_message(self.shown, closed.rcvd, closed.sent, bool(self.jobs))) from None
        finally:
            await self.connection.close()

    async def _connect(self) -> ClientConnection:
        parts = urlsplit(self.url)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        context = None
        if parts.scheme == "wss":
            cafile = os.environ.get(protocol.REMOTE_CAFILE_VARIABLE) or None
            try:
                context = ssl.create_default_context(cafile=cafile)
            except (OSError, ssl.SSLError) as error:
                raise RelayError(f"The certificate authority file {cafile} ({protocol.REMOTE_CAFILE_VARIABLE}) cannot "
                                 f"be used: {getattr(error, 'strerror', None) or error}") from None  # fmt: skip
        reach = f"Could not reach the remote engine at {self.shown}"
        running = "Is `python -m engine serve` running there?"
        try:
            return await connect(
                self.url, additional_headers=headers, ssl=context, max_size=None, compression=None,
                open_timeout=OPEN_TIMEOUT_S, user_agent_header=f"neural-sdf-relay/{__version__}",
            )  # fmt: skip
        except InvalidStatus as refusal:
            status = refusal.response.status_code
            if status == 401 and self.token:
                problem = f"refused the token: check the token in {PREFERENCES}"
            elif status == 401:
                problem = f"needs a token: type the server's token in {PREFERENCES}"
            else:
                problem = f"refused the connection (HTTP {status}): is this the address of `python -m engine serve`?"
            raise RelayError(f"The remote engine at {self.shown} {problem}") from None
        except ssl.SSLCertVerificationError as error:
            raise RelayError(
                f"The remote engine at {self.shown} presented a certificate that could not be verified "
                f"({error.verify_message}): give it a certificate this machine trusts, or name the certificate "
                f"authority's file in {protocol.REMOTE_CAFILE_VARIABLE}"
            ) from None
        except ssl.SSLError as error:
            raise RelayError(f"The TLS handshake with {self.shown} failed ({error.reason or error}): does the server "
                             "serve wss:// (--certfile)? Use ws:// for a server without TLS") from None  # fmt: skip
        except ConnectionRefusedError:
            raise RelayError(f"{reach}: connection refused. {running}") from None
        except socket.gaierror as error:
            raise RelayError(f"{reach}: the host name {parts.hostname!r} is unknown ({error.strerror}). Check the "
                             f"address in {PREFERENCES}") from None  # fmt: skip
        except TimeoutError:
            raise RelayError(f"{reach}: no answer within {OPEN_TIMEOUT_S:.0f} s. Is the address right, and does every "
                             f"firewall on the way let port {parts.port or 80} through?") from None  # fmt: skip
        except OSError as error:
            raise RelayError(f"{reach}: {error.strerror or error}. {running}") from None
        except InvalidURI as error:
            raise RelayError(f"The remote engine address {self.shown!r} is not a ws:// or wss:// URL ({error}): "
                             f"correct it in {PREFERENCES}") from None  # fmt: skip
        except (InvalidHandshake, ValueError) as error:
            raise RelayError(f"The server at {self.shown} did not answer as a remote engine ({error}): check the "
                             "address and the port") from None  # fmt: skip

    async def _hello(self) -> dict:
        not_engine = f"The server at {self.shown} is not a remote engine (python -m engine serve)"
        try:
            first = await asyncio.wait_for(self.connection.recv(), OPEN_TIMEOUT_S)
        except TimeoutError:
            raise RelayError(f"{not_engine}: it sent no hello within {OPEN_TIMEOUT_S:.0f} s") from None
        try:
            hello = protocol.decode(first) if isinstance(first, str) else {"type": "binary data"}
        except protocol.ProtocolError as error:
            raise RelayError(f"{not_engine}: {error}") from None
        if hello["type"] != "hello":
            raise RelayError(f"{not_engine}: its first message is {hello['type']!r}, not a hello")
        if hello.get("protocol") != protocol.PROTOCOL_VERSION:
            raise RelayError(
                f"The remote engine at {self.shown} speaks protocol {hello.get('protocol')}, this add-on speaks "
                f"{protocol.PROTOCOL_VERSION}: install the same release on both machines"
            )
        self.max_message_bytes = hello.get("max_message_bytes")
        self.max_pending_bytes = hello.get("max_pending_bytes")
        return hello

    async def _from_addon(self, lines: asyncio.Queue) -> None:
        while (line := await lines.get()) is not None:
            if not line.strip():
                continue
            try:
                message = protocol.decode(line)
            except protocol.ProtocolError as error:
                self.out.send(protocol.error(None, f"The engine relay got an invalid message: {error}"))
                continue
            if message["type"] == "job":
                await self._job(message)
            else:
                await self.connection.send(protocol.encode(message).rstrip("\n"))

    async def _job(self, message: dict) -> None:
        """Upload the job's files, then send it; a file that cannot be sent fails the job here."""
        job_id, kind, params = str(message.get("job")), message.get("kind"), message.get("params")
        directory = Path(str(message.get("dir")))
        wanted = []
        if (directory / protocol.INPUTS_FILENAME).is_file():
            wanted.append((frames.INPUTS_ROLE, directory / protocol.INPUTS_FILENAME, "input data of the job"))
        if isinstance(params, dict):
            params = dict(params)
            for name in protocol.MODEL_FILE_PARAMS.get(kind, ()):
                if isinstance(params.get(name), str):
                    path = Path(params[name])
                    wanted.append((frames.PARAM_ROLE_PREFIX + name, path, f"model file {path}"))
                    params[name] = path.name  # the server uses its copy; the local path stays here
        uploads, total = [], 0
        for role, path, what in wanted:
            try:
                data = await asyncio.to_thread(_read_local, path, what)
            except RelayError as error:
                self.out.send(protocol.error(job_id, str(error)))
                return
            size = frames.message_size(job_id, role, len(data))
            total += len(data)
            for limit, option, amount in ((self.max_message_bytes, "--max-message-mb", size),
                                          (self.max_pending_bytes, "--max-pending-mb", total)):  # fmt: skip
                if isinstance(limit, int) and amount > limit:
                    self.out.send(protocol.error(
                        job_id, f"The {what} takes {amount / 2**20:.1f} MB, more than the remote engine at "
                        f"{self.shown} accepts ({limit / 2**20:.1f} MB, its {option}): send less (a lower resolution, "
                        f"a smaller mesh), or start the server with a larger {option}",
                    ))  # fmt: skip
                    return
            uploads.append((role, data))
        self.jobs[job_id] = directory
        for role, data in uploads:
            started = time.perf_counter()
            await self.connection.send(frames.fragments(job_id, role, data))
            seconds = time.perf_counter() - started
            _log(f"uploaded {role} of job {job_id}: {len(data) / 2**20:.2f} MB in {seconds:.3f} s")
        await self.connection.send(protocol.encode({**message, "dir": "", "params": params}).rstrip("\n"))

    async def _from_server(self) -> None:
        while True:
            text, download = [], None
            try:
                async for fragment in self.connection.recv_streaming():
                    if isinstance(fragment, str):
                        text.append(fragment)
                        continue
                    download = download or Download(self.jobs)
                    download.feed(fragment)
                    self.out.alive_if_due()  # data flowing: the server lives
                if download is not None:
                    download.finish()
                    download.report()
            except BaseException:
                if download is not None:
                    download.abort()
                raise
            if download is None:
                self._forward("".join(text))

    def _forward(self, text: str) -> None:
        try:
            message = protocol.decode(text)
        except protocol.ProtocolError as error:
            raise RelayError(f"The remote engine at {self.shown} sent an invalid message ({error}): install the "
                             "same release on both machines") from None  # fmt: skip
        if message["type"] == "hello":
            return
        if message["type"] in ("result", "error", "cancelled"):
            self.jobs.pop(str(message.get("job")), None)
        self.out.send(message)


class Download:
    """One file from the server, written as it arrives into a temporary file beside its place in the job's folder,
    renamed into place once complete."""

    def __init__(self, jobs: dict[str, Path]):
        self.jobs = jobs
        self.reader = frames.FrameReader(frames.download_role_ok)
        self.file = None
        self.temporary: Path | None = None
        self.target: Path | None = None
        self.started = time.perf_counter()

    def feed(self, fragment: bytes) -> None:
        try:
            payload = self.reader.feed(fragment)
        except frames.FrameError as error:
            raise RelayError(f"The remote engine sent a file the relay cannot read ({error}): install the same "
                             "release on both machines") from None  # fmt: skip
        if self.reader.header is not None and self.file is None:
            self._open(self.reader.header)
        if len(payload):
            self._write(payload)

    def finish(self) -> None:
        try:
            self.reader.finish()
        except frames.FrameError as error:
            raise RelayError(f"The remote engine sent an incomplete file ({error}); try again") from None
        if self.file is not None:
            self.file.close()
        if self.target is not None:
            try:
                os.replace(self.temporary, self.target)
            except OSError as error:
                self.abort()
                raise RelayError(f"Could not write {self.target} ({error.strerror or error})") from None

    def report(self) -> None:
        header, seconds = self.reader.header, time.perf_counter() - self.started
        _log(f"downloaded {header['role']} of job {header['job']}: {header['size'] / 2**20:.2f} MB in {seconds:.3f} s")

    def abort(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.temporary is not None:
            self.temporary.unlink(missing_ok=True)

    def _open(self, header: dict) -> None:
        name, directory = header.get("name"), self.jobs.get(header["job"])
        if name is None:
            raise RelayError(f"The remote engine sent its {header['role']} file without a name: install the same "
                             "release on both machines")  # fmt: skip
        if directory is None:  # a job already over: nothing to write
            self.file = open(os.devnull, "wb")
            return
        self.target = directory / name
        try:
            descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
        except OSError as error:
            raise RelayError(f"Could not write into the job folder {directory} ({error.strerror or error})") from None
        self.file, self.temporary = os.fdopen(descriptor, "wb"), Path(temporary)

    def _write(self, payload: memoryview) -> None:
        try:
            self.file.write(payload)
        except OSError as error:
            raise RelayError(f"Could not write {self.target} ({error.strerror or error})") from None


def _log(text: str) -> None:
    print(f"relay: {text}", file=sys.stderr, flush=True)


def _read_local(path: Path, what: str) -> bytes:
    if path.is_dir():
        raise RelayError(f"{path} is a folder, not a model file")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise RelayError(f"{what} does not exist") from None
    except OSError as error:
        raise RelayError(f"The {what} cannot be read ({error.strerror or error})") from None


def _stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue:
    """The add-on's lines, read on a thread into a queue; None at the end of input."""
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line)
            loop.call_soon_threadsafe(lines.put_nowait, None)
        except RuntimeError:
            pass  # the relay has ended

    threading.Thread(target=read, name="stdin", daemon=True).start()
    return lines


def _claim_stdout():
    """The protocol's own handle on stdout; fd 1 and sys.stdout then point at stderr (as `engine.worker` does)."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "w", encoding="utf-8", newline="\n")


def settings() -> tuple[str, str]:
    """The server's address and token from the environment; raises `RelayError` saying what to set."""
    url = os.environ.get(protocol.REMOTE_URL_VARIABLE, "").strip()
    token = os.environ.get(protocol.REMOTE_TOKEN_VARIABLE, "").strip()
    if not url:
        raise RelayError(f"No remote engine address is set ({protocol.REMOTE_URL_VARIABLE}): type it in {PREFERENCES}")
    if urlsplit(url).scheme not in ("ws", "wss"):
        raise RelayError(f"The remote engine address {shown(url)!r} must start with ws:// or wss://: correct it in "
                         f"{PREFERENCES}")  # fmt: skip
    if not all(33 <= ord(char) <= 126 for char in token):
        raise RelayError(f"The remote engine token must be printable ASCII without spaces: correct it in {PREFERENCES}")
    return url, token


def main() -> int:
    out = Output(_claim_stdout())
    sys.stdin.reconfigure(encoding="utf-8")
    try:
        url, token = settings()
        return asyncio.run(Relay(url, token, out).run())
    except RelayError as error:
        out.send(protocol.error(None, str(error)))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # a bug: say so, with the traceback in the log
        traceback.print_exc()
        out.send(protocol.error(None, f"Internal error of the engine relay: {type(error).__name__}: {error} "
                                      "(traceback in the system console)"))  # fmt: skip
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
