"""The command line, end to end on the bundled mesh, in a separate process as a user would run it."""

import json
import os

import numpy as np

from engine.cli import MESH_FILENAME, METRICS_FILENAME
from engine.mesh_io import load_mesh
from engine.model import load_model
from engine.protocol import MODEL_FILENAME
from tests.conftest import BUNDLED_MESH, run_engine_cli


def test_fit_writes_mesh_model_and_metrics_in_input_coordinates(tmp_path):
    result = run_engine_cli("fit", BUNDLED_MESH, "-o", tmp_path, "--preset", "tiny", "--steps", "150", "--resolution", "48")
    assert result.returncode == 0, result.stderr
    assert "training [" in result.stderr and "150/150" in result.stderr
    report = json.loads((tmp_path / METRICS_FILENAME).read_text())
    assert report["steps"] == 150 and report["resolution"] == 48
    assert report["metrics"]["fscore"] > 0.5 and report["metrics"]["iou"] > 0.5
    fitted = load_mesh(tmp_path / MESH_FILENAME)
    source = load_mesh(BUNDLED_MESH)
    extent = np.ptp(source.vertices, axis=0).max()
    np.testing.assert_allclose(fitted.vertices.min(axis=0), source.vertices.min(axis=0), atol=0.05 * extent)
    np.testing.assert_allclose(fitted.vertices.max(axis=0), source.vertices.max(axis=0), atol=0.05 * extent)
    model = load_model(tmp_path / MODEL_FILENAME)
    assert model.metadata["sources"] == [str(BUNDLED_MESH)]


def test_outputs_get_the_permissions_of_what_the_user_makes(tmp_path):
    """The staging folder (mkdtemp) and files written through temporary files are private; published, they get the
    umask's permissions, as the folder beside them does."""
    out = tmp_path / "new"
    result = run_engine_cli("fit", BUNDLED_MESH, "-o", out, "--preset", "tiny", "--steps", "5", "--resolution", "16")
    assert result.returncode == 0, result.stderr
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    assert {path.name: path.stat().st_mode & 0o777 for path in out.iterdir()} == {
        name: 0o666 & ~umask for name in (MESH_FILENAME, METRICS_FILENAME, MODEL_FILENAME)
    }


def test_bad_input_exits_with_a_clear_message_and_no_traceback(tmp_path):
    empty = tmp_path / "empty.obj"
    empty.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    result = run_engine_cli("fit", empty, "-o", tmp_path / "out")
    assert result.returncode == 2
    assert "empty.obj" in result.stderr and "Traceback" not in result.stderr
    result = run_engine_cli("fit", BUNDLED_MESH, "-o", tmp_path / "out", "--steps", "0")
    assert result.returncode == 2 and "--steps must be at least 1" in result.stderr
