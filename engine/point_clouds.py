"""Point clouds as fit inputs: their checks, normals estimated where none are given, the area each point stands for,
and the samples a fit trains on (`PointSource`, the point twin of `engine.sampling.MeshSource`).

- Normals, when not given: PCA over the `NORMAL_NEIGHBOURS` nearest points (scipy's cKDTree), oriented consistently
  by propagation along a minimum spanning tree of the neighbour graph (Hoppe et al. 1992: edge weight
  1 - |n_i . n_j|), each connected piece started outward at its point farthest from its centroid, then corrected by
  the winding number: a normal whose own side has the higher winding number points inward and is flipped.
- Areas: pi r^2 / k, r the distance to the k-th nearest point (k = `AREA_NEIGHBOURS`): the disk that holds k points.
- Signed distance: the sign from the generalized winding number of the oriented points (libigl's fast winding number
  for point clouds, Barnes-Hut on an octree; negative inside, where it exceeds 1/2), the distance from the nearest
  point: its tangent plane's distance near the surface, where the distance to the point itself would add the gap
  between points, and never less than the distance to the point minus that gap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import igl
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components, minimum_spanning_tree
from scipy.spatial import cKDTree

from .mesh_io import MeshError, TriangleMesh, load_geometry

MIN_POINTS = 32
"""Fewest points a point cloud may have: fewer cannot describe a surface (nor give each point its neighbours)."""
NORMAL_NEIGHBOURS = 10
"""Points (the point itself included) whose covariance gives an estimated normal (on the low-resolution bunny, 16
reach across its ears and 8 are too few for its noise: 91 % and 94 % agree with the mesh's normals, 10: 99.5 %)."""
EXCLUDED_NEIGHBOURS = 32
"""Nearest points left out of the winding number that checks a point's normal (see `estimate_normals`)."""
ORIENTATION_NEIGHBOURS = 8
"""Nearest points each point is joined to in the graph along which normals are oriented."""
AREA_NEIGHBOURS = 8
"""The k of a point's area, pi r_k^2 / k, and of its gap to the others, r_k."""
WINDING_FLIP_PASSES = 4
"""Most winding-number corrections of estimated normals (each one's flips change the field the next one reads; a
patch flipped as a whole is corrected from its rim inward)."""
QUERY_CHUNK = 20_000
"""Query points per call into libigl or the k-d tree, so that no single call holds the GIL long."""
WINDING_POINTS = 20_000
"""Most points a winding number is taken over; a larger cloud's is taken over that many of its points, drawn at random
(libigl's cost per query grows with the points: 14, 38 and ~120 us per query near the surface at 20k, 50k, 200k
points on one core). Closer to the surface than those points' gaps, the nearest point's side tells the sign."""
WINDING_CHUNK = 100_000
"""Query points per winding-number call: each call pays for its octree, so calls are few and large."""
POINT_METHODS = ("winding", "siren")
"""How the volume samples of a point fit are supervised (`engine.fit.FitConfig.point_method`)."""


@dataclass(frozen=True)
class PointCloud:
    """A checked point cloud: points (n, 3) float64 and unit normals (n, 3) float64, or None where none were given."""

    points: np.ndarray
    normals: np.ndarray | None = None


def check_point_cloud(points, normals=None, name: str = "points") -> PointCloud:
    """Validate the arrays of a point cloud and return it (normals scaled to unit length).

    Raises `MeshError` naming the cloud for: a wrong shape, fewer than `MIN_POINTS` points, non-finite coordinates,
    all points at one place or on one line, normals of another shape than the points, non-finite or of zero length.
    """
    points = np.asanyarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise MeshError(f"{name}: points must be (n, 3), got shape {points.shape}")
    if len(points) < MIN_POINTS:
        raise MeshError(
            f"{name} has {len(points)} points; at least {MIN_POINTS} are needed to fit a surface to points"
        )
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        raise MeshError(
            f"{name} has {int(bad.sum())} points with NaN or infinite coordinates (first: point "
            f"{int(np.flatnonzero(bad)[0])}); fix or delete them before fitting"
        )
    spread = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    if spread[0] <= 1e-12 * max(1.0, float(np.abs(points).max())) * np.sqrt(len(points)):
        raise MeshError(f"{name}: all {len(points)} points are at one place; there is no surface to fit")
    if spread[1] <= 1e-9 * spread[0]:
        raise MeshError(f"{name}: all {len(points)} points lie on one line; a surface needs points spread over an area")
    if normals is None:
        return PointCloud(points)
    normals = np.asanyarray(normals, dtype=np.float64)
    if normals.shape != points.shape:
        raise MeshError(f"{name}: normals must be ({len(points)}, 3), one per point, got shape {normals.shape}")
    length = np.linalg.norm(normals, axis=1)
    bad = ~np.isfinite(length) | (length <= 1e-12)
    if bad.any():
        raise MeshError(
            f"{name} has {int(bad.sum())} normals of zero length or with NaN or infinite values (first: point "
            f"{int(np.flatnonzero(bad)[0])}); give a direction for every point, or no normals (then they are estimated)"
        )
    return PointCloud(points, normals / length[:, None])


def merge_point_clouds(clouds: Sequence[PointCloud]) -> PointCloud:
    """Several point clouds as one (every one must have normals)."""
    if not clouds:
        raise MeshError("no point clouds given: select at least one")
    if any(cloud.normals is None for cloud in clouds):
        raise ValueError("merge_point_clouds needs normals on every cloud: estimate_normals first")
    return PointCloud(np.concatenate([c.points for c in clouds]), np.concatenate([c.normals for c in clouds]))


def with_normals(cloud: PointCloud) -> PointCloud:
    """The cloud itself when it has normals, else with `estimate_normals`."""
    return cloud if cloud.normals is not None else PointCloud(cloud.points, estimate_normals(cloud.points))


def estimate_normals(points: np.ndarray) -> np.ndarray:
    """Unit normals (n, 3), oriented consistently and outward, of points (n, 3) sampled on surfaces (see the module).

    The winding-number correction leaves out each point's `EXCLUDED_NEIGHBOURS` nearest points (their own sum,
    taken exactly, is subtracted from libigl's): a patch flipped as a whole makes the field near it look right to
    itself, while the rest of the surface still tells its inside from its outside. On the 1,839 vertices of the
    low-resolution bunny this took the share of normals agreeing with the mesh's from 97.2 % to 99.5 %."""
    points = np.ascontiguousarray(points, dtype=np.float64)
    tree = cKDTree(points)
    neighbours = _nearest(tree, points, min(NORMAL_NEIGHBOURS, len(points)))[1]
    normals = np.empty_like(points)
    for start in range(0, len(points), QUERY_CHUNK):
        near = points[neighbours[start : start + QUERY_CHUNK, :NORMAL_NEIGHBOURS]]
        local = near - near.mean(axis=1, keepdims=True)
        normals[start : start + QUERY_CHUNK] = np.linalg.eigh(np.einsum("nki,nkj->nij", local, local))[1][:, :, 0]
    normals = _orient_along_spanning_tree(points, normals, neighbours[:, : ORIENTATION_NEIGHBOURS + 1])
    chosen = _winding_subset(len(points))
    refined = _flipped_by_winding(points[chosen], normals[chosen])
    if len(chosen) == len(points):
        return refined
    # Each point faces as its nearest checked point does.
    nearest = _nearest(cKDTree(points[chosen]), points, 1)[1]
    disagree = np.einsum("ij,ij->i", normals, refined[nearest]) < 0.0
    return np.where(disagree[:, None], -normals, normals)


def _flipped_by_winding(points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Normals flipped where, leaving out the `EXCLUDED_NEIGHBOURS` nearest points, the winding number is higher on
    a normal's own side than behind it (up to `WINDING_FLIP_PASSES` times)."""
    normals = normals.copy()
    tree = cKDTree(points)
    areas, gaps = point_areas(points, tree)
    excluded = _nearest(tree, points, min(EXCLUDED_NEIGHBOURS, len(points)))[1]
    for _ in range(WINDING_FLIP_PASSES):
        winding = PointWinding(points, normals, areas)
        sides = [points + sign * gaps[:, None] * normals for sign in (1.0, -1.0)]
        outer, inner = (winding(q) - _local_winding(points, normals, areas, excluded, q) for q in sides)
        flip = outer > inner
        if not flip.any():
            break
        normals[flip] *= -1.0
    return normals


def _winding_subset(count: int) -> np.ndarray:
    """The indices of the points whose winding number is taken: all of them up to `WINDING_POINTS`, else that many
    drawn at random (always the same ones for the same count)."""
    if count <= WINDING_POINTS:
        return np.arange(count)
    return np.sort(np.random.default_rng(count).choice(count, WINDING_POINTS, replace=False))


def _local_winding(points, normals, areas, neighbours: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The winding number (m,) at each query of its own points ``neighbours`` (m, k) alone: the dipole sum
    a_j (p_j - q) . n_j / (4 pi |p_j - q|^3) that libigl's point winding number takes near a query."""
    total = np.empty(len(queries))
    for start in range(0, len(queries), QUERY_CHUNK):
        chosen = neighbours[start : start + QUERY_CHUNK]
        offsets = points[chosen] - queries[start : start + QUERY_CHUNK, None]
        dipoles = areas[chosen] * np.einsum("nki,nki->nk", offsets, normals[chosen])
        distances = np.linalg.norm(offsets, axis=2)
        total[start : start + QUERY_CHUNK] = (dipoles / (4.0 * np.pi * distances**3)).sum(axis=1)
    return total


def _orient_along_spanning_tree(points: np.ndarray, normals: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Normals flipped so that neighbours along a minimum spanning tree of the k-nearest graph (weights
    1 - |n_i . n_j|) agree, and each connected piece of the graph encloses a positive volume
    (1/3 sum a_i n_i . (p_i - c): positive for outward normals of a closed surface, by the divergence theorem).

    A virtual root (index n) joins every piece, so one breadth-first search orders them all; the sign of each point
    relative to the root is the product of the edge signs along its path, found by pointer jumping."""
    count = len(points)
    rows, cols = np.repeat(np.arange(count), neighbours.shape[1] - 1), neighbours[:, 1:].ravel()
    keep = rows != cols  # duplicate points may list another point first
    rows, cols = rows[keep], cols[keep]
    # An explicit zero is no edge to scipy: the small constant keeps edges between parallel normals.
    weights = 1.0 - np.abs(np.einsum("ij,ij->i", normals[rows], normals[cols])) + 1e-6
    graph = coo_matrix((weights, (rows, cols)), shape=(count, count)).tocsr()
    tree = minimum_spanning_tree(graph.maximum(graph.T)).tocoo()
    labels = connected_components(tree, directed=False)[1]
    pieces = labels.max() + 1
    starts = np.unique(labels, return_index=True)[1]
    root = np.full(pieces, count)
    joined = coo_matrix(
        (np.ones(len(tree.data) + pieces),
         (np.concatenate([tree.row, root]), np.concatenate([tree.col, starts]))),
        shape=(count + 1, count + 1),
    ).tocsr()  # fmt: skip
    _, parents = breadth_first_order(joined, count, directed=False, return_predecessors=True)
    parents[count] = count
    signs = np.ones(count + 1)
    inner = np.flatnonzero(parents[:count] != count)
    signs[inner] = np.where(np.einsum("ij,ij->i", normals[inner], normals[parents[inner]]) < 0.0, -1.0, 1.0)
    while (parents != count).any():  # signs[i]: the product of the edge signs from i up to parents[i]
        signs *= signs[parents]
        parents = parents[parents]
    oriented = normals * signs[:count, None]
    areas = point_areas(points)[0]
    centroids = np.stack([np.bincount(labels, points[:, axis], pieces) for axis in range(3)], axis=1)
    centroids /= np.bincount(labels, minlength=pieces)[:, None]
    volumes = np.bincount(labels, areas * np.einsum("ij,ij->i", oriented, points - centroids[labels]), pieces)
    return np.where((volumes < 0.0)[labels][:, None], -oriented, oriented)


def point_areas(points: np.ndarray, tree: cKDTree | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The area (n,) each point stands for, pi r^2 / k, and its gap r (n,) to the others (r: the distance to its
    k-th nearest point, k = `AREA_NEIGHBOURS`)."""
    tree = tree or cKDTree(points)
    k = min(AREA_NEIGHBOURS, len(points) - 1)
    gaps = _nearest(tree, points, k + 1)[0][:, -1]
    gaps = np.maximum(gaps, 1e-12 + 1e-9 * float(np.ptp(points, axis=0).max()))  # duplicates: no zero areas
    return np.pi * gaps**2 / k, gaps


def _nearest(tree: cKDTree, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices (m, k) of the k nearest tree points (k = 1: (m,)), queried in chunks."""
    parts = [tree.query(queries[start : start + QUERY_CHUNK], k=k) for start in range(0, len(queries), QUERY_CHUNK)]
    return np.concatenate([part[0] for part in parts]), np.concatenate([part[1] for part in parts])


class PointWinding:
    """libigl's fast generalized winding number of oriented points with areas, queried in chunks of `QUERY_CHUNK`:
    about 1 inside a closed surface whose normals point outward, 0 outside. (Each call builds libigl's octree again,
    about 1 s per 100k points on one core; its precomputed form is slower here, as every call converts the octree's
    cells from Python lists.)"""

    def __init__(self, points: np.ndarray, normals: np.ndarray, areas: np.ndarray):
        self.points = np.ascontiguousarray(points, dtype=np.float64)
        self.normals = np.ascontiguousarray(normals, dtype=np.float64)
        self.areas = np.ascontiguousarray(areas, dtype=np.float64)

    def __call__(self, queries: np.ndarray) -> np.ndarray:
        queries = np.ascontiguousarray(queries, dtype=np.float64).reshape(-1, 3)
        parts = [np.zeros(0)]
        for start in range(0, len(queries), WINDING_CHUNK):
            chunk = np.ascontiguousarray(queries[start : start + WINDING_CHUNK])
            parts.append(igl.fast_winding_number(self.points, self.normals, self.areas, chunk, 2, 2.0))
            time.sleep(0)  # let the worker's heartbeat thread run between chunks
        return np.concatenate(parts)


class PointSource:
    """What `engine.sampling.SamplePool` draws from for a point cloud with normals (unit-cube coordinates).

    - Surface samples: the points themselves with their normals, drawn with replacement by their area (so a scan
      denser in one place does not weigh more there), as a mesh's are drawn by face area.
    - ``method`` "winding": volume samples get a signed distance (see the module); "siren": none
      (``has_distance`` False): the fit then uses SIREN's off-surface term on uniform volume samples.
    """

    def __init__(self, cloud: PointCloud, method: str = "winding"):
        if method not in POINT_METHODS:
            raise ValueError(f"method must be one of {', '.join(POINT_METHODS)}, got {method!r}")
        cloud = with_normals(cloud)
        self.points, self.normals = cloud.points, cloud.normals
        self.tree = cKDTree(self.points)
        self.areas, self.gaps = point_areas(self.points, self.tree)
        self.probability = self.areas / self.areas.sum()
        self.has_distance = method == "winding"
        if self.has_distance:
            chosen = _winding_subset(len(self.points))
            self.winding = PointWinding(self.points[chosen], self.normals[chosen], point_areas(self.points[chosen])[0])
            # How far from each point the winding number's points leave gaps: closer, the point's side decides.
            self.side_reach = point_areas(self.points[chosen], cKDTree(self.points[chosen]))[1]
            if len(chosen) < len(self.points):
                self.side_reach = self.side_reach[_nearest(cKDTree(self.points[chosen]), self.points, 1)[1]]

    def surface(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        chosen = rng.choice(len(self.points), size=count, p=self.probability)
        return self.points[chosen], self.normals[chosen]

    def near_surface(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return self.surface(rng, count)[0]

    def signed_distance(self, queries: np.ndarray) -> np.ndarray:
        """Signed distance (m,) to the surface the points sample: max(distance to the nearest point's tangent
        plane, distance to the point minus its gap); negative inside: on the nearest point's back side within
        ``side_reach`` of it, elsewhere where the winding number exceeds 1/2."""
        queries = np.ascontiguousarray(queries, dtype=np.float64).reshape(-1, 3)
        to_point, nearest = _nearest(self.tree, queries, 1)
        along = np.einsum("ij,ij->i", queries - self.points[nearest], self.normals[nearest])
        distance = np.maximum(np.abs(along), to_point - self.gaps[nearest])
        near = to_point < self.side_reach[nearest]
        inside = np.where(near, along < 0.0, False)
        far = np.flatnonzero(~near)
        inside[far] = self.winding(queries[far]) > 0.5
        distance[inside] *= -1.0
        return distance


def load_shape(path: str | Path) -> TriangleMesh | PointCloud:
    """A mesh file's triangle mesh, or the point cloud of a file without faces (a PLY of vertices, normals from its
    ``nx ny nz`` where present; an OBJ of ``v`` lines). Errors as `engine.mesh_io.load_mesh`'s."""
    from .mesh_io import check_mesh

    path = Path(path)
    loaded = load_geometry(path)
    if len(getattr(loaded, "faces", ())):
        return check_mesh(loaded.vertices, loaded.faces, name=path.name)
    return check_point_cloud(loaded.vertices, _ply_normals(loaded, path.name), name=path.name)


def _ply_normals(cloud, name: str) -> np.ndarray | None:
    """The ``nx ny nz`` vertex properties trimesh read from a PLY of points, or None (none, or another format)."""
    vertex = cloud.metadata.get("_ply_raw", {}).get("vertex", {}).get("data")
    if vertex is None:
        return None
    names = vertex.keys() if isinstance(vertex, dict) else (vertex.dtype.names or ())
    present = [axis in names for axis in ("nx", "ny", "nz")]
    if not any(present):
        return None
    if not all(present):
        raise MeshError(f"{name}: its vertices have only some of the normal properties nx, ny, nz; give all or none")
    return np.stack([np.asarray(vertex[axis], dtype=np.float64).reshape(-1) for axis in ("nx", "ny", "nz")], axis=1)
