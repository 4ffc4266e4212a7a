"""Ridge Lines (issue 17) inside Blender: a tiny fit of a bevelled cube, whose edges are crests, traced into a curve
object of POLY splines at the fitted object's place; undoable, and a rerun replaces it. Fixtures: conftest.py."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("bpy") is None:
    pytest.skip("needs Blender's Python module: pip install bpy==5.0.1", allow_module_level=True)

from .blender_support import add_cube, select_only, undo_enabled, world_bounds  # noqa: E402


def test_ridge_lines_of_a_fitted_cube_become_a_curve_object_on_its_edges(scene, bpy):
    cube = add_cube(bpy)
    cube.rotation_euler = (0.0, 0.0, 0.0)  # edges along the axes: on the bounding box's faces
    select_only(bpy, cube)
    assert bpy.ops.neural_sdf.fit() == {"FINISHED"}
    fitted = bpy.context.active_object
    assert fitted.name == "Cube SDF"
    objects_before = set(bpy.data.objects.keys())

    with undo_enabled(bpy):
        assert bpy.ops.neural_sdf.ridge_lines() == {"FINISHED"}
        ridges = bpy.data.objects["Cube SDF Ridges"]
        assert ridges.type == "CURVE" and ridges.data.dimensions == "3D"
        splines = ridges.data.splines
        assert len(splines) >= 1 and all(spline.type == "POLY" for spline in splines)
        points = np.array([ridges.matrix_world @ point.co.xyz for spline in splines for point in spline.points])
        # On the cube's surface, along its edges: near two faces of its box at once (within the bevel's 0.1 and
        # the tiny fit's rounding; a face's middle is 0.5 from the others).
        low, high = world_bounds(bpy, fitted)
        margin = 0.05 * (high - low).max()
        assert ((points > low - margin) & (points < high + margin)).all()
        to_faces = np.sort(np.minimum(np.abs(points - low), np.abs(points - high)), axis=1)
        assert np.percentile(to_faces[:, 1], 90) < 0.25
        bpy.ops.ed.undo()
        assert set(bpy.data.objects.keys()) == objects_before

    select_only(bpy, bpy.data.objects["Cube SDF"])  # undo replaced the scene's data: look it up again
    for _ in range(2):
        assert bpy.ops.neural_sdf.ridge_lines() == {"FINISHED"}
    assert len([name for name in bpy.data.objects.keys() if name.startswith("Cube SDF Ridges")]) == 1
