"""The Gaussian pyramid that MR-Net stages are trained on, its pixel-centre convention, and a box filter (the
reference of anti-aliased minification).

Convention (one place for it, tested in tests/engine/test_images.py):
- Pixels are cells: pixel a of level j covers [a 2^j, (a + 1) 2^j) in level-0 pixel units and its value belongs to
  its centre (a + 0.5) 2^j. Level j + 1's pixel a therefore sits at the centre of level j's pixels 2a and 2a + 1
  (the "2^j" sample-rate convention; a pyramid of 2^j + 1 samples would align corners instead).
- Level j + 1 = level j blurred by a Gaussian of sigma 2/3 (in level-j pixels, MR-Net's sigma) and sampled at those
  centres, i.e. the six taps at offsets -2.5 ... 2.5 around each new centre, normalised. A linear ramp stays the same
  ramp at every level (away from the borders), and a constant stays constant everywhere.
- Borders are mirrored about the image's edge (half-sample symmetric, numpy's ``"symmetric"``): never wrapped, which
  would blend the opposite side in. An odd side first gets its last pixel repeated, so level j has
  ceil(side / 2^j) pixels along each side.
- Filtering is done in linear light, the only space where averaging pixels averages light; with alpha, colour is
  premultiplied while it is filtered (transparent pixels' colours would bleed in otherwise).
"""

from __future__ import annotations

import math

import numpy as np

SIGMA = 2.0 / 3.0
"""Standard deviation of the blur between pyramid levels, in pixels of the finer level (MR-Net's)."""

_OFFSETS = np.arange(-2, 4) - 0.5
"""Where the six taps of a new pixel lie relative to its centre, in pixels of the finer level."""


def downsample_weights(sigma: float = SIGMA) -> np.ndarray:
    """The six normalised taps (float64) of one level step: a new pixel a is sum_t w_t * old[2a + t], t = -2..3."""
    weights = np.exp(-(_OFFSETS**2) / (2.0 * sigma**2))
    return weights / weights.sum()


def level_shape(height: int, width: int, level: int) -> tuple[int, int]:
    """(height, width) of pyramid level ``level`` of an image of that size: each side ceil(side / 2^level)."""
    return math.ceil(height / 2**level), math.ceil(width / 2**level)


def _halve(values: np.ndarray, axis: int, weights: np.ndarray) -> np.ndarray:
    values = np.moveaxis(values, axis, 0)
    if len(values) % 2:
        values = np.concatenate([values, values[-1:]])
    count = len(values) // 2
    padded = np.pad(values, [(2, 2)] + [(0, 0)] * (values.ndim - 1), mode="symmetric")
    out = sum(w * padded[t : t + 2 * count : 2] for t, w in enumerate(weights))
    return np.moveaxis(out, 0, axis)


def downsample(pixels: np.ndarray, alpha: bool = False, sigma: float = SIGMA) -> np.ndarray:
    """One pyramid step of linear pixels (h, w, c): (ceil(h/2), ceil(w/2), c), float32. With ``alpha`` the last
    channel is alpha and the colour is filtered premultiplied."""
    pixels = np.asarray(pixels, dtype=np.float64)
    if pixels.ndim != 3:
        raise ValueError(f"pixels must be (height, width, channels), got {pixels.shape}")
    weights = downsample_weights(sigma)
    work = _premultiplied(pixels) if alpha else pixels
    out = _halve(_halve(work, 0, weights), 1, weights)
    return (_straight(out) if alpha else out).astype(np.float32)


def tower_step(pixels: np.ndarray, alpha: bool = False, sigma: float = SIGMA) -> np.ndarray:
    """The next level's image at THIS level's pixel centres (h, w, c), float32: the same Gaussian with its taps centred
    on each pixel (offsets -3..3) instead of between two. `downsample` samples G * pixels half a pixel off, this at
    the pixels, so both are samples of one continuous image (a Gaussian "tower" level, twice the pyramid's rate)."""
    pixels = np.asarray(pixels, dtype=np.float64)
    weights = np.exp(-(np.arange(-3, 4) ** 2) / (2.0 * sigma**2))
    weights /= weights.sum()
    work = _premultiplied(pixels) if alpha else pixels
    for axis in (0, 1):
        moved = np.moveaxis(work, axis, 0)
        padded = np.pad(moved, [(3, 3)] + [(0, 0)] * (moved.ndim - 1), mode="symmetric")
        work = np.moveaxis(sum(w * padded[t : t + len(moved)] for t, w in enumerate(weights)), 0, axis)
    return (_straight(work) if alpha else work).astype(np.float32)


def gaussian_pyramid(pixels: np.ndarray, levels: int, alpha: bool = False, sigma: float = SIGMA) -> list[np.ndarray]:
    """Levels 0 (the image itself) to ``levels`` - 1 of the Gaussian pyramid of linear pixels (h, w, c)."""
    if levels < 1:
        raise ValueError(f"a pyramid needs at least 1 level, got {levels}")
    pyramid = [np.asarray(pixels, dtype=np.float32)]
    for _ in range(levels - 1):
        pyramid.append(downsample(pyramid[-1], alpha, sigma))
    return pyramid


def _premultiplied(pixels: np.ndarray) -> np.ndarray:
    out = pixels.copy()
    out[..., :-1] *= out[..., -1:]
    return out


def _straight(pixels: np.ndarray) -> np.ndarray:
    out = pixels.copy()
    alpha = out[..., -1:]
    out[..., :-1] = np.where(alpha > 1e-6, out[..., :-1] / np.maximum(alpha, 1e-6), 0.0)
    return out


def box_downsample(pixels: np.ndarray, factor: int, alpha: bool = False) -> np.ndarray:
    """Each output pixel the plain mean of a ``factor`` x ``factor`` block of linear pixels (h, w, c): the exact
    area average, the reference of minification (sides cropped to multiples of ``factor``)."""
    pixels = np.asarray(pixels, dtype=np.float64)
    height, width = (pixels.shape[0] // factor) * factor, (pixels.shape[1] // factor) * factor
    if height == 0 or width == 0:
        raise ValueError(f"an image of {pixels.shape[1]}x{pixels.shape[0]} has no {factor}x{factor} block")
    work = _premultiplied(pixels) if alpha else pixels
    blocks = work[:height, :width].reshape(height // factor, factor, width // factor, factor, -1).mean(axis=(1, 3))
    return (_straight(blocks) if alpha else blocks).astype(np.float32)


def level_centres(height: int, width: int, level: int) -> np.ndarray:
    """Centres of level ``level``'s pixels (rows first, then columns) in level-0 pixel units: (n, 2) float64 of
    (x, y), origin at the image's top-left corner, x to the right, y down."""
    rows, columns = level_shape(height, width, level)
    step = 2.0**level
    x = (np.arange(columns) + 0.5) * step
    y = (np.arange(rows) + 0.5) * step
    grid_x, grid_y = np.meshgrid(x, y)
    return np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
