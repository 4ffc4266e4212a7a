"""Marching-cubes extraction of an SDF network's zero level set, skipping space that cannot hold the surface."""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage import measure

from .model import SDFModel
from .networks import evaluate

class EmptySurfaceError(ValueError):
    """The field has no zero level set inside the unit cube (positive or negative everywhere)."""


MIN_LIPSCHITZ = 2.0
"""Lower bound on the assumed Lipschitz constant of f when deciding that a block holds no surface; a fitted SDF
has |grad f| close to 1, so a bound of 2 leaves a wide margin."""
LIPSCHITZ_SAFETY = 1.5
"""The bound is also at least this times the largest |grad f| seen on the coarsest lattice."""


def extract_mesh(
    model: SDFModel,
    resolution: int = 256,
    *,
    skip_empty_space: bool = True,
    batch_size: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """The zero level set as a triangle mesh (vertices in the input's coordinates, faces oriented outward).

    - The grid has ``resolution`` points per axis over the unit cube [-1, 1]^3 of the model's normalization.
    - With ``skip_empty_space``, f is evaluated coarse to fine and a block is skipped once its corner values show,
      with a Lipschitz bound on f, that it cannot contain the surface; the mesh equals the dense one.
    - Memory is one float32 grid plus one evaluation batch.
    Raises `EmptySurfaceError` when the level set is empty (the network is positive or negative everywhere), and a
    ValueError when the network gives NaN or infinite values or the mesh would have non-finite vertices: a broken
    model is never turned into a mesh.
    """
    if resolution < 8:
        raise ValueError(f"resolution must be at least 8, got {resolution}")
    spacing = 2.0 / (resolution - 1)
    if skip_empty_space:
        values = _coarse_to_fine_grid(model.network, resolution, spacing, batch_size)
    else:
        axis = torch.linspace(-1.0, 1.0, resolution)
        points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
        values = evaluate(model.network, points, batch_size).numpy().reshape((resolution,) * 3)
    broken = int(np.count_nonzero(~np.isfinite(values)))
    if broken:
        raise ValueError(
            f"the model gives NaN or infinite values at {broken} of the {values.size} grid points: it is broken "
            "(a diverged training or a damaged file); fit, evolve or morph it again"
        )
    if not (values.min() < 0.0 < values.max()):
        raise EmptySurfaceError(
            "the fitted SDF has no zero level set inside the unit cube (it is "
            f"{'positive' if values.min() >= 0 else 'negative'} everywhere); the fit failed — try more steps"
        )
    vertices, faces, _, _ = measure.marching_cubes(values, level=0.0, spacing=(spacing,) * 3)
    # scikit-image's default winding ("descent") already faces from negative to positive values: outward for us.
    vertices = model.normalization.to_input(vertices.astype(np.float64) - 1.0)
    if not np.isfinite(vertices).all():
        raise ValueError(
            f"the surface's vertices are not finite in the input's coordinates (normalization scale "
            f"{model.normalization.scale:g}, center {list(model.normalization.center)}): the model's normalization "
            "is broken; fit it again"
        )
    return vertices, faces.astype(np.int64)


def _coarse_to_fine_grid(network, resolution: int, spacing: float, batch_size: int) -> np.ndarray:
    top_stride = 2 ** max(0, min(4, int(math.log2(max(resolution // 16, 1)))))
    blocks = math.ceil((resolution - 1) / top_stride)
    size = blocks * top_stride + 1  # padded so every stride divides the grid; the padding is cropped at the end
    values = np.full((size,) * 3, np.nan, dtype=np.float32)

    def evaluate_at(indices: np.ndarray) -> None:
        points = torch.from_numpy((indices * spacing - 1.0).astype(np.float32))
        values[tuple(indices.T)] = evaluate(network, points, batch_size).numpy()

    lattice = np.stack(np.meshgrid(*[np.arange(0, size, top_stride)] * 3, indexing="ij"), -1).reshape(-1, 3)
    evaluate_at(lattice)
    lipschitz = max(MIN_LIPSCHITZ, LIPSCHITZ_SAFETY * _max_gradient_norm(network, lattice * spacing - 1.0))

    stride, candidate = top_stride, np.ones((blocks,) * 3, dtype=bool)
    while True:
        corners = values[::stride, ::stride, ::stride]
        count = candidate.shape[0]
        corner_views = [corners[i : i + count, j : j + count, k : k + count] for i in (0, 1) for j in (0, 1) for k in (0, 1)]
        all_positive = np.logical_and.reduce([c > 0 for c in corner_views])
        all_negative = np.logical_and.reduce([c < 0 for c in corner_views])
        nearest = np.minimum.reduce([np.abs(c) for c in corner_views])
        # Every point of a block is within half its diagonal of some corner.
        empty = (all_positive | all_negative) & (nearest > lipschitz * stride * spacing * math.sqrt(3) / 2)
        skipped = candidate & empty
        _fill_skipped_blocks(values, skipped, np.where(all_positive, 1.0, -1.0), nearest, stride)
        active = candidate & ~empty
        if stride == 1:
            break
        stride //= 2
        candidate = active.repeat(2, 0).repeat(2, 1).repeat(2, 2)
        count = candidate.shape[0]
        needed = np.zeros((count + 1,) * 3, dtype=bool)
        for i in (0, 1):
            for j in (0, 1):
                for k in (0, 1):
                    needed[i : i + count, j : j + count, k : k + count] |= candidate
        needed &= np.isnan(values[::stride, ::stride, ::stride])
        evaluate_at(np.argwhere(needed) * stride)
    return values[:resolution, :resolution, :resolution]


def _fill_skipped_blocks(values, skipped, sign, nearest, stride) -> None:
    """Give the unevaluated points of skipped blocks a value of the block's sign (the surface is not there)."""
    if not skipped.any():
        return
    fill = np.where(skipped, sign * nearest, np.nan).astype(np.float32)
    fill = fill.repeat(stride, 0).repeat(stride, 1).repeat(stride, 2)
    fill = np.pad(fill, ((0, 1),) * 3, mode="edge")
    unknown = np.isnan(values) & ~np.isnan(fill)
    values[unknown] = fill[unknown]


def _max_gradient_norm(network, points: np.ndarray, batch_size: int = 16384) -> float:
    device = next(network.parameters()).device
    largest = 0.0
    for start in range(0, len(points), batch_size):
        chunk = torch.from_numpy(points[start : start + batch_size].astype(np.float32)).to(device).requires_grad_(True)
        (gradient,) = torch.autograd.grad(network(chunk).sum(), chunk)
        largest = max(largest, float(gradient.norm(dim=-1).max()))
    return largest
