"""Image morph on real pairs (issue 16): seconds (wall and CPU, one torch thread), landmark error, error against a
known map, inverse consistency, the least det dT/dx, for a few step counts of the CPU preset and both starts.

Pairs (scikit-image's bundled photos, nothing downloaded):
- ``affine``: the astronaut at 256^2 and the same photo under a known affine map (a turn of 7 degrees, a scale of
  0.92, a shear of 0.06, a shift); 40 landmarks drawn from the map in the central 80 %. Error against the map over
  every pixel, and inside the landmarks' hull.
- ``stereo``: the left and right views of the motorcycle (Middlebury, half size: 370 x 250, non-square), a real
  non-affine map (disparity 4 to 30 px at this size, depth edges that no smooth warp can follow); 80 landmarks from
  the ground-truth disparity, the error measured at 3000 other pixels of valid disparity.
- ``faces``: the astronaut and the cameraman (two different photos, 256^2; frontal and profile), 14 landmarks
  placed by hand (head, hair, eye, nose, mouth, chin, collar, shoulders, body, the four corners pinned). No known
  map: landmark error, inverse consistency, folds.

PSNR: image 0 carried onto image 1, I0(T(x, -1)), against image 1 (sRGB values, where T(x, -1) lands inside image 0;
"none" is the images as they are), a measure of alignment, not of a frame (frames 0 and 1 are the images exactly).

    nice python bench/image_morph.py [--pairs affine,stereo,faces] [--starts affine,identity]
                                     [--steps 150,300,600,1200] [--preset cpu|gpu] [--device cpu|cuda]
                                     [--out bench/results/image_morph_cpu.md]

On a GPU, the paper's settings: ``python bench/image_morph.py --preset gpu --device cuda --steps 20001``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.images.io import check_image, to_srgb  # noqa: E402
from engine.images.morph import ImageGeometry, preset, train_image_morph  # noqa: E402
from engine.images.morph_frames import carried, render_frames  # noqa: E402

FACE_PAIRS = [
    # (astronaut x, y), (cameraman x, y), 256^2 pixel coordinates (origin at the top-left corner), placed by eye on
    # 3x enlargements with a 16 px grid; checked with engine.images.morph.flipped_triangles (none flip; a first set
    # with "hair, right" and sloppier shoulders had 5 flipped triangles and folded at every step count).
    ((113, 9), (107, 33)),  # top of the head
    ((77, 33), (82, 50)),  # hair, left / back of the head
    ((100, 51), (117, 72)),  # eye
    ((112, 62), (125, 83)),  # nose
    ((113, 73), (118, 92)),  # mouth
    ((112, 85), (115, 98)),  # chin
    ((60, 97), (90, 97)),  # collar / neck
    ((30, 130), (22, 112)),  # left shoulder / back of the coat
    ((173, 133), (143, 147)),  # right shoulder / elbow
    ((13, 187), (10, 167)),  # lower left of the body
    ((0, 0), (0, 0)), ((256, 0), (256, 0)), ((0, 256), (0, 256)), ((256, 256), (256, 256)),  # corners
]


def resized(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))


def affine_pair(rng):
    import skimage.data
    from skimage.transform import AffineTransform, warp

    side = 256
    first = resized(skimage.data.astronaut(), (side, side))
    turn, scale, shear = np.deg2rad(7.0), 0.92, 0.06
    linear = scale * np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]]) @ [[1.0, shear], [0, 1.0]]
    centre = np.array([side, side]) / 2
    offset = centre - linear @ centre + [6.0, -4.0]

    def known(points):
        return np.asarray(points) @ linear.T + offset

    # skimage indexes pixel centres at integers; these pixel coordinates put them at +0.5.
    matrix = np.eye(3)
    matrix[:2, :2], matrix[:2, 2] = linear, offset + linear @ [0.5, 0.5] - 0.5
    second = (warp(first, AffineTransform(matrix=matrix).inverse, mode="edge") * 255).round().astype(np.uint8)
    sources = rng.uniform(0.1 * side, 0.9 * side, (40, 2))
    xs, ys = np.meshgrid(np.arange(side) + 0.5, np.arange(side) + 0.5)
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
    return {"images": (first, second), "landmarks": (sources, known(sources)), "check": (grid, known(grid))}


def stereo_pair(rng):
    import skimage.data

    left, right, disparity = skimage.data.stereo_motorcycle()
    height, width = left.shape[:2]
    size = (width // 2, height // 2)
    valid = np.argwhere(np.isfinite(disparity) & (disparity > 0))
    chosen = valid[rng.choice(len(valid), 80 + 3000, replace=False)]
    rows, columns = chosen[:, 0], chosen[:, 1]
    sources = np.stack([columns + 0.5, rows + 0.5], axis=1)
    targets = sources - np.stack([disparity[rows, columns], np.zeros(len(rows))], axis=1)
    keep = targets[:, 0] > 0
    sources, targets = sources[keep] * size[0] / width, targets[keep] * size[0] / width  # corner origin: x / 2
    return {
        "images": (resized(left, size), resized(right, size)),
        "landmarks": (sources[:80], targets[:80]),
        "check": (sources[80:], targets[80:]),
    }


def faces_pair(rng):
    import skimage.data

    first = resized(skimage.data.astronaut(), (256, 256))
    second = resized(np.repeat(skimage.data.camera()[..., None], 3, axis=2), (256, 256))
    pairs = np.array(FACE_PAIRS, dtype=np.float64)
    return {"images": (first, second), "landmarks": (pairs[:, 0], pairs[:, 1]), "check": None}


PAIRS = {"affine": affine_pair, "stereo": stereo_pair, "faces": faces_pair}


def psnr(first: np.ndarray, second: np.ndarray, mask: np.ndarray) -> float:
    error = np.mean((first[mask] - second[mask]) ** 2)
    return float(10 * np.log10(1.0 / error)) if error > 0 else float("inf")


def measure(name: str, pair: dict, start: str, steps: int, preset_name: str = "cpu", device: str = "cpu") -> dict:
    images = [check_image(pixels, f"{name} {i}") for i, pixels in enumerate(pair["images"])]
    geometries = tuple(ImageGeometry(image.width, image.height) for image in images)
    config = dataclasses.replace(preset(preset_name, steps=steps, device=device), init=start)
    cpu, wall = time.process_time(), time.perf_counter()
    morph = train_image_morph(geometries, pair["landmarks"], config)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    report = morph.metadata["image_morph"]["report"]
    row = {
        "pair": name, "start": start, "steps": steps, "wall_s": wall, "cpu_s": cpu,
        "landmark_mean": report["landmark_error_px"]["forward_mean"],
        "landmark_max": report["landmark_error_px"]["forward_max"],
        "inverse_mean": report["inverse_error_px"]["mean"], "inverse_max": report["inverse_error_px"]["max"],
        "min_det": report["min_det"], "folds": report["folds"],
    }  # fmt: skip
    if pair["check"] is not None:
        points, expected = pair["check"]
        first, second = geometries
        moved = second.to_pixels(morph.transform(first.to_morph(points), 1.0))
        error = np.linalg.norm(moved - expected, axis=1)
        row.update(check_mean=float(error.mean()), check_median=float(np.median(error)), check_max=float(error.max()))
        if name == "affine":
            from scipy.spatial import Delaunay

            inside = Delaunay(pair["landmarks"][0]).find_simplex(points) >= 0
            row["hull_mean"], row["hull_max"] = float(error[inside].mean()), float(error[inside].max())
    # Image 0 carried onto image 1, where it lands inside image 0.
    first, second = (to_srgb(image.pixels) for image in images)
    onto = carried(morph, first, -1.0)
    geometry = geometries[0]
    columns, rows = np.meshgrid(np.arange(geometry.width) + 0.5, np.arange(geometry.height) + 0.5)
    centres = np.stack([columns.ravel(), rows.ravel()], axis=1)
    back = geometry.to_pixels(morph.transform(geometry.to_morph(centres), -1.0))
    inside = ((back >= 0) & (back <= [geometry.width, geometry.height])).all(axis=1).reshape(geometry.height, -1)
    row["psnr"], row["psnr_none"] = psnr(onto, second, inside), psnr(first, second, inside)
    cpu_frame, wall_frame = time.process_time(), time.perf_counter()
    render_frames(morph, *images, [0.5])
    row["frame_cpu_s"], row["frame_wall_s"] = time.process_time() - cpu_frame, time.perf_counter() - wall_frame
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| pair | start | steps | wall s | CPU s | landmarks px (mean / max) | known map px (mean / median / max) | "
        "inside hull px (mean / max) | inverse px (mean / max) | min det | folds | PSNR carried / none dB | "
        "frame CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        check = f"{r['check_mean']:.3f} / {r['check_median']:.3f} / {r['check_max']:.2f}" if "check_mean" in r else "–"
        hull = f"{r['hull_mean']:.3f} / {r['hull_max']:.3f}" if "hull_mean" in r else "–"
        lines.append(
            f"| {r['pair']} | {r['start']} | {r['steps']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
            f"{r['landmark_mean']:.3f} / {r['landmark_max']:.3f} | {check} | {hull} | "
            f"{r['inverse_mean']:.3f} / {r['inverse_max']:.2f} | {r['min_det']:.3f} | {'yes' if r['folds'] else 'no'} | "
            f"{r['psnr']:.1f} / {r['psnr_none']:.1f} | {r['frame_cpu_s']:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="affine,stereo,faces")
    parser.add_argument("--starts", default="affine,identity")
    parser.add_argument("--steps", default="150,300,600,1200")
    parser.add_argument("--preset", default="cpu", choices=["cpu", "gpu"], help="settings (steps from --steps)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=None, help="write the table (markdown) here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.pairs.split(","):
        pair = PAIRS[name](np.random.default_rng(0))
        for start in args.starts.split(","):
            for steps in map(int, args.steps.split(",")):
                rows.append(measure(name, pair, start, steps, args.preset, args.device))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = table(rows)
    print(text)
    if args.out is not None:
        command = "nice python bench/image_morph.py " + " ".join(sys.argv[1:])
        header = (
            f"# Image morph, CPU preset\n\n`{command}`\n\n{platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, torch {torch.__version__}, 1 torch thread, device {args.device}. Preset "
            f"{args.preset}: {preset(args.preset)}\n\n"
        )
        args.out.write_text(header + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
