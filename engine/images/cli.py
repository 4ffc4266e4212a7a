"""Command line of the image networks: ``python -m engine image fit|render|tile|morph ...`` (also
``python -m engine.images.cli ...``).

    image fit IMAGE -o DIR [--levels N] [--preset fast|quality|gpu] [--steps N] [--tuner] [--fit-space srgb|linear]
    image render MODEL -o OUT.png [--size W H] [--level LAMBDA|auto|full] [--region X0 Y0 X1 Y1]
    image tile IMAGE -o DIR [--size N] [--preset cpu|gpu] [--steps N] [--train-size N]
    image morph ...   (engine.images.morph_cli)

``fit`` writes DIR/model.pt, DIR/render.png (the full level at the input's size) and DIR/metrics.json; ``tile``
writes DIR/tile.png (the input's size, or N along the long side), DIR/preview_2x2.png, DIR/model.pt and
DIR/metrics.json; ``render`` writes one PNG or JPEG. Every file is written whole (a temporary file moved into
place), the JSON report last. Bad input stops with exit code 2 and one line saying what is wrong; Ctrl-C exits
with 130. A progress bar goes to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import sys
from pathlib import Path

RENDER_FILENAME = "render.png"
TILE_FILENAME = "tile.png"
PREVIEW_FILENAME = "preview_2x2.png"
METRICS_FILENAME = "metrics.json"
MORPH_MODULE = "engine.images.morph_cli"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine image", description="Image networks (issue 16).")
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to train or evaluate")

    fit = commands.add_parser("fit", parents=[common], help="fit an image network (SIREN or MR-Net levels)")
    fit.add_argument("image", type=Path, help="PNG, JPEG or another image imageio reads")
    fit.add_argument("-o", "--output", type=Path, required=True, help="folder for model.pt, render.png, metrics.json")
    fit.add_argument("--levels", type=int, default=None, help="MR-Net levels; 1: a single SIREN (default: the preset's, 4)")
    fit.add_argument("--preset", choices=["fast", "quality", "gpu"], default="fast", help="starting settings")
    fit.add_argument("--steps", type=int, default=None, help="most optimizer steps per level (default: the preset's)")
    fit.add_argument("--tuner", action="store_true", help="TUNER's integer first layers, init and weight bounds")
    fit.add_argument("--fit-space", choices=["srgb", "linear"], default=None, help="values trained on (default srgb)")
    fit.add_argument("--seed", type=int, default=0, help="seed of every random draw")

    render = commands.add_parser("render", parents=[common], help="render a fitted image or tile at any size/level")
    render.add_argument("model", type=Path, help="model.pt written by image fit or image tile")
    render.add_argument("-o", "--output", type=Path, required=True, help="the PNG or JPEG to write")
    render.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=None, help="output size (default: the image's)")
    render.add_argument("--level", default="auto", help="level of detail in [0, levels], 'auto' (per-pixel, from "
                        "the footprint: anti-aliased minification; the default) or 'full' (point sampling)")  # fmt: skip
    render.add_argument("--region", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"), default=None,
                        help="part of the image to render, in input pixels (default: all)")  # fmt: skip

    tile = commands.add_parser("tile", parents=[common], help="make a seamless tile (periodic network)")
    tile.add_argument("image", type=Path, help="PNG, JPEG or another image imageio reads")
    tile.add_argument("-o", "--output", type=Path, required=True, help="folder for tile.png, preview_2x2.png, model.pt")
    tile.add_argument("--size", type=int, default=None, help="tile's long side in pixels (default: the input's size)")
    tile.add_argument("--preset", choices=["cpu", "gpu"], default="cpu", help="cpu: minutes on 2 cores; gpu: the paper's")
    tile.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the preset's)")
    tile.add_argument("--train-size", type=int, default=None, help="long side trained at (default: the preset's)")
    tile.add_argument("--seed", type=int, default=0, help="seed of every random draw")

    commands.add_parser("morph", help="morph two images along a trained warp (python -m engine image morph --help)",
                        add_help=False)  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "morph":
        return _morph(argv[1:])
    args = _parser().parse_args(argv)
    from ..training import Cancelled, Diverged
    from .io import ImageError

    try:
        summary = {"fit": _fit, "render": _render, "tile": _tile}[args.command](args)
    except (ImageError, ValueError, Diverged, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        shown = f"{error.strerror}: {error.filename}" if error.filename and error.strerror else str(error)
        print(f"error: {shown}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("\ncancelled", file=sys.stderr)
        return 130
    print(summary)
    return 0


def _morph(argv: list[str]) -> int:
    if importlib.util.find_spec(MORPH_MODULE) is None:
        print("error: 'image morph' is not available in this engine yet (engine/images/morph_cli.py is missing)",
              file=sys.stderr)  # fmt: skip
        return 2
    return importlib.import_module(MORPH_MODULE).main(argv)


def _check_count(name: str, value: int | None, low: int, high: int) -> None:
    if value is not None and not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


def _output_folder(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise ValueError(f"-o {path} is a file; give a folder for the outputs")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_json(path: Path, data: dict) -> None:
    from ..model import replaced_whole

    with replaced_whole(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n")


def _run_job(kind: str, params: dict, inputs: dict, folder: Path):
    """The job ``kind`` (`engine.jobs`, shared with the worker) with its files written into ``folder``; a bad
    parameter is named as the option that set it (``--size must be ...``)."""
    from ..cli import ProgressPrinter
    from ..jobs import JOBS, JobContext, JobParamError

    try:
        spec = JOBS[kind].from_params(params)
        return spec.run(inputs, JobContext(output_dir=folder, report=ProgressPrinter(), input_name=str))
    except JobParamError as error:
        if error.param is None:
            raise
        raise ValueError(f"--{error.param.replace('_', '-')} {error.problem}") from None


def _image_inputs(path: Path) -> dict:
    """The job's input array of an image file: its pixels in linear light (`engine.images.io.read_image`)."""
    from .io import read_image

    return {"image": read_image(path).pixels}


def _fit(args) -> str:
    from .io import write_image

    _check_count("--levels", args.levels, 1, 12)
    _check_count("--steps", args.steps, 1, 1_000_000)
    _check_count("--seed", args.seed, 0, 2**32 - 1)
    params = {"name": args.image.name, "encoding": "linear", "preset": args.preset, "levels": args.levels,
              "steps": args.steps, "tuner": args.tuner, "fit_space": args.fit_space, "device": args.device,
              "seed": args.seed}  # fmt: skip
    folder = _output_folder(args.output)
    output = _run_job("image_fit", params, _image_inputs(args.image), folder)
    summary = output.summary
    write_image(folder / RENDER_FILENAME, output.arrays["render"])
    _write_json(folder / METRICS_FILENAME, summary)
    levels = ", ".join(f"level {s['level']} {s['psnr_db']:.2f} dB" for s in summary["stages"])
    return f"fitted {args.image.name} ({summary['parameters']} parameters, {summary['train_seconds']:.0f} s): {levels}"


def _render(args) -> str:
    import tempfile

    from .io import WRITE_SUFFIXES, ImageError, write_image

    suffix = args.output.suffix.lower()
    if suffix not in WRITE_SUFFIXES:  # said before the render, which may take a while
        raise ImageError(f"{args.output}: the engine writes {', '.join(WRITE_SUFFIXES)} files, not "
                         f"{suffix or 'no suffix'}")  # fmt: skip
    if args.size is not None:
        _check_count("--size", min(args.size), 1, 65536)
        _check_count("--size", max(args.size), 1, 65536)
    detail, level = _level(args.level)
    params = {"model": str(args.model), "size": args.size, "detail": detail, "level": level, "region": args.region,
              "device": args.device}  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:  # the render job writes no file, but every job gets a folder
        output = _run_job("image_render", params, {}, Path(scratch))
    pixels = output.arrays["render"]
    write_image(args.output, pixels)
    shown = detail if level is None else f"{level:g}"
    seconds = output.summary["seconds"]
    return f"rendered {args.output} ({pixels.shape[1]}x{pixels.shape[0]}, level {shown}, {seconds:.1f} s)"


def _level(text: str) -> tuple[str, float | None]:
    """--level as the render job's (detail, level)."""
    if text in ("auto", "full"):
        return text, None
    try:
        level = float(text)
    except ValueError:
        raise ValueError(f"--level must be a number, 'auto' or 'full', got {text!r}") from None
    if not math.isfinite(level):
        raise ValueError(f"--level must be a finite number, 'auto' or 'full', got {text!r}")
    return "level", level


def _tile(args) -> str:
    import numpy as np

    from .io import write_image

    _check_count("--size", args.size, 8, 16384)
    _check_count("--steps", args.steps, 1, 1_000_000)
    _check_count("--train-size", args.train_size, 8, 8192)
    params = {"name": args.image.name, "encoding": "linear", "size": args.size, "preset": args.preset,
              "steps": args.steps, "train_size": args.train_size, "device": args.device, "seed": args.seed}  # fmt: skip
    folder = _output_folder(args.output)
    output = _run_job("image_tile", params, _image_inputs(args.image), folder)
    pixels, summary = output.arrays["tile"], output.summary
    write_image(folder / TILE_FILENAME, pixels)
    write_image(folder / PREVIEW_FILENAME, np.tile(pixels, (2, 2, 1)))
    _write_json(folder / METRICS_FILENAME, summary)
    width, height = summary["size"]
    return (f"tile of {args.image.name}: {width}x{height}, seam score {summary['seam_score']:.2f} (photo "
            f"{summary['seam_score_photo']:.2f}), PSNR inside {summary['psnr_inside_db']:.1f} dB, "
            f"{summary['train_seconds']:.0f} s")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
