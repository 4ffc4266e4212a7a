"""Signed distance with the winding-number sign, and the sample pools."""

import numpy as np
import trimesh

from engine.mesh_io import TriangleMesh, check_mesh
from engine.mesh_io import load_mesh
from engine.sampling import (
    MeshQueries,
    MeshSource,
    SamplePool,
    SurfaceSampler,
    VolumeSampling,
    buried_faces,
    signed_distance,
)
from tests.conftest import REPO


def box(center=(0.0, 0.0, 0.0), size=1.0) -> trimesh.Trimesh:
    return trimesh.creation.box(extents=(size,) * 3, transform=trimesh.transformations.translation_matrix(center))


def test_signed_distance_is_negative_inside_and_exact_for_a_box():
    cube = box()
    mesh = check_mesh(cube.vertices, cube.faces)
    points = np.array([[0.0, 0, 0], [0.3, 0, 0], [0.8, 0, 0], [0.8, 0.8, 0]])
    np.testing.assert_allclose(signed_distance(mesh, points), [-0.5, -0.2, 0.3, np.hypot(0.3, 0.3)], atol=1e-12)


def test_an_open_cube_missing_one_face_still_has_an_inside():
    cube = box()
    top = np.flatnonzero(cube.face_normals[:, 2] > 0.5)
    open_cube = check_mesh(cube.vertices, np.delete(cube.faces, top, axis=0))
    points = np.array([[0.0, 0, 0], [0.0, 0, -0.3], [0.0, 0, 0.45], [0.0, 0, 1.0], [1.0, 0, 0]])
    distance = signed_distance(open_cube, points)
    assert (distance[:3] < 0).all(), distance
    assert (distance[3:] > 0).all(), distance
    # the distance itself stays the true unsigned distance to the open surface (no |1 - 2w| scaling)
    np.testing.assert_allclose(np.abs(distance), [0.5, 0.2, 0.5, np.hypot(0.5, 0.5), 0.5], atol=1e-12)


def test_two_disjoint_components_are_both_inside():
    left, right = box(center=(-1.0, 0, 0)), box(center=(1.0, 0, 0))
    both = trimesh.util.concatenate([left, right])
    mesh = check_mesh(both.vertices, both.faces)
    distance = signed_distance(mesh, np.array([[-1.0, 0, 0], [1.0, 0, 0], [0.0, 0, 0]]))
    np.testing.assert_allclose(distance, [-0.5, -0.5, 0.5], atol=1e-12)


def overlapping_boxes():
    """[-0.5, 0.5]^3 and [0, 1] x [-0.5, 0.5]^2 as one mesh: each has a face buried in the other."""
    both = trimesh.util.concatenate([box(), box(center=(0.5, 0, 0))])
    return check_mesh(both.vertices, both.faces)


def union_distance(points):
    """The exact signed distance of the boxes' union [-0.5, 1] x [-0.5, 0.5]^2 (points inside it)."""
    x, y, z = points.T
    return np.maximum.reduce([np.abs(x - 0.25) - 0.75, np.abs(y) - 0.5, np.abs(z) - 0.5])


def test_faces_buried_in_an_overlapping_part_are_no_surface():
    mesh = overlapping_boxes()
    buried = buried_faces(mesh, MeshQueries(mesh))
    centroids = mesh.vertices[mesh.faces].mean(axis=1)
    assert buried.sum() == 4  # two triangles of the first box's +x side, two of the second's -x side
    assert np.isin(np.round(centroids[buried, 0], 9), [0.0, 0.5]).all()
    # the distance is to the union's boundary, not to the buried faces 0.25 and 0.05 away
    points = np.array([[0.25, 0, 0], [0.45, 0, 0.4], [0.05, 0.1, -0.2]])
    np.testing.assert_allclose(signed_distance(mesh, points), union_distance(points), atol=1e-12)
    samples, normals = MeshSource(mesh).surface(np.random.default_rng(0), 5000)
    np.testing.assert_allclose(union_distance(samples), 0.0, atol=1e-9)


def test_a_closed_or_open_mesh_has_no_buried_face_whatever_its_faces_orientation():
    cube = box()
    flipped = cube.faces.copy()
    flipped[0] = flipped[0][::-1]
    top = np.flatnonzero(cube.face_normals[:, 2] > 0.5)
    for faces in (cube.faces, flipped, np.delete(cube.faces, top, axis=0)):
        mesh = check_mesh(cube.vertices, faces)
        assert not buried_faces(mesh, MeshQueries(mesh)).any()


def test_suzannes_eyes_in_their_sockets_are_buried_where_they_overlap_the_head():
    source = MeshSource(load_mesh(REPO / "data" / "suzanne.ply"))
    # measured: 178 of 3,936 faces, where the eyes and the sockets overlap (Suzanne is three open parts)
    assert 0.02 < source.buried_share < 0.05, source.buried_share


def test_surface_samples_lie_on_the_mesh_with_outward_normals(sphere_mesh):
    mesh = check_mesh(*sphere_mesh)
    points, normals = SurfaceSampler(mesh).sample(np.random.default_rng(0), 5000)
    radius = np.linalg.norm(points, axis=1)
    assert radius.max() <= 0.5 + 1e-9 and radius.min() > 0.49
    assert (np.einsum("ij,ij->i", normals, points / radius[:, None]) > 0.99).all()


def test_curvature_aware_sampling_puts_a_fifth_of_the_samples_in_the_most_curved_band():
    # a capsule: flat-ish cylinder sides and strongly curved caps
    capsule = trimesh.creation.capsule(height=2.0, radius=0.2, count=(32, 32))
    mesh = check_mesh(capsule.vertices, capsule.faces)
    rng = np.random.default_rng(0)
    plain, _ = SurfaceSampler(mesh).sample(rng, 20000)
    aware, _ = SurfaceSampler(mesh, curvature_aware=True).sample(rng, 20000)
    on_caps = lambda points: (np.abs(points[:, 2]) > 1.0).mean()  # noqa: E731
    assert on_caps(aware) > on_caps(plain) + 0.05


def test_pool_refresh_replaces_samples_and_keeps_labels_consistent(sphere_mesh):
    mesh = check_mesh(*sphere_mesh)
    pool = SamplePool(mesh, 2000, 2000, VolumeSampling(), False, np.random.default_rng(0))
    before = pool.volume_points.clone()
    pool.refresh(0.25)
    changed = (pool.volume_points != before).any(dim=1).float().mean().item()
    assert 0.2 < changed < 0.3
    distance = np.linalg.norm(pool.volume_points.numpy(), axis=1) - 0.5
    np.testing.assert_allclose(pool.volume_sdf.numpy(), distance, atol=2e-3)  # icosphere vs. true sphere


def test_mesh_queries_in_slabs_and_chunks_equal_libigls_one_call(monkeypatch):
    """Issue 12: a big mesh gets one search tree per slab of faces and queries run in chunks, so no single libigl call
    holds the GIL for seconds (the worker's heartbeat stalled 8.8 s); the distances stay exact and the signs equal."""
    import igl

    from engine import sampling

    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    mesh = TriangleMesh(np.asarray(sphere.vertices, dtype=np.float64), np.asarray(sphere.faces, dtype=np.int64))
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform(-1, 1, (2000, 3)), mesh.vertices[rng.integers(len(mesh.vertices), size=2000)]])
    squared, _, _ = igl.point_mesh_squared_distance(points, mesh.vertices, mesh.faces)
    winding = igl.fast_winding_number(mesh.vertices, mesh.faces, points)

    monkeypatch.setattr(sampling, "MAX_TREE_FACES", 1000)  # 5120 faces: 6 slabs
    monkeypatch.setattr(sampling, "QUERY_SECONDS", 0.0)  # every chunk takes "too long": the chunks shrink
    queries = sampling.MeshQueries(mesh)
    found, closest = queries.squared_distance(points)
    np.testing.assert_allclose(found, squared, rtol=0, atol=1e-15)
    corners = mesh.vertices[mesh.faces[closest]]
    assert closest.min() >= 0 and closest.max() < len(mesh.faces) and len(queries._slabs) == 6
    np.testing.assert_array_equal(queries.winding_number(points) > 0.5, winding > 0.5)
    assert np.isfinite(corners).all()
    assert all(slab.chunks["distance"] < 256 and slab.chunks["winding"] < 4096 for slab in queries._slabs)
