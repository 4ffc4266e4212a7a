"""Marching-cubes extraction of an SDF network's zero level set, skipping space that cannot hold the surface."""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage import measure

from .model import SDFModel
from .multires import LevelOfDetail, MultiresSDF
from .networks import Siren

class EmptySurfaceError(ValueError):
    """The field has no zero level set inside the unit cube (positive or negative everywhere)."""


MIN_LIPSCHITZ = 2.0
"""Lower bound on the assumed Lipschitz constant of f when deciding that space holds no surface; a fitted SDF has
|grad f| close to 1, so a bound of 2 leaves a wide margin."""
LIPSCHITZ_SAFETY = 1.5
"""The bound is also at least this times the largest |grad f| seen on the coarsest lattice."""
SLAB_CELLS = 32
"""Marching cubes runs on slabs of this many cells along the first axis; memory is a few slabs, not the grid."""
EVALUATION_BATCH = 65536
"""Points per network call: smaller batches were slower on the CPU (bench/extraction_speed.py); 64 MiB a layer."""

# The 27 points of a 2x2x2 block (offsets in {0, 1, 2}^3) and their distances, in cells, to its 8 corners.
_OFFSETS = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)
_CORNERS = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 3)
_DISTANCES = np.linalg.norm(_OFFSETS[:, None, :] - 2 * _CORNERS[None, :, :], axis=-1)


def extract_mesh(
    model: SDFModel,
    resolution: int = 256,
    *,
    skip_empty_space: bool = True,
    batch_size: int = EVALUATION_BATCH,
    level: float | None = None,
    band_culling: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The zero level set as a triangle mesh (vertices in the input's coordinates, faces oriented outward).

    - The grid has ``resolution`` points per axis over the unit cube [-1, 1]^3 of the model's normalization.
    - With ``skip_empty_space``, f is evaluated on a lattice of every other grid point coarse to fine, skipping
      blocks that a Lipschitz bound on f proves empty; then, in the blocks left, only at the grid points whose sign
      no evaluated corner proves, and at the corners of the cells that straddle the surface. The mesh equals the
      dense one: marching cubes reads the values of straddling cells only, and the signs elsewhere.
    - Marching cubes runs slab by slab (`SLAB_CELLS`), for the dense grid too; vertices shared by two slabs are
      merged. Memory is the half-resolution lattice
      plus a few slabs.
    - A multiresolution model (`engine.multires.MultiresSDF`) is extracted at ``level`` (None: the finest; other
      models have level 0 only). With ``band_culling`` its finer stages are evaluated only where every coarser sum is
      within its band (`engine.multires.LevelOfDetail.band_bounded`, the margin a Lipschitz bound of
      `MIN_LIPSCHITZ` times a cell's diagonal): the mesh equals the full evaluation's wherever the model is nested.
    Raises `EmptySurfaceError` when the level set is empty (the network is positive or negative everywhere), and a
    ValueError when the network gives NaN or infinite values or the mesh would have non-finite vertices: a broken
    model is never turned into a mesh.
    """
    if resolution < 8:
        raise ValueError(f"resolution must be at least 8, got {resolution}")
    spacing = 2.0 / (resolution - 1)
    network = model.network
    if isinstance(network, MultiresSDF):
        network = LevelOfDetail(network, level)
    elif level not in (None, 0):
        raise ValueError(
            f"level {level!r} needs a model fitted with levels (fit --levels N); this one has only level 0"
        )
    evaluate_at = _Evaluator(network, resolution, spacing, batch_size)
    if band_culling and isinstance(network, LevelOfDetail):
        evaluate_at.band_margin = MIN_LIPSCHITZ * spacing * math.sqrt(3.0)
    if skip_empty_space:
        slabs = _sparse_slabs(network, resolution, spacing, evaluate_at)
    else:
        slabs = _dense_slabs(resolution, evaluate_at)
    vertices, faces, sign = _march_slabs(slabs)
    if len(faces) == 0:
        raise EmptySurfaceError(
            "the fitted SDF has no zero level set inside the unit cube (it is "
            f"{'positive' if sign >= 0 else 'negative'} everywhere); the fit failed — try more steps"
        )
    vertices = model.normalization.to_input(vertices * spacing - 1.0)
    if not np.isfinite(vertices).all():
        raise ValueError(
            f"the surface's vertices are not finite in the input's coordinates (normalization scale "
            f"{model.normalization.scale:g}, center {list(model.normalization.center)}): the model's normalization "
            "is broken; fit it again"
        )
    return vertices, faces


class _Evaluator:
    """f at integer grid indices (n, 3), counting the evaluations; refuses NaN or infinite values in the grid."""

    def __init__(self, network, resolution: int, spacing: float, batch_size: int):
        self.network, self.resolution, self.spacing, self.batch_size = network, resolution, spacing, batch_size
        self.device = next(network.parameters()).device
        self.count = 0
        self.band_margin = None
        """With a margin, a level of detail is evaluated band-culled (`LevelOfDetail.band_bounded`)."""

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's forward; a SIREN's with its sines taken in place (the same arithmetic, less memory)."""
        if self.band_margin is not None:
            return self.network.band_bounded(x, self.band_margin)
        if not isinstance(self.network, Siren) or self.network.config.out_features != 1:
            return self.network(x)
        for layer in self.network.layers:
            x = layer.linear(x).mul_(layer.omega).sin_()
        return self.network.output(x).squeeze(-1)

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty(len(indices), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(indices), self.batch_size):
                chunk = torch.from_numpy((indices[start : start + self.batch_size] * self.spacing - 1.0).astype(np.float32))
                out[start : start + len(chunk)] = self._forward(chunk.to(self.device)).float().cpu().numpy()
        self.count += len(indices)
        inside = (indices < self.resolution).all(axis=1)
        broken = int(np.count_nonzero(~np.isfinite(out[inside])))
        if broken:
            raise ValueError(
                f"the model gives NaN or infinite values at {broken} of the {self.resolution ** 3} grid points: it is "
                "broken (a diverged training or a damaged file); fit, evolve or morph it again"
            )
        return out


def _march_slabs(slabs) -> tuple[np.ndarray, np.ndarray, float]:
    """Marching cubes over (start, values) slabs along axis 0; returns the vertices in grid units, the faces, and
    the sign of the field when there is no surface."""
    all_vertices, all_faces, count, sign = [], [], 0, 0.0
    seam_ids, seam_keys = np.zeros(0, dtype=np.int64), np.zeros((0, 2))  # the last slab's vertices on its last plane
    for start, values in slabs:
        low, high = float(values.min()), float(values.max())
        if not (low < 0.0 < high):
            sign = sign or (1.0 if low >= 0 else -1.0)
            seam_ids, seam_keys = seam_ids[:0], seam_keys[:0]
            continue
        vertices, faces, _, _ = measure.marching_cubes(values, level=0.0)
        # scikit-image's default winding ("descent") already faces from negative to positive values: outward for us.
        vertices = vertices.astype(np.float64)
        # A vertex on the plane between two slabs comes from the same two values in both: equal coordinates.
        ids = np.full(len(vertices), -1, dtype=np.int64)
        first = np.flatnonzero(vertices[:, 0] == 0.0)
        if len(first) and len(seam_ids):
            keys = np.concatenate([seam_keys, vertices[first, 1:]])
            _, inverse = np.unique(keys, axis=0, return_inverse=True)
            inverse = inverse.reshape(-1)
            known = np.full(inverse.max() + 1, -1, dtype=np.int64)
            known[inverse[: len(seam_ids)]] = seam_ids
            ids[first] = known[inverse[len(seam_ids) :]]
        new = ids < 0
        ids[new] = count + np.arange(np.count_nonzero(new))
        count += int(np.count_nonzero(new))
        vertices[:, 0] += start
        all_vertices.append(vertices[new])
        all_faces.append(ids[faces])
        last = np.flatnonzero(vertices[:, 0] == start + values.shape[0] - 1)
        seam_ids, seam_keys = ids[last], vertices[last, 1:]
    if not all_faces:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), sign
    return np.concatenate(all_vertices), np.concatenate(all_faces), sign


def _dense_slabs(resolution: int, evaluate_at):
    """Yield (start, values) slabs of the grid along axis 0, f evaluated at every point (a shared plane once)."""
    axis = np.arange(resolution)
    carried = None
    for start in range(0, resolution - 1, SLAB_CELLS):
        first = start if carried is None else start + 1
        planes = np.arange(first, min(start + SLAB_CELLS, resolution - 1) + 1)
        grid = np.stack(np.meshgrid(planes, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        values = evaluate_at(grid).reshape(len(planes), resolution, resolution)
        if carried is not None:
            values = np.concatenate([carried[None], values])
        carried = values[-1]
        yield start, values


def _sparse_slabs(network, resolution: int, spacing: float, evaluate_at):
    """Yield (start, values) slabs of the grid along axis 0 whose values are exact at the corners of every cell that
    straddles the surface and of the right sign elsewhere, evaluating f at as few grid points as the bound allows."""
    coarse, coarse_exact, active, lipschitz = _coarse_lattice(network, resolution, spacing, evaluate_at)
    size = 2 * (coarse.shape[0] - 1) + 1  # the padded grid: every block has its 27 points
    radius = (lipschitz * spacing * _DISTANCES).astype(np.float32)  # (27, 8)
    carried = None  # the last plane of the previous slab: values and which of them are exact
    for start in range(0, resolution - 1, SLAB_CELLS):
        stop = min(start + SLAB_CELLS, size - 1)  # the slab holds planes start..stop of the padded grid
        depth = stop - start + 1
        # Every point takes the value at its block's lowest corner: the right sign wherever its block was skipped.
        c0, c1 = start // 2, stop // 2 + 1
        values = np.empty((depth, size, size), dtype=np.float32)
        for view in (values[i::2, j::2, k::2] for i in (0, 1) for j in (0, 1) for k in (0, 1)):
            view[...] = coarse[c0 : c0 + view.shape[0], : view.shape[1], : view.shape[2]]
        exact = np.zeros(values.shape, dtype=bool)
        exact[::2, ::2, ::2] = coarse_exact[c0:c1]
        blocks = np.argwhere(active[start // 2 : stop // 2]) + (start // 2, 0, 0)
        if carried is not None:
            values[0], exact[0] = carried
        if len(blocks):
            known = exact.copy()
            if carried is not None:
                known[0] = True  # the previous slab's last plane: exact or of a proven sign
            done = _refine(values, known, blocks, coarse, radius, 1, np.array([start, 0, 0]), 1, evaluate_at)
            exact[tuple(done.T)] = True
        inside = (slice(0, resolution - start), slice(0, resolution), slice(0, resolution))
        _evaluate_straddling_corners(values[inside], exact[inside], start, evaluate_at)
        carried = values[-1].copy(), exact[-1].copy()  # the padded plane: the next slab's first
        yield start, values[inside]


def _refine(values, known, blocks, corner_grid, radius, step, origin, scale, evaluate_at) -> np.ndarray:
    """At the 27 points (``step`` apart in ``values``) of each block (its lowest corner in ``corner_grid``, whose
    points hold f or a signed lower bound of |f|): a signed lower bound where a corner proves the sign (its bound
    more than the Lipschitz bound times the distance), else f, evaluated at grid index (point + origin) * scale.
    Points already ``known`` are kept. Returns the points evaluated (indices in ``values``)."""
    evaluated = [np.zeros((0, 3), dtype=np.int64)]
    for chunk in range(0, len(blocks), 8192):
        part = blocks[chunk : chunk + 8192]
        corners = part[:, None, :] + _CORNERS[None]  # (n, 8, 3)
        corner_values = corner_grid[corners[..., 0], corners[..., 1], corners[..., 2]]
        # The best bound among the positive corners and among the negative ones; at most one of them is positive.
        positive = (np.where(corner_values > 0, corner_values, -np.inf)[:, None, :] - radius[None]).max(axis=2)
        negative = (np.where(corner_values < 0, -corner_values, -np.inf)[:, None, :] - radius[None]).max(axis=2)
        margin = np.maximum(positive, negative)  # (n, 27)
        signed = np.where(positive >= negative, margin, -margin).astype(np.float32)
        points = (2 * part[:, None, :] + _OFFSETS[None]) * step - origin  # (n, 27, 3), indices in values
        flat = np.ravel_multi_index(tuple(np.moveaxis(points, -1, 0)), values.shape)  # (n, 27)
        fresh = ~known.reshape(-1)[flat]
        proven = (margin > 0) & fresh
        unproven = np.zeros(values.size, dtype=bool)
        unproven[flat[fresh & ~proven]] = True
        unproven[flat[proven]] = False  # one corner proving the sign is enough
        np.put(values, flat[proven], signed[proven])
        np.put(known, flat[proven], True)
        needed = np.flatnonzero(unproven)
        np.put(values, needed, evaluate_at((np.stack(np.unravel_index(needed, values.shape), -1) + origin) * scale))
        np.put(known, needed, True)
        needed = np.stack(np.unravel_index(needed, values.shape), -1)
        evaluated.append(needed)
    return np.concatenate(evaluated)


def _evaluate_straddling_corners(values, exact, start, evaluate_at) -> None:
    """Evaluate the corners, not yet exact, of the cells whose corner signs differ (the cells that hold surface)."""
    positive = values > 0
    views = [(slice(i, i + positive.shape[0] - 1), slice(j, j + positive.shape[1] - 1), slice(k, k + positive.shape[2] - 1))
             for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    any_positive, all_positive = positive[views[0]].copy(), positive[views[0]].copy()
    for view in views[1:]:
        any_positive |= positive[view]
        all_positive &= positive[view]
    straddling = any_positive & ~all_positive
    corner = np.zeros(values.shape, dtype=bool)
    for view in views:
        corner[view] |= straddling
    needed = np.argwhere(corner & ~exact)
    if len(needed):
        values[tuple(needed.T)] = evaluate_at(needed + (start, 0, 0))
        exact[tuple(needed.T)] = True


def _coarse_lattice(network, resolution: int, spacing: float, evaluate_at):
    """f coarse to fine on the lattice of every other grid point: the lattice's values (f or a signed lower bound
    of |f|, the right sign everywhere), which of them are exact, which 2x2x2-cell blocks of the grid may hold
    surface, and the Lipschitz bound."""
    top_stride = 2 ** max(1, min(4, int(math.log2(max(resolution // 16, 1)))))  # in grid cells
    blocks = math.ceil((resolution - 1) / top_stride)
    stride = top_stride // 2  # in lattice steps
    size = blocks * stride + 1
    values = np.full((size,) * 3, np.nan, dtype=np.float32)
    exact = np.zeros((size,) * 3, dtype=bool)
    lattice = np.stack(np.meshgrid(*[np.arange(0, size, stride)] * 3, indexing="ij"), -1).reshape(-1, 3)
    values[tuple(lattice.T)] = evaluate_at(2 * lattice)
    exact[tuple(lattice.T)] = True
    lipschitz = max(MIN_LIPSCHITZ, LIPSCHITZ_SAFETY * _max_gradient_norm(network, 2 * lattice * spacing - 1.0))
    candidate = np.ones((blocks,) * 3, dtype=bool)
    while True:
        if stride <= 2:
            lipschitz = _near_surface_lipschitz(network, values, exact, lipschitz, stride, spacing)
        corners = values[::stride, ::stride, ::stride]
        count = candidate.shape[0]
        corner_views = [corners[i : i + count, j : j + count, k : k + count] for i in (0, 1) for j in (0, 1) for k in (0, 1)]
        # One corner at a time, so the temporaries stay the size of one corner view.
        all_positive, all_negative = np.ones(candidate.shape, bool), np.ones(candidate.shape, bool)
        nearest = np.full(candidate.shape, np.inf, dtype=np.float32)
        for view in corner_views:
            all_positive &= view > 0
            all_negative &= view < 0
            np.minimum(nearest, np.abs(view), out=nearest)
        # Every point of a block is within half its diagonal of some corner, whose |f| is at least `nearest`.
        reach = np.float32(lipschitz * 2 * stride * spacing * math.sqrt(3) / 2)
        empty = (all_positive | all_negative) & (nearest > reach)
        skipped = candidate & empty
        if stride > 1:  # a block of one lattice step has no points but its corners, all known
            nearest -= reach
            _fill_skipped_blocks(values, skipped, np.where(all_positive, nearest, -nearest), stride)
        active = candidate & ~empty
        if stride == 1:
            return values, exact, active, lipschitz
        # The 27 points of each active block, a half stride apart: f only where no corner proves the sign.
        radius = (lipschitz * spacing * stride * _DISTANCES).astype(np.float32)
        done = _refine(values, ~np.isnan(values), np.argwhere(active), corners, radius, stride // 2, 0, 2, evaluate_at)
        exact[tuple(done.T)] = True
        stride //= 2
        candidate = active.repeat(2, 0).repeat(2, 1).repeat(2, 2)


def _near_surface_lipschitz(network, values, exact, lipschitz, stride, spacing, samples: int = 4096) -> float:
    """The bound for the blocks of ``stride`` lattice steps: the tests there only compare |f| with the bound times a
    few blocks' diagonals, so it needs |grad f| near the surface only, taken at up to ``samples`` evaluated lattice
    points where |f| is at most the current bound times two block diagonals (never more than the current bound)."""
    near = np.argwhere(exact & (np.abs(values) <= lipschitz * 2 * math.sqrt(3) * 2 * stride * spacing))
    if len(near) == 0:
        return lipschitz
    near = near[:: max(1, len(near) // samples)]
    return min(lipschitz, max(MIN_LIPSCHITZ, LIPSCHITZ_SAFETY * _max_gradient_norm(network, 2 * near * spacing - 1.0)))


def _fill_skipped_blocks(values, skipped, bound, stride) -> None:
    """Give the unknown points of skipped blocks a signed lower bound of |f| there (the block's sign); one offset
    within the blocks at a time, so the temporaries stay the size of the block grid."""
    if not skipped.any():
        return
    count = skipped.shape[0]
    for i in range(stride + 1):
        for j in range(stride + 1):
            for k in range(stride + 1):
                view = values[i::stride, j::stride, k::stride][:count, :count, :count]
                unknown = np.isnan(view)
                unknown &= skipped
                view[unknown] = bound[unknown]


def _max_gradient_norm(network, points: np.ndarray, batch_size: int = 16384) -> float:
    device = next(network.parameters()).device
    largest = 0.0
    for start in range(0, len(points), batch_size):
        chunk = torch.from_numpy(points[start : start + batch_size].astype(np.float32)).to(device).requires_grad_(True)
        (gradient,) = torch.autograd.grad(network(chunk).sum(), chunk)
        largest = max(largest, float(gradient.norm(dim=-1).max()))
    return largest
