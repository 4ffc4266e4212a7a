"""A preview render's shading and files (`engine.render`): Lambert under a headlight on grey or on curvature
colours (mean curvature H = kappa / 2 in input units, `engine.colormaps`), in linear light; ``render.png`` holds it
sRGB-encoded with alpha, ``depth.npy`` and ``normal.npy`` the passes, ``render.json`` the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

RENDER_FILES = {"image": "render.png", "depth": "depth.npy", "normal": "normal.npy", "report": "render.json"}
"""The files `write_passes` writes in its folder (stable names)."""
ALBEDO = 0.8
"""Grey of the plain shading (linear)."""
AMBIENT = 0.12
"""Light every lit-or-not surface gets, as a share of white."""
LIGHT_IN_CAMERA = (-0.4, 0.6, 1.0)
"""The headlight's direction in camera coordinates (towards the upper left of the viewer)."""


def shade(stack, normalization, camera, settings, unit_points, normals) -> np.ndarray:
    """Linear colours (n, 3): Lambert under a headlight, on grey or on curvature colours."""
    if not len(normals):
        return np.zeros((0, 3))
    rotation = np.asarray(camera.rotation)
    light = rotation @ (np.asarray(LIGHT_IN_CAMERA) / np.linalg.norm(LIGHT_IN_CAMERA))
    lambert = np.clip(normals @ light, 0.0, 1.0)[:, None]
    albedo = np.full((len(normals), 3), ALBEDO)
    if settings.shading == "curvature":
        from .colormaps import colorize, map_kind
        from .geometry import curvatures

        module = stack.level_module()
        single = getattr(module, "stages", None)  # a plain SIREN alone gets the explicit derivative pass
        field_module = single[0] if single is not None and len(single) == 1 else module
        found = curvatures(field_module, torch.as_tensor(unit_points, dtype=torch.float32))
        scale = normalization.scale
        per_unit = {"gaussian": scale**2, "abs_mean": scale, "curvedness": scale, "mean": scale, "k1": scale,
                    "k2": scale, "kappa": scale}  # fmt: skip
        shown = getattr(found, settings.quantity) * per_unit[settings.quantity]
        colors, _ = colorize(shown, map_kind(settings.quantity), value_range=settings.value_range)
        albedo = to_linear(colors[:, :3].astype(np.float64))
    return np.clip(albedo * (AMBIENT + (1.0 - AMBIENT) * lambert), 0.0, 1.0)


def to_linear(srgb: np.ndarray) -> np.ndarray:
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def to_srgb(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


def write_passes(folder: str | Path, rgba: np.ndarray, depth: np.ndarray, normal: np.ndarray, report: dict) -> dict:
    """The passes as `RENDER_FILES` in ``folder`` (each written whole: a temporary file, then renamed); returns
    role -> file name."""
    import imageio.v3 as iio

    from .model import replaced_whole

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with replaced_whole(folder / RENDER_FILES["image"]) as temporary:
        encoded = np.concatenate([to_srgb(rgba[..., :3]), np.clip(rgba[..., 3:], 0.0, 1.0)], axis=-1)
        iio.imwrite(temporary, np.round(encoded * 255.0).astype(np.uint8), extension=".png")
    for role, array in (("depth", depth), ("normal", normal)):
        with replaced_whole(folder / RENDER_FILES[role]) as temporary:
            with open(temporary, "wb") as stream:
                np.save(stream, array, allow_pickle=False)
    with replaced_whole(folder / RENDER_FILES["report"]) as temporary:
        temporary.write_text(json.dumps(report, indent=2) + "\n")
    return dict(RENDER_FILES)
