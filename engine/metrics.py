"""Quality of a reconstructed mesh against a ground-truth mesh (DESIGN.md section 4).

- Normalization (Occupancy Networks protocol): the ground-truth mesh is shifted and uniformly scaled so that its
  largest bounding-box side is 1, and the same transform is applied to the reconstruction. Every distance here
  (Chamfer-L1, Hausdorff, the F-score threshold tau) is in these units.
- Distances are unsigned Euclidean distances from area-weighted random samples on one mesh to the closest point on
  the *surface* of the other (libigl point-triangle distance), not to the other mesh's samples, which would add the
  gap between samples to every distance.
- Normals are face normals; normal consistency uses |n_a . n_b|, so the orientation of the faces does not matter.
- Inside a mesh means a generalized winding number above 1/2 (the sign convention of `sampling.signed_distance`),
  which also gives open meshes a sensible inside. The ground truth's surface is its faces not buried in that inside
  (`sampling.buried_faces`: overlapping parts' faces inside each other); distances and normals are taken on it, the
  inside (IoU) from every face. For a mesh without overlapping parts that is the whole mesh.
- float64 throughout; every random draw comes from a ``seed``, so results are reproducible.
- Strays and topology (issue 13): `far_surface` measures how far the reconstruction strays from the input (the
  one-sided distance result -> input catches floaters, inner bubbles and webbing that the two-sided averages hide);
  `voxel_size` turns an extraction's grid cell into these units; `mesh_components` gives the pieces of a mesh
  with their faces and genus.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .conventions import Normalization
from .mesh_io import MeshError, TriangleMesh
from .sampling import MeshQueries, buried_faces, face_areas, face_normals

IOU_CHUNK = 1 << 20
"""Query points per winding-number call: bounds memory (~40 MB) while keeping rare the tree rebuild that every
call pays (~0.15 s at 75k faces)."""
IOU_BOX_MARGIN = 0.01
"""Padding of the IoU sampling box, as a share of its largest side: keeps the box a volume for flat meshes."""


@dataclass(frozen=True)
class MeshMetrics:
    """Reconstruction quality; distances are in units of the ground truth's largest bounding-box side."""

    chamfer_l1: float
    """1/2 (mean d(pred -> gt) + mean d(gt -> pred)), unsquared; lower is better."""
    normal_consistency: float
    """1/2 (mean |n_pred . n_gt(closest)| + mean |n_gt . n_pred(closest)|), in [0, 1]; higher is better."""
    fscore: float
    """Harmonic mean of precision and recall at ``tau`` (0 when both are 0)."""
    precision: float
    """Share of reconstruction samples closer than ``tau`` to the ground-truth surface."""
    recall: float
    """Share of ground-truth samples closer than ``tau`` to the reconstruction's surface."""
    iou: float
    """Volume IoU of the inside sets, estimated on uniform points; NaN when neither mesh encloses any point."""
    hausdorff: float
    """max(max d(pred -> gt), max d(gt -> pred)) over the samples (so at most the true Hausdorff distance)."""
    tau: float
    """The F-score threshold."""

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def mesh_metrics(
    pred_vertices,
    pred_faces,
    gt_vertices,
    gt_faces,
    *,
    samples: int = 100_000,
    iou_points: int = 1_000_000,
    tau: float = 0.01,
    seed: int = 0,
) -> MeshMetrics:
    """Chamfer-L1, normal consistency, F-score, volume IoU and Hausdorff distance of a reconstruction.

    - ``pred_vertices`` (n, 3), ``pred_faces`` (m, 3): the reconstruction; ``gt_vertices``, ``gt_faces``: the
      ground truth. Zero-area faces are ignored (they add no surface and have no normal).
    - Both meshes are normalized by `ground_truth_normalization` (the ground truth's largest bounding-box side
      becomes 1); ``tau`` and the returned distances are in those units.
    - ``samples`` area-weighted points are drawn on each mesh; ``iou_points`` uniform points in the padded union
      bounding box estimate the IoU (standard error about sqrt(IoU (1 - IoU) / points inside either mesh)).
    - Raises `ValueError` (`MeshError` for the mesh arrays) naming the argument that cannot be used.
    """
    pred = _checked_mesh(pred_vertices, pred_faces, "pred_vertices", "pred_faces")
    gt = _checked_mesh(gt_vertices, gt_faces, "gt_vertices", "gt_faces")
    _check_count(samples, "samples")
    _check_count(iou_points, "iou_points")
    if not (np.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a positive finite distance, got {tau!r}")

    normalization = ground_truth_normalization(gt.vertices, gt.faces)
    pred = _without_zero_area_faces(TriangleMesh(normalization.to_unit(pred.vertices), pred.faces))
    gt = _without_zero_area_faces(TriangleMesh(normalization.to_unit(gt.vertices), gt.faces))
    pred_rng, gt_rng, iou_rng = (np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(3))

    gt_surface = _shape_surface(gt)
    pred_to_gt, pred_normal_agreement = _one_sided_match(pred, gt_surface, samples, pred_rng)
    gt_to_pred, gt_normal_agreement = _one_sided_match(gt_surface, pred, samples, gt_rng)
    precision = float(np.mean(pred_to_gt < tau))
    recall = float(np.mean(gt_to_pred < tau))
    fscore = 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return MeshMetrics(
        chamfer_l1=0.5 * float(pred_to_gt.mean() + gt_to_pred.mean()),
        normal_consistency=0.5 * float(pred_normal_agreement.mean() + gt_normal_agreement.mean()),
        fscore=fscore,
        precision=precision,
        recall=recall,
        iou=_volume_iou(pred, gt, iou_points, iou_rng),
        hausdorff=float(max(pred_to_gt.max(), gt_to_pred.max())),
        tau=float(tau),
    )


@dataclass(frozen=True)
class PointMetrics:
    """Reconstruction quality against input points (a point cloud: no surface, no inside, so no IoU); distances are
    in units of the points' largest bounding-box side."""

    chamfer_l1: float
    """1/2 (mean d(pred -> nearest input point) + mean d(input point -> pred's surface)), unsquared."""
    normal_consistency: float
    """1/2 (mean |n_pred . n(nearest input point)| + mean |n_point . n_pred(closest face)|), in [0, 1]."""
    fscore: float
    precision: float
    """Share of reconstruction samples closer than ``tau`` to an input point."""
    recall: float
    """Share of input points closer than ``tau`` to the reconstruction's surface."""
    hausdorff: float
    tau: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def point_metrics(pred_vertices, pred_faces, points, normals, *, samples: int = 100_000, tau: float = 0.01,
                  seed: int = 0) -> PointMetrics:  # fmt: skip
    """`mesh_metrics`' distances and normal consistency against input points with normals (n, 3) instead of a
    mesh, both normalized so that the points' largest bounding-box side is 1.

    - Input point -> reconstruction: the exact distance to its surface; reconstruction -> input: from ``samples``
      area-weighted samples to the nearest input point, which includes the gaps between the points (a floor of
      about a third of their spacing), as every point-cloud Chamfer distance does.
    """
    from scipy.spatial import cKDTree

    pred = _checked_mesh(pred_vertices, pred_faces, "pred_vertices", "pred_faces")
    points = np.ascontiguousarray(points, dtype=np.float64)
    normals = np.asanyarray(normals, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0 or normals.shape != points.shape:
        raise ValueError(f"points and normals must be (n, 3), got shapes {points.shape} and {normals.shape}")
    _check_count(samples, "samples")
    low, high = points.min(axis=0), points.max(axis=0)
    center = tuple(float(c) for c in (low + high) / 2.0)
    normalization = Normalization(center=center, scale=1.0 / float((high - low).max()))
    pred = _without_zero_area_faces(TriangleMesh(normalization.to_unit(pred.vertices), pred.faces))
    points = normalization.to_unit(points)
    squared, closest = MeshQueries(pred).squared_distance(points)
    to_pred = np.sqrt(squared)
    point_agreement = np.abs(np.einsum("ij,ij->i", normals, face_normals(pred)[closest]))
    samples_at, faces = _area_weighted_samples(pred, face_areas(pred), samples, np.random.default_rng(seed))
    to_points, nearest = cKDTree(points).query(samples_at)
    pred_agreement = np.abs(np.einsum("ij,ij->i", face_normals(pred)[faces], normals[nearest]))
    precision, recall = float(np.mean(to_points < tau)), float(np.mean(to_pred < tau))
    return PointMetrics(
        chamfer_l1=0.5 * float(to_points.mean() + to_pred.mean()),
        normal_consistency=0.5 * float(pred_agreement.mean() + point_agreement.mean()),
        fscore=2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0,
        precision=precision,
        recall=recall,
        hausdorff=float(max(to_points.max(), to_pred.max())),
        tau=float(tau),
    )


def ground_truth_normalization(gt_vertices, gt_faces) -> Normalization:
    """The evaluation transform: centres the ground truth's bounding box and scales its largest side to 1.

    - The bounding box is that of the vertices the faces use, so stray vertices do not change the scale.
    - This is the Occupancy Networks protocol, not the training transform of `Normalization.fit_bounds`; divide a
      normalized distance by ``scale`` to get it in ground-truth units.
    """
    low, high = _surface_bounds(_checked_mesh(gt_vertices, gt_faces, "gt_vertices", "gt_faces"))
    return Normalization(center=tuple(float(c) for c in (low + high) / 2.0), scale=1.0 / float((high - low).max()))


def sample_surface(vertices, faces, count: int, seed: int | np.random.Generator = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points (count, 3) drawn uniformly by area on the mesh, and the index into ``faces`` of each."""
    mesh = _checked_mesh(vertices, faces, "vertices", "faces")
    _check_count(count, "count")
    return _area_weighted_samples(mesh, face_areas(mesh), count, np.random.default_rng(seed))


def volume_iou(pred_vertices, pred_faces, gt_vertices, gt_faces, *, points: int = 1_000_000, seed: int = 0) -> float:
    """Intersection over union of the two inside sets (winding number > 1/2), on ``points`` uniform points.

    - The points fill the union of both bounding boxes, padded by `IOU_BOX_MARGIN` of its largest side.
    - The IoU does not change under a transform applied to both meshes, so no normalization is needed.
    - NaN when no point lies inside either mesh (e.g. two flat open patches).
    """
    pred = _checked_mesh(pred_vertices, pred_faces, "pred_vertices", "pred_faces")
    gt = _checked_mesh(gt_vertices, gt_faces, "gt_vertices", "gt_faces")
    _check_count(points, "points")
    return _volume_iou(pred, gt, points, np.random.default_rng(seed))


@dataclass(frozen=True)
class FarSurface:
    """How far a reconstruction strays from the input surface (one-sided, reconstruction -> input), in units of the
    ground truth's largest bounding-box side."""

    hausdorff: float
    """max d(pred -> gt) over the samples and the vertices of the reconstruction (at most the true one-sided
    Hausdorff distance)."""
    far_share: float
    """Share of the reconstruction's area (its samples) farther than ``distance`` from the input surface."""
    far_components: int
    """Pieces of the reconstruction (`mesh_components`) whose every vertex is farther than ``distance``: floaters
    and closed inner bubbles."""
    distance: float
    """The threshold."""

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def far_surface(
    pred_vertices, pred_faces, gt_vertices, gt_faces, distance: float, *, samples: int = 100_000, seed: int = 0
) -> FarSurface:
    """The one-sided distance from a reconstruction to the input's surface (its faces not buried in its inside): its
    maximum, the share of the reconstruction's surface farther than ``distance``, and the pieces lying wholly
    farther than that.

    - Both meshes are normalized by `ground_truth_normalization`; ``distance`` and the results are in those units
      (`voxel_size` gives an extraction's cell in them: ``2 * voxel_size(...)`` is "two voxels").
    - ``samples`` area-weighted points are drawn on the reconstruction (zero-area faces ignored); every vertex is
      measured too, so the maximum sees small pieces that no sample hits.
    """
    pred = _checked_mesh(pred_vertices, pred_faces, "pred_vertices", "pred_faces")
    gt = _checked_mesh(gt_vertices, gt_faces, "gt_vertices", "gt_faces")
    _check_count(samples, "samples")
    if not (np.isfinite(distance) and distance >= 0):
        raise ValueError(f"distance must be a non-negative finite distance, got {distance!r}")
    normalization = ground_truth_normalization(gt.vertices, gt.faces)
    pred = TriangleMesh(normalization.to_unit(pred.vertices), pred.faces)
    gt = _shape_surface(_without_zero_area_faces(TriangleMesh(normalization.to_unit(gt.vertices), gt.faces)))
    surface = _without_zero_area_faces(pred)
    points, _ = _area_weighted_samples(surface, face_areas(surface), samples, np.random.default_rng(seed))
    queries = MeshQueries(gt)
    sample_distances = np.sqrt(queries.squared_distance(points)[0])
    used = np.unique(pred.faces)
    vertex_distances = np.full(len(pred.vertices), np.inf)
    vertex_distances[used] = np.sqrt(queries.squared_distance(pred.vertices[used])[0])
    labels, components = mesh_components(pred.vertices, pred.faces)
    nearest = np.full(len(components), np.inf)
    np.minimum.at(nearest, np.repeat(labels, 3), vertex_distances[pred.faces.reshape(-1)])
    return FarSurface(
        hausdorff=float(max(sample_distances.max(), vertex_distances[used].max())),
        far_share=float(np.mean(sample_distances > distance)),
        far_components=int(np.count_nonzero(nearest > distance)),
        distance=float(distance),
    )


def voxel_size(resolution: int, normalization: Normalization, gt_vertices, gt_faces) -> float:
    """One cell of `engine.extraction.extract_mesh` at ``resolution``, in ground-truth-normalized units.

    - The extraction's grid has ``resolution`` points per axis over [-1, 1]^3 of the model's ``normalization``
      (the fit's: the input's largest bounding-box side becomes 2 `UNIT_HALF_SIZE`), so a cell is
      2 / (resolution - 1) there and that divided by ``normalization.scale`` in the input's units.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 2:
        raise ValueError(f"resolution must be an integer of at least 2, got {resolution!r}")
    return 2.0 / (resolution - 1) / normalization.scale * ground_truth_normalization(gt_vertices, gt_faces).scale


@dataclass(frozen=True)
class Component:
    """One connected piece of a mesh (faces joined through shared vertices)."""

    faces: int
    vertices: int
    edges: int
    """Distinct undirected edges."""
    boundary_loops: int
    """Connected chains of edges that only one face uses (0 for a closed piece)."""
    zero_area_faces: int

    @property
    def euler_characteristic(self) -> int:
        return self.vertices - self.edges + self.faces

    @property
    def closed(self) -> bool:
        return self.boundary_loops == 0

    @property
    def genus(self) -> float:
        """Handles, from V - E + F = 2 - 2 g - b; a whole number for an orientable manifold piece (a sphere 0, a
        torus 1, a disk 0), not necessarily one for a non-manifold piece."""
        return (2 - self.euler_characteristic - self.boundary_loops) / 2


def mesh_components(vertices, faces) -> tuple[np.ndarray, list[Component]]:
    """The connected pieces of a mesh, largest (most faces) first, and the piece of every face (m,).

    - Faces are connected when they share a vertex; vertices at identical coordinates count as one, so a mesh
      stored with split vertices (e.g. from STL) is not taken apart. Vertices no face uses are ignored.
    - A piece of one face is a degenerate sliver; count them with ``sum(c.faces == 1 for c in components)``.
    """
    mesh = _checked_mesh(vertices, faces, "vertices", "faces")
    _, welded = np.unique(mesh.vertices, axis=0, return_inverse=True)
    triangles = welded.reshape(-1)[mesh.faces]
    count = int(triangles.max()) + 1
    edges = np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]), axis=1)
    _, vertex_labels = connected_components(_graph(edges, count), directed=False)
    _, face_labels, sizes = np.unique(vertex_labels[triangles[:, 0]], return_inverse=True, return_counts=True)
    order = np.argsort(-sizes, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    labels = rank[face_labels.reshape(-1)]
    pieces = len(order)

    edge_keys, edge_first, edge_uses = np.unique(
        edges[:, 0] * count + edges[:, 1], return_index=True, return_counts=True
    )
    edge_labels = np.tile(labels, 3)[edge_first]
    vertex_keys = np.unique(np.repeat(labels, 3) * count + triangles.reshape(-1))
    boundary = np.stack([edge_keys // count, edge_keys % count], axis=1)[edge_uses == 1]
    _, loop_labels = connected_components(_graph(boundary, count), directed=False)
    loops = np.unique(np.stack([edge_labels[edge_uses == 1], loop_labels[boundary[:, 0]]], axis=1), axis=0)
    per_piece = [
        np.bincount(values, minlength=pieces)
        for values in (labels, vertex_keys // count, edge_labels, loops[:, 0], labels[_zero_area(mesh)])
    ]
    return labels, [
        Component(*(int(values[piece]) for values in per_piece)) for piece in range(pieces)
    ]


def _graph(edges: np.ndarray, count: int) -> coo_matrix:
    ones = np.ones(len(edges), dtype=np.int8)
    return coo_matrix((ones, (edges[:, 0], edges[:, 1])), shape=(count, count))


def _one_sided_match(
    source: TriangleMesh, target: TriangleMesh, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (count,) from samples on ``source`` to ``target``'s surface, and |n_source . n_target(closest)|."""
    points, source_faces = _area_weighted_samples(source, face_areas(source), count, rng)
    squared_distances, closest_faces = MeshQueries(target).squared_distance(points)  # chunked: frees the GIL
    normal_agreement = np.abs(
        np.einsum("ij,ij->i", face_normals(source)[source_faces], face_normals(target)[closest_faces])
    )
    return np.sqrt(squared_distances), normal_agreement


def _area_weighted_samples(
    mesh: TriangleMesh, areas: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    faces = rng.choice(len(areas), size=count, p=areas / areas.sum())
    u, v = rng.random(count), rng.random(count)
    # Reflecting the half of the unit square beyond u + v = 1 onto the triangle uses every draw, uniformly.
    outside = u + v > 1.0
    u[outside], v[outside] = 1.0 - u[outside], 1.0 - v[outside]
    corners = mesh.vertices[mesh.faces[faces]]
    points = corners[:, 0] + u[:, None] * (corners[:, 1] - corners[:, 0]) + v[:, None] * (corners[:, 2] - corners[:, 0])
    return points, faces


def _volume_iou(pred: TriangleMesh, gt: TriangleMesh, count: int, rng: np.random.Generator) -> float:
    (pred_low, pred_high), (gt_low, gt_high) = _surface_bounds(pred), _surface_bounds(gt)
    low, high = np.minimum(pred_low, gt_low), np.maximum(pred_high, gt_high)
    margin = IOU_BOX_MARGIN * float((high - low).max())
    low, high = low - margin, high + margin
    intersection = union = 0
    pred_queries, gt_queries = MeshQueries(pred), MeshQueries(gt)  # chunked calls: they free the GIL in between
    for start in range(0, count, IOU_CHUNK):
        points = low + (high - low) * rng.random((min(IOU_CHUNK, count - start), 3))
        inside_pred = pred_queries.winding_number(points) > 0.5
        inside_gt = gt_queries.winding_number(points) > 0.5
        intersection += int(np.count_nonzero(inside_pred & inside_gt))
        union += int(np.count_nonzero(inside_pred | inside_gt))
    return intersection / union if union else float("nan")


def _shape_surface(mesh: TriangleMesh) -> TriangleMesh:
    buried = buried_faces(mesh, MeshQueries(mesh))
    return TriangleMesh(mesh.vertices, mesh.faces[~buried]) if buried.any() else mesh


def _without_zero_area_faces(mesh: TriangleMesh) -> TriangleMesh:
    # A zero-area face can still be the closest face to a point, and its normal is undefined.
    return TriangleMesh(mesh.vertices, mesh.faces[~_zero_area(mesh)])


def _zero_area(mesh: TriangleMesh) -> np.ndarray:
    low, high = _surface_bounds(mesh)
    extent = float((high - low).max())
    return 2.0 * face_areas(mesh) <= 1e-12 * extent * extent


def _surface_bounds(mesh: TriangleMesh) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box (low, high) of the vertices that faces use."""
    used = mesh.vertices[np.unique(mesh.faces)]
    return used.min(axis=0), used.max(axis=0)


def _checked_mesh(vertices, faces, vertices_name: str, faces_name: str) -> TriangleMesh:
    vertices = np.ascontiguousarray(vertices, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise MeshError(f"{vertices_name} must be (n, 3), got shape {vertices.shape}")
    if len(vertices) == 0:
        raise MeshError(f"{vertices_name} is empty: the mesh has no vertices")
    if not np.isfinite(vertices).all():
        raise MeshError(f"{vertices_name} has NaN or infinite coordinates")
    faces = np.asanyarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise MeshError(f"{faces_name} must be (m, 3) triangles, got shape {faces.shape}")
    if len(faces) == 0:
        raise MeshError(f"{faces_name} is empty: the mesh has no faces, so there is no surface to measure")
    if not np.issubdtype(faces.dtype, np.integer):
        raise MeshError(f"{faces_name} must hold integer vertex indices, got dtype {faces.dtype}")
    out_of_range = (faces < 0) | (faces >= len(vertices))
    if out_of_range.any():
        face = int(np.flatnonzero(out_of_range.any(axis=1))[0])
        raise MeshError(
            f"{faces_name}: face {face} refers to vertex {int(faces[face][out_of_range[face]][0])}, but "
            f"{vertices_name} has only {len(vertices)} vertices"
        )
    mesh = TriangleMesh(vertices, np.ascontiguousarray(faces, dtype=np.int64))
    if _zero_area(mesh).all():
        raise MeshError(f"{faces_name}: all {len(faces)} faces have zero area, so there is no surface to measure")
    return mesh


def _check_count(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
