"""Seamless tile benchmark (issue 16): what each cost cut saves per step against the paper's settings, then the CPU
preset on the bundled textures (brick, grass, gravel): seam scores before and after, PSNR inside the held region,
periodicity, seconds; with a plain periodic fit (values everywhere, no gradient term) as the baseline.

    nice .venv/bin/python bench/seamless_tile.py [--sections cost,quality] [--textures brick,grass,gravel]
        [--steps N] [--set KEY=VALUE] [--no-baseline] [--json out/bench/seamless_tile.json] [--save out/bench/tiles]

One torch thread. Times: CPU seconds of this process (time.process_time) and wall seconds. Seam score: mean jump
across the wrap / mean step between neighbours inside, averaged over both axes, on sRGB-encoded values
(`engine.images.tile.seam_score`); "x4" is the same on the image downsampled 4 times (by the pyramid, in linear
light), where a jump of illumination or structure shows through the pixel noise of a fine texture.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import skimage.data
import torch

from engine.images.field import render
from engine.images.fit import psnr
from engine.images.io import check_image, to_srgb, write_image
from engine.images.pyramid import gaussian_pyramid
from engine.images.tile import PRESETS, TileConfig, fit_tile, mask, periodicity_error, seam_score

TEXTURES = ("brick", "grass", "gravel")


def coarse_seam(linear: np.ndarray) -> float:
    return seam_score(to_srgb(gaussian_pyramid(linear, 3)[2]))


def step_cost(image, config: TileConfig) -> float:
    """CPU seconds of one optimizer step: (5 steps - 1 step) / 4 after a warm-up run, setup excluded."""
    spent = []
    for steps in (1, 1, 5):
        started = time.process_time()
        fit_tile(image, dataclasses.replace(config, steps=steps, device="cpu"))
        spent.append(time.process_time() - started)
    return (spent[2] - spent[1]) / 4


def section_cost(args, rows):
    print("\n## CPU seconds per step of each cut (RGB 512^2 noise photo; cumulative, top to bottom; 1 thread)")
    print("settings | steps | CPU s / step | projected CPU s | vs the paper's")
    rng = np.random.default_rng(0)
    image = check_image(rng.uniform(0.2, 0.8, (512, 512, 3)).astype(np.float32), "noise")
    # An epoch of 512^2 pixels is measured as 4 batches of 65,536 (the same work, in memory this machine has); the
    # border band holds `band` of the pixels, all of them in each step of the "band" rows.
    chunk = 65536
    band = int(round((mask(256, 256, PRESETS["cpu"].border) < 1.0).mean() * chunk))
    paper = dataclasses.replace(PRESETS["gpu"], gradients="autograd", value_batch=chunk, gradient_batch=chunk, steps=2000)
    forward = dataclasses.replace(paper, gradients="forward")
    in_band = dataclasses.replace(forward, jacobian="band", gradient_batch=band)
    at_256 = dataclasses.replace(in_band, train_size=256, steps=500)
    variants = [
        ("paper: 512^2, 3x256, full batches, J everywhere by autograd, 500 epochs (2000 x 65,536 px)", paper),
        ("+ J by forward tangents", forward),
        (f"+ J only in the border band (exact: {band} of each 65,536 px)", in_band),
        ("+ train at 256^2 (500 full batches)", at_256),
        ("+ 1x256 network", dataclasses.replace(at_256, hidden_layers=1)),
        ("+ batches 8192 / 4096 pixels, 1500 steps (the cpu preset)", PRESETS["cpu"]),
        ("(cpu preset with luminance-only gradients by autograd)", dataclasses.replace(PRESETS["cpu"], gradients="luminance")),
        ("(cpu preset with RGB gradients by autograd)", dataclasses.replace(PRESETS["cpu"], gradients="autograd")),
    ]
    base = None
    for label, config in variants:
        cost = step_cost(image, config)
        total = cost * config.steps
        base = base or total
        rows.append({"section": "cost", "settings": label, "steps": config.steps, "cpu_s_per_step": round(cost, 3),
                     "projected_cpu_s": round(total, 1)})  # fmt: skip
        print(f"{label} | {config.steps} | {cost:.3f} | {total:.0f} | {base / total:.1f}x less")


def section_quality(args, rows):
    print("\n## The cpu preset on the bundled textures (512^2 grey photos; trained at 256^2, rendered at 512^2)")
    print("texture | method | CPU s | wall s | seam photo | seam tile | seam x4 photo | seam x4 tile | PSNR inside "
          "@256 dB | PSNR inside @512 dB | periodicity error")  # fmt: skip
    for name in args.textures:
        image = check_image(getattr(skimage.data, name)(), name)
        held = mask(image.height, image.width, PRESETS["cpu"].border) >= 0.99
        photo = to_srgb(image.pixels)
        chosen = dataclasses.replace(PRESETS["cpu"], **args.overrides)
        methods = [("seamless", chosen), ("plain periodic", dataclasses.replace(chosen, border=1e-3, gradient_weight=0.0))]
        if args.no_baseline:
            methods = methods[:1]
        for label, config in methods:
            if args.steps:
                config = dataclasses.replace(config, steps=args.steps)
            cpu, wall = time.process_time(), time.perf_counter()
            field, summary = fit_tile(image, dataclasses.replace(config, device="cpu"))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            linear = render(field, level=None)
            tile = to_srgb(linear)
            row = {"section": "quality", "texture": name, "method": label, "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
                   "seam_photo": round(seam_score(photo), 3), "seam_tile": round(seam_score(tile), 3),
                   "seam_x4_photo": round(coarse_seam(image.pixels), 3), "seam_x4_tile": round(coarse_seam(linear), 3),
                   "psnr_inside_train_db": summary["psnr_inside_db"],
                   "psnr_inside_full_db": round(psnr(tile[held], photo[held]), 2),
                   "periodicity_error": periodicity_error(field)}  # fmt: skip
            rows.append(row)
            print(f"{name} | {label} | {row['cpu_s']} | {row['wall_s']} | {row['seam_photo']} | {row['seam_tile']} | "
                  f"{row['seam_x4_photo']} | {row['seam_x4_tile']} | {row['psnr_inside_train_db']} | "
                  f"{row['psnr_inside_full_db']} | {row['periodicity_error']:.1e}")
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                stem = f"{name}_{label.replace(' ', '_')}"
                write_image(args.save / f"{stem}_2x2.png", np.tile(linear, (2, 2, 1)))
                if label == "seamless":
                    write_image(args.save / f"{name}_photo_2x2.png", np.tile(image.pixels, (2, 2, 1)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="cost,quality")
    parser.add_argument("--textures", default=",".join(TEXTURES))
    parser.add_argument("--steps", type=int, default=None, help="override the preset's steps in the quality runs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="replace a TileConfig field of the cpu preset in the quality runs (e.g. train_size=512)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain periodic fit")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--save", type=Path, help="folder for 2x2 previews of each result")
    args = parser.parse_args()
    args.textures = args.textures.split(",")
    hints = {f.name: f.type for f in dataclasses.fields(TileConfig)}
    args.overrides = {key: (int if hints[key] in ("int", int) else float if hints[key] in ("float", float) else str)(value)
                      for key, value in (item.split("=", 1) for item in args.overrides)}  # fmt: skip
    torch.set_num_threads(1)
    rows = []
    for name in args.sections.split(","):
        {"cost": section_cost, "quality": section_quality}[name](args, rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
