"""The frames of an image morph: the two discrete images looked up along the warp (bilinear, edge pixels repeated)
and blended (`engine.images.morph`'s docstring), at any size and times, from a trained or loaded morph."""

from __future__ import annotations

from typing import Callable, Literal

import numpy as np

from .io import Image, to_linear, to_srgb
from .landmarks import MAX_RENDER_SIDE, ImageGeometry, check_same_aspect
from .morph import ImageMorph

# --- frames ---------------------------------------------------------------------------------------------------------


def matched_pair(image0: Image, image1: Image) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of both images (linear light) with one channel layout: colour if either has colour (grey repeated),
    alpha if either has alpha (opaque added)."""
    colour = max(image0.channels, image1.channels) >= 3
    alpha = image0.has_alpha or image1.has_alpha

    def layout(image: Image) -> np.ndarray:
        pixels = image.pixels
        values, opacity = (pixels[..., :-1], pixels[..., -1:]) if image.has_alpha else (pixels, None)
        if colour and values.shape[2] == 1:
            values = np.repeat(values, 3, axis=2)
        if alpha:
            values = np.concatenate([values, np.ones_like(values[..., :1]) if opacity is None else opacity], axis=2)
        return values

    return layout(image0), layout(image1)


def render_frames(
    morph: ImageMorph,
    image0: Image,
    image1: Image,
    times,
    *,
    size: tuple[int, int] | None = None,
    blend: Literal["linear", "srgb"] = "linear",
    on_frame: Callable[[int, int, np.ndarray], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> list[np.ndarray]:
    """The frames of ``morph`` at ``times`` (each in [0, 1]), linear-light pixels (height, width, channels); see
    the module's notes. ``size`` (width, height): the frames' size, by default image 0's (same aspect as the
    morph's images); the images may be of other resolutions than the morph was trained on, if of its aspect.
    ``on_frame(index, total, pixels)`` after each frame."""
    from ..training import Cancelled

    geometry0, geometry1 = ImageGeometry(image0.width, image0.height), ImageGeometry(image1.width, image1.height)
    check_same_aspect(morph.geometries[0], geometry0, ("the morph's image 0", "image 0"))
    check_same_aspect(morph.geometries[1], geometry1, ("the morph's image 1", "image 1"))
    width, height = size if size is not None else (image0.width, image0.height)
    if not all(isinstance(v, (int, np.integer)) and 1 <= v <= MAX_RENDER_SIDE for v in (width, height)):
        raise ValueError(f"the frame size must be two whole numbers of pixels in [1, {MAX_RENDER_SIDE}], got {size}")
    output = ImageGeometry(int(width), int(height))
    check_same_aspect(geometry0, output, ("image 0", f"a frame of {width}x{height}"))
    if blend not in ("linear", "srgb"):
        raise ValueError(f"blend must be 'linear' or 'srgb', got {blend!r}")
    times = [float(t) for t in times]
    bad = [t for t in times if not 0.0 <= t <= 1.0]
    if bad:
        raise ValueError(f"frame times must lie in [0, 1] (0 is image 0, 1 is image 1), got {bad[0]}")

    first, second = matched_pair(image0, image1)
    if blend == "srgb":
        first, second = to_srgb(first), to_srgb(second)
    # Frame pixel centres in morph coordinates, and in each image's pixel indices (float64: exact at equal sizes).
    columns, rows = np.meshgrid(np.arange(output.width) + 0.5, np.arange(output.height) + 0.5, indexing="xy")
    centres = np.stack([columns.ravel(), rows.ravel()], axis=-1)
    points = output.to_morph(centres)
    bases = [_indices(centres, output, geometry) for geometry in (geometry0, geometry1)]
    frames = []
    for index, t in enumerate(times):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"rendering cancelled at frame {index} of {len(times)}")
        looks = []
        for image, base, geometry, s in ((first, bases[0], geometry0, -t), (second, bases[1], geometry1, 1.0 - t)):
            moved = base + morph.displacement(points, s) * geometry.pixels_per_unit  # exactly base where s = 0
            looks.append(_bilinear(image, moved))
        frame = (1.0 - t) * looks[0] + t * looks[1]  # exactly one image where t is 0 or 1
        frame = frame.reshape(output.height, output.width, -1).astype(np.float32)
        if blend == "srgb":
            frame = to_linear(frame)
        frames.append(frame)
        if on_frame is not None:
            on_frame(index, len(times), frame)
    return frames


def carried(morph: ImageMorph, pixels: np.ndarray, s: float, size: tuple[int, int] | None = None) -> np.ndarray:
    """``pixels`` (h, w, c) looked up at T(x, s) for the pixel centres x of a frame of ``size`` (default: the image's
    own): image 0 with s = -t (or image 1 with s = 1 - t) is its part of the frame at t; image 0 with s = -1 is
    image 0 carried onto image 1. Returns (height, width, c) float64."""
    geometry = ImageGeometry(pixels.shape[1], pixels.shape[0])
    output = geometry if size is None else ImageGeometry(*size)
    columns, rows = np.meshgrid(np.arange(output.width) + 0.5, np.arange(output.height) + 0.5, indexing="xy")
    centres = np.stack([columns.ravel(), rows.ravel()], axis=-1)
    moves = morph.displacement(output.to_morph(centres), s) * geometry.pixels_per_unit
    moved = _indices(centres, output, geometry) + moves
    return _bilinear(pixels, moved).reshape(output.height, output.width, -1)


def _indices(centres: np.ndarray, output: ImageGeometry, image: ImageGeometry) -> np.ndarray:
    """Pixel centres of a frame (pixel coordinates) as pixel indices of ``image`` (centre of pixel j at j): the
    same point of morph coordinates. Exactly the frame's own indices when the sizes agree."""
    scale = image.long_side / output.long_side
    offset = np.array([output.width, output.height]) / 2.0
    return (centres - offset) * scale + np.array([image.width, image.height]) / 2.0 - 0.5


def _bilinear(pixels: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Bilinear look-ups of ``pixels`` (h, w, c) at pixel indices (n, 2) (x, y; centre of pixel j at j), edge pixels
    repeated outside; (n, c) float64. At integer indices the pixel itself, exactly."""
    height, width = pixels.shape[:2]
    x = np.clip(indices[:, 0], 0.0, width - 1.0)
    y = np.clip(indices[:, 1], 0.0, height - 1.0)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    values = pixels.astype(np.float64, copy=False)
    top = values[y0, x0] * (1.0 - fx) + values[y0, x1] * fx
    bottom = values[y1, x0] * (1.0 - fx) + values[y1, x1] * fx
    return top * (1.0 - fy) + bottom * fy


