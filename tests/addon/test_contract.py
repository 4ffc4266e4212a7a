"""The contract between the add-on and the engine's jobs (issue 11), with plain pytest: the params each operator
sends (built in `addon.core.params`) parse with the engine's spec of that job kind and hold the values sent; every
choice the panels offer is one the engine takes, and the preset tooltips say what the presets are; the stages the
add-on has words and progress-bar spans for are the stages the engine reports."""

from __future__ import annotations

import re

import numpy as np
import pytest

from addon.core import items, params, text, worker_client
from addon.core.evolution import FieldEmpty
from addon.core.morph import ENGINE_METHODS
from engine import protocol
from engine.colormaps import QUANTITIES
from engine.evolution import EvolveConfig
from engine.fit import PRESETS
from engine.jobs import JOBS, JobParamError
from engine.morph import METHODS

# The fitted object was scaled by 2 and moved since the fit: world = 2 * model + (1, 0, 0).
WORLD_TO_MODEL = np.array([[0.5, 0, 0, -0.5], [0, 0.5, 0, 0], [0, 0, 0.5, 0], [0, 0, 0, 1.0]])
FIELDS = [
    FieldEmpty("Push", "SOURCE", (3.0, 0.0, 0.0), (0.0, 0.0, 2.0), 0.6, 1.0),
    FieldEmpty("Pull", "SINK", (1.0, 2.0, 0.0), (0.0, 0.0, 1.0), 0.6, 1.0),
    FieldEmpty("Wring", "TWIST", (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), 0.7, 0.5),
    FieldEmpty("Turn", "ROTATION", (1.0, 0.0, 0.0), (0.0, 3.0, 0.0), 0.7, 1.0),
]
FIT = dict(preset="fast", steps=None, resolution=128, device="auto", seed=0, names=["Sphere"])
CURVATURE = dict(
    model="/cache/Sphere_SDF-1.pt", quantity="mean", colormap="auto", value_range=None, project=False, device="auto"
)
EVOLVE = dict(
    model="/cache/Sphere_SDF-1.pt", flow="MCF", speed=0.05, fields=[], world_to_model=WORLD_TO_MODEL,
    frame_start=1, frame_end=48, time_end=1.0, steps=None, resolution=96, device="auto", seed=0, curvature="NONE",
)  # fmt: skip
MORPH = dict(
    method="LEVELSET", names=("Small", "Large"), frame_start=1, frame_end=48, preset="fast", fit_steps=None,
    steps=None, resolution=96, device="auto", seed=0, animate_source=True,
)  # fmt: skip
IMAGE_FIT = dict(name="Brick", encoding="srgb", preset="fast", levels=4, steps=None, tuner=False, device="auto", seed=0)
IMAGE_TILE = dict(name="Brick", encoding="linear", size=None, preset="cpu", steps=None, device="auto", seed=0)
IMAGE_MORPH = dict(names=("Face A", "Face B"), encoding="srgb", frames=24, preset="cpu", steps=None, device="auto", seed=0)
CASES = [
    ("fit", FIT),
    ("fit", {**FIT, "preset": "tiny", "steps": 250, "resolution": 64, "device": "cpu", "seed": 7,
             "names": ["Cube", "Sphere"], "preview_interval": 3.0}),
    ("fit", {**FIT, "tuner": True}),  # issue 15: Frequency Control (TUNER)
    ("extract", dict(model="/cache/Sphere_SDF-1.pt", resolution=256, device="cuda")),
    ("curvature", CURVATURE),
    ("curvature", {**CURVATURE, "quantity": "curvedness", "colormap": "sequential", "value_range": (-0.5, 2.0),
                   "project": True, "device": "cpu"}),
    ("evolve", EVOLVE),
    ("evolve", {**EVOLVE, "flow": "OFFSET", "speed": -0.2, "frame_start": 10, "frame_end": 12, "time_end": -0.2,
                "steps": 300, "curvature": "gaussian", "device": "cpu", "seed": 3}),
    ("evolve", {**EVOLVE, "flow": "FIELDS", "speed": 0.0, "fields": FIELDS, "curvature": "k2"}),
    ("morph", MORPH),
    ("morph", {**MORPH, "method": "FLOW", "frame_start": 5, "frame_end": 6, "preset": "tiny", "fit_steps": 100,
               "steps": 50, "device": "cpu", "seed": 2}),
    ("morph", {**MORPH, "method": "FLOW", "animate_source": False}),
    ("bake", dict(model="/cache/Sphere_SDF-1.pt", size=2048, quantity="k1", colormap="auto", value_range=None,
                  project=False, device="auto")),
    ("bake", dict(model="/m.pt", size=16, quantity="curvedness", colormap="sequential", value_range=(0.0, 2.0),
                  project=True, device="cpu")),
    ("ridges", dict(model="/cache/Sphere_SDF-1.pt", device="auto")),
    ("render", dict(model="/cache/Sphere_SDF-1.pt", camera={"location": [0.0, -4.0, 1.0], "rotation": [[1, 0, 0],
                    [0, 0, 1], [0, -1, 0]], "type": "perspective", "fov": 39.6, "resolution": [64, 48]},
                    multiscale=True, shading="plain", quantity="mean", device="auto")),
    ("render", dict(model="/m.pt", camera={"location": [0, 0, 5], "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                    "type": "orthographic", "ortho_scale": 3.0, "resolution": [8, 8]}, multiscale=False,
                    shading="curvature", quantity="k1", device="cpu")),
    ("image_fit", IMAGE_FIT),
    ("image_fit", {**IMAGE_FIT, "encoding": "linear", "preset": "gpu", "levels": 1, "steps": 200, "tuner": True,
                   "device": "cuda", "seed": 4}),
    ("image_render", dict(model="/cache/Brick_Fit-1.pt", size=(512, 256), level=None, device="auto")),
    ("image_render", dict(model="/cache/Brick_Fit-1.pt", size=(64, 32), level=1.5, device="cpu")),
    ("image_tile", IMAGE_TILE),
    ("image_tile", {**IMAGE_TILE, "size": 1024, "preset": "gpu", "steps": 40, "seed": 1}),
    ("image_morph", IMAGE_MORPH),
    ("image_morph", {**IMAGE_MORPH, "encoding": "linear", "frames": 2, "preset": "gpu", "steps": 5, "device": "cpu"}),
]  # fmt: skip
"""Representative values of what each operator reads from Blender, the optional (None) ones included."""


def as_sent(value):
    """A spec's value in the params' JSON terms (tuples as lists)."""
    if isinstance(value, (list, tuple)):
        return [as_sent(item) for item in value]
    if isinstance(value, dict):
        return {key: as_sent(item) for key, item in value.items()}
    return value


def parsed(kind: str, sent: dict):
    try:
        return JOBS[kind].from_params(sent)
    except JobParamError as error:
        pytest.fail(f"the engine refuses the add-on's {kind} params {sent}: {error}")


@pytest.mark.parametrize(("kind", "values"), CASES, ids=[f"{kind}-{i}" for i, (kind, _) in enumerate(CASES)])
def test_the_params_of_each_job_parse_with_the_engines_spec_and_hold_what_was_sent(kind, values):
    sent = params.BUILDERS[kind](**values)
    spec = parsed(kind, sent)
    assert {name: as_sent(getattr(spec, name)) for name in sent} == sent


def test_the_addon_builds_every_job_kind_of_the_engine():
    assert set(params.BUILDERS) == set(JOBS) == set(protocol.JOB_KINDS)
    assert {kind for kind, _ in CASES} == set(params.BUILDERS)


def test_what_the_addon_leaves_to_the_engine_and_what_it_overrides():
    fit = parsed("fit", params.fit_params(**FIT))
    assert fit.metrics is False and fit.curvature_sampling is False and fit.steps is None
    assert fit.preview_interval == 0.0  # issue 14: the Fit operator asks for live previews (Live Preview)
    assert fit.tuner is False and fit.fit_config().network_config().first_layer == "trained"  # issue 15: an option
    tuner = parsed("fit", params.fit_params(**FIT, tuner=True)).fit_config().network_config()
    assert (tuner.first_layer, tuner.hidden_bounds) == ("integer", (0.25, 0.1))
    assert parsed("curvature", params.curvature_params(**CURVATURE)).range is None
    evolve = parsed("evolve", params.evolve_params(**EVOLVE))
    assert evolve.curvature is None and evolve.colormap == "auto" and evolve.steps is None
    assert evolve.times == pytest.approx([index / 47 for index in range(48)]) and len(evolve.times) == 48
    # The objects are morphed where they are placed in world space: nothing is moved onto the source's box.
    morph = parsed("morph", params.morph_params(**MORPH))
    assert morph.align == "none" and morph.frames == 48 and (morph.fit_steps, morph.steps) == (None, None)
    assert morph.warp_source is False  # Animate Source Mesh is the Flow method's
    assert parsed("morph", params.morph_params(**{**MORPH, "method": "FLOW"})).warp_source is True


def test_every_choice_of_the_panels_is_one_the_engine_takes():
    for device, _, _ in items.DEVICE_ITEMS:
        assert parsed("fit", params.fit_params(**{**FIT, "device": device})).device == device
    for preset, _, _ in items.PRESET_ITEMS:
        assert parsed("fit", params.fit_params(**{**FIT, "preset": preset})).preset == preset
        assert parsed("morph", params.morph_params(**{**MORPH, "preset": preset})).preset == preset
    for quantity, _, _ in items.QUANTITY_ITEMS:
        for colormap, _, _ in items.COLORMAP_ITEMS:
            spec = parsed("curvature", params.curvature_params(**{**CURVATURE, "quantity": quantity, "colormap": colormap}))
            assert (spec.quantity, spec.colormap) == (quantity, colormap)
    for flow, _, _ in items.FLOW_ITEMS:
        parsed("evolve", params.evolve_params(**{**EVOLVE, "flow": flow, "fields": FIELDS}))
    for curvature, _, _ in items.EVOLUTION_CURVATURE_ITEMS:
        parsed("evolve", params.evolve_params(**{**EVOLVE, "curvature": curvature}))
    for method, _, _ in items.MORPH_METHOD_ITEMS:
        assert parsed("morph", params.morph_params(**{**MORPH, "method": method})).method == ENGINE_METHODS[method]


def test_the_engine_refuses_what_the_addon_does_not_send():
    with pytest.raises(JobParamError, match="'fields'"):
        JOBS["fit"].from_params({**params.fit_params(**FIT), "fields": []})
    with pytest.raises(JobParamError, match="'align'"):
        JOBS["morph"].from_params({**params.morph_params(**MORPH), "align": "box"})


def test_the_preset_tooltips_say_each_presets_network_and_steps():
    assert [identifier for identifier, _, _ in items.PRESET_ITEMS] == list(PRESETS)
    for identifier, name, description in items.PRESET_ITEMS:
        config = PRESETS[identifier]
        stated = re.match(r"(\d+) x (\d+) network, (\d+) steps\b", description)
        assert stated, f"the {name} tooltip does not start with '<layers> x <width> network, <steps> steps'"
        assert tuple(map(int, stated.groups())) == (
            config.network.hidden_layers,
            config.network.hidden_features,
            config.steps,
        ), f"the {name} tooltip says {stated.group(0)!r}"
        for times, other in re.findall(r"([\d.]+) times the time of (\w+)", description):
            other_config = PRESETS[other.lower()]
            assert other_config.network == config.network  # so time goes with the steps
            assert float(times) == pytest.approx(config.steps / other_config.steps)


def test_the_steps_the_panels_show_without_custom_steps_are_what_the_engine_runs():
    # Issue 14: the greyed step counts shown when Custom Steps is off were not what runs.
    assert items.PRESET_STEPS == {name: config.steps for name, config in PRESETS.items()}
    assert items.ENGINE_DEFAULT_STEPS["evolve"] == EvolveConfig().steps
    assert items.ENGINE_DEFAULT_STEPS["morph"] == {
        method: METHODS[engine_method].config_class().steps for method, engine_method in ENGINE_METHODS.items()
    }


def test_the_panel_choices_are_the_engines_names():
    assert {identifier for identifier, _, _ in items.QUANTITY_ITEMS} <= set(QUANTITIES)
    assert [identifier for identifier, _, _ in items.COLORMAP_ITEMS] == list(protocol.COLORMAPS)
    assert [identifier for identifier, _, _ in items.MORPH_METHOD_ITEMS] == list(ENGINE_METHODS)
    assert sorted(ENGINE_METHODS.values()) == sorted(protocol.MORPH_METHODS)
    assert [item[0] for item in items.EVOLUTION_CURVATURE_ITEMS][0] == params.NO_CURVATURE


def test_the_stages_the_addon_shows_are_the_engines():
    phases = {stage for by_stage in text.JOB_PHASES.values() for stage in by_stage}
    spans = {stage for by_stage in text.JOB_STAGE_SPANS.values() for stage in by_stage}
    named = set(text.STAGE_VERBS) | set(text.STEP_NAMES) | phases | spans | set(worker_client.TRAINING_STAGES)
    assert named <= set(protocol.STAGES), f"stages the engine does not report: {named - set(protocol.STAGES)}"
    assert worker_client.TRAINING_STAGES == protocol.TRAINING_STAGES
    assert set(worker_client.TRAINING_STAGES) <= set(text.STEP_NAMES)  # training shows its step count
    assert set(text.JOB_PHASES) | set(text.JOB_STAGE_SPANS) <= set(JOBS)
    for kind, spec in JOBS.items():
        unnamed = [stage for stage in spec.stages if stage not in text.STAGE_VERBS and stage not in text.STEP_NAMES]
        assert unnamed == [], f"the {kind} job reports stages the add-on has no words for"
        assert set(text.JOB_PHASES.get(kind, {})) <= set(spec.stages)
    for kind, by_stage in text.JOB_STAGE_SPANS.items():
        assert list(by_stage) == list(JOBS[kind].stages), f"the {kind} job's spans are not its stages in order"
        bounds = list(by_stage.values())
        assert bounds[0][0] == 0.0 and bounds[-1][1] == 1.0
        assert all(start <= end for start, end in bounds)
        assert all(end == start for (_, end), (start, _) in zip(bounds, bounds[1:])), f"{kind}: gaps or overlaps"
