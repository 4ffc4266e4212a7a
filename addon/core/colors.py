"""Colour encoding: the engine's colour maps give sRGB-encoded values, Blender's float colour attributes hold
linear ones."""

from __future__ import annotations

import numpy as np


def srgb_to_linear(rgba: np.ndarray) -> np.ndarray:
    """(n, 4) sRGB-encoded RGBA in [0, 1] to linear RGBA (float32) with the IEC 61966-2-1 curve; alpha is kept."""
    rgba = np.asarray(rgba, dtype=np.float64)
    if rgba.ndim != 2 or rgba.shape[1] != 4:
        raise ValueError(f"colours must be (n, 4) RGBA, got shape {rgba.shape}")
    rgb = rgba[:, :3]
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    return np.concatenate([linear, rgba[:, 3:]], axis=1).astype(np.float32)
