"""The remote engine server's workers: one ``python -m engine.worker`` process per slot, one job at a time.

A `WorkerProcess` is the child and the tasks that read it: its protocol messages into a queue (heartbeats too, so
its pipe never fills), its log lines onto the server's stderr under the slot's name. A `Slot` keeps one running:
it starts it (torch is imported once, there), takes the server's jobs in order, sends each with the job's own
folder, and relays what the worker says to the job's client: a preview or a result's files before the message that
names them, the client's own job id in each message. A worker that dies, falls silent or ignores a cancel for
`CANCEL_GRACE_S` ends its job with a message, and the slot starts a fresh one for the next job.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import stat
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import protocol
from .frames import FILE_ROLE_PREFIX, OUTPUTS_ROLE, PREVIEW_ROLE, download_role_ok, is_plain_name

CANCEL_GRACE_S = 5.0
"""How long a worker gets to stop a cancelled job (its client left, or asked) before it is killed and restarted."""
START_TIMEOUT_S = 300.0
"""How long a worker may take to say hello (importing torch from a cold disk can take a minute)."""
MAX_LINE_BYTES = 1 << 26
"""The longest protocol line read from a worker (a result's summary lists per-frame timings)."""
LOG_TAIL_LINES = 20


class WorkerFailed(Exception):
    """A worker that could not be started; the message says why, for the log and for the job it fails."""


@dataclass(frozen=True)
class OutFile:
    """A file for a client (a binary frame): its job (the client's id), role and name, and its bytes."""

    job: str
    role: str
    name: str
    data: bytes


@dataclass(eq=False)
class Job:
    """One client's job on the server: its ids, its folder (made by the server), what the client uploaded into it,
    and where its messages go."""

    id: str
    """The client's own id, in every message the client gets."""
    internal: str
    """The id the worker sees, unique on the server: the client's name and its id."""
    folder: Path
    owner: str
    """The client, for the log."""
    deliver: Callable[[object], None]
    """Queues a message (a dict) or an `OutFile` for the client; does nothing once the client is gone."""
    kind: str = ""
    params: dict = field(default_factory=dict)
    uploads: dict[str, int] = field(default_factory=dict)
    """Role to the bytes stored for it."""
    state: str = "uploading"
    """uploading (files came, no job message yet), queued, running, done."""
    dropped: bool = False
    """Cancelled before it ran, or its client left: a slot skips it."""
    client: object = None
    """The server's record of the client (opaque here)."""
    seconds: float = 0.0
    """How long it ran on its worker (from its job message to its end, the files read)."""


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class WorkerProcess:
    """One ``python -m engine.worker`` child and its reader tasks."""

    def __init__(self, name: str, environment: dict[str, str], cwd: Path):
        self.name, self.environment, self.cwd = name, environment, cwd
        self.process: asyncio.subprocess.Process | None = None
        self.messages: asyncio.Queue[dict | None] = asyncio.Queue()
        self.tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._tasks: list[asyncio.Task] = []

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self) -> dict:
        """Start the worker and wait for its hello (returned); raises `WorkerFailed` saying why not."""
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "engine.worker", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=self.environment, cwd=self.cwd, limit=MAX_LINE_BYTES,
            )  # fmt: skip
        except OSError as error:
            raise WorkerFailed(f"{self.name} could not be started with {sys.executable}: {error}") from None
        self._tasks = [asyncio.create_task(self._read_messages()), asyncio.create_task(self._readlog())]
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                message = await asyncio.wait_for(self.messages.get(), max(deadline - time.monotonic(), 0.01))
            except TimeoutError:
                self.kill()
                raise WorkerFailed(f"{self.name} did not say hello within {START_TIMEOUT_S:.0f} s") from None
            if message is None:
                code = await self.process.wait()
                raise WorkerFailed(f"{self.name} ended before it was ready ({describe_exit(code)}){self.log_lines()}")
            if message.get("type") == "error":
                self.kill()
                raise WorkerFailed(f"{self.name}: {message.get('message')}")
            if message.get("type") == "hello":
                if message.get("protocol") != protocol.PROTOCOL_VERSION:
                    self.kill()
                    raise WorkerFailed(f"{self.name} speaks protocol {message.get('protocol')}, the server speaks "
                                       f"{protocol.PROTOCOL_VERSION}: install one release")  # fmt: skip
                return message

    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None and not self._tasks[0].done()

    def drain(self) -> bool:
        """Drop the messages that came while idle (heartbeats); returns whether the worker can take a job."""
        while not self.messages.empty():
            if self.messages.get_nowait() is None:
                return False
        return self.alive()

    async def send(self, message: dict) -> None:
        try:
            self.process.stdin.write(protocol.encode(message).encode("utf-8"))
            await self.process.stdin.drain()
        except (OSError, RuntimeError):
            pass  # it died: its stdout ends, and the slot says how

    async def next(self, timeout_s: float) -> dict | None:
        """The worker's next message (None: its stdout ended); raises TimeoutError after ``timeout_s``."""
        return await asyncio.wait_for(self.messages.get(), timeout_s)

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            try:
                self.process.kill()
            except ProcessLookupError:
                pass

    async def stop(self, grace_s: float = CANCEL_GRACE_S) -> None:
        """End the worker's input (it cancels its job and exits), kill it after ``grace_s``, wait for its readers."""
        if self.process is None:
            return
        if self.process.returncode is None:
            try:
                self.process.stdin.close()
            except (OSError, RuntimeError):
                pass
            try:
                await asyncio.wait_for(self.process.wait(), grace_s)
            except TimeoutError:
                self.kill()
        await self.process.wait()
        await asyncio.wait(self._tasks, timeout=2.0)

    async def exit_code(self) -> int | None:
        try:
            return await asyncio.wait_for(self.process.wait(), 5.0)
        except TimeoutError:
            self.kill()
            return await self.process.wait()

    def log_lines(self) -> str:
        lines = [line for line in list(self.tail)[-3:] if line.strip()]
        return f". Last log lines: {'; '.join(lines)}" if lines else ""

    async def _read_messages(self) -> None:
        try:
            while line := await self.process.stdout.readline():
                try:
                    self.messages.put_nowait(protocol.decode(line.decode("utf-8", "replace")))
                except protocol.ProtocolError as error:
                    log(f"[{self.name}] not a protocol message on stdout: {error}")
        except (ValueError, OSError) as error:  # a line over MAX_LINE_BYTES
            log(f"[{self.name}] its stdout cannot be read ({error}); stopping it")
            self.kill()
        self.messages.put_nowait(None)

    async def _readlog(self) -> None:
        while line := await self.process.stderr.readline():
            text = line.decode("utf-8", "replace").rstrip()
            self.tail.append(text)
            log(f"[{self.name}] {text}")


class Slot:
    """One device's worker and the loop that feeds it the server's jobs (`serve`)."""

    def __init__(self, index: int, environment: dict[str, str], root: Path, hang_timeout_s: float,
                 on_end: Callable[[Job, str], None]):  # fmt: skip
        self.index, self.environment, self.root = index, environment, root
        self.hang_timeout_s = hang_timeout_s
        self.on_end = on_end
        self.name = f"worker {index}"
        self.worker: WorkerProcess | None = None
        self.hello: dict | None = None
        self.job: Job | None = None
        self.stopping = False
        self._cancel_deadline: float | None = None
        self._previews = 0
        self._sending: set[asyncio.Task] = set()
        self._broken = False
        """Set when the worker was killed or died: a fresh one starts before the next job."""

    async def start(self) -> dict:
        """A fresh worker (the old one killed); its hello. Raises `WorkerFailed`."""
        if self.worker is not None:
            self.worker.kill()
            await self.worker.stop(0.0)
        self.worker, self._broken = WorkerProcess(self.name, self.environment, self.root), False
        try:
            self.hello = await self.worker.start()
        except WorkerFailed:
            self.worker = None
            raise
        log(f"{self.name} ready (pid {self.worker.pid}, torch {self.hello.get('torch')}, "
             f"{self.hello.get('cuda') or 'no CUDA GPU'})")  # fmt: skip
        return self.hello

    async def serve(self, jobs: asyncio.Queue[Job]) -> None:
        """Run the queue's jobs one at a time, forever (until cancelled)."""
        while not self.stopping:
            job = await jobs.get()
            if job.dropped:
                continue
            try:
                outcome = await self.run(job)
            except Exception as error:  # a bug here: that job fails, the slot serves on
                log(f"{self.name}: internal error in job {job.internal!r}:\n{traceback.format_exc()}")
                job.deliver(protocol.error(job.id, f"Internal error of the remote engine: {type(error).__name__}: "
                                                   f"{error} (traceback in the server's log)"))  # fmt: skip
                outcome = "error"
                if self.worker is not None:
                    self.worker.kill()
                    self._broken = True
            self.on_end(job, outcome)
            if not self.stopping and (self._broken or self.worker is None or not self.worker.alive()):
                await self._restart()

    async def run(self, job: Job) -> str:
        """Run one job to its end; returns its final message's type (result, error, cancelled)."""
        self.job, self._cancel_deadline, self._previews = job, None, 0
        job.state = "running"
        log(f"{job.owner}: job {job.id!r} ({job.kind}) started on {self.name}")
        started = time.monotonic()
        try:
            end = await self._run(job)
        finally:
            self.job, self._cancel_deadline = None, None
            job.seconds = time.monotonic() - started
        job.deliver(end)
        return end["type"]

    def cancel(self, job: Job) -> None:
        """Ask the worker to stop ``job``; it is killed (and restarted) if it has not after `CANCEL_GRACE_S`."""
        if self.job is job and self._cancel_deadline is None and self.worker is not None:
            self._cancel_deadline = time.monotonic() + CANCEL_GRACE_S
            sending = asyncio.create_task(self.worker.send({"type": "cancel", "job": job.internal}))
            self._sending.add(sending)  # kept until done (the loop holds tasks only weakly)
            sending.add_done_callback(self._sending.discard)

    async def stop(self) -> None:
        self.stopping = True
        if self.worker is not None:
            await self.worker.stop()

    async def _restart(self) -> bool:
        try:
            await self.start()
            return True
        except WorkerFailed as error:
            log(f"{self.name} could not be restarted: {error}")
            return False

    async def _run(self, job: Job) -> dict:
        if (self.worker is None or not self.worker.drain()) and not await self._restart():
            return protocol.error(job.id, f"The remote engine's {self.name} could not be started; see the server's log")
        worker = self.worker
        await worker.send({"type": "job", "protocol": protocol.PROTOCOL_VERSION, "job": job.internal,
                           "kind": job.kind, "dir": str(job.folder), "params": job.params})  # fmt: skip
        last = time.monotonic()
        while True:
            now = time.monotonic()
            if self._cancel_deadline is not None and now > self._cancel_deadline:
                worker.kill()
                self._broken = True
                return protocol.cancelled(job.id, f"Cancelled the {job.kind} job (its engine worker was stopped: "
                                                  f"it did not stop within {CANCEL_GRACE_S:.0f} s)")  # fmt: skip
            if now - last > self.hang_timeout_s:
                worker.kill()
                self._broken = True
                return protocol.error(
                    job.id,
                    f"The remote engine's worker stopped responding (no message for {self.hang_timeout_s:.0f} s) "
                    f"while running the {job.kind} job, so the server stopped it and starts a fresh one. Try again",
                )
            try:
                message = await worker.next(1.0)
            except TimeoutError:
                continue
            if message is None:
                self._broken = True
                code = describe_exit(await worker.exit_code())
                return protocol.error(
                    job.id,
                    f"The remote engine's worker ended unexpectedly ({code}) while running the {job.kind} job; the "
                    f"server starts a fresh one for the next job{worker.log_lines()}",
                )
            last = time.monotonic()
            if message.get("job") != job.internal:
                if message.get("type") == "error":
                    log(f"{self.name} said: {message.get('message')}")
                continue
            kind = message.get("type")
            if kind == "progress":
                await self._progress(job, message)
            elif kind == "result":
                return await self._result(job, message)
            elif kind in ("error", "cancelled"):
                return {**message, "job": job.id}

    async def _progress(self, job: Job, message: dict) -> None:
        number = message.get("preview")
        if isinstance(number, int) and number > self._previews:
            data = await _read_regular(job.folder / protocol.PREVIEW_FILENAME)
            if data is not None:
                job.deliver(OutFile(job.id, PREVIEW_ROLE, protocol.PREVIEW_FILENAME, data))
                self._previews = number
        message = {key: value for key, value in message.items() if key != "preview"}
        job.deliver({**message, "job": job.id, **({"preview": self._previews} if self._previews else {})})

    async def _result(self, job: Job, message: dict) -> dict:
        files = message.get("files") or {}
        named = [(OUTPUTS_ROLE, message.get("outputs"))]
        if isinstance(files, dict):
            named += [(FILE_ROLE_PREFIX + str(role), name) for role, name in files.items()]
        out = []
        for role, name in named:
            data = await _read_regular(job.folder / name) if is_plain_name(name) and download_role_ok(role) else None
            if data is None:
                return protocol.error(
                    job.id, f"The remote engine's worker reported its {role} file as {name!r}, which is not a file it "
                    "wrote in its job folder; see the server's log",
                )  # fmt: skip
            out.append(OutFile(job.id, role, name, data))
        for file in out:
            job.deliver(file)
        return {**message, "job": job.id}


async def _read_regular(path: Path) -> bytes | None:
    """The bytes of a regular file (not a link), None otherwise."""

    def read() -> bytes | None:
        try:
            if not stat.S_ISREG(path.lstat().st_mode):
                return None
            return path.read_bytes()
        except OSError:
            return None

    return await asyncio.to_thread(read)


def worker_environment(index: int, count: int) -> dict[str, str]:
    """The environment of slot ``index`` of ``count``: the engine importable; one GPU each when there are several."""
    engine_root = str(Path(__file__).resolve().parents[2])
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [engine_root, environment.get("PYTHONPATH")]))
    if count > 1:  # the index-th of the devices this process may use (all, or those CUDA_VISIBLE_DEVICES lists)
        visible = [item for item in environment.get("CUDA_VISIBLE_DEVICES", "").split(",") if item.strip()]
        environment["CUDA_VISIBLE_DEVICES"] = visible[index] if index < len(visible) else str(index)
    return environment


def log(text: str) -> None:
    """One line of the server's log (stderr), with the time."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", file=sys.stderr, flush=True)
