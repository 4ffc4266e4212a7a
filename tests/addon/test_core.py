"""The add-on's Blender-free core with plain pytest (issue #4): the worker client against a real worker and against
fake workers that misbehave on purpose, job files and array checks, colours, texts, model files, the engine's
environment, and the import boundaries between Blender, the add-on and torch."""

from __future__ import annotations

import ast
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh

from addon.core import colors, engine_env, evolution, frames, job_files, model_files, morph, text, worker_client
from addon.core.errors import EngineError
from addon.core.params import fit_params
from addon.core.worker_client import EngineSession, JobRequest, Progress, SessionState, WorkerLaunch
from engine import protocol
from engine.surface_flows import Flow

REPO = Path(__file__).resolve().parents[2]
SESSION_TIMEOUT_S = 120.0
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny networks: one thread is as fast, and robust on a busy 2-core machine


def sphere_fit_request(steps: int, resolution: int = 24) -> JobRequest:
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    params = fit_params(preset="tiny", steps=steps, resolution=resolution, device="cpu", seed=0, names=["Sphere"])
    inputs = {"vertices_0": sphere.vertices.astype(np.float32), "faces_0": sphere.faces.astype(np.intc)}
    return JobRequest("fit", params, inputs, "fitting 'Sphere'")


def run_until_finished(session: EngineSession, on_poll=lambda session: None) -> None:
    deadline = time.monotonic() + SESSION_TIMEOUT_S
    while not session.finished:
        assert time.monotonic() < deadline, "the session did not finish"
        session.wait(0.1)
        session.poll()
        on_poll(session)


@pytest.fixture
def fake_engine(tmp_path):
    """An engine root whose worker is the given script (with json, os, sys, time imported and hello() defined)."""

    def make(body: str) -> WorkerLaunch:
        package = tmp_path / "fake_root" / "engine"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        header = textwrap.dedent(
            f"""
            import json, os, sys, time
            def send(message):
                print(json.dumps(message), flush=True)
            def hello(version={protocol.PROTOCOL_VERSION}):
                send({{"type": "hello", "protocol": version, "engine": "fake", "python": "3", "numpy": "1",
                      "torch": "2", "cuda": None}})
            """
        )
        (package / "worker.py").write_text(header + textwrap.dedent(body))
        return WorkerLaunch(sys.executable, package.parent)

    return make


def session_for(launch: WorkerLaunch, tmp_path: Path, requests=None, hang_timeout_s: float = 30.0) -> EngineSession:
    requests = [sphere_fit_request(10)] if requests is None else requests
    return EngineSession(launch, requests, tmp_path / "jobs", hang_timeout_s=hang_timeout_s)


# The worker client against the real engine.


def test_a_session_runs_a_fit_reports_progress_and_cleans_up(tmp_path):
    launch = WorkerLaunch(sys.executable, engine_env.engine_root(), ONE_THREAD)
    session = session_for(launch, tmp_path, [sphere_fit_request(60)])
    session.start()
    seen: list[Progress] = []
    run_until_finished(session, lambda s: s.progress and seen.append(s.progress))
    assert session.state is SessionState.SUCCEEDED, session.message
    assert session.hello["engine"] and session.hello["protocol"] == worker_client.PROTOCOL_VERSION
    assert {p.stage for p in seen} <= {"fit", "extract"} and any(p.stage == "fit" and p.step > 0 for p in seen)
    (result,) = session.results
    vertices, faces = job_files.mesh_arrays(result.outputs)
    # float64 until placed in the object's frame: precision far from the world origin (issue 12)
    assert len(faces) > 50 and vertices.dtype == np.float64 and faces.dtype == np.intc
    assert result.files["model"].is_file() and result.summary["steps"] == 60
    job_root = session.directory
    session.close()
    assert not job_root.exists()
    assert session.process.returncode == 0


def test_cancel_stops_the_real_worker_and_names_the_step(tmp_path):
    launch = WorkerLaunch(sys.executable, engine_env.engine_root(), ONE_THREAD)
    session = session_for(launch, tmp_path, [sphere_fit_request(100_000)])
    session.start()

    def cancel_once_training(session):
        if session.progress is not None and session.progress.step > 0:
            session.cancel()

    run_until_finished(session, cancel_once_training)
    session.close()
    assert session.state is SessionState.CANCELLED
    assert session.message.startswith("Cancelled fitting 'Sphere' at step ")


def test_check_engine_returns_the_hello(tmp_path):
    hello = worker_client.check_engine(
        WorkerLaunch(sys.executable, engine_env.engine_root()), tmp_path / "jobs", hang_timeout_s=60.0
    )
    assert hello["type"] == "hello" and hello["torch"]
    assert "Python" in text.describe_engine(hello) and "CPU only" in text.describe_engine({**hello, "cuda": None})


# The worker client against fake workers.


def test_a_worker_of_another_protocol_is_refused(fake_engine, tmp_path):
    session = session_for(fake_engine("hello(version=99)\nsys.stdin.read()"), tmp_path)
    session.start()
    run_until_finished(session)
    session.close()
    assert session.state is SessionState.FAILED
    assert "speaks protocol 99" in session.message and "reinstall the extension" in session.message


def test_a_worker_that_dies_is_reported_with_its_exit_and_log(fake_engine, tmp_path):
    body = """
    hello()
    sys.stdin.readline()
    sys.stderr.write("segmentation fault in the GPU driver\\n")
    sys.stderr.flush()
    os._exit(7)
    """
    session = session_for(fake_engine(body), tmp_path)
    session.start()
    run_until_finished(session)
    session.close()
    assert session.state is SessionState.FAILED
    assert "ended unexpectedly (exit code 7) while fitting 'Sphere'" in session.message
    assert "segmentation fault in the GPU driver" in session.message


def test_a_killed_worker_is_reported_as_killed(fake_engine, tmp_path):
    session = session_for(fake_engine("hello()\ntime.sleep(60)"), tmp_path)
    session.start()
    run_until_finished(session, lambda s: s.hello and s.process.poll() is None and os.kill(s.pid, signal.SIGKILL))
    session.close()
    assert session.state is SessionState.FAILED and "killed by SIGKILL" in session.message


def test_a_silent_worker_is_stopped_as_hung(fake_engine, tmp_path, monkeypatch):
    monkeypatch.setattr(worker_client, "MIN_HANG_TIMEOUT_S", 1.0)  # the real floor (30 s) is tested in the matrix
    session = session_for(fake_engine("hello()\ntime.sleep(60)"), tmp_path, hang_timeout_s=1.0)
    session.start()
    started = time.monotonic()
    run_until_finished(session)
    session.close()
    assert session.state is SessionState.FAILED and "stopped responding (no message for 1 s)" in session.message
    assert time.monotonic() - started < 10 and session.process.returncode != 0


def test_a_worker_that_ignores_cancel_is_killed_after_the_grace_time(fake_engine, tmp_path, monkeypatch):
    monkeypatch.setattr(worker_client, "CANCEL_GRACE_S", 0.3)
    body = """
    hello()
    job = json.loads(sys.stdin.readline())
    for step in range(1, 10**4):
        send({"type": "progress", "job": job["job"], "stage": "fit", "step": step, "total": 10**4, "loss": 1, "eta": 9})
        time.sleep(0.05)
    """
    session = session_for(fake_engine(body), tmp_path)
    session.start()
    run_until_finished(session, lambda s: s.progress and s.progress.step >= 3 and s.cancel())
    session.close()
    assert session.state is SessionState.CANCELLED and session.message.startswith("Cancelled fitting 'Sphere' at step")
    assert session.process.returncode < 0  # killed


def test_an_engine_error_message_reaches_the_user_unchanged(fake_engine, tmp_path):
    message = "Object 'Cube' has no faces (only points or edges); a surface with faces is needed to fit an SDF"
    body = f"""
    hello()
    job = json.loads(sys.stdin.readline())
    send({{"type": "error", "job": job["job"], "message": {message!r}}})
    sys.stdin.read()
    """
    session = session_for(fake_engine(body), tmp_path)
    session.start()
    run_until_finished(session)
    session.close()
    assert session.state is SessionState.FAILED and session.message == message


def test_a_python_that_does_not_exist_is_an_engine_error(tmp_path):
    session = session_for(WorkerLaunch(str(tmp_path / "no-python"), engine_env.engine_root()), tmp_path)
    with pytest.raises(EngineError, match="could not be started with Python .*no-python.*add-on preferences"):
        session.start()
    assert not any((tmp_path / "jobs").iterdir())  # the job directory was removed


def test_stale_job_directories_are_removed_at_the_next_start(fake_engine, tmp_path):
    stale = tmp_path / "jobs" / "job-left-by-a-crash"
    stale.mkdir(parents=True)
    (stale / worker_client.JOB_DIR_MARKER).write_text(worker_client.JOB_DIR_MARKER_TEXT)
    old = time.time() - worker_client.STALE_JOB_DIR_AGE_S - 60
    os.utime(stale, (old, old))
    session = session_for(fake_engine("hello()\nsys.stdin.read()"), tmp_path, requests=[])
    session.start()
    run_until_finished(session)
    session.close()
    assert session.state is SessionState.SUCCEEDED and not stale.exists()


def test_the_worker_environment_puts_the_engine_first_and_drops_pythonhome(monkeypatch):
    monkeypatch.setenv("PYTHONHOME", "/blender/python")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = WorkerLaunch("python3", Path("/ext/neural_sdf")).environment()
    assert env["PYTHONPATH"].split(os.pathsep) == ["/ext/neural_sdf", "/elsewhere"]
    assert "PYTHONHOME" not in env and env["PYTHONUNBUFFERED"] == "1"


def test_describe_exit():
    assert worker_client.describe_exit(3) == "exit code 3"
    assert worker_client.describe_exit(-signal.SIGKILL) == "killed by SIGKILL"


# Job files and array checks.


def test_npz_round_trip_and_unreadable_files(tmp_path):
    job_files.write_npz(tmp_path / "a.npz", {"x": np.arange(3)})
    np.testing.assert_array_equal(job_files.read_npz(tmp_path / "a.npz")["x"], np.arange(3))
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(EngineError, match="bad.npz could not be read"):
        job_files.read_npz(tmp_path / "bad.npz")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(EngineError, match="could not be read"):
        job_files.read_npz(tmp_path / "objects.npy")  # pickled objects are refused


@pytest.mark.parametrize(
    ("outputs", "match"),
    [
        ({"vertices": np.zeros((3, 2)), "faces": np.zeros((1, 3), int)}, r"vertices of shape \(3, 2\)"),
        ({"vertices": np.full((3, 3), np.nan), "faces": np.zeros((1, 3), int)}, "NaN or infinite"),
        ({"vertices": np.zeros((3, 3)), "faces": np.zeros((1, 3))}, "expected \\(m, 3\\) integers"),
        ({"vertices": np.zeros((3, 3)), "faces": np.zeros((0, 3), int)}, "has no faces"),
        ({"vertices": np.zeros((3, 3)), "faces": np.array([[0, 1, 3]])}, r"outside 0..2"),
        ({"faces": np.zeros((1, 3), int)}, "no 'vertices' array"),
    ],
)
def test_malformed_meshes_are_refused(outputs, match):
    with pytest.raises(EngineError, match=match):
        job_files.mesh_arrays(outputs)


def test_curvature_arrays_are_checked():
    fields = {name: np.zeros(4, np.float32) for name in job_files.CURVATURE_FIELDS}
    checked, rgba = job_files.curvature_arrays({**fields, "colors": np.ones((4, 4))}, 4)
    assert set(checked) == set(job_files.CURVATURE_FIELDS) and rgba.dtype == np.float32
    with pytest.raises(EngineError, match=r"mean of shape \(3,\)"):
        job_files.curvature_arrays({**fields, "mean": np.zeros(3), "colors": np.ones((4, 4))}, 4)
    with pytest.raises(EngineError, match=r"outside \[0, 1\]"):
        job_files.curvature_arrays({**fields, "colors": np.full((4, 4), 2.0)}, 4)


def test_evolution_frames_are_checked_and_a_vanished_frame_is_empty():
    triangle = {"vertices": np.eye(3, dtype=np.float32), "faces": np.array([[0, 1, 2]], np.int32)}
    outputs = {
        "times": np.array([0.0, 1.0]),
        "vertices_0": triangle["vertices"],
        "faces_0": triangle["faces"],
        "colors_0": np.full((3, 4), 0.5, np.float32),
        "vertices_1": np.zeros((0, 3), np.float32),
        "faces_1": np.zeros((0, 3), np.int32),
        "colors_1": np.zeros((0, 4), np.float32),
    }
    (first, second) = job_files.evolution_frames(outputs, 2, with_colors=True)
    assert first[0].shape == (3, 3) and first[1].dtype == np.intc and first[2].shape == (3, 4)
    assert second[0].shape == (0, 3) and second[1].shape == (0, 3) and second[2].shape == (0, 4)
    assert job_files.evolution_frames(outputs, 2, with_colors=False)[0][2] is None
    with pytest.raises(EngineError, match=r"\(2,\) frame times, expected 3"):
        job_files.evolution_frames(outputs, 3, with_colors=False)
    with pytest.raises(EngineError, match=r"colours of shape \(2, 4\) for frame 0"):
        job_files.evolution_frames({**outputs, "colors_0": np.zeros((2, 4))}, 2, with_colors=True)
    with pytest.raises(EngineError, match=r"faces whose indices are outside"):
        job_files.evolution_frames({**outputs, "faces_0": np.array([[0, 1, 5]])}, 2, with_colors=False)
    empty = {**outputs, "vertices_0": outputs["vertices_1"], "faces_0": outputs["faces_1"]}
    with pytest.raises(EngineError, match="The surface vanished in every frame"):
        job_files.evolution_frames(empty, 2, with_colors=False)


def test_source_positions_of_a_flow_morph_are_checked():
    positions = np.zeros((3, 5, 3), np.float64)
    checked = job_files.source_positions({"source_positions": positions}, 3, 5)
    assert checked.shape == (3, 5, 3) and checked.dtype == np.float32
    with pytest.raises(EngineError, match=r"source positions of shape \(3, 5, 3\), expected \(3, 4, 3\)"):
        job_files.source_positions({"source_positions": positions}, 3, 4)
    positions[1, 2, 0] = np.nan
    with pytest.raises(EngineError, match="NaN or infinite"):
        job_files.source_positions({"source_positions": positions}, 3, 5)
    with pytest.raises(EngineError, match="no 'source_positions' array"):
        job_files.source_positions({}, 3, 5)


# Surface evolution settings.


def test_frames_map_linearly_to_flow_time():
    assert evolution.frame_times(1, 4, 1.5) == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert evolution.frame_times(10, 12, -0.2) == pytest.approx([0.0, -0.1, -0.2])
    with pytest.raises(EngineError, match="The frame range 5 to 5 holds no animation"):
        evolution.frame_times(5, 5, 1.0)
    with pytest.raises(EngineError, match="The end time is 0"):
        evolution.frame_times(1, 4, 0.0)


def test_frames_stack_into_one_mesh_and_show_one_at_a_time():
    assert frames.frame_count(1, 3) == 3
    with pytest.raises(EngineError, match="The frame range 4 to 2 holds no animation"):
        frames.frame_count(4, 2)
    triangle = (np.eye(3, dtype=np.float32), np.array([[0, 1, 2]], np.intc))
    vanished = (np.zeros((0, 3), np.float32), np.zeros((0, 3), np.intc))
    quad = (np.ones((4, 3), np.float32), np.array([[0, 1, 2], [0, 2, 3]], np.intc))
    vertices, faces, frame_of_vertex = frames.stack_frames([triangle, vanished, quad])
    assert vertices.shape == (7, 3) and faces.dtype == np.intc
    np.testing.assert_array_equal(faces, [[0, 1, 2], [3, 4, 5], [3, 5, 6]])
    np.testing.assert_array_equal(frame_of_vertex, [0, 0, 0, 2, 2, 2, 2])
    # Before the start the first frame shows, after the end the last, in between the nearest.
    assert [frames.shown_frame(frame, 10, 4) for frame in (3, 10, 11.4, 11.5, 13, 40)] == [0, 0, 1, 2, 3, 3]


def test_shape_key_keyframes_blend_one_frame_into_the_next():
    keyframes = frames.shape_key_keyframes(5, 4)
    assert keyframes == [
        [(5.0, 0.0), (6.0, 1.0), (7.0, 0.0)],
        [(6.0, 0.0), (7.0, 1.0), (8.0, 0.0)],
        [(7.0, 0.0), (8.0, 1.0)],
    ]

    def value(key: list[tuple[float, float]], frame: float) -> float:  # linear, held outside the keyframes
        return float(np.interp(frame, [f for f, _ in key], [v for _, v in key]))

    # Key k's weight: 1 at frame 5 + k, linear blends between, the basis before the start, the last after the end.
    for frame, weights in ((4, [0, 0, 0]), (5, [0, 0, 0]), (6, [1, 0, 0]), (6.25, [0.75, 0.25, 0]), (8, [0, 0, 1]),
                           (20, [0, 0, 1])):  # fmt: skip
        assert [value(key, frame) for key in keyframes] == pytest.approx(weights)
    assert frames.shape_key_keyframes(1, 2) == [[(1.0, 0.0), (2.0, 1.0)]]


def test_flows_move_into_model_coordinates_in_the_engines_terms():
    # The fitted object was scaled by 2 and moved since the fit: world = 2 * model + (1, 0, 0).
    world_to_model = np.diag([0.5, 0.5, 0.5, 1.0])
    world_to_model[:3, 3] = (-0.5, 0.0, 0.0)
    mcf = evolution.flow_params("MCF", 0.08, [], world_to_model)
    assert mcf == {"mean_curvature": pytest.approx(0.02), "normal_speed": 0.0, "fields": []}
    assert evolution.flow_params("OFFSET", -0.4, [], world_to_model)["normal_speed"] == pytest.approx(-0.2)
    fields = [
        evolution.FieldEmpty("Push", "SOURCE", (3.0, 0.0, 0.0), (0.0, 0.0, 2.0), 0.6, 1.0),
        evolution.FieldEmpty("Pull", "SINK", (1.0, 2.0, 0.0), (0.0, 0.0, 1.0), 0.6, 1.0),
        evolution.FieldEmpty("Turn", "ROTATION", (1.0, 0.0, 0.0), (0.0, 3.0, 0.0), 0.7, 1.0),
    ]
    push, pull, turn = evolution.flow_params("FIELDS", 0.0, fields, world_to_model)["fields"]
    assert push == {
        "kind": "source", "center": pytest.approx([1.0, 0.0, 0.0]), "strength": pytest.approx(0.3),
        "radius": pytest.approx(0.5), "axis": pytest.approx([0.0, 0.0, 1.0]),
    }  # fmt: skip
    assert pull["kind"] == "source" and pull["strength"] == pytest.approx(-0.3)
    assert pull["center"] == pytest.approx([0.0, 1.0, 0.0])
    assert turn["kind"] == "rotation" and turn["strength"] == pytest.approx(0.7)  # radians per time: unscaled
    assert turn["axis"] == pytest.approx([0.0, 1.0, 0.0])
    engine_flow = Flow.from_dict(evolution.flow_params("FIELDS", 0.0, fields, world_to_model))
    assert [term.kind for term in engine_flow.fields] == ["source", "source", "rotation"]
    with pytest.raises(EngineError, match="There are no flow field empties in the scene"):
        evolution.flow_params("FIELDS", 0.0, [], world_to_model)
    flat = evolution.FieldEmpty("Flat", "TWIST", (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 1.0, 1.0)
    with pytest.raises(EngineError, match="The field empty 'Flat' has a zero scale"):
        evolution.flow_params("FIELDS", 0.0, [flat], world_to_model)


# Morph landmarks.


def landmark(name: str, role: str, pair: int, x: float) -> morph.Landmark:
    return morph.Landmark(name, role, pair, (x, 0.0, 1.0))


def test_a_morphs_empty_frames_are_explained_with_what_to_do():
    # Issue 14: a level-set morph between shapes that do not overlap left empty frames with no hint why.
    assert morph.frame_list([7, 2, 3, 4, 9, 10]) == "2\u20134, 7, 9\u201310"
    assert morph.empty_frames_text("LEVELSET", []) == ""
    assert morph.empty_frames_text("LEVELSET", [2, 3, 4]) == (
        "; the surface is empty in 3 of them: the shapes do not overlap in frames 2\u20134: move them together, or "
        "use the Flow method"
    )
    assert morph.empty_frames_text("FLOW", [5]) == "; the surface is empty in 1 of them (frame 5): try more morph steps"


def test_landmark_empties_pair_by_id_in_world_space():
    landmarks = [
        landmark("B", "TARGET", 7, 2.0),
        landmark("A", "SOURCE", 7, 1.0),
        landmark("C", "SOURCE", 2, 3.0),
        landmark("D", "TARGET", 2, 4.0),
    ]
    inputs = morph.landmark_inputs("FLOW", landmarks)
    np.testing.assert_array_equal(inputs["landmarks_source"], [[3.0, 0.0, 1.0], [1.0, 0.0, 1.0]])
    np.testing.assert_array_equal(inputs["landmarks_target"], [[4.0, 0.0, 1.0], [2.0, 0.0, 1.0]])
    assert morph.free_pair_id({1, 2, 4}) == 3 and morph.free_pair_id(set()) == 1


@pytest.mark.parametrize(
    "method, landmarks, match",
    [
        ("LEVELSET", [landmark("A", "SOURCE", 1, 0.0), landmark("B", "TARGET", 1, 1.0)],
         "Landmarks guide the Flow method only: choose Flow, or turn Use Landmarks off"),
        ("FLOW", [], "the scene has no landmark empties: add a pair with Add Landmark Pair"),
        ("FLOW", [landmark("A", "SOURCE", 1, 0.0), landmark("B", "TARGET", 1, 1.0), landmark("Lone", "SOURCE", 3, 0.0)],
         "The source landmark 'Lone' \\(pair 3\\) has no target partner: give a target landmark the pair id 3, or "
         "delete 'Lone'"),
        ("FLOW", [landmark("Lone", "TARGET", 2, 0.0)], "The target landmark 'Lone' \\(pair 2\\) has no source partner"),
        ("FLOW", [landmark("A", "SOURCE", 1, 0.0), landmark("B", "SOURCE", 1, 1.0), landmark("C", "TARGET", 1, 1.0)],
         "Landmark pair 1 has 2 source landmarks \\('A', 'B'\\): give each pair one source and one target"),
    ],
)  # fmt: skip
def test_unpaired_duplicated_or_misplaced_landmarks_are_refused(method, landmarks, match):
    with pytest.raises(EngineError, match=match):
        morph.landmark_inputs(method, landmarks)


# Colours, texts, model files.


def test_srgb_to_linear_follows_the_standard_curve():
    rgba = np.array([[0.0, 0.04045, 0.5, 0.3], [1.0, 0.2, 0.8, 1.0]])
    linear = colors.srgb_to_linear(rgba)
    np.testing.assert_allclose(
        linear[:, :3], [[0.0, 0.04045 / 12.92, 0.21404114], [1.0, 0.03310477, 0.60382734]], rtol=1e-5
    )
    np.testing.assert_array_equal(linear[:, 3], rgba[:, 3].astype(np.float32))
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        colors.srgb_to_linear(np.zeros((2, 3)))


def test_durations_and_progress_lines():
    assert [text.format_duration(s) for s in (8.4, 125, 3720)] == ["8 s", "2 min 05 s", "1 h 02 min"]
    fit = Progress("fit", 120, 300, 0.01234, 14.2)
    assert (
        text.progress_text("fit", "fitting 'Sphere'", fit, 0, 2)
        == "Fitting 'Sphere' (1/2): step 120/300, loss 0.01234, ETA 14 s"
    )
    assert text.progress_text("fit", "fitting 'Sphere'", None, 0, 1) == "Fitting 'Sphere': starting the engine"
    # A warm engine (or the second job of a session) is already running: only the job is starting.
    assert text.progress_text("fit", "fitting 'Sphere'", None, 0, 1, engine_started=True) == "Fitting 'Sphere': starting"
    extract = Progress("extract", 0, 1, None, None)
    assert text.progress_text("fit", "fitting 'Sphere'", extract, 0, 1) == "Fitting 'Sphere': extracting the surface"
    assert text.overall_fraction("fit", fit, 1, 2) == pytest.approx((1 + 0.95 * 0.4) / 2)
    assert text.overall_fraction("fit", Progress("extract", 1, 1, None, None), 0, 1) == 1.0
    training = Progress("evolve", 30, 600, 0.5, 70.0)
    assert text.progress_text("evolve", "evolving 'Sphere SDF'", training, 0, 1) == (
        "Evolving 'Sphere SDF': training step 30/600, loss 0.5, ETA 1 min 10 s"
    )
    assert text.progress_text("evolve", "evolving 'Sphere SDF'", Progress("evolve", 0, 600, None, None), 0, 1) == (
        "Evolving 'Sphere SDF': preparing samples"
    )
    extracting = Progress("frames", 3, 12, None, 4.0)
    assert text.progress_text("evolve", "evolving 'Sphere SDF'", extracting, 0, 1) == (
        "Evolving 'Sphere SDF': frame 3/12, ETA 4 s"
    )
    assert text.overall_fraction("evolve", training, 0, 1) == pytest.approx(0.9 * 30 / 600)
    assert text.overall_fraction("evolve", extracting, 0, 1) == pytest.approx(0.9 + 0.1 * 3 / 12)
    morphing = "morphing 'Small' into 'Large'"
    assert text.progress_text("morph", morphing, Progress("fit", 0, 200, None, None), 0, 1) == (
        "Morphing 'Small' into 'Large': fitting both shapes, preparing samples"
    )
    fits = Progress("fit", 50, 200, 2.5, 6.0)
    assert text.progress_text("morph", morphing, fits, 0, 1) == (
        "Morphing 'Small' into 'Large': fitting both shapes, step 50/200, loss 2.5, ETA 6 s"
    )
    training = Progress("morph", 10, 20, 0.25, 3.0)
    assert text.progress_text("morph", morphing, training, 0, 1) == (
        "Morphing 'Small' into 'Large': training the morph, step 10/20, loss 0.25, ETA 3 s"
    )
    assert text.progress_text("morph", morphing, Progress("frames", 1, 3, None, None), 0, 1) == (
        "Morphing 'Small' into 'Large': frame 1/3"
    )
    assert text.overall_fraction("morph", fits, 0, 1) == pytest.approx(0.5 * 50 / 200)
    assert text.overall_fraction("morph", training, 0, 1) == pytest.approx(0.5 + 0.4 * 10 / 20)
    assert text.curvature_unit("gaussian", "m") == "1/m\u00b2" and text.curvature_unit("mean", "m") == "1/m"


def test_the_panel_shows_short_progress_and_the_status_bar_the_whole_line():
    # Issue 14: at the default sidebar width the whole line was cut off and the bar hid the step count.
    short = text.short_progress_text
    assert short("fit", None, 0, 1) == "Starting the engine\u2026"
    assert short("fit", None, 0, 1, engine_started=True) == "Starting\u2026"
    assert short("fit", Progress("fit", 0, 300, None, None), 0, 1) == "Preparing samples\u2026"
    assert short("fit", Progress("fit", 77, 300, 0.01, 22.2), 0, 1) == "Step 77/300 · ETA 22 s"
    assert short("fit", Progress("fit", 77, 300, 0.01, 22.2), 1, 2) == "2/2 · Step 77/300 · ETA 22 s"
    assert short("fit", Progress("extract", 0, 1, None, None), 0, 1) == "Extracting the surface\u2026"
    assert short("evolve", Progress("evolve", 30, 800, 0.5, 70.0), 0, 1) == "Step 30/800 · ETA 1 min 10 s"
    assert short("evolve", Progress("frames", 3, 12, None, 4.0), 0, 1) == "Frame 3/12 · ETA 4 s"
    assert short("evolve", Progress("curvature", 12, 12, None, None), 0, 1) == "Evaluating curvature\u2026"
    assert short("morph", Progress("fit", 0, 600, None, None), 0, 1) == "Fitting: preparing samples\u2026"
    assert short("morph", Progress("fit", 40, 600, 2.5, 65.0), 0, 1) == "Fitting 40/600 · ETA 1 min 05 s"
    assert short("morph", Progress("morph", 10, 500, 0.2, 3.0), 0, 1) == "Morph 10/500 · ETA 3 s"
    assert short("morph", Progress("frames", 3, 3, None, 0.0), 0, 1) == "Frame 3/3"


def test_model_files_are_gathered_beside_the_blend(tmp_path):
    name = model_files.model_filename("Bunny SDF/2")
    assert name.startswith("Bunny_SDF_2-") and name.endswith(".pt")
    assert name != model_files.model_filename("Bunny SDF/2")
    blend = tmp_path / "project" / "scene.blend"
    beside = model_files.models_dir_beside(blend)
    assert beside == tmp_path / "project" / "scene_neural_sdf"
    cached = tmp_path / "cache" / "models" / name
    cached.parent.mkdir(parents=True)
    weights = (REPO / "tests" / "data" / "legacy_v1_model.pt").read_bytes()
    cached.write_bytes(weights)
    allowed = [cached.parent, beside]
    gathered = model_files.gather_models([cached, cached, tmp_path / "missing.pt"], beside, allowed)
    assert gathered.moved == {cached: beside / name} and (beside / name).read_bytes() == weights
    assert not gathered.refused and not list(beside.glob(".*"))  # no partial copy left
    assert model_files.blend_relative(beside / name, blend) == f"//scene_neural_sdf/{name}"
    assert model_files.gather_models([beside / name], beside, allowed).moved == {beside / name: beside / name}


# The engine's environment.


def test_the_engine_is_found_and_the_python_chosen(tmp_path):
    assert (engine_env.engine_root() / "engine" / "worker.py").is_file()
    assert engine_env.choose_python("/opt/python", tmp_path / "venv") == "/opt/python"
    assert engine_env.choose_python("", tmp_path / "venv") == sys.executable
    made = engine_env.venv_python(tmp_path / "venv")
    made.parent.mkdir(parents=True)
    made.touch()
    assert engine_env.choose_python("", tmp_path / "venv") == str(made)


def test_setup_makes_a_venv_and_installs_the_requirements(tmp_path):
    commands = engine_env.setup_commands("/usr/bin/python3", tmp_path / "venv", tmp_path / "requirements.txt")
    assert commands[0] == ["/usr/bin/python3", "-m", "venv", str(tmp_path / "venv")]
    assert commands[1][:4] == [str(engine_env.venv_python(tmp_path / "venv")), "-m", "pip", "install"]
    assert commands[1][-2:] == ["-r", str(tmp_path / "requirements.txt")]


def run_commands(sequence: engine_env.CommandSequence, *, start: bool = True) -> None:
    if start:
        sequence.start()
    while not sequence.finished:
        sequence.wait(0.1)
        sequence.poll()
    sequence.close()


def test_command_sequences_succeed_fail_and_cancel():
    ok = engine_env.CommandSequence([[sys.executable, "-c", "print('one')"], [sys.executable, "-c", "print('two')"]])
    run_commands(ok)
    assert ok.state is SessionState.SUCCEEDED and ok.last_line == "two"
    failing = engine_env.CommandSequence(
        [[sys.executable, "-c", "import sys; print('no network'); sys.exit(2)"], ["never-run"]]
    )
    run_commands(failing)
    assert failing.state is SessionState.FAILED and "failed (exit code 2): no network" in failing.message
    slow = engine_env.CommandSequence([[sys.executable, "-c", "import time; time.sleep(30)"]])
    slow.start()
    slow.cancel()
    run_commands(slow, start=False)
    assert slow.state is SessionState.CANCELLED


@pytest.mark.parametrize("succeeds", [True, False])
def test_setup_swaps_in_a_complete_environment_or_keeps_the_old_one(tmp_path, succeeds):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("")
    venv = tmp_path / "venv"
    (venv / "old").mkdir(parents=True)
    setup = engine_env.EnvironmentSetup(sys.executable, venv, requirements)
    script = f"import os, sys; os.makedirs({str(setup.partial_dir / 'new')!r}); sys.exit({0 if succeeds else 1})"
    setup.commands = engine_env.CommandSequence([[sys.executable, "-c", script]])
    run_commands(setup.commands)
    setup.finish()
    assert (venv / "new").is_dir() == succeeds and (venv / "old").is_dir() != succeeds
    assert not setup.partial_dir.exists()


PIP_FAILURE = """
import sys
print("Collecting torch==2.13.0")
print("ERROR: Could not find a version that satisfies the requirement torch==2.13.0 (from versions: none)")
print("ERROR: No matching distribution found for torch==2.13.0")
print("")
print("[notice] A new release of pip is available: 24.0 -> 25.1")
print("hint: See above for details.")
print("")
sys.exit(1)
"""
VENV_FAILURE = """
import sys
print("The virtual environment was not created successfully because ensurepip is not available.")
print("")
print("Failing command: /cache/venv-partial/bin/python3")
print("")
sys.exit(1)
"""


def failed_setup(tmp_path, script: str, *, previous: bool) -> engine_env.EnvironmentSetup:
    tmp_path.mkdir(parents=True, exist_ok=True)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("")
    venv = tmp_path / "venv"
    if previous:
        engine_env.venv_python(venv).parent.mkdir(parents=True)
        engine_env.venv_python(venv).touch()
    setup = engine_env.EnvironmentSetup(sys.executable, venv, requirements)
    program = tmp_path / "pip_install.py"
    program.write_text(script)
    setup.commands = engine_env.CommandSequence([[sys.executable, str(program)]])
    run_commands(setup.commands)
    setup.finish()
    return setup


@pytest.mark.parametrize("previous", [False, True])
def test_a_failed_setup_says_what_pip_said_and_whether_an_environment_was_kept(tmp_path, previous):
    """Issue 14: the message lost pip's ERROR lines ("hint: See above for details.. The previous environment was
    kept"), and said an environment was kept when there was none."""
    setup = failed_setup(tmp_path, PIP_FAILURE, previous=previous)
    assert setup.commands.message.endswith(
        "failed (exit code 1): Could not find a version that satisfies the requirement torch==2.13.0 (from versions: "
        "none); No matching distribution found for torch==2.13.0"
    )
    message = setup.failure_message()
    assert message.startswith(setup.commands.message) and "hint" not in message and "notice" not in message
    kept = f". The previous environment in {tmp_path / 'venv'} was kept"
    assert message.endswith(kept) if previous else "previous environment" not in message
    assert ".." not in message and "| ." not in message and not message.endswith(".")


def test_a_failed_command_without_error_lines_shows_its_last_lines_without_empty_ones(tmp_path):
    message = failed_setup(tmp_path, VENV_FAILURE, previous=False).failure_message()
    assert message.endswith(
        "failed (exit code 1): The virtual environment was not created successfully because ensurepip is not "
        "available; Failing command: /cache/venv-partial/bin/python3"
    )
    silent = failed_setup(tmp_path / "silent", "import sys; sys.exit(3)", previous=False).failure_message()
    assert silent.endswith("failed (exit code 3) without any output")


def test_a_cancelled_setup_says_so_and_whether_an_environment_was_kept(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("")
    setup = engine_env.EnvironmentSetup(sys.executable, tmp_path / "venv", requirements)
    setup.commands = engine_env.CommandSequence([[sys.executable, "-c", "import time; time.sleep(30)"]])
    setup.commands.start()
    setup.commands.cancel()
    run_commands(setup.commands, start=False)
    setup.finish()
    assert setup.failure_message() == "Cancelled"


def test_setup_needs_the_requirements_file(tmp_path):
    with pytest.raises(EngineError, match="requirements file .* is missing"):
        engine_env.EnvironmentSetup(sys.executable, tmp_path / "venv", tmp_path / "requirements.txt")


# Which PyTorch build Set up engine installs (issue 14: PyPI's plain torch==2.13.0 is the ~3 GB CUDA build on Linux).

LINUX, WINDOWS, MAC = ("Linux", "x86_64"), ("Windows", "amd64"), ("Darwin", "arm64")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CUDA_INDEX = f"https://download.pytorch.org/whl/{engine_env.CUDA_BUILD}"


def machine(system_arch, driver=None) -> engine_env.Machine:
    return engine_env.Machine(*system_arch, driver)


@pytest.mark.parametrize(
    "system_arch, driver, wanted, name, index, reason",
    [
        (LINUX, None, "AUTO", "CPU", CPU_INDEX, "no NVIDIA driver found"),
        (LINUX, "550.54.14", "AUTO", "CUDA 12.8", CUDA_INDEX, "NVIDIA driver 550.54.14 found"),
        (LINUX, "470.82.01", "AUTO", "CPU", CPU_INDEX, "NVIDIA driver 470.82.01 is older than 525"),
        (LINUX, "550.54.14", "CPU", "CPU", CPU_INDEX, "chosen in the preferences"),
        (LINUX, None, "CUDA", "CUDA 12.8", CUDA_INDEX, "chosen in the preferences"),
        (("Linux", "aarch64"), None, "AUTO", "CPU", CPU_INDEX, "no NVIDIA driver found"),
        (WINDOWS, None, "AUTO", "CPU", None, "no NVIDIA driver found"),  # PyPI's Windows torch is the CPU build
        (WINDOWS, "560.94", "AUTO", "CUDA 12.8", CUDA_INDEX, "NVIDIA driver 560.94 found"),
        (MAC, None, "AUTO", "CPU and Apple GPU", None, "the only build for macOS"),
        (MAC, None, "CPU", "CPU and Apple GPU", None, "the only build for macOS"),
    ],
)
def test_the_torch_build_follows_the_machine_and_the_preference(system_arch, driver, wanted, name, index, reason):
    build = engine_env.choose_torch_build(machine(system_arch, driver), wanted)
    assert (build.name, build.index_url) == (name, index) and build.reason.startswith(reason)
    assert build.pip_args() == (["--index-url", index] if index else [])
    assert build.download == ("~3 GB" if name.startswith("CUDA") else "~80 MB" if system_arch == MAC else "~200 MB")


def test_no_torch_build_where_pytorch_has_none():
    with pytest.raises(EngineError, match="no CUDA build for macOS: set PyTorch Build to Automatic"):
        engine_env.choose_torch_build(machine(MAC), "CUDA")
    with pytest.raises(EngineError, match="no build for Intel Macs"):
        engine_env.choose_torch_build(machine(("Darwin", "x86_64")))
    with pytest.raises(ValueError, match="wanted must be one of"):
        engine_env.choose_torch_build(machine(LINUX), "cuda")


def fake_nvidia_smi(tmp_path: Path, answer: str, code: int = 0) -> str:
    program = tmp_path / "nvidia-smi"
    program.write_text(f"#!{sys.executable}\nimport sys\nprint({answer!r})\nsys.exit({code})\n")
    program.chmod(0o755)
    return str(program)


@pytest.mark.skipif(os.name == "nt", reason="the fake nvidia-smi is a script with a #! line")
def test_the_probe_reads_the_nvidia_driver_from_proc_else_from_nvidia_smi(tmp_path, monkeypatch):
    proc = tmp_path / "version"
    monkeypatch.setattr(engine_env, "NVIDIA_PROC_FILE", proc)
    monkeypatch.setattr(engine_env.platform, "system", lambda: "Linux")
    monkeypatch.setattr(engine_env.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(engine_env.shutil, "which", lambda name: None)
    assert engine_env.probe_machine() == engine_env.Machine("Linux", "x86_64", None)
    proc.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.14  Release Build  (dvs@x)\n")
    assert engine_env.probe_machine().nvidia_driver == "550.54.14"
    assert engine_env.choose_torch_build(engine_env.probe_machine()).name == "CUDA 12.8"

    proc.unlink()
    smi = fake_nvidia_smi(tmp_path, "560.94")
    monkeypatch.setattr(engine_env.shutil, "which", lambda name: smi if name == "nvidia-smi" else None)
    monkeypatch.setattr(engine_env.platform, "system", lambda: "Windows")
    monkeypatch.setattr(engine_env.platform, "machine", lambda: "AMD64")
    assert engine_env.probe_machine() == engine_env.Machine("Windows", "amd64", "560.94")
    failing = fake_nvidia_smi(tmp_path, "NVIDIA-SMI has failed because it couldn't communicate with the driver", 9)
    monkeypatch.setattr(engine_env.shutil, "which", lambda name: failing)
    assert engine_env.probe_machine().nvidia_driver is None


def test_the_torch_pin_comes_from_requirements_txt(tmp_path):
    pinned = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line.startswith("torch==")]
    assert engine_env.torch_pin(REPO / "requirements.txt") == pinned[0].removeprefix("torch==")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\nnumpy>=1.26\nTorch == 2.13.1 ; sys_platform != 'emscripten'  # pinned\n")
    assert engine_env.torch_pin(requirements) == "2.13.1"
    requirements.write_text("torch>=2\nnumpy\n")
    with pytest.raises(EngineError, match="pins no torch version: reinstall the extension"):
        engine_env.torch_pin(requirements)


@pytest.mark.parametrize(
    "system_arch, driver, index_args",
    [
        (LINUX, None, ["--index-url", CPU_INDEX]),
        (LINUX, "550.54.14", ["--index-url", CUDA_INDEX]),
        (WINDOWS, None, []),
        (WINDOWS, "560.94", ["--index-url", CUDA_INDEX]),
        (MAC, None, []),
    ],
)
def test_setup_installs_the_chosen_torch_from_its_index_then_the_rest_from_the_default_one(
    tmp_path, system_arch, driver, index_args
):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("torch==2.13.0\nnumpy>=1.26,<2\n")
    build = engine_env.choose_torch_build(machine(system_arch, driver))
    venv, pip = tmp_path / "venv", [str(engine_env.venv_python(tmp_path / "venv")), "-m", "pip", "install"]
    commands = engine_env.setup_commands("/usr/bin/python3", venv, requirements, build)
    assert commands[0] == ["/usr/bin/python3", "-m", "venv", str(venv)]
    assert commands[1][:4] == pip and commands[1][5:] == ["torch==2.13.0", *index_args]
    # The other requirements from the default index (the user's pip configuration): no index arguments.
    assert commands[2][:4] == pip and commands[2][4:] == ["--disable-pip-version-check", "-r", str(requirements)]
    assert len(commands) == 3


def test_setup_says_what_it_installs_and_shows_each_step_with_the_last_output_line(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("torch==2.13.0\n")
    build = engine_env.choose_torch_build(machine(LINUX))
    setup = engine_env.EnvironmentSetup(sys.executable, tmp_path / "venv", requirements, build)
    assert setup.describe() == "PyTorch 2.13.0, CPU build (~200 MB download; no NVIDIA driver found)"
    assert setup.progress() == ("Making the environment (1/3): starting…", "Making the environment (1/3)", 0.0)
    setup.commands.index, setup.commands.last_line = 1, "Downloading torch-2.13.0+cpu-cp311-linux_x86_64.whl (192 MB)"
    text_line, short, fraction = setup.progress()
    assert short == "Installing PyTorch 2.13.0 (CPU, ~200 MB) (2/3)" and fraction == pytest.approx(1 / 3)
    assert engine_env.progress_detail(text_line, short) == setup.commands.last_line
    assert engine_env.progress_detail("Fitting 'Sphere': step 3/9", "Step 3/9") == "Fitting 'Sphere': step 3/9"


# Boundaries and the contract with the engine.


def imported_modules(folder: Path) -> dict[str, set[str]]:
    found = {}
    for path in folder.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(REPO))] = names
    return found


def test_the_engine_never_imports_bpy_and_the_addon_never_imports_torch():
    assert [
        path for path, names in imported_modules(REPO / "engine").items() if names & {"bpy", "mathutils", "addon"}
    ] == []
    assert [path for path, names in imported_modules(REPO / "addon").items() if names & {"torch", "engine"}] == []
    assert [
        path for path, names in imported_modules(REPO / "addon" / "core").items() if names & {"bpy", "mathutils"}
    ] == []


def test_the_client_speaks_the_engines_protocol():
    assert worker_client.PROTOCOL_VERSION == protocol.PROTOCOL_VERSION
    assert job_files.INPUTS_FILENAME == protocol.INPUTS_FILENAME
    assert job_files.CURVATURE_FIELDS == protocol.CURVATURE_FIELDS
