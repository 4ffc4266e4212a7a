"""Extraction speed: evaluations, seconds and memory of `engine.extraction.extract_mesh` against the coarse-to-fine
extraction it replaced and the dense grid, and whether the meshes are identical (issue 13).

    .venv/bin/python bench/extraction_speed.py MODEL... [--resolution 256 512] [--threads N] [--baseline-commit C]

Each (method, model, resolution) runs in a fresh process on ``--threads`` threads: *old* is `extract_mesh` as it was
at ``--baseline-commit`` (loaded from `git show`), *new* today's, *dense* today's with ``skip_empty_space=False``
(at 256 and below only: dense 512 takes minutes). Evaluations count every point through the network's first layer (the gradient
pass on the coarsest lattice included); memory is the growth of the peak resident set during the extraction. Meshes
are compared (vertices matched to their nearest, faces as sets) to the dense mesh, or at 512 to the
old one: *identical* means the same faces and vertices within 1e-3 of a cell (float rounding).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BASELINE_COMMIT = "f769765"


def _baseline_module(commit: str):
    source = subprocess.run(["git", "show", f"{commit}:engine/extraction.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("engine._baseline_extraction", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "engine"
    exec(compile(source, f"{commit}:engine/extraction.py", "exec"), module.__dict__)
    return module


def _resident_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def run_one(method: str, model_path: str, resolution: int, threads: int, commit: str, out: str) -> dict:
    import torch

    from engine.model import load_model

    torch.set_num_threads(threads)
    model = load_model(model_path)
    if method == "old":
        extract = _baseline_module(commit).extract_mesh
    else:
        from engine.extraction import extract_mesh as extract
    counted = [0]
    first = next(module for module in model.network.modules() if isinstance(module, torch.nn.Linear))
    first.register_forward_pre_hook(lambda _module, inputs: counted.__setitem__(0, counted[0] + len(inputs[0])))
    before = _resident_kib()
    wall, cpu = time.perf_counter(), time.process_time()
    vertices, faces = extract(model, resolution, skip_empty_space=method != "dense")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.savez(out, vertices=vertices, faces=faces)
    return {"evaluations": counted[0], "wall_s": wall, "cpu_s": cpu, "memory_mb": max(0, peak - before) / 1024,
            "vertices": len(vertices), "faces": len(faces)}


def _rotate(faces: np.ndarray) -> np.ndarray:
    """Each face's vertices rotated so the smallest comes first (the winding kept), the faces sorted."""
    shift = np.argmin(faces, axis=1)
    faces = faces[np.arange(len(faces))[:, None], (shift[:, None] + np.arange(3)) % 3]
    return faces[np.lexsort(faces.T[::-1])]


def identical(a: dict, b: dict, cell: float) -> bool:
    """The same vertices (each within 1e-3 of a cell of exactly one other) and the same faces, in any order."""
    if a["vertices"].shape != b["vertices"].shape or a["faces"].shape != b["faces"].shape:
        return False
    from scipy.spatial import cKDTree

    distance, match = cKDTree(b["vertices"]).query(a["vertices"])
    if distance.max() > 1e-3 * cell or len(np.unique(match)) != len(match):
        return False
    return bool(np.array_equal(_rotate(match[a["faces"]]), _rotate(b["faces"])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--resolution", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline-commit", default=BASELINE_COMMIT)
    parser.add_argument("--one", nargs=3, metavar=("METHOD", "MODEL", "RESOLUTION"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        method, model, resolution = args.one
        print(json.dumps(run_one(method, model, int(resolution), args.threads, args.baseline_commit, args.out)))
        return
    print(f"threads {args.threads}; old = extract_mesh at {args.baseline_commit}\n")
    print("| model | resolution | method | evaluations | wall s | CPU s | peak memory growth MB | vertices | faces | "
          "identical to |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    folder = Path(tempfile.mkdtemp(prefix="extraction-speed-"))
    for model in args.models:
        for resolution in args.resolution:
            methods = ["dense", "old", "new"] if resolution <= 256 else ["old", "new"]
            rows, meshes = {}, {}
            for method in methods:
                out = folder / f"{method}.npz"
                command = [sys.executable, __file__, "x", "--one", method, model, str(resolution),
                           "--threads", str(args.threads), "--baseline-commit", args.baseline_commit, "--out", str(out)]
                result = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
                rows[method] = json.loads(result.stdout.strip().splitlines()[-1])
                meshes[method] = dict(np.load(out))
            reference = "dense" if "dense" in rows else "old"
            scale = 2.0 / (resolution - 1)
            cell = scale * float(np.ptp(meshes[reference]["vertices"], axis=0).max()) / 1.8  # input units, roughly
            for method, row in rows.items():
                same = "—" if method == reference else ("yes" if identical(meshes[method], meshes[reference], cell) else "**no**")
                print(f"| {Path(model).parent.name or model} | {resolution}³ | {method} | {row['evaluations']:,} | "
                      f"{row['wall_s']:.2f} | {row['cpu_s']:.2f} | {row['memory_mb']:.0f} | {row['vertices']:,} | "
                      f"{row['faces']:,} | {reference if method != reference else '—'}: {same} |", flush=True)


if __name__ == "__main__":
    main()
