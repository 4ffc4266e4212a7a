"""Vertex tracking (issue 17, "Animated meshes with one topology"): the first frame's mesh carried along an evolution
against analytic fields f(x, t) whose zero sets are known at every time: the sphere law of mean curvature flow, a
sphere shrinking past its extinction, Cassini ovals pinching in two, an inside-out sphere, a stretch; then a tiny
trained evolution and the evolve job's and the CLI's tracked frames."""

import json
import math

import numpy as np
import pytest
import torch
import trimesh

from engine.conventions import Normalization
from engine.evolution import EvolveConfig, evolve
from engine.fields import TIME_KEY, extract_frames
from engine.fit import fit_sdf, preset
from engine.jobs import JobContext
from engine.jobs.evolve import EvolveJob
from engine.mesh_io import check_mesh
from engine.model import SDFModel, load_model
from engine.surface_flows import Flow
from engine.training import Cancelled
from engine.vertex_tracking import TrackingConfig, mesh_topology, track_vertices
from tests.conftest import run_engine_cli

CENTER = np.array([1.0, -0.5, 2.0])
SCALE = 1.25
"""Input to unit cube: (x - CENTER) * SCALE; radii below are in input units."""
RESOLUTION = 32


class AnalyticField(torch.nn.Module):
    """f(x, tau) from a function of (unit points, time t = tau * time_scale); a parameter so that extraction finds a
    device."""

    def __init__(self, function, time_scale: float):
        super().__init__()
        self.function, self.time_scale = function, time_scale
        self.unused = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.function(inputs[:, :3], inputs[:, 3] * self.time_scale)


def analytic_model(function, time_range: tuple[float, float]) -> SDFModel:
    time_scale = max(abs(time_range[0]), abs(time_range[1]))
    metadata = {TIME_KEY: {"time_scale": time_scale, "time_range": list(time_range)}}
    return SDFModel(AnalyticField(function, time_scale), Normalization(tuple(CENTER), SCALE), metadata)


def law_radius(r0: float, speed: float, t: float) -> float:
    """Mean curvature flow of a sphere (kappa = 2 / r, engine.conventions): r(t) = sqrt(r0^2 - 4 lambda t)."""
    return math.sqrt(r0**2 - 4 * speed * t)


def sphere_law(r0: float, speed: float):
    """|x| - r(t) in unit coordinates; past extinction f = |x| + sqrt(4 lambda t - r0^2) > 0: no surface."""

    def function(points, t):
        squared = (r0**2 - 4 * speed * t) * SCALE**2
        return points.norm(dim=-1) - torch.sign(squared) * squared.abs().sqrt()

    return function


def cassini(a: float, b_start: float, b_end: float):
    """Cassini ovals of revolution about x, (|p|^2 + a^2)^2 - 4 a^2 x^2 = b^4 with b from b_start at t = 0 to b_end at
    t = 1: one surface for b > a, pinched at b = a, two for b < a."""

    def function(points, t):
        b = b_start + (b_end - b_start) * t
        return ((points * points).sum(-1) + a**2) ** 2 - 4 * a**2 * points[:, 0] ** 2 - b**4

    return function


def first_frame(model, times, resolution=RESOLUTION):
    frames = extract_frames(model, times, resolution)
    return frames, frames[0].vertices, frames[0].faces


def test_every_tracked_vertex_follows_the_sphere_law_along_its_ray():
    r0, speed = 0.6, 1.0
    end = 0.8 * r0**2 / 4  # 80 % of the extinction time: r from 0.6 to 0.27
    times = list(np.linspace(0.0, end, 6)) + [0.0]  # and straight back: one frame of a large jump out
    model = analytic_model(sphere_law(r0, speed), (0.0, end))
    frames, vertices, faces = first_frame(model, times)
    tracked = track_vertices(model, vertices, faces, times, RESOLUTION, frames=frames)
    assert tracked.stop is None and tracked.positions.shape == (len(times), len(vertices), 3)
    np.testing.assert_array_equal(tracked.faces, faces)
    directions = (vertices - CENTER) / np.linalg.norm(vertices - CENTER, axis=1, keepdims=True)
    for t, positions in zip(tracked.times, tracked.positions):
        offsets = positions - CENTER
        radii = np.linalg.norm(offsets, axis=1)
        np.testing.assert_allclose(radii, law_radius(r0, speed, t), atol=1e-5)
        # Normal motion of a sphere is radial: each vertex stays on its ray from the centre.
        np.testing.assert_allclose(offsets / radii[:, None], directions, atol=1e-4)
    # The jump back from r = 0.27 to 0.6 is 5 grid spacings: it took sub-steps.
    assert tracked.measures[-1]["substeps"] > 1
    assert all(m["distance"] <= TrackingConfig().tolerance for m in tracked.measures)


def test_a_sphere_shrinking_past_extinction_stops_where_it_vanishes():
    r0, speed = 0.6, 1.0
    extinction = r0**2 / (4 * speed)
    times = [0.0, 0.3 * extinction, 0.6 * extinction, 0.9 * extinction, 1.1 * extinction, 1.3 * extinction]
    model = analytic_model(sphere_law(r0, speed), (0.0, times[-1]))
    frames, vertices, faces = first_frame(model, times)
    assert [mesh_topology(f.vertices, f.faces) for f in frames] == [(1, 2)] * 4 + [(0, 0)] * 2
    tracked = track_vertices(model, vertices, faces, times, RESOLUTION, frames=frames)
    assert (tracked.stop.frame, tracked.stop.reason) == (4, "topology") and "vanished" in tracked.stop.message
    assert len(tracked.positions) == len(tracked.times) == 4 and tracked.stop.time == times[4]
    radii = np.linalg.norm(tracked.positions[3] - CENTER, axis=1)
    np.testing.assert_allclose(radii, law_radius(r0, speed, times[3]), atol=1e-5)
    # Without the extracted frames Newton's method finds no surface to land on.
    alone = track_vertices(model, vertices, faces, times, RESOLUTION)
    assert (alone.stop.frame, alone.stop.reason) == (4, "not_converged") and len(alone.positions) == 4


def test_cassini_ovals_pinching_in_two_stop_at_the_first_split_frame():
    a = 0.35 * SCALE
    model = analytic_model(cassini(a, 1.4 * a, 0.6 * a), (0.0, 1.0))
    times = [0.0, 0.25, 0.375, 0.5625, 0.75]  # b / a = 1.4, 1.2, 1.1, 0.95, 0.8
    frames, vertices, faces = first_frame(model, times, resolution=40)
    assert [mesh_topology(f.vertices, f.faces) for f in frames] == [(1, 2)] * 3 + [(2, 4)] * 2
    tracked = track_vertices(model, vertices, faces, times, 40, frames=frames)
    assert (tracked.stop.frame, tracked.stop.reason) == (3, "topology") and len(tracked.positions) == 3
    assert "2 connected component(s) and Euler characteristic 4, the first frame 1 and 2" in tracked.stop.message
    # The carried mesh alone sees it too: its triangles across the gap have their centres far off the surface.
    alone = track_vertices(model, vertices, faces, times, 40)
    assert (alone.stop.frame, alone.stop.reason) == (3, "off_surface") and len(alone.positions) == 3
    assert all(m["centre_distance"] < 0.1 for m in alone.measures[:3]) and alone.measures[3]["centre_distance"] > 1


def test_a_surface_turned_inside_out_flips_every_triangle():
    # f = (1 - 2t)(|x| - r): the same sphere at t = 1 with grad f inward (at t = 0.5 f vanishes everywhere).
    model = analytic_model(lambda points, t: (1 - 2 * t) * (points.norm(dim=-1) - 0.5), (0.0, 1.0))
    frames, vertices, faces = first_frame(model, [0.0, 0.25, 1.0])
    tracked = track_vertices(model, vertices, faces, [0.0, 0.25, 1.0], RESOLUTION, frames=frames)
    assert (tracked.stop.frame, tracked.stop.reason) == (2, "flipped")
    assert tracked.stop.message == (
        f"at t = 1: {len(faces)} of {len(faces)} triangles turned against the surface's normal"
    )


@pytest.mark.parametrize(
    "config, reason",
    [(TrackingConfig(min_area_share=0.9), "collapsed"), (TrackingConfig(max_edge_ratio=1.3), "crowded")],
    ids=["collapsed", "crowded"],
)
def test_a_stretch_stops_when_triangles_collapse_or_vertices_crowd_beyond_the_limits(config, reason):
    # A sphere drawn out along z (x, y shrink by a, z grows by a): normal motion packs the vertices unevenly.
    def stretch(points, t):
        a = 1 + 0.3 * t
        return (points * torch.stack([a, a, 1 / a], -1)).norm(dim=-1) - 0.4

    model = analytic_model(stretch, (0.0, 1.0))
    times = [0.0, 0.5, 1.0]
    frames, vertices, faces = first_frame(model, times)
    default = track_vertices(model, vertices, faces, times, RESOLUTION, frames=frames)
    assert default.stop is None  # within the default limits
    area_share, edge_ratio = default.measures[1]["area_share"], default.measures[1]["edge_ratio"]
    assert area_share < 0.9 and edge_ratio > 1.3 and default.measures[0]["edge_ratio"] == pytest.approx(1.0)
    tracked = track_vertices(model, vertices, faces, times, RESOLUTION, config, frames=frames)
    assert (tracked.stop.frame, tracked.stop.reason) == (1, reason) and len(tracked.positions) == 1


def test_mesh_topology_counts_components_and_the_euler_characteristic():
    sphere, torus = trimesh.creation.icosphere(2), trimesh.creation.torus(1.0, 0.3)
    two = trimesh.util.concatenate([sphere, trimesh.creation.icosphere(1).apply_translation([3.0, 0.0, 0.0])])
    assert mesh_topology(sphere.vertices, sphere.faces) == (1, 2)
    assert mesh_topology(torus.vertices, torus.faces) == (1, 0)
    assert mesh_topology(two.vertices, two.faces) == (2, 4)
    assert mesh_topology(np.zeros((0, 3)), np.zeros((0, 3), dtype=int)) == (0, 0)


def test_bad_inputs_are_refused_before_any_work():
    model = analytic_model(sphere_law(0.6, 1.0), (0.0, 0.05))
    _, vertices, faces = first_frame(model, [0.0])
    with pytest.raises(ValueError, match="needs a time-dependent model"):
        track_vertices(SDFModel(model.network, model.normalization), vertices, faces, [0.0], RESOLUTION)
    with pytest.raises(ValueError, match=r"vertices must be a non-empty \(n, 3\) array"):
        track_vertices(model, np.zeros((0, 3)), faces, [0.0], RESOLUTION)
    with pytest.raises(ValueError, match="NaN or infinite"):
        track_vertices(model, np.where(np.arange(len(vertices))[:, None] == 3, np.nan, vertices), faces, [0.0], 32)
    with pytest.raises(ValueError, match="faces index vertices outside"):
        track_vertices(model, vertices, faces + len(vertices), [0.0], RESOLUTION)
    with pytest.raises(ValueError, match=r"outside the trained range \[0.0, 0.05\]"):
        track_vertices(model, vertices, faces, [0.0, 0.1], RESOLUTION)
    with pytest.raises(ValueError, match="2 extracted frames were given for 1 times"):
        track_vertices(model, vertices, faces, [0.0], RESOLUTION, frames=extract_frames(model, [0.0, 0.05], 16))
    with pytest.raises(ValueError, match="resolution must be an integer of at least 8"):
        track_vertices(model, vertices, faces, [0.0], 4)
    # A mesh that is not the surface at the first time (here the sphere at twice its radius).
    with pytest.raises(ValueError, match="first frame's mesh lies up to .* grid spacings from the zero set"):
        track_vertices(model, CENTER + 2 * (vertices - CENTER), faces, [0.0], RESOLUTION)
    with pytest.raises(ValueError, match="max_edge_ratio > 1"):
        TrackingConfig(max_edge_ratio=1.0)
    with pytest.raises(ValueError, match="newton_steps must be at least 1"):
        TrackingConfig(newton_steps=0)
    with pytest.raises(Cancelled):
        track_vertices(model, vertices, faces, [0.0, 0.05], RESOLUTION, should_cancel=lambda: True)


@pytest.fixture(scope="module")
def sphere_model_file(tmp_path_factory):
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    model = fit_sdf(check_mesh(sphere.vertices + CENTER, sphere.faces, name="Sphere"), preset("tiny", steps=150))
    path = tmp_path_factory.mktemp("track") / "model.pt"
    model.save(path)
    return path


@pytest.mark.slow
def test_a_trained_mean_curvature_flow_is_tracked_along_the_sphere_law(sphere_model_file):
    speed, r0 = 0.01, 0.5
    end = r0**2 / (4 * speed) / 2  # half the extinction time
    config = EvolveConfig(steps=300, pool_size=40_000, device="cpu")
    evolved = evolve(load_model(sphere_model_file), Flow(mean_curvature=speed), (0.0, end), config)
    times = list(np.linspace(0.0, end, 5))
    frames = extract_frames(evolved, times, 48)
    tracked = track_vertices(evolved, frames[0].vertices, frames[0].faces, times, 48, frames=frames)
    assert tracked.stop is None
    for t, positions, frame in zip(times, tracked.positions, frames):
        radii = np.linalg.norm(positions - CENTER, axis=1)
        assert abs(radii.mean() - law_radius(r0, speed, t)) < 0.01 * r0, t
        assert abs(radii.mean() - np.linalg.norm(frame.vertices - CENTER, axis=1).mean()) < 0.002 * r0, t


def test_the_evolve_job_tracks_the_first_frame_on_the_evolutions_surface(sphere_model_file, tmp_path):
    speed, times = 0.01, (0.0, 1.0, 2.0)
    flow = {"mean_curvature": speed}
    job = EvolveJob(str(sphere_model_file), flow, times, steps=30, resolution=24, track_vertices=True)
    output = job.run({}, JobContext(output_dir=tmp_path))
    arrays, tracking = output.arrays, output.summary["tracking"]
    assert tracking["stop"] is None and tracking["frames"] == 3
    np.testing.assert_array_equal(arrays["tracked_faces"], arrays["faces_0"])
    positions = arrays["tracked_positions"]
    assert positions.shape == (3, len(arrays["vertices_0"]), 3) and positions.dtype == np.float64
    for index, t in enumerate(times):
        # The tracked frame and the extracted one are the same surface: equal mean radii to the grid's error.
        carried, extracted = (
            np.linalg.norm(v - CENTER, axis=1).mean() for v in (positions[index], arrays[f"vertices_{index}"])
        )
        assert carried == pytest.approx(extracted, abs=0.005), (t, carried, extracted)
    assert np.linalg.norm(positions[-1] - CENTER, axis=1).mean() < np.linalg.norm(positions[0] - CENTER, axis=1).mean()
    untracked = EvolveJob(str(sphere_model_file), flow, times, steps=2, resolution=16)
    assert "tracked_positions" not in untracked.run({}, JobContext(output_dir=tmp_path)).arrays


def test_cli_evolve_track_vertices_writes_the_tracked_frames(sphere_model_file, tmp_path):
    out = tmp_path / "evolution"
    result = run_engine_cli(
        "evolve", sphere_model_file, "--flow", "mcf", "--speed", "0.01", "--times", "0,1,2", "-o", out,
        "--steps", "20", "--resolution", "24", "--track-vertices",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "times.json").read_text())
    tracking = report["tracking"]
    assert tracking["stop"] is None and tracking["files"] == [f"tracked_{i:04d}.ply" for i in range(3)]
    first = trimesh.load(out / "frame_0000.ply", process=False)
    for name in report["tracking"]["files"]:
        tracked = trimesh.load(out / name, process=False)
        np.testing.assert_array_equal(tracked.faces, first.faces)
        assert len(tracked.vertices) == len(first.vertices)
