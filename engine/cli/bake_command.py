"""``python -m engine bake MODEL MESH -o DIR``: a fitted model's curvature baked through a mesh's UV map
(`engine.jobs.bake`); its arguments, input arrays and files, for its entry in `engine.cli.commands.COMMANDS`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..jobs import JobOutput

KIND = "bake"
WRITES_FOLDER = True
"""Whether ``-o`` names a folder."""
HELP = "bake a fitted model's curvature into images through a mesh's UV map (QUANTITY.png 8-bit, QUANTITY.npy floats)"
OPTIONS = (
    ("size", ("--size",)), ("height", ("--height",)), ("quantity", ("--quantity",)), ("colormap", ("--colormap",)),
    ("range", ("--range",), {"nargs": 2, "metavar": ("LOW", "HIGH")}), ("project", ("--project",)),
    ("margin", ("--margin",)), ("fill", ("--fill",)), ("device", ("--device",)),
)  # fmt: skip
"""(field, flags[, argparse settings]) of each `engine.cli.commands.Option` the command takes."""


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="a model file written by 'fit'")
    parser.add_argument("mesh", type=Path, help="a UV-mapped triangle mesh (OBJ/PLY/GLB with texture coordinates)")
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="folder for QUANTITY.png, QUANTITY.npy, bake.json"
    )


def read_inputs(args) -> dict:
    from ..texture_bake import load_uv_mesh

    vertices, faces, uvs = load_uv_mesh(args.mesh)
    return {"vertices": vertices, "faces": faces, "uvs": uvs}


def write(args, inputs: dict, output: JobOutput, folder: Path) -> str:
    from ..texture_bake import write_bake_files

    names = write_bake_files(folder, output.arrays, output.summary)
    low, high = output.summary["range"]
    return f"wrote {args.output}/{{{','.join(names)}}}: colours over [{low:.4g}, {high:.4g}]"
