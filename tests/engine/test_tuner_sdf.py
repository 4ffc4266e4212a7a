"""TUNER's frequency control on surface SIRENs (issue 15): an integer first layer (frozen integer frequencies, period P)
and bounds on the first hidden layer, in the model file's header; the fit option, its job and command-line flag."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import trimesh

from engine.extraction import extract_mesh
from engine.fit import FitConfig, fit_sdf, preset
from engine.jobs import JobParamError
from engine.jobs.fit import FitJob
from engine.mesh_io import check_mesh
from engine.model import SDFModel, load_model, reexpressed
from engine.networks import Siren, SirenConfig, checked_siren_config
from engine.conventions import Normalization
from tests.engine.test_bad_model_files import NOT_OURS, rewritten

INTEGER = SirenConfig(hidden_features=32, hidden_layers=2, first_layer="integer", band_limit=6, low_limit=2,
                      hidden_bounds=(1.0, 0.5))  # fmt: skip
NEW_FIELDS = ("first_layer", "period", "band_limit", "low_limit", "hidden_bounds")


@pytest.fixture(scope="module")
def sphere():
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    return check_mesh(mesh.vertices, mesh.faces)


@pytest.fixture(scope="module")
def tuner_model(sphere) -> SDFModel:
    return fit_sdf(sphere, preset("tiny", steps=80, tuner=True, device="cpu"))


def test_an_integer_first_layer_makes_the_network_periodic_to_float32_precision():
    torch.manual_seed(0)
    x = torch.rand(2000, 3) * 2 - 1
    for config in (INTEGER, dataclasses.replace(INTEGER, period=2.5)):
        network = Siren(config)
        plain = Siren(dataclasses.replace(config, first_layer="trained", band_limit=0, low_limit=0, hidden_bounds=None))
        scale = network(x).abs().max().item()
        for shift in ([1, 0, 0], [0, 1, 0], [0, 0, 1], [1, -2, 3]):
            moved = x + config.period * torch.tensor(shift, dtype=torch.float32)
            assert (network(moved) - network(x)).abs().max().item() <= 1e-5 * max(scale, 1.0)
            assert (plain(moved) - plain(x)).abs().max().item() > 1e-2  # a trained first layer does not repeat


def test_integer_frequencies_are_distinct_exact_integers_mostly_low():
    torch.manual_seed(1)
    network = Siren(dataclasses.replace(INTEGER, hidden_features=200, band_limit=8, low_limit=3))
    k = network.first_layer_frequencies()
    weight = network.layers[0].linear.weight.double()
    scaled = weight * (network.config.first_omega * network.config.period / (2 * math.pi))
    # Recovered as W omega P / (2 pi), exactly (TUNER's public code divides by P pi / 2 and gets no integers).
    assert (scaled - k).abs().max().item() < 1e-4 and k.dtype == torch.int64
    assert (scaled * (2 * math.pi) ** 2 / 4 - k).abs().max().item() > 0.1  # the public code's k = W omega P pi / 2
    rows = {tuple(row) for row in k.tolist()}
    assert len(rows) == 200  # drawn without replacement: no duplicate neurons
    assert not any(tuple(-v for v in row) in rows for row in rows)  # one of k and -k
    assert k.abs().max().item() <= 8 and {(1, 0, 0), (0, 1, 0), (0, 0, 1)} <= rows
    assert k.abs().amax(dim=1).le(3).float().mean().item() == pytest.approx(0.7, abs=0.02)
    assert not network.layers[0].linear.weight.requires_grad and network.layers[0].linear.bias.requires_grad


def test_a_tuner_fit_keeps_the_first_layer_and_the_hidden_weights_within_their_bounds(sphere):
    # Bounds tighter than SIREN's start (|omega W| <= sqrt(6 / 64) = 0.31) bind from the first step.
    config = preset("tiny", steps=30, tuner=True, tuner_bounds=(0.2, 0.1), weight_averaging=0.0, device="cpu")
    torch.manual_seed(config.seed)
    start = Siren(config.network_config()).layers[0].linear.weight.clone()
    network = fit_sdf(sphere, config).network
    bounds = network.hidden_column_bounds()
    weights = network.layers[1].linear.weight.detach().abs()
    assert bool((weights <= bounds + 1e-9).all())
    assert bool((weights >= bounds * (1 - 1e-6)).any())  # the clamp acted
    assert torch.equal(network.layers[0].linear.weight, start)  # frozen, bit for bit
    assert torch.unique(bounds * network.config.hidden_omega).tolist() == pytest.approx([0.1, 0.2])


def test_tuner_init_starts_the_first_hidden_layer_as_tuner_does(sphere):
    network = fit_sdf(sphere, preset("tiny", steps=1, tuner=True, tuner_init="tuner", device="cpu")).network
    bounds = network.hidden_column_bounds()
    share = (network.layers[1].linear.weight.detach().abs() / bounds).std().item()
    assert share == pytest.approx(0.3 * math.sqrt(1 - 2 / math.pi), rel=0.2)  # |N(0, (0.3 c)^2)| / c


def test_a_tuner_fit_saves_loads_and_extracts(tuner_model, sphere, tmp_path):
    path = tmp_path / "model.pt"
    tuner_model.save(path)
    loaded = load_model(path)
    assert loaded.network.config == tuner_model.network.config and loaded.network.config.hidden_bounds == (0.25, 0.1)
    assert loaded.network.config.first_layer == "integer" and loaded.network.config.band_limit == 16
    assert not loaded.network.layers[0].linear.weight.requires_grad
    for name, tensor in tuner_model.network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[name], tensor)
    assert FitConfig.from_dict(json.loads(json.dumps(loaded.metadata["fit_config"]))) == preset(
        "tiny", steps=80, tuner=True, device="cpu"
    )
    vertices, faces = extract_mesh(loaded, 40)
    radii = np.linalg.norm(vertices, axis=1)
    assert len(faces) > 100 and abs(np.median(radii) - 0.5) < 0.05


def test_headers_without_the_new_fields_load_as_trained_first_layers(sphere, tmp_path):
    plain = fit_sdf(sphere, preset("tiny", steps=1, device="cpu"))
    plain.save(tmp_path / "plain.pt")
    old = rewritten(tmp_path / "plain.pt", tmp_path / "old.pt", lambda h: [h["architecture"].pop(f) for f in NEW_FIELDS])
    loaded = load_model(old)
    assert loaded.network.config == plain.network.config and loaded.network.config.first_layer == "trained"
    assert loaded.network.layers[0].linear.weight.requires_grad


@pytest.mark.parametrize(
    "change, message",
    [
        ({"first_layer": "random"}, "first_layer must be 'trained' or 'integer'"),
        ({"period": -4.0}, r"period must be a number in \(0, 1000\]"),
        ({"period": "4"}, "period must be a number"),
        ({"band_limit": 2}, "band_limit 2 leaves fewer distinct integer frequencies than its 64"),
        ({"band_limit": 1000}, "band_limit is 1000: an integer first layer needs 1 to"),
        ({"band_limit": 2.5}, "band_limit must be an integer"),
        ({"low_limit": 17}, "low_limit 17 exceeds its band_limit 16"),
        ({"hidden_bounds": [0.0, 1.0]}, r"hidden_bounds must be null or two numbers \(c_low, c_high\)"),
        ({"hidden_bounds": [1.0]}, "hidden_bounds must be null or two numbers"),
        ({"low_limit": 0}, r"bounds the hidden weights \(hidden_bounds\) without a low cube"),
        ({"first_layer": "trained"}, "gives band_limit, low_limit or hidden_bounds to a trained first layer"),
    ],
)
def test_bad_frequency_control_headers_are_refused(tuner_model, tmp_path, change, message):
    tuner_model.save(tmp_path / "good.pt")
    bad = rewritten(tmp_path / "good.pt", tmp_path / "bad.pt", lambda h: h["architecture"].update(change))
    with pytest.raises(ValueError, match=f"{NOT_OURS}.*{message}"):
        load_model(bad)


def test_fit_config_round_trips_and_refuses_what_tuner_cannot_take():
    config = preset("fast", tuner=True, tuner_band=12, tuner_bounds=(0.8, 0.4), tuner_init="tuner")
    assert FitConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    architecture = config.network_config()
    assert (architecture.first_layer, architecture.band_limit, architecture.low_limit) == ("integer", 12, 4)
    assert checked_siren_config(json.loads(json.dumps(dataclasses.asdict(architecture)))) == architecture
    with pytest.raises(ValueError, match="leave network.first_layer 'trained' and weight_scale 1"):
        preset("fast", tuner=True, weight_scale=2.0)
    with pytest.raises(ValueError, match="tuner_band 3 holds fewer distinct integer frequencies"):
        preset("fast", tuner=True, tuner_band=3)
    with pytest.raises(ValueError, match="tuner_bounds must be two numbers"):
        preset("fast", tuner=True, tuner_bounds=(0.0, 0.5))


def test_the_fit_job_takes_tuner_but_not_with_levels():
    assert FitJob(names=("a",), tuner=True).fit_config().tuner
    # Issue 15: `fit --tuner` bounds the first hidden layer by (0.25, 0.1), the bounds that won at 600 steps.
    assert FitJob(names=("a",), tuner=True).fit_config().network_config().hidden_bounds == (0.25, 0.1)
    with pytest.raises(JobParamError, match="tuner.*needs levels 1"):
        FitJob(names=("a",), tuner=True, levels=2).check()


def test_a_reexpressed_tuner_network_is_a_plain_trained_siren(tuner_model):
    moved = reexpressed(tuner_model, Normalization(center=(0.1, 0.0, 0.0), scale=tuner_model.normalization.scale / 2))
    assert moved.config.first_layer == "trained" and moved.config.hidden_bounds is None
    assert moved.layers[0].linear.weight.requires_grad and moved.hidden_column_bounds() is None

