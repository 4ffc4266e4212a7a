"""What the live preview costs a fit (issue 14): the same fit job with previews off and on, in one process on one
thread, wall and CPU seconds of training, the previews written and their seconds, and whether the model is the same.

    .venv/bin/python bench/preview_cost.py [MESH] [--preset tiny] [--steps N] [--intervals 3 1] [--threads 1]

Each preview is written as the worker writes it (`engine.worker.JobReports.preview`: an ``.npz`` replaced whole in a
job folder, here a temporary one). After a discarded warm-up fit, the runs go off, then each interval, ``--repeat``
times over, so that the *off* runs show the noise of the machine; the last rows are the means of each setting. The table is Markdown (bench/results/preview_cost_cpu.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import protocol  # noqa: E402
from engine.jobs import JOBS, JobContext  # noqa: E402
from engine.mesh_io import load_mesh  # noqa: E402
from engine.model import load_model, replaced_whole  # noqa: E402


def run(mesh, args, interval: float, folder: Path) -> dict:
    def write(vertices, faces):
        with replaced_whole(folder / protocol.PREVIEW_FILENAME) as temporary:
            np.savez(temporary, vertices=vertices, faces=faces)

    spec = JOBS["fit"].from_params({
        "names": [mesh.name], "preset": args.preset, "steps": args.steps, "resolution": 64, "device": "cpu",
        "metrics": False, "preview_interval": interval,
    })  # fmt: skip
    context = JobContext(output_dir=folder, show_preview=write if interval > 0 else None)
    wall, cpu = time.perf_counter(), time.process_time()
    output = spec.run({"vertices_0": mesh.vertices, "faces_0": mesh.faces}, context)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    state = load_model(folder / output.files["model"]).network.state_dict()
    return {
        "interval": interval,
        "train": output.summary["train_seconds"],
        "wall": wall,
        "cpu": cpu,
        "previews": output.summary.get("previews", 0),
        "preview_seconds": output.summary.get("preview_seconds", 0.0),
        "state": state,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mesh", nargs="?", type=Path, default=ROOT / "data" / "bunny.ply")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--intervals", type=float, nargs="+", default=[3.0, 1.0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the runs, interleaved")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_mesh(args.mesh)
    mesh = type("Mesh", (), {"name": args.mesh.name, "vertices": loaded.vertices, "faces": loaded.faces})
    with tempfile.TemporaryDirectory() as folder:  # a discarded warm-up: the first fit of a process pays for imports
        run(mesh, argparse.Namespace(**{**vars(args), "steps": 10}), 0.0, Path(folder))
    rows = []
    for _ in range(args.repeat):
        for interval in [0.0, *args.intervals]:
            with tempfile.TemporaryDirectory() as folder:
                rows.append(run(mesh, args, interval, Path(folder)))
    reference = rows[0]
    base = np.mean([row["train"] for row in rows if row["interval"] == 0])
    print(f"{args.mesh.name}, preset {args.preset}, steps {args.steps or 'the preset'}, {args.threads} thread(s), "
          f"torch {torch.__version__}")  # fmt: skip
    print()
    print("| previews | training wall s | job wall s | job CPU s | previews written | preview s | preview share "
          "| training vs off (mean) | same model as the first off |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        same = all(torch.equal(row["state"][name], reference["state"][name]) for name in reference["state"])
        label = "off" if row["interval"] == 0 else f"every {row['interval']:g} s"
        share = row["preview_seconds"] / row["train"] if row["train"] else 0.0
        print(f"| {label} | {row['train']:.2f} | {row['wall']:.2f} | {row['cpu']:.2f} | {row['previews']} "
              f"| {row['preview_seconds']:.2f} | {share:.1%} | {row['train'] / base - 1:+.1%} | {'yes' if same else '**no**'} |")  # fmt: skip
    for interval in [0.0, *args.intervals]:
        mine = [row for row in rows if row["interval"] == interval]
        train = np.mean([row["train"] for row in mine])
        label = "off" if interval == 0 else f"every {interval:g} s"
        print(f"| **mean, {label}** | {train:.2f} | {np.mean([row['wall'] for row in mine]):.2f} "
              f"| {np.mean([row['cpu'] for row in mine]):.2f} | {np.mean([row['previews'] for row in mine]):.1f} "
              f"| {np.mean([row['preview_seconds'] for row in mine]):.2f} "
              f"| {np.mean([row['preview_seconds'] for row in mine]) / train:.1%} | {train / base - 1:+.1%} | |")  # fmt: skip


if __name__ == "__main__":
    main()
