"""Surface-evolution benchmark at full size: a sphere fitted with the default preset, evolved with the default
EvolveConfig, measured against the analytic laws (DESIGN.md §4), and the bake time per frame.

    python bench/evolution_laws.py [--fit-steps N] [--steps N] [--json out.json]

- Mean curvature flow: r(t) = sqrt(r0^2 - 4 lambda t) up to half the extinction time.
- Constant normal speed s: r(t) = r0 + s t, for t in [-T, T].
Radii are found by bisection along 500 directions; errors are in % of r0 (mean error, and spread = std).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import trimesh

from engine.evolution import EvolveConfig, evolve
from engine.fields import at_time, extract_frames, frame_curvatures
from engine.fit import fit_sdf, preset
from engine.mesh_io import check_mesh
from engine.model import load_model
from engine.surface_flows import Flow

RADIUS = 0.5


def radii(model, t: float, directions: np.ndarray) -> np.ndarray:
    shape = at_time(model, t)
    low, high = np.full(len(directions), 0.02), np.full(len(directions), 2 * RADIUS)
    for _ in range(40):
        middle = (low + high) / 2
        inside = shape.sdf(directions * middle[:, None]) < 0
        low, high = np.where(inside, middle, low), np.where(inside, high, middle)
    return (low + high) / 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit-steps", type=int, help="override the fast preset's steps")
    parser.add_argument("--model", type=Path, help="reuse this fitted sphere model file if it exists, else save it there")
    parser.add_argument("--steps", type=int, help="override EvolveConfig.steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    directions = np.random.default_rng(0).normal(size=(500, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=RADIUS)
    started = time.perf_counter()
    if args.model is not None and args.model.is_file():
        fit = load_model(args.model)
    else:
        overrides = {"steps": args.fit_steps} if args.fit_steps else {}
        fit = fit_sdf(check_mesh(sphere.vertices, sphere.faces), preset("fast", **overrides))
        if args.model is not None:
            fit.save(args.model)
    print(f"fit: {time.perf_counter() - started:.1f} s", flush=True)
    config = EvolveConfig(**({"steps": args.steps} if args.steps else {}))

    rows, report = [], {"config": config.to_dict()}
    speed = 0.01
    half_extinction = RADIUS**2 / (4 * speed) / 2
    cases = [
        ("mean curvature flow, lambda 0.01", Flow(mean_curvature=speed), (0.0, half_extinction),
         lambda t: math.sqrt(RADIUS**2 - 4 * speed * t)),
        ("normal speed 0.2", Flow(normal_speed=0.2), (-0.5, 0.5), lambda t: RADIUS + 0.2 * t),
    ]  # fmt: skip
    for name, flow, time_range, law in cases:
        started = time.perf_counter()
        evolved = evolve(fit, flow, time_range, config)
        train_seconds = time.perf_counter() - started
        for t in np.linspace(*time_range, 5):
            measured = radii(evolved, t, directions)
            expected = law(t)
            rows.append({
                "flow": name, "train_s": round(train_seconds, 1), "t": round(float(t), 4), "r_expected": round(expected, 5),
                "r_mean": round(float(measured.mean()), 5), "error_%r0": round(100 * (measured.mean() - expected) / RADIUS, 3),
                "spread_%r0": round(100 * measured.std() / RADIUS, 3),
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
        if flow.mean_curvature:
            times = list(np.linspace(*time_range, 8))
            bake = {}
            for resolution in (128, 256):
                started = time.perf_counter()
                frames = extract_frames(evolved, times, resolution)
                bake[f"extract_s_per_frame@{resolution}"] = round((time.perf_counter() - started) / len(times), 2)
                bake[f"faces@{resolution}"] = int(np.mean([len(f.faces) for f in frames]))
                started = time.perf_counter()
                frame_curvatures(evolved, frames, "mean")
                bake[f"curvature_s_per_frame@{resolution}"] = round((time.perf_counter() - started) / len(times), 2)
            report["bake"] = bake
            print(json.dumps(bake), flush=True)

    print("\n| flow | train s | t | r expected | r measured | error % r0 | spread % r0 |\n|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['flow']} | {row['train_s']} | {row['t']} | {row['r_expected']} | {row['r_mean']} | "
              f"{row['error_%r0']:+.3f} | {row['spread_%r0']:.3f} |")  # fmt: skip
    if "bake" in report:
        print("\nbake (mean curvature flow, 8 frames):", json.dumps(report["bake"]))
    if args.json:
        args.json.write_text(json.dumps({**report, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
