"""Seconds for a curvature bake (issue 17): a UV sphere baked from an analytic sphere SDF and from a 3x256 SIREN.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/curvature_bake.py [--sizes 512 2048] [--siren-sizes 512 2048]
        [--output bench/results/curvature_bake_cpu.md]

The mesh is a 128 x 64 UV sphere whose one island fills the UV square, so every texel is baked (the worst case:
a real unwrap leaves 20-40 % of the texels empty). Each row splits the bake's CPU seconds (time.process_time, one
thread) into the rasterising and padding (numpy only) and the curvature evaluation, and compares the whole bake with
the baseline: `engine.geometry.model_curvatures` alone at the same points, in the same process. The SIREN is
randomly initialised: a fitted one has the same cost. Rows with ``project`` first move each texel's point onto the
surface (Newton steps, `engine.geometry.project_to_surface`).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.conventions import Normalization
from engine.geometry import model_curvatures
from engine.model import SDFModel
from engine.networks import Siren, SirenConfig
from engine.texture_bake import bake_texture, pad_image, rasterize_uvs, texel_points

RADIUS = 0.8


class SphereSDF(nn.Module):
    """The analytic model: f = |x| - r, float32 like a network."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.norm(dim=-1) - RADIUS


def uv_sphere(columns: int = 128, rows: int = 64):
    s, t = np.meshgrid(np.linspace(0, 1, columns + 1), np.linspace(0, 1, rows + 1))
    polar, azimuth = t.ravel() * np.pi, s.ravel() * 2 * np.pi
    vertices = RADIUS * np.stack(
        [np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), -np.cos(polar)], axis=1
    )
    uv = np.stack([s.ravel(), t.ravel()], axis=1)
    index = np.arange(len(uv)).reshape(rows + 1, columns + 1)
    a, b, c, d = index[:-1, :-1].ravel(), index[:-1, 1:].ravel(), index[1:, 1:].ravel(), index[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return vertices, faces, uv[faces]


def cpu_seconds(function):
    started = time.process_time()
    result = function()
    return result, time.process_time() - started


def measure(name: str, model: SDFModel, size: int, project: bool) -> dict:
    vertices, faces, uvs = uv_sphere()
    texels, raster_s = cpu_seconds(lambda: rasterize_uvs(uvs, size, size))
    points = texel_points(texels, vertices, faces)
    covered = np.zeros(size * size, dtype=bool)
    covered[texels.index] = True
    _, pad_s = cpu_seconds(lambda: pad_image(np.zeros((size, size)), covered.reshape(size, size), 8))
    _, baseline_s = cpu_seconds(lambda: model_curvatures(model, points, project=project))
    baked, bake_s = cpu_seconds(lambda: bake_texture(model, vertices, faces, uvs, size, size, "mean", project=project))
    filled = baked.coverage != 0
    error = float(np.abs(baked.values[filled] - 1 / RADIUS).max() * RADIUS) if name == "analytic" else None
    return {
        "model": name,
        "size": size,
        "project": project,
        "texels": len(texels.index),
        "raster_s": raster_s,
        "pad_s": pad_s,
        "baseline_s": baseline_s,
        "bake_s": bake_s,
        "error": error,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| model | size | project | texels | rasterise s | pad s | curvature alone s (baseline) | whole bake s | "
        "bake / baseline | max rel. error of H |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        error = "-" if row["error"] is None else f"{row['error']:.1e}"
        lines.append(
            f"| {row['model']} | {row['size']}² | {'yes' if row['project'] else 'no'} | {row['texels']:,} | "
            f"{row['raster_s']:.2f} | {row['pad_s']:.2f} | {row['baseline_s']:.1f} | {row['bake_s']:.1f} | "
            f"{row['bake_s'] / row['baseline_s']:.2f} | {error} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048], help="analytic model's bake sizes")
    parser.add_argument("--siren-sizes", type=int, nargs="+", default=[512, 2048], help="the SIREN's bake sizes")
    parser.add_argument("--project-size", type=int, default=512, help="size of the SIREN rows with projection")
    parser.add_argument("--output", type=Path, help="write the table (markdown) here too")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    normalization = Normalization((0.0, 0.0, 0.0), 1.0)
    analytic = SDFModel(SphereSDF(), normalization)
    siren = SDFModel(Siren(SirenConfig(hidden_features=256, hidden_layers=3)), normalization)
    for model in (analytic, siren):  # first calls pay torch's one-time set-up; keep it out of the rows
        model_curvatures(model, np.full((64, 3), 0.5), project=True)
    rows = [measure("analytic", analytic, size, True) for size in args.sizes]
    rows += [measure("SIREN 3x256", siren, size, False) for size in args.siren_sizes]
    if args.project_size:
        rows.append(measure("SIREN 3x256", siren, args.project_size, True))
    text = (
        f"# Curvature bake, CPU ({platform.processor() or platform.machine()}, 1 thread, torch "
        f"{torch.__version__})\n\n`OMP_NUM_THREADS=1 PYTHONPATH=. python bench/curvature_bake.py` — a 128 x 64 UV "
        "sphere whose island fills the UV square (every texel baked), mean curvature, 8 texels of padding; CPU "
        "seconds (time.process_time). Baseline: `model_curvatures` alone at the same points.\n\n" + table(rows) + "\n"
    )
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
