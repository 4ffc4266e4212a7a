"""The job layer (issue 11): one spec per kind, its parameter checks, and the command line and the worker giving the
same results for the same job."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import trimesh

from engine import colormaps, protocol
from engine.cli import COMMANDS, FRAME_FILENAME, MESH_FILENAME, METRICS_FILENAME, SOURCE_FRAME_FILENAME, TIMES_FILENAME
from engine.fields import CURVATURE_FIELDS
from engine.jobs import JOBS, JobParamError, field_docs
from engine.jobs.fit import FitJob
from engine.mesh_io import load_mesh
from engine.ply_io import read_ply_vertex_properties
from tests.conftest import run_engine_cli
from tests.engine.test_worker import WorkerUnderTest, job

TIMINGS = ("train_seconds", "extract_seconds", "fit_seconds", "frame_seconds", "curvature_seconds", "seconds")


def test_the_protocol_names_the_registries():
    assert protocol.JOB_KINDS == tuple(JOBS)
    assert protocol.COLORMAPS == colormaps.COLORMAPS
    assert protocol.CURVATURE_FIELDS == CURVATURE_FIELDS
    for kind, spec in JOBS.items():
        assert spec.kind == kind
        assert set(spec.stages) <= set(protocol.STAGES), kind
    assert set(protocol.TRAINING_STAGES) <= set(protocol.STAGES)
    assert set().union(*(spec.stages for spec in JOBS.values())) == set(protocol.STAGES)


IMAGE_KINDS = ("image_fit", "image_render", "image_tile", "image_morph")
"""Kinds whose command line is ``python -m engine image`` (engine.images.cli and morph_cli run the same specs; the
image tests hold them to the worker's results)."""


def test_every_cli_option_sets_a_spec_field_and_every_field_has_a_way_in():
    assert set(COMMANDS) == set(JOBS) - set(IMAGE_KINDS)
    for kind in IMAGE_KINDS:
        docs = field_docs(JOBS[kind])
        assert set(docs) == {f.name for f in dataclasses.fields(JOBS[kind])} and all(docs.values()), kind
    for name, command in COMMANDS.items():
        fields = {f.name for f in dataclasses.fields(JOBS[command.kind])}
        set_by_options = [option.field for option in command.options]
        assert len(set_by_options) == len(set(set_by_options)), name
        assert set(set_by_options) | set(command.derived) == fields, name
        assert not set(set_by_options) & set(command.derived), name
        docs = field_docs(JOBS[command.kind])
        assert set(docs) == fields and all(docs.values()), name


def test_from_params_fills_defaults_and_reads_back_its_own_params():
    spec = JOBS["fit"].from_params({"names": ["Cube"]})
    assert spec == FitJob(names=("Cube",)) and spec.steps is None and spec.metrics is True
    for kind, params in {
        "fit": {"names": ["A", "B"], "steps": 10, "curvature_sampling": True},
        "extract": {"model": "m.pt", "resolution": 64},
        "curvature": {"model": "m.pt", "range": [-1, 2.5], "quantity": "curvedness", "colormap": "sequential"},
        "evolve": {"model": "m.pt", "flow": {"normal_speed": 0.1}, "times": [0, 0.5], "curvature": "k1"},
        "morph": {"names": ["A", "B"], "method": "flow", "warp_source": True, "align": "none", "fit_steps": 5},
    }.items():
        spec = JOBS[kind].from_params(params)
        assert JOBS[kind].from_params(json.loads(json.dumps(spec.to_params()))) == spec, kind


@pytest.mark.parametrize(
    ("kind", "params", "param", "problem"),
    [
        ("fit", {"names": ["A"], "colour": 1}, None, "unknown parameter(s) 'colour'"),
        ("fit", {}, "names", "is missing"),
        ("fit", {"names": ["A"], "steps": "10"}, "steps", "must be an integer, got '10'"),
        ("fit", {"names": ["A"], "steps": True}, "steps", "must be an integer, got True"),
        ("fit", {"names": ["A"], "steps": 0}, "steps", "must be at least 1, got 0"),
        ("fit", {"names": ["A"], "preset": "huge"}, "preset", "must be one of tiny, fast, quality, got 'huge'"),
        ("fit", {"names": ["A"], "device": "gpu"}, "device", "must be one of 'auto', 'cpu', 'cuda', got 'gpu'"),
        ("fit", {"names": ["A"], "metrics": 1}, "metrics", "must be true or false, got 1"),
        ("fit", {"names": "A"}, "names", "must be a list, got 'A'"),
        ("curvature", {"model": "m.pt", "range": [1]}, "range", "must be a list of 2 values, got [1]"),
        ("curvature", {"model": "m.pt", "range": [2, 1]}, "range", "low < high"),
        ("curvature", {"model": "m.pt", "quantity": "H"}, "quantity", "must be one of mean, gaussian"),
        ("evolve", {"model": "m", "flow": {"normal_speed": 0.1}, "times": [0, "x"]}, "times", "[1] must be a finite number"),
        ("evolve", {"model": "m", "flow": {"normal_speed": 0.1}, "times": [0, float("nan")]}, "times", "finite"),
        ("evolve", {"model": "m", "flow": {"speed": 1}, "times": [1]}, "flow", "is not a flow"),
        ("evolve", {"model": "m", "flow": {}, "times": [1]}, "flow", "moves nothing"),
        ("evolve", {"model": "m", "flow": {"normal_speed": 1}, "times": []}, "times", "at least one time"),
        ("morph", {"names": ["A"]}, "names", "must be a list of 2 values"),
        ("morph", {"names": ["A", "B"], "warp_source": True}, "warp_source", "needs the flow method"),
        ("morph", {"names": ["A", "B"], "frames": 1}, "frames", "must be at least 2, got 1"),
    ],
)
def test_a_bad_parameter_is_named_with_what_is_wrong(kind, params, param, problem):
    with pytest.raises(JobParamError) as raised:
        JOBS[kind].from_params(params)
    assert raised.value.param == param and problem in raised.value.problem
    assert str(raised.value).startswith(f"{kind} job: ")


def assert_same_summary(cli: dict, worker: dict) -> None:
    """The worker's summary, timings aside, is what the CLI wrote (which may add its file names)."""
    for key, value in worker.items():
        if key not in TIMINGS:
            assert cli[key] == value, key


class WorkerJobs:
    """Jobs through one real worker process, each in its own directory."""

    def __init__(self, root):
        self.root, self.worker, self.count = root, WorkerUnderTest(), 0
        root.mkdir()
        assert self.worker.next()["type"] == "hello"

    def run(self, kind: str, params: dict, inputs: dict | None = None) -> tuple[dict, dict]:
        self.count += 1
        directory = self.root / f"{kind}_{self.count}"
        directory.mkdir()
        if inputs:
            np.savez(directory / protocol.INPUTS_FILENAME, **inputs)
        self.worker.send(job(str(self.count), kind, directory, **params))
        end, _ = self.worker.until_end_of_job(str(self.count))
        assert end["type"] == "result", end
        with np.load(directory / end["outputs"], allow_pickle=False) as outputs:
            arrays = {name: outputs[name] for name in outputs.files}
        return arrays, {**end, "dir": directory}


def cli(*args) -> None:
    result = run_engine_cli(*args)
    assert result.returncode == 0, result.stderr


def assert_same_mesh(path, vertices, faces) -> None:
    mesh = trimesh.load(path, process=False)
    np.testing.assert_allclose(mesh.vertices, vertices, atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, faces)


def test_the_cli_and_the_worker_give_the_same_results_for_every_job_kind(tmp_path):
    sphere, box = tmp_path / "sphere.ply", tmp_path / "box.ply"
    trimesh.creation.icosphere(subdivisions=2, radius=0.5).export(sphere)
    trimesh.creation.box(extents=(0.7, 0.7, 0.7)).export(box)
    meshes = {str(path): load_mesh(path) for path in (sphere, box)}
    worker = WorkerJobs(tmp_path / "worker")
    common = {"device": "cpu", "seed": 3}

    fit = {"names": [str(sphere)], "preset": "tiny", "steps": 40, "resolution": 24, "curvature_sampling": True, **common}
    cli("fit", sphere, "-o", tmp_path / "fit", "--preset", "tiny", "--steps", "40", "--resolution", "24",
        "--curvature-sampling", "--device", "cpu", "--seed", "3")  # fmt: skip
    arrays, end = worker.run("fit", fit, {"vertices_0": meshes[str(sphere)].vertices, "faces_0": meshes[str(sphere)].faces})
    assert_same_mesh(tmp_path / "fit" / MESH_FILENAME, arrays["vertices"], arrays["faces"])
    report = json.loads((tmp_path / "fit" / METRICS_FILENAME).read_text())
    assert_same_summary(report, end["summary"])
    assert report["metrics"]["iou"] > 0.5
    model = str(tmp_path / "fit" / "model.pt")

    cli("extract", model, "-o", tmp_path / "extract.ply", "--resolution", "20", "--device", "cpu")
    arrays, _ = worker.run("extract", {"model": model, "resolution": 20, "device": "cpu"})
    assert_same_mesh(tmp_path / "extract.ply", arrays["vertices"], arrays["faces"])

    cli("curvature", model, "--at", box, "--project", "--quantity", "gaussian", "--colormap", "sequential",
        "-o", tmp_path / "curvature.ply", "--device", "cpu")  # fmt: skip
    curvature = {"model": model, "quantity": "gaussian", "colormap": "sequential", "project": True, "device": "cpu"}
    arrays, end = worker.run("curvature", curvature, {"points": meshes[str(box)].vertices})
    written = read_ply_vertex_properties(tmp_path / "curvature.ply")
    for name in CURVATURE_FIELDS:
        np.testing.assert_allclose(written[name], arrays[name], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(written["red"], np.round(arrays["colors"][:, 0] * 255), atol=1)

    cli("evolve", model, "--flow", "offset", "--speed", "0.1", "--times", "0,0.5", "-o", tmp_path / "evolve",
        "--steps", "5", "--resolution", "20", "--curvature", "mean", "--device", "cpu", "--seed", "3")  # fmt: skip
    evolve = {"model": model, "flow": {"normal_speed": 0.1}, "times": [0, 0.5], "steps": 5, "resolution": 20,
              "curvature": "mean", **common}  # fmt: skip
    arrays, end = worker.run("evolve", evolve)
    report = json.loads((tmp_path / "evolve" / TIMES_FILENAME).read_text())
    assert_same_summary(report, end["summary"])
    for index in range(2):
        path = tmp_path / "evolve" / FRAME_FILENAME.format(index)
        assert_same_mesh(path, arrays[f"vertices_{index}"], arrays[f"faces_{index}"])
        np.testing.assert_allclose(read_ply_vertex_properties(path)["mean"], arrays[f"mean_{index}"], atol=1e-5)

    cli("morph", sphere, box, "-o", tmp_path / "morph", "--method", "flow", "--warp-source", "--frames", "3",
        "--preset", "tiny", "--fit-steps", "30", "--steps", "5", "--resolution", "20", "--device", "cpu",
        "--seed", "3")  # fmt: skip
    morph = {"names": [str(sphere), str(box)], "method": "flow", "warp_source": True, "frames": 3, "preset": "tiny",
             "fit_steps": 30, "steps": 5, "resolution": 20, **common}  # fmt: skip
    inputs = {f"{what}_{i}": getattr(meshes[str(path)], what) for i, path in enumerate((sphere, box))
              for what in ("vertices", "faces")}  # fmt: skip
    arrays, end = worker.run("morph", morph, inputs)
    report = json.loads((tmp_path / "morph" / TIMES_FILENAME).read_text())
    assert_same_summary(report, end["summary"])
    assert report["target_alignment"]["scale"] == pytest.approx(1.0 / 0.7, rel=1e-2)
    for index in range(3):
        assert_same_mesh(tmp_path / "morph" / FRAME_FILENAME.format(index), arrays[f"vertices_{index}"],
                         arrays[f"faces_{index}"])  # fmt: skip
        moved = trimesh.load(tmp_path / "morph" / SOURCE_FRAME_FILENAME.format(index), process=False)
        np.testing.assert_allclose(moved.vertices, arrays["source_positions"][index], atol=1e-6)
    assert worker.worker.close() == 0
