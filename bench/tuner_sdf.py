"""TUNER against SIREN on surfaces (issue 15): does an integer first layer with bounded hidden weights remove the
high-frequency noise a short 3x256, omega 30 fit leaves inside the shape, without losing detail?

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/tuner_sdf.py [--steps 600] [--averaging 0.99] [--batch 2000] [--tuners "16:1,0.5;16:0.25,0.1"]
        [--sections sphere,torus,meshes,evolution] [--meshes bunny,knot2] [--resolution 256] [--json out.json]

Every variant is the ``fast`` preset (3x256, omega 30) with ``steps``, weight averaging ``averaging`` (a short
schedule: bench/results/time_to_quality_cpu.md), ``batch`` surface and volume samples a step and a 100k pool, trained in this process on one thread; "siren" is the default first layer, "tuner
B c(c_low,c_high)" sets FitConfig.tuner with band limit B and those bounds (SIREN's start inside them); "at bound"
is the share of the first hidden layer's weights at their bound after the fit. Measured (DESIGN.md section 4; SDF
negative inside, kappa = k1 + k2, H = kappa / 2):
- sphere (r0 = 0.5): on uniform points inside, in three shells of depth, the Laplacian of f against 2 / |x| and
  |grad f| - 1 (RMS; the Laplacian relative to the RMS of 2 / |x|); the interior level sets f = -d: radii by bisection
  along 500 directions, their spread (std) and mean error in % of r0 (mean curvature flow follows them).
- torus (R = 0.5, a = 0.2): points area-uniform on the true level sets f = 0, +-0.05, moved onto the fit's level set
  by Newton steps, mean curvature H there against the closed form at the moved point (RMS error, and relative to the
  RMS of H).
- meshes: the fit metrics (engine.metrics.mesh_metrics, as the fit job's summary) of the surface extracted at
  ``resolution``, and each ratio against siren.
- evolution: a short mean-curvature-flow training from each sphere fit (``--evolve-steps``, lambda 0.01): radius
  against the law sqrt(r0^2 - 4 lambda t) up to half the extinction time (bench/evolution_laws.py at full size).
Seconds are CPU seconds (time.process_time) of this process.
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
from torch import nn

from engine.evolution import EvolveConfig, evolve
from engine.extraction import extract_mesh
from engine.fields import at_time
from engine.fit import fit_sdf, preset
from engine.geometry import gradient_and_hessian, model_curvatures
from engine.mesh_io import check_mesh, load_mesh
from engine.metrics import mesh_metrics
from engine.model import SDFModel
from engine.surface_flows import Flow

MESHES = Path("/work/shared/meshes")
RADIUS = 0.5
TORUS = (0.5, 0.2)
SHELLS = ((0.1, 0.4), (0.4, 0.7), (0.7, 0.95))
"""Interior shells of the sphere, as shares of r0 (|x| / r0)."""
DEPTHS = (0.0, 0.05, 0.1, 0.146)
"""Depths d (input units) of the sphere's interior level sets f = -d (0.1 and 0.146 as in the evolution results)."""
LEVELS = (-0.05, 0.0, 0.05)
MCF_SPEED = 0.01
FAR = 1.1 * RADIUS
"""Outer end of the radius bisection: inside the fit's cube (r0 maps to 0.9 of its half-size), where f was trained."""


def variants(spec: str) -> list[tuple[str, dict]]:
    """"siren" and one TUNER variant per "BAND:C_LOW,C_HIGH" of ``spec`` (";"-separated)."""
    found = [("siren", {})]
    for item in filter(None, spec.split(";")):
        band, bounds = item.split(":")
        c_low, c_high = (float(c) for c in bounds.split(","))
        found.append((f"tuner B{band} c({c_low:g},{c_high:g})",
                      {"tuner": True, "tuner_band": int(band), "tuner_bounds": (c_low, c_high)}))  # fmt: skip
    return found


def fitted(mesh, overrides: dict, args) -> tuple[SDFModel, float]:
    config = preset(
        "fast", steps=args.steps, surface_batch=args.batch, volume_batch=args.batch, pool_size=100_000,
        weight_averaging=args.averaging, device="cpu", seed=args.seed, **overrides,
    )  # fmt: skip
    started = time.process_time()
    model = fit_sdf(mesh, config)
    return model, time.process_time() - started


def directions(count: int, rng: np.random.Generator) -> np.ndarray:
    d = rng.normal(size=(count, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def level_radii(sdf, level: float, along: np.ndarray, far: float) -> np.ndarray:
    """Radii where sdf = level along unit directions from the origin (bisection, inside below the level)."""
    low, high = np.full(len(along), 1e-3), np.full(len(along), far)
    for _ in range(40):
        middle = (low + high) / 2
        inside = sdf(along * middle[:, None]) < level
        low, high = np.where(inside, middle, low), np.where(inside, high, middle)
    return (low + high) / 2


def sphere_rows(model: SDFModel, rng: np.random.Generator) -> dict:
    """The sphere measures of one fit (see the module's notes), in input units."""
    normalization, rows = model.normalization, {}
    for low, high in SHELLS:
        radius = RADIUS * rng.uniform(low, high, 4000)
        points = directions(4000, rng) * radius[:, None]
        derivatives = gradient_and_hessian(model.network, normalization.to_unit(points), dtype=torch.float64)
        # Unit-cube f = s f_input and u = s x: grad f is unchanged, the Laplacian scales by s.
        laplacian = derivatives.hessian.diagonal(dim1=1, dim2=2).sum(dim=1).numpy() * normalization.scale
        truth = 2.0 / np.linalg.norm(points, axis=1)
        gradient_norm = derivatives.gradient.norm(dim=1).numpy()
        rows[f"laplacian_rel_rms@{low}-{high}"] = float(np.sqrt(np.mean((laplacian - truth) ** 2) / np.mean(truth**2)))
        rows[f"eikonal_rms@{low}-{high}"] = float(np.sqrt(np.mean((gradient_norm - 1.0) ** 2)))
    along = directions(500, rng)
    for depth in DEPTHS:
        radii = level_radii(model.sdf, -depth, along, FAR)
        rows[f"level_error_%r0@{depth}"] = float(100 * (radii.mean() - (RADIUS - depth)) / RADIUS)
        rows[f"level_spread_%r0@{depth}"] = float(100 * radii.std() / RADIUS)
    return rows


class Shifted(nn.Module):
    """f - level: its zero set is f's level set ``level``."""

    def __init__(self, network: nn.Module, level: float):
        super().__init__()
        self.network, self.level = network, level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x) - self.level


def torus_points(q: float, count: int, rng: np.random.Generator) -> np.ndarray:
    """Area-uniform points on the torus level set at tube distance q (rejection on the area element R + q cos v)."""
    major = TORUS[0]
    u, v = rng.uniform(0, 2 * np.pi, 4 * count), rng.uniform(0, 2 * np.pi, 4 * count)
    keep = rng.uniform(0, major + q, 4 * count) < major + q * np.cos(v)
    u, v = u[keep][:count], v[keep][:count]
    rho = major + q * np.cos(v)
    return np.stack([rho * np.cos(u), rho * np.sin(u), q * np.sin(v)], axis=1)


def torus_mean_curvature(points: np.ndarray) -> np.ndarray:
    """H = kappa / 2 of the true torus's level set through each point: kappa = 1/q + (rho - R)/(q rho)."""
    rho = np.linalg.norm(points[:, :2], axis=1)
    q = np.sqrt((rho - TORUS[0]) ** 2 + points[:, 2] ** 2)
    return 0.5 * (1.0 / q + (rho - TORUS[0]) / (q * rho))


def torus_rows(model: SDFModel, rng: np.random.Generator) -> dict:
    rows = {}
    for level in LEVELS:
        start = torus_points(TORUS[1] + level, 3000, rng)
        shifted = SDFModel(Shifted(model.network, level * model.normalization.scale), model.normalization)
        measured = model_curvatures(shifted, start, project=True, steps=20, tol=1e-6, dtype=torch.float64)
        landed = np.abs(measured.value) * model.normalization.scale < 1e-4
        truth = torus_mean_curvature(measured.points[landed])
        error = measured.mean[landed] - truth
        rows[f"H_rms@{level}"] = float(np.sqrt(np.mean(error**2)))
        rows[f"H_rel_rms@{level}"] = float(np.sqrt(np.mean(error**2) / np.mean(truth**2)))
        rows[f"unprojected@{level}"] = int((~landed).sum())
    return rows


def mesh_rows(model: SDFModel, reference, resolution: int) -> dict:
    started = time.process_time()
    vertices, faces = extract_mesh(model, resolution)
    extract_s = time.process_time() - started
    metrics = mesh_metrics(vertices, faces, reference.vertices, reference.faces).to_dict()
    return {**metrics, "extract_cpu_s": extract_s, "faces": int(len(faces))}


def evolution_rows(model: SDFModel, steps: int, seed: int, rng: np.random.Generator) -> dict:
    half_extinction = RADIUS**2 / (4 * MCF_SPEED) / 2
    config = EvolveConfig(steps=steps, spacetime_batch=1000, pool_size=50_000, device="cpu", seed=seed)
    started = time.process_time()
    evolved = evolve(model, Flow(mean_curvature=MCF_SPEED), (0.0, half_extinction), config)
    rows, along = {"evolve_cpu_s": time.process_time() - started}, directions(500, rng)
    for t in (0.0, half_extinction / 2, half_extinction):
        radii = level_radii(at_time(evolved, t).sdf, 0.0, along, FAR)
        expected = math.sqrt(RADIUS**2 - 4 * MCF_SPEED * t)
        rows[f"mcf_error_%r0@{t:g}"] = float(100 * (radii.mean() - expected) / RADIUS)
        rows[f"mcf_spread_%r0@{t:g}"] = float(100 * radii.std() / RADIUS)
    return rows


def table(title: str, results: dict[str, dict], keys: list[str], ratio: bool = False) -> str:
    names = list(results)
    lines = [f"\n### {title}\n", "| measure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in keys:
        cells = []
        for name in names:
            value = results[name].get(key)
            text = "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
            base = results[names[0]].get(key)
            if ratio and name != names[0] and isinstance(value, float) and base:
                text += f" ({value / base:.3f}x)"
            cells.append(text)
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--averaging", type=float, default=0.99, help="weight averaging decay (the default's 0.995 lags in short fits)")
    parser.add_argument("--batch", type=int, default=2000, help="surface and volume samples a step (each)")
    parser.add_argument("--tuners", default="16:1,0.5;16:0.25,0.1", help="TUNER variants BAND:C_LOW,C_HIGH, ';'-separated")
    parser.add_argument("--sections", default="sphere,torus,meshes,evolution")
    parser.add_argument("--meshes", default="bunny,knot2")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--evolve-steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sections = set(args.sections.split(","))
    kinds = variants(args.tuners)
    report = {"args": vars(args) | {"json": str(args.json)}, "results": {}}
    started = time.process_time()

    shapes = []
    if sections & {"sphere", "evolution"}:
        sphere = trimesh.creation.icosphere(subdivisions=5, radius=RADIUS)
        shapes.append(("sphere", check_mesh(sphere.vertices, sphere.faces)))
    if "torus" in sections:
        torus = trimesh.creation.torus(*TORUS, major_sections=128, minor_sections=64)
        shapes.append(("torus", check_mesh(torus.vertices, torus.faces)))
    if "meshes" in sections:
        shapes += [(name, load_mesh(MESHES / f"{name}.ply")) for name in args.meshes.split(",")]

    for shape_name, mesh in shapes:
        results = {}
        for kind, overrides in kinds:
            model, fit_s = fitted(mesh, overrides, args)
            rng = np.random.default_rng(args.seed)
            rows = {"fit_cpu_s": fit_s}
            bounds = model.network.hidden_column_bounds()
            if bounds is not None:
                weights = model.network.layers[1].linear.weight.detach().abs()
                rows["at_bound_share"] = float((weights >= bounds * (1 - 1e-6)).float().mean())
            if shape_name == "sphere":
                if "sphere" in sections:
                    rows |= sphere_rows(model, rng)
                if "evolution" in sections:
                    rows |= evolution_rows(model, args.evolve_steps, args.seed, rng)
            elif shape_name == "torus":
                rows |= torus_rows(model, rng)
            else:
                rows |= mesh_rows(model, mesh, args.resolution)
            results[kind] = rows
            print(json.dumps({"shape": shape_name, "kind": kind, **rows}), flush=True)
        report["results"][shape_name] = results
        keys = list(next(iter(results.values())))
        print(table(shape_name, results, keys, ratio=shape_name not in ("sphere", "torus")), flush=True)
    report["total_cpu_s"] = time.process_time() - started
    print(f"\ntotal: {report['total_cpu_s']:.0f} CPU s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
