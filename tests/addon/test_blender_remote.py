"""The add-on against a remote engine (issue 18): with Engine set to Remote in the preferences, every operator runs
unchanged through the relay to a real ``python -m engine serve`` on 127.0.0.1 — a fit (its model file kept on this
side), curvature colours and an evolution bake of that model (uploaded by the relay), and Check Engine naming the
server; a wrong token and an unusable address fail before anything changes. The server and relay themselves are
tested in tests/engine/test_remote.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

if importlib.util.find_spec("bpy") is None:
    pytest.skip("needs Blender's Python module: pip install bpy==5.0.1", allow_module_level=True)

from tests.engine.remote_server import TOKEN, ServerUnderTest  # noqa: E402

from .blender_support import add_sphere, prefs, reports, select_only, snapshot  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = ServerUnderTest(tmp_path_factory.mktemp("server"))
    yield process
    assert process.stop() == 0, process.log()


def use_remote(url: str, token: str = TOKEN) -> None:
    preferences = prefs()
    preferences.engine_mode, preferences.remote_url, preferences.remote_token = "REMOTE", url, token


def test_fit_curvature_and_an_evolution_bake_run_on_the_remote_engine(scene, bpy, server, capfd):
    use_remote(server.url)
    select_only(bpy, add_sphere(bpy))
    log_start = len(server.lines)
    assert bpy.ops.neural_sdf.fit() == {"FINISHED"}
    fitted = bpy.data.objects["Sphere SDF"]
    assert len(fitted.data.polygons) > 500
    model = Path(fitted.neural_sdf.model_path)
    assert model.is_file() and not model.is_relative_to(server.root)  # the model lives on the add-on's side
    server.wait_for(r"\(fit\) ended: result", since=log_start)

    select_only(bpy, fitted)
    scene.neural_sdf.quantity = "mean"
    assert bpy.ops.neural_sdf.curvature_colors() == {"FINISHED"}
    assert "curvature_color" in fitted.data.color_attributes

    settings = scene.neural_sdf_evolution
    settings.flow, settings.curvature_speed, settings.time_end = "MCF", 0.05, 1.0
    settings.use_scene_range, settings.frame_start, settings.frame_end = False, 1, 3
    settings.resolution, settings.use_custom_steps, settings.steps = 24, True, 40
    assert bpy.ops.neural_sdf.bake_evolution() == {"FINISHED"}
    assert "Sphere SDF Evolution" in bpy.data.objects
    server.wait_for(r"\(evolve\) ended: result", since=log_start)
    assert len(reports(capfd)) >= 3


def test_check_engine_shows_the_remote_server_and_its_versions(scene, bpy, server):
    use_remote(server.url)
    assert bpy.ops.neural_sdf.check_engine() == {"FINISHED"}
    report = prefs().engine_report
    assert report.startswith(f"Remote engine at {server.url}: Engine ") and "torch" in report
    assert "CPU only" in report  # the server's device, as its worker found it


def test_a_wrong_token_fails_the_fit_and_changes_nothing(scene, bpy, server):
    use_remote(server.url, token="not-the-token-at-all")
    select_only(bpy, add_sphere(bpy))
    before = snapshot(bpy)
    with pytest.raises(RuntimeError, match="refused the token.*The scene was not changed"):
        bpy.ops.neural_sdf.fit()
    assert snapshot(bpy) == before
    assert not bpy.context.window_manager.neural_sdf_job.is_running


def test_an_unusable_server_address_is_refused_before_anything_starts(scene, bpy):
    use_remote("http://gpu-box:8765")
    select_only(bpy, add_sphere(bpy))
    before = snapshot(bpy)
    with pytest.raises(RuntimeError, match="must start with ws:// or wss://"):
        bpy.ops.neural_sdf.fit()
    assert snapshot(bpy) == before
