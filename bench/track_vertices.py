"""Vertex tracking (issue 17) on the sphere law of mean curvature flow, r(t) = sqrt(r0^2 - 4 lambda t): per frame,
the radius error of the tracked mesh (the first frame's vertices carried along the flow) and of the mesh extracted
at that time, against the law, and the CPU seconds of each.

    python bench/track_vertices.py [--fit-steps N] [--steps N] [--resolution N] [--frames N] [--model fit.pt]

- A trained evolution: an icosphere of radius r0 = 0.5 fitted with the tiny preset, evolved by mean curvature flow
  (lambda 0.01) up to half the extinction time r0^2 / (4 lambda) with a small EvolveConfig.
- The analytic field f = |x| - r(t) as the model: the tracking's own error (Newton's tolerance), no network's.
Errors are the vertices' mean and largest |radius - r(t)|, in % of r0; one thread; CPU seconds (process time).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import trimesh

from engine.conventions import Normalization
from engine.evolution import EvolveConfig, evolve
from engine.fields import TIME_KEY, extract_frames
from engine.fit import fit_sdf, preset
from engine.mesh_io import check_mesh
from engine.model import SDFModel, load_model
from engine.surface_flows import Flow
from engine.vertex_tracking import track_vertices

RADIUS, SPEED = 0.5, 0.01


class AnalyticSphere(torch.nn.Module):
    """f(x, tau) = |x| - r(tau T) in unit coordinates (normalization scale 1, centre 0)."""

    def __init__(self, time_scale: float):
        super().__init__()
        self.time_scale = time_scale
        self.unused = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # extraction asks for a device

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        squared = RADIUS**2 - 4 * SPEED * inputs[:, 3] * self.time_scale
        return inputs[:, :3].norm(dim=-1) - squared.clamp_min(0.0).sqrt()


def law(t: float) -> float:
    return math.sqrt(RADIUS**2 - 4 * SPEED * t)


def errors(vertices: np.ndarray, t: float) -> tuple[float, float]:
    """Mean and largest |radius - r(t)| in % of r0."""
    gap = np.abs(np.linalg.norm(vertices, axis=1) - law(t)) / RADIUS * 100
    return float(gap.mean()), float(gap.max())


def timed_frames(model, times, resolution):
    """The frames and the CPU seconds of each."""
    frames, seconds = [], []
    for t in times:
        started = time.process_time()
        frames.extend(extract_frames(model, [t], resolution))
        seconds.append(time.process_time() - started)
    return frames, seconds


def timed_tracking(model, frames, times, resolution):
    """The tracked vertices and the CPU seconds of each frame (the first: its projection)."""
    marks = [time.process_time()]
    tracked = track_vertices(
        model, frames[0].vertices, frames[0].faces, times, resolution, frames=frames,
        on_frame=lambda done, total: marks.append(time.process_time()),
    )  # fmt: skip
    return tracked, np.diff(marks)


def table(name: str, model, times, resolution: int) -> list[str]:
    frames, extract_seconds = timed_frames(model, times, resolution)
    tracked, track_seconds = timed_tracking(model, frames, times, resolution)
    rows = []
    for index, t in enumerate(times):
        extracted = errors(frames[index].vertices, t)
        if index < len(tracked.positions):
            carried, seconds = errors(tracked.positions[index], t), f"{track_seconds[index]:.3f}"
            measures = tracked.measures[index]
            quality = f"{measures['substeps']} | {measures['edge_ratio']:.3f} | {measures['area_share']:.3f}"
        else:
            carried, seconds, quality = (math.nan, math.nan), "stopped", "- | - | -"
        rows.append(
            f"| {name} | {t:.4g} | {law(t):.5f} | {extracted[0]:.3f} / {extracted[1]:.3f} | "
            f"{carried[0]:.4f} / {carried[1]:.4f} | {extract_seconds[index]:.3f} | {seconds} | {quality} |"
        )
    stop = "none" if tracked.stop is None else f"frame {tracked.stop.frame}: {tracked.stop.message}"
    rows.append(f"| {name}: {len(frames[0].vertices):,} vertices, {len(frames[0].faces):,} faces; stop: {stop} |")
    return rows


def trained_evolution(args, end: float):
    if args.model is not None and args.model.is_file():
        fit = load_model(args.model)
    else:
        sphere = trimesh.creation.icosphere(subdivisions=4, radius=RADIUS)
        fit = fit_sdf(check_mesh(sphere.vertices, sphere.faces, name="Sphere"), preset("tiny", steps=args.fit_steps))
        if args.model is not None:
            args.model.parent.mkdir(parents=True, exist_ok=True)
            fit.save(args.model)
    config = EvolveConfig(steps=args.steps, pool_size=40_000, device="cpu")
    started = time.process_time()
    evolved = evolve(fit, Flow(mean_curvature=SPEED), (0.0, end), config)
    return evolved, time.process_time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit-steps", type=int, default=400, help="steps of the tiny preset's fit")
    parser.add_argument("--steps", type=int, default=300, help="EvolveConfig.steps")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--model", type=Path, help="reuse this fitted sphere model file if it exists, else save it there")
    args = parser.parse_args()
    torch.set_num_threads(1)
    end = RADIUS**2 / (4 * SPEED) / 2
    times = [float(t) for t in np.linspace(0.0, end, args.frames)]
    analytic = SDFModel(
        AnalyticSphere(end), Normalization((0.0, 0.0, 0.0), 1.0), {TIME_KEY: {"time_scale": end, "time_range": [0.0, end]}}
    )
    evolved, train_seconds = trained_evolution(args, end)
    print(f"grid {args.resolution}, {args.frames} frames from t = 0 to {end:g} (half the extinction time); evolution "
          f"trained {args.steps} steps in {train_seconds:.0f} CPU s")  # fmt: skip
    print()
    print("| model | t | r(t) | extracted error mean / max % r0 | tracked error mean / max % r0 | extract s | track s "
          "| sub-steps | edge ratio | area share |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for line in table("analytic", analytic, times, args.resolution) + table("trained", evolved, times, args.resolution):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
