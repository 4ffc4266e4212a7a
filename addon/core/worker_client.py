"""Client of the engine worker, speaking the protocol documented in the engine's ``engine/protocol.py``.

An `EngineSession` starts one worker process, runs a list of jobs on it in order (none: it only checks the
handshake), and is polled from Blender's main thread: threads read the worker's stdout and stderr into queues, so
`EngineSession.poll` never blocks. The session notices a worker that exits (crashed, killed) or falls silent (no
heartbeat for ``hang_timeout_s``, never less than `MIN_HANG_TIMEOUT_S`), kills the worker when a cancel is not
honoured within `CANCEL_GRACE_S`, and deletes its job directory on `close`. Job directories carry a marker file
(`JOB_DIR_MARKER`): stale-job cleanup removes only directories with it, never one the add-on did not make.

The process and its reader threads are a `Worker`, which can outlive its session: given a
`warm_worker.WarmWorker` and a keep-warm time, a session that succeeded parks its worker there on `close`, and the
next session with an equal `WorkerLaunch` takes it instead of starting one (a parked worker has sent its hello
already, so that session goes straight to RUNNING). Job ids carry the session's number, unique in this process, so a
late message about an earlier session's job is never taken for the current one's.
"""

from __future__ import annotations

import collections
import enum
import itertools
import json
import os
import queue
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .errors import EngineError
from .folders import CHOOSE_CACHE, make_folder, reason
from .job_files import INPUTS_FILENAME, read_npz, write_npz

if TYPE_CHECKING:
    from .warm_worker import WarmWorker

PROTOCOL_VERSION = 2
"""The protocol this add-on speaks; a worker announcing another one in its hello is refused. Version 2: the params
of each job are those of the engine's job specs (built in `addon.core.params`)."""
CANCEL_GRACE_S = 3.0
"""How long a cancelled worker gets to stop by itself before it is killed."""
STDERR_TAIL_LINES = 20
STALE_JOB_DIR_AGE_S = 24 * 3600.0
"""Job directories older than this are left over from a Blender that died mid-job, and are deleted (only those
marked by `JOB_DIR_MARKER`)."""
JOB_DIR_MARKER = ".neural_sdf_job"
"""A file the session writes into each job directory it makes, right after making it; its content is
`JOB_DIR_MARKER_TEXT`."""
JOB_DIR_MARKER_TEXT = "A job folder of the Neural SDF add-on: deleted when its job ends, or a day later.\n"
MIN_HANG_TIMEOUT_S = 30.0
"""The shortest hang timeout a session uses, whatever the preferences hold (an old .blend or preferences file may
hold 2 s, the lower limit of earlier releases). A healthy worker sends a heartbeat every second, yet one was seen
silent for 8.8 s while it prepared the samples of a 1.3M-face mesh (a C call holding Python's lock); 30 s is well
above that and still stops a truly hung worker soon."""
LOG_PREFIX = "[neural_sdf engine] "
PREVIEW_FILENAME = "preview.npz"
"""The file in a job's folder that holds the latest preview surface (the engine's ``protocol.PREVIEW_FILENAME``)."""
REMOTE_RELAY_MODULE = "engine.remote.relay"
"""The module a `WorkerLaunch` runs for a remote engine: the same protocol on stdin/stdout, relayed to the server."""
TRAINING_STAGES = ("fit", "evolve", "morph")
"""Progress stages that train a network: their steps are optimizer steps, prepared by sampling before step 1
(the engine's ``protocol.TRAINING_STAGES``)."""


@dataclass(frozen=True)
class JobRequest:
    """One job for the worker: its kind and parameters (see the protocol) and its input arrays."""

    kind: str
    params: dict
    inputs: dict[str, np.ndarray]
    label: str
    """What the job does, for progress and messages, e.g. "fitting 'Sphere'"."""


@dataclass(frozen=True)
class JobResult:
    request: JobRequest
    outputs: dict[str, np.ndarray]
    files: dict[str, Path]
    """Files the job wrote (e.g. the model), inside the job directory: move them out before `EngineSession.close`."""
    summary: dict


@dataclass(frozen=True)
class Progress:
    stage: str
    step: int
    total: int
    loss: float | None
    eta_s: float | None
    preview: int | None = None
    """Set when the worker has written a new preview of the surface it is training (the protocol's ``preview``
    counter); `EngineSession.preview_file` names the file."""

    @property
    def fraction(self) -> float:
        return min(max(self.step / self.total, 0.0), 1.0) if self.total > 0 else 0.0


class SessionState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class WorkerLaunch:
    """How to start a worker: the Python interpreter, the folder that holds the ``engine`` package, and the module
    that speaks the protocol on stdin/stdout: the local worker, or the relay to a remote engine server
    (`REMOTE_RELAY_MODULE`, which takes the server's address and token from ``extra_env``)."""

    python: str
    engine_root: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    module: str = "engine.worker"

    def command(self) -> list[str]:
        return [self.python, "-m", self.module]

    def environment(self) -> dict[str, str]:
        env = {**os.environ, **self.extra_env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.engine_root), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        # Blender may run with its own PYTHONHOME; another interpreter must find its own standard library.
        env.pop("PYTHONHOME", None)
        return env


class Worker:
    """One worker process and the threads that read it: protocol messages from its stdout into `messages` (None
    once stdout has ended), log lines from its stderr into `stderr_tail` and Blender's console. `activity` is set
    whenever a message arrives. Used from one thread (besides its readers)."""

    def __init__(self, launch: WorkerLaunch, cwd: Path):
        """Start the worker in ``cwd`` (a folder no session deletes: the jobs folder); raises `OSError` when the
        Python cannot be run."""
        self.launch = launch
        self.hello: dict | None = None
        """The worker's hello once a session has received it (a reused worker sends none again)."""
        self.messages: queue.Queue[dict | None] = queue.Queue()
        self.activity = threading.Event()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.process = subprocess.Popen(
            launch.command(),
            cwd=cwd,
            env=launch.environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        self._readers = [
            threading.Thread(target=self._read_messages, name="engine-stdout", daemon=True),
            threading.Thread(target=self._read_log, name="engine-stderr", daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def healthy(self) -> bool:
        """Whether the process runs, its stdout is still read and its input still open (it can take jobs)."""
        return self.process.poll() is None and self._readers[0].is_alive() and not self.process.stdin.closed

    def drain(self) -> bool:
        """Drop the messages that arrived while no session listened (heartbeats) and the old log lines; returns
        whether the worker is still `healthy` (False once its stdout has ended)."""
        while True:
            try:
                message = self.messages.get_nowait()
            except queue.Empty:
                break
            if message is None:
                return False
        self.activity.clear()
        self.stderr_tail.clear()
        return self.healthy()

    def send(self, message: dict) -> None:
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (OSError, ValueError):
            pass  # the worker is gone; the stdout reader reports how it ended

    def close_input(self) -> None:
        """End the worker's input: it cancels what it does and exits."""
        try:
            self.process.stdin.close()
        except OSError:
            pass

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()

    def join_readers(self, timeout_s: float) -> None:
        for reader in self._readers:
            reader.join(timeout=timeout_s)

    def stop(self, grace_s: float = 2.0) -> None:
        """End the worker's input, give it ``grace_s`` to exit, kill it if it has not, and close its pipes."""
        if self.process.poll() is None:
            self.close_input()
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process.wait()
        self.join_readers(2.0)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None and not stream.closed:
                try:
                    stream.close()
                except OSError:
                    pass

    def _read_messages(self) -> None:
        for line in self.process.stdout:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                message = None
            if isinstance(message, dict):
                self.messages.put(message)
                self.activity.set()
            elif line.strip():
                self.stderr_tail.append(f"(not a protocol message on stdout) {line.rstrip()}")
        self.messages.put(None)
        self.activity.set()

    def _read_log(self) -> None:
        for line in self.process.stderr:
            self.stderr_tail.append(line.rstrip())
            sys.stderr.write(LOG_PREFIX + line)


_session_numbers = itertools.count(1)
"""Numbers the sessions of this process: each job id carries its session's."""


class EngineSession:
    """A worker process running ``requests`` in order; poll it from one thread (Blender's main thread).

    With ``warm`` and ``keep_warm_s`` > 0, `start` takes the worker parked in ``warm`` when its launch is equal (if
    ``reuse``; Check Engine starts a fresh one, as it checks the start), and `close` parks the worker there for
    ``keep_warm_s`` seconds after a SUCCEEDED session; any other end stops it as without ``warm``."""

    def __init__(
        self,
        launch: WorkerLaunch,
        requests: Sequence[JobRequest],
        jobs_dir: Path,
        *,
        hang_timeout_s: float,
        warm: WarmWorker | None = None,
        keep_warm_s: float = 0.0,
        reuse: bool = True,
    ):
        self.launch = launch
        self.requests = list(requests)
        self.jobs_dir = Path(jobs_dir)
        self.hang_timeout_s = max(float(hang_timeout_s), MIN_HANG_TIMEOUT_S)
        self.state = SessionState.STARTING
        self.hello: dict | None = None
        self.progress: Progress | None = None
        self.job_index = 0
        self.results: list[JobResult] = []
        self.message = ""
        """Why the session failed or was cancelled, for the user."""
        self.directory: Path | None = None
        self.worker: Worker | None = None
        self.reused = False
        """Whether `start` took a warm worker instead of starting one."""
        self.number = next(_session_numbers)
        self.warm = warm
        self.keep_warm_s = float(keep_warm_s) if warm is not None else 0.0
        self.reuse = reuse
        self._closed = False
        self._last_message_at = 0.0
        self._cancel_requested_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.state in (SessionState.SUCCEEDED, SessionState.FAILED, SessionState.CANCELLED)

    @property
    def label(self) -> str:
        """What the session is doing now, for messages: the current job's label."""
        return self.requests[self.job_index].label if self.job_index < len(self.requests) else "checking the engine"

    @property
    def process(self) -> subprocess.Popen | None:
        return self.worker.process if self.worker is not None else None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        """Write the jobs' inputs and start the worker, or take the warm one (then the first job is sent at once);
        raises `EngineError` when it cannot be started (the jobs folder cannot be written, the Python cannot be
        run)."""
        make_folder(self.jobs_dir, "jobs folder")
        remove_stale_job_dirs(self.jobs_dir)
        try:
            self.directory = Path(tempfile.mkdtemp(prefix="job-", dir=self.jobs_dir))
            (self.directory / JOB_DIR_MARKER).write_text(JOB_DIR_MARKER_TEXT, encoding="utf-8")
            for index, request in enumerate(self.requests):
                job_dir = self._job_dir(index)
                job_dir.mkdir()
                write_npz(job_dir / INPUTS_FILENAME, request.inputs)
        except OSError as error:
            self.close()
            raise EngineError(
                f"The job files could not be written in {self.jobs_dir} ({reason(error)}): {CHOOSE_CACHE}"
            ) from error
        self._last_message_at = time.monotonic()
        if self.warm is not None and self.reuse:
            self.worker = self.warm.take(self.launch)
        if self.worker is not None:
            self.reused = True
            self.hello = self.worker.hello
            self.state = SessionState.RUNNING
            self._next_job()
            return
        try:
            # Not in the session's folder, which close() deletes while the worker may live on.
            self.worker = Worker(self.launch, self.jobs_dir)
        except OSError as error:
            self.close()
            raise EngineError(
                f"The engine could not be started with Python '{self.launch.python}' ({error.strerror or error}): "
                "choose another Python in the add-on preferences, or leave it empty for the automatic choice"
            ) from error

    def poll(self) -> None:
        """Handle what the worker said since the last call and check that it is alive; never blocks."""
        if self.finished or self.worker is None:
            return
        self.worker.activity.clear()
        while not self.finished:
            try:
                message = self.worker.messages.get_nowait()
            except queue.Empty:
                break
            if message is None:
                self._worker_exited()
                return
            self._last_message_at = time.monotonic()
            try:
                self._handle(message)
            except EngineError as error:
                self._fail(str(error))
        if self.finished:
            return
        now = time.monotonic()
        if self._cancel_requested_at is not None and now - self._cancel_requested_at > CANCEL_GRACE_S:
            self._kill()
            self._end(SessionState.CANCELLED, self._cancel_message())
        elif now - self._last_message_at > self.hang_timeout_s:
            self._fail(
                f"The engine stopped responding (no message for {self.hang_timeout_s:.0f} s) while "
                f"{self.label}, so it was stopped. Try again; if it happens again, use Check engine in the "
                "add-on preferences or raise the hang timeout there"
            )

    def wait(self, timeout_s: float) -> None:
        """Block until the worker says something or ``timeout_s`` passes (for scripts, not the UI)."""
        if self.worker is not None and not self.finished:
            self.worker.activity.wait(timeout_s)

    def cancel(self) -> None:
        """Ask the worker to stop the current job; it is killed if it has not stopped after `CANCEL_GRACE_S`."""
        if self.finished or self._cancel_requested_at is not None:
            return
        self._cancel_requested_at = time.monotonic()
        if self.state is SessionState.STARTING:
            self._kill()
            self._end(SessionState.CANCELLED, self._cancel_message())
        else:
            self._send({"type": "cancel", "job": self._job_id(self.job_index)})

    def close(self) -> None:
        """Stop the worker if it still runs, or park it warm after a SUCCEEDED session (see the class), and delete
        the job directory (move kept files out first). A second call does nothing more."""
        if not self.finished:
            self._end(SessionState.CANCELLED, self._cancel_message())
        if self.worker is not None and not self._closed:
            kept = (
                self.state is SessionState.SUCCEEDED
                and self.warm is not None
                and self.warm.park(self.worker, self.launch, self.keep_warm_s)
            )
            if not kept:
                self.worker.stop()
        self._closed = True
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def preview_file(self) -> Path:
        """The current job's preview file (the protocol's ``PREVIEW_FILENAME``), checked as every file the worker
        names is; raises `EngineError` when it is missing or not a regular file."""
        return job_file(self._job_dir(self.job_index), PREVIEW_FILENAME, "preview")

    def stderr_tail(self) -> list[str]:
        return list(self.worker.stderr_tail) if self.worker is not None else []

    def _handle(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "hello":
            if message.get("protocol") != PROTOCOL_VERSION:
                self._fail(
                    f"The engine in {self.launch.engine_root} speaks protocol {message.get('protocol')}, this add-on "
                    f"speaks {PROTOCOL_VERSION}: reinstall the extension so that both come from one release"
                )
                return
            self.hello = self.worker.hello = message
            self.state = SessionState.RUNNING
            self._next_job()
        elif kind == "error" and message.get("job") in (None, self._job_id(self.job_index)):
            self._fail(message.get("message") or "The engine failed without saying why (see the system console)")
        elif message.get("job") != self._job_id(self.job_index):
            return  # a late message about a job already ended, or a heartbeat
        elif kind == "progress":
            self.progress = Progress(
                str(message.get("stage")),
                int(message.get("step", 0)),
                int(message.get("total", 0)),
                message.get("loss"),
                message.get("eta"),
                message.get("preview"),
            )
        elif kind == "result":
            self.results.append(self._read_result(message))
            self.job_index += 1
            self.progress = None
            self._next_job()
        elif kind == "cancelled":
            self._kill()
            self._end(SessionState.CANCELLED, self._cancel_message())

    def _read_result(self, message: dict) -> JobResult:
        job_dir = self._job_dir(self.job_index)
        outputs = read_npz(job_file(job_dir, message.get("outputs"), "outputs"))
        reported = message.get("files") or {}
        if not isinstance(reported, dict):
            raise EngineError(
                f"The engine reported its files as {type(reported).__name__}, not a mapping: reinstall the extension "
                "so that the add-on and the engine come from one release"
            )
        files = {str(role): job_file(job_dir, name, str(role)) for role, name in reported.items()}
        return JobResult(self.requests[self.job_index], outputs, files, message.get("summary") or {})

    def _worker_exited(self) -> None:
        try:
            code = self.process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self._kill()
            code = self.process.wait()
        if self._cancel_requested_at is not None:
            self._end(SessionState.CANCELLED, self._cancel_message())
            return
        self.worker.join_readers(1.0)
        log = "; ".join(line for line in self.stderr_tail()[-3:] if line.strip())
        where = "while starting" if self.hello is None else f"while {self.label}"
        self._end(
            SessionState.FAILED,
            f"The engine process ended unexpectedly ({describe_exit(code)}) {where}"
            + (f". Last log lines: {log}" if log else "; see the system console"),
        )

    def _fail(self, message: str) -> None:
        self._kill()
        self._end(SessionState.FAILED, message)

    def _end(self, state: SessionState, message: str) -> None:
        self.state = state
        self.message = message
        if self.worker is not None:
            self.worker.activity.set()

    def _cancel_message(self) -> str:
        progress = self.progress
        if progress is not None and progress.stage in TRAINING_STAGES and progress.step > 0:
            return f"Cancelled {self.label} at step {progress.step} of {progress.total}"
        return f"Cancelled {self.label}"

    def _next_job(self) -> None:
        index = self.job_index
        if index == len(self.requests):
            self._end(SessionState.SUCCEEDED, "")
            if self.keep_warm_s <= 0:
                self._close_input()  # it exits now; a worker that may be kept warm waits for close()
            return
        request = self.requests[index]
        self._send(
            {
                "type": "job",
                "protocol": PROTOCOL_VERSION,
                "job": self._job_id(index),
                "kind": request.kind,
                "dir": str(self._job_dir(index)),
                "params": request.params,
            }
        )

    def _send(self, message: dict) -> None:
        self.worker.send(message)

    def _close_input(self) -> None:
        self.worker.close_input()

    def _kill(self) -> None:
        if self.worker is not None:
            self.worker.kill()

    def _job_dir(self, index: int) -> Path:
        return self.directory / f"job-{index}"

    def _job_id(self, index: int) -> str:
        """Unique among the sessions of this process (a warm worker serves several)."""
        return f"s{self.number}-job-{index}"


def job_file(job_dir: Path, name, role: str) -> Path:
    """The file a result message names for ``role``, checked: a plain file name (no folder, no ``..``, not absolute)
    of a regular file in ``job_dir``, not a link; raises `EngineError` otherwise. The worker only ever names files it
    wrote into the job directory, so anything else is refused, never followed."""
    text = str(name) if isinstance(name, str) else repr(name)
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        raise EngineError(
            f"The engine reported its {role} file as {text}, which is not a file name inside the job folder: "
            "it was refused. Reinstall the extension so that the add-on and the engine come from one release"
        )
    path = job_dir / name
    try:
        mode = path.lstat().st_mode
    except OSError:
        mode = None
    if mode is None or not stat.S_ISREG(mode):
        what = "does not exist" if mode is None else "is a link or not a regular file, and was refused"
        raise EngineError(f"The engine's {role} file {path} {what}; see the system console")
    return path


def remove_stale_job_dirs(jobs_dir: Path) -> None:
    """Delete the job directories a Blender that died mid-job left behind: ``job-*`` directories (not links)
    carrying the add-on's marker, older than `STALE_JOB_DIR_AGE_S`. Anything else in ``jobs_dir`` is left alone."""
    cutoff = time.time() - STALE_JOB_DIR_AGE_S
    for directory in jobs_dir.glob("job-*"):
        try:
            info = directory.lstat()
            if stat.S_ISDIR(info.st_mode) and info.st_mtime < cutoff and is_marked_job_dir(directory):
                shutil.rmtree(directory, ignore_errors=True)
        except OSError:
            pass  # removed meanwhile by another Blender


def is_marked_job_dir(directory: Path) -> bool:
    """Whether ``directory`` holds the marker a session writes into each job directory it makes (a regular file,
    not a link, with the marker's exact text)."""
    marker = directory / JOB_DIR_MARKER
    try:
        if not stat.S_ISREG(marker.lstat().st_mode):
            return False
        with marker.open("rb") as file:
            return file.read(len(JOB_DIR_MARKER_TEXT) + 1) == JOB_DIR_MARKER_TEXT.encode("utf-8")
    except OSError:
        return False


def describe_exit(code: int) -> str:
    """A process's exit status in words: "exit code 3", "killed by SIGKILL"."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def check_engine(launch: WorkerLaunch, jobs_dir: Path, *, hang_timeout_s: float) -> dict:
    """Start a worker, wait for its hello and stop it; returns the hello, or raises `EngineError` saying why not."""
    session = EngineSession(launch, [], jobs_dir, hang_timeout_s=hang_timeout_s)
    session.start()
    try:
        while not session.finished:
            session.wait(0.25)
            session.poll()
    finally:
        session.close()
    if session.state is not SessionState.SUCCEEDED:
        raise EngineError(session.message)
    return session.hello
