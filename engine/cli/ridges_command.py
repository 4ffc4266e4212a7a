"""``python -m engine ridges MODEL -o LINES.obj [--at MESH]``: a fitted model's ridge and valley lines
(`engine.jobs.ridges`) as an OBJ of polylines (objects ``ridges`` and ``valleys``, ``l`` elements; a closed line
repeats its first point at its end), for its entry in `engine.cli.commands.COMMANDS`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..jobs import JobOutput

KIND = "ridges"
WRITES_FOLDER = False
"""Whether ``-o`` names a folder."""
HELP = "trace a fitted model's ridge and valley lines (an OBJ of polylines)"
OPTIONS = (
    ("min_length", ("--min-length",)), ("min_strength", ("--min-strength",)), ("project", ("--project",)),
    ("resolution", ("--resolution",)), ("device", ("--device",)),
)  # fmt: skip
"""(field, flags) of each `engine.cli.commands.Option` the command takes."""


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="a model file written by 'fit'")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the OBJ file to write")
    parser.add_argument("--at", type=Path, help="trace on this mesh of the surface (default: the model's own)")


def read_inputs(args) -> dict:
    if args.at is None:
        return {}
    from ..mesh_io import load_mesh

    mesh = load_mesh(args.at)
    return {"vertices": mesh.vertices, "faces": mesh.faces}


def write(args, inputs: dict, output: JobOutput, folder: Path) -> str:
    lines, first = [], 1
    for kind, name in (("ridge", "ridges"), ("valley", "valleys")):
        points, offsets = output.arrays[f"{kind}_points"], output.arrays[f"{kind}_offsets"]
        lines.append(f"o {name}")
        lines += [f"v {x!r} {y!r} {z!r}" for x, y, z in points]
        for start, stop, closed in zip(offsets[:-1], offsets[1:], output.arrays[f"{kind}_closed"]):
            indices = list(range(first + int(start), first + int(stop))) + ([first + int(start)] if closed else [])
            lines.append("l " + " ".join(map(str, indices)))
        first += len(points)
    (folder / args.output.name).write_text("\n".join(lines) + "\n")
    summary = output.summary
    return f"wrote {args.output}: {summary['ridge_lines']} ridge and {summary['valley_lines']} valley lines"
