"""Ridge and valley lines (issue 17): third derivatives against closed forms and finite differences, the tracer on a
synthetic crest, an ellipsoid with distinct axes (whose one ridge is its middle principal ellipse, in the plane of
its two longest axes), its inside-out twin (the same line as a valley), a sphere (none), and the job."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.measure import marching_cubes
from torch import nn

from engine.conventions import Normalization
from engine.jobs import JOBS, JobContext
from engine.model import SDFModel
from engine.networks import Siren, SirenConfig
from engine.ridges import PrincipalDerivatives, mesh_edges, model_ridges, principal_derivatives, trace_lines
from engine.training import Cancelled
from tests.conftest import run_engine_cli
from tests.engine.test_geometry import SphereSDF, TorusSDF, torus_points

AXES = (0.9, 0.6, 0.35)


class Ellipsoid(nn.Module):
    """|x / axes| - 1: the ellipsoid as its zero set (not a distance, which curvature does not need)."""

    def __init__(self, axes=AXES, sign: float = 1.0):
        super().__init__()
        self.sign = sign
        self.register_buffer("axes", torch.tensor(axes, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sign * (((x / self.axes) ** 2).sum(-1).sqrt() - 1.0)


def surface_mesh(module: nn.Module, count: int = 64, half_size: float = 1.0):
    """Marching cubes of a module on a grid of ``count``^3 points over [-half_size, half_size]^3 (outward faces for
    f < 0 inside)."""
    axis = np.linspace(-half_size, half_size, count)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    with torch.no_grad():
        values = module(torch.from_numpy(grid)).numpy().reshape(count, count, count)
    vertices, faces, _, _ = marching_cubes(values, 0.0, spacing=(axis[1] - axis[0],) * 3)
    return vertices - half_size, faces


def ellipse_perimeter(a: float, b: float) -> float:
    """Ramanujan's second approximation (relative error ~1e-7 at these axes)."""
    h = ((a - b) / (a + b)) ** 2
    return np.pi * (a + b) * (1 + 3 * h / (10 + np.sqrt(4 - 3 * h)))


def test_curvature_gradients_match_the_torus_closed_form_and_finite_differences():
    major, minor = 0.8, 0.3
    points, q, v, u, rho = torus_points(major, [0.2, 0.3, 0.45])
    result = principal_derivatives(TorusSDF(major, minor), points)
    np.testing.assert_allclose(result.k1, 1 / q, rtol=1e-9)
    # k1 = 1/q, q the distance to the core circle: grad k1 = -grad q / q^2, grad q the unit vector from the circle.
    from_core = np.stack([np.cos(v) * np.cos(u), np.cos(v) * np.sin(u), np.sin(v)], axis=1)
    np.testing.assert_allclose(result.grad_k1, -from_core / q[:, None] ** 2, rtol=1e-8, atol=1e-8)
    # Every gradient against central differences of the field itself, on an ellipsoid (no umbilic near).
    ellipsoid = Ellipsoid()
    rng = np.random.default_rng(3)
    directions = rng.normal(size=(20, 3))
    on_surface = directions / np.linalg.norm(directions / np.array(AXES), axis=1, keepdims=True)
    points = on_surface * rng.uniform(0.8, 1.2, (20, 1))
    result = principal_derivatives(ellipsoid, points)
    step = 1e-5
    for axis in range(3):
        offset = np.zeros(3)
        offset[axis] = step
        ahead = principal_derivatives(ellipsoid, points + offset)
        behind = principal_derivatives(ellipsoid, points - offset)
        np.testing.assert_allclose(result.grad_k1[:, axis], (ahead.k1 - behind.k1) / (2 * step), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result.grad_k2[:, axis], (ahead.k2 - behind.k2) / (2 * step), rtol=1e-5, atol=1e-6)


def test_the_tracer_finds_a_synthetic_crest_whatever_the_signs_of_the_directions():
    """A flat grid whose k1 = 2 - (x - 0.3)^2 along t1 = x: one open ridge along x = 0.3, from y = 0 to y = 1."""
    s, t = np.meshgrid(np.linspace(0, 1, 11), np.linspace(0, 1, 9))
    vertices = np.stack([s.ravel(), t.ravel(), np.zeros(s.size)], axis=1)
    index = np.arange(s.size).reshape(9, 11)
    a, b, c, d = index[:-1, :-1].ravel(), index[:-1, 1:].ravel(), index[1:, 1:].ravel(), index[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    x = vertices[:, 0]
    signs = np.random.default_rng(0).choice([-1.0, 1.0], size=len(x))[:, None]
    derivatives = PrincipalDerivatives(
        k1=2 - (x - 0.3) ** 2,
        k2=np.zeros_like(x),
        dir1=signs * np.array([1.0, 0.0, 0.0]),
        dir2=np.tile([0.0, 1.0, 0.0], (len(x), 1)),
        grad_k1=np.stack([-2 * (x - 0.3), np.zeros_like(x), np.zeros_like(x)], axis=1),
        grad_k2=np.zeros((len(x), 3)),
    )
    (line,) = trace_lines(vertices, faces, derivatives, "ridge", min_length=0.1).lines()
    np.testing.assert_allclose(line[:, 0], 0.3, atol=1e-12)
    assert sorted([line[0, 1], line[-1, 1]]) == pytest.approx([0.0, 1.0])
    assert (np.diff(line[:, 1]) > 0).all() or (np.diff(line[:, 1]) < 0).all()  # chained in order
    assert len(trace_lines(vertices, faces, derivatives, "valley").lines()) == 0
    # A minimum of k1 is no ridge; a ridge where |k2| dominates is dropped; a short one too.
    assert len(trace_lines(vertices, faces, _replaced(derivatives, grad_k1=-derivatives.grad_k1), "ridge")) == 0
    assert len(trace_lines(vertices, faces, _replaced(derivatives, k2=np.full_like(x, -3.0)), "ridge")) == 0
    assert len(trace_lines(vertices, faces, derivatives, "ridge", min_length=0.8)) == 0
    # Weak lines: the crest's k1 (about 2) against the 90th percentile of |k| over the vertices (2 as well).
    assert len(trace_lines(vertices, faces, derivatives, "ridge", min_strength=0.9)) == 1
    assert len(trace_lines(vertices, faces, derivatives, "ridge", min_strength=1.1)) == 0


def _replaced(derivatives: PrincipalDerivatives, **changes) -> PrincipalDerivatives:
    fields = {name: getattr(derivatives, name) for name in PrincipalDerivatives.__dataclass_fields__}
    return PrincipalDerivatives(**{**fields, **changes})


def test_an_ellipsoids_ridge_is_its_principal_ellipse_across_the_shortest_axis():
    """Axes a > b > c: k1 (across the ellipse z = 0) is largest on that ellipse and falls off both ways, so that
    ellipse is the one ridge; the other principal ellipses carry minima of k1 or extrema of k2 > 0 (no valleys on a
    convex surface)."""
    vertices, faces = surface_mesh(Ellipsoid())
    model = SDFModel(Ellipsoid(), Normalization((0.0, 0.0, 0.0), 1.0))
    ridges, valleys = model_ridges(model, vertices, faces)
    assert len(valleys) == 0
    (loop,) = ridges.lines()
    assert ridges.closed.tolist() == [True]
    # Every traced point is on the principal plane z = 0 and (projected) on the surface: on the ellipse.
    assert np.abs(loop[:, 2]).max() < 2e-3
    np.testing.assert_allclose(np.linalg.norm(loop / np.array(AXES), axis=1), 1.0, atol=1e-6)
    assert ridges.lengths()[0] == pytest.approx(ellipse_perimeter(*AXES[:2]), rel=5e-3)
    # All the way round: every direction in the plane is reached.
    angles = np.sort(np.arctan2(loop[:, 1] / AXES[1], loop[:, 0] / AXES[0]))
    assert np.diff(np.concatenate([angles, [angles[0] + 2 * np.pi]])).max() < 0.1


def test_inside_out_the_ridge_becomes_a_valley_and_a_sphere_has_neither():
    cavity = Ellipsoid(sign=-1.0)
    vertices, faces = surface_mesh(Ellipsoid())
    model = SDFModel(cavity, Normalization((0.0, 0.0, 0.0), 1.0))
    ridges, valleys = model_ridges(model, vertices, faces[:, ::-1])
    assert len(ridges) == 0 and len(valleys) == 1
    assert np.abs(valleys.points[:, 2]).max() < 2e-3
    assert valleys.lengths()[0] == pytest.approx(ellipse_perimeter(*AXES[:2]), rel=5e-3)

    sphere = SDFModel(SphereSDF(0.7), Normalization((0.0, 0.0, 0.0), 1.0))
    ridges, valleys = model_ridges(sphere, *surface_mesh(sphere.network, 32))
    assert len(ridges) == len(valleys) == 0


def test_mesh_edges_are_unique_and_each_face_knows_its_own():
    faces = np.array([[0, 1, 2], [2, 1, 3]])
    edges, face_edges = mesh_edges(faces)
    assert edges.tolist() == [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]]
    for face, own in zip(faces, face_edges):
        assert [sorted(edges[e]) for e in own] == [sorted([face[k], face[(k + 1) % 3]]) for k in range(3)]


def test_the_ridges_job_on_a_small_siren_outputs_consistent_polylines_and_stops_when_cancelled(tmp_path):
    torch.manual_seed(1)
    network = Siren(SirenConfig(hidden_features=32, hidden_layers=2, first_omega=6.0))
    with torch.no_grad():  # a zero level set through the origin: a random network is all bumps around it
        network.output.bias -= network(torch.zeros(1, 3))
    path = tmp_path / "model.pt"
    SDFModel(network, Normalization((0.5, 0.0, 0.0), 1.2)).save(path)
    spec = JOBS["ridges"].from_params({"model": str(path), "resolution": 24, "min_length": 0.0})
    output = spec.run({}, JobContext(tmp_path))
    for kind in ("ridge", "valley"):
        points, offsets, closed = (output.arrays[f"{kind}_{name}"] for name in ("points", "offsets", "closed"))
        assert points.dtype == np.float64 and points.shape[1] == 3 and np.isfinite(points).all()
        assert offsets[0] == 0 and offsets[-1] == len(points) and (np.diff(offsets) >= 2).all()
        assert len(closed) == len(offsets) - 1 == output.summary[f"{kind}_lines"]
    assert output.summary["ridge_lines"] + output.summary["valley_lines"] > 0
    with pytest.raises(Cancelled):
        spec.run({}, JobContext(tmp_path, should_cancel=lambda: True))
    with pytest.raises(ValueError, match="min_length"):
        JOBS["ridges"].from_params({"model": "m.pt", "min_length": 2.0})


def test_the_ridges_command_writes_an_obj_of_polylines(tmp_path):
    torch.manual_seed(1)
    network = Siren(SirenConfig(hidden_features=32, hidden_layers=2, first_omega=6.0))
    with torch.no_grad():
        network.output.bias -= network(torch.zeros(1, 3))
    SDFModel(network, Normalization((0.0, 0.0, 0.0), 1.0)).save(tmp_path / "model.pt")
    done = run_engine_cli("ridges", tmp_path / "model.pt", "-o", tmp_path / "lines.obj", "--resolution", 24,
                          "--min-strength", 0)  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "lines.obj").read_text().splitlines()
    assert text.count("o ridges") == 1 and text.count("o valleys") == 1
    vertices = [line for line in text if line.startswith("v ")]
    polylines = [list(map(int, line.split()[1:])) for line in text if line.startswith("l ")]
    assert polylines and all(len(indices) >= 2 and max(indices) <= len(vertices) for indices in polylines)
    ridges, valleys = (int(word) for word in done.stdout.split(":")[-1].split() if word.isdigit())
    assert ridges + valleys == len(polylines)
