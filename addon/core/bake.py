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


RIDGE_KINDS = (("ridge", "Ridges"), ("valley", "Valleys"))
"""The ridges job's line kinds and the word each curve object's name ends with."""


def ridges_params(*, model: str | os.PathLike, device: str) -> dict:
    """The ``ridges`` job at the mesh sent as its input (``vertices``, ``faces``); the engine's defaults for the
    rest (short pieces under 5 % of the diagonal dropped, points projected onto the surface)."""
    return {"model": str(model), "device": device}


def ridge_polylines(outputs: dict[str, np.ndarray], kind: str) -> list[tuple[np.ndarray, bool]]:
    """Checked polylines of one kind of a ridges job: (points (k, 3) float64, closed) each."""
    try:
        points, offsets, closed = (outputs[f"{kind}_{name}"] for name in ("points", "offsets", "closed"))
    except KeyError:
        raise EngineError(f"The engine's ridges result lacks its {kind} lines: {_REINSTALL}") from None
    if points.ndim != 2 or points.shape[1] != 3 or not np.isfinite(points).all():
        raise EngineError(f"The engine returned {kind} points of shape {points.shape} or not finite: {_REINSTALL}")
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets[0] != 0 or offsets[-1] != len(points) or (np.diff(offsets) < 2).any():
        raise EngineError(f"The engine returned {kind} offsets that do not split its points into lines: {_REINSTALL}")
    if closed.shape != (len(offsets) - 1,):
        raise EngineError(f"The engine returned {closed.shape} closed flags for {len(offsets) - 1} {kind} lines")
    return [(points[a:b].astype(np.float64), bool(c)) for a, b, c in zip(offsets[:-1], offsets[1:], closed)]
