"""Bad input at the command line, the jobs API and the worker protocol (issue 12): each case is answered with one
clear line before any work starts, and nothing the user had is changed or left half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh

from engine import protocol
from engine.cli import main
from engine.jobs import JOBS, JobContext
from engine.ply_io import coordinate_type, write_ply
from tests.conftest import BUNDLED_MESH, REPO, interruptible_child
from tests.engine.test_worker import WorkerUnderTest, job

LEGACY_MODEL = REPO / "tests" / "data" / "legacy_v1_model.pt"


@pytest.fixture
def cli(capsys):
    """``python -m engine ARGS`` in this process: (exit code, stderr)."""

    def run(*args) -> tuple[int, str]:
        code = main([str(arg) for arg in args])
        return code, capsys.readouterr().err

    return run


@pytest.fixture
def files(tmp_path):
    """Input files of every kind a command takes, good and bad."""
    paths = {"folder": tmp_path / "a_folder", "text": tmp_path / "notes.txt", "missing": tmp_path / "missing.ply"}
    paths["folder"].mkdir()
    paths["text"].write_text("not a mesh\n")
    for name, content in {
        "fields_syntax": '[{"kind": "source",]',
        "fields_object": '{"kind": "source"}',
        "fields_kind": '[{"kind": "source", "center": [0, 0, 0], "strength": 1}, {"kind": "vortex", "center": [0, 0, 0], "strength": 1}]',
        "fields_radius": '[{"kind": "source", "center": [0, 0, 0], "strength": 1, "radius": -1}]',
        "landmarks_shape": "[[[0, 0, 0], [1, 1]]]",
        "landmarks_nan": "[[[0, 0, 0], [1, 1, 1]], [[0, 0, NaN], [1, 1, 1]]]",
        "landmarks_text": '[[["a", 0, 0], [1, 1, 1]]]',
        "landmarks_far": "[[[0, 0, 0], [1e30, 0, 0]]]",
    }.items():  # fmt: skip
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(content)
    return paths


MESH, MODEL = BUNDLED_MESH, LEGACY_MODEL
CASES = [
    # (case, arguments with {name} for a file of `files` and {out} for the output, what the one line says)
    ("mesh is a folder", ["fit", "{folder}", "-o", "{out}"], "is a folder, not a mesh file"),
    ("mesh is missing", ["fit", "{missing}", "-o", "{out}"], "does not exist"),
    ("mesh is not a mesh", ["fit", "{text}", "-o", "{out}"], "unsupported format"),
    ("zero steps", ["fit", MESH, "-o", "{out}", "--steps", "0"], "--steps must be at least 1, got 0"),
    ("a billion steps", ["fit", MESH, "-o", "{out}", "--steps", "1000000000"], "--steps must be at most 1000000"),
    ("tiny grid", ["fit", MESH, "-o", "{out}", "--resolution", "4"], "--resolution must be at least 8"),
    ("huge grid", ["fit", MESH, "-o", "{out}", "--resolution", "5000"], "--resolution must be at most 1024"),
    ("negative seed", ["fit", MESH, "-o", "{out}", "--seed", "-1"], "--seed must be at least 0"),
    ("huge seed", ["fit", MESH, "-o", "{out}", "--seed", str(2**40)], "--seed must be at most 4294967295"),
    ("output folder is a file", ["fit", MESH, "-o", "{text}"], "is a file; give a folder"),
    ("output under a file", ["fit", MESH, "-o", "{text}/out"], "notes.txt"),
    ("output file is a folder", ["extract", MODEL, "-o", "{folder}"], "is a folder; give the path of the file"),
    ("extract zero grid", ["extract", MODEL, "-o", "{out}.ply", "--resolution", "0"], "--resolution must be at least 8"),
    ("curvature range upside down", ["curvature", MODEL, "-o", "{out}.ply", "--range", "1", "-1"], "low < high"),
    ("curvature project without points", ["curvature", MODEL, "-o", "{out}.ply", "--project"], "--project applies to given points"),
    ("curvature at a folder", ["curvature", MODEL, "--at", "{folder}", "-o", "{out}.ply"], "is a folder"),
    ("evolve speed and fields", ["evolve", MODEL, "--flow", "mcf", "--times", "0,1", "-o", "{out}"], "--flow mcf takes --speed"),
    ("evolve fields not JSON", ["evolve", MODEL, "--flow", "field", "--fields", "{fields_syntax}", "--times", "1", "-o", "{out}"], "fields_syntax.json is not valid JSON (Expecting property name enclosed in double quotes at line 1, column 20)"),
    ("evolve fields not a list", ["evolve", MODEL, "--flow", "field", "--fields", "{fields_object}", "--times", "1", "-o", "{out}"], "fields_object.json must hold a JSON list"),
    ("evolve field of unknown kind", ["evolve", MODEL, "--flow", "field", "--fields", "{fields_kind}", "--times", "1", "-o", "{out}"], "fields_kind.json, field 2: unknown vector field kind 'vortex'"),
    ("evolve field of negative radius", ["evolve", MODEL, "--flow", "field", "--fields", "{fields_radius}", "--times", "1", "-o", "{out}"], "field 1: a source field needs a positive radius"),
    ("evolve fields file is a folder", ["evolve", MODEL, "--flow", "field", "--fields", "{folder}", "--times", "1", "-o", "{out}"], "is a folder, not vector fields"),
    ("evolve times not numbers", ["evolve", MODEL, "--flow", "offset", "--speed", "1", "--times", "0,a", "-o", "{out}"], "--times must be comma-separated numbers"),
    ("evolve infinite time", ["evolve", MODEL, "--flow", "offset", "--speed", "1", "--times", "0,inf", "-o", "{out}"], "finite time"),
    ("evolve too many times", ["evolve", MODEL, "--flow", "offset", "--speed", "1", "--times", ",".join(["1"] * 1001), "-o", "{out}"], "at most 1000 times"),
    ("evolve zero steps", ["evolve", MODEL, "--flow", "offset", "--speed", "1", "--times", "1", "--steps", "0", "-o", "{out}"], "--steps must be at least 1"),
    ("morph landmarks with levelset", ["morph", MESH, MESH, "-o", "{out}", "--landmarks", "{landmarks_shape}"], "--landmarks applies to --method flow"),
    ("morph landmark pair malformed", ["morph", MESH, MESH, "-o", "{out}", "--method", "flow", "--landmarks", "{landmarks_shape}"], "landmarks_shape.json, pair 1: must be [[x, y, z] on the source"),
    ("morph landmark not finite", ["morph", MESH, MESH, "-o", "{out}", "--method", "flow", "--landmarks", "{landmarks_nan}"], "pair 2: the coordinates must be finite"),
    ("morph landmark not a number", ["morph", MESH, MESH, "-o", "{out}", "--method", "flow", "--landmarks", "{landmarks_text}"], "pair 1: must be"),
    ("morph landmark far away", ["morph", MESH, MESH, "-o", "{out}", "--method", "flow", "--landmarks", "{landmarks_far}"], "landmark points on B: landmark 0 [1e+30, 0.0, 0.0] lies 1e+30 input units"),
    ("morph one frame", ["morph", MESH, MESH, "-o", "{out}", "--frames", "1"], "--frames must be at least 2, got 1"),
    ("morph too many frames", ["morph", MESH, MESH, "-o", "{out}", "--frames", "5000"], "--frames must be at most 1000"),
    ("morph zero fit steps", ["morph", MESH, MESH, "-o", "{out}", "--fit-steps", "0"], "--fit-steps must be at least 1"),
    ("morph warp source with levelset", ["morph", MESH, MESH, "-o", "{out}", "--warp-source"], "--warp-source needs the flow method"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "arguments", "says"), CASES, ids=[case for case, _, _ in CASES])
def test_bad_command_lines_are_answered_in_one_line_before_any_work(cli, files, tmp_path, case, arguments, says):
    out = tmp_path / "out"
    before = sorted(path.name for path in tmp_path.iterdir())
    started = time.perf_counter()
    code, stderr = cli(*(str(a).format(out=out, **files) for a in arguments))
    assert code == 2, stderr
    assert says in stderr and stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == before  # nothing written, nothing left behind
    assert time.perf_counter() - started < 10.0  # answered before training (a tiny fit alone takes longer)


def test_a_failed_rerun_leaves_the_previous_result_as_it_was(cli, tmp_path):
    out = tmp_path / "fit"
    assert cli("fit", MESH, "-o", out, "--preset", "tiny", "--steps", "20", "--resolution", "24", "--no-metrics")[0] == 0
    contents = {path.name: path.read_bytes() for path in out.iterdir()}
    assert set(contents) == {"mesh.ply", "model.pt", "metrics.json"}
    empty = tmp_path / "empty.obj"
    empty.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    for arguments in (["--steps", "0"], ["--resolution", "2000"]):
        assert cli("fit", MESH, "-o", out, *arguments)[0] == 2
    assert cli("fit", empty, "-o", out, "--preset", "tiny", "--steps", "20")[0] == 2
    assert {path.name: path.read_bytes() for path in out.iterdir()} == contents
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty.obj", "fit"]  # no staging folder left


def test_ctrl_c_during_training_leaves_no_output(tmp_path):
    out = tmp_path / "fit"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "fit", str(MESH), "-o", str(out), "--preset", "tiny", "--steps", "100000"],
        cwd=REPO, stderr=subprocess.PIPE, text=True, env=environment, preexec_fn=interruptible_child,
    )  # fmt: skip
    with process:
        try:
            buffer = ""
            while "training [" not in buffer:
                buffer += process.stderr.read(1)
                assert buffer or process.poll() is None
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=60) == 130
        finally:
            process.kill()  # a failed check leaves no fit running into the next tests
    assert list(tmp_path.iterdir()) == []


def test_a_mesh_far_from_the_origin_keeps_its_precision_in_every_file(cli, tmp_path):
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    sphere.apply_translation((5e6, -3e6, 250.0))
    path = tmp_path / "far.ply"
    write_ply(path, sphere.vertices, sphere.faces)  # in double (trimesh's own export would round it to float32)
    assert coordinate_type(sphere.vertices) == "double" and coordinate_type(sphere.vertices - sphere.centroid) == "float"
    out = tmp_path / "fit"
    assert cli("fit", path, "-o", out, "--preset", "tiny", "--resolution", "32")[0] == 0
    header = (out / "mesh.ply").read_bytes().split(b"end_header")[0].decode()
    assert "property double x" in header
    written = trimesh.load(out / "mesh.ply", process=False).vertices
    # float32 at 5e6 snaps to a grid of 0.5: the sphere of radius 1 would keep only a handful of distinct x values
    assert len(np.unique(written[:, 0])) > 200
    assert np.median(np.linalg.norm(written - (5e6, -3e6, 250.0), axis=1)) == pytest.approx(1.0, abs=0.05)
    assert json.loads((out / "metrics.json").read_text())["metrics"]["chamfer_l1"] < 0.05


def test_the_ply_writer_refuses_non_finite_coordinates(tmp_path):
    vertices = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, np.inf, 0.0]])
    with pytest.raises(ValueError, match="NaN or infinite"):
        write_ply(tmp_path / "bad.ply", vertices, np.array([[0, 1, 2]]))
    assert not (tmp_path / "bad.ply").exists()


def test_negative_times_can_be_written_as_they_read(cli, tmp_path):
    out = tmp_path / "evolution"
    code, stderr = cli("evolve", MODEL, "--flow", "offset", "--speed", "0.05", "--times", "-0.5,0", "-o", out,
                       "--steps", "3", "--resolution", "16")  # fmt: skip
    assert code == 0, stderr
    assert json.loads((out / "times.json").read_text())["times"] == [-0.5, 0.0]


WORKER_CASES = [
    # (case, message fields, what the error says)
    ("params not an object", {"kind": "fit", "params": ["Sphere"]}, "fit job: params must be an object"),
    ("unknown kind", {"kind": "teleport", "params": {}}, "unknown job kind 'teleport'"),
    ("unknown parameter", {"kind": "fit", "params": {"names": ["A"], "colour": "red"}}, "unknown parameter(s) 'colour'"),
    ("missing parameter", {"kind": "extract", "params": {}}, "parameter 'model' is missing"),
    ("string for a number", {"kind": "fit", "params": {"names": ["A"], "steps": "100"}}, "parameter 'steps' must be an integer"),
    ("bool for a number", {"kind": "fit", "params": {"names": ["A"], "resolution": True}}, "parameter 'resolution' must be an integer"),
    ("huge grid", {"kind": "extract", "params": {"model": "m.pt", "resolution": 4096}}, "parameter 'resolution' must be at most 1024"),
    ("empty name", {"kind": "fit", "params": {"names": [" "]}}, "parameter 'names' must not be empty"),
    ("no inputs", {"kind": "fit", "params": {"names": ["A"], "preset": "tiny"}}, "the job's inputs have no array 'vertices_0'"),
    ("missing job folder", {"kind": "fit", "params": {"names": ["A"]}, "dir": "/nonexistent/job"}, "does not exist"),
]  # fmt: skip


def test_bad_job_messages_are_answered_with_an_error_naming_what_is_wrong(tmp_path):
    worker = WorkerUnderTest()
    assert worker.next()["type"] == "hello"
    for index, (case, fields, says) in enumerate(WORKER_CASES):
        message = {**job(str(index), "fit", tmp_path), **fields}
        worker.send(message)
        end = worker.next()
        assert end["type"] == "error" and end["job"] == str(index), (case, end)
        assert says in end["message"], (case, end["message"])
    assert list(tmp_path.iterdir()) == []
    assert worker.close() == 0


def test_the_jobs_api_refuses_a_spec_built_directly_with_bad_values():
    with pytest.raises(ValueError, match="'steps' must be at least 1"):
        JOBS["fit"](names=("A",), steps=0)
    spec = JOBS["curvature"](model=str(MODEL))
    with pytest.raises(ValueError, match="must be \\(n, 3\\)"):
        spec.run({"points": np.zeros((4, 2))}, JobContext(output_dir=Path(".")))
    assert protocol.PROTOCOL_VERSION == 2
