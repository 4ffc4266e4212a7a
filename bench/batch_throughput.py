"""Batch throughput (issue 18): N fit jobs of one mesh, one after another (one thread each) against Ray tasks on a
local Ray of the machine's CPUs (one CPU and one thread each), and whether both give the same meshes.

    .venv/bin/python bench/batch_throughput.py [--mesh data/bunny.ply] [--jobs 4] [--preset tiny] [--steps 300]
                                               [--resolution 64] [--markdown bench/results/batch_throughput_cpu.md]

Each way runs ``python -m engine batch fit`` on N copies of the mesh in a fresh process and a fresh output folder:
wall seconds from start to exit (the Ray run's includes starting and stopping the local Ray), jobs per hour, the
jobs' own CPU seconds (``cpu_seconds`` of summary.json: each job's process time, reading and training and writing)
and the CPU seconds of the whole process tree (the batch process and every process below it, Ray's own included,
sampled from /proc every 0.2 s). The machine may be shared: CPU seconds say what the jobs cost, wall seconds
what they took.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tree(root: int) -> dict[int, float]:
    """CPU seconds so far (user + system) of ``root`` and every process below it, from /proc."""
    stats, children = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            found[pid] = stats[pid]
        todo.extend(children.get(pid, ()))
    return found


def run_batch(meshes: Path, out: Path, options: list[str], ray: bool) -> dict:
    """One ``batch fit`` in a fresh process: its wall seconds, the CPU seconds of its process tree (sampled every
    0.2 s: each process's last sample, so a process's last fraction of a second is missed) and its summary."""
    command = [sys.executable, "-m", "engine", "batch", "fit", str(meshes), "-o", str(out), *options]
    if ray:
        command += ["--ray", "auto"]
    environment = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    log = out.parent / f"{out.name}.log"
    with open(log, "w") as stderr, tempfile.TemporaryFile("w+") as stdout:  # files: a full pipe would block it
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, stdout=stdout, stderr=stderr, text=True, env=environment)
        cpu: dict[int, float] = {}
        while process.poll() is None:
            cpu.update(_tree(process.pid))
            time.sleep(0.2)
        wall = time.perf_counter() - started
        stdout.seek(0)
        said = stdout.read()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{log.read_text()[-3000:]}")
    entries = json.loads((out / "summary.json").read_text())
    return {"wall": wall, "tree_cpu": sum(cpu.values()), "entries": entries, "stdout": said}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh", type=Path, default=ROOT / "data" / "bunny.ply")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--markdown", type=Path, help="also write the table and the command line to this file")
    args = parser.parse_args()

    options = ["--preset", args.preset, "--steps", str(args.steps), "--resolution", str(args.resolution),
               "--device", "cpu", "--cpus-per-job", "1"]  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="batch-throughput-"))
    try:
        meshes = work / "meshes"
        meshes.mkdir()
        for index in range(args.jobs):  # copies, not links: a batch fits each file once
            shutil.copyfile(args.mesh, meshes / f"{args.mesh.stem}_{index}{args.mesh.suffix}")
        runs = {
            "serial (1 thread per job)": run_batch(meshes, work / "serial", options, ray=False),
            f"Ray, {os.cpu_count()} CPUs (1 CPU, 1 thread per job)": run_batch(meshes, work / "ray", options, ray=True),
        }
        names = [entry["name"] for entry in runs["serial (1 thread per job)"]["entries"]]
        same = all(
            (work / "serial" / name / "mesh.ply").read_bytes() == (work / "ray" / name / "mesh.ply").read_bytes()
            for name in names
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = ["| way | jobs | wall s | jobs/hour | jobs' CPU s | process tree CPU s | job wall s (mean) |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for way, run in runs.items():
        entries = run["entries"]
        job_cpu = sum(entry["cpu_seconds"] for entry in entries)
        job_wall = sum(entry["seconds"] for entry in entries) / len(entries)
        rows.append(f"| {way} | {len(entries)} | {run['wall']:.1f} | {len(entries) / run['wall'] * 3600:.0f} | "
                    f"{job_cpu:.1f} | {run['tree_cpu']:.1f} | {job_wall:.1f} |")  # fmt: skip
    ray_said = next(line for line in runs[list(runs)[1]]["stdout"].splitlines() if line.startswith("Ray:"))
    lines = [
        f"`{' '.join(sys.argv)}` ({date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} "
        f"CPUs): {args.jobs} fits of {args.mesh.name} (preset {args.preset}, {args.steps} steps, resolution "
        f"{args.resolution}, metrics on), each way in a fresh process; the Ray run said \"{ray_said}\".",
        "",
        *rows,
        "",
        f"Meshes identical between the two ways: {'yes' if same else '**no**'}.",
    ]
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("# Batch throughput on the CPU (issue 18)\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
