"""Training samples for SDF fitting: surface points with normals, volume points with true signed distance.

- Signed distance = unsigned distance to the mesh (libigl point-mesh distance) with the sign of the generalized
  winding number (negative inside, where the winding number exceeds 1/2), so open scans, several components and
  small holes get a sensible inside.
- The shape's surface is the boundary of that inside: faces buried in it (`buried_faces`: inside on both sides, as
  where overlapping parts meet: Suzanne's eyes in their sockets, limbs modelled into a body) are no surface; a fit
  trained on them (zero distance and surface samples inside the solid) grows closed pockets of wrong sign there.
  `MeshSource` draws surface samples and measures distances on the other faces, the sign on all of them.
- Samples are drawn into pools once and partly refreshed during training, so a training step only indexes tensors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import igl
import numpy as np
import torch

from .mesh_io import TriangleMesh

CURVATURE_BAND_PERCENTILES = (60.0, 95.0)
"""i3d curvature-aware sampling: |curvature| bands low / medium / high split at these percentiles..."""
CURVATURE_BAND_SHARES = (0.2, 0.6, 0.2)
"""...and the share of surface samples drawn from each band."""


def signed_distance(mesh: TriangleMesh, points: np.ndarray) -> np.ndarray:
    """Signed distance (n,) from ``points`` (n, 3) to ``mesh``'s surface: negative inside by the generalized winding
    number.

    The distance comes from the exact point-triangle distance to the faces not buried in the shape, the sign alone
    from the fast winding number of every face (libigl's winding-number modes of `signed_distance` scale the
    distance by |1 - 2w|, wrong near holes). Many calls on one mesh: build its `MeshSource` once.
    """
    return MeshSource(mesh).signed_distance(points)


MAX_TREE_FACES = 250_000
"""Most faces in one libigl search tree. A tree is built in one C call that holds Python's GIL (the worker's heartbeat
thread waits meanwhile): for a 1.3M-face mesh the two trees took 1.1 s and 1.8 s on one core, alone. A bigger mesh
gets one tree per slab of this many faces along its longest axis (distances: the least over the slabs, exact;
winding numbers: their sum, as the winding number is a sum over faces)."""

QUERY_SECONDS = 0.05
"""Aimed duration of one libigl query call: queries run in chunks sized to take about this, so the GIL is free between
them (one call for 20k points around a 1.3M-face sphere took 5.7 s: a point near its centre visits most faces)."""


class MeshQueries:
    """Exact point-mesh distance (libigl's AABB tree) and the fast generalized winding number (its BVH) of one mesh,
    the trees built once (`MAX_TREE_FACES` per tree) and queried in chunks of about `QUERY_SECONDS`: no single C call
    on a big mesh or many points holds the GIL for seconds. Results equal libigl's one-call functions."""

    def __init__(self, mesh: TriangleMesh):
        vertices = np.ascontiguousarray(mesh.vertices, dtype=np.float64)
        faces = np.ascontiguousarray(mesh.faces, dtype=np.int64)
        groups = [np.arange(len(faces))]
        if len(faces) > MAX_TREE_FACES:
            centroids = vertices[faces].mean(axis=1)
            axis = int(np.argmax(np.ptp(vertices, axis=0)))
            order = np.argsort(centroids[:, axis], kind="stable")
            groups = np.array_split(order, -(-len(faces) // MAX_TREE_FACES))
        self._slabs = []
        for group in groups:
            used, inverse = np.unique(faces[group], return_inverse=True)
            slab_vertices = np.ascontiguousarray(vertices[used])
            slab_faces = np.ascontiguousarray(inverse.reshape(-1, 3), dtype=np.int64)
            self._slabs.append(_Slab(group, slab_vertices, slab_faces))

    def squared_distance(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Squared distance (n,) from ``points`` (n, 3) to the mesh, and the index of the closest face (n,)."""
        points = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
        best = np.full(len(points), np.inf)
        closest = np.zeros(len(points), dtype=np.int64)
        # A lower bound on each point's squared distance to each slab (its box); slabs are queried nearest first,
        # and only for the points the slab could still bring closer.
        bounds = np.stack([_box_squared_distance(points, slab.low, slab.high) for slab in self._slabs], axis=1)
        order = np.argsort(bounds, axis=1, kind="stable")
        for rank in range(len(self._slabs)):
            nearest = order[:, rank]
            for index, slab in enumerate(self._slabs):
                ask = np.flatnonzero((nearest == index) & (bounds[:, index] < best))
                if len(ask) == 0:
                    continue
                squared, faces = slab.squared_distance(points[ask])
                better = squared < best[ask]
                best[ask[better]], closest[ask[better]] = squared[better], slab.faces_index[faces[better]]
        return best, closest

    def winding_number(self, points: np.ndarray) -> np.ndarray:
        """The fast generalized winding number (n,) of the mesh at ``points`` (n, 3)."""
        points = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
        return sum(slab.winding_number(points) for slab in self._slabs)


class _Slab:
    """The trees of one slab of faces (``faces_index`` into the mesh's faces), each built at its first query, and the
    chunk sizes of their queries."""

    def __init__(self, faces_index: np.ndarray, vertices: np.ndarray, faces: np.ndarray):
        self.faces_index, self.vertices, self.faces = faces_index, vertices, faces
        self.low, self.high = vertices.min(axis=0), vertices.max(axis=0)
        self.distance_tree = self.winding_tree = None
        self.chunks = {"distance": 256, "winding": 4096}

    def squared_distance(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.distance_tree is None:
            self.distance_tree = igl.AABB()
            self.distance_tree.init(self.vertices, self.faces)
        query = lambda chunk: self.distance_tree.squared_distance(self.vertices, self.faces, chunk)[:2]  # noqa: E731
        parts = self._chunked("distance", query, points)
        squared = np.concatenate([np.zeros(0)] + [part[0] for part in parts])
        return squared, np.concatenate([np.zeros(0, np.int64)] + [part[1] for part in parts]).astype(np.int64)

    def winding_number(self, points: np.ndarray) -> np.ndarray:
        if self.winding_tree is None:
            self.winding_tree = igl.FastWindingNumberBVH()
            self.winding_tree.init(self.vertices, self.faces)
        return np.concatenate([np.zeros(0)] + self._chunked("winding", self.winding_tree.winding_number, points))

    def _chunked(self, kind: str, query, points: np.ndarray) -> list:
        """``query`` on chunks of ``points``, each chunk's size adapted so a call takes about `QUERY_SECONDS`."""
        parts, start = [], 0
        while start < len(points):
            size = self.chunks[kind]
            began = time.perf_counter()
            parts.append(query(np.ascontiguousarray(points[start : start + size])))
            took = time.perf_counter() - began
            if took < QUERY_SECONDS / 2 and start + size < len(points):
                self.chunks[kind] = min(size * 2, 1 << 20)
            elif took > QUERY_SECONDS * 2:
                self.chunks[kind] = max(size // 2, 16)
            start += size
        return parts


def _box_squared_distance(points: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Squared distance (n,) from points (n, 3) to the box [low, high] (0 inside)."""
    outside = np.maximum(low - points, 0.0) + np.maximum(points - high, 0.0)
    return (outside * outside).sum(axis=1)


BURIED_PROBE = 1e-2
"""How far off a face's centroid, along its normal and as a share of the square root of its area, its two sides are
probed: close enough that the face's own winding number jump (1) shows and no other part lies between."""


def buried_faces(mesh: TriangleMesh, queries: MeshQueries) -> np.ndarray:
    """Faces (bool, per face) with the winding number above 1/2 just off both of their sides: inside the shape, not
    on its surface. Either orientation of a face gives the same answer; zero-area faces are never buried."""
    areas = face_areas(mesh)
    corners = mesh.vertices[mesh.faces]
    offsets = face_normals(mesh) * (BURIED_PROBE * np.sqrt(areas))[:, None]
    centroids = corners.mean(axis=1)
    inside = [queries.winding_number(centroids + side * offsets) > 0.5 for side in (1.0, -1.0)]
    return inside[0] & inside[1] & (areas > 0)


def face_areas(mesh: TriangleMesh) -> np.ndarray:
    corners = mesh.vertices[mesh.faces]
    return 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)


def face_normals(mesh: TriangleMesh) -> np.ndarray:
    corners = mesh.vertices[mesh.faces]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-300)


def face_mean_curvature_magnitude(mesh: TriangleMesh) -> np.ndarray:
    """|H| per face: the mean of its vertices' cotangent-Laplacian mean curvature magnitudes (libigl)."""
    laplacian = igl.cotmatrix(mesh.vertices, mesh.faces)
    mass = igl.massmatrix(mesh.vertices, mesh.faces, igl.MASSMATRIX_TYPE_VORONOI)
    mean_curvature_normal = laplacian @ mesh.vertices
    vertex_area = np.maximum(mass.diagonal(), 1e-300)
    vertex_magnitude = 0.5 * np.linalg.norm(mean_curvature_normal, axis=1) / vertex_area
    return vertex_magnitude[mesh.faces].mean(axis=1)


class SurfaceSampler:
    """Area-weighted random points on a mesh with their face normals, optionally curvature-aware (i3d bands)."""

    def __init__(self, mesh: TriangleMesh, curvature_aware: bool = False):
        self.mesh = mesh
        self.normals = face_normals(mesh)
        areas = face_areas(mesh)
        if curvature_aware:
            curvature = face_mean_curvature_magnitude(mesh)
            low, high = np.percentile(curvature, CURVATURE_BAND_PERCENTILES)
            bands = [curvature < low, (curvature >= low) & (curvature < high), curvature >= high]
            weights = np.zeros_like(areas)
            for in_band, share in zip(bands, CURVATURE_BAND_SHARES):
                band_area = areas[in_band].sum()
                if band_area > 0:
                    weights[in_band] = share * areas[in_band] / band_area
        else:
            weights = areas
        self.face_probability = weights / weights.sum()

    def sample(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` points (count, 3) and their unit outward normals (count, 3)."""
        faces = rng.choice(len(self.face_probability), size=count, p=self.face_probability)
        u, v = rng.random(count), rng.random(count)
        flip = u + v > 1.0
        u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
        corners = self.mesh.vertices[self.mesh.faces[faces]]
        points = corners[:, 0] + u[:, None] * (corners[:, 1] - corners[:, 0]) + v[:, None] * (corners[:, 2] - corners[:, 0])
        return points, self.normals[faces]


@dataclass(frozen=True)
class VolumeSampling:
    """Where volume (off-surface) samples go, in unit-cube coordinates."""

    uniform_share: float = 0.5
    """Share drawn uniformly in [-1, 1]^3; the rest are surface points moved by Gaussian noise. Half, not a quarter:
    far from the surface a quarter left stray surfaces (a genus-81 lattice's floaters, short fits' specks) and half
    holds the shared meshes' quality (bench/results/fit_quality_uniform_share_cpu.md, hard_shapes_cpu.md)."""
    near_surface_sigmas: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1)
    """Noise scales of the near-surface samples (equal shares); small scales pin down the zero level set."""


class MeshSource:
    """What `SamplePool` draws from for a triangle mesh: surface points by area (or curvature bands) with their face
    normals, near-surface starting points by area, and the exact signed distance (`MeshQueries`).

    A sample source (this, or `engine.point_clouds.PointSource`) has ``surface(rng, count) -> (points, normals)``,
    ``near_surface(rng, count) -> points`` on the surface, to be moved off it by noise, ``has_distance`` and, where
    that is True, ``signed_distance(points) -> (m,)``."""

    has_distance = True

    def __init__(self, mesh: TriangleMesh, curvature_aware: bool = False):
        self.shape_queries = MeshQueries(mesh)
        buried = buried_faces(mesh, self.shape_queries)
        self.buried_share = float(face_areas(mesh)[buried].sum() / face_areas(mesh).sum())
        surface = TriangleMesh(mesh.vertices, mesh.faces[~buried]) if buried.any() else mesh
        self.surface_queries = MeshQueries(surface) if buried.any() else self.shape_queries
        self.surface_sampler = SurfaceSampler(surface, curvature_aware)
        # Near-surface volume points start from plain area-weighted samples so their density follows the shape,
        # whatever the surface sampling emphasises.
        self.uniform_surface_sampler = self.surface_sampler if not curvature_aware else SurfaceSampler(surface)

    def surface(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        return self.surface_sampler.sample(rng, count)

    def near_surface(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return self.uniform_surface_sampler.sample(rng, count)[0]

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """The distance to the shape's surface, negative where the whole mesh's winding number exceeds 1/2."""
        squared, _ = self.surface_queries.squared_distance(points)
        distance = np.sqrt(squared)
        distance[self.shape_queries.winding_number(points) > 0.5] *= -1.0
        return distance


class SamplePool:
    """Pools of surface samples (points, normals) and volume samples (points, signed distance) as float32 tensors,
    drawn from a sample source (a `TriangleMesh` is drawn from through `MeshSource`).

    A source without distances (``has_distance`` False: a point cloud fitted with SIREN's loss) gets only uniform
    volume samples, as SIREN's off-surface term needs, and ``volume_sdf`` None."""

    def __init__(
        self,
        source,
        surface_size: int,
        volume_size: int,
        volume_sampling: VolumeSampling,
        curvature_aware: bool,
        rng: np.random.Generator,
    ):
        self.source = MeshSource(source, curvature_aware) if isinstance(source, TriangleMesh) else source
        self.rng = rng
        self.volume_sampling = volume_sampling
        points, normals = self.source.surface(rng, surface_size)
        self.surface_points = torch.from_numpy(points.astype(np.float32))
        self.surface_normals = torch.from_numpy(normals.astype(np.float32))
        points, distances = self.draw_volume(volume_size)
        self.volume_points = torch.from_numpy(points.astype(np.float32))
        self.volume_sdf = None if distances is None else torch.from_numpy(distances.astype(np.float32))
        self._next_refresh = 0

    def draw_volume(self, count: int) -> tuple[np.ndarray, np.ndarray | None]:
        sampling = self.volume_sampling
        uniform_share = sampling.uniform_share if self.source.has_distance else 1.0
        uniform_count = int(round(count * uniform_share))
        near_count = count - uniform_count
        uniform = self.rng.uniform(-1.0, 1.0, size=(uniform_count, 3))
        base = self.source.near_surface(self.rng, near_count)
        sigmas = np.asarray(sampling.near_surface_sigmas)[self.rng.integers(len(sampling.near_surface_sigmas), size=near_count)]
        near = base + self.rng.normal(size=base.shape) * sigmas[:, None]
        points = np.concatenate([uniform, near])
        return points, self.source.signed_distance(points) if self.source.has_distance else None

    def refresh(self, fraction: float) -> None:
        """Replace a rolling ``fraction`` of both pools with new samples."""
        for pool_size, update in ((len(self.surface_points), self._refresh_surface), (len(self.volume_points), self._refresh_volume)):
            count = max(1, int(pool_size * fraction))
            start = (self._next_refresh * count) % pool_size
            update(slice(start, min(start + count, pool_size)))
        self._next_refresh += 1

    def _refresh_surface(self, where: slice) -> None:
        count = where.stop - where.start
        points, normals = self.source.surface(self.rng, count)
        self.surface_points[where] = torch.from_numpy(points.astype(np.float32))
        self.surface_normals[where] = torch.from_numpy(normals.astype(np.float32))

    def _refresh_volume(self, where: slice) -> None:
        points, distances = self.draw_volume(where.stop - where.start)
        self.volume_points[where] = torch.from_numpy(points.astype(np.float32))
        if distances is not None:
            self.volume_sdf[where] = torch.from_numpy(distances.astype(np.float32))

    def batch(self, generator: torch.Generator, surface_count: int, volume_count: int):
        """Random (surface points, normals, volume points, volume sdf or None) drawn from the pools."""
        s = torch.randint(len(self.surface_points), (surface_count,), generator=generator)
        v = torch.randint(len(self.volume_points), (volume_count,), generator=generator)
        sdf = None if self.volume_sdf is None else self.volume_sdf[v]
        return self.surface_points[s], self.surface_normals[s], self.volume_points[v], sdf
