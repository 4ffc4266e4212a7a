"""Input meshes: every kind of bad input gets its own clear error; polygons are triangulated."""

import numpy as np
import pytest
import trimesh

from engine.mesh_io import MeshError, check_mesh, load_mesh, merge_meshes

TRIANGLE = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])


@pytest.mark.parametrize(
    ("vertices", "faces", "message"),
    [
        (np.zeros((0, 3)), np.zeros((0, 3), int), "is empty: it has no vertices"),
        (TRIANGLE, np.zeros((0, 3), int), "has no faces"),
        (np.array([[0.0, 0, 0], [1, np.nan, 0], [0, 1, 0]]), [[0, 1, 2]], "NaN or infinite coordinates"),
        (np.array([[0.0, 0, 0], [1, np.inf, 0], [0, 1, 0]]), [[0, 1, 2]], "NaN or infinite coordinates"),
        (TRIANGLE, [[0, 1, 3]], "refers to vertex 3, but the mesh has only 3 vertices"),
        (TRIANGLE, [[0, -1, 2]], "refers to vertex -1"),
        (np.zeros((3, 2)), [[0, 1, 2]], r"vertices must be \(n, 3\)"),
        (TRIANGLE, [[0, 1]], "faces must be"),
        (np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]), [[0, 1, 2]], "all 1 faces have zero area"),
    ],
)
def test_bad_meshes_get_a_specific_error_naming_the_mesh(vertices, faces, message):
    with pytest.raises(MeshError, match=message) as error:
        check_mesh(vertices, np.asarray(faces), name="Cube")
    assert str(error.value).startswith("Cube")


def test_quads_and_ngons_are_triangulated():
    square = np.array([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0.5, 1.5, 0]])
    assert check_mesh(square, np.array([[0, 1, 2, 3]])).faces.tolist() == [[0, 1, 2], [0, 2, 3]]
    mixed = check_mesh(square, [[0, 1, 2, 3], [3, 2, 4]])
    assert len(mixed.faces) == 3


def test_degenerate_faces_are_dropped_with_a_warning():
    vertices = np.vstack([TRIANGLE, [[2.0, 0, 0]]])
    with pytest.warns(UserWarning, match="dropped 2 degenerate"):
        mesh = check_mesh(vertices, np.array([[0, 1, 2], [0, 0, 1], [0, 1, 3]]))
    assert mesh.faces.tolist() == [[0, 1, 2]]


def test_files_load_in_every_supported_format(tmp_path):
    box = trimesh.creation.box()
    for suffix in (".ply", ".obj", ".stl", ".off", ".glb"):
        path = tmp_path / f"box{suffix}"
        box.export(path)
        mesh = load_mesh(path)
        assert len(mesh.faces) == 12, suffix
        np.testing.assert_allclose(mesh.vertices.min(axis=0), -0.5, atol=1e-6)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(MeshError, match="does not exist"):
        load_mesh(tmp_path / "missing.ply")
    with pytest.raises(MeshError, match="unsupported format '.txt'"):
        (tmp_path / "notes.txt").write_text("hello")
        load_mesh(tmp_path / "notes.txt")
    broken = tmp_path / "broken.ply"
    broken.write_text("ply\nformat ascii 1.0\nelement vertex 3\nend_header\n1 2\n")
    with pytest.raises(MeshError, match="broken.ply"):
        load_mesh(broken)
    points_only = tmp_path / "points.ply"
    trimesh.PointCloud(np.random.default_rng(0).random((10, 3))).export(points_only)
    with pytest.raises(MeshError, match="points.ply"):
        load_mesh(points_only)


def test_merging_offsets_the_faces_of_later_meshes():
    first = check_mesh(TRIANGLE, np.array([[0, 1, 2]]))
    second = check_mesh(TRIANGLE + 5.0, np.array([[0, 1, 2]]))
    merged = merge_meshes([first, second])
    assert merged.faces.tolist() == [[0, 1, 2], [3, 4, 5]]
    np.testing.assert_array_equal(merged.vertices[merged.faces[1]], TRIANGLE + 5.0)
