"""Surface evolution against the analytic laws: the sphere under mean curvature flow, constant normal speed, rigid
rotation; the exact start f(., t) = g; sharpening stays bounded; the CLI writes its frames."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import trimesh

from engine.conventions import Normalization
from engine.evolution import EvolveConfig, evolve, load_evolution, save_evolution, time_dependent_copy
from engine.fields import at_time, extract_frames
from engine.fit import fit_sdf, preset
from engine.geometry import model_curvatures
from engine.mesh_io import check_mesh
from engine.metrics import mesh_metrics
from engine.networks import Siren, SirenConfig
from engine.surface_flows import MAX_ZOOM, SHARPEN_LIMIT, FieldTerm, Flow, extinction_time, room_for_motion
from engine.training import Cancelled
from tests.conftest import run_engine_cli

RADIUS = 0.5
CENTER = np.array([1.0, -0.5, 2.0])
SMALL = EvolveConfig(steps=300, pool_size=40_000, extra_width=32)


@pytest.fixture(scope="module")
def sphere_model():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=RADIUS)
    return fit_sdf(check_mesh(sphere.vertices + CENTER, sphere.faces, name="Sphere"), preset("tiny", steps=400))


@pytest.fixture(scope="module")
def ellipsoid_model():
    ellipsoid = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    vertices = ellipsoid.vertices * [0.6, 0.3, 0.2]
    return fit_sdf(check_mesh(vertices, ellipsoid.faces, name="Ellipsoid"), preset("tiny", steps=400))


def zero_set_radii(model, t: float, directions=None, center=CENTER, reach=2 * RADIUS) -> np.ndarray:
    """Distance from ``center`` to the zero level set of f(., t) along unit ``directions`` (default 200 random ones),
    by bisection between 0.02 and ``reach``."""
    if directions is None:
        directions = np.random.default_rng(1).normal(size=(200, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    count = len(directions)
    shape = at_time(model, t)
    low, high = np.full(count, 0.02), np.full(count, reach)
    for _ in range(40):
        middle = (low + high) / 2
        inside = shape.sdf(center + directions * middle[:, None]) < 0
        low, high = np.where(inside, middle, low), np.where(inside, high, middle)
    return (low + high) / 2


def test_the_time_dependent_copy_equals_the_fit_at_every_time():
    torch.manual_seed(0)
    network = Siren(SirenConfig(hidden_features=32, hidden_layers=2))
    points = torch.rand(500, 3) * 2 - 1
    expected = network(points)
    for extra in (0, 16):
        copy = time_dependent_copy(network, extra)
        assert copy.config.in_features == 4 and copy.config.hidden_features == 32 + extra
        for t in (-1.0, 0.0, 0.3, 1.0):
            value = copy(torch.cat([points, torch.full((500, 1), t)], dim=1))
            torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("flow", [Flow(mean_curvature=0.01), Flow(normal_speed=0.2)], ids=["curvature", "offset"])
def test_training_cannot_move_the_start(sphere_model, flow):
    # A learning rate far too high wrecks f at t != 0; f(., 0) must still be g (the copy and the fresh correction).
    wild = dataclasses.replace(SMALL, steps=5, learning_rate=0.1, pool_size=2000)
    evolved = evolve(sphere_model, flow, (0.0, 1.0), wild)
    points = CENTER + np.random.default_rng(2).uniform(-0.5, 0.5, (2000, 3))  # inside the fitted cube
    np.testing.assert_allclose(at_time(evolved, 0.0).sdf(points), sphere_model.sdf(points), atol=2e-5)
    assert np.abs(at_time(evolved, 1.0).sdf(points) - sphere_model.sdf(points)).max() > 1e-3


def test_the_evolution_cube_grows_only_for_flows_that_grow_the_shape():
    unit = Normalization((0.0, 0.0, 0.0), 1.0)
    assert room_for_motion(Flow(mean_curvature=1.0), unit, (0.0, 1.0)) == 1.0
    # Sharpening to the limit: reach x (1 + 1/4) (a full-size bunny fit reached 1.248 times its half-size).
    limit = SHARPEN_LIMIT * extinction_time(unit, 1.0)
    assert room_for_motion(Flow(mean_curvature=1.0), unit, (-limit, 1.0)) == pytest.approx(1 + SHARPEN_LIMIT)
    assert room_for_motion(Flow(normal_speed=0.09), unit, (0.0, 1.0)) == pytest.approx(1.1)
    assert room_for_motion(Flow(normal_speed=-0.09), unit, (-1.0, 0.0)) == pytest.approx(1.1)
    assert room_for_motion(Flow(normal_speed=100.0), unit, (0.0, 1.0)) == MAX_ZOOM
    # A quarter turn takes the box's corners (0.9, 0.9) to radius 0.9 sqrt(2) on an axis.
    quarter_turn = Flow(fields=(FieldTerm("rotation", (0.0, 0.0, 0.0), math.pi / 2),))
    assert room_for_motion(quarter_turn, unit, (0.0, 1.0)) == pytest.approx(math.sqrt(2), rel=1e-3)


def test_a_grown_cube_holds_no_stray_surface_where_the_fit_was_never_trained(sphere_model):
    # Untrained (one step at a negligible rate): the start itself must be clean, before training shapes anything.
    untrained = dataclasses.replace(SMALL, steps=1, learning_rate=1e-12)
    evolved = evolve(sphere_model, Flow(normal_speed=0.3), (0.0, 1.0), untrained)
    assert evolved.metadata["evolution"]["zoom"] > 1.5
    (start,) = extract_frames(evolved, [0.0], resolution=48)
    assert len(trimesh.Trimesh(start.vertices, start.faces).split(only_watertight=False)) == 1
    np.testing.assert_allclose(np.linalg.norm(start.vertices - CENTER, axis=1).max(), RADIUS, atol=0.03)


def test_beyond_the_fitted_cube_an_offset_reads_its_field_at_the_nearest_point_of_that_cube(sphere_model, tmp_path):
    # Out there the fit (and its trained copy) hold untrained noise: f(x, t) = f(c(x), t) + |x - c(x)|, c(x) the
    # nearest point of the fitted cube, so no stray shell can grow where the fit never looked.
    evolved = evolve(sphere_model, Flow(normal_speed=0.3), (0.0, 1.0), dataclasses.replace(SMALL, steps=20))
    network, half = evolved.network, evolved.network.fitted_half_size
    assert network.correction_is_copy and half < 0.8
    points = torch.as_tensor(np.random.default_rng(5).uniform(-1.0, 1.0, size=(4000, 3)), dtype=torch.float32)
    points = points[(points.abs() > half).any(dim=1)]
    nearest = points.clamp(-half, half)
    for tau in (0.5, 1.0):
        taus = torch.full((len(points), 1), tau)
        with torch.no_grad():
            far = network(torch.cat([points, taus], dim=1))
            near = network(torch.cat([nearest, taus], dim=1))
        torch.testing.assert_close(far, near + (points - nearest).norm(dim=1), atol=1e-5, rtol=0)
    save_evolution(evolved, tmp_path / "offset.pt")  # the file says so (files before it keep their own values)
    again = load_evolution(tmp_path / "offset.pt")
    assert again.network.copy_read_at_cube and again.metadata["evolution"]["copy_read_at_cube"] is True


def test_mean_curvature_flow_of_a_sphere_follows_the_sphere_law(sphere_model, tmp_path):
    speed = 0.01
    half_extinction = RADIUS**2 / (4 * speed) / 2
    evolved = evolve(sphere_model, Flow(mean_curvature=speed), (0.0, half_extinction), SMALL)
    save_evolution(evolved, tmp_path / "evolution.pt")
    reloaded = load_evolution(tmp_path / "evolution.pt")
    for t in np.linspace(0, half_extinction, 5):
        radii = zero_set_radii(reloaded, t)
        expected = math.sqrt(RADIUS**2 - 4 * speed * t)
        assert abs(radii.mean() - expected) < 0.01 * RADIUS, (t, radii.mean(), expected)
        assert radii.std() < 0.01 * RADIUS


def test_constant_normal_speed_moves_the_surface_by_speed_times_time(sphere_model):
    speed = 0.2
    evolved = evolve(sphere_model, Flow(normal_speed=speed), (-0.5, 0.5), SMALL)
    for t in (-0.5, 0.0, 0.25, 0.5):
        radii = zero_set_radii(evolved, t)
        assert abs(radii.mean() - (RADIUS + speed * t)) < 0.01 * RADIUS, (t, radii.mean())


def test_a_source_pushes_the_surface_along_its_characteristic():
    """On the axis through the source the field is along the axis, so the surface point there moves by the ODE
    x' = V(x), integrated here with small Euler steps."""
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.8)
    model = fit_sdf(check_mesh(sphere.vertices, sphere.faces, name="Sphere"), preset("tiny", steps=400))
    source = FieldTerm("source", center=(0.4, 0.0, 0.0), strength=1.0, radius=0.4)
    evolved = evolve(model, Flow(fields=(source,)), (0.0, 0.25), SMALL)
    position, step = 0.8, 1e-4
    for _ in range(2500):
        position += step * source.velocity(torch.tensor([[position, 0.0, 0.0]], dtype=torch.float64))[0, 0].item()
    # The surface leaves the fit's cube (x = 0.8 * 1.0 / 0.9): the evolution's cube grew to hold it.
    assert evolved.metadata["evolution"]["zoom"] > 1.2 and position > 0.9
    crossing = zero_set_radii(evolved, 0.25, np.array([[1.0, 0.0, 0.0]]), np.zeros(3), reach=1.5)[0]
    assert abs(crossing - position) < 0.01, (crossing, position)


def test_a_rigid_rotation_keeps_the_shape(ellipsoid_model):
    angle = math.pi / 2
    rotation = FieldTerm("rotation", center=(0.0, 0.0, 0.0), strength=angle, axis=(0.0, 0.0, 1.0))
    evolved = evolve(ellipsoid_model, Flow(fields=(rotation,)), (0.0, 1.0), SMALL)
    start, end = extract_frames(evolved, [0.0, 1.0], resolution=64)
    turned = start.vertices @ np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # +90 degrees about z
    fit_error = mesh_metrics(start.vertices, start.faces, start.vertices, start.faces).chamfer_l1
    rotated = mesh_metrics(end.vertices, end.faces, turned, start.faces)
    unrotated = mesh_metrics(end.vertices, end.faces, start.vertices, start.faces)
    assert rotated.chamfer_l1 < 0.01, rotated
    assert unrotated.chamfer_l1 > 5 * rotated.chamfer_l1 + fit_error
    assert rotated.iou > 0.85


def test_sharpening_stays_bounded_down_to_the_documented_limit(ellipsoid_model):
    speed = 0.002
    limit = SHARPEN_LIMIT * extinction_time(ellipsoid_model.normalization, speed)
    evolved = evolve(ellipsoid_model, Flow(mean_curvature=speed), (-limit, 0.0), dataclasses.replace(SMALL, steps=150))
    start, end = extract_frames(evolved, [0.0, -limit], resolution=64)
    assert np.isfinite(end.vertices).all() and len(end.faces) > 0.5 * len(start.faces)
    assert len(trimesh.Trimesh(end.vertices, end.faces).split(only_watertight=False)) == 1
    # Backward flow moves no point faster than lambda * max |kappa| of the start shape: nothing blows up beyond that.
    reach = speed * np.abs(model_curvatures(ellipsoid_model, start.vertices).kappa).max() * limit
    low, high = start.vertices.min(0), start.vertices.max(0)
    assert (end.vertices.min(0) > low - reach).all() and (end.vertices.max(0) < high + reach).all()
    assert (end.vertices.max(0) - end.vertices.min(0) >= 0.95 * (high - low)).all()
    with pytest.raises(ValueError, match="only stable down to"):
        evolve(ellipsoid_model, Flow(mean_curvature=speed), (-2 * limit, 0.0), SMALL)


def test_bad_flows_and_ranges_are_refused(sphere_model):
    with pytest.raises(ValueError, match="moves nothing"):
        Flow()
    with pytest.raises(ValueError, match="negative times"):
        Flow(mean_curvature=-1.0)
    with pytest.raises(ValueError, match="positive radius"):
        FieldTerm("source", (0.0, 0.0, 0.0), 1.0, radius=0.0)
    with pytest.raises(ValueError, match="contain t = 0"):
        evolve(sphere_model, Flow(normal_speed=1.0), (0.5, 1.0), SMALL)
    evolved = evolve(sphere_model, Flow(normal_speed=0.1), (0.0, 1.0), EvolveConfig(steps=2, pool_size=1000))
    with pytest.raises(ValueError, match="outside the trained range"):
        extract_frames(evolved, [2.0])


def test_cancel_stops_the_evolution(sphere_model):
    with pytest.raises(Cancelled):
        evolve(sphere_model, Flow(normal_speed=0.1), (0.0, 1.0), SMALL, should_cancel=lambda: True)


def test_a_vanished_surface_gives_an_empty_frame(sphere_model):
    evolved = evolve(sphere_model, Flow(normal_speed=-2.0), (0.0, 1.0), dataclasses.replace(SMALL, steps=100))
    (frame,) = extract_frames(evolved, [1.0], resolution=32)
    assert len(frame.vertices) == 0 and len(frame.faces) == 0


def test_cli_evolve_writes_frames_times_and_the_model(sphere_model, tmp_path):
    sphere_model.save(tmp_path / "model.pt")
    fields = [{"kind": "source", "center": CENTER.tolist(), "strength": 0.2, "radius": 0.3}]
    (tmp_path / "fields.json").write_text(json.dumps(fields))
    out = tmp_path / "evolution"
    result = run_engine_cli(
        "evolve", tmp_path / "model.pt", "--flow", "field", "--fields", tmp_path / "fields.json",
        "--times", "0,0.5,1", "-o", out, "--steps", "20", "--resolution", "32", "--curvature", "mean",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "times.json").read_text())
    assert report["times"] == [0.0, 0.5, 1.0] and report["frames"] == [f"frame_{i:04d}.ply" for i in range(3)]
    for name in report["frames"]:
        mesh = trimesh.load(out / name, process=False)
        assert len(mesh.faces) > 0 and mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)
    assert load_evolution(out / "evolution.pt").metadata["evolution"]["time_range"] == [0.0, 1.0]

    failed = run_engine_cli("evolve", tmp_path / "model.pt", "--flow", "mcf", "--times", "0,1", "-o", out)
    assert failed.returncode == 2 and "--flow mcf takes --speed" in failed.stderr


class _Offset(torch.nn.Module):
    """f(x, tau) = |x| - 0.5 - c tau: a sphere shrinking at speed c, every level set a sphere."""

    def __init__(self, speed: float):
        super().__init__()
        self.speed = speed

    def forward(self, inputs):
        return inputs[:, :3].norm(dim=-1) - 0.5 - self.speed * inputs[:, 3]


def test_first_order_flows_train_every_level_set_and_curvature_flows_the_band_only():
    from engine.evolution import evolution_loss
    from engine.surface_flows import UnitFlow

    identity = Normalization(center=(0.0, 0.0, 0.0), scale=1.0)
    # Far level sets (|f| = 0.3, six bands away) of a still f: normal speed 0.1 leaves the residual 0 + 0.1 |grad f|.
    far = torch.tensor([[0.8, 0.0, 0.0, 0.2], [0.0, -0.8, 0.0, -0.5], [0.0, 0.0, 0.8, 0.9]])
    speed = UnitFlow(Flow(normal_speed=0.1), identity, 1.0)
    assert float(evolution_loss(_Offset(0.0), speed, far, band=0.05)) == pytest.approx(0.01, rel=1e-5)
    # Mean curvature flow: kappa |grad f| = 2 / |x| there; the band's weight sech^2(6)^2 leaves ~1e-10 of it.
    curvature = UnitFlow(Flow(mean_curvature=0.01), identity, 1.0)
    assert float(evolution_loss(_Offset(0.0), curvature, far, band=0.05)) < 1e-12
    near = far.clone()
    near[:, :3] *= 0.5 / 0.8
    assert float(evolution_loss(_Offset(0.0), curvature, near, band=0.05)) == pytest.approx(0.04**2, rel=1e-4)
