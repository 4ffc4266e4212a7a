"""Command line: ``python -m engine fit MESH [MESH...] -o OUTDIR``, ``extract``, ``curvature``, ``evolve``, ``morph``.

Each command runs the job spec of its kind (`engine.jobs`), as the worker does: the options are the spec's fields
(help texts, defaults and choices come from there), files become the job's input arrays, and the job's outputs are
written as PLY and JSON files. The names of commands, options and output files are a stable interface: scripts
depend on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .jobs import JOBS, JobContext, JobOutput, JobParamError, field_docs
from .protocol import CURVATURE_FIELDS, TRAINING_STAGES

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
    derive: Callable[[argparse.Namespace], tuple[dict, dict]]
    write: Callable[[argparse.Namespace, JobOutput], str]
    output_dir: Callable[[argparse.Namespace], Path]


def _choices(name: str) -> dict:
    """Choices that live in a registry rather than in the field's type."""
    if name == "preset":
        from .fit import PRESETS

        return {"choices": sorted(PRESETS)}
    if name in ("quantity", "curvature"):
        from .colormaps import QUANTITIES

        return {"choices": list(QUANTITIES)}
    return {}


def add_options(parser: argparse.ArgumentParser, kind: str, options: tuple[Option, ...]) -> None:
    """The spec's fields as options: type, default, choices and help from the spec."""
    spec = JOBS[kind]
    docs, hints = field_docs(spec), typing.get_type_hints(spec)
    defaults = {f.name: f.default for f in dataclasses.fields(spec)}
    for option in options:
        hint, default = hints[option.field], defaults[option.field]
        settings = {"dest": option.field, "default": default, "help": docs[option.field]}
        if hint is bool:
            settings["action"] = "store_true" if default is False else argparse.BooleanOptionalAction
        else:
            optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
            base = next(arg for arg in typing.get_args(hint) if arg is not type(None)) if optional else hint
            if typing.get_origin(base) is typing.Literal:
                settings["choices"] = list(typing.get_args(base))
            else:
                settings["type"] = typing.get_args(base)[0] if typing.get_origin(base) is tuple else base
            settings.update(_choices(option.field))
            if default is not None:
                settings["help"] += f" (default: {default})"
        settings.update(option.extra)
        parser.add_argument(*option.flags, **settings)


def main(argv: list[str] | None = None) -> int:
    from .mesh_io import MeshError
    from .training import Cancelled

    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=command.help, description=command.help)
        command.arguments(subparser)
        add_options(subparser, command.kind, command.options)
        subparser.set_defaults(command=command)
    args = parser.parse_args(argv)
    command = args.command
    try:
        params, inputs = command.derive(args)
        params.update({option.field: getattr(args, option.field) for option in command.options})
        spec = JOBS[command.kind].from_params(params)
        output_dir = command.output_dir(args)
        output_dir.mkdir(parents=True, exist_ok=True)
        context = JobContext(output_dir=output_dir, report=ProgressPrinter(), input_name=lambda name: Path(name).name)
        print(command.write(args, spec.run(inputs, context)))
        return 0
    except JobParamError as error:
        flags = {option.field: option.flags[0] for option in command.options}
        shown = f"{flags[error.param]} {error.problem}" if error.param in flags else str(error)
        print(f"error: {shown}", file=sys.stderr)
        return 2
    except (MeshError, ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("\ncancelled", file=sys.stderr)
        return 130


class ProgressPrinter:
    """Progress on stderr: a bar for training stages, a line for each frame and for the other stages."""

    WIDTH = 30
    WORDS = {"extract": "extracting the surface ...", "measure": "measuring against the input ...",
             "curvature": "evaluating curvature ..."}  # fmt: skip

    def __init__(self):
        self.stage_started = time.perf_counter()

    def __call__(self, stage: str, step: int, total: int, loss: float | None, eta: float | None) -> None:
        if step == 0:
            self.stage_started = time.perf_counter()
            if stage in self.WORDS:
                print(self.WORDS[stage], file=sys.stderr, flush=True)
            return
        if stage == "frames":
            print(f"frame {step}/{total}", file=sys.stderr, flush=True)
        elif stage in TRAINING_STAGES:
            filled = int(self.WIDTH * step / total)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            elapsed = time.perf_counter() - self.stage_started
            loss_text = f" loss {loss:.4g}" if loss is not None else ""
            eta = elapsed / step * (total - step) if eta is None else eta
            line = f"\rtraining [{bar}] {step}/{total}{loss_text} elapsed {elapsed:.0f}s eta {eta:.0f}s"
            print(line, end="\n" if step == total else "", file=sys.stderr, flush=True)


def _mesh_inputs(paths: list[Path]) -> dict:
    from .mesh_io import load_mesh

    inputs = {}
    for index, path in enumerate(paths):
        mesh = load_mesh(path)
        inputs[f"vertices_{index}"], inputs[f"faces_{index}"] = mesh.vertices, mesh.faces
    return inputs


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _frames(output: JobOutput) -> list[tuple[float, np.ndarray, np.ndarray]]:
    arrays = output.arrays
    return [(float(t), arrays[f"vertices_{i}"], arrays[f"faces_{i}"]) for i, t in enumerate(arrays["times"])]


# fit


def _fit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("meshes", nargs="+", type=Path, help="PLY/OBJ/STL/OFF/GLB files, fitted together as one shape")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for mesh.ply, model.pt, metrics.json")


def _fit_derive(args) -> tuple[dict, dict]:
    return {"names": [str(path) for path in args.meshes]}, _mesh_inputs(args.meshes)


def _fit_write(args, output: JobOutput) -> str:
    from .ply_io import write_ply

    write_ply(args.output / MESH_FILENAME, output.arrays["vertices"], output.arrays["faces"])
    _write_json(args.output / METRICS_FILENAME, output.summary)
    measured = output.summary.get("metrics", {})
    summary = ", ".join(f"{name} {value:.4g}" for name, value in measured.items())
    return f"wrote {args.output}/{{{MESH_FILENAME},{output.files['model']},{METRICS_FILENAME}}}" + (
        f": {summary}" if summary else ""
    )


# extract


def _model_arguments(output_help: str) -> Callable[[argparse.ArgumentParser], None]:
    def arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("model", type=Path, help="a model file written by 'fit'")
        parser.add_argument("-o", "--output", type=Path, required=True, help=output_help)

    return arguments


def _extract_write(args, output: JobOutput) -> str:
    from .ply_io import write_ply

    write_ply(args.output, output.arrays["vertices"], output.arrays["faces"])
    return f"wrote {args.output}: {len(output.arrays['faces'])} faces"


# curvature


def _curvature_arguments(parser: argparse.ArgumentParser) -> None:
    _model_arguments("the PLY file to write")(parser)
    parser.add_argument("--at", type=Path, help="colour this mesh's vertices (default: the model's own surface)")


def _curvature_derive(args) -> tuple[dict, dict]:
    if args.at is None:
        return {"model": str(args.model)}, {}
    from .mesh_io import load_mesh

    args.at_mesh = load_mesh(args.at)
    return {"model": str(args.model)}, {"points": args.at_mesh.vertices}


def _curvature_write(args, output: JobOutput) -> str:
    from .ply_io import write_ply

    arrays, summary = output.arrays, output.summary
    vertices, faces = (arrays["vertices"], arrays["faces"]) if args.at is None else (args.at_mesh.vertices, args.at_mesh.faces)
    low, high = summary["range"]
    shown = f"colours show {summary['quantity']} over"
    write_ply(
        args.output,
        vertices,
        faces,
        colors=arrays["colors"],
        vertex_properties={name: arrays[name] for name in CURVATURE_FIELDS},
        comments=[summary["convention"], f"{shown} [{low:.6g}, {high:.6g}]"],
    )
    return f"wrote {args.output}: {len(vertices)} vertices, {shown} [{low:.4g}, {high:.4g}]"


# evolve


def _evolve_arguments(parser: argparse.ArgumentParser) -> None:
    _model_arguments("folder for frame_NNNN.ply, times.json, evolution.pt")(parser)
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


def _evolve_derive(args) -> tuple[dict, dict]:
    if args.flow == "field":
        if args.fields is None or args.speed is not None:
            raise ValueError("--flow field takes --fields FILE (a JSON list of vector fields) and no --speed")
        entries = json.loads(args.fields.read_text())
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise ValueError(f"{args.fields} must hold a JSON list of vector-field objects")
        flow = {"fields": entries}
    else:
        if args.speed is None or args.fields is not None:
            raise ValueError(f"--flow {args.flow} takes --speed and no --fields")
        flow = {"mean_curvature": args.speed} if args.flow == "mcf" else {"normal_speed": args.speed}
    return {"model": str(args.model), "flow": flow, "times": _parse_times(args.times)}, {}


def _parse_times(text: str) -> list[float]:
    try:
        times = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--times must be comma-separated numbers, got {text!r}") from None
    if not times or not all(math.isfinite(t) for t in times):
        raise ValueError(f"--times needs at least one finite time, got {text!r}")
    return times


def _evolve_write(args, output: JobOutput) -> str:
    from .conventions import CURVATURE_CONVENTION
    from .ply_io import write_ply

    arrays, summary = output.arrays, output.summary
    colored = summary["curvature"] is not None
    names = []
    for index, (t, vertices, faces) in enumerate(_frames(output)):
        extra, comments = {}, [f"t = {t!r}"]
        if colored:
            comments.append(CURVATURE_CONVENTION)
            fields = {name: arrays[f"{name}_{index}"] for name in CURVATURE_FIELDS}
            extra = {"colors": arrays[f"colors_{index}"], "vertex_properties": fields}
        names.append(FRAME_FILENAME.format(index))
        write_ply(args.output / names[-1], vertices, faces, comments=comments, **extra)
    _write_json(args.output / TIMES_FILENAME, {**summary, "frames": names, "model": output.files["model"]})
    return f"wrote {len(names)} frames, {TIMES_FILENAME} and {output.files['model']} to {args.output}"


# morph


def _morph_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="the mesh at t = 0")
    parser.add_argument("target", type=Path, help="the mesh at t = 1")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for frame_NNNN.ply, times.json, morph.pt")
    parser.add_argument(
        "--landmarks",
        type=Path,
        help="flow: a JSON list of point pairs [[[x, y, z] on source, [x, y, z] on target], ...] to pull together",
    )


def _morph_derive(args) -> tuple[dict, dict]:
    inputs = {}
    if args.landmarks is not None:
        if args.method != "flow":
            raise ValueError("--landmarks applies to --method flow")
        pairs = np.asarray(json.loads(args.landmarks.read_text()), dtype=np.float64)
        if pairs.ndim != 3 or pairs.shape[1:] != (2, 3):
            raise ValueError(f"{args.landmarks} must hold a JSON list of [[x, y, z], [x, y, z]] pairs, got shape {pairs.shape}")
        inputs = {"landmarks_source": pairs[:, 0], "landmarks_target": pairs[:, 1]}
    inputs.update(_mesh_inputs([args.source, args.target]))
    return {"names": [str(args.source), str(args.target)]}, inputs


def _morph_write(args, output: JobOutput) -> str:
    from .ply_io import write_ply

    names = []
    for index, (t, vertices, faces) in enumerate(_frames(output)):
        names.append(FRAME_FILENAME.format(index))
        write_ply(args.output / names[-1], vertices, faces, comments=[f"t = {t!r}"])
    report = {**output.summary, "frames": names, "model": output.files["model"]}
    if "source_positions" in output.arrays:
        from .mesh_io import load_mesh

        faces = load_mesh(args.source).faces
        report["source_frames"] = []
        for index, (t, positions) in enumerate(zip(output.arrays["times"], output.arrays["source_positions"])):
            report["source_frames"].append(SOURCE_FRAME_FILENAME.format(index))
            write_ply(args.output / report["source_frames"][-1], positions, faces, comments=[f"t = {float(t)!r}"])
    _write_json(args.output / TIMES_FILENAME, report)
    return f"wrote {len(names)} frames, {TIMES_FILENAME} and {output.files['model']} to {args.output}"


DEVICE = Option("device", ("--device",))
SEED = Option("seed", ("--seed",))
RESOLUTION = Option("resolution", ("--resolution",))

COMMANDS: dict[str, Command] = {
    "fit": Command(
        "fit",
        "fit a neural SDF to meshes, extract it and measure it",
        _fit_arguments,
        (Option("preset", ("--preset",)), Option("steps", ("--steps",)), RESOLUTION, DEVICE, SEED,
         Option("curvature_sampling", ("--curvature-sampling",)), Option("metrics", ("--metrics",))),
        ("names",),
        _fit_derive,
        _fit_write,
        lambda args: args.output,
    ),
    "extract": Command(
        "extract",
        "extract a fitted model's surface again (marching cubes), without training",
        _model_arguments("the PLY file to write"),
        (RESOLUTION, DEVICE),
        ("model",),
        lambda args: ({"model": str(args.model)}, {}),
        _extract_write,
        lambda args: args.output.parent,
    ),
    "curvature": Command(
        "curvature",
        "colour a mesh by the curvature of a fitted model (writes mean, gaussian, k1, k2 fields)",
        _curvature_arguments,
        (Option("quantity", ("--quantity",)), Option("colormap", ("--colormap",)),
         Option("range", ("--range",), {"nargs": 2, "metavar": ("LOW", "HIGH")}),
         Option("project", ("--project",)), RESOLUTION, DEVICE),
        ("model",),
        _curvature_derive,
        _curvature_write,
        lambda args: args.output.parent,
    ),
    "evolve": Command(
        "evolve",
        "evolve a fitted model's surface (mean curvature flow, offset, vector fields) and mesh it over time",
        _evolve_arguments,
        (Option("steps", ("--steps",)), RESOLUTION, Option("curvature", ("--curvature",)),
         Option("colormap", ("--colormap",)), DEVICE, SEED),
        ("model", "flow", "times"),
        _evolve_derive,
        _evolve_write,
        lambda args: args.output,
    ),
    "morph": Command(
        "morph",
        "morph one mesh into another and mesh the in-between shapes (in the source's coordinates)",
        _morph_arguments,
        (Option("method", ("--method",)), Option("frames", ("--frames",)), Option("align", ("--align",)),
         Option("preset", ("--preset",)), Option("fit_steps", ("--fit-steps",)), Option("steps", ("--steps",)),
         RESOLUTION, DEVICE, SEED, Option("warp_source", ("--warp-source",))),
        ("names",),
        _morph_derive,
        _morph_write,
        lambda args: args.output,
    ),
}
"""Every subcommand by name; each runs the job of its kind (the test checks that options and derived fields
together are exactly the spec's fields)."""
