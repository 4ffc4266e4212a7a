"""Running a batch: each job as one task (`run_job`), one after another in this process or as Ray tasks, its outputs
published into its folder and its entry in the summary.

Where the work and the files are:

- The driver (the ``batch`` process) reads every input file (meshes, and the model file of an evolve job) and
  sends the arrays and bytes with the task; the task runs the job's command (`engine.cli.run_prepared`) into a
  temporary folder of its own machine and returns the files it wrote as bytes; the driver writes them into
  ``OUT/<name>`` (in a staging folder first, published whole, as the command line does). So the output folder and
  the inputs need to be on the driver's machine only: a cluster needs no shared file system.
- A task sets torch's threads to the job's CPUs (``--cpus-per-job``), here as on Ray: the same seed on the same
  kind of machine gives the same bits either way (torch's CPU kernels split their sums by thread).
- Ray workers import the engine from their own Python: every node of a cluster needs the engine and its
  requirements installed (the same version as the driver's; ``pip install "neural-sdf-engine[batch]"``). A task
  that asks for no GPU sees none (Ray empties its ``CUDA_VISIBLE_DEVICES``), so ``--device auto`` trains on its CPUs;
  ``--gpus-per-job 1`` (or 0.5 to share one) gives each job its GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cli import COMMANDS, PreparedCommand, error_line, run_prepared
from ..cli import _publish, _staging_folder
from .jobs import SUMMARY_FILENAME, BatchError, BatchJob, _file_params

RAY_MISSING = "pip install -r requirements-batch.txt (or neural-sdf-engine[batch])"
"""What to do when ``--ray`` is asked for and Ray is not installed."""
RAY_RETRIES = 2
"""Times Ray runs a task again whose worker died (a node lost, the memory monitor); a job that fails is not run
again (its task returns the error)."""


@dataclass
class JobTask:
    """What a task needs to run one job anywhere: the command's arguments and spec, its input arrays and the bytes of
    each file it reads by path (``MODEL_FILE_PARAMS``), read on the driver."""

    kind: str
    args: dict
    """The command's arguments (argparse's) but the command itself; ``output`` is set by the task."""
    spec: object
    inputs: dict[str, np.ndarray]
    files: dict[str, tuple[str, bytes]]
    """Spec field to (its path on the driver, the file's bytes)."""
    threads: int
    """torch threads of the job (its CPUs)."""
    progress: bool
    """Show the command line's progress bar (on stderr)."""


@dataclass
class JobResult:
    """What a task gives back: the job's files or its error, and what it took."""

    status: str
    """ok, error."""
    seconds: float
    cpu_seconds: float
    files: dict[str, bytes] = field(default_factory=dict)
    """Output file name to its bytes."""
    error: str | None = None
    traceback: str | None = None
    """For an error the engine does not expect (a bug): where it happened."""


def run_job(task: JobTask) -> JobResult:
    """Run one job in a temporary folder and return its files (the task of both ways to run a batch).

    Errors the command line reports in one line come back as the error; so do unexpected ones, with their traceback.
    Ctrl-C (and a cancelled Ray task) stops the job, and nothing it wrote is kept.
    """
    import torch

    from ..mesh_io import MeshError

    command = COMMANDS[task.kind]
    threads = torch.get_num_threads()
    torch.set_num_threads(task.threads)
    started, cpu_started = time.perf_counter(), time.process_time()
    work = Path(tempfile.mkdtemp(prefix="neural-sdf-batch-"))
    copies = {}
    try:
        spec = task.spec
        for name, (original, data) in task.files.items():  # the job reads its copy, messages name the original
            copy = work / "inputs" / name / Path(original).name
            copy.parent.mkdir(parents=True)
            copy.write_bytes(data)
            spec, copies[str(copy)] = dataclasses.replace(spec, **{name: str(copy)}), original
        args = argparse.Namespace(**{**task.args, "output": work / "output"}, command=command)
        report = None if task.progress else (lambda *progress: None)
        run_prepared(PreparedCommand(command, args, spec), task.inputs, report=report)
        outputs = {path.name: path.read_bytes() for path in sorted(args.output.iterdir()) if path.is_file()}
        return JobResult("ok", *_took(started, cpu_started), files=outputs)
    except (OSError, MeshError, ValueError, RuntimeError) as error:
        message = error_line(error, command)
        for copy, original in copies.items():
            message = message.replace(copy, original)
        return JobResult("error", *_took(started, cpu_started), error=message)
    except Exception as error:  # noqa: BLE001 - one job's bug must not stop the others
        shown = f"{type(error).__name__}: {error}"
        return JobResult("error", *_took(started, cpu_started), error=shown, traceback=traceback.format_exc())
    finally:
        shutil.rmtree(work, ignore_errors=True)
        torch.set_num_threads(threads)


def _took(started: float, cpu_started: float) -> tuple[float, float]:
    return round(time.perf_counter() - started, 3), round(time.process_time() - cpu_started, 3)


def load_task(job: BatchJob, threads: int, progress: bool) -> JobTask:
    """Read a job's inputs on the driver; raises what reading them raises (a mesh that cannot be used)."""
    prepared = job.prepared
    inputs = prepared.command.read_inputs(prepared.args)
    files = {}
    for name in _file_params(job.kind):
        path = getattr(prepared.spec, name)
        files[name] = (path, Path(path).read_bytes())
    args = {key: value for key, value in vars(prepared.args).items() if key != "command"}
    return JobTask(job.kind, args, prepared.spec, inputs, files, threads, progress)


class Batch:
    """The jobs of one batch, their summary entries and the files they publish."""

    def __init__(self, jobs: list[BatchJob], output: Path, cpus_per_job: int = 1, gpus_per_job: float = 0.0):
        self.jobs, self.output = jobs, output
        self.cpus_per_job, self.gpus_per_job = cpus_per_job, gpus_per_job
        self.entries = [self._entry(job, "pending") for job in jobs]
        self.pending = []
        earlier = self._earlier_entries()
        for index, job in enumerate(jobs):
            report = job.finished()
            if report is None:
                self.pending.append(index)
                continue
            before = earlier.get(job.name, {})
            now, then = job.settings(), before.get("settings", job.settings())
            if then != now:
                changed = ", ".join(f"{key} {then.get(key)!r}, now {now.get(key)!r}"
                                    for key in sorted({*then, *now}) if then.get(key) != now.get(key))  # fmt: skip
                raise BatchError(
                    f"{job.folder} holds this job's result with other settings ({changed}): give another -o, or "
                    f"delete {job.folder} to run it again"
                )
            earlier_took = {key: before.get(key) for key in ("seconds", "cpu_seconds")}
            self.entries[index].update(status="ok", skipped=True, **earlier_took, metrics=report)

    def _entry(self, job: BatchJob, status: str) -> dict:
        return {"name": job.name, "input": job.input, "status": status, "settings": job.settings()}

    def _earlier_entries(self) -> dict[str, dict]:
        """The entries of the summary a previous run left, by name (none if it cannot be read)."""
        try:
            entries = json.loads((self.output / SUMMARY_FILENAME).read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(entries, list):
            return {}
        return {entry["name"]: entry for entry in entries if isinstance(entry, dict) and isinstance(entry.get("name"), str)}

    def record(self, index: int, result: JobResult) -> None:
        """A finished job: its files published, its entry written, a line on stderr."""
        job, entry = self.jobs[index], self.entries[index]
        entry.update(status=result.status, seconds=result.seconds, cpu_seconds=result.cpu_seconds)
        if result.status == "ok":
            try:
                publish(job.folder, result.files)
                entry["metrics"] = job.finished()
            except OSError as error:
                entry.update(status="error", error=f"could not write {job.folder}: {error}")
        else:
            entry["error"] = result.error
            if result.traceback:
                entry["traceback"] = result.traceback
        self.write_summary()
        done = sum(entry["status"] in ("ok", "error") for entry in self.entries)
        said = "ok" if entry["status"] == "ok" else f"error: {entry['error']}"
        print(f"[{done}/{len(self.jobs)}] {job.name}: {said} ({result.seconds:.1f} s)", file=sys.stderr, flush=True)

    def failed_to_load(self, index: int, error: Exception, seconds: float) -> None:
        """A job whose inputs could not be read (a bad mesh): its error, and the batch goes on."""
        message = error_line(error, self.jobs[index].prepared.command)
        self.record(index, JobResult("error", round(seconds, 3), 0.0, error=message))

    def cancel_pending(self) -> None:
        for entry in self.entries:
            if entry["status"] == "pending":
                entry["status"] = "cancelled"
        self.write_summary()

    def write_summary(self) -> None:
        """``OUT/summary.json``, replaced whole (each entry's settings last)."""
        entries = [{**{k: v for k, v in entry.items() if k != "settings"}, "settings": entry["settings"]}
                   for entry in self.entries]  # fmt: skip
        handle, temporary = tempfile.mkstemp(prefix=f".{SUMMARY_FILENAME}.", dir=self.output)
        try:
            with os.fdopen(handle, "w") as file:
                json.dump(entries, file, indent=2)
                file.write("\n")
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes it private; a summary is as readable as any file
            os.replace(temporary, self.output / SUMMARY_FILENAME)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)


def publish(folder: Path, files: dict[str, bytes]) -> None:
    """A job's files into ``folder``, as the command line publishes them (a new folder appears whole)."""
    staging = _staging_folder(folder, is_folder=True)
    try:
        for name, data in files.items():
            if Path(name).name != name:
                raise OSError(f"a job's output file name must be a plain name, got {name!r}")
            (staging / name).write_bytes(data)
        _publish(staging, folder, is_folder=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def run_serial(batch: Batch) -> None:
    """The pending jobs one after another in this process (Ray is never imported)."""
    for index in batch.pending:
        job = batch.jobs[index]
        print(f"{job.name}: {job.kind} {_shown(job.input)}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            task = load_task(job, batch.cpus_per_job, progress=True)
        except (OSError, ValueError, RuntimeError) as error:
            batch.failed_to_load(index, error, time.perf_counter() - started)
            continue
        result = run_job(task)
        result.seconds = round(time.perf_counter() - started, 3)
        batch.record(index, result)


def _shown(value: str | list[str]) -> str:
    return value if isinstance(value, str) else " -> ".join(value)


@dataclass
class RayConnection:
    """Ray, connected, and what the batch says about it."""

    ray: object
    said: str
    owned: bool
    """The batch connected (or started a local Ray): it disconnects (stops it) at the end."""
    fixed_size: bool
    """A local Ray the batch started: it cannot grow, so a job that does not fit is refused at once."""

    def close(self) -> None:
        if self.owned:
            self.ray.shutdown()


def connect_ray(address: str) -> RayConnection:
    """``auto``: the running cluster if there is one, else a local Ray started here; else the cluster at
    ``address``. A Ray this process started already is used as it is.

    Ray's own ``auto`` takes ``RAY_ADDRESS`` or the address the last ``ray start`` on this machine left in its temp
    folder, which stays there after that cluster is gone, and then waits for it many minutes: so an address that
    nothing answers counts as no cluster (``auto``) or is refused at once (``ADDRESS``)."""
    try:
        import ray
    except ImportError:
        raise BatchError(f"--ray needs Ray: {RAY_MISSING}") from None
    if address != "auto" and not _answers(address):
        raise BatchError(f"--ray {address}: nothing answers there (is the cluster up, and the port its head's?)")
    if ray.is_initialized():
        return RayConnection(ray, "Ray: using the Ray this process started", owned=False, fixed_size=False)
    if address == "auto":
        from ray._private.utils import read_ray_address

        given = os.environ.get("RAY_ADDRESS")
        found = given or read_ray_address()
        if found is None or not _answers(found):
            ray.init(address="local", include_dashboard=False)  # "local": a new one, whatever RAY_ADDRESS says
            whose = "RAY_ADDRESS" if given else "the address the last ray start on this machine left"
            why = "no cluster is running" if found is None else f"nothing answers at {found} ({whose})"
            return RayConnection(ray, f"Ray: {why}; started a local Ray", owned=True, fixed_size=True)
        ray.init(address="auto")  # "auto" (not the address itself) also takes the token of a local cluster
        return RayConnection(ray, f"Ray: connected to the running cluster at {found}", owned=True, fixed_size=False)
    try:
        ray.init(address=address)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise BatchError(
            f"--ray {address}: cannot connect to a Ray cluster there: {error} (to a cluster that asks for a token, "
            "Ray's default, connect with RAY_AUTH_MODE=token and its token in RAY_AUTH_TOKEN or ~/.ray/auth_token)"
        ) from None
    return RayConnection(ray, f"Ray: connected to the cluster at {address}", owned=True, fixed_size=False)


def _answers(address: str, timeout_s: float = 3.0) -> bool:
    """Whether something accepts a TCP connection at a Ray address (``host:port`` or ``ray://host:port``)."""
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def run_on_ray(batch: Batch, connection: RayConnection) -> None:
    """The pending jobs as Ray tasks, each with its CPUs and GPUs; at most twice as many as can run at once are
    submitted (the driver holds the inputs of those only)."""
    ray = connection.ray
    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    slots = math.floor(cpus / batch.cpus_per_job)
    if batch.gpus_per_job > 0:
        slots = min(slots, math.floor(gpus / batch.gpus_per_job))
    each = f"a job takes {batch.cpus_per_job} CPU(s) and {batch.gpus_per_job:g} GPU(s)"
    print(f"Ray: {cpus:g} CPUs, {gpus:g} GPUs; {each}", flush=True)
    if slots < 1:
        if connection.fixed_size:
            raise BatchError(f"no job fits on this Ray: {each}, it has {cpus:g} and {gpus:g}")
        print(f"warning: no job fits on the cluster now ({each}); they wait for nodes that fit", file=sys.stderr)
    remote = ray.remote(num_cpus=batch.cpus_per_job, num_gpus=batch.gpus_per_job, max_retries=RAY_RETRIES)(run_job)
    queue, running = deque(batch.pending), {}
    try:
        while queue or running:
            while queue and len(running) < max(2 * slots, 2):
                index = queue.popleft()
                started = time.perf_counter()
                try:
                    task = load_task(batch.jobs[index], batch.cpus_per_job, progress=False)
                except (OSError, ValueError, RuntimeError) as error:
                    batch.failed_to_load(index, error, time.perf_counter() - started)
                    continue
                running[remote.remote(task)] = (index, time.perf_counter() - started)
            if not running:
                break
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                index, read_seconds = running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as error:  # the worker died (after its retries), or Ray itself failed
                    result = JobResult("error", 0.0, 0.0, error=f"the Ray task failed: {error}")
                result.seconds = round(result.seconds + read_seconds, 3)
                batch.record(index, result)
    except KeyboardInterrupt:
        for ref in running:
            ray.cancel(ref)
        raise
