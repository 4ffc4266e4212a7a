"""Preview renders (issue 15): depth and normals against the analytic ray-sphere intersection (perspective and
orthographic, a camera moved and turned, a model normalization that is not the identity), rays that miss the cube,
multiscale against single-scale on a nested analytic stack, the output files, and bad camera files refused."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from engine.conventions import Normalization
from engine.render import RENDER_FILES, RenderSettings, render, write_render
from engine.render_camera import camera_from_dict, camera_rays, load_camera
from engine.render_levels import LevelStack, coarse_first, level_stack, local_reaches

CENTER = np.array([1.0, -2.0, 0.5])
RADIUS = 1.5
"""The sphere in input coordinates; the normalization maps it to radius 0.6 in the unit cube."""
NORMALIZATION = Normalization(center=tuple(CENTER), scale=0.6 / RADIUS)


class Sphere(nn.Module):
    """f = |x| - r in unit-cube coordinates: an exact SDF, as a model's network."""

    def __init__(self, radius: float):
        super().__init__()
        self.radius = radius

    def forward(self, x):
        return x.norm(dim=-1) - self.radius


class Bumps(nn.Module):
    """A smooth residual bounded by ``amplitude``, shaped (n, 1) as a multiresolution stage may be."""

    def __init__(self, amplitude: float, frequency: float):
        super().__init__()
        self.amplitude, self.frequency = amplitude, frequency

    def forward(self, x):
        return (self.amplitude * torch.sin(self.frequency * x + 0.3).prod(dim=-1))[:, None]


def rotation(axis, degrees) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = math.radians(degrees)
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def looking_at_center(offset, kind="perspective", resolution=(48, 36), turn=0.0) -> dict:
    """A camera at CENTER + offset looking at the sphere's centre (then turned ``turn`` degrees about its view)."""
    back = np.asarray(offset, dtype=np.float64) / np.linalg.norm(offset)  # camera +Z points away from the view
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    matrix = np.stack([right, up, back], axis=1) @ rotation([0, 0, 1], turn)
    camera = {"location": (CENTER + offset).tolist(), "rotation": matrix.tolist(), "type": kind,
              "resolution": list(resolution)}  # fmt: skip
    camera.update({"fov": 50.0} if kind == "perspective" else {"ortho_scale": 4.0})
    return camera


def analytic(camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance to the sphere along each ray (inf on a miss), the chord length inside it and the rays' origins and
    directions."""
    rays = camera_rays(camera)
    relative = rays.origins - CENTER
    b = (relative * rays.directions).sum(axis=1)
    disc = b * b - ((relative**2).sum(axis=1) - RADIUS**2)
    root = np.sqrt(np.maximum(disc, 0.0))
    depth = np.where(disc > 0, -b - root, np.inf)
    return depth, np.where(disc > 0, 2 * root, 0.0), rays


@pytest.mark.parametrize("kind", ["perspective", "orthographic"])
def test_depth_and_normals_are_the_ray_sphere_intersection(kind):
    camera = camera_from_dict(looking_at_center([2.5, -3.0, 1.8], kind, turn=20.0))
    result = render(level_stack(Sphere(0.6)), NORMALIZATION, camera)
    truth, chord, rays = analytic(camera)
    depth = result.depth.ravel().astype(np.float64)
    hit, expected = np.isfinite(depth), np.isfinite(truth)
    assert expected.sum() > 300
    # Coverage: only rays whose chord through the sphere is shorter than a pixel may be missed; none is invented.
    footprint = rays.footprint_offset + rays.footprint_slope * np.where(expected, truth, 0.0)
    assert not (hit & ~expected).any()
    assert (expected & ~hit <= (chord < footprint)).all()
    assert np.abs(depth[hit] - truth[hit]).max() < 1e-4
    points = rays.origins[hit] + depth[hit, None] * rays.directions[hit]
    outward = (points - CENTER) / np.linalg.norm(points - CENTER, axis=1, keepdims=True)
    np.testing.assert_allclose(result.normal.reshape(-1, 3)[hit], outward, atol=1e-4)
    assert (result.normal.reshape(-1, 3)[~hit] == 0).all()
    alpha = result.rgba[..., 3].ravel()
    assert (alpha[hit] == 1).all() and (alpha[~hit] == 0).all()
    assert result.report["hits"] == hit.sum() and result.report["rays_out_of_steps"] == 0


def test_threshold_hits_grow_the_silhouette_by_at_most_the_footprint():
    camera = camera_from_dict(looking_at_center([2.5, -3.0, 1.8], turn=20.0))
    exact = render(level_stack(Sphere(0.6)), NORMALIZATION, camera)
    loose = render(level_stack(Sphere(0.6)), NORMALIZATION, camera, RenderSettings(hit_threshold=1.0))
    truth, _, rays = analytic(camera)
    hit, grown = np.isfinite(exact.depth.ravel()), np.isfinite(loose.depth.ravel())
    assert (grown >= hit).all() and grown.sum() > hit.sum()
    # Every extra pixel's ray passes within a footprint of the sphere; every hit point lies within one of it.
    relative = rays.origins - CENTER
    along = (relative * rays.directions).sum(axis=1)
    passing = np.linalg.norm(relative - along[:, None] * rays.directions, axis=1) - RADIUS
    footprint = rays.footprint_slope * np.abs(along)
    assert (passing[grown & ~hit] < footprint[grown & ~hit]).all()
    points = rays.origins[grown] + loose.depth.ravel()[grown, None].astype(np.float64) * rays.directions[grown]
    assert (np.abs(np.linalg.norm(points - CENTER, axis=1) - RADIUS) < footprint[grown]).all()
    assert np.isfinite(truth[hit]).all()


def test_the_camera_looks_along_its_minus_z_with_y_up():
    # A camera at rest looks down -Z: the image's top row is +Y, its right +X.
    camera = camera_from_dict({"location": (CENTER + [0.0, 1.0, 4.0]).tolist(), "rotation": np.eye(3).tolist(),
                               "type": "orthographic", "ortho_scale": 4.0, "resolution": [40, 40]})  # fmt: skip
    result = render(level_stack(Sphere(0.6)), NORMALIZATION, camera)
    rows = np.flatnonzero(np.isfinite(result.depth).any(axis=1))
    # The camera sits 1 unit above the centre: the disc (radius 1.5 of the image's 4) spans y from 0.5 (row 15) down.
    assert rows.min() == 15 and rows.max() == 39
    assert result.normal[30, 20, 2] > 0.99  # the disc's centre faces the camera (+Z)
    assert result.normal[15, 20, 1] > 0.8  # its top edge faces +Y
    columns = np.flatnonzero(np.isfinite(result.depth[30]))
    assert result.normal[30, columns.min(), 0] < -0.8 and result.normal[30, columns.max(), 0] > 0.8  # +X right


def test_rays_that_miss_the_cube_are_inf():
    away = camera_from_dict(looking_at_center([0.0, 6.0, 0.0]) | {"rotation": np.eye(3).tolist()})  # looks along -Z
    result = render(level_stack(Sphere(0.6)), NORMALIZATION, away)
    assert np.isinf(result.depth).all() and (result.normal == 0).all() and (result.rgba == 0).all()
    assert result.report["rays_in_cube"] == 0 and result.report["evaluations"] == [0]


def nested_stack() -> LevelStack:
    """Coarse: the sphere; fine residual: bumps of amplitude 0.05, so the fine surface lies where |F_0| <= 0.05."""
    return LevelStack((Sphere(0.6), Bumps(0.05, 6.0)), (1.3 * 0.05,))


def test_multiscale_equals_single_scale_with_fewer_fine_evaluations():
    camera = camera_from_dict(looking_at_center([1.0, -7.0, 2.0], resolution=(64, 48), turn=-10.0))
    # |grad F_1| <= 1 + 0.05 * 6 * sqrt(3): steps scaled by 0.65 cannot cross the surface.
    settings = RenderSettings(step_scale=0.65)
    single = render(nested_stack(), NORMALIZATION, camera, RenderSettings(multiscale=False, step_scale=0.65))
    multi = render(nested_stack(), NORMALIZATION, camera, settings)
    both = np.isfinite(single.depth) & np.isfinite(multi.depth)
    assert both.sum() > 500
    assert (np.isfinite(single.depth) != np.isfinite(multi.depth)).sum() <= 1
    assert np.abs(single.depth[both] - multi.depth[both]).max() < 1e-4 * RADIUS
    np.testing.assert_allclose(single.normal[both], multi.normal[both], atol=1e-3)
    assert multi.report["hits_without_bracket"] == 0
    fine_single, fine_multi = single.report["evaluations"][1], multi.report["evaluations"][1]
    assert fine_multi < 0.5 * fine_single
    assert single.report["evaluations"][0] == fine_single  # single-scale evaluates every stage at every step


class EastBumps(Bumps):
    """Bumps on the +x side of the unit cube only (faded in over x in [0, 0.25]): west of it the fine surface is the
    coarse sphere itself."""

    def forward(self, x):
        return super().forward(x) * (4.0 * x[:, :1]).clamp(0.0, 1.0)


def east_bumps_surface(count: int) -> torch.Tensor:
    """Points of {F_1 = 0} of Sphere(0.6) + EastBumps(0.05, 6): radial fixed-point steps from the sphere (a
    contraction: the residual changes by far less than the radius along a ray)."""
    directions = torch.as_tensor(np.random.default_rng(3).normal(size=(count, 3)), dtype=torch.float32)
    directions /= directions.norm(dim=1, keepdim=True)
    bumps, radius = EastBumps(0.05, 6.0), torch.full((count, 1), 0.6)
    for _ in range(30):
        radius = 0.6 - bumps(radius * directions)
    return radius * directions


def test_local_reaches_bound_the_distance_to_the_finest_surface_and_save_fine_steps():
    stages = (Sphere(0.6), EastBumps(0.05, 6.0))
    surface = east_bumps_surface(200_000)
    grids = local_reaches(surface, [stages[0](surface)], 16, 1.1)
    assert grids.shape == (1, 16, 16, 16) and float(grids[0].max()) <= 1.1 * 0.05
    assert float(grids[0][:6].max()) < 1e-6  # x < -0.25: no bump, no reach (but rounding)
    local, plain = LevelStack(stages, (1.3 * 0.05,), reach_grids=grids), LevelStack(stages, (1.3 * 0.05,))
    # Never past the finest surface: the bound is at most the distance to it (the samples are ~0.005 apart).
    points = torch.as_tensor(np.random.default_rng(4).uniform(-1.0, 1.0, size=(3000, 3)), dtype=torch.float32)
    nearest = torch.cdist(points, surface).min(dim=1).values
    bound = local.bound(0, points, stages[0](points))
    assert bool((bound <= nearest + 0.005).all()) and bool((bound >= plain.bound(0, points, stages[0](points))).all())
    camera = camera_from_dict(looking_at_center([-1.0, -7.0, 2.0], resolution=(64, 48), turn=-10.0))
    settings = RenderSettings(step_scale=0.65)
    single = render(plain, NORMALIZATION, camera, RenderSettings(multiscale=False, step_scale=0.65))
    results = [render(stack, NORMALIZATION, camera, settings) for stack in (plain, local)]
    for result in results:
        both = np.isfinite(single.depth) & np.isfinite(result.depth)
        assert both.sum() > 500 and (np.isfinite(single.depth) != np.isfinite(result.depth)).sum() <= 1
        assert np.abs(single.depth[both] - result.depth[both]).max() < 1e-4 * RADIUS
    assert results[1].report["evaluations"][1] < 0.8 * results[0].report["evaluations"][1]


def test_the_first_refinement_guess_is_exact_where_the_distance_is_quadratic_in_the_value():
    from engine.render_hits import inverse_quadratic

    # s(F) = 0.3 - 2 F + 5 F^2: the root (F = 0) is at s = 0.3; samples falling along the ray bracket it.
    values = torch.tensor([0.08, 0.03, -0.02], dtype=torch.float64)
    earlier, low, high = (0.3 - 2 * values + 5 * values**2).unbind()
    f_earlier, f_low, f_high = values.unbind()
    root = inverse_quadratic(*(torch.stack([x]) for x in (low, f_low, high, f_high, earlier, f_earlier)))
    assert abs(float(root[0]) - 0.3) < 1e-12
    # Not used without a third sample, with values that do not fall from it, or with a root off the bracket.
    for changed in ({"earlier": -1.0}, {"f_earlier": 0.01}, {"f_high": -1e-9, "high": float(low) + 1e-6}):
        sample = {"low": low, "f_low": f_low, "high": high, "f_high": f_high, "earlier": earlier,
                  "f_earlier": f_earlier} | {k: torch.tensor(v, dtype=torch.float64) for k, v in changed.items()}
        keys = ("low", "f_low", "high", "f_high", "earlier", "f_earlier")
        assert torch.isnan(inverse_quadratic(*(torch.stack([sample[k]]) for k in keys)))[0]


def test_independent_levels_coarse_first():
    # A coarse network that is not part of the fine one (the sphere grown by 0.02) in front of it.
    camera = camera_from_dict(looking_at_center([0.5, -3.5, 1.0], resolution=(40, 30)))
    fine = nested_stack().level_module()
    single = render(LevelStack((fine,), ()), NORMALIZATION, camera, RenderSettings(step_scale=0.65))
    multi = render(coarse_first(Sphere(0.62), fine, 0.08), NORMALIZATION, camera, RenderSettings(step_scale=0.65))
    both = np.isfinite(single.depth) & np.isfinite(multi.depth)
    assert (np.isfinite(single.depth) != np.isfinite(multi.depth)).sum() <= 1
    assert np.abs(single.depth[both] - multi.depth[both]).max() < 1e-4 * RADIUS
    assert multi.report["evaluations"][1] < single.report["evaluations"][0]


def test_a_nested_network_is_read_by_its_stages_and_deltas():
    class Nested(nn.Module):  # the duck-typed shape of engine.multires.MultiresSDF
        def __init__(self):
            super().__init__()
            self.stages = nn.ModuleList([Sphere(0.6), Bumps(0.05, 6.0)])
            self.register_buffer("deltas", torch.tensor([0.065, 0.0]))

    stack = level_stack(Nested())
    assert len(stack.stages) == 2 and stack.deltas == pytest.approx((0.065,)) and stack.cumulative
    assert level_stack(Sphere(0.6)).deltas == ()
    with pytest.raises(ValueError, match="delta"):
        LevelStack((Sphere(0.6), Bumps(0.05, 6.0)), (0.0,))
    unmeasured = Nested()
    unmeasured.deltas.zero_()
    with pytest.raises(ValueError, match="level 0 has no band .* single-scale"):
        level_stack(unmeasured)


def test_a_real_nested_network_renders_as_its_finest_level():
    multires = pytest.importorskip("engine.multires")
    from engine.networks import SirenConfig

    torch.manual_seed(2)
    config = multires.MultiresConfig((SirenConfig(16, 1, 2.0), SirenConfig(16, 1, 6.0)), (0.0, 0.0))
    network = multires.MultiresSDF(config)
    coarse, fine = network.stages
    with torch.no_grad():
        coarse.output.bias.sub_(float(coarse(torch.zeros(1, 3))[0]) + 0.4)  # a blob around the centre
        fine.output.weight.mul_(0.05)
        # |g_1| <= sum |w| + |b| (its sines are at most 1): that bound times 1.3 is a band that nests for sure.
        bound = float(fine.output.weight.abs().sum() + fine.output.bias.abs().sum())
    network.with_deltas((1.3 * bound, 0.0))
    camera = camera_from_dict(looking_at_center([0.5, -3.5, 1.0], resolution=(40, 30)))
    settings = RenderSettings(step_scale=0.5, max_steps=1000)
    multi = render(level_stack(network), NORMALIZATION, camera, settings)
    whole = render(LevelStack((network,), ()), NORMALIZATION, camera, settings)  # its forward(), one level
    assert multi.report["levels"] == 2 and multi.report["hits"] > 100
    assert (np.isfinite(multi.depth) != np.isfinite(whole.depth)).sum() <= 1
    both = np.isfinite(multi.depth) & np.isfinite(whole.depth)
    assert np.abs(multi.depth[both] - whole.depth[both]).max() < 1e-4


def test_curvature_shading_colours_a_sphere_uniformly():
    camera = camera_from_dict(looking_at_center([0.0, -4.0, 0.0], resolution=(24, 24)))
    result = render(level_stack(Sphere(0.6)), NORMALIZATION, camera,
                    RenderSettings(shading="curvature", value_range=(-1.0, 1.0)))  # fmt: skip
    plain = render(level_stack(Sphere(0.6)), NORMALIZATION, camera)
    hit = result.rgba[..., 3] == 1
    # H = 1 / 1.5 in input units is positive: red over the grey of the plain shading.
    assert (result.rgba[hit, 0] > result.rgba[hit, 2] + 0.05).mean() > 0.9
    assert not np.allclose(result.rgba[hit], plain.rgba[hit])


def test_a_network_that_gives_nan_is_refused():
    class Broken(nn.Module):
        def forward(self, x):
            return torch.full((len(x),), math.nan)

    camera = camera_from_dict(looking_at_center([0.0, -4.0, 0.0], resolution=(8, 8)))
    with pytest.raises(ValueError, match="NaN"):
        render(level_stack(Broken()), NORMALIZATION, camera)


def test_progress_reaches_every_pixel_and_cancel_stops_the_render():
    from engine.training import Cancelled

    camera = camera_from_dict(looking_at_center([0.0, -4.0, 0.0], resolution=(16, 12)))
    seen = []
    render(level_stack(Sphere(0.6)), NORMALIZATION, camera, on_progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (192, 192) and all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    asked = []
    with pytest.raises(Cancelled, match="rays still marching"):
        render(level_stack(Sphere(0.6)), NORMALIZATION, camera, should_cancel=lambda: asked.append(1) or len(asked) > 2)


def test_the_files_of_a_render(tmp_path):
    import imageio.v3 as iio

    camera = camera_from_dict(looking_at_center([0.0, -4.0, 0.0], resolution=(20, 10)))
    result = render(level_stack(Sphere(0.6)), NORMALIZATION, camera)
    write_render(tmp_path, result)
    image = iio.imread(tmp_path / RENDER_FILES["image"])
    assert image.shape == (10, 20, 4) and image.dtype == np.uint8 and image[0, 0, 3] == 0 and image[5, 10, 3] == 255
    depth, normal = np.load(tmp_path / "depth.npy"), np.load(tmp_path / "normal.npy")
    assert depth.shape == (10, 20) and depth.dtype == np.float32 and np.isinf(depth[0, 0])
    assert normal.shape == (10, 20, 3) and normal.dtype == np.float32
    report = json.loads((tmp_path / "render.json").read_text())
    assert {"evaluations", "seconds", "steps", "hits", "camera"} <= set(report)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(RENDER_FILES.values())


GOOD = {"location": [0, 0, 5], "rotation": np.eye(3).tolist(), "type": "perspective", "fov": 40, "resolution": [8, 6]}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"fov": None}, "needs 'fov'"),
        ({"type": "fisheye"}, '"type" must be "perspective" or "orthographic"'),
        ({"type": "orthographic"}, "needs 'ortho_scale'"),
        ({"ortho_scale": -1.0, "type": "orthographic"}, "must be positive"),
        ({"fov": 180}, "strictly between 0 and 180"),
        ({"fov": True}, "finite number"),
        ({"location": [0, 0]}, "list of 3 numbers"),
        ({"location": [0, 0, float("nan")]}, "finite number"),
        ({"rotation": (2 * np.eye(3)).tolist()}, "take the scale"),
        ({"rotation": np.diag([1.0, 1.0, -1.0]).tolist()}, "determinant"),
        ({"rotation": [[1, 0, 0], [0, 1, 0]]}, "3 x 3"),
        ({"resolution": [8.5, 6]}, "whole pixels"),
        ({"resolution": [0, 6]}, "outside 1 to"),
        ({"resolution": [10000, 10000]}, "outside 1 to"),
        ({"lens": 50}, "unknown key(s) lens"),
        ({"location": None}, "lacks location"),
    ],
)
def test_bad_cameras_are_refused(change, message):
    data = {**GOOD, **change}
    data = {key: value for key, value in data.items() if value is not None}
    with pytest.raises(ValueError, match="the camera: .*" + _escaped(message)):
        camera_from_dict(data)


def _escaped(text: str) -> str:
    import re

    return re.escape(text)


def test_camera_files_are_named_in_errors(tmp_path):
    path = tmp_path / "camera.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="camera.json is not valid JSON"):
        load_camera(path)
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="camera file .*camera.json: must be a JSON object"):
        load_camera(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_camera(tmp_path / "missing.json")
    path.write_text(json.dumps(GOOD))
    assert load_camera(path).resolution == (8, 6)


def small_model(path):
    """A small smooth SIREN whose zero set is a closed blob (its output bias pushes the field up away from the
    origin) saved as a model file: what the command line and the worker render alike."""
    from engine.model import SDFModel
    from engine.networks import Siren, SirenConfig

    torch.manual_seed(5)
    network = Siren(SirenConfig(hidden_features=16, hidden_layers=1, first_omega=3.0))
    with torch.no_grad():
        network.output.bias.fill_(float(-network(torch.zeros(1, 3))[0]))  # f(0) = 0: the surface passes the centre
    SDFModel(network, NORMALIZATION).save(path)
    return path


def test_the_command_line_and_the_worker_render_alike(tmp_path):
    import imageio.v3 as iio

    from tests.conftest import run_engine_cli
    from tests.engine.test_worker import WorkerUnderTest, job

    model = small_model(tmp_path / "model.pt")
    camera = looking_at_center([0.5, -3.5, 1.0], resolution=(24, 16))
    (tmp_path / "camera.json").write_text(json.dumps(camera))
    run = run_engine_cli("render", model, "-o", tmp_path / "cli", "--camera", tmp_path / "camera.json", "--device",
                         "cpu", "--no-multiscale", "--shading", "curvature", "--max-steps", "300")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout and "pixels hit" in run.stdout
    worker = WorkerUnderTest()
    assert worker.next()["type"] == "hello"
    directory = tmp_path / "worker"
    directory.mkdir()
    params = {"model": str(model), "camera": camera, "device": "cpu", "multiscale": False, "shading": "curvature",
              "max_steps": 300}  # fmt: skip
    worker.send(job("1", "render", directory, **params))
    end, _ = worker.until_end_of_job("1")
    assert end["type"] == "result", end
    assert worker.close() == 0
    with np.load(directory / end["outputs"], allow_pickle=False) as outputs:
        arrays = {name: outputs[name] for name in outputs.files}
    np.testing.assert_array_equal(np.load(tmp_path / "cli" / "depth.npy"), arrays["depth"])
    np.testing.assert_array_equal(np.load(tmp_path / "cli" / "normal.npy"), arrays["normal"])
    assert np.isfinite(arrays["depth"]).sum() > 20 and arrays["rgba"].shape == (16, 24, 4)
    image = iio.imread(tmp_path / "cli" / "render.png")
    np.testing.assert_array_equal(image[..., 3] == 255, arrays["rgba"][..., 3] == 1)
    report = json.loads((tmp_path / "cli" / "render.json").read_text())
    assert report["evaluations"] == end["summary"]["evaluations"]
    assert report["camera"] == camera_from_dict(camera).to_dict()


def test_the_command_line_names_a_bad_camera_file(tmp_path):
    from tests.conftest import run_engine_cli

    model = small_model(tmp_path / "model.pt")
    (tmp_path / "camera.json").write_text(json.dumps({**GOOD, "fov": 0}))
    run = run_engine_cli("render", model, "-o", tmp_path / "out", "--camera", tmp_path / "camera.json")
    assert run.returncode == 2 and not (tmp_path / "out").exists()
    assert "camera.json" in run.stderr and "strictly between 0 and 180" in run.stderr
