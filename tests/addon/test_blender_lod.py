"""Levels of detail inside Blender (issue 15): Fit with Levels, Re-extract at a Level (a blend between two levels
included), Make LOD Objects (<name>_LOD0 the finest ... in one new collection <name>_LOD, undoable) and its
refusals: a one-level model, names already taken. Fixtures: conftest.py."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("bpy") is None:
    pytest.skip("needs Blender's Python module: pip install bpy==5.0.1", allow_module_level=True)

from .blender_support import (  # noqa: E402
    SPHERE_CENTER,
    SPHERE_RADIUS,
    add_sphere,
    addon_module,
    draw,
    empty_scene_with_tiny_fit,
    reports,
    select_only,
    snapshot,
    undo_enabled,
)


@pytest.fixture(scope="module")
def lod_sphere_blend(bpy, cache_dir, tmp_path_factory):
    """A saved .blend holding a sphere and its fitted object of 2 levels (fitted once for the module)."""
    empty_scene_with_tiny_fit(bpy, cache_dir)
    select_only(bpy, add_sphere(bpy))
    settings = bpy.context.scene.neural_sdf
    settings.levels, settings.steps = 2, 160  # the coarse level trains half: 80 steps
    assert bpy.ops.neural_sdf.fit() == {"FINISHED"}
    path = tmp_path_factory.mktemp("lod") / "lod.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    return path


def radii(bpy, obj) -> np.ndarray:
    points = np.array([obj.matrix_world @ vertex.co for vertex in obj.data.vertices])
    return np.linalg.norm(points - np.array(SPHERE_CENTER), axis=1)


def test_the_add_ons_levels_are_the_engines(bpy):
    from engine.multires_fit import MAX_LEVELS

    assert addon_module("properties").MAX_LEVELS == MAX_LEVELS


def test_fit_with_levels_keeps_them_and_re_extract_takes_the_level(bpy, lod_sphere_blend, capfd):
    bpy.ops.wm.open_mainfile(filepath=str(lod_sphere_blend))
    fitted = bpy.data.objects["Sphere SDF"]
    link = fitted.neural_sdf
    assert link.levels == 2 and link.level == 1.0 and "2 levels" in link.fit_summary
    link.level = 5.0  # the slider's range is every model's: kept within this one's
    assert link.level == 1.0
    select_only(bpy, fitted)
    bpy.context.scene.neural_sdf.resolution = 24
    capfd.readouterr()
    for level in (0.0, 0.5):
        link.level = level
        assert bpy.ops.neural_sdf.reextract() == {"FINISHED"}
        assert reports(capfd)[-1].startswith(f"Info: Re-extracted 'Sphere SDF' at resolution 24, level {level:g}: ")
        assert abs(radii(bpy, bpy.data.objects["Sphere SDF"]).mean() - SPHERE_RADIUS) < 0.05 * SPHERE_RADIUS


def test_make_lod_objects_writes_lod0_finest_to_lodn_in_one_collection_and_undoes(bpy, lod_sphere_blend, capfd):
    bpy.ops.wm.open_mainfile(filepath=str(lod_sphere_blend))
    fitted = bpy.data.objects["Sphere SDF"]
    select_only(bpy, fitted)
    bpy.context.scene.neural_sdf.resolution = 64  # LOD0 at 64, LOD1 at 32
    before = snapshot(bpy)
    with undo_enabled(bpy):
        assert bpy.ops.neural_sdf.make_lod() == {"FINISHED"}
        collection = bpy.data.collections["Sphere SDF_LOD"]
        assert sorted(obj.name for obj in collection.objects) == ["Sphere SDF_LOD0", "Sphere SDF_LOD1"]
        finest, coarsest = bpy.data.objects["Sphere SDF_LOD0"], bpy.data.objects["Sphere SDF_LOD1"]
        assert finest.neural_sdf.level == 1.0 and coarsest.neural_sdf.level == 0.0
        assert finest.neural_sdf.model_path == fitted.neural_sdf.model_path
        # LOD1 at half the resolution: fewer faces; both the sphere
        assert len(coarsest.data.polygons) < 0.5 * len(finest.data.polygons)
        for obj in (finest, coarsest):
            assert abs(radii(bpy, obj).mean() - SPHERE_RADIUS) < 0.05 * SPHERE_RADIUS
        assert "Made 2 LOD objects in 'Sphere SDF_LOD': Sphere SDF_LOD0 (" in reports(capfd)[-1]
        after = snapshot(bpy)
        assert {name: after["objects"][name] for name in before["objects"]} == before["objects"]

        with pytest.raises(RuntimeError, match="'Sphere SDF_LOD0', 'Sphere SDF_LOD1', 'Sphere SDF_LOD' already exist"):
            select_only(bpy, bpy.data.objects["Sphere SDF"])
            bpy.ops.neural_sdf.make_lod()

        bpy.ops.ed.undo()
        assert "Sphere SDF_LOD" not in bpy.data.collections and "Sphere SDF_LOD0" not in bpy.data.objects
        assert snapshot(bpy)["objects"] == before["objects"]


def test_make_lod_objects_refuses_a_model_of_one_level_and_the_panel_shows_levels_only_where_a_model_has_them(
    bpy, fitted_sphere_blend, lod_sphere_blend
):
    sidebar = addon_module("panels.sidebar")
    bpy.ops.wm.open_mainfile(filepath=str(fitted_sphere_blend))
    select_only(bpy, bpy.data.objects["Sphere SDF"])
    with pytest.raises(RuntimeError, match="has one level of detail: fit it with Levels 2 or more"):
        bpy.ops.neural_sdf.make_lod()
    assert ("prop", "levels") in draw(sidebar.NEURALSDF_PT_main)
    drawn = draw(sidebar.NEURALSDF_PT_model)
    assert ("prop", "level") not in drawn and ("operator", "neural_sdf.make_lod") not in drawn
    bpy.ops.wm.open_mainfile(filepath=str(lod_sphere_blend))
    select_only(bpy, bpy.data.objects["Sphere SDF"])
    drawn = draw(sidebar.NEURALSDF_PT_model)
    assert ("prop", "level") in drawn and ("operator", "neural_sdf.make_lod") in drawn
