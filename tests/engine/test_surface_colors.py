"""Colour fields on fitted surfaces (issue 17): the colour network, its look-up along the normal, the model file that
holds it, colour inputs of the fit job and the command line, and refusals of bad colours."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import trimesh

from engine.cli import main as cli_main
from engine.color_samples import (
    ColorSamples,
    check_colors,
    file_color_inputs,
    linear_to_srgb8,
    srgb8_to_linear,
    texture_lookup,
    vertex_color_samples,
)
from engine.fit import fit_sdf, preset
from engine.jobs import JOBS, JobContext, JobParamError
from engine.mesh_io import TriangleMesh
from engine.model import COLORS_KEY, SDFModel, load_model, load_networks, save_networks
from engine.networks import Siren, SirenConfig
from engine.ply_io import read_ply_vertex_properties
from engine.surface_colors import COLOR_PRESETS, blended_colors, colors_at, fit_colors, onto_zero_set, psnr_from_mse

RADIUS = 0.5


def known_colors(points: np.ndarray) -> np.ndarray:
    """A smooth colour of position: the truth the colour fit must reproduce."""
    points = np.asarray(points, dtype=np.float64)
    return (0.5 + 0.45 * np.sin(np.stack([3 * points[:, 0], 3 * points[:, 1] + 1, 3 * points[:, 2] + 2], 1))).astype(
        np.float32
    )


def sphere_mesh(subdivisions: int = 3) -> TriangleMesh:
    sphere = trimesh.creation.icosphere(subdivisions, radius=RADIUS)
    return TriangleMesh(np.asarray(sphere.vertices, dtype=np.float64), np.asarray(sphere.faces))


def on_sphere(count: int, seed: int) -> np.ndarray:
    directions = np.random.default_rng(seed).normal(size=(count, 3))
    return RADIUS * directions / np.linalg.norm(directions, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def colored_sphere():
    torch.set_num_threads(1)
    mesh = sphere_mesh()
    shape = fit_sdf(mesh, preset("tiny", device="cpu", steps=200))
    samples = vertex_color_samples(mesh, known_colors(mesh.vertices), 50_000, np.random.default_rng(0))
    config = dataclasses.replace(COLOR_PRESETS["tiny"], device="cpu")
    return shape, fit_colors(shape, samples, config)


def test_a_sphere_coloured_by_position_is_reproduced(colored_sphere):
    _, model = colored_sphere
    points = on_sphere(4000, seed=1)
    error = float(np.square(colors_at(model, points) - known_colors(points)).mean())
    assert psnr_from_mse(error) >= 35.0
    facts = model.metadata[COLORS_KEY]
    assert facts["color_space"] == "linear" and facts["samples"] == 50_000 and facts["training_psnr_db"] >= 35.0


def test_colours_are_constant_along_the_normal_within_the_band(colored_sphere):
    shape, model = colored_sphere
    points = on_sphere(2000, seed=2)
    normals = points / RADIUS
    band = model.metadata[COLORS_KEY]["color_config"]["band"] / model.normalization.scale  # input units
    on_surface = colors_at(model, points, project=False)

    def change(colored, share):  # of the network itself, without the projection onto the surface
        return np.abs(colors_at(colored, points + share * band * normals, project=False) - colors_at(
            colored, points, project=False))

    for share in (-1.0, -0.5, 0.5, 1.0):
        assert change(model, share).max() < 0.02
    # Trained on the surface alone, the same network follows its smooth extension off the surface.
    flat = dataclasses.replace(COLOR_PRESETS["tiny"], device="cpu", band=0.0)
    samples = vertex_color_samples(sphere_mesh(), known_colors(sphere_mesh().vertices), 50_000, np.random.default_rng(0))
    unbanded = fit_colors(shape, samples, flat)
    assert change(model, 1.0).mean() < change(unbanded, 1.0).mean() / 3
    # Far off the surface (an offset, an evolved frame), the look-up projects onto the surface first.
    # (1.1 R is 4.5 bands away, near the fit's cube.)
    assert np.abs(colors_at(model, points * 1.1) - on_surface).max() < 0.05
    landed = onto_zero_set(model.network, torch.from_numpy(model.normalization.to_unit(points * 1.1).astype(np.float32)))
    with torch.no_grad():
        assert float(model.network(landed).abs().max()) < 1e-4


def test_model_file_round_trip_keeps_both_networks(colored_sphere, tmp_path):
    shape, model = colored_sphere
    model.save(tmp_path / "colored.pt")
    loaded = load_model(tmp_path / "colored.pt")
    points = on_sphere(500, seed=3)
    np.testing.assert_array_equal(colors_at(loaded, points), colors_at(model, points))
    np.testing.assert_array_equal(loaded.sdf(points), model.sdf(points))
    assert loaded.metadata[COLORS_KEY]["mode"] == "after the shape fit"
    networks, _, _ = load_networks(tmp_path / "colored.pt")
    assert set(networks) == {"sdf", "colors"}
    shape.save(tmp_path / "plain.pt")  # a model without colours keeps the single layout
    assert load_model(tmp_path / "plain.pt").colors is None
    with pytest.raises(ValueError, match="colour fit"):
        SDFModel(shape.network, shape.normalization, {}, model.colors).save(tmp_path / "facts.pt")


def test_coloured_model_files_are_checked_strictly(colored_sphere, tmp_path):
    shape, model = colored_sphere
    wrong = Siren(SirenConfig(hidden_features=8, hidden_layers=1, out_features=1))
    save_networks(tmp_path / "scalar.pt", {"sdf": shape.network, "colors": wrong}, shape.normalization, {COLORS_KEY: {}})
    with pytest.raises(ValueError, match="network 'colors' takes 3 inputs and gives 1 outputs"):
        load_model(tmp_path / "scalar.pt")
    save_networks(tmp_path / "facts.pt", {"sdf": shape.network, "colors": model.colors}, shape.normalization,
                  {COLORS_KEY: [1, 2]})  # fmt: skip
    with pytest.raises(ValueError, match="surface_colors must be a JSON object"):
        load_model(tmp_path / "facts.pt")
    save_networks(tmp_path / "extra.pt", {"sdf": shape.network, "colors": model.colors, "more": wrong},
                  shape.normalization, {COLORS_KEY: {}})  # fmt: skip
    with pytest.raises(ValueError, match="names the networks sdf, colors, more"):
        load_model(tmp_path / "extra.pt")
    save_networks(tmp_path / "unnamed.pt", {"sdf": shape.network}, shape.normalization, {})
    with pytest.raises(ValueError, match="neither an evolution, a morph nor a coloured model"):
        load_model(tmp_path / "unnamed.pt")


def test_a_level_set_morph_blends_the_two_colours(colored_sphere):
    _, model = colored_sphere
    inverted = dataclasses.replace(model, colors=_inverted(model.colors))
    points = on_sphere(200, seed=4)
    start, end = colors_at(model, points), colors_at(inverted, points)
    np.testing.assert_allclose(blended_colors(model, inverted, points, 0.25), 0.75 * start + 0.25 * end, atol=1e-6)
    np.testing.assert_array_equal(blended_colors(model, inverted, points, 1.0), end)


def _inverted(network: Siren) -> Siren:
    """c' = 1 - c, exactly (its output layer negated and shifted)."""
    inverted = Siren(network.config)
    inverted.load_state_dict(network.state_dict())
    with torch.no_grad():
        inverted.output.weight.neg_()
        inverted.output.bias.neg_().add_(1.0)
    return inverted


def test_texture_lookup_is_bilinear_in_the_image_with_v_up_and_repeat():
    image = np.array([[[1.0], [0.0]], [[0.0], [0.5]]])  # row 0 is the top: v near 1
    centres = np.array([[0.25, 0.75], [0.75, 0.75], [0.25, 0.25], [0.75, 0.25]])
    np.testing.assert_allclose(texture_lookup(image, centres)[:, 0], [1.0, 0.0, 0.0, 0.5])
    np.testing.assert_allclose(texture_lookup(image, np.array([[0.5, 0.5]]))[:, 0], [0.375])
    np.testing.assert_allclose(texture_lookup(image, centres + 1.0), texture_lookup(image, centres))
    np.testing.assert_allclose(texture_lookup(image, np.array([[0.5, 0.75]]))[:, 0], [0.5])


def test_srgb_round_trip_and_known_values():
    codes = np.arange(256)
    assert np.array_equal(linear_to_srgb8(srgb8_to_linear(codes)), codes)
    np.testing.assert_allclose(srgb8_to_linear([0, 255, 188]), [0.0, 1.0, 0.5029], atol=1e-4)


@pytest.mark.parametrize(
    "colors, message",
    [
        (np.full((5, 2), 0.5), r"must be \(5, 3\) RGB or \(5, 4\) RGBA"),
        (np.full((4, 3), 0.5), r"must be \(5, 3\)"),
        (np.full((5, 3), 128, dtype=np.uint8), "must be floats.*decode 8-bit sRGB"),
        (np.array([[0.5, 0.5, np.nan]] + [[0.5] * 3] * 4), "NaN, infinite or outside"),
        (np.array([[0.5] * 3] * 4 + [[1.5, 0.0, 0.0]]), r"first: 4, \[1.5, 0.0, 0.0\]"),
        (np.array([[-0.1, 0.0, 0.0]] * 5), "outside \\[0, 1\\]"),
    ],
)
def test_bad_colour_arrays_are_refused(colors, message):
    with pytest.raises(ValueError, match=message):
        check_colors(colors, 5, "Object 'Ball' colours")


def _fit_params(**extra) -> dict:
    base = {"names": ["ball"], "preset": "tiny", "steps": 40, "resolution": 24, "metrics": False, "device": "cpu"}
    return {**base, **extra}


@pytest.mark.parametrize(
    "params, arrays, message",
    [
        ({}, {"vertex_colors_0": 0.5}, "'colors' is false, but the inputs hold colours"),
        ({"colors": True}, {}, "'ball' has no colours"),
        ({"colors": True}, {"color_points_0": np.zeros((20, 3))}, "color_points_0 for 'ball' without color_values_0"),
        ({"colors": True}, {"vertex_colors_0": np.full((3, 3), 0.5)}, r"'ball''s vertex colours must be \(642, 3\)"),
        ({"colors": True}, {"color_points_0": np.zeros((3, 3)), "color_values_0": np.zeros((3, 3))}, "at least 16"),
    ],
)
def test_the_fit_job_refuses_bad_colour_inputs_before_training(params, arrays, message, tmp_path):
    mesh = sphere_mesh()
    inputs = {"vertices_0": mesh.vertices, "faces_0": mesh.faces}
    inputs.update({name: np.full((len(mesh.vertices), 3), value) if np.isscalar(value) else value
                   for name, value in arrays.items()})  # fmt: skip
    reports = []
    with pytest.raises(ValueError, match=message):
        JOBS["fit"].from_params(_fit_params(**params)).run(inputs, JobContext(tmp_path, report=lambda *r: reports.append(r)))
    assert not any(report[1] > 0 for report in reports)  # no training step ran
    with pytest.raises(JobParamError, match="'color_steps' needs colors"):
        JOBS["fit"].from_params(_fit_params(color_steps=10))


def test_fit_and_extract_jobs_give_colours_at_the_vertices(tmp_path):
    mesh = sphere_mesh()
    inputs = {"vertices_0": mesh.vertices, "faces_0": mesh.faces, "vertex_colors_0": known_colors(mesh.vertices)}
    reports = []
    spec = JOBS["fit"].from_params(_fit_params(colors=True, color_steps=30))
    output = spec.run(inputs, JobContext(tmp_path, report=lambda *r: reports.append(r)))
    colors = output.arrays["colors"]
    assert colors.shape == (len(output.arrays["vertices"]), 3) and colors.dtype == np.float32
    assert output.summary["colors"]["samples"] == COLOR_PRESETS["tiny"].pool_size
    assert reports[-1][:3] == ("fit", 70, 70) or ("fit", 70, 70) in [r[:3] for r in reports]
    extracted = JOBS["extract"].from_params({"model": str(tmp_path / "model.pt"), "resolution": 24, "device": "cpu"})
    np.testing.assert_array_equal(extracted.run({}, JobContext(tmp_path)).arrays["colors"], colors)


def test_file_colours_from_ply_and_a_textured_obj(tmp_path):
    sphere = trimesh.creation.icosphere(2, radius=RADIUS)
    codes = np.random.default_rng(0).integers(0, 256, size=(len(sphere.vertices), 4), dtype=np.uint8)
    sphere.visual.vertex_colors = codes
    sphere.export(tmp_path / "painted.ply")
    mesh = TriangleMesh(np.asarray(sphere.vertices), np.asarray(sphere.faces))
    found = file_color_inputs(tmp_path / "painted.ply", 0, mesh)
    np.testing.assert_allclose(found["vertex_colors_0"], srgb8_to_linear(codes[:, :3]))

    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    pixels[:, 2:] = (255, 0, 0)  # the right half (u > 0.5) red, the left black
    square = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], [[0, 1, 2], [0, 2, 3]], process=False)
    from PIL import Image

    square.visual = trimesh.visual.TextureVisuals(uv=[[0, 0], [1, 0], [1, 1], [0, 1]], image=Image.fromarray(pixels))
    square.export(tmp_path / "square.obj")
    loaded = trimesh.load(tmp_path / "square.obj", process=False)
    flat = TriangleMesh(np.asarray(loaded.vertices), np.asarray(loaded.faces))
    found = file_color_inputs(tmp_path / "square.obj", 1, flat, pool_size=2000)
    points, values = found["color_points_1"], found["color_values_1"]
    # Away from the bilinear ramps between the halves (and, the image repeating, across its left and right edges).
    inside = (np.abs(points[:, 0] - 0.5) > 0.2) & (np.abs(points[:, 0] - 0.5) < 0.3)
    np.testing.assert_allclose(values[inside], np.where(points[inside, :1] > 0.5, [[1.0, 0, 0]], 0.0), atol=1e-6)

    plain = trimesh.creation.icosphere(1)
    plain.export(tmp_path / "plain.ply")
    with pytest.raises(ValueError, match="plain.ply holds no colours"):
        file_color_inputs(tmp_path / "plain.ply", 0, TriangleMesh(np.asarray(plain.vertices), np.asarray(plain.faces)))


def test_cli_fit_colors_writes_srgb_vertex_colours(tmp_path):
    sphere = trimesh.creation.icosphere(3, radius=RADIUS)
    sphere.visual.vertex_colors = np.column_stack([linear_to_srgb8(known_colors(sphere.vertices)), np.full(642, 255)])
    sphere.export(tmp_path / "ball.ply")
    code = cli_main(["fit", str(tmp_path / "ball.ply"), "-o", str(tmp_path / "out"), "--preset", "tiny", "--steps",
                     "200", "--color-steps", "200", "--resolution", "32", "--colors", "--no-metrics", "--device", "cpu"])  # fmt: skip
    assert code == 0
    written = read_ply_vertex_properties(tmp_path / "out" / "mesh.ply")
    vertices = np.column_stack([written[axis] for axis in "xyz"]).astype(np.float64)
    colors = srgb8_to_linear(np.column_stack([written[channel] for channel in ("red", "green", "blue")]))
    # The fitted surface lies near the sphere; its colours match the truth at the nearest sphere points.
    truth = known_colors(RADIUS * vertices / np.linalg.norm(vertices, axis=1, keepdims=True))
    assert psnr_from_mse(float(np.square(colors - truth).mean())) > 25.0
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert summary["colors"]["steps"] == 200
    assert load_model(tmp_path / "out" / "model.pt").colors is not None


def test_evolution_frames_take_the_colour_of_the_surface_along_the_normal(colored_sphere, tmp_path):
    """An offset sphere's frame: each vertex gets the colour of the fitted sphere's point below it (radially)."""
    _, model = colored_sphere
    model.save(tmp_path / "model.pt")
    spec = JOBS["evolve"].from_params({
        "model": str(tmp_path / "model.pt"), "flow": {"normal_speed": 0.1}, "times": [0.0, 0.5], "steps": 30,
        "resolution": 32, "device": "cpu",
    })  # fmt: skip
    output = spec.run({}, JobContext(tmp_path))
    assert output.summary["surface_colors"] is True
    for index in (0, 1):
        vertices, colors = output.arrays[f"vertices_{index}"], output.arrays[f"surface_colors_{index}"]
        below = RADIUS * vertices / np.linalg.norm(vertices, axis=1, keepdims=True)
        assert np.abs(colors - known_colors(below)).mean() < 0.02
    assert np.linalg.norm(output.arrays["vertices_1"], axis=1).mean() > RADIUS + 0.03  # it moved off the surface


def test_cli_flow_morph_colours_its_frames_and_the_sources_own_vertices(tmp_path):
    """--warp-source: the source's vertices carry their colour along the flow, so each source frame has the source's
    colours; the frames have colours too."""
    small, large = trimesh.creation.icosphere(3, radius=RADIUS), trimesh.creation.icosphere(3, radius=1.5 * RADIUS)
    for mesh, name in ((small, "small.ply"), (large, "large.ply")):
        mesh.visual.vertex_colors = np.column_stack(
            [linear_to_srgb8(known_colors(mesh.vertices)), np.full(len(mesh.vertices), 255)]
        )
        mesh.export(tmp_path / name)
    code = cli_main(["morph", str(tmp_path / "small.ply"), str(tmp_path / "large.ply"), "-o", str(tmp_path / "out"),
                     "--method", "flow", "--warp-source", "--colors", "--frames", "2", "--preset", "tiny",
                     "--fit-steps", "200", "--steps", "20", "--resolution", "24", "--device", "cpu"])  # fmt: skip
    assert code == 0
    for index in (0, 1):
        written = read_ply_vertex_properties(tmp_path / "out" / f"source_{index:04d}.ply")
        colors = srgb8_to_linear(np.column_stack([written[channel] for channel in ("red", "green", "blue")]))
        assert np.abs(colors - known_colors(small.vertices)).mean() < 0.05
        assert {"red", "green", "blue"} <= set(read_ply_vertex_properties(tmp_path / "out" / f"frame_{index:04d}.ply"))
