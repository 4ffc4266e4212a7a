"""Level-set morphing: exact ends, concentric spheres stay spheres, a sphere becomes a torus (the genus changes),
the morph file round trip, shapes fitted apart are refused, and the CLI writes its frames."""

import json

import numpy as np
import pytest
import torch
import trimesh

from engine.fields import at_time, even_times, extract_frames
from engine.fit import fit_sdf, preset
from engine.mesh_io import check_mesh
from engine.metrics import mesh_metrics
from engine.morph import (
    METHODS,
    LevelSetMorphConfig,
    align_bounds,
    fit_pair,
    load_morph,
    morph,
    morph_config,
    morph_levelset,
    save_morph,
)
from engine.networks import SirenConfig
from engine.protocol import MORPH_METHODS
from engine.training import Cancelled
from tests.conftest import run_engine_cli

TINY_FIT = preset("tiny", steps=400)
SMALL = LevelSetMorphConfig(steps=100)
INNER, OUTER = 0.3, 0.7


def sphere(radius: float, subdivisions: int = 4):
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return check_mesh(mesh.vertices, mesh.faces, name=f"Sphere {radius}")


@pytest.fixture(scope="module")
def concentric():
    model_a, model_b = fit_pair(sphere(INNER), sphere(OUTER), TINY_FIT)
    return model_a, model_b, morph_levelset(model_a, model_b, SMALL)


def radii_along(sdf, directions: np.ndarray, reach: float = 1.0) -> np.ndarray:
    low, high = np.full(len(directions), 0.05), np.full(len(directions), reach)
    for _ in range(40):
        middle = (low + high) / 2
        inside = sdf(directions * middle[:, None]) < 0
        low, high = np.where(inside, middle, low), np.where(inside, high, middle)
    return (low + high) / 2


def test_concentric_spheres_stay_spheres_of_the_interpolated_radius(concentric):
    model_a, model_b, morph = concentric
    directions = np.random.default_rng(1).normal(size=(300, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        radius = (1 - t) * INNER + t * OUTER
        radii = radii_along(at_time(morph, t).sdf, directions)
        # The fits' own errors at this radius bound what the in-between sphere can do.
        error_a = model_a.sdf(directions * radius) - (radius - INNER)
        error_b = model_b.sdf(directions * radius) - (radius - OUTER)
        fit_spread = (1 - t) * error_a.std() + t * error_b.std()
        fit_bias = abs((1 - t) * error_a.mean() + t * error_b.mean())
        assert abs(radii.mean() - radius) < fit_bias + 0.002, (t, radii.mean(), radius)
        assert radii.std() < 1.1 * fit_spread + 0.001, (t, radii.std(), fit_spread)


def test_the_ends_are_the_fitted_shapes(concentric):
    model_a, model_b, morph = concentric
    points = np.random.default_rng(2).uniform(-0.8, 0.8, size=(500, 3))
    np.testing.assert_allclose(at_time(morph, 0.0).sdf(points), model_a.sdf(points), atol=1e-5)
    np.testing.assert_allclose(at_time(morph, 1.0).sdf(points), model_b.sdf(points), atol=1e-5)
    start, end = extract_frames(morph, [0.0, 1.0], resolution=48)
    for frame, radius in ((start, INNER), (end, OUTER)):
        reference = sphere(radius)
        assert mesh_metrics(frame.vertices, frame.faces, reference.vertices, reference.faces).chamfer_l1 < 0.005


def test_a_sphere_becomes_a_torus_through_a_change_of_genus():
    torus = trimesh.creation.torus(major_radius=0.5, minor_radius=0.15)
    model_a, model_b = fit_pair(sphere(0.5), check_mesh(torus.vertices, torus.faces, name="Torus"), TINY_FIT)
    morph = morph_levelset(model_a, model_b, SMALL)
    frames = extract_frames(morph, even_times(5), resolution=48)
    genus = [(2 - trimesh.Trimesh(f.vertices, f.faces).euler_number) // 2 for f in frames]
    assert genus[0] == 0 and genus[-1] == 1, genus
    assert all(g in (0, 1) for g in genus), genus
    reference = trimesh.Trimesh(torus.vertices, torus.faces)
    assert mesh_metrics(frames[-1].vertices, frames[-1].faces, reference.vertices, reference.faces).iou > 0.9


def test_a_saved_morph_gives_identical_values(concentric, tmp_path):
    morph = concentric[2]
    save_morph(morph, tmp_path / "morph.pt")
    loaded = load_morph(tmp_path / "morph.pt")
    inputs = torch.rand(200, 4) * 2 - 1
    torch.testing.assert_close(loaded.network(inputs), morph.network(inputs), rtol=0, atol=0)
    assert loaded.normalization == morph.normalization and loaded.metadata["morph"]["method"] == "levelset"


def test_aligning_bounds_puts_the_target_on_the_source_box():
    source = check_mesh(trimesh.creation.box(extents=(2.0, 1.0, 1.0)).vertices + 5.0, trimesh.creation.box().faces)
    target = sphere(0.1)
    moved, scale, offset = align_bounds(target, source)
    np.testing.assert_allclose(moved.vertices.min(0)[0], source.vertices.min(0)[0], atol=1e-9)
    np.testing.assert_allclose(moved.vertices.max(0)[0], source.vertices.max(0)[0], atol=1e-9)
    np.testing.assert_allclose(moved.vertices.mean(0), 5.0, atol=1e-9)
    assert scale == pytest.approx(10.0) and np.array_equal(moved.faces, target.faces)


def test_shapes_fitted_apart_are_refused_and_cancel_stops():
    model_a = fit_sdf(sphere(0.3, 2), preset("tiny", steps=5))
    model_b = fit_sdf(sphere(0.7, 2), preset("tiny", steps=5))
    with pytest.raises(ValueError, match="one shared cube"):
        morph_levelset(model_a, model_b, SMALL)
    model_a, model_b = fit_pair(sphere(0.3, 2), sphere(0.7, 2), preset("tiny", steps=5))
    with pytest.raises(Cancelled):
        morph_levelset(model_a, model_b, SMALL, should_cancel=lambda: True)
    with pytest.raises(ValueError, match="at least 2 frames"):
        even_times(1)


def test_the_morph_methods_are_one_registry_that_the_protocol_names():
    """Issue 11: the protocol's literal list (kept free of torch) is the registry's."""
    assert MORPH_METHODS == tuple(METHODS)
    for name, method in METHODS.items():
        config = morph_config(name, steps=7, device="cpu", seed=3)
        assert isinstance(config, method.config_class) and (config.steps, config.device, config.seed) == (7, "cpu", 3)
        assert method.config_class.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown morph method 'blend'; choose one of levelset, flow"):
        morph_config("blend")
    # The method is looked up before the models are touched.
    with pytest.raises(ValueError, match="landmarks apply to the flow method only"):
        morph(None, None, morph_config("levelset"), landmarks=(np.zeros((1, 3)), np.zeros((1, 3))))
    with pytest.raises(ValueError, match="is no morph config"):
        morph(None, None, {"steps": 3})


def test_bad_level_set_settings_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="LevelSetMorphConfig.steps must be at least 1"):
        LevelSetMorphConfig(steps=0)
    with pytest.raises(ValueError, match="correction must have in_features=4 and out_features=1"):
        LevelSetMorphConfig(correction=SirenConfig(in_features=3))
    with pytest.raises(ValueError, match="near_surface_share must be in"):
        LevelSetMorphConfig(near_surface_share=1.5)
    with pytest.raises(ValueError, match="blend_weight"):
        LevelSetMorphConfig(blend_weight=-1.0)


def test_cli_morph_writes_frames_times_and_the_morph(tmp_path):
    for name, radius in (("a", INNER), ("b", OUTER)):
        mesh = trimesh.creation.icosphere(subdivisions=3, radius=radius)
        mesh.export(tmp_path / f"{name}.ply")
    out = tmp_path / "morph"
    result = run_engine_cli(
        "morph", tmp_path / "a.ply", tmp_path / "b.ply", "-o", out, "--preset", "tiny", "--fit-steps", "100",
        "--steps", "10", "--frames", "3", "--resolution", "32", "--align", "none",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "times.json").read_text())
    assert report["times"] == [0.0, 0.5, 1.0] and report["method"] == "levelset"
    assert report["target_alignment"] is None
    sizes = [np.ptp(trimesh.load(out / name, process=False).vertices[:, 0]) for name in report["frames"]]
    assert sizes[0] < sizes[1] < sizes[2]
    assert load_morph(out / "morph.pt").metadata["morph"]["method"] == "levelset"

    failed = run_engine_cli("morph", tmp_path / "a.ply", tmp_path / "b.ply", "-o", out, "--landmarks", "x.json")
    assert failed.returncode == 2 and "--landmarks applies to --method flow" in failed.stderr
