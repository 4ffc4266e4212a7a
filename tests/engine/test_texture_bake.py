"""Curvature baked into textures (issue 17): the UV rasteriser against brute force, bakes from analytic SDFs
(a UV sphere's constant H, a torus's closed form over v), the seam padding, the job and the command line."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from engine.colormaps import colorize
from engine.conventions import Normalization
from engine.jobs import JOBS, JobContext, JobParamError
from engine.model import SDFModel
from engine.networks import Siren, SirenConfig
from engine.texture_bake import COVERED, EMPTY, PADDED, bake_texture, pad_image, rasterize_uvs
from engine.training import Cancelled
from tests.conftest import run_engine_cli
from tests.engine.test_geometry import SphereSDF, TorusSDF


def grid_mesh(surface, columns: int, rows: int, uv_low: float = 0.0, uv_high: float = 1.0):
    """A (columns x rows)-quad grid over the parameter square, mapped by ``surface(s, t)`` (s, t in [0, 1]) to 3-D,
    with UVs the parameters squeezed into [uv_low, uv_high]^2 (one island). Returns vertices, faces, corner UVs."""
    s, t = np.meshgrid(np.linspace(0, 1, columns + 1), np.linspace(0, 1, rows + 1))
    vertices = surface(s.ravel(), t.ravel())
    uv = uv_low + (uv_high - uv_low) * np.stack([s.ravel(), t.ravel()], axis=1)
    index = np.arange(len(uv)).reshape(rows + 1, columns + 1)
    a, b, c, d = index[:-1, :-1].ravel(), index[:-1, 1:].ravel(), index[1:, 1:].ravel(), index[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return vertices, faces, uv[faces]


def sphere_surface(radius: float, center=(0.0, 0.0, 0.0)):
    def surface(s, t):
        polar, azimuth = t * np.pi, s * 2 * np.pi
        unit = np.stack([np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), -np.cos(polar)], axis=1)
        return np.asarray(center) + radius * unit

    return surface


def torus_surface(major: float, minor: float):
    def surface(s, t):
        azimuth, tube = s * 2 * np.pi, t * 2 * np.pi
        rho = major + minor * np.cos(tube)
        return np.stack([rho * np.cos(azimuth), rho * np.sin(azimuth), minor * np.sin(tube)], axis=1)

    return surface


def texel_centres(width: int, height: int) -> np.ndarray:
    rows, columns = np.divmod(np.arange(width * height), width)
    return np.stack([(columns + 0.5) / width, (rows + 0.5) / height], axis=1)


# The rasteriser.


def test_two_triangles_of_the_unit_square_cover_every_texel_once_with_exact_barycentrics():
    uvs = np.array([[[0, 0], [1, 0], [1, 1]], [[0, 0], [1, 1], [0, 1]]], dtype=np.float64)
    texels = rasterize_uvs(uvs, 16, 8)
    np.testing.assert_array_equal(texels.index, np.arange(16 * 8))
    # Barycentric blends of the corners give back each texel's centre.
    blended = np.einsum("kc,kcd->kd", texels.barycentric, uvs[texels.triangle])
    np.testing.assert_allclose(blended, texel_centres(16, 8), atol=1e-12)
    # Centres on the shared diagonal go to the first triangle; the others to the side they are on.
    centres = texel_centres(16, 8)
    below = centres[:, 1] <= centres[:, 0] + 1e-12
    np.testing.assert_array_equal(texels.triangle, np.where(below, 0, 1))


def test_a_triangle_covers_exactly_the_texel_centres_inside_it():
    corners = np.array([[0.1, 0.15], [0.93, 0.31], [0.37, 0.88]])
    width, height = 64, 48
    texels = rasterize_uvs(corners[None], width, height)
    # Brute force over every texel centre: inside all three edges (counter-clockwise triangle).
    centres = texel_centres(width, height)
    inside = np.ones(len(centres), dtype=bool)
    for i in range(3):
        edge, to_point = corners[(i + 1) % 3] - corners[i], centres - corners[i]
        inside &= edge[0] * to_point[:, 1] - edge[1] * to_point[:, 0] >= 0
    np.testing.assert_array_equal(texels.index, np.flatnonzero(inside))
    assert (texels.triangle == 0).all() and (texels.barycentric >= 0).all()
    np.testing.assert_allclose(texels.barycentric.sum(axis=1), 1.0)
    blended = texels.barycentric @ corners
    np.testing.assert_allclose(blended, centres[texels.index], atol=1e-12)
    area = 0.5 * abs(np.cross(corners[1] - corners[0], corners[2] - corners[0]))
    assert len(texels.index) == pytest.approx(area * width * height, rel=0.05)


def test_clockwise_degenerate_tiny_and_outside_triangles():
    clockwise = np.array([[[0.1, 0.1], [0.4, 0.9], [0.9, 0.1]]])
    counter = clockwise[:, ::-1]
    np.testing.assert_array_equal(rasterize_uvs(clockwise, 32, 32).index, rasterize_uvs(counter, 32, 32).index)
    degenerate = np.array([[[0.1, 0.1], [0.5, 0.5], [0.9, 0.9]]])
    assert len(rasterize_uvs(degenerate, 32, 32).index) == 0
    between_centres = np.array([[[0.01, 0.01], [0.02, 0.01], [0.01, 0.02]]])  # inside texel (0, 0), misses its centre
    assert len(rasterize_uvs(between_centres, 32, 32).index) == 0
    outside = np.array([[[1.2, 0.1], [1.9, 0.1], [1.5, 0.9]], [[-0.9, -0.9], [-0.1, -0.9], [-0.5, -0.1]]])
    assert len(rasterize_uvs(outside, 32, 32).index) == 0
    with pytest.raises(ValueError, match=r"\(faces, 3, 2\)"):
        rasterize_uvs(np.zeros((4, 3)), 8, 8)
    with pytest.raises(ValueError, match="NaN"):
        rasterize_uvs(np.full((1, 3, 2), np.nan), 8, 8)


def test_padding_grows_islands_by_the_margin_with_the_mean_of_their_edge():
    values = np.zeros((9, 9))
    filled = np.zeros((9, 9), dtype=bool)
    values[4, 4], filled[4, 4] = 5.0, True
    padded_values, padded = pad_image(values, filled, 2)
    assert padded.sum() == 24 and padded[2:7, 2:7].sum() == 24 and not padded[4, 4]
    np.testing.assert_allclose(padded_values[2:7, 2:7], 5.0)
    # Two neighbours of different values: a texel next to both gets their mean.
    values, filled = np.zeros((1, 3)), np.array([[True, False, True]])
    values[0, 0], values[0, 2] = 1.0, 3.0
    padded_values, padded = pad_image(values, filled, 1)
    assert padded_values[0, 1] == pytest.approx(2.0) and padded.tolist() == [[False, True, False]]
    assert not pad_image(values, filled, 0)[1].any()


# Bakes from analytic SDFs (torch modules in float64: the only error is rounding).


@pytest.fixture
def sphere_bake():
    radius, center = 1.5, np.array([0.5, -1.0, 2.0])
    normalization = Normalization(center=tuple(center), scale=0.4)
    model = SDFModel(network=SphereSDF(radius * normalization.scale), normalization=normalization)
    vertices, faces, uvs = grid_mesh(sphere_surface(radius, center), 24, 12, uv_low=0.1, uv_high=0.9)
    return model, vertices, faces, uvs, radius, center


def test_a_uv_sphere_bakes_a_constant_mean_curvature_of_one_over_r(sphere_bake):
    model, vertices, faces, uvs, radius, center = sphere_bake
    baked = bake_texture(model, vertices, faces, uvs, 64, 48, "mean", project=True, margin=3, fill=-7.0)
    assert baked.values.shape == (48, 64) and baked.values.dtype == np.float32
    assert baked.colors.shape == (48, 64, 4) and baked.colors.dtype == np.uint8
    assert np.isfinite(baked.values).all() and baked.nonfinite == 0
    filled = baked.coverage != EMPTY
    np.testing.assert_allclose(baked.values[filled], 1 / radius, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(baked.points - center, axis=1), radius, rtol=1e-10)
    assert (baked.values[~filled] == -7.0).all() and (baked.colors[~filled] == 0).all()
    # The island spans UV [0.1, 0.9]^2: covered inside, 3 texels of padding around, empty beyond.
    centres = texel_centres(64, 48).reshape(48, 64, 2)
    inside = ((centres > 0.1 + 1e-9) & (centres < 0.9 - 1e-9)).all(axis=2)
    assert (baked.coverage[inside] == COVERED).all()
    assert ((baked.coverage == COVERED) == inside).all()
    rows, columns = np.nonzero(inside)
    grown = np.zeros_like(inside)
    grown[rows.min() - 3 : rows.max() + 4, columns.min() - 3 : columns.max() + 4] = True
    np.testing.assert_array_equal(filled, grown)


def test_without_projection_each_texel_takes_the_level_set_through_its_point_on_the_mesh(sphere_bake):
    model, vertices, faces, uvs, radius, center = sphere_bake
    baked = bake_texture(model, vertices, faces, uvs, 48, 48, "gaussian", margin=0)
    distances = np.linalg.norm(baked.points - center, axis=1)
    assert distances.max() <= radius * (1 + 1e-12) and distances.min() < radius * 0.99  # chords lie inside
    np.testing.assert_allclose(baked.values.flat[baked.texels.index], 1 / distances**2, rtol=1e-5)


def test_a_torus_bakes_the_closed_form_mean_curvature_over_its_tube_angle():
    major, minor = 0.8, 0.3
    model = SDFModel(network=TorusSDF(major, minor), normalization=Normalization((0.0, 0.0, 0.0), 1.0))
    vertices, faces, uvs = grid_mesh(torus_surface(major, minor), 48, 24)
    baked = bake_texture(model, vertices, faces, uvs, 96, 64, "mean", project=True, margin=2)
    points = baked.points
    rho = np.hypot(points[:, 0], points[:, 1])
    tube = np.arctan2(points[:, 2], rho - major)
    closed_form = (major + 2 * minor * np.cos(tube)) / (2 * minor * (major + minor * np.cos(tube)))
    np.testing.assert_allclose(baked.values.flat[baked.texels.index], closed_form, rtol=1e-6)
    # Over the image: the texel row is the tube angle v = 2 pi t (up to the flat triangles' chords).
    rows = baked.texels.index // 96
    v = 2 * np.pi * (rows + 0.5) / 64
    by_row = (major + 2 * minor * np.cos(v)) / (2 * minor * (major + minor * np.cos(v)))
    np.testing.assert_allclose(baked.values.flat[baked.texels.index], by_row, rtol=0.02)
    # H runs from its maximum on the outer equator (v = 0) to its minimum on the inner one (v = pi).
    outer = (major + 2 * minor) / (2 * minor * (major + minor))
    inner = (major - 2 * minor) / (2 * minor * (major - minor))
    assert baked.values.max() == pytest.approx(outer, rel=5e-3)  # the nearest texel rows are half a row off
    assert baked.values.min() == pytest.approx(inner, rel=5e-3)


def test_the_colours_are_the_legends_map_of_the_values_and_padding_fills_the_seams(sphere_bake):
    model, vertices, faces, uvs, radius, center = sphere_bake
    baked = bake_texture(model, vertices, faces, uvs, 40, 40, "k1", value_range=(-1.0, 2.0), margin=4)
    assert baked.value_range == (-1.0, 2.0)
    filled = baked.coverage != EMPTY
    expected, _ = colorize(baked.values[filled], "signed", value_range=(-1.0, 2.0))
    np.testing.assert_array_equal(baked.colors[filled], np.round(expected * 255).astype(np.uint8))
    # The seam texels around the island: every empty texel within 4 of a covered one was padded.
    covered = baked.coverage == COVERED
    near = np.zeros_like(covered)
    for dy in range(-4, 5):
        for dx in range(-4, 5):
            near |= np.roll(np.roll(covered, dy, axis=0), dx, axis=1)
    assert (baked.coverage[near & ~covered] == PADDED).all() and (baked.coverage[~near] == EMPTY).all()
    assert (baked.colors[baked.coverage == PADDED][:, 3] == 255).all()


def test_bad_bakes_are_refused_before_any_evaluation(sphere_bake):
    model, vertices, faces, uvs, *_ = sphere_bake
    with pytest.raises(ValueError, match="no texel centre"):
        bake_texture(model, vertices, faces, uvs * 0.001, 8, 8, "mean")
    with pytest.raises(ValueError, match="one \\(3, 2\\) triangle per face"):
        bake_texture(model, vertices, faces, uvs[:-1], 8, 8, "mean")
    with pytest.raises(ValueError, match="unknown curvature quantity"):
        bake_texture(model, vertices, faces, uvs, 8, 8, "sharpness")
    with pytest.raises(ValueError, match="outside 0"):
        bake_texture(model, vertices, faces + len(vertices), uvs, 8, 8, "mean")


# The job and the command line, with a small saved SIREN.


@pytest.fixture(scope="module")
def siren_model_file(tmp_path_factory):
    torch.manual_seed(0)
    network = Siren(SirenConfig(hidden_features=16, hidden_layers=1))
    path = tmp_path_factory.mktemp("model") / "model.pt"
    SDFModel(network, Normalization((0.0, 0.0, 0.0), 1.5)).save(path)
    return path


def test_the_bake_job_outputs_whole_images_and_stops_when_cancelled(siren_model_file, tmp_path):
    vertices, faces, uvs = grid_mesh(sphere_surface(0.4), 16, 8, uv_low=0.05, uv_high=0.95)
    inputs = {"vertices": vertices, "faces": faces.astype(np.int32), "uvs": uvs.astype(np.float32)}
    spec = JOBS["bake"].from_params({"model": str(siren_model_file), "size": 32, "height": 16, "quantity": "mean"})
    reported = []
    context = JobContext(tmp_path, report=lambda *progress: reported.append(progress))
    output = spec.run(inputs, context)
    assert output.arrays["values"].shape == (16, 32) and output.arrays["colors"].shape == (16, 32, 4)
    assert np.isfinite(output.arrays["values"]).all() and output.arrays["coverage"].max() == PADDED
    assert output.summary["width"] == 32 and output.summary["texels"] == (output.arrays["coverage"] == 1).sum()
    assert reported[-1][:3] == ("curvature", output.summary["texels"], output.summary["texels"])
    with pytest.raises(Cancelled):
        spec.run(inputs, JobContext(tmp_path, should_cancel=lambda: True))
    for params, name in [({"size": 0}, "size"), ({"size": 9000}, "size"), ({"margin": -1}, "margin"),
                         ({"quantity": "x"}, "quantity"), ({"range": [1, 0]}, "range"),
                         ({"range": [0.5, 2.0], "quantity": "mean"}, "range")]:  # fmt: skip
        with pytest.raises(JobParamError, match=f"'{name}'"):
            JOBS["bake"].from_params({"model": "m.pt", **params})


def write_uv_obj(path, vertices, faces, uvs) -> None:
    lines = [f"v {x!r} {y!r} {z!r}" for x, y, z in vertices]
    lines += [f"vt {u!r} {v!r}" for u, v in uvs.reshape(-1, 2)]
    lines += [f"f {a + 1}/{3 * i + 1} {b + 1}/{3 * i + 2} {c + 1}/{3 * i + 3}" for i, (a, b, c) in enumerate(faces)]
    path.write_text("\n".join(lines) + "\n")


def test_the_bake_command_writes_the_png_the_floats_and_the_summary(siren_model_file, tmp_path):
    vertices, faces, uvs = grid_mesh(sphere_surface(0.4), 12, 6, uv_low=0.3, uv_high=0.9)
    write_uv_obj(tmp_path / "sphere.obj", vertices, faces, uvs)
    out = tmp_path / "bake"
    done = run_engine_cli("bake", siren_model_file, tmp_path / "sphere.obj", "-o", out, "--size", 24,
                          "--quantity", "k2", "--margin", 2)  # fmt: skip
    assert done.returncode == 0, done.stderr
    colors, values = iio.imread(out / "k2.png"), np.load(out / "k2.npy")
    summary = json.loads((out / "bake.json").read_text())
    assert colors.shape == (24, 24, 4) and values.shape == (24, 24) and values.dtype == np.float32
    assert summary["quantity"] == "k2" and np.isfinite(values).all()
    # Files run top row first. The island spans v in [0.3, 0.9] (texel rows 7 to 21 from v = 0), padded by 2: the
    # PNG's top row (v = 1) is padding, its bottom 5 rows (v < 0.21) are empty.
    assert colors[0, 12, 3] == 255 and colors[-5:, :, 3].max() == 0 and colors[-6, 12, 3] == 255
    np.testing.assert_array_equal(values[-5:], 0.0)

    (tmp_path / "plain.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    refused = run_engine_cli("bake", siren_model_file, tmp_path / "plain.obj", "-o", tmp_path / "none")
    assert refused.returncode != 0 and "no UV map" in refused.stderr and not (tmp_path / "none").exists()
