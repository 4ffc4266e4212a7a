"""Preview render speed (issue 15): single-scale against multiscale sphere tracing of a fitted bunny, one thread.

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/render_speed.py [--sizes 256 512] [--steps 600] [--models DIR]

Models (fitted once into ``--models``, default out/bench/render_speed/, and reused; the fits are short, ``--steps``
per level, so the numbers describe the renderer, not the best bunny):
- ``single``: the fast preset's 3x256 SIREN (omega 30) on /work/shared/meshes/bunny.ply;
- ``nested``: `engine.multires_fit.fit_multires` with 2 levels (2x128 at omega 15, then a 3x256 residual at omega 30
  trained in the band of the first), bands, surface reaches and their local grid measured by the fit (the tracer
  steps on the reaches, farther where the local ones allow); the levels share 2 x ``--steps`` steps
  (`engine.multires_fit.stage_steps`: the coarse stage half of ``--steps``, the finest the rest);
- ``nested3``: the same with 3 levels (2x64 at omega 7.5, 2x128 at 15, 3x256 at 30), so rays reach the finest level
  from the middle level's narrower band;
- ``coarse``: the tiny preset's 2x64 SIREN (omega 15) fitted alone, put in front of ``single`` with delta = 1.3 max
  |f_coarse| over the single model's extracted surface (an un-nested coarse net: DESIGN 7.2's measurement here).

Rows per size: each model single-scale (the finest level alone) and multiscale, with the renderer's exact hits
(sign changes of the finest level, refined) and with the classic footprint threshold (hit where F < eps(t), no
refinement: ``hit_threshold=1``). Columns: evaluations of the finest stage (the expensive network), of every stage,
CPU seconds of the whole render (time.process_time, one thread), steps per ray, pixels hit, and the PSNR of the
image against the same model's single-scale image with the same hits (RGB, background black, so pixels whose
coverage differs count) with the share of pixels whose coverage differs, and against the exact single-scale image.
The camera looks at the bunny's front from ``--distance`` half-sizes of the cube (3.2: the cube fills the image),
horizontal fov 40 degrees.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

MESH = Path("/work/shared/meshes/bunny.ply")


def fit_models(folder: Path, steps: int, names=("single", "nested", "nested3", "coarse")) -> dict[str, Path]:
    """The models of the module's notes (``names``; ``coarse`` needs ``single``), fitted where missing."""
    from engine.fit import preset
    from engine.mesh_io import load_mesh

    folder.mkdir(parents=True, exist_ok=True)
    mesh = load_mesh(MESH)
    paths = {name: folder / f"{name}.pt" for name in ("single", *names)}
    if not paths["single"].exists():
        from engine.fit import fit_sdf

        fit_sdf(mesh, preset("fast", steps=steps, device="cpu")).save(paths["single"])
    if "coarse" in paths and not paths["coarse"].exists():
        from engine.fit import fit_sdf

        fit_sdf(mesh, preset("tiny", steps=min(steps, 300), device="cpu")).save(paths["coarse"])
    for name, levels in (("nested", 2), ("nested3", 3)):
        if name in paths and not paths[name].exists():
            from engine.multires_fit import fit_multires

            fit_multires(mesh, preset("fast", steps=steps, device="cpu"), levels).save(paths[name])
    return paths


def coarse_delta(coarse, single) -> float:
    """1.3 max |f_coarse| (unit-cube units) over the single model's extracted surface (its vertices)."""
    from engine.extraction import extract_mesh
    from engine.networks import evaluate

    vertices, _ = extract_mesh(single, 128)
    unit = single.normalization.to_unit(vertices)
    # The coarse model was fitted alone: its own cube; distances compared in input units, then in the single's cube.
    coarse_unit = coarse.normalization.to_unit(single.normalization.to_input(unit))
    coarse_unit = torch.as_tensor(coarse_unit, dtype=torch.float32)
    input_distance = evaluate(coarse.network, coarse_unit).abs().max().item() / coarse.normalization.scale
    return 1.3 * input_distance * single.normalization.scale


def camera_for(model, size: int, distance: float = 3.2):
    from engine.render_camera import camera_from_dict

    center, half = np.asarray(model.normalization.center), 0.9 / model.normalization.scale
    location = (center + [0.0, 0.0, distance * half]).tolist()
    return camera_from_dict({"location": location, "rotation": np.eye(3).tolist(),
                             "type": "perspective", "fov": 40.0, "resolution": [size, size]})  # fmt: skip


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    mse = float(((reference[..., :3] * reference[..., 3:] - image[..., :3] * image[..., 3:]) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, default=600, help="fit steps per level of the models fitted here")
    parser.add_argument("--models", type=Path, default=Path("out/bench/render_speed"))
    parser.add_argument("--only", nargs="+", default=["nested", "nested3", "coarse"],
                        choices=["single", "nested", "nested3", "coarse"],
                        help="models to render (the coarse model's single-scale rows are the single model's)")
    parser.add_argument("--distance", type=float, default=3.2, help="camera distance in half-sizes of the cube")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from engine.model import load_model
    from engine.render import RenderSettings, render
    from engine.render_levels import coarse_first, level_stack

    began = time.process_time()
    paths = fit_models(args.models, args.steps, tuple(args.only))
    fit_cpu = time.process_time() - began
    single = load_model(paths["single"])
    stacks = {"single": (level_stack(single.network), single.normalization, "3x256 SIREN (one level)")}
    for name, stages in (("nested", "2x128 (omega 15) + 3x256 (30)"),
                         ("nested3", "2x64 (omega 7.5) + 2x128 (15) + 3x256 (30)")):
        if name in args.only:
            nested = load_model(paths[name])
            reaches = [round(d, 4) for d in level_stack(nested.network).deltas]
            stacks[name] = (level_stack(nested.network), nested.normalization,
                            f"nested stages {stages}, reaches {reaches} (unit cube; training bands "
                            f"{[round(d, 4) for d in nested.network.config.deltas[:-1]]}; local reaches on "
                            f"{nested.network.config.reach_cells or 'no'} cells per axis)")
    if "coarse" in args.only:
        from engine.model import reexpressed

        coarse = load_model(paths["coarse"])
        delta = coarse_delta(coarse, single)
        # The coarse net re-expressed in the single model's cube, so both levels take the same points.
        stacks["coarse"] = (coarse_first(reexpressed(coarse, single.normalization), single.network, delta),
                            single.normalization, f"2x64 coarse SIREN (omega 15) in front of the 3x256, delta "
                            f"{delta:.4f} (unit cube; 1.3 max |f_coarse| on the 3x256's surface)")  # fmt: skip
    print(f"models in {args.models} (fit CPU s this run: {fit_cpu:.0f}); one thread; camera fov 40 at "
          f"{args.distance} half-sizes\n")
    print("| model | size | hits | mode | finest-stage evals | all-stage evals | CPU s | steps/ray | hit pixels "
          "| PSNR vs its single-scale | coverage differs | PSNR vs exact single-scale |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        camera = camera_for(single, size, args.distance)
        for name in args.only:
            stack, normalization, _ = stacks[name]
            exact = None
            for hits, threshold in (("exact", 0.0), ("threshold 1", 1.0)):
                reference = None
                for multiscale in (False, True) if len(stack.stages) > 1 else (False,):
                    settings = RenderSettings(multiscale=multiscale, hit_threshold=threshold)
                    started = time.process_time()
                    result = render(stack, normalization, camera, settings)
                    seconds = time.process_time() - started
                    report, evaluations = result.report, result.report["evaluations"]
                    exact = result if exact is None else exact
                    if reference is None:
                        reference, base = result, (evaluations[-1], seconds)
                        quality, differs, ratio, speed = "(reference)", "", "", ""
                    else:
                        quality = f"{psnr(reference.rgba, result.rgba):.1f} dB"
                        coverage = np.isfinite(reference.depth) != np.isfinite(result.depth)
                        differs = f"{100 * coverage.mean():.3f} %"
                        ratio = f" ({base[0] / max(evaluations[-1], 1):.1f}x fewer)"
                        speed = f" ({base[1] / seconds:.1f}x)"
                    against_exact = "(reference)" if result is exact else f"{psnr(exact.rgba, result.rgba):.1f} dB"
                    mode = "multiscale" if multiscale else "single-scale"
                    print(f"| {name} | {size}² | {hits} | {mode} | {evaluations[-1]:,}{ratio} | "
                          f"{sum(evaluations):,} | {seconds:.2f}{speed} | {report['steps']['mean_per_ray']:.1f} | "
                          f"{report['hits']:,} | "
                          f"{quality} | {differs} | {against_exact} |", flush=True)  # fmt: skip
    print()
    for name in args.only:
        print(f"- {name}: {stacks[name][2]}")


if __name__ == "__main__":
    main()
