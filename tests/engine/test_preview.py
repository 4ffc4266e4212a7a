"""Live previews of a fit (issue 14): the schedule and its time budget, a fit's model bit-identical with previews on
or off, and the worker writing the preview file and numbering it in its progress messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from engine import protocol
from engine.cli import COMMANDS
from engine.fit import fit_sdf, preset
from engine.jobs import JOBS, JobParamError
from engine.mesh_io import TriangleMesh
from engine.preview import LivePreview
from tests.engine.test_worker import SPHERE_RADIUS, fit_params, job, write_sphere_inputs


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_previews_wait_for_the_interval_and_stay_within_the_time_budget():
    clock = Clock()
    preview = LivePreview(2.0, lambda vertices, faces: None, budget=0.05, clock=clock)
    clock.now += 1.9
    assert not preview.due()
    clock.now += 0.1
    assert preview.due()
    # A first preview that took 1 s: it and one more like it fit in 5 % of 40 s of training, not before.
    preview.spent_s = preview.last_cost_s = 1.0
    preview.last = clock.now
    clock.now += 37.9
    assert not preview.due()
    clock.now += 0.1  # 40 s elapsed in all
    assert preview.due()
    with pytest.raises(ValueError, match="more than 0 seconds"):
        LivePreview(0.0, lambda vertices, faces: None)


def sphere() -> TriangleMesh:
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=SPHERE_RADIUS)
    return TriangleMesh(mesh.vertices + (3.0, -1.0, 0.5), mesh.faces)


def test_a_fit_gives_the_same_model_bit_for_bit_with_previews_or_without():
    shown = []
    # A preview after every step, whatever it costs: the most any preview schedule could disturb.
    preview = LivePreview(1e-9, lambda vertices, faces: shown.append((vertices, faces)), resolution=24, budget=1e9)
    config = preset("tiny", steps=25, device="cpu", seed=3)
    with_previews = fit_sdf(sphere(), config, on_step=lambda step, model: preview.show_model(model))
    without = fit_sdf(sphere(), config)
    assert preview.shown == len(shown) > 0
    state, other = with_previews.network.state_dict(), without.network.state_dict()
    assert state.keys() == other.keys()
    for name in state:
        assert torch.equal(state[name], other[name]), name
    assert with_previews.metadata["best_validation_loss"] == without.metadata["best_validation_loss"]
    for vertices, faces in shown:
        assert vertices.dtype == np.float64 and vertices.shape[1] == 3 and np.isfinite(vertices).all()
        assert faces.dtype == np.int32 and faces.shape[1] == 3 and 0 <= faces.min() and faces.max() < len(vertices)
        # In the input's coordinates: inside the normalization's cube around the moved sphere.
        assert np.abs(vertices - (3.0, -1.0, 0.5)).max() < 1.5 * SPHERE_RADIUS


def test_a_preview_that_has_no_surface_or_cannot_be_written_is_skipped():
    def refuse(vertices, faces):
        raise OSError("disk full")

    preview = LivePreview(1e-9, refuse, resolution=16, budget=1e9)
    model = fit_sdf(sphere(), preset("tiny", steps=3, device="cpu"), on_step=lambda step, model: preview.show_model(model))
    assert preview.shown == 0 and preview.spent_s > 0 and model.network is not None


def test_the_worker_writes_previews_and_numbers_them_in_its_progress_messages(worker, tmp_path):
    write_sphere_inputs(tmp_path)
    # A tiny interval: previews as often as the 5 % budget lets them.
    worker.send(job("p", "fit", tmp_path, **fit_params(steps=200, preview_interval=0.01)))
    end, progress = worker.until_end_of_job("p")
    assert end["type"] == "result", end
    numbers = [message.get("preview") for message in progress]
    first = next(index for index, number in enumerate(numbers) if number is not None)
    assert all(number is not None for number in numbers[first:])  # repeated from the first preview on
    assert numbers[first] == 1 and numbers[first:] == sorted(numbers[first:])
    assert set(numbers[first:]) == set(range(1, numbers[-1] + 1))  # each preview announced
    assert end["summary"]["previews"] == numbers[-1]
    assert end["summary"]["preview_seconds"] <= 0.1 * end["summary"]["train_seconds"] + 0.5
    with np.load(tmp_path / protocol.PREVIEW_FILENAME, allow_pickle=False) as data:
        vertices, faces = data["vertices"], data["faces"]
    assert vertices.dtype == np.float64 and vertices.shape[1] == 3 and np.isfinite(vertices).all()
    assert faces.dtype == np.int32 and faces.shape[1] == 3 and faces.max() < len(vertices)
    assert np.abs(np.linalg.norm(vertices, axis=1) - SPHERE_RADIUS).mean() < 0.2


def test_a_fit_without_a_preview_interval_writes_no_preview(worker, tmp_path):
    write_sphere_inputs(tmp_path)
    worker.send(job("q", "fit", tmp_path, **fit_params(steps=20)))
    end, progress = worker.until_end_of_job("q")
    assert end["type"] == "result", end
    assert all("preview" not in message for message in progress)
    assert "previews" not in end["summary"] and not (tmp_path / protocol.PREVIEW_FILENAME).exists()


def test_the_preview_interval_is_checked_and_the_command_line_asks_for_none():
    assert JOBS["fit"].from_params({"names": ["A"]}).preview_interval == 0.0
    assert JOBS["fit"].from_params({"names": ["A"], "preview_interval": 3}).preview_interval == 3.0
    for bad in (-1.0, 1e9):
        with pytest.raises(JobParamError, match="preview_interval") as refused:
            JOBS["fit"].from_params({"names": ["A"], "preview_interval": bad})
        assert refused.value.param == "preview_interval"
    assert "preview_interval" in COMMANDS["fit"].derived
    assert COMMANDS["fit"].derive(type("Args", (), {"meshes": ["a.ply"]})())["preview_interval"] == 0.0
