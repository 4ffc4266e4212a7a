"""Curvature of fitted models: the CLI, and agreement with libigl's discrete curvature on the fitted mesh."""

import igl
import numpy as np
import pytest
import trimesh

from engine.fit import fit_sdf, preset
from engine.geometry import model_curvatures
from engine.mesh_io import check_mesh
from engine.ply_io import read_ply_vertex_properties
from tests.conftest import run_engine_cli

TORUS_MAJOR, TORUS_MINOR = 2.0, 0.8  # input units; the fit normalizes them


@pytest.fixture(scope="module")
def torus_mesh():
    torus = trimesh.creation.torus(TORUS_MAJOR, TORUS_MINOR, major_sections=96, minor_sections=48)
    return check_mesh(torus.vertices, torus.faces, name="Torus")


@pytest.fixture(scope="module")
def fitted_torus(torus_mesh):
    return fit_sdf(torus_mesh, preset("tiny", steps=400))


def discrete_curvatures(vertices, faces):
    """libigl: cotangent-Laplacian mean curvature (signed by the outward normal) and angle-defect Gaussian."""
    laplacian = igl.cotmatrix(vertices, faces)
    mass = igl.massmatrix(vertices, faces, igl.MASSMATRIX_TYPE_VORONOI)
    area = mass.diagonal()
    mean_curvature_normal = -(laplacian @ vertices) / area[:, None] / 2.0
    normals = igl.per_vertex_normals(vertices, faces)
    mean = np.einsum("ij,ij->i", mean_curvature_normal, normals)
    gaussian = igl.gaussian_curvature(vertices, faces) / area
    return mean, gaussian


def test_network_curvature_agrees_with_libigl_at_the_input_mesh_vertices(fitted_torus, torus_mesh):
    # the input's well-shaped triangles give libigl a clean reference (marching-cubes slivers would not)
    vertices, faces = torus_mesh.vertices, torus_mesh.faces
    network = model_curvatures(fitted_torus, vertices, project=True)
    mean, gaussian = discrete_curvatures(vertices, faces)
    mean_correlation = np.corrcoef(network.mean, mean)[0, 1]
    gaussian_correlation = np.corrcoef(network.gaussian, gaussian)[0, 1]
    assert mean_correlation > 0.9, mean_correlation
    assert gaussian_correlation > 0.8, gaussian_correlation
    # and both agree with the torus's own closed form, in input units
    rho = np.hypot(vertices[:, 0], vertices[:, 1])
    cos_v = (rho - TORUS_MAJOR) / TORUS_MINOR
    true_mean = (TORUS_MAJOR + 2 * TORUS_MINOR * cos_v) / (2 * TORUS_MINOR * (TORUS_MAJOR + TORUS_MINOR * cos_v))
    assert np.median(np.abs(network.mean - true_mean)) < 0.1 * np.abs(true_mean).mean()


def test_curvature_cli_colours_the_model_surface_and_another_mesh(fitted_torus, tmp_path):
    model_path = tmp_path / "torus.pt"
    fitted_torus.save(model_path)
    out = tmp_path / "own.ply"
    result = run_engine_cli("curvature", model_path, "-o", out, "--resolution", "48")
    assert result.returncode == 0, result.stderr
    fields = read_ply_vertex_properties(out)
    assert {"mean", "gaussian", "k1", "k2", "red", "green", "blue"} <= set(fields)
    np.testing.assert_allclose(fields["mean"], (fields["k1"] + fields["k2"]) / 2, rtol=1e-4, atol=1e-4)
    assert "colours show mean" in result.stdout

    outer_ring = trimesh.creation.torus(major_radius=TORUS_MAJOR, minor_radius=TORUS_MINOR * 1.05)
    at = tmp_path / "user.ply"
    outer_ring.export(at)
    out = tmp_path / "user_colored.ply"
    result = run_engine_cli(
        "curvature", model_path, "--at", at, "-o", out, "--project", "--quantity", "gaussian", "--range", "-0.5", "0.5"
    )
    assert result.returncode == 0, result.stderr
    fields = read_ply_vertex_properties(out)
    assert len(fields["gaussian"]) == len(outer_ring.vertices)
    outer = np.hypot(outer_ring.vertices[:, 0], outer_ring.vertices[:, 1]) > TORUS_MAJOR + 0.5 * TORUS_MINOR
    assert (fields["gaussian"][outer] > 0).mean() > 0.95 and (fields["mean"] > 0).mean() > 0.6
    assert "over [-0.5, 0.5]" in result.stdout
