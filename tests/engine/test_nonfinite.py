"""Non-finite results are never a success (issue 12): inputs that would overflow are refused before training
(time ranges, landmarks, normalizations), a training loop whose loss or weights turn NaN or infinite stops with an
error that says what to change, and no mesh with NaN or infinite vertices is returned. Tiny networks, few steps.

Cases of the issue: an evolution over a time range that overflows trained to NaN and wrote empty frames (t = 0
included) with exit 0; a landmark at 1e30 trained with loss inf; a model of normalization scale 0 wrote a PLY of
infinities.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import trimesh

from engine.conventions import Normalization
from engine.evolution import EvolveConfig, evolve
from engine.extraction import extract_mesh
from engine.fields import extract_frames
from engine.fit import fit_sdf, preset
from engine.mesh_io import check_mesh
from engine.model import SDFModel, load_model
from engine.morph import FlowMorphConfig, LevelSetMorphConfig, morph_flow, morph_levelset, warp_points
from engine.surface_flows import FieldTerm, Flow
from engine.training import Diverged, TrainingMonitor
from tests.engine.test_worker import job

DATA = Path(__file__).resolve().parent.parent / "data"
EVOLVE = EvolveConfig(steps=4, pool_size=2000, spacetime_batch=200, device="cpu")
LEVELSET = LevelSetMorphConfig(steps=4, batch=200, device="cpu")
FLOW = FlowMorphConfig(
    steps=4, surface_batch=100, volume_batch=100, smoothness_batch=50, pool_size=500, surface_resolution=16, device="cpu"
)
HUGE_RATE = {"learning_rate": 1e30}


@pytest.fixture(scope="module")
def model() -> SDFModel:
    """A 1 x 16 SIREN of a sphere of radius 0.5 at the origin (tests/data), normalization scale 1.8."""
    return load_model(DATA / "legacy_v1_model.pt")


@pytest.fixture(scope="module")
def sphere():
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    return check_mesh(mesh.vertices, mesh.faces, name="Sphere")


def replaced(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


def nan_copy(model: SDFModel) -> SDFModel:
    import copy

    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.network.output.bias.fill_(float("nan"))
    return broken


def evolved(model: SDFModel) -> SDFModel:
    return evolve(model, Flow(normal_speed=0.1), (0.0, 1.0), EVOLVE)


def with_nan_correction(model: SDFModel) -> SDFModel:
    """An evolution whose correction network holds NaN: what a diverged training used to return."""
    evolution = evolved(model)
    with torch.no_grad():
        for parameter in evolution.network.correction.parameters():
            parameter.fill_(float("nan"))
    return evolution


def point(x: float) -> np.ndarray:
    return np.array([[x, 0.0, 0.0]])


@dataclass(frozen=True)
class Case:
    name: str
    entry: str
    """evolve, fit, morph (level set or flow), extract_frames, extract_mesh, warp_points, Normalization,
    TrainingMonitor."""
    run: Callable[[SDFModel, object], object]
    error: type
    expected: str

    def __str__(self) -> str:
        return self.name


TOO_LONG = r"the time range .* is too long for this flow: .* beyond the limit of 10 .* shorten the time range"
SHAPE = "beyond the limit"
ORIGIN = np.zeros((1, 3))


def monitor_with(loss: float, on_progress) -> None:
    monitor = TrainingMonitor("evolution", 3, on_progress, None, advice="shorten the time range or lower the speed")
    for step in (1, 2, 3):
        monitor.after_step(step, torch.tensor(loss if step == 3 else 1.0), {"pde": torch.tensor(loss)})


def nan_weights(model, sphere) -> None:
    monitor = TrainingMonitor("fit", 3, None, None)
    monitor.check_weights(nan_copy(model).network)


CASES = [
    # The evolution: a time range whose network time overflows, refused before training.
    Case("offset over t in [0, 1e30]", "evolve",
         lambda m, s: evolve(m, Flow(normal_speed=0.1), (0.0, 1e30), EVOLVE), ValueError, TOO_LONG),
    Case("offset over t in [-1e30, 0]", "evolve",
         lambda m, s: evolve(m, Flow(normal_speed=-0.1), (-1e30, 0.0), EVOLVE), ValueError, TOO_LONG),
    Case("offset over t in [0, 1e6]", "evolve",
         lambda m, s: evolve(m, Flow(normal_speed=0.1), (0.0, 1e6), EVOLVE), ValueError, TOO_LONG),
    Case("mean curvature flow over t in [0, 1e9]", "evolve",
         lambda m, s: evolve(m, Flow(mean_curvature=0.01), (0.0, 1e9), EVOLVE), ValueError, TOO_LONG),
    Case("rotation 1e3 rad/time over t in [0, 1e3]", "evolve",
         lambda m, s: evolve(m, Flow(fields=(FieldTerm("rotation", (0.0, 0.0, 0.0), 1e3),)), (0.0, 1e3), EVOLVE),
         ValueError, r"too long for this flow: its vector fields would carry the surface 7.07e\+05 times"),
    Case("source of strength 1e300 over t in [0, 1e10]", "evolve",
         lambda m, s: evolve(m, Flow(fields=(FieldTerm("source", (0.0, 0.0, 0.0), 1e300, 0.3),)), (0.0, 1e10), EVOLVE),
         ValueError, "too long for this flow"),
    Case("infinite end time", "evolve",
         lambda m, s: evolve(m, Flow(normal_speed=0.1), (0.0, float("inf")), EVOLVE), ValueError, "must be finite"),
    Case("evolution that diverges (learning rate 1e30)", "evolve",
         lambda m, s: evolve(m, Flow(normal_speed=0.1), (0.0, 1.0), replaced(EVOLVE, **HUGE_RATE)), Diverged,
         r"the evolution diverged \(loss nan at step \d+\): shorten the time range or lower the speed"),
    Case("frames of an evolution with NaN weights", "extract_frames",
         lambda m, s: extract_frames(with_nan_correction(m), [0.0, 1.0], 16), ValueError, "NaN or infinite values"),
    # The landmark at 1e30, refused before training and named.
    Case("landmark at 1e30 on the source", "morph (flow)",
         lambda m, s: morph_flow(m, m, FLOW, landmarks=(point(1e30), point(0.3))), ValueError,
         r"landmark points on A: landmark 0 \[1e\+30, 0.0, 0.0\] lies .* the limit is 2.22 \(4 times"),
    Case("landmark at -1e30 on the target", "morph (flow)",
         lambda m, s: morph_flow(m, m, FLOW, landmarks=(point(0.3), point(-1e30))), ValueError,
         r"landmark points on B: landmark 0 .* the limit is"),
    Case("landmark just beyond 4 half-sizes", "morph (flow)",
         lambda m, s: morph_flow(m, m, FLOW, landmarks=(np.array([[0.0, 0.0, 0.0], [0.0, 2.3, 0.0]]), np.zeros((2, 3)))),
         ValueError, r"landmark 1 \[0.0, 2.3, 0.0\]"),
    Case("landmark at NaN", "morph (flow)",
         lambda m, s: morph_flow(m, m, FLOW, landmarks=(point(float("nan")), point(0.3))), ValueError, "NaN or infinite"),
    Case("flow morph that diverges (learning rate 1e30)", "morph (flow)",
         lambda m, s: morph_flow(m, m, replaced(FLOW, **HUGE_RATE)), Diverged, r"the morph diverged \(loss nan"),
    Case("level-set morph that diverges (learning rate 1e30)", "morph (level set)",
         lambda m, s: morph_levelset(m, m, replaced(LEVELSET, **HUGE_RATE)), Diverged, r"the morph diverged \(loss nan"),
    Case("fit that diverges (learning rate 1e30)", "fit",
         lambda m, s: fit_sdf(s, preset("tiny", steps=4, learning_rate=1e30, final_learning_rate=1e30, pool_size=2000,
                                        surface_batch=200, volume_batch=200, device="cpu")),
         Diverged, r"the fit diverged .*lower the learning rate"),
    Case("warp of NaN points", "warp_points",
         lambda m, s: warp_points(morph_flow(m, m, FLOW), np.full((2, 3), np.nan), 0.5), ValueError, "NaN or infinite"),
    # The model of scale 0: refused on construction (and on load, tests/engine/test_bad_model_files.py).
    Case("normalization scale 0", "Normalization",
         lambda m, s: Normalization((0.0, 0.0, 0.0), 0.0), ValueError, "scale must be a positive finite number"),
    Case("normalization scale -1", "Normalization",
         lambda m, s: Normalization((0.0, 0.0, 0.0), -1.0), ValueError, "scale must be a positive finite number"),
    Case("normalization scale NaN", "Normalization",
         lambda m, s: Normalization((0.0, 0.0, 0.0), float("nan")), ValueError, "scale must be a positive finite"),
    Case("normalization center inf", "Normalization",
         lambda m, s: Normalization((float("inf"), 0.0, 0.0), 1.0), ValueError, "center must be 3 finite numbers"),
    Case("normalization of points at infinity", "Normalization",
         lambda m, s: Normalization.fit_bounds(np.array([[0.0, 0.0, 0.0], [np.inf, 1.0, 1.0]])), ValueError,
         "NaN or infinite coordinates"),
    Case("mesh of a model of scale 1e-320", "extract_mesh",
         lambda m, s: extract_mesh(SDFModel(m.network, Normalization((0.0, 0.0, 0.0), 1e-320)), 16), ValueError,
         "vertices are not finite"),
    Case("mesh of a model with NaN weights", "extract_mesh",
         lambda m, s: extract_mesh(nan_copy(m), 16), ValueError, "NaN or infinite values at"),
    Case("loss inf at a report, with progress", "TrainingMonitor",
         lambda m, s: monitor_with(float("inf"), lambda progress: None), Diverged,
         r"the evolution diverged \(loss inf at step 3\): shorten the time range or lower the speed"),
    Case("loss NaN at the last step, without progress", "TrainingMonitor",
         lambda m, s: monitor_with(float("nan"), None), Diverged, r"diverged \(loss nan at step 3"),
    Case("NaN weights after the last step", "TrainingMonitor", nan_weights, Diverged, "weights hold NaN or infinite"),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_non_finite_result_is_an_error_that_says_what_to_change(case: Case, model, sphere):
    with pytest.raises(case.error, match=case.expected) as caught:
        case.run(model, sphere)
    assert "\n" not in str(caught.value)


def test_too_long_a_time_range_is_refused_before_any_training(model):
    reports = []
    with pytest.raises(ValueError, match="too long"):
        evolve(model, Flow(normal_speed=0.1), (0.0, 1e30), EVOLVE, on_progress=reports.append)
    assert reports == []
    # The limit itself is usable: 10 sizes of a shape of size 1 at speed 0.1 is t = 100.
    assert np.isfinite(evolve(model, Flow(normal_speed=0.1), (0.0, 99.0), EVOLVE).metadata["time"]["time_scale"])


def test_a_landmark_within_the_cube_is_taken(model):
    morphed = morph_flow(model, model, FLOW, landmarks=(point(0.5), point(0.45)))
    assert np.isfinite(morphed.metadata["morph"]["landmark_error"])


def test_a_worker_evolve_job_over_an_overflowing_time_range_fails_before_training(worker, tmp_path):
    folder = tmp_path / "job"
    folder.mkdir()
    params = {"model": str(DATA / "legacy_v1_model.pt"), "flow": {"normal_speed": 0.1}, "times": [0.0, 1e30],
              "steps": 4, "resolution": 16, "device": "cpu"}
    worker.send(job("overflow", "evolve", folder, **params))
    message, progress = worker.until_end_of_job("overflow")
    assert message["type"] == "error" and re.search("too long for this flow", message["message"]), message
    assert all(report["step"] == 0 for report in progress)
    assert not (folder / "evolution.pt").exists()


def test_the_matrix_has_its_cases_once():
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
