"""The engine worker: ``python -m engine.worker`` serves the Blender add-on's jobs over stdin/stdout.

Transport only: the messages of `engine.protocol` (a channel whole lines go out on, an inbox that queues jobs and
marks cancels, a heartbeat, a guard that keeps stray prints off the message stream) and the job directory's
``.npz`` files. What a job does is its spec in `engine.jobs`, shared with the command line. Only the standard
library is imported before the worker is running: the heartbeat starts at once, and a Python that lacks the
engine's requirements answers with one message saying so instead of a traceback.
"""

from __future__ import annotations

import os
import platform
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from . import __version__, protocol

EXIT_MISSING_REQUIREMENTS = 3


class JobError(ValueError):
    """A job message the worker cannot run (a bug in the sender, not in the user's input)."""


class Channel:
    """The protocol's output stream: whole lines, from any thread."""

    def __init__(self, stream):
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict) -> None:
        line = protocol.encode(message)
        with self._lock:
            try:
                self._stream.write(line)
                self._stream.flush()
            except OSError:
                # The add-on is gone (closed pipe): nobody is left to serve or to tell.
                os._exit(0)


class Inbox:
    """Reads the add-on's messages on a thread: jobs queue up, cancels mark jobs, end of input cancels everything."""

    def __init__(self, stream, channel: Channel):
        self._stream = stream
        self._channel = channel
        self._jobs: queue.Queue[dict | None] = queue.Queue()
        self._cancelled: set[str] = set()
        self._closed = threading.Event()
        threading.Thread(target=self._read, name="inbox", daemon=True).start()

    def next_job(self) -> dict | None:
        """The next job message, or None once the input has ended."""
        return self._jobs.get()

    def is_cancelled(self, job_id: str) -> bool:
        return self._closed.is_set() or job_id in self._cancelled

    def _read(self) -> None:
        for line in self._stream:
            if not line.strip():
                continue
            try:
                message = protocol.decode(line)
            except protocol.ProtocolError as error:
                self._channel.send(protocol.error(None, f"The engine worker got an invalid message: {error}"))
                continue
            if message["type"] == "job":
                self._jobs.put(message)
            elif message["type"] == "cancel":
                self._cancelled.add(str(message.get("job")))
            else:
                self._channel.send(
                    protocol.error(None, f"The engine worker got an unknown message type {message['type']!r}")
                )
        self._closed.set()
        self._jobs.put(None)


@dataclass
class Job:
    """One job message: its id, kind, directory and params, checked before anything runs."""

    id: str
    kind: str
    dir: Path
    params: dict

    @classmethod
    def from_message(cls, message: dict) -> "Job":
        if message.get("protocol") != protocol.PROTOCOL_VERSION:
            raise JobError(
                f"The add-on speaks protocol {message.get('protocol')}, this engine speaks "
                f"{protocol.PROTOCOL_VERSION}: install the add-on and the engine from the same release"
            )
        job_id, kind = str(message.get("job")), message.get("kind")
        if kind not in protocol.JOB_KINDS:
            raise JobError(f"unknown job kind {kind!r}; expected one of {', '.join(protocol.JOB_KINDS)}")
        directory = Path(str(message.get("dir")))
        if not directory.is_dir():
            raise JobError(f"the job directory {directory} does not exist")
        return cls(job_id, kind, directory, message.get("params"))


def main() -> int:
    channel = Channel(_claim_stdout())
    threading.Thread(target=_heartbeat, args=(channel,), name="heartbeat", daemon=True).start()
    try:
        import numpy
        import torch

        from . import extraction, fit, geometry, jobs  # noqa: F401  (imports every other requirement: checked at start)
    except ImportError as error:
        channel.send(
            protocol.error(
                None,
                f"The engine's Python ({sys.executable}) cannot import {error.name or error}: press 'Set up engine' "
                "in the add-on preferences, or choose a Python that has the engine's requirements",
            )
        )
        return EXIT_MISSING_REQUIREMENTS
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    channel.send(protocol.hello(__version__, platform.python_version(), numpy.__version__, torch.__version__, cuda))
    inbox = Inbox(sys.stdin, channel)
    while (message := inbox.next_job()) is not None:
        channel.send(run_job(message, channel, inbox))
    return 0


class JobReports:
    """One job's progress messages and live previews: each preview replaces the job folder's preview file whole and
    is announced by a progress message (the last one again) with the preview's number, which every later progress
    message of the job repeats (`engine.protocol`)."""

    def __init__(self, channel: Channel, job_id: str, root: Path):
        self.channel, self.job_id, self.root = channel, job_id, root
        self.previews = 0
        self.last: tuple = ("", 0, 0, None, None)

    def progress(self, stage: str, step: int, total: int, loss: float | None, eta: float | None) -> None:
        self.last = (stage, step, total, loss, eta)
        self.channel.send(protocol.progress(self.job_id, *self.last, preview=self.previews or None))

    def preview(self, vertices, faces) -> None:
        import numpy as np

        from .model import replaced_whole

        with replaced_whole(_inside(self.root, protocol.PREVIEW_FILENAME)) as temporary:
            np.savez(temporary, vertices=vertices, faces=faces)
        self.previews += 1
        self.progress(*self.last)


def run_job(message: dict, channel: Channel, inbox: Inbox) -> dict:
    """Run one job message; returns the message that ends it (result, error or cancelled)."""
    from .jobs import JOBS, JobContext
    from .mesh_io import MeshError
    from .training import Cancelled

    job_id, kind = str(message.get("job")), message.get("kind")
    try:
        job = Job.from_message(message)
        spec = JOBS[job.kind].from_params(job.params)
        root = _checked_job_dir(job.dir)
        reports = JobReports(channel, job_id, root)
        context = JobContext(
            output_dir=root,
            report=reports.progress,
            should_cancel=lambda: inbox.is_cancelled(job_id),
            input_name=lambda name: f"Object '{name}'",
            show_preview=reports.preview,
        )
        output = spec.run(_load_inputs(root), context)
        for name in output.files.values():
            _inside(root, name)
        _save_outputs(root, output.arrays)
        return protocol.result(job_id, output.files, output.summary)
    except Cancelled as stop:
        return protocol.cancelled(job_id, str(stop))
    except MemoryError:
        return protocol.error(
            job_id, f"The engine ran out of memory in the {kind} job: lower the resolution or choose a smaller preset"
        )
    except (MeshError, ValueError, FileNotFoundError, RuntimeError) as error:
        # The engine's own messages say what is wrong and what to do (JobError and JobParamError are ValueErrors).
        return protocol.error(job_id, str(error))
    except Exception as error:
        traceback.print_exc()
        return protocol.error(
            job_id,
            f"Internal engine error in the {kind} job: {type(error).__name__}: {error} (traceback in the worker log)",
        )


def _load_inputs(directory: Path) -> dict:
    """The job's input arrays (none when it has no inputs file), loaded without unpickling anything."""
    import numpy as np

    path = directory / protocol.INPUTS_FILENAME
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def _save_outputs(directory: Path, arrays: dict) -> None:
    import numpy as np

    from .model import replaced_whole

    with replaced_whole(_inside(directory, protocol.OUTPUTS_FILENAME)) as temporary:
        np.savez(temporary, **arrays)


JOB_OUTPUT_NAMES = (
    protocol.OUTPUTS_FILENAME, protocol.MODEL_FILENAME, protocol.EVOLUTION_MODEL_FILENAME, protocol.MORPH_MODEL_FILENAME,
    protocol.PREVIEW_FILENAME,
)  # fmt: skip
"""The files a job writes into its folder."""


def _checked_job_dir(directory: Path) -> Path:
    """The job folder, resolved, once no file a job writes there is a link (which a write could go through)."""
    root = directory.resolve()
    for name in JOB_OUTPUT_NAMES:
        _inside(root, name)
    return root


def _inside(root: Path, name: str) -> Path:
    """``root / name``, refused (JobError) when it is a link or resolves outside the job folder ``root``: the worker
    writes only inside the folder the add-on made."""
    path = root / name
    if path.is_symlink() or not path.resolve().is_relative_to(root):
        raise JobError(
            f"the job folder {root} holds {name} as a link or a path that leads outside it; the engine writes only "
            "inside the job folder, so it stops here (remove the link, or let the add-on make a fresh job folder)"
        )
    return path


def _claim_stdout():
    """The protocol's own handle on stdout; fd 1 and sys.stdout then point at stderr, so a stray print (from Python
    or from a C library) lands in the log instead of corrupting the message stream."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "w", encoding="utf-8", newline="\n")


def _heartbeat(channel: Channel) -> None:
    while True:
        time.sleep(protocol.HEARTBEAT_INTERVAL_S)
        channel.send(protocol.alive())


if __name__ == "__main__":
    exit_code = main()
    # Tearing down an interpreter that has loaded torch, scipy and libigl takes 1-2 s here, more on a busy machine,
    # and the add-on kills a worker that has not exited 2 s after its input ended. Nothing is left to clean up
    # (every message went out whole and flushed; the job folders are the add-on's), so the worker leaves at once.
    sys.stderr.flush()
    os._exit(exit_code)
