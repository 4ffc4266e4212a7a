"""``python -m engine serve``: the remote engine server. Blender add-ons elsewhere run their jobs on this machine's
engine workers, through the relay (`engine.remote.relay`) over one WebSocket each (the transport: `engine.remote`).

    python -m engine serve [--host 127.0.0.1] [--port 8765] [--token-file FILE] [--workers N]
                           [--max-message-mb 1024] [--max-pending-mb 2048] [--certfile CERT [--keyfile KEY]]

- Workers: ``--workers N`` ``python -m engine.worker`` processes (one job at a time each; with several, worker i
  sees only GPU i), started before the port opens, so every job finds torch imported. Jobs of all clients queue
  first come, first served.
- Security: the server listens on 127.0.0.1 unless ``--host`` says otherwise, and a host that is not a loopback
  address needs ``--token-file`` (refused before anything is bound). With a token, every client must send it
  (``Authorization: Bearer <token>``); a wrong or missing one gets HTTP 401 before the WebSocket opens. No path a
  client names is opened here: each job runs in a folder of the server's own with the files the client uploaded.
  ``--certfile``/``--keyfile`` serve wss:// (or put it behind a TLS reverse proxy).
- Limits: one message at most ``--max-message-mb``; a client's uploads waiting for or used by its unfinished jobs
  at most ``--max-pending-mb``. A client over either is told so and disconnected.
- Log: one line per connection, refusal and job on stderr, with the peer's address; never the token.
- SIGTERM or Ctrl-C: the connections close (clients are told the server stopped), the workers stop, the job
  folders are deleted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import itertools
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request

from .. import protocol
from . import frames
from .settings import MB, ServeError, Settings, is_loopback, parser, settings_from
from .workers import CANCEL_GRACE_S, Job, OutFile, Slot, WorkerFailed, log, worker_environment

MAX_JOBS_PER_CLIENT = 100
"""Jobs (with uploads, waiting or running) one client may have at a time."""
EXIT_BAD_SETTINGS = 2
EXIT_NO_START = 1
UPLOAD_NAMES = {frames.INPUTS_ROLE: protocol.INPUTS_FILENAME} | {
    role: f"uploaded-{role.removeprefix(frames.PARAM_ROLE_PREFIX)}.pt"
    for role in frames.UPLOAD_ROLES if role.startswith(frames.PARAM_ROLE_PREFIX)
}  # fmt: skip
"""Where each upload goes in the server's job folder: fixed names, never one a client chose."""
ROOT_PREFIX = "neural-sdf-serve-"
ROOT_MARKER = "server.pid"
"""A file in the server's job root holding its process id: a later server removes the root of one that was killed."""


@dataclass(frozen=True)
class Close:
    """An outbox item: close the connection with this code and reason."""

    code: int
    reason: str


class Client:
    """One connection: its name (``c3``), its jobs by the client's ids, its uploads' bytes, and an outbox that one
    task sends in order (so a file always goes before the message that names it)."""

    def __init__(self, name: str, connection: ServerConnection):
        self.name, self.connection = name, connection
        self.peer = peer_of(connection)
        self.jobs: dict[str, Job] = {}
        self.pending_bytes = 0
        self.gone = False
        self.closing = False
        """Set when the server closes the connection (a violation, a limit): its outbox ends with a `Close`."""
        self.outbox: asyncio.Queue[object] = asyncio.Queue()

    def __str__(self) -> str:
        return f"{self.peer} {self.name}"

    def deliver(self, item: object) -> None:
        if not self.gone:
            self.outbox.put_nowait(item)

    def close(self, code: int, reason: str) -> None:
        self.deliver(Close(code, reason.encode("utf-8")[:120].decode("utf-8", "ignore")))
        self.gone = self.closing = True

    async def pump(self) -> None:
        """Send the outbox, in order, until a `Close`."""
        try:
            while True:
                item = await self.outbox.get()
                if isinstance(item, Close):
                    await self.connection.close(item.code, item.reason)
                    return
                if isinstance(item, OutFile):
                    await self.connection.send(frames.fragments(item.job, item.role, item.data, item.name))
                else:
                    await self.connection.send(protocol.encode(item).rstrip("\n"))
        except ConnectionClosed:
            pass  # the handler sees it too, and drops the client


def peer_of(connection: ServerConnection) -> str:
    address = connection.remote_address
    text = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
    forwarded = connection.request.headers.get("X-Forwarded-For") if connection.request is not None else None
    return f"{text} (forwarded for {forwarded})" if forwarded else text


class Server:
    """The workers, the job queue and the connected clients."""

    def __init__(self, settings: Settings):
        self.settings = settings
        remove_stale_roots(Path(tempfile.gettempdir()))
        self.root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX))
        (self.root / ROOT_MARKER).write_text(str(os.getpid()))
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.slots = [
            Slot(i, worker_environment(i, settings.workers), self.root, settings.hang_timeout_s, self._ended)
            for i in range(settings.workers)
        ]
        self.clients: set[Client] = set()
        self.stopping = False
        self._names = itertools.count(1)
        self._folders = itertools.count(1)
        self._tasks: list[asyncio.Task] = []

    async def start_workers(self) -> None:
        await asyncio.gather(*(slot.start() for slot in self.slots))
        self._tasks = [asyncio.create_task(slot.serve(self.queue)) for slot in self.slots]
        self._tasks.append(asyncio.create_task(self._heartbeat()))

    def hello(self) -> dict:
        first = self.slots[0].hello
        return {
            **protocol.hello(first["engine"], first["python"], first["numpy"], first["torch"], first["cuda"]),
            "server": True, "workers": len(self.slots), "devices": [slot.hello.get("cuda") for slot in self.slots],
            "max_message_bytes": self.settings.max_message_bytes,
            "max_pending_bytes": self.settings.max_pending_bytes,
        }  # fmt: skip

    def process_request(self, connection: ServerConnection, request: Request):
        """Refuse (HTTP 401) a client without the token, before the WebSocket opens."""
        if self.settings.token is None:
            return None
        sent = request.headers.get("Authorization", "")
        expected = f"Bearer {self.settings.token}".encode()
        if hmac.compare_digest(sent.encode("utf-8", "replace"), expected):
            return None
        log(f"{peer_of(connection)}: refused: bad token ({'none sent' if not sent else 'wrong one'})")
        return connection.respond(401, "A valid token is needed: Authorization: Bearer <token>\n")

    async def handle(self, connection: ServerConnection) -> None:
        client = Client(f"c{next(self._names)}", connection)
        self.clients.add(client)
        log(f"{client}: connected")
        client.deliver(self.hello())
        pump = asyncio.create_task(client.pump())
        try:
            async for message in connection:
                if isinstance(message, str):
                    handled = self._text(client, message)
                else:
                    handled = await self._binary(client, message)
                if not handled:
                    break
        except ConnectionClosed:
            pass
        finally:
            self._drop(client)
            if client.closing and not self.stopping:  # a violation: its message, then the close
                await asyncio.wait([pump], timeout=10.0)
            pump.cancel()
            reason = f" {connection.close_reason}" if connection.close_reason else ""
            log(f"{client}: disconnected (close code {connection.close_code}{reason})")

    def _text(self, client: Client, text: str) -> bool:
        try:
            message = protocol.decode(text)
        except protocol.ProtocolError as error:
            client.deliver(protocol.error(None, f"The remote engine got an invalid message: {error}"))
            return True
        if message["type"] == "job":
            self._job(client, message)
        elif message["type"] == "cancel":
            self._cancel(client, str(message.get("job")))
        else:
            client.deliver(protocol.error(None, f"The remote engine got an unknown message type {message['type']!r}"))
        return True

    async def _binary(self, client: Client, data: bytes) -> bool:
        try:
            header, payload = frames.parse(data, frames.upload_role_ok)
        except frames.FrameError as error:
            return self._violation(client, str(error))
        job_id, role = header["job"], header["role"]
        job = client.jobs.get(job_id)
        if job is not None and job.state != "uploading":
            client.deliver(protocol.error(job_id, f"The remote engine got the {role} file of job {job_id!r} after its "
                                                  "job message: files go before the job that uses them"))  # fmt: skip
            return True
        pending = client.pending_bytes + len(payload) - (job.uploads.get(role, 0) if job else 0)
        if pending > self.settings.max_pending_bytes:
            limit = self.settings.max_pending_bytes / MB
            client.deliver(protocol.error(job_id, f"The uploads of unfinished jobs on this connection would take "
                                                  f"{pending / MB:.1f} MB, more than the remote engine keeps for one "
                                                  f"client ({limit:.0f} MB: its --max-pending-mb), so it disconnected"))
            client.close(1009, f"uploads over the limit of {limit:.0f} MB")
            log(f"{client}: refused: uploads over the limit ({pending} bytes)")
            return False
        if job is None:
            if len(client.jobs) >= MAX_JOBS_PER_CLIENT:
                return self._violation(client, f"more than {MAX_JOBS_PER_CLIENT} jobs in flight on one connection")
            job = self._new_job(client, job_id)
        try:
            await asyncio.to_thread((job.folder / UPLOAD_NAMES[role]).write_bytes, payload)
        except OSError as error:
            client.deliver(protocol.error(job_id, f"The remote engine could not store the {role} file ({error})"))
            self._finish(job)
            return True
        client.pending_bytes += len(payload) - job.uploads.get(role, 0)
        job.uploads[role] = len(payload)
        return True

    def _job(self, client: Client, message: dict) -> None:
        job_id = message.get("job")
        if not isinstance(job_id, (str, int)) or not 0 < len(str(job_id)) <= frames.MAX_JOB_ID_CHARS:
            client.deliver(protocol.error(None, f"The remote engine got a job whose id is not a string of 1 to "
                                                f"{frames.MAX_JOB_ID_CHARS} characters: {job_id!r}"))  # fmt: skip
            return
        job_id = str(job_id)
        job = client.jobs.get(job_id)
        if job is not None and job.state != "uploading":
            client.deliver(protocol.error(job_id, f"The remote engine has a job {job_id!r} of this connection "
                                                  "already waiting or running: ids must differ among unfinished "
                                                  "jobs"))  # fmt: skip
            return
        job = job or self._new_job(client, job_id)
        problem = self._checked(job, message)
        if problem is not None:
            client.deliver(protocol.error(job_id, problem))
            self._finish(job)
            return
        job.state = "queued"
        log(f"{client}: job {job_id!r} ({job.kind}) queued, {self.queue.qsize()} before it")
        self.queue.put_nowait(job)

    def _checked(self, job: Job, message: dict) -> str | None:
        """Set the job's kind and params (file params pointing at the uploaded copies); the problem, if any."""
        if message.get("protocol") != protocol.PROTOCOL_VERSION:
            return (
                f"The add-on speaks protocol {message.get('protocol')}, this engine speaks "
                f"{protocol.PROTOCOL_VERSION}: install the add-on and the engine from the same release"
            )
        kind, params = message.get("kind"), message.get("params")
        if kind not in protocol.JOB_KINDS:
            return f"unknown job kind {kind!r}; expected one of {', '.join(protocol.JOB_KINDS)}"
        if not isinstance(params, dict):
            return f"{kind} job: params must be an object, got {params!r}"
        params, files = dict(params), protocol.MODEL_FILE_PARAMS.get(kind, ())
        for role in job.uploads:
            name = role.removeprefix(frames.PARAM_ROLE_PREFIX)
            if role != frames.INPUTS_ROLE and name not in files:
                return f"The {kind} job takes no file as its {name!r}, yet one was uploaded for it"
        for name in files:
            role = frames.PARAM_ROLE_PREFIX + name
            if role in job.uploads:
                params[name] = str(job.folder / UPLOAD_NAMES[role])
            elif params.get(name) is not None:
                return (
                    f"The {kind} job's {name!r} file was not uploaded with the job: the remote engine opens no path a "
                    f"client names. Send the file first (a {role!r} binary frame; the add-on's relay does it)"
                )
        job.kind, job.params = kind, params
        return None

    def _cancel(self, client: Client, job_id: str) -> None:
        job = client.jobs.get(job_id)
        if job is None or job.state == "uploading":
            return
        if job.state == "queued":
            client.deliver(protocol.cancelled(job_id, f"Cancelled the {job.kind} job before it started"))
            self._finish(job)
            return
        for slot in self.slots:
            slot.cancel(job)

    def _new_job(self, client: Client, job_id: str) -> Job:
        folder = self.root / f"{client.name}-j{next(self._folders)}"
        folder.mkdir(mode=0o700)
        job = Job(job_id, f"{client.name}:{job_id}", folder, str(client), client.deliver, client=client)
        client.jobs[job_id] = job
        return job

    def _finish(self, job: Job) -> None:
        """The job is over (or never runs): its folder goes, its uploads no longer count."""
        job.dropped, job.state = True, "done"
        client = job.client
        if client.jobs.get(job.id) is job:
            client.pending_bytes -= sum(job.uploads.values())
            del client.jobs[job.id]
        shutil.rmtree(job.folder, ignore_errors=True)

    def _ended(self, job: Job, outcome: str) -> None:
        log(f"{job.owner}: job {job.id!r} ({job.kind}) ended: {outcome} after {job.seconds:.2f} s")
        self._finish(job)

    def _drop(self, client: Client) -> None:
        """The client left: its waiting jobs go, its running one is cancelled (its messages go nowhere)."""
        client.gone = True
        for job in list(client.jobs.values()):
            if job.state == "running":
                for slot in self.slots:
                    slot.cancel(job)
            else:
                self._finish(job)
        self.clients.discard(client)

    def _violation(self, client: Client, problem: str) -> bool:
        log(f"{client}: protocol violation: {problem}")
        client.deliver(protocol.error(None, f"The remote engine closed the connection: {problem}"))
        client.close(1008, problem)
        return False

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(protocol.HEARTBEAT_INTERVAL_S)
            for client in list(self.clients):
                client.deliver(protocol.alive())

    async def stop(self) -> None:
        self.stopping = True
        for client in self.clients:
            client.gone = True  # from here on a client learns only that the connection closed
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*(slot.stop() for slot in self.slots), return_exceptions=True)
        shutil.rmtree(self.root, ignore_errors=True)


def remove_stale_roots(folder: Path) -> None:
    """Delete the job folders of servers that were killed (their marker names a process that is gone)."""
    for root in folder.glob(ROOT_PREFIX + "*"):
        try:
            pid = int((root / ROOT_MARKER).read_text())
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(root, ignore_errors=True)
            log(f"removed {root}, left by a server that was killed")
        except (OSError, ValueError):
            pass  # not ours to judge: another user's, or being made


async def run(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))
    server = Server(settings)
    try:
        try:
            listener = await serve(
                server.handle, settings.host, settings.port, process_request=server.process_request,
                max_size=settings.max_message_bytes, compression=None, ssl=settings.ssl_context, start_serving=False,
            )  # fmt: skip
        except OSError as error:
            log(f"error: cannot listen on {settings.url}: {error.strerror or error}")
            return EXIT_NO_START
        try:
            log(f"starting {settings.workers} worker(s); job folders in {server.root}")
            await server.start_workers()
        except WorkerFailed as error:
            log(f"error: {error}")
            listener.close()
            return EXIT_NO_START
        port = listener.sockets[0].getsockname()[1]
        await listener.start_serving()
        where = dataclasses.replace(settings, port=port).url
        devices = ", ".join(str(device or "CPU") for device in server.hello()["devices"])
        log(f"serving on {where} ({'token required' if settings.token else 'no token'}; {settings.workers} worker(s): "
            f"{devices})")
        if settings.ssl_context is None and not is_loopback(settings.host):
            log("warning: without --certfile the token and the jobs' data cross the network unencrypted")
        await stop.wait()
        log("stopping: closing connections, stopping the workers")
        server.stopping = True
        for client in server.clients:
            client.gone = True
        listener.close()  # every connection closes with 1001 (going away)
        await asyncio.wait([asyncio.create_task(listener.wait_closed())], timeout=CANCEL_GRACE_S + 10.0)
        return 0
    finally:
        await server.stop()
        log("stopped")


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.split("\n\n")[0]).parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = settings_from(args)
    except ServeError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    try:
        return asyncio.run(run(settings))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
