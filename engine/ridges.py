"""Ridge and valley lines of a neural SDF's surface (issue 17), traced on a triangle mesh of it.

Definitions (Ohtake, Belyaev and Seidel, "Ridge-valley lines on meshes via implicit surface fitting", SIGGRAPH 2004),
in the engine's curvature convention (outward normals, positive on a convex surface, k1 >= k2; `engine.geometry`):

- e1 = grad k1 . t1 and e2 = grad k2 . t2, the derivatives of each principal curvature along its own principal
  direction. They need third derivatives of f, which autograd takes exactly through the Hessian
  (`principal_derivatives`); the mesh only says where to look.
- A ridge (crest) is where e1 = 0, k1 is a maximum along t1 (de1/dt1 < 0) and k1 > |k2| (a convex crest whose
  bending across dominates). A valley is where e2 = 0, k2 is a minimum along t2 (de2/dt2 > 0) and k2 < -|k1|. The
  valleys of a surface are the ridges of its inside-out twin (-f): k1, k2 become -k2, -k1.
- Tracing: principal directions have no sign, so along each mesh edge the far end's t is flipped to agree with the
  near end's before e is compared; a sign change of e is a crossing (linearly interpolated), kept where the
  extremum and dominance conditions hold there (de/dt from the edge's two ends). In a triangle, two crossed edges
  make a segment; three are joined at their mean. Segments are chained into polylines (closed where they loop),
  and pieces shorter than ``min_length`` (a fraction of the bounding box's diagonal) are dropped, as are weak ones:
  those whose mean k along the line (k1 for ridges, -k2 for valleys) is below ``min_strength`` times the 90th
  percentile of max(|k1|, |k2|) over the mesh's vertices (a fitted network's small bumps on smooth parts).
- Umbilics (k1 = k2: t1 and so e are undefined there) give no crossing: an edge with an end whose relative gap
  (k1 - k2) / (|k1| + |k2|) is below `UMBILIC_TOLERANCE` is skipped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from .conventions import MEAN_CURVATURE_FACTOR
from .geometry import _prepare, _principal_half_gap_and_directions, project_to_surface

RIDGE_BATCH_SIZE = 2048
"""Points per batch of third derivatives (the graph of a 3x256 SIREN's Hessian is kept for the backward pass)."""
UMBILIC_TOLERANCE = 1e-3
"""Crossings are kept only where both ends of the edge have (k1 - k2) / (|k1| + |k2|) above this: closer to an
umbilic the principal directions are not defined."""
PROGRESS_CHUNK = 16384
"""Vertices between progress reports and cancel checks."""


@dataclass(frozen=True)
class PrincipalDerivatives:
    """Principal curvatures, directions and the 3-D gradients of the curvatures at n points (numpy, f's units)."""

    k1: np.ndarray
    """(n,) larger principal curvature."""
    k2: np.ndarray
    """(n,) smaller principal curvature."""
    dir1: np.ndarray
    """(n, 3) unit principal direction of k1 (sign arbitrary)."""
    dir2: np.ndarray
    """(n, 3) unit principal direction of k2."""
    grad_k1: np.ndarray
    """(n, 3) gradient of the field k1 (the curvature of the level set through each point)."""
    grad_k2: np.ndarray
    """(n, 3) gradient of k2."""


@dataclass(frozen=True)
class Polylines:
    """Polylines as one array of points and the offsets where each starts: line i is points[offsets[i]:offsets[i+1]]."""

    points: np.ndarray
    """(p, 3) float64."""
    offsets: np.ndarray
    """(lines + 1,) int64, starting at 0 and ending at p."""
    closed: np.ndarray
    """(lines,) bool: the line loops back to its first point (which is not repeated)."""

    def __len__(self) -> int:
        return len(self.closed)

    def lines(self) -> list[np.ndarray]:
        return [self.points[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def lengths(self) -> np.ndarray:
        return np.array([_length(line, closed) for line, closed in zip(self.lines(), self.closed)])


def principal_derivatives(
    f: nn.Module, points, *, batch_size: int = RIDGE_BATCH_SIZE, dtype: torch.dtype | None = None
) -> PrincipalDerivatives:
    """k1, k2, their directions and gradients at points (n, 3) of any module f (autograd to third order)."""
    network, query = _prepare(f, points, dtype)
    parts = [_principal_batch(network, query[start : start + batch_size]) for start in range(0, len(query), batch_size)]
    return PrincipalDerivatives(*(np.concatenate([part[i] for part in parts]) for i in range(6)))


def _principal_batch(f: nn.Module, points: torch.Tensor) -> tuple[np.ndarray, ...]:
    with torch.inference_mode(False), torch.enable_grad():
        x = points.detach().clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(f(x).sum(), x, create_graph=True)
        rows = [torch.autograd.grad(gradient[:, i].sum(), x, create_graph=True)[0] for i in range(3)]
        hessian = torch.stack(rows, dim=1)
        hessian = (hessian + hessian.transpose(1, 2)) / 2
        squared_norm = (gradient * gradient).sum(-1)
        norm = squared_norm.sqrt()
        trace = hessian.diagonal(dim1=-2, dim2=-1).sum(-1)
        along = torch.einsum("ni,nij,nj->n", gradient, hessian, gradient)
        mean = MEAN_CURVATURE_FACTOR * (squared_norm * trace - along) / (norm * squared_norm)
        normal, shape = gradient / norm[:, None], hessian / norm[:, None, None]
        half_gap, dir1, dir2 = _principal_half_gap_and_directions(normal, shape)
        k1, k2 = mean + half_gap, mean - half_gap
        # Each point's curvature depends on that point alone, so the gradient of the sum is every point's gradient.
        (grad_k1,) = torch.autograd.grad(k1.sum(), x, retain_graph=True)
        (grad_k2,) = torch.autograd.grad(k2.sum(), x)
    return tuple(t.detach().cpu().numpy() for t in (k1, k2, dir1, dir2, grad_k1, grad_k2))


def mesh_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unique edges (e, 2) (lower index first) of triangles (m, 3), and each face's edges (m, 3): edge k of a
    face joins its corners k and k + 1."""
    corners = np.asarray(faces, dtype=np.int64)
    pairs = np.stack([corners, np.roll(corners, -1, axis=1)], axis=2).reshape(-1, 2)
    edges, inverse = np.unique(np.sort(pairs, axis=1), axis=0, return_inverse=True)
    return edges, inverse.reshape(-1, 3)


def trace_lines(
    vertices: np.ndarray,
    faces: np.ndarray,
    derivatives: PrincipalDerivatives,
    kind: str,
    min_length: float = 0.05,
    min_strength: float = 0.0,
) -> Polylines:
    """The ridge (``kind`` "ridge") or valley ("valley") polylines of a mesh whose vertices carry ``derivatives``
    (see the module's notes); ``min_length`` is a fraction of the bounding box's diagonal, ``min_strength`` one of
    the 90th percentile of max(|k1|, |k2|) over the vertices."""
    vertices = np.asarray(vertices, dtype=np.float64)
    if kind == "ridge":
        k, other, direction, gradient = derivatives.k1, derivatives.k2, derivatives.dir1, derivatives.grad_k1
    elif kind == "valley":
        # A valley of f is a ridge of -f, whose k1 is -k2 (along t2): one rule for both.
        k, other, direction, gradient = -derivatives.k2, -derivatives.k1, derivatives.dir2, -derivatives.grad_k2
    else:
        raise ValueError(f'kind must be "ridge" or "valley", got {kind!r}')
    extremality = np.einsum("ij,ij->i", gradient, direction)
    edges, face_edges = mesh_edges(faces)
    near, far = edges[:, 0], edges[:, 1]
    flip = np.where(np.einsum("ij,ij->i", direction[near], direction[far]) < 0, -1.0, 1.0)
    e_near, e_far = extremality[near], flip * extremality[far]
    with np.errstate(invalid="ignore", divide="ignore"):
        crossed = np.isfinite(e_near) & np.isfinite(e_far) & (e_near * e_far < 0)
        alpha = np.where(crossed, e_near / (e_near - e_far), 0.0)
    step = vertices[far] - vertices[near]
    # k is a maximum along t where e decreases along t (t taken at the near end).
    along = np.einsum("ij,ij->i", step, direction[near])
    maximum = (e_far - e_near) * along < 0
    k_at = k[near] + alpha * (k[far] - k[near])
    other_at = other[near] + alpha * (other[far] - other[near])
    # At (near-)umbilics the principal directions, hence e, are rounding noise (a sphere is umbilic everywhere).
    with np.errstate(invalid="ignore", divide="ignore"):
        anisotropy = (k - other) / (np.abs(k) + np.abs(other))
    distinct = (anisotropy[near] > UMBILIC_TOLERANCE) & (anisotropy[far] > UMBILIC_TOLERANCE)
    keep = crossed & maximum & distinct & (k_at > np.abs(other_at))
    points = vertices[near] + alpha[:, None] * step
    diagonal = float(np.linalg.norm(np.ptp(vertices, axis=0)))
    magnitude = np.maximum(np.abs(derivatives.k1), np.abs(derivatives.k2))
    scale = float(np.percentile(magnitude[np.isfinite(magnitude)], 90)) if np.isfinite(magnitude).any() else 0.0
    return _chain(points, k_at, keep, face_edges, min_length * diagonal, min_strength * scale)


def _chain(
    edge_points: np.ndarray,
    edge_values: np.ndarray,
    keep: np.ndarray,
    face_edges: np.ndarray,
    min_length: float,
    min_value: float,
) -> Polylines:
    """Segments through the kept edge crossings of each face, chained into polylines; lines shorter than
    ``min_length`` or whose mean value (``edge_values`` at the crossings) is below ``min_value`` are dropped."""
    kept_in_face = keep[face_edges]
    count = kept_in_face.sum(axis=1)
    node_of_edge = np.full(len(keep), -1, dtype=np.int64)
    node_of_edge[keep] = np.arange(int(keep.sum()))
    nodes, values = [edge_points[keep]], [edge_values[keep]]
    segments = []
    two = face_edges[count == 2][kept_in_face[count == 2]].reshape(-1, 2)
    segments.append(node_of_edge[two])
    three = node_of_edge[face_edges[count == 3]]
    if len(three):
        centres = len(nodes[0]) + np.arange(len(three))
        nodes.append(edge_points[face_edges[count == 3]].mean(axis=1))
        values.append(edge_values[face_edges[count == 3]].mean(axis=1))
        segments.append(np.stack([np.repeat(centres, 3), three.ravel()], axis=1))
    points, node_values = np.concatenate(nodes), np.concatenate(values)
    segments = np.concatenate(segments) if segments else np.zeros((0, 2), np.int64)

    neighbours: list[list[int]] = [[] for _ in range(len(points))]
    for a, b in segments:
        neighbours[a].append(b)
        neighbours[b].append(a)
    visited_edge: set[tuple[int, int]] = set()
    lines, closed = [], []

    def walk(start: int, first: int) -> tuple[list[int], bool]:
        line, previous, current = [start], start, first
        visited_edge.add((min(start, first), max(start, first)))
        while True:
            if current == start:
                return line, True
            line.append(current)
            onward = [n for n in neighbours[current] if (min(current, n), max(current, n)) not in visited_edge]
            if len(neighbours[current]) != 2 or not onward:
                return line, False
            previous, current = current, onward[0]
            visited_edge.add((min(previous, current), max(previous, current)))

    # Open chains from their ends (and from junctions), then the loops that remain.
    order = sorted(range(len(points)), key=lambda n: len(neighbours[n]) == 2)
    for start in order:
        for first in neighbours[start]:
            if (min(start, first), max(start, first)) not in visited_edge:
                line, loops = walk(start, first)
                lines.append(line)
                closed.append(loops)
    kept = [
        (points[line], loops)
        for line, loops in zip(lines, closed)
        if _length(points[line], loops) >= min_length and len(line) >= 2 and node_values[line].mean() >= min_value
    ]
    if not kept:
        return Polylines(np.zeros((0, 3)), np.zeros(1, np.int64), np.zeros(0, bool))
    offsets = np.concatenate([[0], np.cumsum([len(line) for line, _ in kept])]).astype(np.int64)
    return Polylines(np.concatenate([line for line, _ in kept]), offsets, np.array([loops for _, loops in kept]))


def _length(line: np.ndarray, closed: bool) -> float:
    if len(line) < 2:
        return 0.0
    total = float(np.linalg.norm(np.diff(line, axis=0), axis=1).sum())
    return total + (float(np.linalg.norm(line[-1] - line[0])) if closed else 0.0)


def model_ridges(
    model,
    vertices,
    faces,
    *,
    min_length: float = 0.05,
    min_strength: float = 0.0,
    project: bool = True,
    report: Callable[[int, int, float], None] | None = None,
    raise_if_cancelled: Callable[[str], None] | None = None,
) -> tuple[Polylines, Polylines]:
    """The ridge and valley polylines of a fitted `engine.model.SDFModel` traced on a mesh of its surface
    (``vertices`` (n, 3) in input coordinates, ``faces`` (m, 3)); the points are moved onto the zero level set when
    ``project``; ``min_length`` and ``min_strength`` as in `trace_lines`. Returned in input coordinates. ``report(done, total, eta_s)`` after each chunk of vertices,
    ``raise_if_cancelled(where)`` before each."""
    normalization = model.normalization
    unit = normalization.to_unit(np.asarray(vertices, dtype=np.float64))
    parts, started = [], time.perf_counter()
    for start in range(0, len(unit), PROGRESS_CHUNK):
        if raise_if_cancelled is not None:
            raise_if_cancelled(f"after {start} of {len(unit)} vertices")
        parts.append(principal_derivatives(model.network, unit[start : start + PROGRESS_CHUNK]))
        done = min(start + PROGRESS_CHUNK, len(unit))
        if report is not None:
            report(done, len(unit), (time.perf_counter() - started) / done * (len(unit) - done))
    fields = [np.concatenate([getattr(part, name) for part in parts]) for name in PrincipalDerivatives.__annotations__]
    derivatives = PrincipalDerivatives(*fields)
    results = []
    for kind in ("ridge", "valley"):
        lines = trace_lines(unit, faces, derivatives, kind, min_length, min_strength)
        points = lines.points
        if project and len(points):
            points, _ = project_to_surface(model.network, points)
        results.append(Polylines(normalization.to_input(np.asarray(points, np.float64)), lines.offsets, lines.closed))
    return results[0], results[1]
