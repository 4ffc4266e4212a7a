"""The conventions every part of the engine shares, in one place.

- SDF sign: negative inside, positive outside; normals n = grad f / |grad f| point outward.
- Curvature: kappa = div(grad f / |grad f|) = k1 + k2 (positive on a convex surface); mean curvature H = kappa / 2.
- Normalization: inputs are mapped into the cube of half-size ``UNIT_HALF_SIZE`` centred at the origin by one
  uniform scale and a shift (`Normalization`); every output goes back to the input's coordinates.
- Dtypes: float32 on the hot path, float64 in references and accuracy tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

UNIT_HALF_SIZE = 0.9
"""Half-size of the cube the input's bounding box is scaled into (inside [-1, 1]^3, leaving a margin)."""


@dataclass(frozen=True)
class Normalization:
    """Uniform scale and shift from input coordinates to the unit cube: ``unit = (x - center) * scale``.

    Distances scale the same way: an SDF value in unit coordinates divided by ``scale`` is a distance in input
    units.
    """

    center: tuple[float, float, float]
    scale: float

    def __post_init__(self):
        center = tuple(self.center)
        if len(center) != 3 or not all(math.isfinite(float(c)) for c in center):
            raise ValueError(f"a normalization's center must be 3 finite numbers, got {self.center}")
        if not (math.isfinite(float(self.scale)) and self.scale > 0.0):
            raise ValueError(
                f"a normalization's scale must be a positive finite number, got {self.scale}: every output would be "
                "infinite or mirrored"
            )

    @classmethod
    def fit_bounds(cls, points: np.ndarray) -> "Normalization":
        """The transform that puts the bounding box of ``points`` (n, 3) centred in the cube of half-size 0.9."""
        points = np.asanyarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
            raise ValueError(f"points must be a non-empty (n, 3) array, got shape {points.shape}")
        low, high = points.min(axis=0), points.max(axis=0)
        half_extent = float((high - low).max()) / 2.0
        if not np.isfinite(low).all() or not np.isfinite(high).all():
            raise ValueError("the points hold NaN or infinite coordinates")
        if not np.isfinite(half_extent) or half_extent <= 0.0 or not np.isfinite(UNIT_HALF_SIZE / half_extent):
            raise ValueError("the points span no volume: all of them coincide, so there is no shape to fit")
        center = (low + high) / 2.0
        return cls(center=tuple(float(c) for c in center), scale=UNIT_HALF_SIZE / half_extent)

    def to_unit(self, points: np.ndarray) -> np.ndarray:
        """Input coordinates (n, 3) to unit-cube coordinates."""
        return (np.asanyarray(points) - np.asarray(self.center)) * self.scale

    def to_input(self, points: np.ndarray) -> np.ndarray:
        """Unit-cube coordinates (n, 3) back to input coordinates."""
        return np.asanyarray(points) / self.scale + np.asarray(self.center)

    def to_dict(self) -> dict:
        return {"center": list(self.center), "scale": self.scale}

    @classmethod
    def from_dict(cls, data: dict) -> "Normalization":
        return cls(center=tuple(float(c) for c in data["center"]), scale=float(data["scale"]))


# Curvature of level sets (computed in `engine.geometry`; every function returning a curvature names this).

MEAN_CURVATURE_FACTOR = 0.5
"""H = MEAN_CURVATURE_FACTOR * kappa: the mean curvature is half of kappa = div(grad f / |grad f|) = k1 + k2."""

CURVATURE_CONVENTION = (
    "SDF negative inside, normals grad f/|grad f| outward; kappa = div(grad f/|grad f|) = k1 + k2 > 0 on convex "
    "shapes; mean H = kappa/2; Gaussian K = k1*k2 = -det([[Hess f, grad f], [grad f^T, 0]])/|grad f|^4; "
    "principal k1 >= k2 = H +- sqrt(max(H^2 - K, 0))"
)
"""The curvature convention in one line, for docstrings, file headers and legends."""
