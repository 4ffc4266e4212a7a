"""Fitting, the model file and extraction, on shapes with known answers."""

import dataclasses

import numpy as np
import pytest
import torch
import trimesh

from engine.conventions import UNIT_HALF_SIZE, Normalization
from engine.extraction import extract_mesh
from engine.fit import FitConfig, fit_sdf, preset
from engine.jobs import JOBS, JobContext
from engine.mesh_io import check_mesh
from engine.model import MODEL_FORMAT_VERSION, SDFModel, load_model, reexpressed
from engine.networks import Siren, SirenConfig
from engine.training import Cancelled, cosine_schedule

SPHERE_CENTER = np.array([3.0, -2.0, 10.0])
SPHERE_RADIUS = 2.5


@pytest.fixture(scope="module")
def fitted_sphere():
    """A sphere far from the origin and larger than the unit cube, so normalization matters."""
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=SPHERE_RADIUS)
    mesh = check_mesh(sphere.vertices + SPHERE_CENTER, sphere.faces, name="Sphere")
    return fit_sdf(mesh, preset("tiny", steps=300))


def test_normalization_round_trip_and_unit_cube():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(100, 3)) * [5.0, 1.0, 0.2] + [100.0, -3.0, 7.0]
    transform = Normalization.fit_bounds(points)
    unit = transform.to_unit(points)
    np.testing.assert_allclose(np.abs(unit).max(), UNIT_HALF_SIZE)
    np.testing.assert_allclose((unit.max(axis=0) + unit.min(axis=0)) / 2, 0.0, atol=1e-12)
    np.testing.assert_allclose(transform.to_input(unit), points, rtol=1e-12)
    assert Normalization.from_dict(transform.to_dict()) == transform
    with pytest.raises(ValueError, match="span no volume"):
        Normalization.fit_bounds(np.ones((4, 3)))


def test_a_fitted_sphere_has_the_right_radius_in_input_coordinates(fitted_sphere):
    vertices, faces = extract_mesh(fitted_sphere, 64)
    radius = np.linalg.norm(vertices - SPHERE_CENTER, axis=1)
    assert np.abs(radius - SPHERE_RADIUS).max() < 0.02 * SPHERE_RADIUS
    assert abs(np.median(radius) - SPHERE_RADIUS) < 0.005 * SPHERE_RADIUS
    assert trimesh.Trimesh(vertices, faces).volume > 0, "faces must point outward"
    # distances come back in input units, negative inside (near the surface, where a short fit is accurate)
    probes = SPHERE_CENTER + np.array([[0.8 * SPHERE_RADIUS, 0, 0], [0, 1.2 * SPHERE_RADIUS, 0]])
    np.testing.assert_allclose(fitted_sphere.sdf(probes), [-0.2 * SPHERE_RADIUS, 0.2 * SPHERE_RADIUS], atol=0.05)


def test_a_saved_model_gives_identical_values_after_loading(fitted_sphere, tmp_path):
    path = tmp_path / "sphere.pt"
    fitted_sphere.save(path)
    loaded = load_model(path)
    points = SPHERE_CENTER + np.random.default_rng(1).uniform(-3, 3, size=(1000, 3))
    np.testing.assert_array_equal(loaded.sdf(points), fitted_sphere.sdf(points))
    assert loaded.normalization == fitted_sphere.normalization
    assert FitConfig.from_dict(loaded.metadata["fit_config"]) == preset("tiny", steps=300)


def test_a_model_reexpressed_in_another_cube_gives_the_same_distances(fitted_sphere):
    other = Normalization(center=(1.0, 0.5, 8.0), scale=0.2)
    network = reexpressed(fitted_sphere, other)
    points = np.random.default_rng(0).normal(size=(300, 3)) * 2.0 + SPHERE_CENTER
    moved = SDFModel(network, other)
    np.testing.assert_allclose(moved.sdf(points), fitted_sphere.sdf(points), rtol=1e-4, atol=1e-5)


def test_model_files_are_read_without_pickle(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"header_json": "{}", "state_dict": {}, "payload": Siren}, path)  # a class needs pickle to load
    with pytest.raises(ValueError, match="is not a model file written by this engine"):
        load_model(path)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pt")


def test_a_newer_model_format_is_refused_with_a_clear_error(fitted_sphere, tmp_path):
    path = tmp_path / "future.pt"
    fitted_sphere.save(path)
    archive = torch.load(path, weights_only=True)
    current = f'"format_version": {MODEL_FORMAT_VERSION}'
    archive["header_json"] = archive["header_json"].replace(current, '"format_version": 99')
    torch.save(archive, path)
    with pytest.raises(ValueError, match="update the engine"):
        load_model(path)


def test_skipping_empty_space_gives_the_dense_mesh(fitted_sphere):
    sparse_vertices, sparse_faces = extract_mesh(fitted_sphere, 97)
    dense_vertices, dense_faces = extract_mesh(fitted_sphere, 97, skip_empty_space=False)
    np.testing.assert_array_equal(sparse_faces, dense_faces)
    # values differ only by float32 rounding of different batch shapes
    cell = 2.0 / 96 / fitted_sphere.normalization.scale
    np.testing.assert_allclose(sparse_vertices, dense_vertices, atol=1e-3 * cell)


def test_skipping_empty_space_is_exact_on_a_random_network():
    """A random SIREN has many small surface pieces and |grad f| far from 1: the hard case for skipping."""
    torch.manual_seed(3)
    network = Siren(SirenConfig(hidden_features=32, hidden_layers=2, first_omega=10.0))
    with torch.no_grad():
        network.output.bias.fill_(0.05)
    model = SDFModel(network, Normalization((0.0, 0.0, 0.0), 1.0))
    sparse = extract_mesh(model, 65)
    dense = extract_mesh(model, 65, skip_empty_space=False)
    np.testing.assert_array_equal(sparse[1], dense[1])
    np.testing.assert_allclose(sparse[0], dense[0], atol=1e-5)


def test_extraction_of_a_shape_with_no_surface_says_so():
    network = Siren(SirenConfig(hidden_features=8, hidden_layers=1))
    with torch.no_grad():
        network.output.weight.zero_()
        network.output.bias.fill_(1.0)
    with pytest.raises(ValueError, match="positive everywhere"):
        extract_mesh(SDFModel(network, Normalization((0.0, 0.0, 0.0), 1.0)), 16)


def test_progress_is_reported_and_cancel_stops_the_fit(sphere_mesh):
    mesh = check_mesh(*sphere_mesh)
    reports = []
    config = preset("tiny", steps=40, pool_size=2000)
    fit_sdf(mesh, config, on_progress=reports.append, progress_interval_s=0.0)
    assert [r.step for r in reports] == list(range(1, 41))
    assert reports[-1].eta_s == 0.0 and set(reports[-1].terms) == {"surface", "sdf", "normal", "eikonal"}
    with pytest.raises(Cancelled, match="step 5 of 40"):
        fit_sdf(
            mesh, config, on_progress=reports.append, should_cancel=lambda: len(reports) >= 45, progress_interval_s=0.0
        )


def test_several_meshes_are_fitted_as_one_shape():
    left = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    right = left.copy()
    left.apply_translation((-0.6, 0, 0))
    right.apply_translation((0.6, 0, 0))
    meshes = [check_mesh(m.vertices, m.faces) for m in (left, right)]
    model = fit_sdf(meshes, preset("tiny", steps=200))
    values = model.sdf(np.array([[-0.6, 0, 0], [0.6, 0, 0], [0.0, 0, 0]]))
    assert values[0] < 0 and values[1] < 0 and values[2] > 0


def test_the_fit_says_which_share_of_its_inputs_surface_it_took_as_inside(tmp_path):
    body, arm = trimesh.creation.box((1.0, 1.0, 1.0)), trimesh.creation.box((1.0, 1.0, 1.0))
    arm.apply_translation((0.5, 0.0, 0.0))  # half inside the body: one side of each box is buried in the other

    def fit(names, inputs, folder):
        spec = JOBS["fit"].from_params(
            {"names": names, "preset": "tiny", "steps": 20, "resolution": 16, "device": "cpu"}
        )
        (tmp_path / folder).mkdir()
        return spec.run(inputs, JobContext(output_dir=tmp_path / folder)).summary

    inputs = {"vertices_0": body.vertices, "faces_0": body.faces}
    summary = fit(["Body", "Arm"], {**inputs, "vertices_1": arm.vertices, "faces_1": arm.faces}, "both")
    assert summary["interior_area_share"] == pytest.approx(2 / 12, abs=1e-4)
    assert summary["warnings"][0].startswith("16.7% of the surface area of 'Body', 'Arm' lies inside the shape")
    alone = fit(["Body"], inputs, "alone")
    assert "interior_area_share" not in alone and "warnings" not in alone


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="steps must be at least 1"):
        preset("fast", steps=0)
    with pytest.raises(ValueError, match="unknown preset 'best'"):
        preset("best")
    with pytest.raises(ValueError, match="eikonal_share"):
        preset("fast", eikonal_share=0.0)
    with pytest.raises(ValueError, match="weight_averaging"):
        preset("fast", weight_averaging=1.0)
    with pytest.raises(ValueError, match="weight_scale must be a positive number"):
        preset("fast", weight_scale=0.0)
    with pytest.raises(ValueError, match=r"warmup_steps must be in \[0, steps\)"):
        preset("fast", steps=100, warmup_steps=100)


def test_the_learning_rate_warms_up_linearly_then_follows_the_cosine():
    optimizer = torch.optim.Adam(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    schedule = cosine_schedule(optimizer, steps=10, final_factor=0.1, warmup_steps=3)
    rates = []
    for _ in range(11):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    np.testing.assert_allclose(rates[:4], [0.25, 0.5, 0.75, 1.0])
    # The cosine over the 7 steps left: halfway (step 6.5) it is the mean of the start and the end.
    np.testing.assert_allclose((rates[6] + rates[7]) / 2, 0.55, atol=0.02)
    assert rates[-1] == pytest.approx(0.1)


def test_weight_scaling_multiplies_every_initial_weight_but_the_output_layer(sphere_mesh, monkeypatch):
    mesh = check_mesh(*sphere_mesh)
    starts = []
    original_adam = torch.optim.Adam

    def recording_adam(parameters, **options):
        parameters = list(parameters)
        starts.append([p.detach().clone() for p in parameters])
        return original_adam(parameters, **options)

    monkeypatch.setattr(torch.optim, "Adam", recording_adam)
    config = preset("tiny", steps=1, pool_size=1000)
    fit_sdf(mesh, config)
    fit_sdf(mesh, dataclasses.replace(config, weight_scale=2.0))
    plain, scaled = starts
    names = [name for name, _ in Siren(config.network).named_parameters()]
    for name, before, after in zip(names, plain, scaled):
        factor = 2.0 if name.startswith("layers.") and name.endswith("weight") else 1.0
        torch.testing.assert_close(after, factor * before, msg=name)


def test_weight_averaging_keeps_the_averaged_weights(sphere_mesh):
    mesh = check_mesh(*sphere_mesh)
    config = preset("tiny", steps=60, pool_size=4000, validate_every=60)
    raw = fit_sdf(mesh, config)
    averaged = fit_sdf(mesh, dataclasses.replace(config, weight_averaging=0.9))
    raw_weights, averaged_weights = raw.network.state_dict(), averaged.network.state_dict()
    assert any(not torch.equal(raw_weights[name], averaged_weights[name]) for name in raw_weights)
    # Both describe the same sphere of radius 0.5: the average of nearby weights is a nearby function.
    points = np.array([[0.5, 0.0, 0.0], [0.0, -0.5, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(averaged.sdf(points), raw.sdf(points), atol=0.05)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when no GPU is present")
def test_asking_for_cuda_without_a_gpu_says_what_to_install(sphere_mesh):
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        fit_sdf(check_mesh(*sphere_mesh), preset("tiny", device="cuda"))


@pytest.mark.parametrize("first_layer", ["trained", "tuner"])
@pytest.mark.parametrize("with_distances", [True, False])
def test_the_explicit_loss_equals_autograds_in_value_terms_and_parameter_gradients(first_layer, with_distances):
    from engine.fit import LossWeights, explicit_fitting_loss, fitting_loss

    config = FitConfig(network=SirenConfig(hidden_features=32, hidden_layers=2), tuner=first_layer == "tuner")
    torch.manual_seed(4)
    network = Siren(config.network_config()).double()
    generator = torch.Generator().manual_seed(5)
    surface, volume = (torch.rand(n, 3, generator=generator, dtype=torch.float64) * 2 - 1 for n in (40, 60))
    normals = torch.nn.functional.normalize(torch.randn(40, 3, generator=generator, dtype=torch.float64), dim=1)
    distances = torch.rand(60, generator=generator, dtype=torch.float64) - 0.5 if with_distances else None
    results = []
    for loss_function in (fitting_loss, explicit_fitting_loss):
        network.zero_grad()
        loss, terms = loss_function(network, surface, normals, volume, distances, LossWeights(), 0.25)
        loss.backward()
        gradients = [p.grad.clone() for p in network.parameters() if p.requires_grad]
        results.append((loss.detach(), terms, gradients))
    (loss, terms, gradients), (explicit_loss, explicit_terms, explicit_gradients) = results
    assert set(terms) == set(explicit_terms) and ("sdf" in terms) == with_distances
    torch.testing.assert_close(explicit_loss, loss, rtol=1e-12, atol=0)
    for name in terms:
        torch.testing.assert_close(explicit_terms[name], terms[name], rtol=1e-12, atol=1e-12)
    for explicit, reference in zip(explicit_gradients, gradients, strict=True):
        torch.testing.assert_close(explicit, reference, rtol=1e-10, atol=1e-12)


def test_a_compiled_step_trains_the_same_fit(sphere_mesh):
    mesh = check_mesh(*sphere_mesh)
    config = preset("tiny", steps=40, pool_size=4000, surface_batch=500, volume_batch=500, validate_every=20,
                    network=SirenConfig(hidden_features=32, hidden_layers=2, first_omega=15.0))  # fmt: skip
    eager = fit_sdf(mesh, config)
    compiled = fit_sdf(mesh, dataclasses.replace(config, compiled_step=True))
    assert compiled.metadata["fit_config"]["compiled_step"] is True
    # The same loss up to float rounding in another order of operations: 40 steps later, the same field.
    assert compiled.metadata["best_validation_loss"] == pytest.approx(eager.metadata["best_validation_loss"], rel=1e-3)
    points = np.array([[0.5, 0.0, 0.0], [0.0, -0.3, 0.1], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(compiled.sdf(points), eager.sdf(points), atol=1e-4)
