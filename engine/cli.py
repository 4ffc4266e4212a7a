"""Command line: ``python -m engine fit MESH [MESH...] -o OUTDIR``, ``curvature``, ``evolve``, ``morph``.

The names of commands, options and output files are a stable interface: scripts depend on them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from .fit import PRESETS, preset
from .mesh_io import MeshError, load_mesh, merge_meshes
from .protocol import CURVATURE_FIELDS
from .training import Cancelled, Progress

MODEL_FILENAME = "model.pt"
MESH_FILENAME = "mesh.ply"
METRICS_FILENAME = "metrics.json"
EVOLUTION_MODEL_FILENAME = "evolution.pt"
TIMES_FILENAME = "times.json"
MORPH_FILENAME = "morph.pt"
FRAME_FILENAME = "frame_{:04d}.ply"
"""Per-vertex fields of the curvature PLY, in input units; ``mean`` is H = kappa / 2."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser("fit", help="fit a neural SDF to meshes, extract it and measure it")
    fit.add_argument("meshes", nargs="+", type=Path, help="PLY/OBJ/STL/OFF/GLB files, fitted together as one shape")
    fit.add_argument("-o", "--output", type=Path, required=True, help="folder for mesh.ply, model.pt, metrics.json")
    fit.add_argument("--preset", choices=sorted(PRESETS), default="fast", help="starting settings (default: fast)")
    fit.add_argument("--steps", type=int, help="optimizer steps (default: the preset's)")
    fit.add_argument("--resolution", type=int, default=256, help="marching-cubes grid points per axis (default 256)")
    fit.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to train")
    fit.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    fit.add_argument("--curvature-sampling", action="store_true", help="draw surface samples by curvature bands")
    fit.set_defaults(run=run_fit)

    curvature = commands.add_parser(
        "curvature", help="colour a mesh by the curvature of a fitted model (writes mean, gaussian, k1, k2 fields)"
    )
    curvature.add_argument("model", type=Path, help="a model file written by 'fit'")
    curvature.add_argument("--at", type=Path, help="colour this mesh's vertices (default: the model's own surface)")
    curvature.add_argument("-o", "--output", type=Path, required=True, help="the PLY file to write")
    curvature.add_argument("--quantity", choices=CURVATURE_FIELDS, default="mean", help="what the colours show")
    curvature.add_argument(
        "--project", action="store_true", help="evaluate at the --at vertices moved onto the model's surface"
    )
    curvature.add_argument("--range", nargs=2, type=float, metavar=("LOW", "HIGH"), help="colour range override")
    curvature.add_argument("--resolution", type=int, default=256, help="grid size when extracting (default 256)")
    curvature.set_defaults(run=run_curvature)

    evolve = commands.add_parser(
        "evolve", help="evolve a fitted model's surface (mean curvature flow, offset, vector fields) and mesh it over time"
    )
    evolve.add_argument("model", type=Path, help="a model file written by 'fit'")
    evolve.add_argument("--flow", choices=("mcf", "offset", "field"), required=True, help="what moves the surface")
    evolve.add_argument(
        "--speed",
        type=float,
        help="mcf: lambda in length^2 per time (a sphere's radius follows sqrt(r0^2 - 4 lambda t)); "
        "offset: outward speed in length per time (negative erodes)",
    )
    evolve.add_argument(
        "--fields",
        type=Path,
        help="field: a JSON list of vector fields, e.g. "
        '[{"kind": "source", "center": [0, 0, 0], "strength": 0.1, "radius": 0.3}] (kinds: source, twist, rotation)',
    )
    evolve.add_argument(
        "--times", required=True, help="comma-separated times to mesh, e.g. 0,0.01,0.02 (negative sharpens under mcf)"
    )
    evolve.add_argument("-o", "--output", type=Path, required=True, help="folder for frame_NNNN.ply, times.json, evolution.pt")
    evolve.add_argument("--steps", type=int, help="training steps (default: EvolveConfig's)")
    evolve.add_argument("--resolution", type=int, default=128, help="marching-cubes grid per frame (default 128)")
    evolve.add_argument("--curvature", choices=CURVATURE_FIELDS, help="also colour each frame by this curvature")
    evolve.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to train")
    evolve.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    evolve.set_defaults(run=run_evolve)

    morph = commands.add_parser(
        "morph", help="morph one mesh into another and mesh the in-between shapes (in the source's coordinates)"
    )
    morph.add_argument("source", type=Path, help="the mesh at t = 0")
    morph.add_argument("target", type=Path, help="the mesh at t = 1")
    morph.add_argument("-o", "--output", type=Path, required=True, help="folder for frame_NNNN.ply, times.json, morph.pt")
    morph.add_argument("--method", choices=("levelset", "flow"), default="levelset", help="how (default levelset)")
    morph.add_argument("--frames", type=int, default=9, help="frames from t = 0 to 1, both included (default 9)")
    morph.add_argument(
        "--landmarks",
        type=Path,
        help='flow: a JSON list of point pairs [[[x, y, z] on source, [x, y, z] on target], ...] to pull together',
    )
    morph.add_argument(
        "--align",
        choices=("bounds", "none"),
        default="bounds",
        help="bounds (default): first move and scale the target onto the source's bounding box; none: as they are",
    )
    morph.add_argument("--preset", choices=sorted(PRESETS), default="fast", help="fit settings of both shapes")
    morph.add_argument("--fit-steps", type=int, help="fit steps of each shape (default: the preset's)")
    morph.add_argument("--steps", type=int, help="morph training steps (default: the method's)")
    morph.add_argument("--resolution", type=int, default=128, help="marching-cubes grid per frame (default 128)")
    morph.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to train")
    morph.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    morph.set_defaults(run=run_morph)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (MeshError, ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("\ncancelled", file=sys.stderr)
        return 130


def run_fit(args: argparse.Namespace) -> int:
    from .extraction import extract_mesh
    from .fit import fit_sdf
    from .metrics import mesh_metrics
    from .ply_io import write_ply

    overrides = {"device": args.device, "seed": args.seed}
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps must be at least 1, got {args.steps}")
        overrides["steps"] = args.steps
    if args.curvature_sampling:
        overrides["curvature_sampling"] = True
    config = preset(args.preset, **overrides)
    meshes = [load_mesh(path) for path in args.meshes]
    args.output.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    model = fit_sdf(meshes, config, on_progress=print_progress)
    train_seconds = time.perf_counter() - started
    model.metadata["sources"] = [str(path) for path in args.meshes]
    model.save(args.output / MODEL_FILENAME)

    print(f"extracting the surface at {args.resolution}^3 ...", file=sys.stderr)
    started = time.perf_counter()
    vertices, faces = extract_mesh(model, args.resolution)
    extract_seconds = time.perf_counter() - started
    write_ply(args.output / MESH_FILENAME, vertices, faces)

    print("measuring against the input ...", file=sys.stderr)
    reference = merge_meshes(meshes)
    metrics = mesh_metrics(vertices, faces, reference.vertices, reference.faces)
    report = {
        "metrics": metrics.to_dict(),
        "metrics_normalization": "ground truth scaled so its largest bounding-box side is 1",
        "train_seconds": round(train_seconds, 2),
        "extract_seconds": round(extract_seconds, 2),
        "steps": config.steps,
        "preset": args.preset,
        "resolution": args.resolution,
        "input_faces": int(len(reference.faces)),
        "output_vertices": int(len(vertices)),
        "output_faces": int(len(faces)),
        "device": model.metadata["device"],
    }
    (args.output / METRICS_FILENAME).write_text(json.dumps(report, indent=2) + "\n")
    summary = ", ".join(f"{name} {value:.4g}" for name, value in metrics.to_dict().items())
    print(f"wrote {args.output}/{{{MESH_FILENAME},{MODEL_FILENAME},{METRICS_FILENAME}}}: {summary}")
    return 0


def run_curvature(args: argparse.Namespace) -> int:
    from .colormaps import QUANTITIES, colorize
    from .conventions import CURVATURE_CONVENTION
    from .extraction import extract_mesh
    from .geometry import model_curvatures
    from .model import load_model
    from .ply_io import write_ply

    model = load_model(args.model)
    if args.at is not None:
        mesh = load_mesh(args.at)
        vertices, faces = mesh.vertices, mesh.faces
    else:
        if args.project:
            raise ValueError("--project applies to the vertices of --at MESH; the model's own surface is already on it")
        vertices, faces = extract_mesh(model, args.resolution)
    values = model_curvatures(model, vertices, project=args.project)
    fields = {name: getattr(values, name) for name in CURVATURE_FIELDS}
    colors, (low, high) = colorize(fields[args.quantity], QUANTITIES[args.quantity], value_range=args.range)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_ply(
        args.output,
        vertices,
        faces,
        colors=colors,
        vertex_properties=fields,
        comments=[CURVATURE_CONVENTION, f"colours show {args.quantity} over [{low:.6g}, {high:.6g}]"],
    )
    print(f"wrote {args.output}: {len(vertices)} vertices, colours show {args.quantity} over [{low:.4g}, {high:.4g}]")
    return 0


def run_evolve(args: argparse.Namespace) -> int:
    import dataclasses

    from .conventions import CURVATURE_CONVENTION
    from .evolution import EvolveConfig, evolve, save_evolution
    from .fields import extract_frames, frame_curvatures
    from .surface_flows import FieldTerm, Flow
    from .model import load_model
    from .ply_io import write_ply

    times = _parse_times(args.times)
    if args.flow == "field":
        if args.fields is None or args.speed is not None:
            raise ValueError("--flow field takes --fields FILE (a JSON list of vector fields) and no --speed")
        entries = json.loads(args.fields.read_text())
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise ValueError(f"{args.fields} must hold a JSON list of vector-field objects")
        flow = Flow(fields=tuple(FieldTerm.from_dict(entry) for entry in entries))
    else:
        if args.speed is None or args.fields is not None:
            raise ValueError(f"--flow {args.flow} takes --speed and no --fields")
        flow = Flow(mean_curvature=args.speed) if args.flow == "mcf" else Flow(normal_speed=args.speed)
    config = EvolveConfig(device=args.device, seed=args.seed)
    if args.steps is not None:
        config = dataclasses.replace(config, steps=args.steps)
    model = load_model(args.model)
    args.output.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    evolved = evolve(model, flow, (min(0.0, *times), max(0.0, *times)), config, on_progress=print_progress)
    train_seconds = time.perf_counter() - started
    save_evolution(evolved, args.output / EVOLUTION_MODEL_FILENAME)

    frame_seconds = []
    last = time.perf_counter()

    def timed(index: int, total: int, frame) -> None:
        nonlocal last
        now = time.perf_counter()
        frame_seconds.append(round(now - last, 3))
        last = now
        print(f"frame {index + 1}/{total}: t = {frame.time:.6g}, {len(frame.faces)} faces", file=sys.stderr, flush=True)

    frames = extract_frames(evolved, times, args.resolution, on_frame=timed)
    curvature_seconds, value_range = None, None
    if args.curvature:
        started = time.perf_counter()
        curvatures, value_range = frame_curvatures(evolved, frames, args.curvature)
        curvature_seconds = round(time.perf_counter() - started, 2)
    for index, frame in enumerate(frames):
        comments = [f"t = {frame.time!r}"]
        extra = {}
        if args.curvature:
            comments.append(CURVATURE_CONVENTION)
            extra = {"colors": curvatures[index].colors, "vertex_properties": curvatures[index].fields}
        write_ply(args.output / FRAME_FILENAME.format(index), frame.vertices, frame.faces, comments=comments, **extra)
    report = {
        "times": times,
        "frames": [FRAME_FILENAME.format(i) for i in range(len(times))],
        "flow": flow.to_dict(),
        "model": EVOLUTION_MODEL_FILENAME,
        "train_seconds": round(train_seconds, 2),
        "frame_seconds": frame_seconds,
        "resolution": args.resolution,
        "curvature": args.curvature,
        "curvature_range": value_range,
        "curvature_seconds": curvature_seconds,
    }
    (args.output / TIMES_FILENAME).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {len(times)} frames, {TIMES_FILENAME} and {EVOLUTION_MODEL_FILENAME} to {args.output}")
    return 0


def run_morph(args: argparse.Namespace) -> int:
    import numpy as np

    from .fields import even_times, extract_frames
    from .morph import align_bounds, fit_pair, morph, morph_config, save_morph
    from .ply_io import write_ply

    times = even_times(args.frames)
    landmarks = None
    if args.landmarks is not None:
        if args.method != "flow":
            raise ValueError("--landmarks applies to --method flow")
        pairs = np.asarray(json.loads(args.landmarks.read_text()), dtype=np.float64)
        if pairs.ndim != 3 or pairs.shape[1:] != (2, 3):
            raise ValueError(f"{args.landmarks} must hold a JSON list of [[x, y, z], [x, y, z]] pairs, got shape {pairs.shape}")
        landmarks = (pairs[:, 0], pairs[:, 1])
    fit_overrides = {"device": args.device, "seed": args.seed}
    if args.fit_steps is not None:
        fit_overrides["steps"] = args.fit_steps
    fit_config = preset(args.preset, **fit_overrides)
    source, target = load_mesh(args.source), load_mesh(args.target)
    alignment = None
    if args.align == "bounds":
        target, scale, offset = align_bounds(target, source)
        alignment = {"scale": scale, "offset": offset.tolist()}
        if landmarks is not None:
            landmarks = (landmarks[0], landmarks[1] * scale + offset)
    args.output.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    model_a, model_b = fit_pair(source, target, fit_config, on_progress=lambda _index, p: print_progress(p))
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    config = morph_config(args.method, steps=args.steps, device=args.device, seed=args.seed)
    morphed = morph(model_a, model_b, config, landmarks=landmarks, on_progress=print_progress)
    morph_seconds = time.perf_counter() - started
    save_morph(morphed, args.output / MORPH_FILENAME)

    frame_seconds = []
    last = time.perf_counter()

    def write_frame(index: int, total: int, frame) -> None:
        nonlocal last
        write_ply(args.output / FRAME_FILENAME.format(index), frame.vertices, frame.faces, comments=[f"t = {frame.time!r}"])
        now = time.perf_counter()
        frame_seconds.append(round(now - last, 3))
        last = now
        print(f"frame {index + 1}/{total}: t = {frame.time:.4g}, {len(frame.faces)} faces", file=sys.stderr, flush=True)

    extract_frames(morphed, times, args.resolution, on_frame=write_frame)
    report = {
        "times": times,
        "frames": [FRAME_FILENAME.format(i) for i in range(len(times))],
        "method": args.method,
        "target_alignment": alignment,
        "model": MORPH_FILENAME,
        "fit_seconds": round(fit_seconds, 2),
        "train_seconds": round(morph_seconds, 2),
        "frame_seconds": frame_seconds,
        "resolution": args.resolution,
    }
    (args.output / TIMES_FILENAME).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {len(times)} frames, {TIMES_FILENAME} and {MORPH_FILENAME} to {args.output}")
    return 0


def _parse_times(text: str) -> list[float]:
    try:
        times = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--times must be comma-separated numbers, got {text!r}") from None
    if not times or not all(math.isfinite(t) for t in times):
        raise ValueError(f"--times needs at least one finite time, got {text!r}")
    return times


def print_progress(progress: Progress) -> None:
    width = 30
    filled = int(width * progress.step / progress.total)
    bar = "#" * filled + "-" * (width - filled)
    line = (
        f"\rtraining [{bar}] {progress.step}/{progress.total} loss {progress.loss:.4g} "
        f"elapsed {progress.elapsed_s:.0f}s eta {progress.eta_s:.0f}s"
    )
    end = "\n" if progress.step == progress.total else ""
    print(line, end=end, file=sys.stderr, flush=True)
