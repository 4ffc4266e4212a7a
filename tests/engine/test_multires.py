"""Levels of detail from one model (issue 15): the multiresolution SDF (engine.multires), its fit
(engine.multires_fit), its model file, its band-culled extraction, the consumers of a fitted model, and the CLI.

Fits are tiny (a few CPU seconds each, one per module): a sphere of radius 0.5 in 2 levels and a torus in 3."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import trimesh

from engine.conventions import Normalization
from engine.extraction import extract_mesh
from engine.fit import preset
from engine.geometry import curvatures
from engine.mesh_io import TriangleMesh
from engine.metrics import mesh_metrics
from engine.model import SDFModel, load_model, reexpressed
from engine.multires import MAX_STAGES, LevelOfDetail, MultiresConfig, MultiresSDF, level_weights
from engine.multires_fit import fit_multires, level_surface_samples, stage_configs, stage_steps
from engine.networks import SirenConfig
from engine.render_levels import level_stack

TINY = dict(steps=150, pool_size=20_000, surface_batch=1500, volume_batch=1500)


def tiny_network(deltas=(0.1, 0.05, 0.0), reaches=(0.04, 0.03, 0.0)) -> MultiresSDF:
    torch.manual_seed(0)
    stages = tuple(SirenConfig(8 * (i + 1), 1, 5.0 * (i + 1)) for i in range(len(deltas)))
    return MultiresSDF(MultiresConfig(stages, tuple(deltas), tuple(reaches)))


@pytest.fixture(scope="module")
def sphere():
    shape = trimesh.creation.icosphere(4, 0.5)
    mesh = TriangleMesh(shape.vertices, shape.faces)
    return mesh, fit_multires(mesh, preset("tiny", **TINY), 2)


@pytest.fixture(scope="module")
def torus():
    shape = trimesh.creation.torus(0.5, 0.15)
    mesh = TriangleMesh(shape.vertices, shape.faces)
    return mesh, fit_multires(mesh, preset("tiny", **TINY), 3)


def at_level(model: SDFModel, level) -> SDFModel:
    return SDFModel(LevelOfDetail(model.network, level), model.normalization)


# the network


def test_level_weights_follow_the_convention_and_refuse_levels_out_of_range():
    assert level_weights(None, 3) == [1.0, 1.0, 1.0]
    assert level_weights(0, 3) == [1.0, 0.0, 0.0]
    assert level_weights(1.25, 3) == [1.0, 1.0, 0.25]
    assert level_weights(2, 3) == [1.0, 1.0, 1.0]
    for bad in (-0.1, 2.5, math.nan, True, "1"):
        with pytest.raises(ValueError, match="level"):
            level_weights(bad, 3)


def test_a_level_between_integers_blends_the_two_levels_continuously():
    network = tiny_network()
    x = torch.rand(200, 3) * 2 - 1
    stages = [stage(x) for stage in network.stages]
    with torch.no_grad():
        assert torch.allclose(network(x, 0), stages[0])
        assert torch.allclose(network(x, 1), stages[0] + stages[1])
        assert torch.allclose(network(x), sum(stages))
        for t in (0.0, 0.3, 0.999, 1.0):
            blended = (1 - t) * network(x, 1) + t * network(x, 2)
            assert torch.allclose(network(x, 1 + t), blended, atol=1e-6)
        steps = torch.stack([network(x, level) for level in np.linspace(0, 2, 201)])
        jumps = (steps[1:] - steps[:-1]).abs().max()
        assert jumps <= 0.01 * max(stage.abs().max() for stage in stages[1:]) + 1e-6


def test_stage_configs_rise_in_band_and_size():
    stages = stage_configs(SirenConfig(), 3)
    sizes = [(s.hidden_features, s.hidden_layers, s.first_omega) for s in stages]
    assert sizes == [(64, 2, 7.5), (128, 2, 15.0), (256, 3, 30.0)]
    assert stage_configs(SirenConfig(), 1) == (SirenConfig(),)
    with pytest.raises(ValueError, match="levels"):
        stage_configs(SirenConfig(), 0)


def test_the_finest_stage_gets_the_steps_the_coarse_stages_leave():
    # Issue 15: the finest level must match one network trained for the fit's whole time.
    assert stage_steps(500, 3) == (250, 250, 1000)
    assert stage_steps(501, 2) == (250, 752)
    assert stage_steps(300, 1) == (300,)
    for levels in (2, 3, 4):
        steps = stage_steps(401, levels)
        assert sum(steps) == levels * 401 and steps[-1] == max(steps)


def test_a_residual_stage_trains_with_the_gradients_of_autograd_through_the_frozen_stages():
    from engine.fit import LossWeights, fitting_loss
    from engine.multires_fit import _Residual

    network = tiny_network()
    network.requires_grad_(False)
    trained = network.stages[2].requires_grad_(True)
    generator = torch.Generator().manual_seed(0)
    batch = [torch.rand(300, 3, generator=generator) * 2 - 1, torch.randn(300, 3, generator=generator),
             torch.rand(300, 3, generator=generator) * 2 - 1, torch.rand(300, generator=generator)]  # fmt: skip

    class ThroughAutograd(torch.nn.Module):
        def forward(self, x):
            return network(x, 1) + trained(x)

    results = []
    for module in (ThroughAutograd(), _Residual(LevelOfDetail(network, 1), trained)):
        trained.zero_grad()
        loss, _ = fitting_loss(module, *batch, LossWeights(), 0.25)
        loss.backward()
        results.append((loss.item(), torch.cat([p.grad.flatten() for p in trained.parameters()])))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4, atol=1e-4 * float(results[0][1].abs().max()))


# the model file


def test_a_multires_model_file_round_trips_every_stage_and_delta(tmp_path):
    network = tiny_network()
    model = SDFModel(network, Normalization((0.1, 0.0, -0.2), 1.7), {"levels": 3})
    model.save(tmp_path / "lod.pt")
    header = json.loads(torch.load(tmp_path / "lod.pt", weights_only=True)["header_json"])
    assert header["kind"] == "multires"
    assert header["architecture"]["deltas"] == [0.1, 0.05, 0.0]
    assert header["architecture"]["reaches"] == [0.04, 0.03, 0.0]
    assert [s["hidden_features"] for s in header["architecture"]["stages"]] == [8, 16, 24]
    loaded = load_model(tmp_path / "lod.pt")
    assert isinstance(loaded.network, MultiresSDF) and loaded.network.config == network.config
    assert loaded.network.deltas.tolist() == pytest.approx([0.1, 0.05, 0.0])
    assert level_stack(loaded.network).deltas == pytest.approx((0.04, 0.03))  # a tracer's bands are the reaches
    x = torch.rand(50, 3)
    with torch.no_grad():
        for level in (None, 0, 1.5):
            assert torch.equal(loaded.network(x, level), network(x, level))


def test_a_multires_file_written_before_reaches_loads_and_traces_on_its_deltas(tmp_path):
    path = tmp_path / "older.pt"
    SDFModel(tiny_network(), Normalization((0.0, 0.0, 0.0), 1.0)).save(path)
    _rewritten(path, lambda architecture: architecture.pop("reaches"))
    loaded = load_model(path)
    assert loaded.network.config.reaches == () and loaded.network.config.deltas == (0.1, 0.05, 0.0)
    assert level_stack(loaded.network).deltas == pytest.approx((0.1, 0.05))


def _rewritten(path, change_header=None, change_state=None):
    archive = torch.load(path, weights_only=True)
    header = json.loads(archive["header_json"])
    if change_header:
        change_header(header["architecture"])
    state = archive["state_dict"]
    if change_state:
        change_state(state)
    torch.save({"header_json": json.dumps(header), "state_dict": state}, path)


@pytest.mark.parametrize(
    "change_header, change_state, problem",
    [
        (lambda a: a.update(deltas=[0.1, 0.05]), None, "one delta per stage"),
        (lambda a: a.update(deltas=[0.1, -0.05, 0.0]), None, "delta must be a number"),
        (lambda a: a.update(deltas=[0.1, float("nan"), 0.0]), None, "delta must be a number"),
        (lambda a: a.update(deltas=[0.1, True, 0.0]), None, "delta must be a number"),
        (lambda a: a.update(stages=[]), None, "1 to 8 stages"),
        (lambda a: a.update(stages=a["stages"] * 3, deltas=a["deltas"] * 3), None, "1 to 8 stages"),
        (lambda a: a.update(extra=1), None, "stages, deltas, reaches and reach_cells"),
        (lambda a: a.update(reach_cells=1), None, "reach_cells must be 0 or an integer in \\[2, 64\\]"),
        (lambda a: a.update(reach_cells=65), None, "reach_cells must be"),
        (lambda a: a.update(reach_cells=4.0), None, "reach_cells must be"),
        (lambda a: a.update(reach_cells=4), None, "lack reach_grid"),
        (None, lambda s: s.__setitem__("reach_grid", torch.zeros(2, 4, 4, 4)), "unknown reach_grid"),
        (lambda a: a.update(reaches=[0.04, 0.03]), None, "no reach or one per stage"),
        (lambda a: a.update(reaches=[0.2, 0.03, 0.0]), None, "reach must be a number in \\[0, its delta 0.1\\]"),
        (lambda a: a.update(reaches=[0.04, float("nan"), 0.0]), None, "reach must be a number"),
        (lambda a: a["stages"][1].update(hidden_features=10**6), None, "stage 1: .*hidden_features"),
        (lambda a: a["stages"][2].update(in_features=4), None, "stage 2 takes 4 inputs"),
        (lambda a: a["stages"][0].update(first_omega=1e9), None, "stage 0: .*first_omega"),
        (None, lambda s: s.__setitem__("stages.1.output.bias", torch.tensor([math.inf])), "NaN or infinite"),
        (None, lambda s: s.__setitem__("stages.0.output.weight", torch.zeros(1, 9)), "shape"),
        (None, lambda s: s.pop("stages.2.output.bias"), "lack"),
        (None, lambda s: s.__setitem__("stages.3.output.bias", torch.zeros(1)), "unknown"),
    ],
)
def test_a_bad_multires_header_or_weights_are_refused_before_any_network_is_built(
    tmp_path, change_header, change_state, problem
):
    path = tmp_path / "bad.pt"
    SDFModel(tiny_network(), Normalization((0.0, 0.0, 0.0), 1.0)).save(path)
    _rewritten(path, change_header, change_state)
    with pytest.raises(ValueError, match=f"is not a model file written by this engine.*{problem}"):
        load_model(path)
    assert MAX_STAGES == 8


def test_a_multires_model_is_re_expressed_exactly_in_another_cube():
    model = SDFModel(tiny_network(), Normalization((0.1, 0.2, 0.3), 0.7))
    other = Normalization((-0.1, 0.0, 0.2), 0.5)
    moved = SDFModel(reexpressed(model, other), other)
    points = np.random.default_rng(0).uniform(-1, 1, (100, 3))
    np.testing.assert_allclose(moved.sdf(points), model.sdf(points), atol=1e-5)
    assert moved.network.config.deltas == pytest.approx([d * 0.5 / 0.7 for d in model.network.config.deltas])
    assert moved.network.config.reaches == pytest.approx([r * 0.5 / 0.7 for r in model.network.config.reaches])


# the fit


def test_on_a_sphere_every_level_is_the_sphere(sphere):
    mesh, model = sphere
    for level in range(model.network.levels):
        vertices, _ = extract_mesh(at_level(model, level), 64)
        radii = np.linalg.norm(vertices, axis=1)
        assert abs(radii.mean() - 0.5) < 0.01 * 0.5 and radii.std() < 0.01 * 0.5, level


def test_the_levels_are_nested(torus):
    mesh, model = torus
    network = model.network
    deltas, reaches = network.config.deltas, network.config.reaches
    assert deltas[-1] == 0.0 and all(d > 0 for d in deltas[:-1])
    assert reaches[-1] == 0.0 and all(0 < r <= d for r, d in zip(reaches[:-1], deltas))
    assert all(d >= t for d, t in zip(deltas, model.metadata["trained_deltas"]))
    for level in range(1, network.levels):
        # The extracted surface of level k (grid vertices, independent of the fit's samples) and its Newton samples.
        vertices, _ = extract_mesh(at_level(model, level), 64, band_culling=False)
        unit = torch.from_numpy(model.normalization.to_unit(vertices).astype(np.float32))
        on_surface = level_surface_samples(network, level, unit)
        assert len(on_surface) > 0.9 * len(unit)
        with torch.no_grad():
            for coarser in range(level):
                assert float(network(on_surface, coarser).abs().max()) <= deltas[coarser], (level, coarser)
                if level == network.levels - 1:  # what a tracer relies on: the finest surface within the reaches
                    assert float(network(on_surface, coarser).abs().max()) <= reaches[coarser], coarser


def test_the_local_reaches_bound_the_finest_surface_cell_by_cell_and_travel_with_the_file(torus, tmp_path):
    mesh, model = torus
    network = model.network
    grid = network.reach_grid
    cells = network.config.reach_cells
    assert cells == 32 and grid.shape == (network.levels - 1, cells, cells, cells)
    # The finest surface extracted on a grid (independent of the fit's samples): within each cell's local reach.
    vertices, _ = extract_mesh(model, 64, band_culling=False)
    unit = torch.from_numpy(model.normalization.to_unit(vertices).astype(np.float32))
    on_surface = level_surface_samples(network, network.levels - 1, unit)
    index = ((on_surface + 1.0) * (cells / 2.0)).long().clamp(0, cells - 1)
    with torch.no_grad():
        for level in range(network.levels - 1):
            local = grid[level][index[:, 0], index[:, 1], index[:, 2]]
            assert bool((network(on_surface, level).abs() <= local).all()), level
            assert float(grid[level].max()) <= network.config.reaches[level] + 1e-6
            assert float(local.median()) < 0.7 * network.config.reaches[level]  # narrower than the global reach
    model.save(tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    assert torch.equal(loaded.network.reach_grid, grid) and torch.equal(level_stack(loaded.network).reach_grids, grid)
    moved = reexpressed(model, Normalization((0.1, 0.0, 0.0), model.normalization.scale / 2))
    assert moved.reach_grid is None and moved.config.reach_cells == 0  # its cells were the old cube's
    loaded.network.reach_grid[0, 0, 0, 0] = -1.0
    with pytest.raises(ValueError, match="negative reaches"):
        level_stack(loaded.network)


def test_chamfer_to_the_input_falls_with_each_level(torus):
    mesh, model = torus
    chamfers = [  # 20k samples a mesh and almost no IoU points: only the Chamfer is read
        mesh_metrics(*extract_mesh(at_level(model, level), 96), mesh.vertices, mesh.faces, samples=20_000,
                     iou_points=1000).chamfer_l1  # fmt: skip
        for level in range(model.network.levels)
    ]
    assert chamfers[0] > chamfers[1] > chamfers[2], chamfers


def test_away_from_its_band_a_finer_level_keeps_the_coarser_sign(torus):
    _, model = torus
    network = model.network
    x = torch.rand(200_000, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        for level in range(network.levels - 1):
            coarse = network(x, level)
            away = coarse.abs() > network.deltas[level]
            for finer in np.linspace(level + 0.5, network.levels - 1, 3):
                assert bool((torch.sign(network(x[away], float(finer))) == torch.sign(coarse[away])).all())


# extraction


@pytest.mark.parametrize("level", [None, 0, 1, 1.5])
@pytest.mark.parametrize("skip_empty_space", [True, False])
def test_band_culled_extraction_gives_the_full_evaluations_mesh(torus, level, skip_empty_space):
    _, model = torus
    culled = extract_mesh(model, 64, level=level, skip_empty_space=skip_empty_space)
    full = extract_mesh(model, 64, level=level, skip_empty_space=skip_empty_space, band_culling=False)
    assert np.array_equal(culled[1], full[1])
    np.testing.assert_allclose(culled[0], full[0], atol=1e-6)


def test_band_culling_evaluates_the_finer_stages_only_near_the_surface(torus):
    _, model = torus
    field = LevelOfDetail(model.network)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, 48)] * 3, indexing="ij"), -1).reshape(-1, 3)
    with torch.no_grad():
        culled = field.band_bounded(grid, 0.0)
        full = field(grid)
    counts = field.stage_evaluations
    assert counts[0] == len(grid) and counts[2] <= counts[1] < 0.5 * len(grid)
    assert bool((torch.sign(culled) == torch.sign(full)).all())
    with torch.no_grad():
        network = model.network
        exact = (network(grid, 0).abs() <= network.deltas[0]) & (network(grid, 1).abs() <= network.deltas[1])
    assert torch.allclose(culled[exact], full[exact], atol=1e-6)


def test_a_level_out_of_range_or_of_a_one_level_model_is_refused(torus, sphere):
    _, model = torus
    with pytest.raises(ValueError, match=r"level 3 is outside \[0, 2\]"):
        extract_mesh(model, 32, level=3)
    plain = SDFModel(model.network.stages[0], model.normalization)
    with pytest.raises(ValueError, match="fit --levels"):
        extract_mesh(plain, 32, level=1)
    assert len(extract_mesh(plain, 32, level=0)[1]) > 0


# consumers of a fitted model


def test_curvature_of_a_multires_model_is_the_finest_levels(sphere):
    _, model = sphere
    points = torch.from_numpy(model.normalization.to_unit(extract_mesh(model, 48)[0]).astype(np.float32))
    result = curvatures(model.network, points)
    # unit-cube radius 0.9: H = 1 / 0.9 within a few per cent for a tiny fit (autograd through every stage)
    assert abs(float(np.median(result.mean)) - 1 / 0.9) < 0.05 / 0.9


def test_mean_curvature_flow_evolves_a_multires_model_and_other_flows_say_what_to_do(torus, tmp_path):
    from engine.evolution import EvolveConfig, evolve, load_evolution, save_evolution
    from engine.surface_flows import Flow

    _, model = torus
    config = EvolveConfig(steps=2, spacetime_batch=100, pool_size=2000)
    evolution = evolve(model, Flow(mean_curvature=0.01), (0.0, 1.0), config)
    save_evolution(evolution, tmp_path / "evolution.pt")
    start = load_evolution(tmp_path / "evolution.pt")
    points = np.random.default_rng(0).uniform(-0.5, 0.5, (200, 3))
    moved = evolution.network.fitted  # the fitted levels, re-expressed in the evolution's cube, at t = 0 exactly
    assert isinstance(moved, MultiresSDF) and isinstance(start.network.fitted, MultiresSDF)
    np.testing.assert_allclose(SDFModel(moved, evolution.normalization).sdf(points), model.sdf(points), atol=1e-5)
    with pytest.raises(ValueError, match="evolves by mean curvature flow alone; for normal speeds and vector fields"):
        evolve(model, Flow(normal_speed=0.1), (0.0, 1.0), config)


# the command line


def test_fit_levels_and_extract_at_a_level_from_the_command_line(tmp_path):
    from engine.cli import main
    from engine.mesh_io import load_mesh

    shape = trimesh.creation.icosphere(3, 0.5)
    shape.export(tmp_path / "ball.ply")
    assert main(["fit", str(tmp_path / "ball.ply"), "-o", str(tmp_path / "fit"), "--preset", "tiny", "--steps", "40",
                 "--levels", "2", "--resolution", "32", "--no-metrics"]) == 0  # fmt: skip
    model = load_model(tmp_path / "fit" / "model.pt")
    assert isinstance(model.network, MultiresSDF) and model.network.levels == 2
    summary = json.loads((tmp_path / "fit" / "metrics.json").read_text())
    assert summary["levels"] == 2 and len(summary["deltas"]) == 2
    for level in ("0", "0.5", "1"):
        assert main(["extract", str(tmp_path / "fit" / "model.pt"), "-o", str(tmp_path / f"l{level}.ply"),
                     "--resolution", "32", "--level", level]) == 0  # fmt: skip
        vertices = load_mesh(tmp_path / f"l{level}.ply").vertices
        assert abs(np.linalg.norm(vertices, axis=1).mean() - 0.5) < 0.05
    assert main(["extract", str(tmp_path / "fit" / "model.pt"), "-o", str(tmp_path / "bad.ply"), "--level", "2"]) != 0
    assert not (tmp_path / "bad.ply").exists()
