"""Colour fields (issue 17): how well a fitted model gives back its source's colours, and what they cost.

Two sources, each fitted once (shape: the tiny preset), then coloured several ways:
- ``bunny``: the bundled bunny with vertex colours from a function of position (bands across the body);
- ``astronaut sphere``: a UV sphere (seams split, so UVs are per vertex) mapped with skimage's astronaut
  (equirectangular), its colours read from the texture through the UVs (bilinear, linear light).

Colour error against the source's own colours at 20,000 fresh points on the source surface (not the training
samples): PSNR in linear RGB over them of (a) the network (`colors_at`: projected onto the fitted surface along the
normal, then read) and (b) the extracted mesh's vertex colours (resolution 128) interpolated at the nearest point of
the mesh, which is what a user gets; and CIEDE2000 Delta E (sRGB-encoded, via Lab) at 12 of them (mean and max).
Seconds are CPU seconds (time.process_time) of one thread; "extra" is the colour training over the shape fit's.
The "joint" row trains the colour network alongside the shape fit (one colour step per shape step, normals from
the shape as it trains, `ColorTrainer.step(network)` through the fit's on_step) instead of after it.

    OMP_NUM_THREADS=1 python bench/surface_colors.py [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.color_samples import ColorSamples, sampled_faces, texture_lookup, vertex_color_samples  # noqa: E402
from engine.color_samples import linear_to_srgb8, srgb8_to_linear  # noqa: E402
from engine.extraction import extract_mesh  # noqa: E402
from engine.fit import fit_sdf, preset  # noqa: E402
from engine.mesh_io import TriangleMesh, load_mesh  # noqa: E402
from engine.surface_colors import COLOR_PRESETS, ColorTrainer, colors_at, fit_colors, psnr_from_mse  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EVALUATION_POINTS = 20_000
DELTA_E_POINTS = 12


def bunny_source():
    mesh = load_mesh(REPO / "data" / "bunny.ply")
    unit = (mesh.vertices - mesh.vertices.mean(0)) / np.ptp(mesh.vertices, axis=0).max()
    colors = 0.5 + 0.45 * np.sin(np.stack([9 * unit[:, 0], 7 * unit[:, 1] + 1, 11 * unit[:, 2] + 2], 1))
    colors = colors.astype(np.float32)

    def truth(rng, count):
        samples = vertex_color_samples(mesh, colors, count, rng)
        return samples.points, samples.colors

    return mesh, truth


def astronaut_sphere_source(rings: int = 48, segments: int = 96):
    from skimage import data

    theta = np.linspace(0.0, np.pi, rings + 1)  # from the north pole
    phi = np.linspace(0.0, 2 * np.pi, segments + 1)  # the seam column doubled: UVs per vertex
    t, p = np.meshgrid(theta, phi, indexing="ij")
    vertices = 0.5 * np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1).reshape(-1, 3)
    uv = np.stack([p / (2 * np.pi), 1.0 - t / np.pi], -1).reshape(-1, 2)
    index = np.arange((rings + 1) * (segments + 1)).reshape(rings + 1, segments + 1)
    a, b, c, d = index[:-1, :-1], index[1:, :-1], index[1:, 1:], index[:-1, 1:]
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    corners = vertices[faces]
    keep = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1) > 1e-12
    mesh = TriangleMesh(vertices, faces[keep])
    image = srgb8_to_linear(data.astronaut())

    def truth(rng, count):
        chosen, weights = sampled_faces(mesh, count, rng)
        corners_ = mesh.faces[chosen]
        points = np.einsum("kj,kjd->kd", weights, mesh.vertices[corners_])
        colors = texture_lookup(image, np.einsum("kj,kjd->kd", weights, uv[corners_]))
        return points, colors.astype(np.float32)

    return mesh, truth


def mesh_colors_at(vertices, faces, vertex_colors, points):
    """The mesh's vertex colours interpolated at the nearest mesh point of each point."""
    import igl

    vertices, faces = np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64)
    _, triangle, nearest = igl.point_mesh_squared_distance(np.asarray(points, dtype=np.float64), vertices, faces)
    weights = trimesh.triangles.points_to_barycentric(vertices[faces[triangle]], nearest)
    return np.einsum("kj,kjd->kd", np.clip(weights, 0, 1), vertex_colors[faces[triangle]])


def delta_e(first_linear, second_linear):
    from skimage.color import deltaE_ciede2000, rgb2lab

    lab = [rgb2lab(linear_to_srgb8(c)[None].astype(np.float64) / 255.0)[0] for c in (first_linear, second_linear)]
    return deltaE_ciede2000(*lab)


def measure(model, truth, resolution):
    rng = np.random.default_rng(12345)
    points, colors = truth(rng, EVALUATION_POINTS)
    network = colors_at(model, points)
    vertices, faces = extract_mesh(model, resolution)
    on_mesh = mesh_colors_at(vertices, faces, colors_at(model, vertices), points)
    picked = rng.choice(len(points), DELTA_E_POINTS, replace=False)
    errors = delta_e(network[picked], colors[picked])
    return {
        "psnr_network": psnr_from_mse(float(np.square(network - colors).mean())),
        "psnr_mesh": psnr_from_mse(float(np.square(on_mesh - colors).mean())),
        "delta_e_mean": float(errors.mean()),
        "delta_e_max": float(errors.max()),
    }


def run(quick: bool) -> str:
    torch.set_num_threads(1)
    shape_steps = 150 if quick else 300
    resolution = 64 if quick else 128
    rows = []
    for name, (mesh, truth) in {"bunny (vertex colours)": bunny_source(),
                                "astronaut sphere (UV texture)": astronaut_sphere_source()}.items():  # fmt: skip
        shape_config = preset("tiny", steps=shape_steps, device="cpu")
        started = time.process_time()
        shape = fit_sdf(mesh, shape_config)
        shape_seconds = time.process_time() - started
        samples = ColorSamples(*truth(np.random.default_rng(0), 200_000))
        configs = {"tiny colours (64x2, 300 steps)": COLOR_PRESETS["tiny"]}
        if not quick:
            configs["fast colours (128x2, 1000 steps)"] = COLOR_PRESETS["fast"]
            configs["fast colours, no band"] = dataclasses.replace(COLOR_PRESETS["fast"], band=0.0)
        for label, config in configs.items():
            config = dataclasses.replace(config, device="cpu")
            started = time.process_time()
            colored = fit_colors(shape, samples, config)
            seconds = time.process_time() - started
            rows.append((name, label, shape_seconds, seconds, measure(colored, truth, resolution)))
        # Joint: one colour step per shape step while the shape trains.
        config = dataclasses.replace(COLOR_PRESETS["tiny"], device="cpu", steps=shape_steps)
        started = time.process_time()
        trainer = ColorTrainer(samples, shape.normalization, config)
        joint_shape = fit_sdf(mesh, shape_config, on_step=lambda step, model: trainer.step(model.network))
        seconds = time.process_time() - started - shape_seconds
        colored = trainer.finished(joint_shape, seconds, "jointly with the shape fit")
        rows.append((name, f"joint, tiny colours ({shape_steps} steps)", shape_seconds, seconds,
                     measure(colored, truth, resolution)))  # fmt: skip
    lines = [
        "| source | colours | shape fit s | colour fit s (extra) | PSNR network dB | PSNR mesh dB | ΔE00 mean | ΔE00 max |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label, shape_seconds, seconds, m in rows:
        lines.append(
            f"| {name} | {label} | {shape_seconds:.1f} | {seconds:.1f} ({seconds / shape_seconds:.0%}) | "
            f"{m['psnr_network']:.2f} | {m['psnr_mesh']:.2f} | {m['delta_e_mean']:.2f} | {m['delta_e_max']:.2f} |"
        )
    settings = f"shape: tiny preset, {shape_steps} steps; mesh colours at resolution {resolution}; torch {torch.__version__}"
    return "\n".join(lines) + f"\n\n{settings}\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and sizes (a smoke run)")
    print(run(parser.parse_args().quick))
