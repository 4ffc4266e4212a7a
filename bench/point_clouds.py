"""Point clouds against the mesh fit (issue 17): a mesh's vertices alone, with its vertex normals or with estimated
ones, fitted by each point method at the mesh fit's preset and steps, and every result measured against the mesh.

    nice .venv/bin/python bench/point_clouds.py [MESH] [--steps 600] [--resolution 128] [--methods winding siren]
                                                [--threads 1] [--output bench/results/point_clouds_cpu.md]

Rows: the mesh fit (the reference), then per method "given" (the mesh's area-weighted vertex normals) and
"estimated" (`engine.point_clouds.estimate_normals`). Columns: the share of estimated normals that agree with the
mesh's, train seconds (sample preparation included: it is part of the fit), and `engine.metrics.mesh_metrics`
against the mesh (Chamfer-L1 and Hausdorff in units of its largest bounding-box side, NC, F@1 %, IoU). The
method ``winding-nearest`` is the winding method with the distance to the nearest point alone (no tangent planes),
to measure what the planes add.

``--analytic`` measures instead the checks of tests/engine/test_point_clouds.py at their size (2000 points, noise
0.5 % of the radius, a sphere and a torus; tiny preset, 300 steps, resolution 64) for each method, with and without
normals: the extracted vertices' mean |analytic SDF| (for the sphere the radius error) in % of the radius (tube
radius), and the volume IoU against the analytic inside.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import trimesh

from engine.extraction import extract_mesh
from engine.fit import fit_sdf, preset
from engine.mesh_io import load_mesh
from engine.metrics import mesh_metrics
from engine.point_clouds import PointCloud, PointSource, check_point_cloud, estimate_normals

DEFAULT_MESH = Path("/work/shared/meshes/bunny.ply")


class NearestPointSource(PointSource):
    """The winding method with the distance to the nearest point alone (for the comparison only)."""

    def signed_distance(self, queries):
        signed = super().signed_distance(queries)
        return np.sign(signed) * self.tree.query(np.asarray(queries, dtype=np.float64))[0]


def fit_and_measure(shape, config, mesh, resolution: int) -> dict:
    started = time.perf_counter()
    model = fit_sdf(shape, config)
    seconds = time.perf_counter() - started
    vertices, faces = extract_mesh(model, resolution)
    measured = mesh_metrics(vertices, faces, mesh.vertices, mesh.faces)
    return {"seconds": seconds, **measured.to_dict()}


def analytic_table(methods: list[str], count: int = 2000, noise: float = 0.005) -> str:
    from engine.sampling import MeshQueries
    from engine.mesh_io import TriangleMesh

    rng = np.random.default_rng(0)
    directions = rng.normal(size=(count, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    u, v = rng.uniform(0, 2 * np.pi, (2, 4 * count))
    kept = rng.uniform(size=4 * count) < (0.6 + 0.25 * np.cos(v)) / 0.85
    u, v = u[kept][:count], v[kept][:count]
    tube = np.stack([np.cos(v) * np.cos(u), np.cos(v) * np.sin(u), np.sin(v)], axis=1)
    ring = np.stack([0.6 * np.cos(u), 0.6 * np.sin(u), np.zeros_like(u)], axis=1)
    shapes = {
        "sphere r 0.8": (0.8 * directions + rng.normal(size=(count, 3)) * noise * 0.8, directions, 0.8,
                         lambda x: np.linalg.norm(x, axis=1) - 0.8, np.full(3, 0.9)),
        "torus 0.6 / 0.25": (ring + 0.25 * tube + rng.normal(size=(count, 3)) * noise * 0.25, tube, 0.25,
                             lambda x: np.hypot(np.linalg.norm(x[:, :2], axis=1) - 0.6, x[:, 2]) - 0.25,
                             np.array([0.95, 0.95, 0.3])),
    }  # fmt: skip
    lines = ["| shape | method | normals | mean abs SDF of the vertices, % of radius | IoU | train s |", "|" + "---|" * 6]
    for name, (points, normals, size, sdf, reach) in shapes.items():
        for method in methods:
            for label, given in (("given", normals), ("estimated", None)):
                started = time.perf_counter()
                model = fit_sdf(check_point_cloud(points, given), preset("tiny", steps=300, point_method=method))
                seconds = time.perf_counter() - started
                vertices, faces = extract_mesh(model, 64)
                queries = np.random.default_rng(1).uniform(-reach, reach, size=(200_000, 3))
                inside = MeshQueries(TriangleMesh(vertices, faces.astype(np.int64))).winding_number(queries) > 0.5
                truth = sdf(queries) < 0
                iou = (inside & truth).sum() / (inside | truth).sum()
                error = 100 * np.abs(sdf(vertices)).mean() / size
                lines.append(f"| {name} | {method} | {label} | {error:.2f} | {iou:.4f} | {seconds:.0f} |")
                print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mesh", nargs="?", type=Path, default=DEFAULT_MESH)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--methods", nargs="+", default=["winding", "siren"],
                        choices=["winding", "siren", "winding-nearest"])  # fmt: skip
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--analytic", action="store_true", help="the noisy sphere and torus checks instead")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    arguments = argv if argv is not None else sys.argv[1:]
    command = "nice .venv/bin/python bench/point_clouds.py " + shlex.join(arguments)
    if args.analytic:
        methods = [method for method in args.methods if method != "winding-nearest"]
        table = analytic_table(methods)
        print(table)
        if args.output is not None:
            args.output.write_text(f"`{command}` ({args.threads} torch thread(s))\n\n{table}\n")
        return 0

    mesh = load_mesh(args.mesh)
    vertex_normals = np.asarray(trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).vertex_normals)
    started = time.perf_counter()
    estimated = estimate_normals(mesh.vertices)
    estimate_seconds = time.perf_counter() - started
    agreement = float(np.mean(np.einsum("ij,ij->i", estimated, vertex_normals) > 0))
    config = preset(args.preset, steps=args.steps)

    rows = [("mesh", "-", "-", fit_and_measure(mesh, config, mesh, args.resolution))]
    print(rows[-1], file=sys.stderr, flush=True)
    for method in args.methods:
        for label, normals in (("given", vertex_normals), ("estimated", estimated)):
            cloud = check_point_cloud(mesh.vertices, normals, name=args.mesh.name)
            if method == "winding-nearest":
                import engine.fit as fit_module

                original = fit_module.PointSource
                fit_module.PointSource = NearestPointSource
                try:
                    result = fit_and_measure(cloud, preset(args.preset, steps=args.steps), mesh, args.resolution)
                finally:
                    fit_module.PointSource = original
            else:
                result = fit_and_measure(cloud, preset(args.preset, steps=args.steps, point_method=method), mesh,
                                         args.resolution)  # fmt: skip
            rows.append((method, label, f"{agreement:.4f}" if label == "estimated" else "-", result))
            print(rows[-1], file=sys.stderr, flush=True)

    header = "| input | method | normals | normals agreeing | train s | Chamfer-L1 | NC | F@1 % | IoU | Hausdorff |"
    lines = [header, "|" + "---|" * 10]
    for method, label, agree, r in rows:
        source = "mesh" if method == "mesh" else f"{len(mesh.vertices)} vertices"
        lines.append(
            f"| {source} | {'-' if method == 'mesh' else method} | {label} | {agree} | {r['seconds']:.0f} | "
            f"{r['chamfer_l1']:.3e} | {r['normal_consistency']:.4f} | {r['fscore']:.4f} | {r['iou']:.4f} | "
            f"{r['hausdorff']:.4f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.output is not None:
        args.output.write_text(
            f"# Point clouds against the mesh fit: {args.mesh.name}\n\n"
            f"`{command}` ({args.threads} torch thread(s), preset {args.preset}, {args.steps} steps, "
            f"resolution {args.resolution}; normals estimated in {estimate_seconds:.1f} s)\n\n{table}\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
