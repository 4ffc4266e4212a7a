"""Model files (issue 11): files written by engine 0.1.0 (format 1, no network kind, the time axis under
"evolution") still load and give the values they gave then; format 2 names each network's kind and round-trips;
an unknown kind, or a network kind a tool does not support, is refused with a clear error."""

import dataclasses
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from engine.conventions import Normalization
from engine.evolution import EVOLUTION_KEY, EvolveConfig, load_evolution, save_evolution, time_dependent_copy
from engine.fields import TIME_KEY, at_time
from engine.fit import FitConfig
from engine.model import MODEL_FORMAT_VERSION, SDFModel, load_model, load_networks, reexpressed
from engine.morph import MORPH_KEY, LevelSetMorphConfig, load_morph, save_morph
from engine.networks import NETWORK_KINDS, Siren, SirenConfig, build_network, network_kind

DATA = Path(__file__).resolve().parent.parent / "data"
EXPECTED = json.loads((DATA / "legacy_v1_expected.json").read_text())
POINTS = np.array(EXPECTED["points"])


def header(path: Path) -> dict:
    return json.loads(torch.load(path, weights_only=True)["header_json"])


def test_the_fixtures_are_format_1_files_without_a_network_kind():
    for name in ("model", "evolution", "morph"):
        found = header(DATA / f"legacy_v1_{name}.pt")
        layout = {key: value for key, value in found.items() if key != "metadata"}
        assert found["format_version"] == 1 and '"kind"' not in json.dumps(layout)


def test_a_format_1_model_loads_with_its_old_values():
    model = load_model(DATA / "legacy_v1_model.pt")
    assert isinstance(model.network, Siren)
    np.testing.assert_allclose(model.sdf(POINTS), EXPECTED["model_sdf"], atol=1e-6)


def test_a_format_1_evolution_loads_with_its_old_values_and_its_time_axis_under_the_time_key():
    evolution = load_evolution(DATA / "legacy_v1_evolution.pt")
    np.testing.assert_allclose(at_time(evolution, 0.5).sdf(POINTS), EXPECTED["evolution_sdf_t0.5"], atol=1e-6)
    assert evolution.metadata[TIME_KEY] == {"time_scale": 1.0, "time_range": [0.0, 1.0]}
    assert "time_scale" not in evolution.metadata[EVOLUTION_KEY]
    assert evolution.metadata[EVOLUTION_KEY]["time_range"] == [0.0, 1.0]


def test_a_format_1_morph_loads_with_its_old_values_and_its_time_axis_under_the_time_key():
    morph = load_morph(DATA / "legacy_v1_morph.pt")
    np.testing.assert_allclose(at_time(morph, 0.5).sdf(POINTS), EXPECTED["morph_sdf_t0.5"], atol=1e-6)
    assert morph.metadata[TIME_KEY] == {"time_scale": 1.0, "time_range": [0.0, 1.0]}
    assert "evolution" not in morph.metadata and morph.metadata[MORPH_KEY]["method"] == "levelset"


def test_format_2_files_name_every_network_kind_and_round_trip(tmp_path):
    model = load_model(DATA / "legacy_v1_model.pt")
    model.save(tmp_path / "model.pt")
    saved = header(tmp_path / "model.pt")
    assert saved["format_version"] == MODEL_FORMAT_VERSION == 2 and saved["kind"] == "siren"
    assert saved["architecture"] == asdict(model.network.config)
    again = load_model(tmp_path / "model.pt")
    np.testing.assert_array_equal(again.sdf(POINTS), model.sdf(POINTS))
    assert again.metadata == model.metadata and again.normalization == model.normalization

    for load, save, name, expected in (
        (load_evolution, save_evolution, "evolution", "evolution_sdf_t0.5"),
        (load_morph, save_morph, "morph", "morph_sdf_t0.5"),
    ):
        loaded = load(DATA / f"legacy_v1_{name}.pt")
        save(loaded, tmp_path / f"{name}.pt")
        saved = header(tmp_path / f"{name}.pt")
        assert saved["format_version"] == 2
        assert {entry["kind"] for entry in saved["networks"].values()} == {"siren"}
        assert TIME_KEY in saved["metadata"]
        again = load(tmp_path / f"{name}.pt")
        np.testing.assert_allclose(at_time(again, 0.5).sdf(POINTS), EXPECTED[expected], atol=1e-6)
        assert again.metadata == loaded.metadata


def test_an_unknown_network_kind_is_refused_with_the_known_kinds_and_the_fix(tmp_path):
    load_model(DATA / "legacy_v1_model.pt").save(tmp_path / "model.pt")
    save_morph(load_morph(DATA / "legacy_v1_morph.pt"), tmp_path / "morph.pt")
    for path, load in ((tmp_path / "model.pt", load_model), (tmp_path / "morph.pt", load_networks)):
        archive = torch.load(path, weights_only=True)
        archive["header_json"] = archive["header_json"].replace('"kind": "siren"', '"kind": "hash_grid"')
        torch.save(archive, path)
        with pytest.raises(ValueError, match=r"unknown network kind 'hash_grid' \(this engine knows siren, multires\).*update the engine"):
            load(path)
    with pytest.raises(ValueError, match="unknown network kind 'hash_grid'"):
        build_network("hash_grid", {})


def test_the_network_registry_builds_and_names_each_kind():
    config = SirenConfig(hidden_features=8, hidden_layers=1)
    network = build_network("siren", asdict(config))
    assert type(network) is Siren and network.config == config and network_kind(network) == "siren"
    assert set(NETWORK_KINDS) == {"siren", "multires"}
    with pytest.raises(ValueError, match="Linear is no registered network kind"):
        network_kind(nn.Linear(3, 1))
    with pytest.raises(ValueError, match="Linear is no registered network kind"):
        SDFModel(nn.Linear(3, 1), Normalization((0.0, 0.0, 0.0), 1.0)).save("unused.pt")


def test_tools_that_rebuild_a_network_say_which_kinds_they_support():
    other = SDFModel(nn.Linear(3, 1), Normalization((0.0, 0.0, 0.0), 1.0))
    with pytest.raises(ValueError, match=r"only a SIREN \(network kind 'siren'\) or a multires SDF can be re-expressed.*Linear"):
        reexpressed(other, Normalization((1.0, 0.0, 0.0), 2.0))
    with pytest.raises(ValueError, match=r"only a SIREN \(network kind 'siren'\) can be copied.*Linear"):
        time_dependent_copy(nn.Linear(3, 1))


def test_the_configs_saved_in_model_files_load_back():
    def as_saved(config) -> dict:
        return json.loads(json.dumps(config.to_dict()))

    def split(loaded: dict, saved: dict, defaults: dict) -> tuple[dict, dict, dict]:
        """(the loaded settings the file has, the loaded ones it lacks, their defaults), nested settings included."""
        kept, newer, newer_defaults = {}, {}, {}
        for name, value in loaded.items():
            if name not in saved:
                newer[name], newer_defaults[name] = value, defaults[name]
            elif isinstance(value, dict):
                kept[name], newer[name], newer_defaults[name] = split(value, saved[name], defaults[name])
            else:
                kept[name] = value
        return kept, newer, newer_defaults

    def assert_loads_back(config_class, saved: dict) -> None:
        kept, newer, newer_defaults = split(as_saved(config_class.from_dict(saved)), saved, as_saved(config_class()))
        # Every saved setting comes back as saved; the fields newer than the file (nested ones too) take their defaults.
        assert kept == saved
        assert newer == newer_defaults

    assert_loads_back(FitConfig, load_model(DATA / "legacy_v1_model.pt").metadata["fit_config"])
    assert_loads_back(EvolveConfig, load_evolution(DATA / "legacy_v1_evolution.pt").metadata[EVOLUTION_KEY]["evolve_config"])
    assert_loads_back(LevelSetMorphConfig, load_morph(DATA / "legacy_v1_morph.pt").metadata[MORPH_KEY]["config"])


def test_settings_read_back_nested_settings_and_tuples_and_name_an_unknown_field():
    from engine.morph import FlowMorphConfig

    sampling = dataclasses.replace(FitConfig().volume_sampling, near_surface_sigmas=(0.1, 0.2))
    config = FitConfig(steps=12, volume_sampling=sampling)
    assert FitConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    flow = FlowMorphConfig(steps=7)
    assert FlowMorphConfig.from_dict(json.loads(json.dumps(flow.to_dict()))) == flow
    with pytest.raises(ValueError, match="FitConfig has no field\\(s\\) colour"):
        FitConfig.from_dict({"colour": "red"})
    with pytest.raises(ValueError, match="SirenConfig has no field\\(s\\) depth"):
        FitConfig.from_dict({"network": {"depth": 3}})
