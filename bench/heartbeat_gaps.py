"""The worker's heartbeat during a fit job on a big mesh: the largest gap between two heartbeats while the job prepares
its samples (issue 12: 8.8 s gaps were seen on a 1.3M-face mesh, against a hang timeout that may be 2 s).

    .venv/bin/python bench/heartbeat_gaps.py [--subdivisions 8] [--preset tiny] [--steps 10] [--engine-root DIR]
                                             [--markdown]

It writes an icosphere of ``--subdivisions`` (8: 1,310,720 faces) as the job's inputs, starts ``python -m
engine.worker`` (the installed engine, or the one in ``--engine-root``, e.g. an older checkout, to compare), sends a
fit job and times every message as it arrives. Phases: *load* from the job to its first progress message (reading and
checking the inputs), *samples* from there to the first training step (the sample pools: signed distances and
winding numbers of the volume samples), *train* the rest. The heartbeat is due every
`engine.protocol.HEARTBEAT_INTERVAL_S` (1 s); a gap is the time between two heartbeats.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import trimesh


def run(subdivisions: int, preset: str, steps: int, engine_root: str | None) -> dict:
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.5)
    folder = Path(tempfile.mkdtemp(prefix="heartbeat-"))
    np.savez(folder / "inputs.npz", vertices_0=np.asarray(sphere.vertices, np.float32), faces_0=np.asarray(sphere.faces, np.int32))
    environment = dict(os.environ)
    if engine_root:
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [engine_root, environment.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True, env=environment, cwd=engine_root or None,
    )
    messages: queue.Queue = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            messages.put((time.perf_counter(), json.loads(line)))
        messages.put((time.perf_counter(), None))

    threading.Thread(target=read, daemon=True).start()
    hello = {"type": "alive"}
    while hello["type"] != "hello":
        _, hello = messages.get(timeout=120)
    job = {"type": "job", "protocol": hello["protocol"], "job": "big", "kind": "fit", "dir": str(folder),
           "params": {"names": ["Sphere"], "preset": preset, "steps": steps, "resolution": 32, "device": "cpu",
                      "metrics": False}}
    sent = time.perf_counter()
    process.stdin.write(json.dumps(job) + "\n")
    process.stdin.flush()
    beats, first_progress, first_step, ended, end = [], None, None, None, None
    while True:
        at, message = messages.get(timeout=1800)
        if message is None:
            break
        if message["type"] == "alive":
            beats.append(at)
        elif message["type"] == "progress":
            first_progress = first_progress or at
            if message["stage"] == "fit" and message["step"] >= 1 and first_step is None:
                first_step = at
        elif message["type"] in ("result", "error", "cancelled"):
            ended, end = at, message
            break
    process.stdin.close()
    process.wait(timeout=60)
    if first_step is None:
        raise SystemExit(f"the job ended before training: {end}")

    def largest_gap(low: float, high: float) -> float:
        inside = [b for b in beats if low <= b <= high]
        # the gap before the first beat of the phase and after its last one count too
        edges = [max([b for b in beats if b < low], default=low)] + inside + [min([b for b in beats if b > high], default=high)]
        return max(np.diff(edges)) if len(edges) > 1 else float("nan")

    return {
        "engine": engine_root or "installed",
        "faces": len(sphere.faces),
        "preset": preset,
        "load_s": first_progress - sent,
        "samples_s": first_step - first_progress,
        "gap_load_s": largest_gap(sent, first_progress),
        "gap_samples_s": largest_gap(first_progress, first_step),
        "gap_train_s": largest_gap(first_step, ended),
        "beats": len(beats),
        "end": end["type"],  # a few steps of a large preset may leave no surface: an error after the samples
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subdivisions", type=int, default=8)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--engine-root", help="run the engine of this checkout instead of the installed one")
    parser.add_argument("--markdown", action="store_true", help="print one markdown table row")
    args = parser.parse_args()
    row = run(args.subdivisions, args.preset, args.steps, args.engine_root)
    if args.markdown:
        print(
            f"| {row['engine']} | {row['faces']:,} | {row['preset']} | {row['load_s']:.1f} | {row['gap_load_s']:.2f} | "
            f"{row['samples_s']:.1f} | {row['gap_samples_s']:.2f} | {row['gap_train_s']:.2f} | {row['end']} |"
        )
    else:
        print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
