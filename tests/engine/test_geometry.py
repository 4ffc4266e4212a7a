"""Curvatures of neural SDFs against analytic truths (DESIGN.md §4), colour maps and PLY output.

Analytic SDFs are torch modules evaluated in float64, so the only error is rounding: relative error <= 1e-6 on
several level sets, not only the zero set.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from torch import nn

from engine.colormaps import NAN_COLOR, QUANTITIES, colorize
from engine.conventions import CURVATURE_CONVENTION, Normalization
from engine.geometry import (
    Curvatures,
    curvatures,
    gradient_and_hessian,
    model_curvatures,
    project_to_surface,
)
from engine.model import SDFModel
from engine.networks import Siren, SirenConfig
from engine.ply_io import read_ply_vertex_properties, write_ply

RTOL = 1e-6


class SphereSDF(nn.Module):
    """f = |x - center| - radius."""

    def __init__(self, radius: float, center=(0.0, 0.0, 0.0)):
        super().__init__()
        self.radius = radius
        self.register_buffer("center", torch.tensor(center, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.center).norm(dim=-1) - self.radius


class TorusSDF(nn.Module):
    """f = sqrt((rho - R)^2 + z^2) - a around the z axis."""

    def __init__(self, major: float, minor: float):
        super().__init__()
        self.major, self.minor = major, minor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rho = torch.sqrt(x[:, 0] ** 2 + x[:, 1] ** 2)
        return torch.sqrt((rho - self.major) ** 2 + x[:, 2] ** 2) - self.minor


class SquaredSphere(nn.Module):
    """|x|^2 - r^2: the sphere as a zero set, but no distance (Newton needs several steps)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * x).sum(-1) - 0.25


class Plane(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ torch.tensor([0.0, 0.6, 0.8], dtype=x.dtype) - 0.1


def unit_directions(count: int, seed: int = 0) -> np.ndarray:
    directions = np.random.default_rng(seed).normal(size=(count, 3))
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def torus_points(major: float, tube_radii, count: int = 40, seed: int = 1):
    """Points at tube distance q from the core circle, tube angle v (|cos v| >= 0.2 so K is not ~0), azimuth u."""
    rng = np.random.default_rng(seed)
    q = np.repeat(np.asarray(tube_radii, dtype=np.float64), count)
    v = rng.uniform(0, 2 * np.pi, len(q))
    v = np.where(np.abs(np.cos(v)) < 0.2, v + np.pi / 4, v)
    u = rng.uniform(0, 2 * np.pi, len(q))
    rho = major + q * np.cos(v)
    points = np.stack([rho * np.cos(u), rho * np.sin(u), q * np.sin(v)], axis=1)
    return points, q, v, u, rho


def assert_relative(actual, expected, rtol=RTOL):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=0)


def test_sphere_curvatures_on_every_level_set_have_the_convex_sign():
    radius = 0.5
    distances = np.repeat([0.15, 0.4, 0.5, 0.9, 1.7], 20)
    points = unit_directions(len(distances)) * distances[:, None]
    result = curvatures(SphereSDF(radius), points)
    assert result.mean.dtype == np.float64
    np.testing.assert_allclose(result.value, distances - radius, atol=1e-12)
    assert_relative(result.kappa, 2 / distances)
    assert_relative(result.mean, 1 / distances)
    assert_relative(result.gaussian, 1 / distances**2)
    assert_relative(result.k1, 1 / distances)
    assert_relative(result.k2, 1 / distances)
    assert (result.kappa > 0).all()
    assert ((result.normal * points).sum(axis=1) > 0).all(), "normals point outward"


def test_torus_curvatures_match_the_closed_forms_on_several_level_sets():
    major, minor = 0.8, 0.3
    points, q, v, _, rho = torus_points(major, [0.2, 0.3, 0.45, 0.7])
    result = curvatures(TorusSDF(major, minor), points)
    np.testing.assert_allclose(result.value, q - minor, atol=1e-12)
    assert_relative(result.kappa, 1 / q + (rho - major) / (q * rho))
    assert_relative(result.mean, (1 / q + (rho - major) / (q * rho)) / 2)
    assert_relative(result.gaussian, (rho - major) / (q**2 * rho))
    assert_relative(result.k1, 1 / q)
    assert_relative(result.k2, np.cos(v) / (major + q * np.cos(v)))

    on_surface = q == minor
    mean_on_surface = (major + 2 * minor * np.cos(v)) / (2 * minor * (major + minor * np.cos(v)))
    assert_relative(result.mean[on_surface], mean_on_surface[on_surface])
    assert_relative(result.gaussian[on_surface], (np.cos(v) / (minor * (major + minor * np.cos(v))))[on_surface])


def test_torus_principal_directions_are_orthonormal_tangent_and_follow_meridians_and_parallels():
    points, _, v, u, _ = torus_points(0.8, [0.2, 0.3, 0.5])
    result = curvatures(TorusSDF(0.8, 0.3), points)
    dot = lambda a, b: (a * b).sum(axis=1)  # noqa: E731
    np.testing.assert_allclose(dot(result.dir1, result.dir1), 1, atol=1e-12)
    np.testing.assert_allclose(dot(result.dir2, result.dir2), 1, atol=1e-12)
    np.testing.assert_allclose(dot(result.dir1, result.dir2), 0, atol=1e-12)
    np.testing.assert_allclose(dot(result.dir1, result.gradient), 0, atol=1e-12)
    np.testing.assert_allclose(dot(result.dir2, result.gradient), 0, atol=1e-12)
    np.testing.assert_allclose(np.cross(result.dir1, result.dir2), result.normal, atol=1e-12)
    # k1 = 1/q bends around the tube (meridian); k2 follows the parallel circle around the z axis.
    meridian = np.stack([-np.sin(v) * np.cos(u), -np.sin(v) * np.sin(u), np.cos(v)], axis=1)
    parallel = np.stack([-np.sin(u), np.cos(u), np.zeros_like(u)], axis=1)
    np.testing.assert_allclose(np.abs(dot(result.dir1, meridian)), 1, atol=1e-9)
    np.testing.assert_allclose(np.abs(dot(result.dir2, parallel)), 1, atol=1e-9)


def test_sphere_directions_at_umbilics_are_an_orthonormal_tangent_pair():
    points = unit_directions(50, seed=3) * 0.7
    points[0] = [0.0, 0.0, -0.7]  # the tangent-basis construction switches branch at the south pole
    result = curvatures(SphereSDF(0.5), points)
    np.testing.assert_allclose(np.linalg.norm(result.dir1, axis=1), 1, atol=1e-12)
    np.testing.assert_allclose((result.dir1 * result.dir2).sum(1), 0, atol=1e-12)
    np.testing.assert_allclose((result.dir1 * result.normal).sum(1), 0, atol=1e-12)
    np.testing.assert_allclose((result.dir2 * result.normal).sum(1), 0, atol=1e-12)


def test_a_plane_has_zero_curvature_and_zero_hessian():
    points = unit_directions(10)
    derivatives = gradient_and_hessian(Plane(), points)
    assert torch.equal(derivatives.hessian, torch.zeros(10, 3, 3, dtype=torch.float64))
    result = curvatures(Plane(), points)
    for quantity in (result.mean, result.gaussian, result.k1, result.k2):
        np.testing.assert_array_equal(quantity, 0)


@pytest.mark.parametrize("scale", [1.0, 5.0])
def test_projection_lands_on_sphere_and_torus_from_near_and_far(scale):
    offsets = unit_directions(60, seed=4) * np.random.default_rng(5).uniform(0.05, 0.6, (60, 1)) * scale
    sphere_start = unit_directions(60, seed=6) * 0.5 + offsets
    projected, residual = project_to_surface(SphereSDF(0.5), sphere_start, tol=1e-12)
    assert residual.max() < 1e-12
    assert_relative(np.linalg.norm(projected, axis=1), 0.5, rtol=1e-11)

    torus_start, *_ = torus_points(0.8, [0.3], count=60)
    projected, residual = project_to_surface(TorusSDF(0.8, 0.3), torus_start + offsets * 0.3, tol=1e-12)
    assert residual.max() < 1e-12
    rho = np.linalg.norm(projected[:, :2], axis=1)
    assert_relative(np.hypot(rho - 0.8, projected[:, 2]), 0.3, rtol=1e-11)


def test_projection_of_a_function_that_is_no_distance_converges_in_several_steps():
    start = unit_directions(40, seed=7) * np.random.default_rng(8).uniform(0.05, 3.0, (40, 1))
    projected, residual = project_to_surface(SquaredSphere(), start, steps=30, tol=1e-13)
    assert residual.max() < 1e-13
    assert_relative(np.linalg.norm(projected, axis=1), 0.5, rtol=1e-12)
    _, one_step_residual = project_to_surface(SquaredSphere(), start, steps=1)
    assert one_step_residual.max() > 1e-6


def test_model_curvatures_are_in_input_units():
    radius, center = 2.5, np.array([1.0, -2.0, 0.5])
    normalization = Normalization(center=tuple(center), scale=0.3)
    model = SDFModel(network=SphereSDF(radius * normalization.scale), normalization=normalization)
    distances = np.repeat([1.5, 2.5, 4.0], 10)
    points = center + unit_directions(len(distances), seed=9) * distances[:, None]

    result = model_curvatures(model, points)
    np.testing.assert_allclose(result.points, points)
    np.testing.assert_allclose(result.value, distances - radius, atol=1e-12)
    assert_relative(result.mean, 1 / distances)
    assert_relative(result.kappa, 2 / distances)
    assert_relative(result.gaussian, 1 / distances**2)
    assert_relative(result.k1, 1 / distances)

    projected = model_curvatures(model, points, project=True, tol=1e-12)
    assert_relative(np.linalg.norm(projected.points - center, axis=1), radius, rtol=1e-10)
    assert np.abs(projected.value).max() < 1e-10
    assert_relative(projected.mean, 1 / radius)
    assert_relative(projected.gaussian, 1 / radius**2)


@pytest.fixture(scope="module")
def small_siren() -> Siren:
    torch.manual_seed(0)
    return Siren(SirenConfig(hidden_features=64, hidden_layers=2))


def siren_points(count: int = 300) -> np.ndarray:
    return np.random.default_rng(10).uniform(-0.9, 0.9, (count, 3))


def test_siren_explicit_derivatives_match_autograd(small_siren):
    points = siren_points()
    explicit = gradient_and_hessian(small_siren, points, dtype=torch.float64, method="siren")
    reference = gradient_and_hessian(small_siren, points, dtype=torch.float64, method="autograd")
    for name in ("value", "gradient", "hessian"):
        actual, expected = getattr(explicit, name), getattr(reference, name)
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-12 * float(expected.abs().max()))
    assert small_siren.output.weight.dtype == torch.float32, "a dtype override must not convert the caller's module"


def test_siren_float32_and_float64_curvatures_agree(small_siren):
    points = siren_points()
    single = curvatures(small_siren, points)
    double = curvatures(small_siren, points, dtype=torch.float64)
    assert single.mean.dtype == np.float32 and double.mean.dtype == np.float64
    # Where |grad f| is not tiny, curvature is well conditioned; float32 then agrees to ~1e-7 of the largest value
    # typically and ~1e-5 at worst (measured), against the largest value because some curvatures are near 0.
    gradient_norm = np.linalg.norm(double.gradient, axis=1)
    well_posed = gradient_norm > 0.1 * np.median(gradient_norm)
    for name in ("mean", "gaussian", "k1", "k2"):
        expected = getattr(double, name)[well_posed]
        error = np.abs(getattr(single, name)[well_posed] - expected) / np.abs(expected).max()
        assert np.median(error) < 1e-6, name
        assert np.max(error) < 1e-4, name


@pytest.mark.parametrize("method", ["siren", "autograd"])
def test_batching_gives_the_same_curvatures_as_one_batch(small_siren, method):
    points = siren_points(100)
    whole = curvatures(small_siren, points, batch_size=len(points), dtype=torch.float64, method=method)
    pieces = curvatures(small_siren, points, batch_size=7, dtype=torch.float64, method=method)
    for name in ("value", "gradient", "mean", "gaussian", "k1", "k2"):
        np.testing.assert_allclose(getattr(pieces, name), getattr(whole, name), rtol=1e-10, err_msg=name)


def test_bad_inputs_raise_clear_value_errors(small_siren):
    with pytest.raises(ValueError, match=r"points must be \(n, 3\)"):
        curvatures(SphereSDF(0.5), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"\(n,\) values"):
        curvatures(nn.Linear(3, 1).double(), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="needs a Siren"):
        curvatures(SphereSDF(0.5), np.ones((4, 3)), method="siren")
    with pytest.raises(ValueError, match="batch_size"):
        curvatures(small_siren, np.ones((4, 3)), batch_size=0)


def test_curvature_convention_is_named_once():
    assert "kappa/2" in CURVATURE_CONVENTION and "outward" in CURVATURE_CONVENTION
    assert set(QUANTITIES) <= {name for name in dir(Curvatures) if not name.startswith("_")} | set(
        Curvatures.__dataclass_fields__
    )


def test_signed_colours_are_symmetric_white_at_zero_and_grey_for_nan():
    values = np.array([-3.0, -1.0, 0.0, 1.0, 2.0, np.nan, np.inf])
    rgba, (low, high) = colorize(values, "signed", percentile=100)
    assert rgba.dtype == np.float32 and rgba.shape == (7, 4)
    assert (low, high) == (-3.0, 3.0)
    np.testing.assert_allclose(rgba[2, :3], 0xF7 / 255, atol=1e-6)
    assert rgba[0, 2] > rgba[0, 0] and rgba[4, 0] > rgba[4, 2], "negative is blue, positive red"
    np.testing.assert_array_equal(rgba[5], NAN_COLOR)
    np.testing.assert_array_equal(rgba[6], NAN_COLOR)
    np.testing.assert_array_equal(rgba[:, 3], 1)


def test_robust_range_ignores_outliers_and_an_override_is_respected():
    values = np.concatenate([np.linspace(-1, 1, 1000), [500.0]])
    _, (low, high) = colorize(values, "signed")
    assert high == -low and 0.9 < high < 1.1
    rgba, value_range = colorize(values, "signed", value_range=(-0.5, 2.0))
    assert value_range == (-0.5, 2.0)
    np.testing.assert_allclose(rgba[0, :3], colorize(np.array([-0.5]), "signed", value_range=(-0.5, 2.0))[0][0, :3])
    np.testing.assert_allclose(rgba[-1, :3], np.array([0x67, 0x00, 0x1F]) / 255, atol=1e-6)
    with pytest.raises(ValueError, match="contain 0"):
        colorize(values, "signed", value_range=(0.5, 2.0))


def test_magnitude_colours_use_a_sequential_map():
    values = np.linspace(0.0, 10.0, 101)
    rgba, (low, high) = colorize(values, "magnitude", value_range=(0.0, 10.0))
    assert (low, high) == (0.0, 10.0)
    np.testing.assert_allclose(rgba[0, :3], np.array([0x44, 0x01, 0x54]) / 255, atol=1e-6)
    np.testing.assert_allclose(rgba[-1, :3], np.array([0xFD, 0xE7, 0x25]) / 255, atol=1e-6)
    luminance = rgba[:, :3] @ np.array([0.2126, 0.7152, 0.0722])
    assert (np.diff(luminance) > 0).all()
    _, (robust_low, robust_high) = colorize(values, "magnitude")
    assert 0.0 < robust_low < robust_high < 10.0


def test_ply_round_trip_keeps_fields_colours_and_faces(tmp_path):
    mesh = trimesh.creation.icosphere(subdivisions=1)
    result = curvatures(SphereSDF(1.0), mesh.vertices)
    colors, _ = colorize(result.mean, "signed")
    fields = {"mean": result.mean, "gaussian": result.gaussian, "k1": result.k1, "k2": result.k2}
    path = tmp_path / "curvature.ply"
    write_ply(path, mesh.vertices, mesh.faces, colors=colors, vertex_properties=fields, comments=[CURVATURE_CONVENTION])

    properties = read_ply_vertex_properties(path)
    assert list(properties) == ["x", "y", "z", "mean", "gaussian", "k1", "k2", "red", "green", "blue", "alpha"]
    for name, values in fields.items():
        np.testing.assert_allclose(properties[name], values, rtol=1e-7)
    np.testing.assert_array_equal(properties["red"], np.round(colors[:, 0] * 255).astype(np.uint8))

    loaded = trimesh.load(path, process=False)
    np.testing.assert_allclose(loaded.vertices, mesh.vertices, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(loaded.faces, mesh.faces)
    np.testing.assert_array_equal(loaded.visual.vertex_colors[:, 3], 255)
    with pytest.raises(ValueError, match="identifier"):
        write_ply(path, mesh.vertices, mesh.faces, vertex_properties={"red": result.mean})
