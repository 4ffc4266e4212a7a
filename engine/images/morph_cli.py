"""``python -m engine image morph IMG0 IMG1 --landmarks pairs.json -o DIR``: train an image morph and render its
frames; ``--render-only MODEL`` renders the frames of a saved morph again (any count, any size) without training.

Writes into DIR (staged beside it and moved into place whole, as the other commands do):
- ``frame_0000.png`` ... : N frames at evenly spaced times from 0 (image 0) to 1 (image 1), 8-bit sRGB PNG;
- ``times.json``: the times, the frame files, the model, the size, and the warp's quality report (landmark and
  inverse-consistency errors in pixels, the least det dT/dx and whether the warp folds) and timings;
- ``morph.pt``: the trained morph (`engine.images.morph.ImageMorph`; not written by ``--render-only``).

Exit codes: 0 done; 1 done, but the warp folds (det dT/dx <= 0 somewhere on the checked grid): the files are
written so the fold can be seen, the line on stderr says where and what to change; 2 bad input (one line saying which
file or option and what is wrong, before any work); 130 cancelled (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..protocol import MORPH_MODEL_FILENAME

FRAME_FILENAME = "frame_{:04d}.png"
TIMES_FILENAME = "times.json"
MODEL_FILENAME = MORPH_MODEL_FILENAME
"""The trained morph, as the image_morph job writes it."""
DEFAULT_FRAMES = 9
MAX_FRAMES = 1000
"""Frames at most (as the mesh morph)."""
MAX_STEPS = 1_000_000


def parser() -> argparse.ArgumentParser:
    from .morph import PRESETS

    parser = argparse.ArgumentParser(
        prog="python -m engine image morph",
        description="Morph one image into another along a learned warp guided by landmark pairs (ifmorph), and "
        "render the frames between them.",
    )
    parser.add_argument("image0", type=Path, metavar="IMG0", help="the first image (t = 0)")
    parser.add_argument("image1", type=Path, metavar="IMG1", help="the second image (t = 1), of the same aspect")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--landmarks", type=Path, metavar="PAIRS.json",
        help="JSON list of pairs [[x0, y0], [x1, y1]]: a point of IMG0 and its partner in IMG1, in pixels with the "
        "origin at each image's top-left corner, x to the right, y down (at least 3 pairs, not on one line)",
    )
    source.add_argument(
        "--render-only", type=Path, metavar="MODEL",
        help="render the frames of this saved morph (a morph.pt) from IMG0 and IMG1 again, without training",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                        help="folder for frame_NNNN.png, times.json and morph.pt")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES,
                        help=f"frames from t = 0 to 1, both included (default: {DEFAULT_FRAMES})")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                        help="cpu: minutes on a CPU; gpu: the paper's settings (20,001 steps; default: cpu)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=None,
                        help="frame size in pixels, of IMG0's aspect (default: IMG0's size)")
    parser.add_argument("--blend", choices=["linear", "srgb"], default="linear",
                        help="cross-dissolve in linear light (default) or in sRGB-encoded values (as ifmorph)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to train")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``image morph`` with ``argv`` (everything after ``image morph``); returns the exit code."""
    from ..training import Cancelled

    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return _run(args)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"error: {_error_line(error)}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("\ncancelled", file=sys.stderr)
        return 130


def _error_line(error: Exception) -> str:
    if isinstance(error, OSError) and error.filename and error.strerror:
        return f"{error.strerror}: {error.filename}"
    return str(error)


def _run(args: argparse.Namespace) -> int:
    import shutil

    from ..cli import ProgressPrinter, _publish, _staging_folder
    from ..jobs import JOBS, JobContext, JobParamError
    from ..jobs.image_morph import flipped_warning, fold_message
    from .io import read_image, write_image
    from .landmarks import MAX_RENDER_SIDE, ImageGeometry, check_same_aspect, flipped_triangles, read_landmarks
    from .morph import load_image_morph

    # Every check before any work: options, the output folder, the images, the landmarks or the model.
    if not 2 <= args.frames <= MAX_FRAMES:
        raise ValueError(f"--frames must be in [2, {MAX_FRAMES}], got {args.frames}")
    if args.steps is not None and not 1 <= args.steps <= MAX_STEPS:
        raise ValueError(f"--steps must be in [1, {MAX_STEPS}], got {args.steps}")
    if args.render_only is not None and args.steps is not None:
        raise ValueError("--steps sets the training; --render-only does not train")
    if args.seed < 0 or args.seed > 2**32 - 1:
        raise ValueError(f"--seed must be in [0, 2^32 - 1], got {args.seed}")
    images = [read_image(path) for path in (args.image0, args.image1)]
    geometries = tuple(ImageGeometry(image.width, image.height) for image in images)
    names = (str(args.image0), str(args.image1))
    check_same_aspect(*geometries, names)
    if args.size is not None:
        if not all(1 <= side <= MAX_RENDER_SIDE for side in args.size):
            raise ValueError(f"--size must be two sides in [1, {MAX_RENDER_SIDE}] pixels, got {args.size}")
        check_same_aspect(geometries[0], ImageGeometry(*args.size), (names[0], f"--size {args.size[0]} {args.size[1]}"))
    inputs = {"image_0": images[0].pixels, "image_1": images[1].pixels}
    if args.render_only is not None:
        load_image_morph(args.render_only)  # checked now, with its file's name in the message
    else:
        landmarks = read_landmarks(args.landmarks, *geometries)
        inputs["landmarks_0"], inputs["landmarks_1"] = landmarks
        flipped = flipped_triangles(*landmarks)
        if flipped:
            print(f"warning: {flipped_warning(flipped)}", file=sys.stderr)
    params = {"names": list(names), "encoding": "linear", "frames": args.frames, "preset": args.preset,
              "steps": args.steps, "size": args.size, "blend": args.blend,
              "model": None if args.render_only is None else str(args.render_only), "device": args.device,
              "seed": args.seed}  # fmt: skip
    try:
        spec = JOBS["image_morph"].from_params(params)
    except JobParamError as error:
        raise ValueError(str(error) if error.param is None else f"--{error.param} {error.problem}") from None
    staging = _staging_folder(args.output, True)
    try:
        output = spec.run(inputs, JobContext(output_dir=staging, report=ProgressPrinter(), input_name=str))
        files = []
        for index in range(args.frames):
            files.append(FRAME_FILENAME.format(index))
            write_image(staging / files[-1], output.arrays[f"frame_{index}"])
        summary = {"times": output.summary["times"], "frames": files,
                   "model": MODEL_FILENAME if args.render_only is None else str(args.render_only)}  # fmt: skip
        summary.update((key, value) for key, value in output.summary.items() if key not in ("times", "warnings"))
        (staging / TIMES_FILENAME).write_text(json.dumps(summary, indent=2) + "\n")
        _publish(staging, args.output, True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    done = f"wrote {len(files)} frames, {TIMES_FILENAME}"
    done += f" and {MODEL_FILENAME}" if args.render_only is None else ""
    print(f"{done} to {args.output}")
    quality = summary["quality"]
    lines = _quality_lines(quality)
    if lines:
        print(lines[0])
    if summary["folds"]:
        print(f"error: {fold_message(quality)}", file=sys.stderr)
        return 1
    return 0


def _quality_lines(quality: dict) -> list[str]:
    if not quality:
        return []
    parts = []
    if "landmark_error_px" in quality:
        error = quality["landmark_error_px"]
        parts.append(f"landmarks off by {error['forward_mean']:.2f} px on average (max {error['forward_max']:.2f})")
    parts.append(f"inverse consistency {quality['inverse_error_px']['mean']:.3f} px on average")
    parts.append(f"least det dT/dx {quality['min_det']:.3f}")
    return ["; ".join(parts)]


if __name__ == "__main__":
    sys.exit(main())
