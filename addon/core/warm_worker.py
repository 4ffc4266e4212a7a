"""One engine worker kept warm between sessions, so that the next job skips the worker's start-up (its torch
import, about 10 s) and starts at once.

A `WarmWorker` holds at most one idle `worker_client.Worker`: a session parks its worker there after it SUCCEEDED
(never after a cancel, a failure, a hang or a kill: those workers are killed as before), and the next session whose
`WorkerLaunch` is equal (same Python, engine root and extra environment, which holds the thread counts) takes it;
a session with another launch stops it and starts its own. A parked worker that has died, or whose stdout has
ended, is dropped when a session asks for it and that session starts a fresh one: the user never sees it.

The idle time is enforced without any timer being needed: `take` stops an expired worker instead of handing it
out. The add-on also calls `expire` from a Blender timer, so that an idle worker does not hold its memory (about
400 MB) past its time, and `stop` when it is disabled. The worker exits when its input ends, so it never outlives
the process that started it; `stop` also runs at exit. Plain Python, no bpy; used from one thread.
"""

from __future__ import annotations

import atexit
import time
from typing import Callable

from .worker_client import Worker, WorkerLaunch


class WarmWorker:
    """At most one idle worker, with the launch it was started with and the time it may idle until."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._worker: Worker | None = None
        self._launch: WorkerLaunch | None = None
        self._expires_at = 0.0
        atexit.register(self.stop)

    @property
    def worker(self) -> Worker | None:
        """The parked worker (None: none)."""
        return self._worker

    def park(self, worker: Worker, launch: WorkerLaunch, keep_s: float) -> bool:
        """Keep ``worker`` for ``keep_s`` seconds of idleness, stopping the one parked before; returns False (and
        keeps nothing) when ``keep_s`` is not positive or the worker is not `Worker.healthy` (the caller stops it)."""
        if keep_s <= 0 or not worker.healthy():
            return False
        if self._worker is not None and self._worker is not worker:
            self._worker.stop()
        self._worker, self._launch, self._expires_at = worker, launch, self._clock() + keep_s
        return True

    def take(self, launch: WorkerLaunch) -> Worker | None:
        """The parked worker for a session with ``launch``, no longer parked; None (after stopping the parked one)
        when it has expired, died, or was started with another launch."""
        self.expire()
        worker, parked_launch = self._worker, self._launch
        self._worker, self._launch = None, None
        if worker is None:
            return None
        if parked_launch == launch and worker.drain():
            return worker
        worker.stop()
        return None

    def expire(self) -> float | None:
        """Stop the parked worker once its idle time is over (or when it has died); returns the seconds it has left,
        None when none is parked (any more)."""
        if self._worker is None:
            return None
        left = self._expires_at - self._clock()
        if left <= 0 or not self._worker.healthy():
            self.stop()
            return None
        return left

    def stop(self) -> None:
        """Stop the parked worker, if any (its input ends and it exits; killed if it has not within 2 s)."""
        worker, self._worker, self._launch = self._worker, None, None
        if worker is not None:
            worker.stop()
