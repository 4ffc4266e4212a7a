"""The subcommands: for each, its job kind, the arguments that set the job's fields, how the other fields and the
input arrays come from the arguments, and how the job's outputs are written (PLY and JSON files)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..jobs import JobOutput
from . import bake_command, render_command, ridges_command, tracked_frames
from ..protocol import CURVATURE_FIELDS

MESH_FILENAME = "mesh.ply"
METRICS_FILENAME = "metrics.json"
TIMES_FILENAME = "times.json"
FRAME_FILENAME = "frame_{:04d}.ply"
SOURCE_FRAME_FILENAME = "source_{:04d}.ply"


@dataclass(frozen=True)
class Option:
    """A command-line option that sets one field of the job spec."""

    field: str
    flags: tuple[str, ...]
    extra: dict = field(default_factory=dict)
    """argparse settings beyond those read off the field (its type, default, choices, help)."""


@dataclass(frozen=True)
class Command:
    """One subcommand: its job kind, the arguments that set fields one to one, and how the other fields and the
    input arrays come from the arguments (``derive(args) -> (params, inputs)``)."""

    kind: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    options: tuple[Option, ...]
    derived: tuple[str, ...]
    """Fields set by ``derive`` rather than by an option of their own (e.g. ``names`` from the mesh files)."""
    derive: Callable[[argparse.Namespace], dict]
    """The derived fields' params (reading at most small JSON files)."""
    read_inputs: Callable[[argparse.Namespace], dict]
    """The job's input arrays, read from the input files once every argument is checked."""
    write: Callable[[argparse.Namespace, dict, JobOutput, Path], str]
    """write(args, inputs, output, folder): the job's outputs into the staging folder (beside its model file);
    returns the summary."""
    writes_folder: bool
    """``-o`` names a folder (fit, evolve, morph) rather than one file (extract, curvature)."""


def _mesh_inputs(paths: list[Path]) -> dict:
    from ..mesh_io import load_mesh

    inputs = {}
    for index, mesh in enumerate(map(load_mesh, paths)):
        inputs[f"vertices_{index}"], inputs[f"faces_{index}"] = mesh.vertices, mesh.faces
    return inputs


def _fit_inputs(paths: list[Path], colors: bool = False) -> dict:
    """Each file's mesh (``vertices_<i>``, ``faces_<i>``) or, for a file of points without faces, its points
    (``points_<i>``, and ``normals_<i>`` where the file has them); with ``colors``, its colours
    (`engine.color_samples.file_color_inputs`)."""
    from ..point_clouds import PointCloud, load_shape

    inputs = {}
    for index, path in enumerate(paths):
        shape = load_shape(path)
        if colors:
            from ..color_samples import file_color_inputs

            inputs.update(file_color_inputs(path, index, shape))
        if isinstance(shape, PointCloud):
            inputs[f"points_{index}"] = shape.points
            if shape.normals is not None:
                inputs[f"normals_{index}"] = shape.normals
        else:
            inputs[f"vertices_{index}"], inputs[f"faces_{index}"] = shape.vertices, shape.faces
    return inputs


def _read_json(path: Path, what: str):
    """A JSON input file's contents; errors name the file (and the line of a syntax error)."""
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not {what}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        where = f"{error.msg} at line {error.lineno}, column {error.colno}"
        raise ValueError(f"{path} is not valid JSON ({where})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text file of {what}") from None


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _frames(output: JobOutput) -> list[tuple[float, np.ndarray, np.ndarray]]:
    arrays = output.arrays
    return [(float(t), arrays[f"vertices_{i}"], arrays[f"faces_{i}"]) for i, t in enumerate(arrays["times"])]


def _no_inputs(args) -> dict:
    return {}


# fit


def _fit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "meshes", nargs="+", type=Path,
        help="PLY/OBJ/STL/OFF/GLB files, fitted together as one shape: meshes, or point clouds (files without faces; "
        "a PLY's nx ny nz are their normals, else they are estimated)",
    )  # fmt: skip
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for mesh.ply, model.pt, metrics.json")


def _srgb_colors(arrays: dict) -> dict:
    """``write_ply``'s colours of a job's linear ``colors`` (8-bit sRGB, as PLY viewers show them), if any."""
    if arrays.get("colors") is None:
        return {}
    from ..color_samples import linear_to_srgb8

    return {"colors": linear_to_srgb8(arrays["colors"]) / 255.0}


def _fit_write(args, inputs: dict, output: JobOutput, folder: Path) -> str:
    from ..ply_io import write_ply

    write_ply(folder / MESH_FILENAME, output.arrays["vertices"], output.arrays["faces"], **_srgb_colors(output.arrays))
    _write_json(folder / METRICS_FILENAME, output.summary)
    measured = output.summary.get("metrics", {})
    summary = ", ".join(f"{name} {value:.4g}" for name, value in measured.items())
    for warning in output.summary.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    normals = output.summary.get("normals")
    noted = f" (normals {normals})" if normals in ("estimated", "partly estimated") else ""
    return f"wrote {args.output}/{{{MESH_FILENAME},{output.files['model']},{METRICS_FILENAME}}}{noted}" + (
        f": {summary}" if summary else ""
    )


# extract


def _model_arguments(output_help: str) -> Callable[[argparse.ArgumentParser], None]:
    def arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("model", type=Path, help="a model file written by 'fit'")
        parser.add_argument("-o", "--output", type=Path, required=True, help=output_help)

    return arguments


def _model_param(args) -> dict:
    return {"model": str(args.model)}


def _extract_write(args, inputs: dict, output: JobOutput, folder: Path) -> str:
    from ..ply_io import write_ply

    arrays = output.arrays
    write_ply(folder / args.output.name, arrays["vertices"], arrays["faces"], **_srgb_colors(arrays))
    return f"wrote {args.output}: {len(arrays['faces'])} faces" + (" with colours" * ("colors" in arrays))


# curvature


def _curvature_arguments(parser: argparse.ArgumentParser) -> None:
    _model_arguments("the PLY file to write")(parser)
    parser.add_argument("--at", type=Path, help="colour this mesh's vertices (default: the model's own surface)")


def _curvature_inputs(args) -> dict:
    if args.at is None:
        return {}
    from ..mesh_io import load_mesh

    args.at_mesh = load_mesh(args.at)
    return {"points": args.at_mesh.vertices}


def _curvature_write(args, inputs: dict, output: JobOutput, folder: Path) -> str:
    from ..ply_io import write_ply

    arrays, summary = output.arrays, output.summary
    at = getattr(args, "at_mesh", None)
    vertices, faces = (arrays["vertices"], arrays["faces"]) if at is None else (at.vertices, at.faces)
    low, high = summary["range"]
    shown = f"colours show {summary['quantity']} over"
    write_ply(
        folder / args.output.name,
        vertices,
        faces,
        colors=arrays["colors"],
        vertex_properties={name: arrays[name] for name in CURVATURE_FIELDS},
        comments=[summary["convention"], f"{shown} [{low:.6g}, {high:.6g}]"],
    )
    return f"wrote {args.output}: {len(vertices)} vertices, {shown} [{low:.4g}, {high:.4g}]"


# evolve


def _evolve_arguments(parser: argparse.ArgumentParser) -> None:
    _model_arguments("folder for frame_NNNN.ply, times.json, evolution.pt (tracked_NNNN.ply: --track-vertices)")(parser)
    parser.add_argument("--flow", choices=("mcf", "offset", "field"), required=True, help="what moves the surface")
    parser.add_argument(
        "--speed",
        type=float,
        help="mcf: lambda in length^2 per time (a sphere's radius follows sqrt(r0^2 - 4 lambda t)); "
        "offset: outward speed in length per time (negative erodes)",
    )
    parser.add_argument(
        "--fields",
        type=Path,
        help="field: a JSON list of vector fields, e.g. "
        '[{"kind": "source", "center": [0, 0, 0], "strength": 0.1, "radius": 0.3}] (kinds: source, twist, rotation)',
    )
    parser.add_argument(
        "--times", required=True, help="comma-separated times to mesh, e.g. 0,0.01,0.02 (negative sharpens under mcf)"
    )


def _evolve_derive(args) -> dict:
    if args.flow == "field":
        if args.fields is None or args.speed is not None:
            raise ValueError("--flow field takes --fields FILE (a JSON list of vector fields) and no --speed")
        flow = {"fields": _vector_fields(args.fields)}
    else:
        if args.speed is None or args.fields is not None:
            raise ValueError(f"--flow {args.flow} takes --speed and no --fields")
        flow = {"mean_curvature": args.speed} if args.flow == "mcf" else {"normal_speed": args.speed}
    return {"model": str(args.model), "flow": flow, "times": _parse_times(args.times)}


def _vector_fields(path: Path) -> list[dict]:
    """The vector fields of a --fields file, each checked; errors name the file and the entry."""
    from ..surface_flows import FieldTerm

    entries = _read_json(path, "vector fields")
    if not isinstance(entries, list):
        raise ValueError(f"{path} must hold a JSON list of vector-field objects, got a {type(entries).__name__}")
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}, field {number}: must be an object like {{\"kind\": \"source\", ...}}")
        try:
            FieldTerm.from_dict(entry)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}, field {number}: {error}") from None
    return entries


def _parse_times(text: str) -> list[float]:
    try:
        times = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--times must be comma-separated numbers, got {text!r}") from None
    if not times or not all(math.isfinite(t) for t in times):
        raise ValueError(f"--times needs at least one finite time, got {text!r}")
    return times


def _evolve_write(args, inputs: dict, output: JobOutput, folder: Path) -> str:
    from ..conventions import CURVATURE_CONVENTION
    from ..ply_io import write_ply

    arrays, summary = output.arrays, output.summary
    colored = summary["curvature"] is not None
    names = []
    for index, (t, vertices, faces) in enumerate(_frames(output)):
        extra, comments = {}, [f"t = {t!r}"]
        if colored:
            comments.append(CURVATURE_CONVENTION)
            fields = {name: arrays[f"{name}_{index}"] for name in CURVATURE_FIELDS}
            extra = {"colors": arrays[f"colors_{index}"], "vertex_properties": fields}
        elif f"surface_colors_{index}" in arrays:  # a coloured model's colours, where no curvature colours them
            extra = _srgb_colors({"colors": arrays[f"surface_colors_{index}"]})
        names.append(FRAME_FILENAME.format(index))
        write_ply(folder / names[-1], vertices, faces, comments=comments, **extra)
    tracked = tracked_frames.write_tracked_frames(folder, output)
    _write_json(folder / TIMES_FILENAME, {**summary, "frames": names, **tracked, "model": output.files["model"]})
    written = f"{len(names)} frames{tracked_frames.tracked_text(tracked)}, {TIMES_FILENAME} and {output.files['model']}"
    return f"wrote {written} to {args.output}"


# morph


def _morph_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="the mesh at t = 0")
    parser.add_argument("target", type=Path, help="the mesh at t = 1")
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="folder for frame_NNNN.ply, times.json, morph.pt"
    )
    parser.add_argument(
        "--landmarks",
        type=Path,
        help="flow: a JSON list of point pairs [[[x, y, z] on source, [x, y, z] on target], ...] to pull together",
    )


def _morph_derive(args) -> dict:
    if args.landmarks is not None:
        if args.method != "flow":
            raise ValueError("--landmarks applies to --method flow")
        args.landmark_pairs = _landmark_pairs(args.landmarks)
    return {"names": [str(args.source), str(args.target)]}


def _landmark_pairs(path: Path) -> np.ndarray:
    """The (k, 2, 3) point pairs of a --landmarks file; errors name the file and the pair."""
    pairs = _read_json(path, "landmarks")
    if not isinstance(pairs, list):
        kind = type(pairs).__name__
        raise ValueError(f"{path} must hold a JSON list of [[x, y, z], [x, y, z]] pairs, got a {kind}")
    for number, pair in enumerate(pairs, start=1):
        points = np.asarray(pair, dtype=object)
        numbers = points.shape == (2, 3) and all(type(v) in (int, float) for v in points.flat)
        if not numbers:
            expected = "[[x, y, z] on the source, [x, y, z] on the target]"
            raise ValueError(f"{path}, pair {number}: must be {expected}, got {pair!r}")
        if not np.isfinite(points.astype(np.float64)).all():
            raise ValueError(f"{path}, pair {number}: the coordinates must be finite, got {pair!r}")
    return np.asarray(pairs, dtype=np.float64).reshape(-1, 2, 3)


def _morph_inputs(args) -> dict:
    inputs = _mesh_inputs([args.source, args.target])
    if args.colors:
        from ..color_samples import file_color_inputs
        from ..mesh_io import TriangleMesh

        for index, path in enumerate((args.source, args.target)):
            mesh = TriangleMesh(inputs[f"vertices_{index}"], inputs[f"faces_{index}"])
            inputs.update(file_color_inputs(path, index, mesh))
    if args.landmarks is not None:
        pairs = args.landmark_pairs
        inputs["landmarks_source"], inputs["landmarks_target"] = pairs[:, 0], pairs[:, 1]
    return inputs


def _morph_write(args, inputs: dict, output: JobOutput, folder: Path) -> str:
    from ..ply_io import write_ply

    names = []
    for index, (t, vertices, faces) in enumerate(_frames(output)):
        names.append(FRAME_FILENAME.format(index))
        colors = _srgb_colors({"colors": output.arrays[f"surface_colors_{index}"]}) if args.colors else {}
        write_ply(folder / names[-1], vertices, faces, comments=[f"t = {t!r}"], **colors)
    report = {**output.summary, "frames": names, "model": output.files["model"]}
    if "source_positions" in output.arrays:
        faces, colors = inputs["faces_0"], _srgb_colors({"colors": output.arrays.get("source_colors")})
        report["source_frames"] = []
        for index, (t, positions) in enumerate(zip(output.arrays["times"], output.arrays["source_positions"])):
            report["source_frames"].append(SOURCE_FRAME_FILENAME.format(index))
            write_ply(folder / report["source_frames"][-1], positions, faces, comments=[f"t = {float(t)!r}"], **colors)
    _write_json(folder / TIMES_FILENAME, report)
    return f"wrote {len(names)} frames, {TIMES_FILENAME} and {output.files['model']} to {args.output}"


DEVICE = Option("device", ("--device",))
SEED = Option("seed", ("--seed",))
RESOLUTION = Option("resolution", ("--resolution",))

COMMANDS: dict[str, Command] = {
    "fit": Command(
        "fit",
        "fit a neural SDF to meshes, extract it and measure it",
        _fit_arguments,
        (Option("preset", ("--preset",)), Option("steps", ("--steps",)), Option("levels", ("--levels",)), RESOLUTION,
         DEVICE, SEED, Option("curvature_sampling", ("--curvature-sampling",)),
         Option("point_method", ("--point-method",)), Option("metrics", ("--metrics",)),
         Option("colors", ("--colors",)), Option("color_steps", ("--color-steps",)), Option("tuner", ("--tuner",)),
         Option("compiled_step", ("--compiled-step",))),
        ("names", "preview_interval"),
        # The command line shows no live previews (the add-on's), so its fits make none.
        lambda args: {"names": [str(path) for path in args.meshes], "preview_interval": 0.0},
        lambda args: _fit_inputs(args.meshes, args.colors),
        _fit_write,
        writes_folder=True,
    ),
    "extract": Command(
        "extract",
        "extract a fitted model's surface again (marching cubes), without training",
        _model_arguments("the PLY file to write"),
        (RESOLUTION, DEVICE, Option("level", ("--level",))),
        ("model",),
        _model_param,
        _no_inputs,
        _extract_write,
        writes_folder=False,
    ),
    "curvature": Command(
        "curvature",
        "colour a mesh by the curvature of a fitted model (writes mean, gaussian, k1, k2 fields)",
        _curvature_arguments,
        (Option("quantity", ("--quantity",)), Option("colormap", ("--colormap",)),
         Option("range", ("--range",), {"nargs": 2, "metavar": ("LOW", "HIGH")}),
         Option("project", ("--project",)), RESOLUTION, DEVICE),
        ("model",),
        _model_param,
        _curvature_inputs,
        _curvature_write,
        writes_folder=False,
    ),
    "evolve": Command(
        "evolve",
        "evolve a fitted model's surface (mean curvature flow, offset, vector fields) and mesh it over time",
        _evolve_arguments,
        (Option("steps", ("--steps",)), RESOLUTION, Option("curvature", ("--curvature",)),
         Option("colormap", ("--colormap",)), DEVICE, SEED, Option("track_vertices", ("--track-vertices",))),
        ("model", "flow", "times"),
        _evolve_derive,
        _no_inputs,
        _evolve_write,
        writes_folder=True,
    ),
    "morph": Command(
        "morph",
        "morph one mesh into another and mesh the in-between shapes (in the source's coordinates)",
        _morph_arguments,
        (Option("method", ("--method",)), Option("frames", ("--frames",)), Option("align", ("--align",)),
         Option("preset", ("--preset",)), Option("fit_steps", ("--fit-steps",)), Option("steps", ("--steps",)),
         RESOLUTION, DEVICE, SEED, Option("warp_source", ("--warp-source",)), Option("colors", ("--colors",))),
        ("names",),
        _morph_derive,
        _morph_inputs,
        _morph_write,
        writes_folder=True,
    ),
}
"""Every subcommand by name; each runs the job of its kind (the test checks that options and derived fields
together are exactly the spec's fields)."""
for _module in (bake_command, ridges_command, render_command):  # commands whose pieces have modules of their own
    COMMANDS[_module.KIND] = Command(
        _module.KIND, _module.HELP, _module.arguments, tuple(Option(*option) for option in _module.OPTIONS),
        getattr(_module, "DERIVED", ("model",)), getattr(_module, "derive", _model_param), _module.read_inputs,
        _module.write, _module.WRITES_FOLDER,
    )
