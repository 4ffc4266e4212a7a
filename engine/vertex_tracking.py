"""One topology through an animation: the first frame's mesh carried along a time-dependent field f(x, t) (an
evolution), each vertex moved onto the zero set of f(., t) along its normal, time after time, for as long as the
carried mesh stays a faithful picture of the surface.

- Each vertex takes damped Newton steps x <- x - f grad f / |grad f|^2 (along grad f / |grad f|, the normal of the
  level set through x; at most `TrackingConfig.max_step` grid spacings each) from where it was at the previous
  time. When the surface moves more than `TrackingConfig.max_move` grid spacings between two frames, the frame is
  reached in sub-steps at times in between, so every Newton start is near its target.
- Work happens in the model's unit cube (the network's coordinates), where the grid spacing of a frame's marching
  cubes is 2 / (resolution - 1); positions come back in input coordinates.
- Tracking stops at the first frame where the carried mesh stops being valid, which `TrackStop` names: the frame
  extracted at that time has another topology than the first one (connected components, Euler characteristic, or
  it vanished), Newton's method did not bring every vertex within the tolerance, a triangle's centre lies off the
  surface (it spans a gap where the surface split), a triangle turned against grad f or collapsed, or the vertices
  crowd (edge stretch since the first frame, longest over shortest). The frames before it are the result.
- Checked on analytic fields in tests/engine/test_vertex_tracking.py: the sphere law of mean curvature flow (every
  vertex at r(t) along its own ray), extinction, Cassini ovals pinching in two, a sphere turned inside out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np
import torch

from .fields import TIME_KEY, Frame
from .model import SDFModel
from .settings import SavedSettings
from .training import Cancelled, pick_device

StopReason = Literal["topology", "not_converged", "off_surface", "flipped", "collapsed", "crowded"]

FIRST_FRAME_REACH = 1.0
"""Grid spacings the first frame's vertices may lie from the surface before they are projected (a marching-cubes
vertex lies on an edge of a cell that the surface crosses)."""
EVALUATION_BATCH = 65536
"""Vertices per network evaluation (with its gradient)."""


@dataclass(frozen=True)
class TrackingConfig(SavedSettings):
    """How vertices are carried and when the carried mesh counts as no longer valid."""

    newton_steps: int = 8
    """Newton steps at most at each sub-step's time (fewer once every vertex is within the tolerance)."""
    tolerance: float = 0.05
    """A vertex has converged when |f| / |grad f| (its distance to the zero set, to first order) is below this share
    of the grid spacing."""
    max_move: float = 1.0
    """Grid spacings the surface may move between two sub-steps: a frame is reached in more sub-steps when the
    surface moves further (measured at the vertices before the frame, to first order)."""
    max_substeps: int = 64
    """Sub-steps per frame at most."""
    max_step: float = 2.0
    """Longest Newton step, in grid spacings: where |grad f| is small a full step would throw a vertex far away."""
    max_centre_distance: float = 0.5
    """Grid spacings a triangle's centre may lie from the surface (|f| / |grad f| there): farther, the triangle spans
    a gap, as where the surface split or pinched between its vertices (a smooth surface's triangles of marching
    cubes' size bulge off it by a few hundredths of a spacing)."""
    min_area_share: float = 0.02
    """A triangle has collapsed when its share of the mesh's area falls below this fraction of its share in the first
    frame (a uniform shrink keeps every share)."""
    max_edge_ratio: float = 10.0
    """The vertices crowd when the largest edge stretch since the first frame over the smallest exceeds this (a
    uniform shrink or growth stretches every edge alike: ratio 1)."""
    device: Literal["auto", "cpu", "cuda"] = "cpu"

    def __post_init__(self):
        self.require_counts("newton_steps", "max_substeps")
        positive = ("tolerance", "max_move", "max_step", "max_centre_distance", "min_area_share")
        if not all(getattr(self, name) > 0 for name in positive) or not self.max_edge_ratio > 1:
            raise ValueError(f"TrackingConfig needs {', '.join(positive)} > 0 and max_edge_ratio > 1")


@dataclass(frozen=True)
class TrackStop:
    """Where and why tracking stopped: ``frame`` (index into the times) is the first frame the carried mesh does not
    show faithfully."""

    frame: int
    time: float
    reason: StopReason
    message: str

    def to_dict(self) -> dict:
        return {"frame": self.frame, "time": self.time, "reason": self.reason, "message": self.message}


@dataclass(frozen=True)
class TrackedVertices:
    """The first frame's mesh at every valid time: ``positions`` (frames, n, 3) float64 in input coordinates, one
    ``faces`` (m, 3) array for all; ``stop`` None when every time was valid."""

    times: np.ndarray
    positions: np.ndarray
    faces: np.ndarray
    stop: TrackStop | None
    measures: list[dict] = field(default_factory=list)
    """Per frame checked (the valid ones and the one that stopped it): ``distance`` (largest |f| / |grad f|, grid
    spacings), ``centre_distance`` (the same at the triangles' centres), ``substeps``, ``flipped`` (triangles
    against grad f), ``area_share`` (smallest share ratio), ``edge_ratio``."""


def mesh_topology(vertices: np.ndarray, faces: np.ndarray) -> tuple[int, int]:
    """(connected components, Euler characteristic V - E + F) of a triangle mesh, over the vertices its faces use;
    (0, 0) for no faces."""
    faces = np.asarray(faces, dtype=np.int64)
    if len(faces) == 0:
        return 0, 0
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    used, compact = np.unique(faces, return_inverse=True)
    compact = compact.reshape(faces.shape)
    edges = np.sort(compact[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    edges = np.unique(edges, axis=0)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(len(used), len(used)))
    components, _ = connected_components(graph, directed=False)
    return int(components), int(len(used) - len(edges) + len(faces))


def track_vertices(
    model: SDFModel,
    vertices: np.ndarray,
    faces: np.ndarray,
    times: Sequence[float],
    resolution: int,
    config: TrackingConfig | None = None,
    *,
    frames: Sequence[Frame] | None = None,
    on_frame: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> TrackedVertices:
    """Carry the mesh (``vertices`` (n, 3) in input coordinates, ``faces`` (m, 3) outward) of the time-dependent
    ``model`` at ``times[0]`` through ``times``, in their order.

    - ``resolution``: the marching-cubes grid the mesh came from; tolerances are shares of its spacing.
    - ``frames``: the frames extracted at ``times`` (`engine.fields.extract_frames`), whose topology is compared
      with the first's; None skips that check.
    - The first frame is projected onto the zero set too (so every frame lies on the surface alike); a mesh that
      does not converge there is refused, as are empty or malformed meshes and times outside the trained range.
    - ``on_frame(done, total)`` after each frame.
    """
    config = config or TrackingConfig()
    vertices, faces, times = _checked(model, vertices, faces, times, resolution, frames)
    spacing = 2.0 / (resolution - 1)
    parameter = next(iter(model.network.parameters()), None)
    home = torch.device("cpu") if parameter is None else parameter.device
    tracker = _Tracker(model.network.to(pick_device(config.device)), config, spacing)
    try:
        return _tracked(model, tracker, vertices, faces, times, config, frames, on_frame, should_cancel)
    finally:
        model.network.to(home)


def _tracked(model, tracker, vertices, faces, times, config, frames, on_frame, should_cancel) -> TrackedVertices:
    time_scale = model.metadata[TIME_KEY]["time_scale"]
    unit = model.normalization.to_unit(vertices)

    off = tracker.distances(*tracker.values_and_gradients(unit, times[0] / time_scale)).max()
    unit, distance, gradients = tracker.project(unit, times[0] / time_scale)
    if not (off <= FIRST_FRAME_REACH and distance.max() <= config.tolerance):
        raise ValueError(
            f"the first frame's mesh lies up to {off:.3g} grid spacings from the zero set of f(., {times[0]:g}) "
            f"(a mesh extracted there lies within {FIRST_FRAME_REACH:g}): track the mesh extracted at the first time"
        )
    start = _Shape(unit, faces, gradients, distance, tracker.centre_distances(unit, faces, times[0] / time_scale))
    start_topology = None if frames is None else mesh_topology(frames[0].vertices, frames[0].faces)
    positions, measures, stop = [unit], [start.measures(start, 1)], None
    if on_frame is not None:
        on_frame(1, len(times))
    for index in range(1, len(times)):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"vertex tracking cancelled after {index} of {len(times)} frames")
        tau = times[index] / time_scale
        moved, distance, gradients, substeps = tracker.advance(positions[-1], times[index - 1] / time_scale, tau)
        shape = _Shape(moved, faces, gradients, distance, tracker.centre_distances(moved, faces, tau))
        measures.append(shape.measures(start, substeps))
        topology = None if frames is None else mesh_topology(frames[index].vertices, frames[index].faces)
        problem = _problem(shape, start, topology, start_topology, config)
        if problem is not None:
            stop = TrackStop(index, times[index], problem[0], f"at t = {times[index]:.4g}: {problem[1]}")
            break
        positions.append(moved)
        if on_frame is not None:
            on_frame(index + 1, len(times))
    input_positions = np.stack([model.normalization.to_input(p) for p in positions])
    return TrackedVertices(np.asarray(times[: len(positions)]), input_positions, faces, stop, measures)


def _checked(model, vertices, faces, times, resolution, frames):
    info = model.metadata.get(TIME_KEY)
    if info is None:
        raise ValueError("vertex tracking needs a time-dependent model (an evolution), not a fitted SDF")
    vertices = np.asanyarray(vertices, dtype=np.float64)
    faces = np.asanyarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
        raise ValueError(f"the first frame's vertices must be a non-empty (n, 3) array, got shape {vertices.shape}")
    if not np.isfinite(vertices).all():
        raise ValueError("the first frame's vertices hold NaN or infinite coordinates")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0 or not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"the first frame's faces must be a non-empty (m, 3) integer array, got shape {faces.shape}")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ValueError(f"the first frame's faces index vertices outside 0..{len(vertices) - 1}")
    times = [float(t) for t in times]
    if not times or not all(math.isfinite(t) for t in times):
        raise ValueError(f"vertex tracking needs at least one finite time, got {times}")
    low, high = info["time_range"]
    slack = 1e-9 * max(abs(low), abs(high))
    outside = [t for t in times if not low - slack <= t <= high + slack]
    if outside:
        raise ValueError(f"times {outside} are outside the trained range [{low}, {high}]")
    if not isinstance(resolution, int) or resolution < 8:
        raise ValueError(f"resolution must be an integer of at least 8, got {resolution!r}")
    if frames is not None and len(frames) != len(times):
        raise ValueError(f"{len(frames)} extracted frames were given for {len(times)} times: give one per time")
    return vertices, faces.astype(np.int64), times


class _Tracker:
    """Newton steps on the network f(x, tau), in unit-cube coordinates; distances in grid spacings."""

    def __init__(self, network: torch.nn.Module, config: TrackingConfig, spacing: float):
        self.network, self.config, self.spacing = network, config, spacing
        parameter = next(iter(network.parameters()), torch.zeros(()))
        self.dtype, self.device = parameter.dtype, parameter.device

    def values_and_gradients(self, points: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
        values, gradients = [], []
        for begin in range(0, len(points), EVALUATION_BATCH):
            chunk = torch.as_tensor(points[begin : begin + EVALUATION_BATCH], dtype=self.dtype, device=self.device)
            taus = chunk.new_full((len(chunk), 1), tau)
            with torch.enable_grad():
                inputs = torch.cat([chunk, taus], dim=-1).requires_grad_(True)
                value = self.network(inputs).reshape(-1)
                (gradient,) = torch.autograd.grad(value.sum(), inputs)
            values.append(value.detach().cpu().double().numpy())
            gradients.append(gradient[:, :3].cpu().double().numpy())
        return np.concatenate(values), np.concatenate(gradients)

    def distances(self, values: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        """|f| / |grad f| in grid spacings (infinite where the gradient vanishes or anything is not finite)."""
        norm = np.linalg.norm(gradients, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            distance = np.abs(values) / norm / self.spacing
        return np.where(np.isfinite(distance) & (norm > 0), distance, np.inf)

    def centre_distances(self, points: np.ndarray, faces: np.ndarray, tau: float) -> np.ndarray:
        """|f| / |grad f| at the triangles' centres, in grid spacings."""
        return self.distances(*self.values_and_gradients(points[faces].mean(axis=1), tau))

    def project(self, points: np.ndarray, tau: float, evaluated=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Points after Newton steps towards the zero set of f(., tau) (at least one, so that every frame lies on
        the surface alike, the first too), their distances and gradients there; ``evaluated``: f and grad f at the
        points at tau, when known already."""
        longest = self.config.max_step * self.spacing
        values, gradients = evaluated or self.values_and_gradients(points, tau)
        for _ in range(self.config.newton_steps):
            squared = np.maximum((gradients * gradients).sum(axis=1, keepdims=True), 1e-12)
            step = values[:, None] * gradients / squared
            length = np.linalg.norm(step, axis=1, keepdims=True)
            step = np.where(np.isfinite(step), step, 0.0) * np.minimum(1.0, longest / np.maximum(length, 1e-300))
            points = points - step
            values, gradients = self.values_and_gradients(points, tau)
            distance = self.distances(values, gradients)
            if distance.max() <= self.config.tolerance:
                break
        return points, distance, gradients

    def advance(self, points: np.ndarray, start: float, end: float):
        """Points carried from network time ``start`` to ``end`` (in sub-steps when the surface moves far), their
        distances and gradients at ``end`` and the sub-steps taken."""
        at_end = self.values_and_gradients(points, end)
        reach = self.distances(*at_end)
        reach = reach[np.isfinite(reach)]
        moved = float(reach.max()) if len(reach) else 0.0
        substeps = int(min(self.config.max_substeps, max(1, math.ceil(moved / self.config.max_move))))
        for step in range(1, substeps + 1):
            evaluated = at_end if substeps == 1 else None
            points, distance, gradients = self.project(points, start + (end - start) * step / substeps, evaluated)
        return points, distance, gradients, substeps


class _Shape:
    """A carried mesh's face normals, areas and edge lengths (unit cube)."""

    def __init__(self, points, faces, gradients, distance: np.ndarray, centre_distance: np.ndarray):
        self.points, self.faces, self.distance = points, faces, distance
        self.centre_distance = centre_distance
        corners = points[faces]
        cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        self.areas = np.linalg.norm(cross, axis=1) / 2
        self.facing = (cross * gradients[faces].sum(axis=1)).sum(axis=1)
        edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
        self.edges = np.unique(edges, axis=0)
        self.lengths = np.linalg.norm(points[self.edges[:, 0]] - points[self.edges[:, 1]], axis=1)

    def area_shares(self, start: "_Shape") -> np.ndarray:
        """Each face's share of the area over its share in ``start``, for the faces that had area there (marching
        cubes makes a few degenerate ones)."""
        kept = start.areas > 1e-9 * start.areas.mean()
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.areas[kept] / self.areas.sum()) / (start.areas[kept] / start.areas.sum())

    def flipped(self, start: "_Shape") -> int:
        """Triangles that faced along grad f in ``start`` and face against it (or not at all) now."""
        return int(((start.facing > 0) & ~(self.facing > 0)).sum())

    def edge_ratio(self, start: "_Shape") -> float:
        kept = start.lengths > 1e-9 * start.lengths.mean()
        with np.errstate(divide="ignore", invalid="ignore"):
            stretch = self.lengths[kept] / start.lengths[kept]
            ratio = stretch.max() / stretch.min()
        return float(ratio) if np.isfinite(ratio) else math.inf

    def measures(self, start: "_Shape", substeps: int) -> dict:
        shares = self.area_shares(start)
        return {
            "distance": float(self.distance.max()),
            "centre_distance": float(self.centre_distance.max()),
            "substeps": substeps,
            "flipped": self.flipped(start),
            "area_share": float(np.nan_to_num(shares.min(), nan=0.0)),
            "edge_ratio": self.edge_ratio(start),
        }


def _problem(shape: _Shape, start: _Shape, topology, start_topology, config: TrackingConfig):
    """(reason, description) of the first check the carried mesh fails at a frame, or None."""
    if topology is not None and topology != start_topology:
        if topology == (0, 0):
            return "topology", "the surface has vanished (its extracted frame is empty)"
        return "topology", (
            f"the extracted surface has {topology[0]} connected component(s) and Euler characteristic {topology[1]}, "
            f"the first frame {start_topology[0]} and {start_topology[1]}: its topology changed"
        )
    far = shape.distance > config.tolerance
    if far.any() or not np.isfinite(shape.points).all():
        return "not_converged", (
            f"Newton's method left {int(far.sum())} of {len(far)} vertices farther than {config.tolerance:g} grid "
            f"spacings from the surface (up to {shape.distance.max():.3g}): it moved too far or vanished there"
        )
    spanning = int((~(shape.centre_distance <= config.max_centre_distance)).sum())
    if spanning:
        return "off_surface", (
            f"{spanning} of {len(shape.faces)} triangles span off the surface (their centres lie up to "
            f"{shape.centre_distance.max():.3g} grid spacings from it): they cut across it where it split, pinched or "
            "bends sharply between their vertices"
        )
    flipped = shape.flipped(start)
    if flipped:
        return "flipped", f"{flipped} of {len(shape.faces)} triangles turned against the surface's normal"
    shares = shape.area_shares(start)
    collapsed = int((~(shares >= config.min_area_share)).sum())
    if collapsed:
        return "collapsed", (
            f"{collapsed} of {len(shares)} triangles collapsed (share of the area below {config.min_area_share:g} "
            "of their share in the first frame)"
        )
    ratio = shape.edge_ratio(start)
    if not ratio <= config.max_edge_ratio:
        return "crowded", (
            f"the vertices crowd: the most stretched edge grew {ratio:.3g} times more than the least stretched "
            f"(limit {config.max_edge_ratio:g})"
        )
    return None
