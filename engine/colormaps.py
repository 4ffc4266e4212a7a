"""Per-vertex colours for scalar fields such as curvature, with the range used (for a legend).

- Signed quantities (H, K, k1, k2, kappa): a diverging blue-white-red map, white at 0, blue negative (concave,
  saddle for K), red positive (convex); the range is symmetric around 0 unless the caller gives one.
- Magnitudes (|H|, curvedness): a sequential map (viridis).
- Colours are sRGB-encoded floats in [0, 1], as colour tables are usually given (matplotlib, ColorBrewer); a
  consumer that wants linear colour (Blender's float colour attributes) converts them.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

QuantityKind = Literal["signed", "magnitude"]

QUANTITIES: dict[str, QuantityKind] = {
    "mean": "signed",
    "gaussian": "signed",
    "k1": "signed",
    "k2": "signed",
    "kappa": "signed",
    "abs_mean": "magnitude",
    "curvedness": "magnitude",
}
"""Names of the fields of `engine.geometry.Curvatures` that can be coloured, and the kind of map each takes."""

FORCED_KINDS: dict[str, QuantityKind] = {"diverging": "signed", "sequential": "magnitude"}
"""Colour maps that force a kind of map whatever the quantity."""
COLORMAPS = ("auto", *FORCED_KINDS)
"""Colour map choices: ``auto`` takes the quantity's own kind (`QUANTITIES`)."""


def map_kind(quantity: str, colormap: str = "auto") -> QuantityKind:
    """The kind of map that colours ``quantity`` (a name of `QUANTITIES`) under ``colormap`` (of `COLORMAPS`)."""
    if quantity not in QUANTITIES:
        raise ValueError(f"unknown curvature quantity {quantity!r}; choose one of {', '.join(QUANTITIES)}")
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colour map {colormap!r}; choose one of {', '.join(COLORMAPS)}")
    return FORCED_KINDS.get(colormap, QUANTITIES[quantity])

NAN_COLOR = (0.5, 0.5, 0.5, 1.0)
"""Neutral grey for values that are NaN or infinite (e.g. where grad f = 0)."""

DEFAULT_PERCENTILE = 98.0
"""Robust range: the signed map spans +-(this percentile of |v|); the sequential map spans the (100 - p)th to the
pth percentile, so a few extreme values do not wash out the rest."""

# ColorBrewer RdBu, 11 classes (Cynthia Brewer, colorbrewer2.org), reversed so negative is blue and positive red.
_DIVERGING = np.array(
    [
        [0x05, 0x30, 0x61],
        [0x21, 0x66, 0xAC],
        [0x43, 0x93, 0xC3],
        [0x92, 0xC5, 0xDE],
        [0xD1, 0xE5, 0xF0],
        [0xF7, 0xF7, 0xF7],
        [0xFD, 0xDB, 0xC7],
        [0xF4, 0xA5, 0x82],
        [0xD6, 0x60, 0x4D],
        [0xB2, 0x18, 0x2B],
        [0x67, 0x00, 0x1F],
    ],
    dtype=np.float64,
) / 255.0

# matplotlib's viridis (van der Walt and Smith) sampled at 10 evenly spaced points, as in plotly's Viridis scale.
_SEQUENTIAL = np.array(
    [
        [0x44, 0x01, 0x54],
        [0x48, 0x28, 0x78],
        [0x3E, 0x49, 0x89],
        [0x31, 0x68, 0x8E],
        [0x26, 0x82, 0x8E],
        [0x1F, 0x9E, 0x89],
        [0x35, 0xB7, 0x79],
        [0x6E, 0xCE, 0x58],
        [0xB5, 0xDE, 0x2B],
        [0xFD, 0xE7, 0x25],
    ],
    dtype=np.float64,
) / 255.0


def colorize(
    values,
    quantity_kind: QuantityKind,
    *,
    value_range: tuple[float, float] | None = None,
    percentile: float = DEFAULT_PERCENTILE,
) -> tuple[np.ndarray, tuple[float, float]]:
    """RGBA float32 colours (n, 4) for values (n,) and the (low, high) range the map spans.

    - ``quantity_kind`` "signed": diverging map, white at 0. Without ``value_range`` the range is
      (-m, m), m = the ``percentile`` of |v|. A given range must contain 0 (low < 0 < high); each half of the map
      then spans its own side, so 0 stays white.
    - ``quantity_kind`` "magnitude": sequential map over ``value_range`` or the (100 - ``percentile``)th to
      ``percentile``th percentiles of the values.
    - Values beyond the range take the end colours; NaN and infinite values take `NAN_COLOR`.
    - A range that the data cannot set (no finite values, or all equal) falls back to one of width 1 (or +-1).
    """
    values = np.asanyarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must be (n,), got shape {values.shape}")
    if not 50.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [50, 100], got {percentile}")
    finite = np.isfinite(values)
    if quantity_kind == "signed":
        low, high = _signed_range(values[finite], value_range, percentile)
        # Two linear halves meeting at 0 (the table's middle entry).
        position = np.where(values < 0, 0.5 - 0.5 * values / low, 0.5 + 0.5 * values / high)
        table = _DIVERGING
    elif quantity_kind == "magnitude":
        low, high = _sequential_range(values[finite], value_range, percentile)
        position = (values - low) / (high - low)
        table = _SEQUENTIAL
    else:
        raise ValueError(f'quantity_kind must be "signed" or "magnitude", got {quantity_kind!r}')
    rgba = np.empty((len(values), 4), dtype=np.float32)
    rgba[:] = NAN_COLOR
    rgba[finite, :3] = _interpolate(table, np.clip(position[finite], 0.0, 1.0))
    return rgba, (low, high)


def _signed_range(finite: np.ndarray, value_range, percentile: float) -> tuple[float, float]:
    if value_range is not None:
        low, high = (float(v) for v in value_range)
        if not low < 0.0 < high:
            raise ValueError(f"a signed quantity's range must contain 0 (low < 0 < high), got ({low}, {high})")
        return low, high
    magnitudes = np.abs(finite)
    extent = float(np.percentile(magnitudes, percentile)) if len(magnitudes) else 0.0
    if extent <= 0.0:  # mostly zeros: let the few non-zero values, if any, set the range
        extent = float(magnitudes.max(initial=0.0)) or 1.0
    return -extent, extent


def _sequential_range(finite: np.ndarray, value_range, percentile: float) -> tuple[float, float]:
    if value_range is not None:
        low, high = (float(v) for v in value_range)
        if not low < high:
            raise ValueError(f"value_range must have low < high, got ({low}, {high})")
        return low, high
    if len(finite) == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(finite, [100.0 - percentile, percentile]))
    if high <= low:
        return low, low + 1.0
    return low, high


def _interpolate(table: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Piecewise-linear lookup of positions in [0, 1] in a table of evenly spaced control colours."""
    scaled = position * (len(table) - 1)
    index = np.minimum(scaled.astype(np.int64), len(table) - 2)
    fraction = (scaled - index)[:, None]
    return table[index] * (1.0 - fraction) + table[index + 1] * fraction
