"""Bad inputs and faults on the add-on side (issue 12), one row per case: the save handler (which files a save may
copy), stale-job cleanup (which folders it may delete), the hang timeout, the folders the add-on writes, and what a
worker may hand back. Each test id is the case's name; its docstring or the row says the entry point and what is
expected. 66 cases; 44 of them failed on the code before issue 12's add-on fixes. Bpy-free cases run with plain
pytest; the four ``test_blender_*`` cases at the end need the bpy module (skipped without it) and run no training.
"""

from __future__ import annotations

import os
import re
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from addon.core import engine_env, folders, job_files, model_files, worker_client
from addon.core.errors import EngineError
from addon.core.worker_client import EngineSession, SessionState, WorkerLaunch

from .test_core import fake_engine, run_until_finished, session_for  # noqa: F401 (fake_engine is a fixture)

REPO = Path(__file__).resolve().parents[2]
LEGACY = {kind: REPO / "tests" / "data" / f"legacy_v1_{kind}.pt" for kind in ("model", "evolution", "morph")}
"""Model files the engine wrote: genuine archives."""


# The save handler: gather_models copies only model archives the add-on wrote, from its own folders.


class Places:
    """A cache, a saved .blend with its models folder, another .blend's models folder, and a home with a secret."""

    def __init__(self, root: Path):
        self.root = root
        self.cache_models = root / "cache" / "models"
        self.blend = root / "project" / "scene.blend"
        self.beside = model_files.models_dir_beside(self.blend)
        self.other = root / "elsewhere" / "other_neural_sdf"
        self.secret = root / "home" / ".ssh" / "id_rsa"
        for folder in (self.cache_models, self.beside.parent, self.other, self.secret.parent):
            folder.mkdir(parents=True, exist_ok=True)
        self.secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot really\n")

    def genuine(self, folder: Path, name: str = "Sphere_SDF-1a2b3c4d.pt", kind: str = "model") -> Path:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(LEGACY[kind].read_bytes())
        return path

    def gather(self, sources):
        return model_files.gather_models(sources, self.beside, [self.cache_models, self.beside])


def _zip(path: Path, entries: dict[str, bytes], prefix: bytes = b"", compression=zipfile.ZIP_STORED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    if prefix:
        path.write_bytes(prefix + path.read_bytes())
    return path


def _symlink(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _npz(path: Path) -> Path:
    np.savez(path, x=np.arange(3))
    return path


def _beside_the_cache(places: Places) -> Path:
    places.genuine(places.root / "cache")
    return places.cache_models / ".." / "Sphere_SDF-1a2b3c4d.pt"


DEFLATED = zipfile.ZIP_DEFLATED
REFUSED_SOURCES = {
    # case: (builder of the source path, what the reason says)
    "etc_passwd": (lambda p: Path("/etc/passwd"), "outside the add-on's models folders"),
    "ssh_key_in_home": (lambda p: p.secret, "outside the add-on's models folders"),
    "dotdot_out_of_the_cache": (_beside_the_cache, "outside the add-on's models folders"),
    "link_in_the_cache_to_a_secret": (lambda p: _symlink(p.cache_models / "Sphere-00000000.pt", p.secret), "leads to"),
    "link_in_the_cache_to_a_model_elsewhere": (
        lambda p: _symlink(p.cache_models / "Sphere-00000000.pt", p.genuine(p.other)),
        "outside the add-on's models folders",
    ),
    "another_blends_models_folder": (lambda p: p.genuine(p.other), "outside the add-on's models folders"),
    "subfolder_of_the_cache": (lambda p: p.genuine(p.cache_models / "sub"), "outside the add-on's models folders"),
    "text_file_in_the_cache": (lambda p: _text(p.cache_models / "notes.pt", "hello"), "not a model archive"),
    "folder_named_like_a_model": (lambda p: _folder(p.cache_models / "folder.pt"), "not a regular file"),
    "npz_in_the_cache": (lambda p: _npz(p.cache_models / "arrays.npz"), "not a model archive"),
    "zip_of_loose_files": (
        lambda p: _zip(p.cache_models / "loose.pt", {"data.pkl": b"x", "data/0": b"y"}),
        "not in one folder",
    ),
    "zip_of_two_folders": (
        lambda p: _zip(p.cache_models / "two.pt", {"a/data.pkl": b"x", "a/data/0": b"y", "b/secret": b"z"}),
        "not in one folder",
    ),
    "zip_without_tensor_records": (lambda p: _zip(p.cache_models / "empty.pt", {"a/data.pkl": b"x"}), "no data.pkl"),
    "zip_with_compressed_records": (
        lambda p: _zip(p.cache_models / "packed.pt", {"a/data.pkl": b"x", "a/data/0": b"y"}, compression=DEFLATED),
        "compressed records",
    ),
    "zip_after_a_junk_prefix": (
        lambda p: _zip(p.cache_models / "poly.pt", {"a/data.pkl": b"x", "a/data/0": b"y"}, prefix=b"#!/bin/sh\n"),
        "not a model archive",
    ),
}


@pytest.mark.parametrize("case", REFUSED_SOURCES, ids=list(REFUSED_SOURCES))
def test_save_handler_refuses(case, tmp_path):
    """Entry: model_files.gather_models (the save_pre handler's core). Expected: not copied, the reason given."""
    places = Places(tmp_path)
    build, reason = REFUSED_SOURCES[case]
    source = build(places)
    gathered = places.gather([source])
    assert source not in gathered.moved and reason in gathered.refused[source]
    assert not places.beside.exists() or not any(places.beside.iterdir())  # nothing copied beside the .blend


def test_save_handler_refuses_an_archive_over_the_size_limit(tmp_path, monkeypatch):
    """Entry: gather_models with a genuine archive larger than MAX_MODEL_BYTES. Expected: refused."""
    monkeypatch.setattr(model_files, "MAX_MODEL_BYTES", 1024)
    places = Places(tmp_path)
    source = places.genuine(places.cache_models)
    assert "more than the" in places.gather([source]).refused[source]


def test_save_handler_refuses_an_archive_whose_entries_unpack_too_large(tmp_path, monkeypatch):
    """Entry: gather_models with a small zip of the model layout declaring 4 MB (a zip bomb). Expected: refused."""
    monkeypatch.setattr(model_files, "MAX_MODEL_BYTES", 1024**2)
    places = Places(tmp_path)
    entries = {"a/data.pkl": b"x", "a/data/0": bytes(4 * 1024**2)}
    source = _zip(places.cache_models / "bomb.pt", entries, compression=DEFLATED)
    assert source.stat().st_size < 1024**2
    assert "unpack to more than" in places.gather([source]).refused[source]


@pytest.mark.parametrize("kind", list(LEGACY), ids=[f"genuine_{kind}_file_in_the_cache" for kind in LEGACY])
def test_save_handler_copies(kind, tmp_path):
    """Entry: gather_models with a genuine model, evolution or morph file in the cache. Expected: copied."""
    places = Places(tmp_path)
    source = places.genuine(places.cache_models, kind=kind)
    gathered = places.gather([source])
    assert gathered.moved == {source: places.beside / source.name} and not gathered.refused
    assert (places.beside / source.name).read_bytes() == LEGACY[kind].read_bytes()


def test_save_handler_copies_from_the_open_files_models_folder_on_save_as(tmp_path):
    """Entry: gather_models on Save As (the open file's models folder is allowed). Expected: copied."""
    places = Places(tmp_path)
    source = places.genuine(places.beside)
    target = model_files.models_dir_beside(tmp_path / "new" / "copy.blend")
    gathered = model_files.gather_models([source], target, [target, places.beside, places.cache_models])
    assert gathered.moved == {source: target / source.name} and (target / source.name).is_file()


def test_save_handler_size_limit_is_the_engines():
    """The add-on gathers no file the engine would refuse to read, and refuses none it reads, by size."""
    from engine.model import MAX_MODEL_FILE_BYTES

    assert model_files.MAX_MODEL_BYTES == MAX_MODEL_FILE_BYTES


def test_save_handler_leaves_a_missing_file_silently(tmp_path):
    """Entry: gather_models with a path to nothing. Expected: neither copied nor reported (shown as missing)."""
    places = Places(tmp_path)
    assert places.gather([places.cache_models / "gone.pt"]) == model_files.Gathered()


def test_save_handler_replaces_a_link_in_the_target_folder_instead_of_writing_through_it(tmp_path):
    """Entry: gather_models when the .blend's models folder holds a link named like the model (pointing at a file
    of the user's). Expected: the link is replaced by the copy; the file it pointed at is untouched."""
    places = Places(tmp_path)
    source = places.genuine(places.cache_models)
    places.beside.mkdir()
    _symlink(places.beside / source.name, places.secret)
    secret = places.secret.read_bytes()
    assert places.gather([source]).moved == {source: places.beside / source.name}
    assert places.secret.read_bytes() == secret and not (places.beside / source.name).is_symlink()


def test_save_handler_reports_a_target_folder_it_cannot_write(tmp_path):
    """Entry: gather_models when the .blend's models folder cannot be made (a file is in the way). Expected: the
    model is reported as not copied (the object keeps its path); no exception escapes the save handler."""
    places = Places(tmp_path)
    source = places.genuine(places.cache_models)
    places.beside.write_text("a file where the folder should be")
    gathered = places.gather([source])
    assert not gathered.moved and "could not be copied" in gathered.refused[source]


# Stale-job cleanup: only folders the add-on marked as its own, never through links.


def _job_dir(jobs: Path, name: str, *, marked: bool, old: bool) -> Path:
    directory = jobs / name
    directory.mkdir(parents=True)
    (directory / "inside.txt").write_text("keep me")
    if marked:
        (directory / worker_client.JOB_DIR_MARKER).write_text(worker_client.JOB_DIR_MARKER_TEXT)
    if old:
        _age(directory)
    return directory


def _age(path: Path) -> None:
    old = time.time() - worker_client.STALE_JOB_DIR_AGE_S - 60
    os.utime(path, (old, old), follow_symlinks=False)


def _foreign_old(tmp: Path) -> tuple[Path, Path]:
    return _job_dir(tmp / "jobs", "job-x", marked=False, old=True), tmp / "jobs" / "job-x" / "inside.txt"


def _link_to_elsewhere(tmp: Path) -> tuple[Path, Path]:
    elsewhere = _job_dir(tmp / "elsewhere", "precious", marked=True, old=True)  # even marked and old
    (tmp / "jobs").mkdir()
    link = _symlink(tmp / "jobs" / "job-y", elsewhere)
    _age(link)
    return link, elsewhere / "inside.txt"


def _marker_is_a_link(tmp: Path) -> tuple[Path, Path]:
    directory = _job_dir(tmp / "jobs", "job-z", marked=False, old=False)
    real_marker = tmp / "marker"
    real_marker.write_text(worker_client.JOB_DIR_MARKER_TEXT)
    _symlink(directory / worker_client.JOB_DIR_MARKER, real_marker)
    _age(directory)
    return directory, directory / "inside.txt"


def _marker_of_other_text(tmp: Path) -> tuple[Path, Path]:
    directory = _job_dir(tmp / "jobs", "job-w", marked=False, old=False)
    (directory / worker_client.JOB_DIR_MARKER).write_text("someone else's")
    _age(directory)
    return directory, directory / "inside.txt"


def _old_file_named_job(tmp: Path) -> tuple[Path, Path]:
    path = tmp / "jobs" / "job-notes"
    path.parent.mkdir(parents=True)
    path.write_text("keep me")
    _age(path)
    return path, path


def _marked_fresh(tmp: Path) -> tuple[Path, Path]:
    directory = _job_dir(tmp / "jobs", "job-running", marked=True, old=False)
    return directory, directory / "inside.txt"


SURVIVING = {
    "foreign_old_job_dir": _foreign_old,
    "link_named_job_to_a_folder_elsewhere": _link_to_elsewhere,
    "marker_is_a_link": _marker_is_a_link,
    "marker_of_other_text": _marker_of_other_text,
    "old_file_named_job": _old_file_named_job,
    "marked_fresh_job_dir": _marked_fresh,
}


@pytest.mark.parametrize("case", SURVIVING, ids=list(SURVIVING))
def test_stale_job_cleanup_leaves(case, tmp_path):
    """Entry: worker_client.remove_stale_job_dirs. Expected: the entry and what it holds (or points at) survive."""
    entry, content = SURVIVING[case](tmp_path)
    worker_client.remove_stale_job_dirs(tmp_path / "jobs")
    assert os.path.lexists(entry) and content.read_text() == "keep me"


def test_stale_job_cleanup_removes_an_old_marked_job_dir_at_session_start(fake_engine, tmp_path):
    """Entry: EngineSession.start (runs the cleanup). Expected: an old marked job-* folder is removed, a foreign one
    beside it stays, and the session's own folder carries the marker while it runs."""
    stale = _job_dir(tmp_path / "jobs", "job-left-by-a-crash", marked=True, old=True)
    foreign, _ = _foreign_old(tmp_path)
    session = session_for(fake_engine("hello()\nsys.stdin.read()"), tmp_path, requests=[])
    session.start()
    assert worker_client.is_marked_job_dir(session.directory)
    run_until_finished(session)
    session.close()
    assert session.state is SessionState.SUCCEEDED and not stale.exists() and foreign.is_dir()


# The hang timeout: never below what a healthy worker shows.


@pytest.mark.parametrize("stored", [2.0, 0.0, -5.0], ids=["hang_timeout_2s_of_an_old_file", "zero", "negative"])
def test_hang_timeout_is_clamped(stored, tmp_path):
    """Entry: EngineSession(hang_timeout_s=...) as the operators build it from the preferences. Expected: 30 s."""
    session = EngineSession(WorkerLaunch(sys.executable, REPO), [], tmp_path / "jobs", hang_timeout_s=stored)
    assert session.hang_timeout_s == worker_client.MIN_HANG_TIMEOUT_S == 30.0


def test_hang_timeout_above_the_floor_is_kept(tmp_path):
    session = EngineSession(WorkerLaunch(sys.executable, REPO), [], tmp_path / "jobs", hang_timeout_s=90.0)
    assert session.hang_timeout_s == 90.0


def test_a_worker_silent_longer_than_a_stored_2s_timeout_is_not_killed(fake_engine, tmp_path):
    """Entry: EngineSession with a stored 2 s timeout and a worker silent for 4 s (as one preparing a large mesh).
    Expected: the job succeeds."""
    body = """
    import numpy as np
    hello()
    job = json.loads(sys.stdin.readline())
    time.sleep(4)
    np.savez(os.path.join(job["dir"], "outputs.npz"), x=np.zeros(1))
    send({"type": "result", "job": job["job"], "outputs": "outputs.npz", "files": {}, "summary": {}})
    sys.stdin.read()
    """
    session = session_for(fake_engine(body), tmp_path, hang_timeout_s=2.0)
    session.start()
    run_until_finished(session)
    session.close()
    assert session.state is SessionState.SUCCEEDED, session.message


# Folders the add-on writes: an OSError becomes one EngineError naming the path, before any job starts.


@pytest.fixture
def a_file(tmp_path) -> Path:
    """A regular file, so a folder under it cannot be made, not even by root (tests run as root, where a read-only
    folder does not stop writes)."""
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    return path


def test_jobs_folder_under_a_regular_file(a_file, fake_engine):
    """Entry: EngineSession.start. Expected: EngineError naming the path and the preference; no worker started."""
    session = EngineSession(fake_engine("hello()"), [], a_file / "cache" / "jobs", hang_timeout_s=60.0)
    expected = re.escape(f"jobs folder {a_file}/cache/jobs cannot be created") + ".*Cache Folder"
    with pytest.raises(EngineError, match=expected):
        session.start()
    assert session.process is None


def test_jobs_folder_is_a_regular_file(a_file, fake_engine):
    """Entry: EngineSession.start with the jobs folder's path taken by a file. Expected: EngineError."""
    session = EngineSession(fake_engine("hello()"), [], a_file, hang_timeout_s=60.0)
    with pytest.raises(EngineError, match=re.escape(f"jobs folder {a_file} cannot be created")):
        session.start()
    assert session.process is None and a_file.read_text() == "not a folder"


def test_check_engine_with_the_jobs_folder_under_a_regular_file(a_file):
    """Entry: worker_client.check_engine (Check engine). Expected: EngineError naming the path."""
    with pytest.raises(EngineError, match=re.escape(f"{a_file}/jobs cannot be created")):
        worker_client.check_engine(WorkerLaunch(sys.executable, REPO), a_file / "jobs", hang_timeout_s=60.0)


def test_setup_engine_with_the_cache_under_a_regular_file(a_file, tmp_path):
    """Entry: engine_env.EnvironmentSetup (Set up engine). Expected: EngineError before any command runs."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("")
    with pytest.raises(EngineError, match=re.escape(f"cache folder {a_file}/cache cannot be created")):
        engine_env.EnvironmentSetup(sys.executable, a_file / "cache" / "venv", requirements)


def test_models_folder_beside_a_blend_under_a_regular_file(a_file):
    """Entry: folders.check_folder_can_be_made (what Fit, Bake and Morph check before their job when the .blend is
    saved). Expected: EngineError naming the path and saying to save elsewhere; nothing is made."""
    target = a_file / "scene_neural_sdf"
    expected = re.escape(f"{target} cannot be created") + ".*save the .blend in a writable folder"
    with pytest.raises(EngineError, match=expected):
        folders.check_folder_can_be_made(target, "models folder beside the .blend", folders.SAVE_ELSEWHERE)
    folders.check_folder_can_be_made(a_file.parent / "new" / "deeper", "models folder", folders.SAVE_ELSEWHERE)
    assert not (a_file.parent / "new").exists()


def test_models_folder_in_the_cache_under_a_regular_file(a_file):
    """Entry: folders.make_folder (the cache's models folder, and keep_model). Expected: EngineError."""
    with pytest.raises(EngineError, match=re.escape(f"models folder {a_file}/models cannot be created")):
        folders.make_folder(a_file / "models", "models folder")


# What a worker hands back: refused unless it is a plain array file or a file inside the job folder.


def _result_worker(setup: str, outputs: str = '"outputs.npz"', files: str = '{"model": "model.pt"}') -> str:
    return f"""
    import numpy as np
    hello()
    job = json.loads(sys.stdin.readline())
    d = job["dir"]
    np.savez(os.path.join(d, "outputs.npz"), vertices=np.eye(3), faces=np.array([[0, 1, 2]]))
    open(os.path.join(d, "model.pt"), "w").write("weights")
    {setup}
    send({{"type": "result", "job": job["job"], "outputs": {outputs}, "files": {files}, "summary": {{}}}})
    sys.stdin.read()
    """


def _secret(tmp: Path) -> Path:
    path = tmp / "secret.txt"
    path.write_text("secret")
    return path


LINK_MODEL = 'os.remove(os.path.join(d, "model.pt")); os.symlink("{}", os.path.join(d, "model.pt"))'
REFUSED_RESULTS = {
    # case: (worker body from the secret's path, what the message says)
    "model_at_dotdot_etc_passwd": (
        lambda s: _result_worker("", files='{"model": "../../etc/passwd"}'),
        "not a file name",
    ),
    "model_at_an_absolute_path": (lambda s: _result_worker("", files=f'{{"model": "{s}"}}'), "not a file name"),
    "model_is_a_link_to_a_secret": (lambda s: _result_worker(LINK_MODEL.format(s)), "is a link"),
    "model_in_a_subfolder": (
        lambda s: _result_worker('os.mkdir(os.path.join(d, "sub"))', files='{"model": "sub/model.pt"}'),
        "not a file name",
    ),
    "model_missing": (lambda s: _result_worker('os.remove(os.path.join(d, "model.pt"))'), "not exist"),
    "files_not_a_mapping": (lambda s: _result_worker("", files='["model.pt"]'), "not a mapping"),
    "outputs_outside_the_job_folder": (
        lambda s: _result_worker(
            'np.savez(os.path.join(d, "..", "outputs.npz"), x=np.zeros(1))', outputs='"../outputs.npz"'
        ),
        "not a file name",
    ),
    "outputs_not_a_string": (lambda s: _result_worker("", outputs="7"), "not a file name"),
    "outputs_a_link_to_a_secret": (
        lambda s: _result_worker(f'os.symlink("{s}", os.path.join(d, "linked.npz"))', outputs='"linked.npz"'),
        "is a link",
    ),
}


@pytest.mark.parametrize("case", REFUSED_RESULTS, ids=list(REFUSED_RESULTS))
def test_worker_result_refused(case, fake_engine, tmp_path):
    """Entry: EngineSession.poll on a result message. Expected: the session fails with a message; nothing outside
    the job folder is read or handed on."""
    body, expected = REFUSED_RESULTS[case]
    secret = _secret(tmp_path)
    session = session_for(fake_engine(body(secret)), tmp_path)
    session.start()
    run_until_finished(session)
    session.close()
    assert session.state is SessionState.FAILED and expected in session.message, session.message
    assert not session.results and secret.read_text() == "secret"


def test_worker_outputs_with_a_pickled_object_array_are_refused_unopened(fake_engine, tmp_path):
    """Entry: EngineSession.poll -> job_files.read_npz (allow_pickle=False) on an outputs.npz whose array is a
    pickle that would create a file if loaded. Expected: the session fails; the pickle never ran."""
    ran = tmp_path / "the_pickle_ran"
    body = f"""
    import numpy as np
    class Payload:
        def __reduce__(self):
            return (open, ({str(ran)!r}, "w"))
    hello()
    job = json.loads(sys.stdin.readline())
    np.savez(os.path.join(job["dir"], "outputs.npz"), vertices=np.array([Payload()], dtype=object))
    send({{"type": "result", "job": job["job"], "outputs": "outputs.npz", "files": {{}}, "summary": {{}}}})
    sys.stdin.read()
    """
    session = session_for(fake_engine(body), tmp_path)
    session.start()
    run_until_finished(session)
    session.close()
    assert session.state is SessionState.FAILED and "outputs.npz could not be read" in session.message
    assert not ran.exists()


def test_read_npz_refuses_a_pickled_object_array(tmp_path):
    """Entry: job_files.read_npz. Expected: EngineError, the pickle not loaded."""
    np.savez(tmp_path / "outputs.npz", names=np.array([{"a": 1}], dtype=object))
    with pytest.raises(EngineError, match="could not be read"):
        job_files.read_npz(tmp_path / "outputs.npz")


TRIANGLE = {"vertices": np.eye(3, dtype=np.float32), "faces": np.array([[0, 1, 2]], np.int32)}
BAD_ARRAYS = {
    # case: (entry point, outputs, what the message says)
    "vertices_flat": (job_files.mesh_arrays, {**TRIANGLE, "vertices": np.zeros(9)}, r"vertices of shape \(9,\)"),
    "vertices_as_text": (job_files.mesh_arrays, {**TRIANGLE, "vertices": np.full((3, 3), "x")}, r"expected \(n, 3\)"),
    "vertices_infinite": (
        job_files.mesh_arrays, {**TRIANGLE, "vertices": np.full((3, 3), np.inf)}, "NaN or infinite"
    ),
    "faces_negative_index": (job_files.mesh_arrays, {**TRIANGLE, "faces": np.array([[0, 1, -1]])}, "outside 0..2"),
    "faces_four_columns": (job_files.mesh_arrays, {**TRIANGLE, "faces": np.zeros((1, 4), int)}, r"faces of shape"),
    "curvature_colours_nan": (
        lambda outputs: job_files.curvature_arrays(outputs, 3),
        {**{name: np.zeros(3) for name in job_files.CURVATURE_FIELDS}, "colors": np.full((3, 4), np.nan)},
        r"outside \[0, 1\]",
    ),
    "frame_times_wrong_count": (
        lambda outputs: job_files.frame_meshes(outputs, 2),
        {"times": np.zeros(3), "vertices_0": TRIANGLE["vertices"], "faces_0": TRIANGLE["faces"]},
        "frame times, expected 2",
    ),
    "source_positions_nan": (
        lambda outputs: job_files.source_positions(outputs, 1, 3),
        {"source_positions": np.full((1, 3, 3), np.nan)},
        "NaN or infinite",
    ),
}


@pytest.mark.parametrize("case", BAD_ARRAYS, ids=list(BAD_ARRAYS))
def test_worker_arrays_refused(case):
    """Entry: the job_files checks every operator's apply() runs before it changes the scene. Expected: EngineError."""
    check, outputs, match = BAD_ARRAYS[case]
    with pytest.raises(EngineError, match=match):
        check(outputs)


# In Blender (bpy module): the save handler, the preferences, an unusable cache folder.


def test_blender_save_keeps_foreign_model_paths_and_says_so_once(scene, bpy, tmp_path, capfd):
    """Entry: saving a .blend (save_pre handler) whose objects name /etc/passwd and a key in a home folder.
    Expected: nothing copied, the paths kept, one console line per path (not again on the next save), and the panel
    shows a warning."""
    from .blender_support import add_sphere, addon_module, draw

    secret = Places(tmp_path).secret
    first, second = add_sphere(bpy, "First"), add_sphere(bpy, "Second")
    first.neural_sdf.model_path, second.neural_sdf_evolution.model_path = "/etc/passwd", str(secret)
    blend = tmp_path / "project" / "crafted.blend"
    capfd.readouterr()
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    printed = [line for line in capfd.readouterr().out.splitlines() if "Neural SDF: WARNING" in line]
    assert first.neural_sdf.model_path == "/etc/passwd" and second.neural_sdf_evolution.model_path == str(secret)
    assert not model_files.models_dir_beside(blend).exists()
    assert len(printed) == 2 and any("/etc/passwd" in line and "'First'" in line for line in printed)
    status = bpy.context.window_manager.neural_sdf_job.save_warning
    assert status == "Saving did not copy 2 model paths (see the system console)"
    assert ("label", status) in draw(addon_module("panels.sidebar").NEURALSDF_PT_main)
    bpy.ops.wm.save_mainfile()
    assert not [line for line in capfd.readouterr().out.splitlines() if "Neural SDF: WARNING" in line]


def test_blender_hang_timeout_preference_refuses_2s(scene, bpy):
    """Entry: the Hang Timeout preference set to 2 s. Expected: it holds 30 s."""
    from .blender_support import prefs

    prefs().hang_timeout = 2.0
    assert prefs().hang_timeout == 30.0


def test_blender_fit_with_the_cache_folder_under_a_file_reports_and_changes_nothing(scene, bpy, a_file):
    """Entry: Fit Neural SDF with the Cache Folder preference under a regular file. Expected: one error report
    naming the folder, no traceback, no job, the scene unchanged."""
    from .blender_support import add_sphere, addon_module, prefs, select_only, snapshot

    prefs().cache_dir = str(a_file / "cache")
    select_only(bpy, add_sphere(bpy))
    before = snapshot(bpy)
    expected = f"The models folder in the cache {a_file}/cache/models cannot be created (Not a directory): choose a "
    with pytest.raises(RuntimeError, match=re.escape(expected + "writable Cache Folder")):
        bpy.ops.neural_sdf.fit()
    assert snapshot(bpy) == before and not addon_module("engine_jobs").job_running()
    assert not bpy.context.window_manager.neural_sdf_job.is_running


def test_blender_check_engine_with_the_cache_folder_under_a_file(scene, bpy, a_file):
    """Entry: Check Engine with the Cache Folder preference under a regular file. Expected: an error report naming
    the jobs folder; the preferences show "Not working"."""
    from .blender_support import prefs

    prefs().cache_dir = str(a_file / "cache")
    with pytest.raises(RuntimeError, match=re.escape(f"jobs folder {a_file}/cache/jobs cannot be created")):
        bpy.ops.neural_sdf.check_engine()
    assert prefs().engine_report.startswith("Not working: The jobs folder")
