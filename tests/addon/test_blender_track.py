"""Bake Surface Evolution with Track Vertices (issue 17): besides the frames object, one mesh of the first frame's
topology with a shape key per frame, keyed so that each scene frame shows its own; it lies on the evolution's
surface like the extracted frames, survives save and reload, and undoes. The words of the report (bpy-free) too.

The evolution trains for a few dozen steps only (the engine's tests check the tracking against analytic laws).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from addon.core.errors import EngineError
from addon.core.evolution import tracked_frames, tracking_text

from . import blender_support as support


def test_the_report_says_which_frames_are_tracked_and_where_tracking_stopped():
    text = tracking_text({"frames": 4, "stop": None}, 1, "S Tracked")
    assert text == "; frames 1 to 4 tracked as shape keys of 'S Tracked'"
    stop = {"frame": 3, "time": 0.5, "reason": "topology", "message": "at t = 0.5: the surface has vanished"}
    assert tracking_text({"frames": 3, "stop": stop}, 10, "S Tracked") == (
        "; frames 10 to 12 tracked as shape keys of 'S Tracked'; tracking stopped at frame 13 (at t = 0.5: the surface "
        "has vanished)"
    )


def test_tracked_positions_are_checked():
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    outputs = {"tracked_positions": np.zeros((2, 4, 3)), "tracked_faces": faces.astype(np.int32)}
    assert tracked_frames(outputs, 3, 4, faces).shape == (2, 4, 3)
    bad = [
        ({"tracked_faces": faces}, "no 'tracked_positions' array"),
        ({**outputs, "tracked_faces": faces[::-1]}, "tracked faces are not the first frame's"),
        ({**outputs, "tracked_positions": np.zeros((4, 4, 3))}, r"shape \(4, 4, 3\), expected \(1 to 3, 4, 3\)"),
        ({**outputs, "tracked_positions": np.zeros((0, 4, 3))}, "expected"),
        ({**outputs, "tracked_positions": np.zeros((2, 5, 3))}, "expected"),
        ({**outputs, "tracked_positions": np.full((2, 4, 3), np.nan)}, "NaN or infinite"),
    ]
    for broken, message in bad:
        with pytest.raises(EngineError, match=message):
            tracked_frames(broken, 3, 4, faces)


needs_bpy = pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="needs bpy==5.0.1")

TRACKED = "Sphere SDF Evolution Tracked"


@pytest.fixture
def evolution_tests():
    """The evolution bake's test helpers (their module skips itself without bpy)."""
    from . import test_blender_evolution

    return test_blender_evolution


def world_positions(bpy, obj, frame: float) -> np.ndarray:
    bpy.context.scene.frame_set(int(frame), subframe=frame - int(frame))
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    positions = np.empty(len(evaluated.data.vertices) * 3, np.float32)
    evaluated.data.vertices.foreach_get("co", positions)
    world = np.array(evaluated.matrix_world)
    return positions.reshape(-1, 3) @ world[:3, :3].T + world[:3, 3]


@needs_bpy
def test_track_vertices_bakes_one_topology_as_shape_keys_and_undoes(
    bpy, fitted_sphere_blend, cache_dir, capfd, tmp_path, evolution_tests
):
    evolution_tests.open_fitted_sphere(bpy, fitted_sphere_blend, cache_dir)
    bpy.context.scene.neural_sdf_evolution.track_vertices = True
    assert ("prop", "track_vertices") in support.draw(support.addon_module("panels.sidebar").NEURALSDF_PT_evolution)
    before = support.snapshot(bpy)
    capfd.readouterr()
    start, end = evolution_tests.FRAME_START, evolution_tests.FRAME_END
    with support.undo_enabled(bpy):
        assert bpy.ops.neural_sdf.bake_evolution() == {"FINISHED"}
        (message,) = support.reports(capfd)
        evolved, tracked = bpy.data.objects[evolution_tests.EVOLVED], bpy.data.objects[TRACKED]
        assert message == (
            f"Info: Baked frames {start} to {end} (t = 0 to 1) of '{evolution_tests.FITTED}' into "
            f"'{evolved.name}'; frames {start} to {end} tracked as shape keys of '{TRACKED}'; "
            f"'{evolution_tests.FITTED}' is hidden (Hide Sources)"
        )
        assert bpy.context.active_object == evolved and tracked.select_get()
        assert tracked.matrix_world == evolved.matrix_world and not tracked.modifiers
        after = support.snapshot(bpy)
        assert {name: after["objects"][name] for name in before["objects"]} == before["objects"]

        keys = tracked.data.shape_keys.key_blocks
        assert [key.name for key in keys] == ["Basis", "t = 0.3333", "t = 0.6667", "t = 1"]
        first = world_positions(bpy, tracked, start)
        first_frame = evolved.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
        assert (len(first), len(tracked.data.polygons)) == (len(first_frame.vertices), len(first_frame.polygons))
        center = np.array(support.SPHERE_CENTER)
        for frame in range(start, end + 1):
            carried = world_positions(bpy, tracked, frame)
            extracted, _ = evolution_tests.shown(bpy, evolved, frame)
            # On the same surface as the frame extracted there: equal mean radii (the grid's error apart).
            carried_radius = np.linalg.norm(carried - center, axis=1).mean()
            assert carried_radius == pytest.approx(np.linalg.norm(extracted - center, axis=1).mean(), abs=0.01)
        assert np.linalg.norm(world_positions(bpy, tracked, end) - center, axis=1).mean() < np.linalg.norm(
            first - center, axis=1
        ).mean()  # it shrank, as mean curvature flow shrinks a sphere
        # Between two frames the shape keys blend linearly.
        middle = world_positions(bpy, tracked, start + 1.5)
        blend = (world_positions(bpy, tracked, start + 1) + world_positions(bpy, tracked, start + 2)) / 2
        np.testing.assert_allclose(middle, blend, atol=1e-5)
        copy = tmp_path / "tracked.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(copy), copy=True)
        last = world_positions(bpy, tracked, end)

        bpy.ops.ed.undo()
        assert TRACKED not in bpy.data.objects and evolution_tests.EVOLVED not in bpy.data.objects
        assert support.snapshot(bpy)["objects"] == before["objects"]

    bpy.ops.wm.open_mainfile(filepath=str(copy))
    np.testing.assert_allclose(world_positions(bpy, bpy.data.objects[TRACKED], end), last, atol=1e-6)
