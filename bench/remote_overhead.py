"""What the remote engine costs over a local worker (issue 18): the same fit job through the add-on's client
(`EngineSession`), once through the relay to ``python -m engine serve`` on this machine (loopback), once on a local
worker, and whether both give the same surface.

    .venv/bin/python bench/remote_overhead.py [MESH] [--preset fast] [--steps 50] [--resolution 64] [--threads 1]

Columns: *start to hello* (the local worker imports torch there; the server's worker did so at its start), *upload*
(the relay sending inputs.npz: its log), *job on the worker* (the server's log: job message to result, its files
read; for the local run the session's job message to result), *download* (the relay receiving outputs.npz and the
model: its log), *job sent to result* (what the add-on waits, from the hello on) and *total*. The table is Markdown
(bench/results/remote_overhead_cpu.md).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import trimesh

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from addon.core.params import fit_params  # noqa: E402
from addon.core.worker_client import (  # noqa: E402
    REMOTE_RELAY_MODULE,
    EngineSession,
    JobRequest,
    SessionState,
    WorkerLaunch,
)
from engine import protocol  # noqa: E402

DEFAULT_MESH = Path("/work/shared/meshes/bunny00.ply")


def mesh_inputs(path: Path | None) -> tuple[dict, str]:
    if path is not None and path.is_file():
        mesh = trimesh.load(path, force="mesh")
        name = path.name
    else:
        mesh = trimesh.creation.icosphere(subdivisions=6, radius=0.5)  # 81,920 faces
        name = "icosphere (6 subdivisions)"
    inputs = {"vertices_0": np.asarray(mesh.vertices, np.float32), "faces_0": np.asarray(mesh.faces, np.intc)}
    return inputs, f"{name}: {len(mesh.vertices):,} vertices, {len(mesh.faces):,} faces"


class Server:
    """``python -m engine.remote.server --port 0`` with its log kept."""

    def __init__(self, threads: int):
        environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen([sys.executable, "-m", "engine.remote.server", "--port", "0"],
                                        stderr=subprocess.PIPE, text=True, env=environment)  # fmt: skip
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(300):
            raise RuntimeError("the server did not start:\n" + "\n".join(self.lines))
        self.url = next(re.search(r"serving on (\S+)", line).group(1) for line in self.lines if "serving on" in line)

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip())
            if "serving on" in line:
                self.ready.set()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def run(launch: WorkerLaunch, request: JobRequest, jobs: Path) -> dict:
    session = EngineSession(launch, [request], jobs, hang_timeout_s=600.0)
    started = time.perf_counter()
    session.start()
    hello_at = None
    while not session.finished:
        session.wait(0.005)
        session.poll()
        if hello_at is None and session.hello is not None:
            hello_at = time.perf_counter()
    ended = time.perf_counter()
    if session.state is not SessionState.SUCCEEDED:
        raise RuntimeError(session.message)
    (result,) = session.results
    log = session.stderr_tail()
    session.close()
    return {"hello": hello_at - started, "sent_to_result": ended - hello_at, "total": ended - started,
            "outputs": result.outputs, "summary": result.summary, "log": log}  # fmt: skip


def relay_seconds(log: list[str], verb: str) -> float:
    return sum(float(match.group(1)) for line in log if (match := re.search(rf"relay: {verb} .* in ([\d.]+) s", line)))


def relay_megabytes(log: list[str], verb: str) -> float:
    return sum(float(match.group(1)) for line in log if (match := re.search(rf"relay: {verb} .*: ([\d.]+) MB", line)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mesh", nargs="?", type=Path, default=DEFAULT_MESH)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    inputs, described = mesh_inputs(args.mesh)
    params = fit_params(preset=args.preset, steps=args.steps, resolution=args.resolution, device="cpu", seed=0,
                        names=["Mesh"])  # fmt: skip
    request = JobRequest("fit", params, inputs, "fitting 'Mesh'")
    server = Server(args.threads)
    try:
        with tempfile.TemporaryDirectory() as folder:
            relay = WorkerLaunch(sys.executable, ROOT, {protocol.REMOTE_URL_VARIABLE: server.url},
                                 module=REMOTE_RELAY_MODULE)  # fmt: skip
            local = WorkerLaunch(sys.executable, ROOT, {"OMP_NUM_THREADS": str(args.threads)})
            remote_run = run(relay, request, Path(folder) / "remote")
            local_run = run(local, request, Path(folder) / "local")
    finally:
        server.stop()
    worker_seconds = next(float(match.group(1)) for line in server.lines
                          if (match := re.search(r"ended: result after ([\d.]+) s", line)))  # fmt: skip
    same = all(np.array_equal(remote_run["outputs"][name], local_run["outputs"][name]) for name in local_run["outputs"])
    up, down = relay_seconds(remote_run["log"], "uploaded"), relay_seconds(remote_run["log"], "downloaded")
    up_mb, down_mb = relay_megabytes(remote_run["log"], "uploaded"), relay_megabytes(remote_run["log"], "downloaded")
    print(f"`{' '.join([Path(sys.executable).name, *sys.argv])}`: {described}; preset {args.preset}, {args.steps} "
          f"steps, resolution {args.resolution}, {args.threads} thread(s); server on {server.url}\n")
    print("| run | start to hello s | upload s (MB) | job on the worker s | download s (MB) | job sent to result s "
          "| total s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    print(f"| remote (loopback) | {remote_run['hello']:.2f} | {up:.3f} ({up_mb:.2f}) | {worker_seconds:.2f} | "
          f"{down:.3f} ({down_mb:.2f}) | {remote_run['sent_to_result']:.2f} | {remote_run['total']:.2f} |")
    print(f"| local worker | {local_run['hello']:.2f} | - | {local_run['sent_to_result']:.2f} | - | "
          f"{local_run['sent_to_result']:.2f} | {local_run['total']:.2f} |")
    overhead = remote_run["sent_to_result"] - worker_seconds
    print(f"\nRelay overhead on loopback (job sent to result minus the job on the worker): {overhead:.2f} s; "
          f"train seconds remote {remote_run['summary'].get('train_seconds', 0):.2f}, local "
          f"{local_run['summary'].get('train_seconds', 0):.2f}; same surface: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
