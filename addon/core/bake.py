"""The Blender-free pieces of Bake to Image and Ridge Lines: the jobs' params, the checks of what comes back, and the
names of what is made."""

from __future__ import annotations

import os

import numpy as np

from .errors import EngineError

BAKE_MARGIN = 8
"""Texels of padding around the UV islands (Blender's own bake margin defaults to 16; 8 covers the mip levels a
texture of a few thousand texels is usually viewed at)."""
_REINSTALL = "reinstall the extension so that the add-on and the engine come from one release"


def bake_params(
    *,
    model: str | os.PathLike,
    size: int,
    quantity: str,
    colormap: str,
    value_range: tuple[float, float] | None,
    project: bool,
    device: str,
) -> dict:
    """The ``bake`` job of a square ``size`` image, at the UV-mapped mesh sent as its input (``vertices``,
    ``faces``, ``uvs``). ``quantity``, ``colormap``, ``value_range`` and ``project`` as in
    `params.curvature_params`."""
    return {
        "model": str(model),
        "size": int(size),
        "quantity": quantity,
        "colormap": colormap,
        "range": None if value_range is None else [float(value_range[0]), float(value_range[1])],
        "project": bool(project),
        "margin": BAKE_MARGIN,
        "device": device,
    }


def bake_images(outputs: dict[str, np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``values`` (size, size) float32, finite, and ``colors`` (size, size, 4) uint8 of a bake job."""
    values, colors = outputs.get("values"), outputs.get("colors")
    if values is None or colors is None:
        raise EngineError(f"The engine's bake result lacks its images: {_REINSTALL}")
    if values.shape != (size, size) or not np.issubdtype(values.dtype, np.floating):
        raise EngineError(f"The engine returned a bake of shape {values.shape}, expected ({size}, {size}) floats")
    if colors.shape != (size, size, 4) or colors.dtype != np.uint8:
        raise EngineError(f"The engine returned colours of shape {colors.shape} {colors.dtype}, expected 8-bit RGBA")
    if not np.isfinite(values).all():
        raise EngineError("The engine returned a bake with NaN or infinite values")
    return values.astype(np.float32), colors


def float_pixels(values: np.ndarray) -> np.ndarray:
    """Blender's flat RGBA pixels of a one-channel float image (grey: the value in R, G and B; alpha 1)."""
    pixels = np.ones((*values.shape, 4), dtype=np.float32)
    pixels[..., :3] = values[..., None]
    return pixels.ravel()


def byte_pixels(colors: np.ndarray) -> np.ndarray:
    """Blender's flat RGBA pixels of an 8-bit image from uint8 sRGB colours (a byte image's pixels are byte / 255)."""
    return (colors.astype(np.float32) / 255.0).ravel()


def bake_image_names(object_name: str, quantity_name: str) -> tuple[str, str]:
    """The float image's and the 8-bit colour image's names: "<object> <quantity>" and that plus " Colours"."""
    return f"{object_name} {quantity_name}", f"{object_name} {quantity_name} Colours"
