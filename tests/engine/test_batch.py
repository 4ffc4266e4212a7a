"""``python -m engine batch`` (issue 18): many fit, evolve and morph jobs, one after another or as Ray tasks, each
writing what its command line writes; a summary; reruns that skip finished jobs; bad jobs reported, bad arguments
refused before any work."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from engine.batch import main as batch_main
from engine.batch.run import RAY_MISSING
from engine.cli import main as cli_main
from engine.model import load_model
from tests.conftest import REPO, interruptible_child, run_engine_cli

FIT_OPTIONS = ["--preset", "tiny", "--steps", "20", "--resolution", "24", "--device", "cpu", "--seed", "3"]
TIMINGS = {"train_seconds", "extract_seconds", "frame_seconds", "fit_seconds", "curvature_seconds"}
"""Fields of a job's report that time it: they differ between any two runs."""


@pytest.fixture(scope="module")
def meshes(tmp_path_factory) -> Path:
    """A folder of two small meshes and one file with a mesh suffix that is not a mesh."""
    folder = tmp_path_factory.mktemp("meshes")
    trimesh.creation.icosphere(subdivisions=2, radius=0.5).export(folder / "sphere.ply")
    trimesh.creation.box(extents=(0.7, 0.7, 0.7)).export(folder / "box.ply")
    (folder / "bad.ply").write_text("not a mesh\n")
    (folder / "notes.txt").write_text("not a mesh file, and not read\n")
    return folder


def run_batch_process(*args) -> subprocess.CompletedProcess:
    """``python -m engine batch ARGS`` in a process of its own (one torch thread); its last stderr line says whether
    Ray was imported."""
    code = "import sys; from engine.batch import main; code = main(sys.argv[1:]); " \
           "print('ray imported:', 'ray' in sys.modules, file=sys.stderr); sys.exit(code)"  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", code, *map(str, args)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=environment)


@pytest.fixture(scope="module")
def serial_run(meshes, tmp_path_factory):
    """``batch fit`` of the mesh folder, one job after another: (output folder, the process)."""
    out = tmp_path_factory.mktemp("serial") / "out"
    return out, run_batch_process("fit", meshes, "-o", out, *FIT_OPTIONS)


def main(argv: list) -> int:
    """``python -m engine batch ARGV`` in this process."""
    return batch_main([str(argument) for argument in argv])


def summary(out: Path) -> dict[str, dict]:
    return {entry["name"]: entry for entry in json.loads((out / "summary.json").read_text())}


def without_timings(report: dict) -> dict:
    return {key: value for key, value in report.items() if key not in TIMINGS}


def assert_same_model(path_a: Path, path_b: Path) -> None:
    a, b = load_model(path_a).network.state_dict(), load_model(path_b).network.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_serial_fit_writes_each_mesh_as_the_cli_does_and_reports_the_bad_one(serial_run, meshes, tmp_path):
    out, process = serial_run
    assert process.returncode == 1, process.stderr
    assert process.stderr.rstrip().endswith("ray imported: False")
    entries = summary(out)
    assert list(entries) == ["bad", "box", "sphere"]  # the folder's meshes, sorted; notes.txt is not one
    bad = entries["bad"]
    assert bad["status"] == "error" and bad["input"] == str(meshes / "bad.ply")
    assert bad["error"].startswith("bad.ply could not be read")  # the reader's own words follow
    assert sorted(path.name for path in out.iterdir()) == ["box", "sphere", "summary.json"]  # nothing half-written
    for name in ("box", "sphere"):
        assert entries[name]["status"] == "ok" and entries[name]["seconds"] > 0
        assert sorted(path.name for path in (out / name).iterdir()) == ["mesh.ply", "metrics.json", "model.pt"]
        assert entries[name]["metrics"] == json.loads((out / name / "metrics.json").read_text())
        assert entries[name]["metrics"]["steps"] == 20 and entries[name]["metrics"]["metrics"]["iou"] > 0.5
    lines = process.stdout.splitlines()
    assert lines[0].split() == ["job", "status", "seconds", "result"]
    assert lines[1].split()[:2] == ["bad", "error"] and lines[2].split()[:2] == ["box", "ok"]
    assert "iou" in lines[2] and lines[-1].startswith("3 jobs: 2 ok, 1 failed")

    # The command line on one mesh, with the same options, writes the same files
    cli_out = tmp_path / "cli"
    assert run_engine_cli("fit", meshes / "box.ply", "-o", cli_out, *FIT_OPTIONS).returncode == 0
    assert (cli_out / "mesh.ply").read_bytes() == (out / "box" / "mesh.ply").read_bytes()
    assert_same_model(cli_out / "model.pt", out / "box" / "model.pt")
    cli_report = json.loads((cli_out / "metrics.json").read_text())
    assert without_timings(cli_report) == without_timings(entries["box"]["metrics"])
    assert load_model(out / "box" / "model.pt").metadata["sources"] == [str(meshes / "box.ply")]


def test_a_rerun_skips_the_finished_jobs_and_runs_the_failed_one_again(serial_run, meshes, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(serial_run[0], out)
    finished = {name: (out / name / "model.pt").stat() for name in ("box", "sphere")}
    earlier = summary(out)
    fixed = tmp_path / "meshes"
    shutil.copytree(meshes, fixed)
    trimesh.creation.box(extents=(0.5, 0.8, 0.6)).export(fixed / "bad.ply")  # the bad mesh, mended

    assert main(["fit", fixed, "-o", out, *FIT_OPTIONS]) == 0
    stderr = capsys.readouterr().err
    assert "2 of 3 jobs finished before: skipped" in stderr
    assert stderr.count("20/20") == 1 and "bad: fit" in stderr and "box: fit" not in stderr  # one job trained
    entries = summary(out)
    assert entries["bad"]["status"] == "ok" and "skipped" not in entries["bad"]
    assert (out / "bad" / "mesh.ply").is_file()
    for name, stat in finished.items():
        assert entries[name]["skipped"] is True and entries[name]["status"] == "ok"
        assert entries[name]["metrics"] == earlier[name]["metrics"]
        assert entries[name]["seconds"] == earlier[name]["seconds"]
        now = (out / name / "model.pt").stat()
        assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)  # not written again


def test_a_rerun_with_other_settings_is_refused_before_any_work(serial_run, meshes, capsys):
    out = serial_run[0]
    before = (out / "summary.json").read_bytes()
    other = [option if option != "20" else "25" for option in FIT_OPTIONS]
    assert main(["fit", meshes, "-o", out, *other]) == 2
    error = capsys.readouterr().err
    assert f"{out / 'box'} holds this job's result with other settings (steps 20, now 25)" in error
    assert (out / "summary.json").read_bytes() == before


@pytest.mark.parametrize(
    "case, arguments, says",
    [
        ("missing mesh", ["fit", "{meshes}/missing.ply"], "missing.ply does not exist"),
        ("empty folder", ["fit", "{empty}"], "holds no mesh files"),
        ("not a mesh file", ["fit", "{meshes}/notes.txt"], "notes.txt: unsupported format '.txt'"),
        ("zero steps", ["fit", "{meshes}", "--steps", "0"], "--steps must be at least 1, got 0"),
        ("no CPUs", ["fit", "{meshes}", "--cpus-per-job", "0"], "--cpus-per-job must be at least 1"),
        ("output is a file", ["fit", "{meshes}", "-o", "{meshes}/notes.txt"], "is a file; give a folder"),
        ("missing jobs file", ["evolve", "{empty}/jobs.json"], "jobs file"),
    ],
)  # fmt: skip
def test_bad_arguments_exit_2_before_any_work(case, arguments, says, meshes, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    places = {"meshes": meshes, "empty": tmp_path / "empty"}
    argv = [argument.format(**places) for argument in arguments]
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "out")]
    assert main(argv) == 2, case
    assert says in capsys.readouterr().err, case
    assert not (tmp_path / "out").exists()


def test_ray_not_installed_is_said_at_once(meshes, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert main(["fit", meshes, "-o", tmp_path / "out", "--ray", "auto"]) == 2
    error = capsys.readouterr().err
    assert RAY_MISSING in error and "pip install -r requirements-batch.txt (or neural-sdf-engine[batch])" in error
    assert not (tmp_path / "out").exists()


def evolve_entries(model: Path, bad_model: Path) -> list[dict]:
    tiny = {"steps": 3, "resolution": 16, "device": "cpu", "seed": 3}
    return [
        {"model": str(model), "flow": "offset", "speed": 0.05, "times": [-0.5, 0, 0.5], "curvature": "mean", **tiny},
        {"name": "shrink", "model": str(model), "flow": "mcf", "speed": 0.001, "times": "0,1", **tiny},
        {"model": bad_model.name, "flow": "offset", "speed": 0.05, "times": [0], **tiny},  # beside the JSON file
    ]


def test_batch_evolve_runs_the_entries_of_a_json_list(serial_run, tmp_path, capsys):
    model = serial_run[0] / "box" / "model.pt"
    bad_model = tmp_path / "broken.pt"
    bad_model.write_bytes(b"not a model")
    jobs = tmp_path / "evolve.json"
    jobs.write_text(json.dumps(evolve_entries(model, bad_model)))
    out = tmp_path / "out"
    assert main(["evolve", jobs, "-o", out]) == 1
    entries = summary(out)
    assert list(entries) == ["box", "shrink", "broken"]  # a fit's model.pt is named by its folder
    assert entries["box"]["status"] == "ok" and entries["shrink"]["status"] == "ok"
    assert entries["broken"]["status"] == "error"
    assert entries["broken"]["error"].startswith(f"{bad_model} is not a model file")  # the user's path, not a copy
    frames = ["frame_0000.ply", "frame_0001.ply", "frame_0002.ply"]
    assert sorted(path.name for path in (out / "box").iterdir()) == ["evolution.pt", *frames, "times.json"]
    assert entries["box"]["metrics"]["times"] == [-0.5, 0.0, 0.5] and entries["box"]["metrics"]["frames"] == frames

    # what the command line writes for the first entry
    cli_out = tmp_path / "cli"
    assert cli_main(["evolve", str(model), "--flow", "offset", "--speed", "0.05", "--times", "-0.5,0,0.5",
                     "--curvature", "mean", "--steps", "3", "--resolution", "16", "--device", "cpu", "--seed", "3",
                     "-o", str(cli_out)]) == 0  # fmt: skip
    for frame in frames:
        assert (cli_out / frame).read_bytes() == (out / "box" / frame).read_bytes()
    report = json.loads((cli_out / "times.json").read_text())
    assert without_timings(report) == without_timings(entries["box"]["metrics"])
    capsys.readouterr()


def test_batch_morph_runs_the_entries_of_a_json_list_and_a_job_failing_inside_is_reported(meshes, tmp_path):
    tiny = {"preset": "tiny", "fit_steps": 20, "steps": 3, "frames": 2, "resolution": 16, "device": "cpu"}
    far = tmp_path / "far.json"
    far.write_text("[[[0, 0, 0], [1e30, 0, 0]]]")
    pair = {"source": str(meshes / "sphere.ply"), "target": str(meshes / "box.ply")}
    jobs = tmp_path / "morph.json"
    jobs.write_text(json.dumps([{**pair, **tiny}, {**pair, "method": "flow", "landmarks": "far.json", **tiny}]))
    out = tmp_path / "out"
    assert main(["morph", jobs, "-o", out]) == 1
    entries = summary(out)
    assert list(entries) == ["sphere-to-box", "sphere-to-box-2"]
    ok, failed = entries.values()
    assert ok["status"] == "ok" and ok["input"] == [pair["source"], pair["target"]]
    assert sorted(path.name for path in (out / "sphere-to-box").iterdir()) == [
        "frame_0000.ply", "frame_0001.ply", "morph.pt", "times.json"]  # fmt: skip
    assert failed["status"] == "error" and "landmark points on B: landmark 0" in failed["error"]
    assert not (out / "sphere-to-box-2").exists()


@pytest.mark.parametrize(
    "case, entries, says",
    [
        ("not a list", {"model": "m.pt"}, "must hold a JSON list of evolve job objects, got an object"),
        ("empty list", [], "got an empty list"),
        ("entry not an object", [1], "entry 1: must be an object"),
        ("unknown key", [{"model": "{model}", "flow": "mcf", "speed": 1, "times": [0], "colour": "red"}],
         "entry 1: unknown key 'colour'; an entry of batch evolve takes name, model, flow"),
        ("missing key", [{"model": "{model}", "speed": 1, "times": [0]}], "entry 1: 'flow' is missing"),
        ("bad value in the second", [{"model": "{model}", "flow": "mcf", "speed": 1, "times": [0]},
                                     {"model": "{model}", "flow": "mcf", "speed": 1, "times": [0], "steps": "many"}],
         "entry 2, 'steps': invalid int value: 'many'"),
        ("out of range", [{"model": "{model}", "flow": "mcf", "speed": 1, "times": [0], "steps": 0}],
         "entry 1, 'steps': must be at least 1, got 0"),
        ("bad choice", [{"model": "{model}", "flow": "swirl", "speed": 1, "times": [0]}],
         "entry 1, 'flow': invalid choice: 'swirl'"),
        ("flag not a boolean", [{"source": "a.ply", "target": "b.ply", "warp_source": "yes"}],
         "entry 1, 'warp_source': must be true or false"),
        ("times not numbers", [{"model": "{model}", "flow": "mcf", "speed": 1, "times": [0, "x"]}],
         "entry 1, 'times': must be a list of numbers"),
        ("missing model", [{"model": "missing.pt", "flow": "mcf", "speed": 1, "times": [0]}],
         "entry 1, 'model': {folder}/missing.pt does not exist"),
        ("options that do not go together", [{"model": "{model}", "flow": "mcf", "times": [0]}],
         "entry 1: --flow mcf takes --speed"),
        ("a name with a slash", [{"name": "a/b", "model": "{model}", "flow": "mcf", "speed": 1, "times": [0]}],
         "entry 1, 'name': 'a/b' must be a plain folder name"),
        ("the same name twice", [{"name": "a", "model": "{model}", "flow": "mcf", "speed": 1, "times": [0]},
                                 {"name": "A", "model": "{model}", "flow": "mcf", "speed": 1, "times": [0]}],
         "entry 2, 'name': 'A' is the name of another entry"),
    ],
)  # fmt: skip
def test_a_job_list_is_checked_whole_before_any_work(case, entries, says, tmp_path, capsys):
    model = tmp_path / "model.pt"
    model.write_bytes(b"only its existence is checked before the work")
    text = json.dumps(entries).replace("{model}", str(model))
    jobs = tmp_path / "jobs.json"
    jobs.write_text(text)
    kind = "morph" if "source" in text else "evolve"
    assert main([kind, jobs, "-o", tmp_path / "out"]) == 2, case
    error = capsys.readouterr().err
    assert f"error: {jobs}" in error and says.format(folder=tmp_path) in error, (case, error)
    assert not (tmp_path / "out").exists()


def test_ctrl_c_keeps_the_finished_folders_and_leaves_nothing_of_the_others(serial_run, tmp_path):
    model = serial_run[0] / "box" / "model.pt"
    quick = {"model": str(model), "flow": "offset", "speed": 0.05, "times": [0, 0.5], "resolution": 16, "device": "cpu"}
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([{**quick, "steps": 3}, {**quick, "steps": 100000}, {**quick, "steps": 3}]))
    out = tmp_path / "out"
    code = "import sys; from engine.batch import main; sys.exit(main(sys.argv[1:]))"
    process = subprocess.Popen([sys.executable, "-c", code, "evolve", str(jobs), "-o", str(out)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=interruptible_child)  # fmt: skip
    with process:
        try:
            buffer = ""
            while "box-2: evolve" not in buffer or "training [" not in buffer.split("box-2: evolve")[1]:
                character = process.stderr.read(1)
                assert character or process.poll() is None, buffer
                buffer += character
            process.send_signal(signal.SIGINT)
            stdout, _ = process.communicate(timeout=120)
        finally:
            process.kill()  # a failed check leaves no batch running into the Ray tests
    assert process.returncode == 130
    assert sorted(path.name for path in out.iterdir()) == ["box", "summary.json"]
    assert [entry["status"] for entry in summary(out).values()] == ["ok", "cancelled", "cancelled"]
    assert "1 ok, 0 failed, 2 cancelled" in stdout


def _descendants(pid: int) -> set[int]:
    """The processes below ``pid`` (from /proc)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, set()).add(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs in this process, shut down after the tests; it must leave no process behind."""
    ray = pytest.importorskip("ray")
    earlier = _descendants(os.getpid())  # warm engine workers of earlier tests: not Ray's to stop
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield ray
    from ray._private.worker import _global_node

    ours = {process.process.pid for processes in _global_node.all_processes.values() for process in processes}
    for pid in [*ours, os.getpid()]:
        ours |= _descendants(pid)
    ours -= earlier
    assert len(ours) > len(_global_node.all_processes)  # the node's processes and its workers
    ray.shutdown()
    deadline = time.monotonic() + 60
    while _alive(ours) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(ours), "Ray left processes behind"


def test_ray_gives_the_serial_results_and_reports_failures(local_ray, serial_run, meshes, tmp_path, capsys):
    serial = serial_run[0]
    out = tmp_path / "out"
    assert main(["fit", meshes, "-o", out, *FIT_OPTIONS, "--ray", "auto", "--cpus-per-job", "1"]) == 1
    stdout = capsys.readouterr().out
    assert "Ray: using the Ray this process started" in stdout and "Ray: 2 CPUs" in stdout
    entries, expected = summary(out), summary(serial)
    assert entries["bad"]["status"] == "error" and entries["bad"]["error"] == expected["bad"]["error"]
    for name in ("box", "sphere"):
        # one thread per job in both: the same bits (the model files differ only in their timings)
        assert (out / name / "mesh.ply").read_bytes() == (serial / name / "mesh.ply").read_bytes()
        assert_same_model(out / name / "model.pt", serial / name / "model.pt")
        assert without_timings(entries[name]["metrics"]) == without_timings(expected[name]["metrics"])

    # a job that fails inside its task (a broken model file) is reported, the other runs
    bad_model = tmp_path / "broken.pt"
    bad_model.write_bytes(b"not a model")
    jobs = tmp_path / "evolve.json"
    jobs.write_text(json.dumps(evolve_entries(serial / "box" / "model.pt", bad_model)))
    assert main(["evolve", jobs, "-o", tmp_path / "evolved", "--ray", "auto"]) == 1
    entries = summary(tmp_path / "evolved")
    assert [entry["status"] for entry in entries.values()] == ["ok", "ok", "error"]
    assert entries["broken"]["error"].startswith(f"{bad_model} is not a model file")
    assert len(list((tmp_path / "evolved" / "box").glob("frame_*.ply"))) == 3
    capsys.readouterr()


def _closed_port() -> int:
    """A local TCP port that nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_ray_address_that_nothing_answers_is_refused_at_once(meshes, tmp_path, capsys):
    pytest.importorskip("ray")
    address = f"127.0.0.1:{_closed_port()}"
    assert main(["fit", meshes, "-o", tmp_path / "out", *FIT_OPTIONS, "--ray", address]) == 2
    assert f"--ray {address}: nothing answers there" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("stale_address", [False, True])
def test_ray_auto_starts_a_local_ray_when_none_runs_and_stops_it(stale_address, meshes, tmp_path):
    """Also when RAY_ADDRESS (or the file the last ``ray start`` left) names a cluster that is gone: Ray itself would
    wait for it for many minutes."""
    pytest.importorskip("ray")
    environment = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    if stale_address:
        environment["RAY_ADDRESS"] = address = f"127.0.0.1:{_closed_port()}"
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "batch", "fit", str(meshes / "box.ply"), "-o", str(tmp_path / "out"),
         *FIT_OPTIONS, "--ray", "auto"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**environment, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    seen = set()
    while process.poll() is None:  # every process below the batch, while it runs
        seen |= _descendants(process.pid)
        time.sleep(0.2)
    stdout = process.stdout.read()
    assert process.returncode == 0, stdout
    said = f"nothing answers at {address} (RAY_ADDRESS)" if stale_address else "started a local Ray"
    assert said in stdout and "; started a local Ray" in stdout
    assert summary(tmp_path / "out")["box"]["status"] == "ok"
    deadline = time.monotonic() + 60
    while _alive(seen) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert seen and not _alive(seen), "Ray left processes behind"
