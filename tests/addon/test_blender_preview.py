"""The live preview of a fit in Blender (issue 14): a temporary wireframe object shows the surface as it forms, and
no end of the fit (success, Esc, a dead worker) leaves it, its mesh or an undo step of it behind; nor do saving,
undo or disabling the add-on. Fixtures: conftest.py; helpers: blender_support.py."""

from __future__ import annotations

import importlib.util
import os
import signal

import numpy as np
import pytest

if importlib.util.find_spec("bpy") is None:
    pytest.skip("needs Blender's Python module: pip install bpy==5.0.1", allow_module_level=True)

from .blender_support import (  # noqa: E402
    PACKAGE,
    SPHERE_CENTER,
    SPHERE_RADIUS,
    add_sphere,
    addon_module,
    event,
    reports,
    scripted,
    select_only,
    snapshot,
    undo_enabled,
)


def previews(bpy) -> tuple[list[str], list[str]]:
    """The names of the preview objects and preview meshes in the file."""
    mark = addon_module("preview").MARK
    return [obj.name for obj in bpy.data.objects if obj.get(mark)], [m.name for m in bpy.data.meshes if m.get(mark)]


@pytest.fixture
def shown(bpy, monkeypatch):
    """Previews every 0.2 s (as often as the engine's budget lets them); each one the fit shows is recorded."""
    preview = addon_module("preview")
    monkeypatch.setattr(preview, "INTERVAL_S", 0.2)
    original, records = preview.show, []

    def show(context, source_name, path, frame):
        result = original(context, source_name, path, frame)
        (obj,) = [obj for obj in bpy.data.objects if obj.get(preview.MARK)] or [None]
        records.append((result, obj and _record(obj)))
        return result

    monkeypatch.setattr(preview, "show", show)
    return records


def _record(obj) -> dict:
    local = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", local)
    world = np.array(obj.matrix_world, dtype=np.float64)
    points = local.reshape(-1, 3) @ world[:3, :3].T + world[:3, 3]
    return {
        "name": obj.name,
        "faces": len(obj.data.polygons),
        "display": obj.display_type,
        "selectable": not obj.hide_select,
        "rendered": not obj.hide_render,
        "radius": float(np.median(np.linalg.norm(points - SPHERE_CENTER, axis=1))),
        "linked": [collection.name for collection in obj.users_collection],
    }


def test_a_fit_shows_a_live_preview_that_its_result_replaces_outside_the_undo_history(scene, bpy, shown):
    sphere = add_sphere(bpy)
    select_only(bpy, sphere)
    before = snapshot(bpy)
    with undo_enabled(bpy):
        assert bpy.ops.neural_sdf.fit() == {"FINISHED"}
        assert shown and all(result for result, _ in shown)
        last = shown[-1][1]
        assert last["name"] == "Sphere (fitting preview)" and last["faces"] > 100
        assert last["display"] == "WIRE" and not last["selectable"] and not last["rendered"]
        assert last["linked"] == [scene.collection.name]
        assert last["radius"] == pytest.approx(SPHERE_RADIUS, rel=0.3)  # in world space, on the source
        assert previews(bpy) == ([], [])
        assert "Sphere SDF" in bpy.data.objects and bpy.context.active_object.name == "Sphere SDF"
        assert all(mesh.users for mesh in bpy.data.meshes)  # no orphan mesh
        bpy.ops.ed.undo()  # one step undoes the fit: no preview in between
        assert "Sphere SDF" not in bpy.data.objects and previews(bpy) == ([], [])
        assert snapshot(bpy)["objects"] == before["objects"]


def test_live_preview_off_shows_none(scene, bpy, shown):
    select_only(bpy, add_sphere(bpy))
    scene.neural_sdf.live_preview = False
    assert bpy.ops.neural_sdf.fit() == {"FINISHED"}
    assert shown == [] and previews(bpy) == ([], [])


def once_previewed(bpy, action):
    """An on_modal hook that calls ``action(operator)`` once, at the first modal() step with a preview on show."""
    done = []

    def hook(operator):
        if not done and previews(bpy)[0]:
            done.append(True)
            return action(operator)
        return None

    return hook


def test_esc_and_a_dead_worker_leave_no_preview(scene, bpy, shown, capfd):
    select_only(bpy, add_sphere(bpy))
    scene.neural_sdf.steps = 100_000
    before = snapshot(bpy)
    with scripted(bpy, "fit", once_previewed(bpy, lambda operator: event("ESC"))) as (fit, steps):
        assert fit() == {"CANCELLED"}
    assert shown and ("ESC", {"RUNNING_MODAL"}) in steps
    assert reports(capfd)[-1].startswith("Warning: Cancelled fitting 'Sphere'")
    assert previews(bpy) == ([], []) and snapshot(bpy) == before

    shown.clear()
    kill = once_previewed(bpy, lambda operator: os.kill(operator.session.pid, signal.SIGKILL))
    with scripted(bpy, "fit", kill) as (fit, steps):
        with pytest.raises(RuntimeError, match="ended unexpectedly"):
            fit()
    assert shown and previews(bpy) == ([], []) and snapshot(bpy) == before


def write_preview(path, vertices, faces) -> None:
    np.savez(path, vertices=np.asarray(vertices, np.float64), faces=np.asarray(faces, np.int32))


TETRAHEDRON = ([(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)], [(0, 2, 1), (0, 1, 3), (0, 3, 2), (1, 2, 3)])


def test_a_bad_preview_is_ignored_and_a_preview_is_never_saved_undone_or_kept_by_a_disabled_addon(scene, bpy, tmp_path):
    from mathutils import Matrix

    preview = addon_module("preview")
    path = tmp_path / "preview.npz"
    for vertices, faces in [
        (TETRAHEDRON[0], [(0, 1, 4)]),  # an index out of range
        ([(0, 0, np.nan), (1, 0, 0), (0, 1, 0)], [(0, 1, 2)]),
        (np.zeros((0, 3)), np.zeros((0, 3))),  # no surface yet
    ]:
        write_preview(path, vertices, faces)
        assert not preview.show(bpy.context, "Sphere", path, Matrix.Identity(4))
        assert previews(bpy) == ([], [])
    path.write_bytes(b"not a zip")
    assert not preview.show(bpy.context, "Sphere", path, Matrix.Identity(4))

    write_preview(path, *TETRAHEDRON)
    frame = Matrix.Translation((5.0, 0.0, 0.0))
    assert preview.show(bpy.context, "Sphere", path, frame)
    assert preview.show(bpy.context, "Sphere", path, frame)  # replaced: still one object, one mesh
    assert previews(bpy) == (["Sphere (fitting preview)"], ["Sphere (fitting preview)"])
    obj = bpy.data.objects["Sphere (fitting preview)"]
    assert obj.matrix_world == frame and tuple(obj.data.vertices[1].co) == (-4.0, 0.0, 0.0)  # world (1, 0, 0)

    saved = tmp_path / "saved_during_a_preview.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(saved))
    bpy.ops.wm.open_mainfile(filepath=str(saved))
    assert previews(bpy) == ([], [])

    with undo_enabled(bpy):
        assert preview.show(bpy.context, "Sphere", path, frame)
        bpy.ops.ed.undo_push(message="a step taken while a preview shows")
        add_sphere(bpy, name="Other")
        bpy.ops.ed.undo_push(message="another")
        preview.remove_all()
        bpy.ops.ed.undo()  # back to a state that held the preview: no fit runs, so it goes
        assert previews(bpy) == ([], [])

    assert preview.show(bpy.context, "Sphere", path, frame)
    bpy.ops.preferences.addon_disable(module=PACKAGE)
    try:
        assert previews(bpy) == ([], [])
    finally:
        bpy.ops.preferences.addon_enable(module=PACKAGE)
