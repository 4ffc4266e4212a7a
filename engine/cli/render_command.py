"""``python -m engine render MODEL -o DIR --camera CAMERA.json``: a preview render straight from the network
(`engine.jobs.render`); its arguments, derived params and files, for its entry in `engine.cli.commands.COMMANDS`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..jobs import JobOutput

KIND = "render"
HELP = "render a fitted model from a camera by sphere tracing its network (render.png, depth.npy, normal.npy)"
WRITES_FOLDER = True
"""``-o`` names a folder."""
OPTIONS = (
    ("multiscale", ("--multiscale",)), ("shading", ("--shading",)), ("quantity", ("--quantity",)),
    ("range", ("--range",), {"nargs": 2, "metavar": ("LOW", "HIGH")}), ("max_steps", ("--max-steps",)),
    ("device", ("--device",)),
)  # fmt: skip
"""(field, flags[, argparse settings]) of each `engine.cli.commands.Option` the command takes."""
DERIVED = ("model", "camera")
"""The fields `derive` sets: the model's path and the camera file's contents."""


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="a model file written by 'fit'")
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="folder for render.png, depth.npy, normal.npy, render.json"
    )
    parser.add_argument(
        "--camera", type=Path, required=True,
        help='a JSON camera in the model\'s input coordinates: {"location": [x, y, z], "rotation": [[3 x 3 '
        'world-from-camera]], "type": "perspective" | "orthographic", "fov": horizontal degrees, "ortho_scale": '
        'width, "resolution": [w, h]} (looks along its local -Z, +Y up, as in Blender)',
    )  # fmt: skip


def derive(args) -> dict:
    from ..render_camera import load_camera

    return {"model": str(args.model), "camera": load_camera(args.camera).to_dict()}


def read_inputs(args) -> dict:
    return {}


def write(args, inputs: dict, output: JobOutput, folder: Path) -> str:
    from ..render import Render, write_render

    arrays, report = output.arrays, output.summary
    names = write_render(folder, Render(arrays["rgba"], arrays["depth"], arrays["normal"], report))
    fine = report["evaluations"][-1]
    return (
        f"wrote {args.output}/{{{','.join(names.values())}}}: {report['hits']} of {report['pixels']} pixels hit, "
        f"{fine} finest-level evaluations, {report['seconds']['total']:.2f} s"
    )
