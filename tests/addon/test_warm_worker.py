"""The warm worker (issue 14): a worker kept after a successful session serves the next session with an equal
launch, is never kept after a cancel or failure, is replaced when it died, and is stopped when its idle time is over
or another launch is asked for. Plain Python, against fake workers and once against the real engine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from addon.core import engine_env, job_files
from addon.core.warm_worker import WarmWorker
from addon.core.worker_client import EngineSession, JobRequest, SessionState, WorkerLaunch

from .test_core import ONE_THREAD, fake_engine, run_until_finished, sphere_fit_request  # noqa: F401 (fixture)

SERVING_WORKER = """
import numpy as np
time.sleep(0.5)  # a start-up, as the real worker's torch import
hello()
previous = None
for line in sys.stdin:
    message = json.loads(line)
    if message["type"] == "cancel":
        send({"type": "cancelled", "job": message["job"], "message": "stopped"})
        continue
    job, params = message["job"], message["params"]
    if previous is not None:  # late messages about the previous session's job, which the session must ignore
        send({"type": "error", "job": previous, "message": "a late error"})
        send({"type": "result", "job": previous, "outputs": "outputs.npz", "files": {}, "summary": {"late": True}})
    previous = job
    if params.get("fail"):
        send({"type": "error", "job": job, "message": "the job failed"})
    elif not params.get("wait"):  # a waiting job runs until it is cancelled
        np.savez(os.path.join(message["dir"], "outputs.npz"), value=np.array([params["value"]]))
        send({"type": "result", "job": job, "outputs": "outputs.npz", "files": {}, "summary": {"pid": os.getpid()}})
"""


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def job(**params) -> JobRequest:
    return JobRequest("extract", params, {}, "testing")


def run(warm, launch, tmp_path, requests, keep_s=60.0, reuse=True) -> EngineSession:
    """A session run to its end and closed."""
    session = EngineSession(
        launch, requests, tmp_path / "jobs", hang_timeout_s=30.0, warm=warm, keep_warm_s=keep_s, reuse=reuse
    )
    session.start()
    run_until_finished(session)
    session.close()
    return session


def gone(pid: int) -> bool:
    """Whether the process has exited (a zombie that nobody reaped counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in ("Z", "X")
    except OSError:
        return True


def wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def serving(fake_engine) -> WorkerLaunch:
    return fake_engine(SERVING_WORKER)


@pytest.fixture
def warm():
    warm = WarmWorker(clock=Clock())
    yield warm
    warm.stop()


def test_the_next_session_reuses_the_worker_without_waiting_for_a_hello(serving, warm, tmp_path):
    first = run(warm, serving, tmp_path, [job(value=1)])
    assert first.state is SessionState.SUCCEEDED, first.message
    assert warm.worker is first.worker and first.process.poll() is None and not first.directory.exists()
    # The worker's folder is the jobs folder, not the session's (deleted on close).
    assert Path(os.readlink(f"/proc/{first.pid}/cwd")) == (tmp_path / "jobs").resolve()
    second = EngineSession(serving, [job(value=2), job(value=3)], tmp_path / "jobs", hang_timeout_s=30.0, warm=warm,
                           keep_warm_s=60.0)  # fmt: skip
    second.start()
    assert second.reused and second.state is SessionState.RUNNING and second.hello == first.hello
    assert second.pid == first.pid and warm.worker is None
    run_until_finished(second)
    # The previous session's late error and result (sent when this session's job arrived) were ignored.
    assert second.state is SessionState.SUCCEEDED, second.message
    assert [int(r.outputs["value"][0]) for r in second.results] == [2, 3]
    assert [r.summary for r in second.results] == [{"pid": first.pid}] * 2
    second.close()
    assert warm.worker is second.worker and second.process.poll() is None


def test_a_cancelled_or_failed_session_does_not_keep_its_worker(serving, warm, tmp_path):
    session = EngineSession(serving, [job(wait=True)], tmp_path / "jobs", hang_timeout_s=30.0, warm=warm,
                            keep_warm_s=60.0)  # fmt: skip
    session.start()
    while session.state is SessionState.STARTING:
        session.wait(0.1)
        session.poll()
    session.cancel()
    run_until_finished(session)
    session.close()
    assert session.state is SessionState.CANCELLED and warm.worker is None and session.process.poll() is not None
    failed = run(warm, serving, tmp_path, [job(value=1), job(fail=True)])
    assert failed.state is SessionState.FAILED and failed.message == "the job failed"
    assert warm.worker is None and failed.process.poll() is not None
    # A session closed before it ended is cancelled: not kept either.
    dropped = EngineSession(serving, [job(value=1)], tmp_path / "jobs", hang_timeout_s=30.0, warm=warm,
                            keep_warm_s=60.0)  # fmt: skip
    dropped.start()
    dropped.close()
    assert dropped.state is SessionState.CANCELLED and warm.worker is None and dropped.process.poll() is not None


def test_a_kept_worker_that_died_is_replaced_silently(serving, warm, tmp_path):
    first = run(warm, serving, tmp_path, [job(value=1)])
    os.kill(first.pid, signal.SIGKILL)
    first.process.wait()
    second = run(warm, serving, tmp_path, [job(value=2)])
    assert second.state is SessionState.SUCCEEDED, second.message
    assert not second.reused and second.pid != first.pid and int(second.results[0].outputs["value"][0]) == 2
    assert warm.worker is second.worker


def test_an_idle_worker_is_stopped_when_its_time_is_over(serving, warm, tmp_path):
    clock = warm._clock
    first = run(warm, serving, tmp_path, [job(value=1)], keep_s=10.0)
    clock.now += 9.0
    assert warm.expire() == pytest.approx(1.0) and first.process.poll() is None
    clock.now += 2.0
    assert warm.expire() is None and warm.worker is None and first.process.poll() == 0
    # Without the timer's expire(), the next session stops the expired worker and starts its own.
    second = run(warm, serving, tmp_path, [job(value=2)], keep_s=10.0)
    clock.now += 11.0
    third = run(warm, serving, tmp_path, [job(value=3)], keep_s=10.0)
    assert not third.reused and third.pid != second.pid and second.process.poll() == 0
    assert third.state is SessionState.SUCCEEDED


def test_keep_warm_zero_keeps_nothing(serving, warm, tmp_path):
    session = run(warm, serving, tmp_path, [job(value=1)], keep_s=0.0)
    assert session.state is SessionState.SUCCEEDED and warm.worker is None and session.process.returncode == 0


def test_another_launch_starts_a_new_worker_and_stops_the_kept_one(serving, warm, tmp_path):
    first = run(warm, serving, tmp_path, [job(value=1)])
    other = WorkerLaunch(serving.python, serving.engine_root, {"OMP_NUM_THREADS": "2"})
    second = run(warm, other, tmp_path, [job(value=2)])
    assert not second.reused and second.pid != first.pid and first.process.poll() == 0
    assert second.state is SessionState.SUCCEEDED and warm.worker is second.worker
    # An equal launch (a new but equal object) reuses it.
    third = run(warm, WorkerLaunch(other.python, other.engine_root, dict(other.extra_env)), tmp_path, [job(value=3)])
    assert third.reused and third.pid == second.pid


def test_check_engine_starts_its_own_worker_and_parks_it_for_the_next_job(serving, warm, tmp_path):
    first = run(warm, serving, tmp_path, [job(value=1)])
    check = run(warm, serving, tmp_path, [], reuse=False)
    assert check.state is SessionState.SUCCEEDED and check.hello["engine"] == "fake" and not check.reused
    assert check.pid != first.pid and first.process.poll() == 0 and warm.worker is check.worker
    fit = run(warm, serving, tmp_path, [job(value=2)])
    assert fit.reused and fit.pid == check.pid and fit.state is SessionState.SUCCEEDED


def test_a_kept_worker_does_not_outlive_the_process_that_started_it(serving, tmp_path):
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from addon.core.warm_worker import WarmWorker
        from addon.core.worker_client import EngineSession, JobRequest, WorkerLaunch
        from pathlib import Path
        warm = WarmWorker()
        launch = WorkerLaunch({serving.python!r}, Path({str(serving.engine_root)!r}))
        session = EngineSession(launch, [JobRequest("extract", {{"value": 1}}, {{}}, "x")], Path({str(tmp_path)!r}),
                                hang_timeout_s=30.0, warm=warm, keep_warm_s=300.0)
        session.start()
        while not session.finished:
            session.wait(0.1)
            session.poll()
        session.close()
        assert warm.worker is not None
        print(session.pid, flush=True)
        if sys.argv[1] == "crash":
            os._exit(0)  # no atexit: only the closed pipe tells the worker
        """
    )
    for how in ("exit", "crash"):
        ran = subprocess.run([sys.executable, "-c", script, how], capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        pid = int(ran.stdout.split()[-1])
        wait_until(lambda: gone(pid))


def test_the_real_engine_serves_a_second_session_at_once(tmp_path):
    """The second fit runs on the first one's worker, goes straight to RUNNING and returns its own result."""
    warm = WarmWorker()
    launch = WorkerLaunch(sys.executable, engine_env.engine_root(), ONE_THREAD)
    try:
        first = run(warm, launch, tmp_path, [sphere_fit_request(10, resolution=16)])
        assert first.state is SessionState.SUCCEEDED, first.message
        second = EngineSession(launch, [sphere_fit_request(20, resolution=16)], tmp_path / "jobs",
                               hang_timeout_s=60.0, warm=warm, keep_warm_s=60.0)  # fmt: skip
        second.start()
        assert second.reused and second.state is SessionState.RUNNING and second.pid == first.pid
        run_until_finished(second)
        assert second.state is SessionState.SUCCEEDED, second.message
        (result,) = second.results
        vertices, faces = job_files.mesh_arrays(result.outputs)
        assert result.summary["steps"] == 20 and len(faces) > 50 and np.isfinite(vertices).all()
        assert result.files["model"].is_file()
        second.close()
        assert warm.worker is second.worker
    finally:
        warm.stop()
    assert second.process.poll() is not None
