"""Reading and checking input meshes.

Every mesh that enters the engine passes through `check_mesh`, which turns the ways a mesh can be unusable into
one clear `MeshError` naming the mesh and what to do.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import trimesh

SUPPORTED_SUFFIXES = (".ply", ".obj", ".stl", ".off", ".glb", ".gltf")


class MeshError(ValueError):
    """An input mesh cannot be used; the message names the mesh, the problem and the fix."""


@dataclass(frozen=True)
class TriangleMesh:
    """A checked triangle mesh: vertices (n, 3) float64, faces (m, 3) int64, every index in range."""

    vertices: np.ndarray
    faces: np.ndarray


def check_mesh(vertices, faces, name: str = "mesh") -> TriangleMesh:
    """Validate (V, F) arrays and return a triangle mesh.

    - ``faces`` may be (m, 3) triangles, (m, k) polygons (fan-triangulated), or a list of index lists.
    - Degenerate triangles (repeated indices or zero area) are dropped with a warning.
    - Raises `MeshError` for no vertices, no faces, non-finite coordinates and out-of-range indices.
    """
    vertices = np.asanyarray(vertices, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise MeshError(f"{name}: vertices must be (n, 3), got shape {vertices.shape}")
    if len(vertices) == 0:
        raise MeshError(f"{name} is empty: it has no vertices. Select or load a mesh with geometry")
    bad = ~np.isfinite(vertices).all(axis=1)
    if bad.any():
        raise MeshError(
            f"{name} has {int(bad.sum())} vertices with NaN or infinite coordinates (first: vertex "
            f"{int(np.flatnonzero(bad)[0])}); fix or delete them before fitting"
        )
    triangles = _triangulate(faces, name)
    if len(triangles) == 0:
        raise MeshError(f"{name} has no faces (only points or edges); a surface with faces is needed to fit an SDF")
    out_of_range = (triangles < 0) | (triangles >= len(vertices))
    if out_of_range.any():
        face = int(np.flatnonzero(out_of_range.any(axis=1))[0])
        raise MeshError(
            f"{name}: face {face} refers to vertex {int(triangles[face][out_of_range[face]][0])}, but the mesh has "
            f"only {len(vertices)} vertices (indices must be in 0..{len(vertices) - 1})"
        )
    corners = vertices[triangles]
    doubled_area = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    extent = float(np.ptp(vertices, axis=0).max())
    degenerate = doubled_area <= (1e-12 * extent * extent)
    if degenerate.all():
        raise MeshError(f"{name}: all {len(triangles)} faces have zero area; there is no surface to fit")
    if degenerate.any():
        warnings.warn(f"{name}: dropped {int(degenerate.sum())} degenerate (zero-area) faces", stacklevel=2)
        triangles = triangles[~degenerate]
    return TriangleMesh(vertices, triangles)


def _triangulate(faces, name: str) -> np.ndarray:
    if isinstance(faces, np.ndarray) and faces.dtype != object:
        if faces.size == 0:
            return np.zeros((0, 3), dtype=np.int64)
        if faces.ndim != 2 or faces.shape[1] < 3:
            raise MeshError(f"{name}: faces must be (m, k) with k >= 3 vertex indices, got shape {faces.shape}")
        if not np.issubdtype(faces.dtype, np.integer):
            if not np.all(np.mod(faces, 1) == 0):
                raise MeshError(f"{name}: face indices must be integers")
        polygons = faces.astype(np.int64)
        return np.concatenate([polygons[:, [0, i, i + 1]] for i in range(1, polygons.shape[1] - 1)])
    fans = []
    for index, polygon in enumerate(faces):
        polygon = np.asarray(polygon, dtype=np.int64)
        if len(polygon) < 3:
            raise MeshError(f"{name}: face {index} has {len(polygon)} vertices; faces need at least 3")
        fans.extend((polygon[0], polygon[i], polygon[i + 1]) for i in range(1, len(polygon) - 1))
    return np.asarray(fans, dtype=np.int64).reshape(-1, 3)


def load_mesh(path: str | Path) -> TriangleMesh:
    """Read a PLY/OBJ/STL/OFF/GLB file (every mesh in a scene file is merged, with its scene transform)."""
    path = Path(path)
    loaded = load_geometry(path)
    if not isinstance(loaded, trimesh.Trimesh):
        raise MeshError(f"{path.name} contains no faces ({type(loaded).__name__}); a surface mesh is needed")
    return check_mesh(loaded.vertices, loaded.faces, name=path.name)


def load_geometry(path: str | Path):
    """What a PLY/OBJ/STL/OFF/GLB file holds as trimesh reads it: a ``trimesh.Trimesh`` (every mesh of a scene file
    merged, with its scene transform) or, for a file of points without faces, a ``trimesh.PointCloud``. Raises
    `MeshError` naming the file for a missing file, a folder, an unsupported format or an unreadable file."""
    path = Path(path)
    if path.is_dir():
        raise MeshError(f"{path} is a folder, not a mesh file: give the path of a PLY/OBJ/STL/OFF/GLB file")
    if not path.is_file():
        raise MeshError(f"mesh file {path} does not exist")
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise MeshError(f"{path.name}: unsupported format {path.suffix!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    try:
        loaded = trimesh.load(path, process=False)
    except Exception as error:  # trimesh raises many types for malformed files
        raise MeshError(f"{path.name} could not be read as a mesh: {error}") from error
    if isinstance(loaded, trimesh.Scene):
        geometry = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh)]
        if not geometry:
            raise MeshError(f"{path.name} contains no triangle mesh (only points, lines or an empty scene)")
        loaded = trimesh.util.concatenate(geometry)
    if not isinstance(loaded, (trimesh.Trimesh, trimesh.PointCloud)):
        raise MeshError(f"{path.name} contains no faces ({type(loaded).__name__}); a surface mesh is needed")
    return loaded


def merge_meshes(meshes: Sequence[TriangleMesh]) -> TriangleMesh:
    """Several meshes as one shape (their union, for the winding number)."""
    if not meshes:
        raise MeshError("no meshes given: select at least one mesh")
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    vertices = np.concatenate([m.vertices for m in meshes])
    faces = np.concatenate([m.faces + offset for m, offset in zip(meshes, offsets)])
    return TriangleMesh(vertices, faces)
