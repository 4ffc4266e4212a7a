"""Levels of detail from one model (issue 15): quality per level, the finest level against a single SIREN trained for
the same CPU time, band-culled extraction against the full grid, and the level targets' choice (the fit itself or
the mean-curvature-flow scale space).

    OMP_NUM_THREADS=1 nice .venv/bin/python bench/lod_quality.py [--mesh ../shared/meshes/bunny.ply] [--levels 3]
        [--steps 500] [--width 128] [--resolution 128] [--extract-resolution 192]

Everything runs in this one process on one thread; times are CPU seconds (time.process_time).
- Fit: `engine.multires_fit.fit_multires` with the ``tiny`` preset's batches and pools, ``--steps`` per level, the
  finest stage ``--width`` x 2 at omega 30 (the coarser ones from `stage_configs`); then `engine.fit.fit_sdf` of that
  finest architecture alone, its steps set so its CPU time equals the multiresolution fit's (from a timed 40-step
  run).
- Metrics: `engine.metrics.mesh_metrics` (ground truth scaled so its largest side is 1) of each level's mesh at
  ``--resolution``; delta_k and the largest |f_<=k| on the finer surfaces (nesting).
- Extraction at ``--extract-resolution``: the dense grid and the sparse (empty-space skipping) extraction, each with
  and without band culling; evaluations per stage (grid values only: the sparse path's few gradient samples are not
  counted) and whether the meshes are identical.
- Level targets: the input smoothed by libigl's implicit cotangent mean curvature flow to the same Chamfer as level
  0, and its shrinkage and largest distance from the input (the band a coarse level trained on it would need).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def mcf_smoothed(vertices: np.ndarray, faces: np.ndarray, time_step: float, steps: int) -> np.ndarray:
    """Implicit cotangent mean curvature flow (Desbrun et al.): (M - dt L) V' = M V, the mass matrix rebuilt per
    step (libigl's cotmatrix and Voronoi mass matrix)."""
    import igl
    import scipy.sparse.linalg

    laplacian = igl.cotmatrix(vertices, faces)
    current = vertices.copy()
    for _ in range(steps):
        mass = igl.massmatrix(current, faces, igl.MASSMATRIX_TYPE_VORONOI)
        current = scipy.sparse.linalg.spsolve((mass - time_step * laplacian).tocsc(), mass @ current)
    return current


def shaded_picture(meshes: list[tuple[np.ndarray, np.ndarray]], labels: list[str], path: Path, size: int = 320) -> None:
    """The meshes side by side in one PNG: orthographic, seen along -z (y up) after a turn about x and y, flat Lambert
    shading (a numpy z-buffer, one triangle at a time), all at one scale."""
    from PIL import Image, ImageDraw

    turn_x, turn_y = np.radians(10.0), np.radians(30.0)
    rotate = np.array([[1, 0, 0], [0, np.cos(turn_x), -np.sin(turn_x)], [0, np.sin(turn_x), np.cos(turn_x)]]) @ np.array(
        [[np.cos(turn_y), 0, np.sin(turn_y)], [0, 1, 0], [-np.sin(turn_y), 0, np.cos(turn_y)]])  # fmt: skip
    every = np.concatenate([vertices for vertices, _ in meshes])
    center, extent = (every.min(0) + every.max(0)) / 2, np.ptp(every, axis=0).max()
    light = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
    panels = []
    for vertices, faces in meshes:
        points = (vertices - center) @ rotate.T / extent * 0.9 * size + size / 2
        image, depth = np.full((size, size), 255.0), np.full((size, size), -np.inf)
        corners = points[faces]
        normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        shade = 40 + 200 * np.clip(normals @ light, 0, 1)
        for (a, b, c), tone, facing in zip(corners, shade, normals[:, 2]):
            if facing <= 0:
                continue
            low, high = np.floor(np.minimum(np.minimum(a, b), c)[:2]).astype(int), np.ceil(np.maximum(np.maximum(a, b), c)[:2]).astype(int)
            low, high = np.clip(low, 0, size - 1), np.clip(high, 0, size - 1)
            xs, ys = np.meshgrid(np.arange(low[0], high[0] + 1), np.arange(low[1], high[1] + 1))
            v0, v1, v2 = b[:2] - a[:2], c[:2] - a[:2], np.stack([xs - a[0], ys - a[1]], -1)
            area = v0[0] * v1[1] - v0[1] * v1[0]
            if abs(area) < 1e-12:
                continue
            u = (v2[..., 0] * v1[1] - v2[..., 1] * v1[0]) / area
            w = (v0[0] * v2[..., 1] - v0[1] * v2[..., 0]) / area
            inside = (u >= 0) & (w >= 0) & (u + w <= 1)
            z = a[2] + u * (b[2] - a[2]) + w * (c[2] - a[2])
            rows, cols = ys[inside], xs[inside]
            nearer = z[inside] > depth[rows, cols]
            depth[rows[nearer], cols[nearer]] = z[inside][nearer]
            image[rows[nearer], cols[nearer]] = tone
        panels.append(np.flipud(image))
    picture = Image.fromarray(np.concatenate(panels, axis=1).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for index, label in enumerate(labels):
        draw.text((index * size + 8, 8), label, fill=0)
    picture.save(path)


def volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    corners = vertices[faces]
    return float(np.einsum("ij,ij->i", corners[:, 0], np.cross(corners[:, 1], corners[:, 2])).sum() / 6.0)


def timed(function, *args, **kwargs):
    started = time.process_time()
    result = function(*args, **kwargs)
    return result, time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mesh", type=Path, default=ROOT.parent / "shared" / "meshes" / "bunny.ply")
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--steps", type=int, default=500, help="steps per level")
    parser.add_argument("--width", type=int, default=128, help="the finest stage's width")
    parser.add_argument("--resolution", type=int, default=128, help="marching cubes for the metrics")
    parser.add_argument("--extract-resolution", type=int, default=192)
    parser.add_argument("--picture", type=Path, help="write the levels side by side (LOD0 the finest first) and stop")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from engine.extraction import extract_mesh
    from engine.fit import fit_sdf, preset
    from engine.mesh_io import load_mesh
    from engine.metrics import mesh_metrics
    from engine.model import SDFModel
    from engine.multires import LevelOfDetail
    from engine.multires_fit import fit_multires, level_surface_samples
    from engine.networks import SirenConfig

    mesh = load_mesh(args.mesh)
    finest = SirenConfig(hidden_features=args.width, hidden_layers=2, first_omega=30.0)
    config = preset("tiny", network=finest, steps=args.steps)
    print(f"# {args.mesh.name}: {len(mesh.faces):,} faces; {args.levels} levels x {args.steps} steps, finest "
          f"{args.width}x2 omega 30, tiny batches ({config.surface_batch}+{config.volume_batch}), one thread\n")  # fmt: skip

    model, multires_seconds = timed(fit_multires, mesh, config, args.levels)
    network = model.network
    if args.picture is not None:
        levels = range(network.levels - 1, -1, -1)
        # As Make LOD Objects makes them: LOD i at the resolution halved i times (at least 32).
        resolutions = [max(min(args.resolution, 32), args.resolution >> i) for i in range(network.levels)]
        meshes = [extract_mesh(SDFModel(LevelOfDetail(network, k), model.normalization), r) for k, r in zip(levels, resolutions)]
        labels = [f"LOD{i} (level {k}, {r}^3): {len(f):,} faces" for i, (k, r, (_, f)) in enumerate(zip(levels, resolutions, meshes))]
        shaded_picture(meshes, labels, args.picture)
        print(f"wrote {args.picture}")
        return
    # The single SIREN's CPU cost per step and its fixed cost (pools, distances) from two short runs.
    (_, short), (_, long) = (timed(fit_sdf, mesh, dataclasses.replace(config, steps=n, validate_every=n)) for n in (20, 60))
    per_step = max((long - short) / 40, 1e-6)
    single_steps = max(20, int(round((multires_seconds - (short - 20 * per_step)) / per_step)))
    single, single_seconds = timed(fit_sdf, mesh, dataclasses.replace(config, steps=single_steps))

    print("## Quality per level\n")
    print("| model | parameters | train CPU s | delta | Chamfer-L1 | normal consistency | F-score | IoU | Hausdorff |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = [(f"level {k}", SDFModel(LevelOfDetail(network, k), model.normalization), k) for k in range(network.levels)]
    rows.append((f"single SIREN {args.width}x2, {single_steps} steps", single, None))
    level_metrics = {}
    unit_surface = torch.from_numpy(model.normalization.to_unit(mesh.vertices).astype(np.float32))
    for name, level_model, level in rows:
        vertices, faces = extract_mesh(level_model, args.resolution)
        measured = mesh_metrics(vertices, faces, mesh.vertices, mesh.faces)
        level_metrics[level] = measured
        if level is None:
            parameters, seconds, delta = sum(p.numel() for p in single.network.parameters()), single_seconds, "—"
        else:
            parameters = sum(p.numel() for stage in network.stages[: level + 1] for p in stage.parameters())
            seconds = sum(model.metadata["stage_cpu_seconds"][: level + 1])
            delta = f"{network.config.deltas[level]:.4f}"
        print(f"| {name} | {parameters:,} | {seconds:.1f} | {delta} | {measured.chamfer_l1:.3e} | "
              f"{measured.normal_consistency:.4f} | {measured.fscore:.4f} | {measured.iou:.4f} | {measured.hausdorff:.4f} |")  # fmt: skip
    print(f"\n(train CPU s of a level: its stages' in the fit, the sampling pools included; the whole multiresolution fit took "
          f"{multires_seconds:.1f} CPU s, the single SIREN {single_seconds:.1f} CPU s.)\n")  # fmt: skip

    print("## Nesting\n")
    print("| coarse level k | delta_k (trained in) | delta_k (kept) | largest \\|f_<=k\\| on each finer level's surface |")
    print("|---|---|---|---|")
    with torch.no_grad():
        for level in range(network.levels - 1):
            reaches = []
            for finer in range(level + 1, network.levels):
                samples = level_surface_samples(network, finer, unit_surface)
                reaches.append(f"level {finer}: {float(network(samples, level).abs().max()):.4f} ({len(samples):,} samples)")
            trained = model.metadata["trained_deltas"][level]
            print(f"| {level} | {trained:.4f} | {network.config.deltas[level]:.4f} | {'; '.join(reaches)} |")

    print(f"\n## Band-culled extraction at {args.extract_resolution}³ (the finest level)\n")
    print("| extraction | CPU s | stage evaluations (coarse to fine) | faces | same mesh as the full grid |")
    print("|---|---|---|---|---|")
    reference = None
    for skip in (False, True):
        for culling in (False, True):
            field = LevelOfDetail(network)
            counted = SDFModel(field, model.normalization)
            if not culling:  # count the full evaluations: every stage at every point evaluated
                calls = [0]
                hook = network.stages[0].register_forward_pre_hook(lambda _m, inputs: calls.__setitem__(0, calls[0] + len(inputs[0])))
            (vertices, faces), seconds = timed(extract_mesh, counted, args.extract_resolution,
                                               skip_empty_space=skip, band_culling=culling)  # fmt: skip
            if culling:
                evaluations = " / ".join(f"{count:,}" for count in field.stage_evaluations)
            else:
                hook.remove()
                evaluations = " / ".join([f"{calls[0]:,}"] * network.levels)
            if reference is None:
                reference, same = (vertices, faces), "—"
            else:
                same = "yes" if np.array_equal(faces, reference[1]) and np.allclose(vertices, reference[0], atol=1e-6) else "**no**"
            name = ("sparse" if skip else "dense grid") + (" + band culling" if culling else "")
            print(f"| {name} | {seconds:.2f} | {evaluations} | {len(faces):,} | {same} |")

    print("\n## Level targets: the fit itself vs the mean-curvature-flow scale space\n")
    level0 = SDFModel(LevelOfDetail(network, 0), model.normalization)
    vertices0, faces0 = extract_mesh(level0, args.resolution)
    side = float(np.ptp(mesh.vertices, axis=0).max())
    input_volume = volume(mesh.vertices, mesh.faces)
    with torch.no_grad():
        reach0 = float(network(unit_surface, 0).abs().max()) / model.normalization.scale / side
    print("| coarse target | Chamfer-L1 to the input | volume / input's | Hausdorff to the input (side 1) |")
    print("|---|---|---|---|")
    print(f"| level 0 of the fit (the input as target) | {level_metrics[0].chamfer_l1:.3e} | "
          f"{volume(vertices0, faces0) / input_volume:.3f} | {level_metrics[0].hausdorff:.4f} (max \\|f_0\\| on the input's "
          f"vertices {reach0:.4f}) |")  # fmt: skip
    unit = (mesh.vertices - mesh.vertices.mean(axis=0)) / side
    for flow_time in (1e-4, 3e-4, 1e-3, 3e-3):
        smoothed = mcf_smoothed(unit, mesh.faces, flow_time / 4, 4) * side + mesh.vertices.mean(axis=0)
        measured = mesh_metrics(smoothed, mesh.faces, mesh.vertices, mesh.faces, iou_points=200_000)
        print(f"| input after mean curvature flow t = {flow_time:g} (side 1) | {measured.chamfer_l1:.3e} | "
              f"{volume(smoothed, mesh.faces) / input_volume:.3f} | {measured.hausdorff:.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
