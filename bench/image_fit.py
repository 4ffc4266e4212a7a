"""Image fit benchmark (issue 16): SIREN vs MR-Net at equal parameters on bundled photos, each level against its
pyramid level, a synthetic image of known bands (does each stage keep to its band?), anti-aliased minification
(per-pixel level vs point sampling vs a box-filtered reference), the colour space trained in, and TUNER vs SIREN on
held-out pixels (signal and gradient).

    nice .venv/bin/python bench/image_fit.py [--steps 1000] [--size 256] [--sections photos,bands,alias,space,tuner]
        [--json out/bench/image_fit.json]

One torch thread. Times: CPU seconds of this process (time.process_time) and wall seconds; on a shared machine read
the CPU seconds. PSNR in dB on sRGB-encoded values in [0, 1] (as the images are stored), over all channels.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import skimage.data
import torch
from scipy.ndimage import gaussian_filter

from engine.images.field import ImageField, evaluate, footprint_level, render, to_field
from engine.images.fit import ImageFitConfig, fit_image, psnr
from engine.images.io import check_image, to_srgb
from engine.images.pyramid import SIGMA, box_downsample, gaussian_pyramid, level_centres

PHOTOS = ("astronaut", "camera", "coffee")


def photo(name: str, size: int):
    """A bundled photo in linear light, its long side brought to ``size`` by pyramid steps and a centre crop."""
    image = check_image(getattr(skimage.data, name)(), name)
    pixels = image.pixels
    short = min(pixels.shape[:2])
    top, left = (pixels.shape[0] - short) // 2, (pixels.shape[1] - short) // 2
    pixels = pixels[top : top + short, left : left + short]
    while pixels.shape[0] >= 2 * size:
        pixels = gaussian_pyramid(pixels, 2)[1]
    return check_image(pixels[:size, :size], name, "linear")


def shown(linear: np.ndarray) -> np.ndarray:
    """Linear pixels as an 8-bit file stores them: sRGB-encoded and clipped to [0, 1]."""
    return np.clip(to_srgb(linear), 0.0, 1.0)


def timed(function, *args, **kwargs):
    cpu, wall = time.process_time(), time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.process_time() - cpu, time.perf_counter() - wall


def siren_width_for(parameters: int, layers: int = 3, channels: int = 3) -> int:
    """The width of a SIREN of ``layers`` hidden layers with about ``parameters`` numbers."""
    # 2w + w (first) + layers (w^2 + w) + channels (w + 1)
    a, b, c = layers, 3 + layers + channels, channels - parameters
    return int(round((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)))


def level_table(field: ImageField, image) -> list[float]:
    """PSNR of lambda = N - j against pyramid level j, for every level j."""
    pyramid = gaussian_pyramid(image.pixels, field.levels, alpha=image.has_alpha)
    out = []
    for level in range(field.levels):
        reference = to_srgb(pyramid[level])
        values = evaluate(field, level_centres(image.height, image.width, level), field.levels - level)
        out.append(psnr(np.clip(values, 0.0, 1.0).reshape(reference.shape), reference))
    return out


def section_photos(args, rows):
    print("\n## SIREN vs MR-Net at equal parameters (full-detail PSNR vs the photo; per level vs its pyramid level)")
    print("photo | network | levels | params | steps (finest) | CPU s | wall s | PSNR dB | per-level PSNR (coarse..fine)")
    for name in args.photos:
        image = photo(name, args.size)
        mnet = ImageFitConfig(levels=args.levels, steps=args.steps, device="cpu")
        probe = ImageField(mnet.stage_configs(image.height, image.width), image.channels, image.height, image.width)
        width = siren_width_for(probe.parameter_count(), 3, image.channels)
        configs = [("SIREN 3x%d" % width, ImageFitConfig(levels=1, widths=(width,), hidden_layers=3, steps=args.steps,
                                                         device="cpu")),
                   ("M-Net", mnet),
                   ("M-Net, own samples only", ImageFitConfig(levels=args.levels, steps=args.steps, dense=False,
                                                               device="cpu")),
                   ("L-Net", ImageFitConfig(levels=args.levels, steps=args.steps, coupled=False, device="cpu"))]  # fmt: skip
        for label, config in configs:
            if label in ("L-Net", "M-Net, own samples only") and name != args.photos[0]:
                continue
            (field, summary), cpu, wall = timed(fit_image, image, config)
            full = psnr(shown(render(field, level=None)), to_srgb(image.pixels))
            levels = level_table(field, image)
            row = {"section": "photos", "photo": name, "network": label, "levels": config.levels,
                   "parameters": field.parameter_count(), "steps": config.steps, "cpu_s": round(cpu, 1),
                   "wall_s": round(wall, 1), "psnr_db": round(full, 2),
                   "level_psnr_db": [round(v, 2) for v in levels[::-1]]}  # fmt: skip
            rows.append(row)
            print(f"{name} | {label} | {config.levels} | {row['parameters']} | {config.steps} | {row['cpu_s']} | "
                  f"{row['wall_s']} | {row['psnr_db']} | {' / '.join(f'{v:.1f}' for v in row['level_psnr_db'])}")
            if label == "M-Net" and name == args.photos[0]:
                section_alias(args, rows, field, image)


def section_alias(args, rows, field, image):
    print("\n## Anti-aliased minification (the M-Net fit above; PSNR vs a box-filtered downsample in linear light)")
    print("factor | per-pixel level (lambda) | point sampling (full level) | the Gaussian pyramid level itself | photo "
          "subsampled (every factor-th pixel)")
    for factor in (2, 4, 8):
        size = (image.width // factor, image.height // factor)
        reference = to_srgb(box_downsample(image.pixels, factor))
        auto = shown(render(field, size, level="auto"))
        naive = shown(render(field, size, level=None))
        level = int(round(math.log2(factor)))
        pyramid = to_srgb(gaussian_pyramid(image.pixels, level + 1)[level])
        picked = to_srgb(image.pixels[factor // 2 :: factor, factor // 2 :: factor])
        row = {"section": "alias", "factor": factor, "lambda": float(footprint_level(factor, field.levels)),
               "psnr_auto_db": round(psnr(auto, reference), 2), "psnr_point_db": round(psnr(naive, reference), 2),
               "psnr_pyramid_db": round(psnr(pyramid, reference), 2),
               "psnr_pixel_pick_db": round(psnr(picked, reference), 2)}  # fmt: skip
        rows.append(row)
        print(f"1/{factor} | {row['psnr_auto_db']} (lambda {row['lambda']}) | {row['psnr_point_db']} | "
              f"{row['psnr_pyramid_db']} | {row['psnr_pixel_pick_db']}")


def band_image(size: int, levels: int, seed: int = 0):
    """Linear pixels (size, size, 1) whose content lies in known dyadic bands: for each pyramid level j, a few
    sinusoids with radial frequency in (Nyquist_{j+1}, Nyquist_j] * 0.9 (cycles per image)."""
    rng = np.random.default_rng(seed)
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    total = np.zeros((size, size))
    bands = []
    for level in range(levels):
        high = size / 2 ** (level + 1) * 0.9
        low = size / 2 ** (level + 2) * 1.1 if level < levels - 1 else 1.0
        bands.append((low, high))
        for _ in range(4):
            radius, angle = rng.uniform(low, high), rng.uniform(0, np.pi)
            total += 0.05 * np.sin(2 * np.pi * radius * (np.cos(angle) * x + np.sin(angle) * y) + rng.uniform(0, 6.3))
    encoded = 0.5 + total
    return check_image(np.clip(encoded, 0, 1)[..., None].astype(np.float32), "bands"), bands


def section_bands(args, rows):
    print("\n## Synthetic image of known bands (1 channel): each stage's spectrum against its level's band")
    image, bands = band_image(args.size, args.levels)
    config = ImageFitConfig(levels=args.levels, steps=args.steps, device="cpu")
    (field, summary), cpu, wall = timed(fit_image, image, config)
    levels = level_table(field, image)
    u = torch.from_numpy(to_field(level_centres(args.size, args.size, 0), args.size, args.size)).float()
    with torch.no_grad():
        outputs = [o.numpy().reshape(args.size, args.size) for o in field.stage_outputs(u)]
    frequency = np.hypot(*np.meshgrid(np.fft.fftfreq(args.size), np.fft.fftfreq(args.size))) * args.size
    # The ideal stage: the difference of two Gaussian-tower levels (the pyramid's blur at full resolution, cumulative
    # sigma_j = sigma sqrt(sum_{m<j} 4^m) level-0 pixels); the pyramid's Gaussian is no sharp filter, so even the
    # ideal stage has some energy above its level's Nyquist frequency.
    sigmas = [SIGMA * math.sqrt(sum(4.0**m for m in range(j))) for j in range(args.levels)]
    tower = [to_srgb(gaussian_filter(image.pixels, (s, s, 0), mode="reflect") if s else image.pixels)[..., 0] for s in sigmas]
    ideal = [tower[j] - tower[j + 1] if j < args.levels - 1 else tower[j] for j in range(args.levels)]
    print("stage | level | its Nyquist (cyc/img) | share of its energy <= its Nyquist (ideal) | share in its band "
          "(Nyq_{j+1}, Nyq_j] (ideal) | PSNR vs its level dB")  # fmt: skip

    def shares(values, level):
        power = np.abs(np.fft.fft2(values - values.mean())) ** 2  # the mean is no band
        nyquist, lower = args.size / 2 ** (level + 1), (args.size / 2 ** (level + 2) if level < args.levels - 1 else 0.0)
        below = power[frequency <= nyquist].sum() / power.sum()
        return nyquist, below, power[(frequency > lower) & (frequency <= nyquist)].sum() / power.sum()

    for index, out in enumerate(outputs):
        level = args.levels - 1 - index
        nyquist, below, inside = shares(out, level)
        _, ideal_below, ideal_inside = shares(ideal[level], level)
        row = {"section": "bands", "stage": index, "level": level, "nyquist": nyquist, "share_below_nyquist": round(below, 4),
               "share_in_band": round(inside, 4), "ideal_below_nyquist": round(ideal_below, 4),
               "ideal_in_band": round(ideal_inside, 4), "psnr_level_db": round(levels[level], 2)}  # fmt: skip
        rows.append(row)
        print(f"{index} | {level} | {nyquist:g} | {below:.3f} ({ideal_below:.3f}) | {inside:.3f} ({ideal_inside:.3f}) | "
              f"{levels[level]:.2f}")
    print(f"(fit: {summary['parameters']} parameters, {cpu:.0f} CPU s, {wall:.0f} wall s)")


def section_space(args, rows):
    print("\n## Colour space trained in (single SIREN, astronaut): PSNR on sRGB-encoded and on linear values")
    image = photo("astronaut", args.size)
    print("fit space | PSNR sRGB dB | PSNR linear dB | PSNR sRGB, darkest quarter of pixels dB | CPU s")
    luminance = to_srgb(image.pixels).mean(axis=2)
    dark = luminance <= np.quantile(luminance, 0.25)
    for space in ("srgb", "linear"):
        config = ImageFitConfig(levels=1, widths=(128,), hidden_layers=3, steps=args.steps, fit_space=space, device="cpu")
        (field, _), cpu, _ = timed(fit_image, image, config)
        linear = render(field, level=None)
        encoded = shown(linear)
        row = {"section": "space", "fit_space": space, "psnr_srgb_db": round(psnr(encoded, to_srgb(image.pixels)), 2),
               "psnr_linear_db": round(psnr(np.clip(linear, 0.0, 1.0), image.pixels), 2),
               "psnr_dark_db": round(psnr(encoded[dark], to_srgb(image.pixels)[dark]), 2), "cpu_s": round(cpu, 1)}  # fmt: skip
        rows.append(row)
        print(f"{space} | {row['psnr_srgb_db']} | {row['psnr_linear_db']} | {row['psnr_dark_db']} | {row['cpu_s']}")


def network_gradients(field: ImageField, points: np.ndarray) -> np.ndarray:
    """d f / d (pixel) (n, channels, 2) of the sRGB-encoded output at pixel positions (autograd)."""
    u = torch.from_numpy(to_field(points, field.height, field.width)).float().requires_grad_(True)
    out = field(u)
    rows = [torch.autograd.grad(out[:, c].sum(), u, retain_graph=True)[0] for c in range(out.shape[1])]
    return (torch.stack(rows, dim=1) * (2.0 / max(field.height, field.width))).detach().numpy()


def section_tuner(args, rows):
    print("\n## TUNER vs SIREN on held-out pixels (5 %, as the TUNER poster; 1 stage, 3 hidden layers, equal width)")
    print("photo | network | params | PSNR train dB | PSNR held-out dB | gradient PSNR held-out dB | CPU s")
    for name in args.photos[:2]:
        image = photo(name, args.size)
        encoded = to_srgb(image.pixels)
        target = np.stack([np.gradient(encoded, axis=1), np.gradient(encoded, axis=0)], axis=-1)
        for label, tuner in (("SIREN", False), ("TUNER", True)):
            config = ImageFitConfig(levels=1, widths=(args.tuner_width,), hidden_layers=3, steps=args.steps,
                                    holdout=0.05, tuner=tuner, device="cpu")  # fmt: skip
            (field, summary), cpu, _ = timed(fit_image, image, config)
            held = torch.rand(image.height * image.width, generator=torch.Generator().manual_seed(config.seed + 1)) < 0.05
            held = held.numpy()
            points = level_centres(image.height, image.width, 0)[held]
            gradients = network_gradients(field, points)
            reference = target.reshape(-1, image.channels, 2)[held]
            peak = float(reference.max() - reference.min())
            stage = summary["stages"][0]
            row = {"section": "tuner", "photo": name, "network": label, "parameters": field.parameter_count(),
                   "psnr_train_db": stage["psnr_train_db"], "psnr_heldout_db": stage["psnr_heldout_db"],
                   "gradient_psnr_heldout_db": round(psnr(gradients, reference, peak), 2), "cpu_s": round(cpu, 1)}  # fmt: skip
            rows.append(row)
            print(f"{name} | {label} | {row['parameters']} | {row['psnr_train_db']} | {row['psnr_heldout_db']} | "
                  f"{row['gradient_psnr_heldout_db']} | {row['cpu_s']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="most steps of the finest stage (default 1000)")
    parser.add_argument("--size", type=int, default=256, help="side of the photos (default 256)")
    parser.add_argument("--levels", type=int, default=4, help="MR-Net levels (default 4)")
    parser.add_argument("--photos", default=",".join(PHOTOS), help="bundled photos (default %(default)s)")
    parser.add_argument("--tuner-width", type=int, default=128, help="width of the TUNER/SIREN comparison")
    parser.add_argument("--sections", default="photos,bands,space,tuner", help="which parts to run (alias runs in photos)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    args.photos = args.photos.split(",")
    torch.set_num_threads(1)
    rows = []
    sections = {"photos": section_photos, "bands": section_bands, "space": section_space, "tuner": section_tuner}
    for name in args.sections.split(","):
        sections[name](args, rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "json"}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
