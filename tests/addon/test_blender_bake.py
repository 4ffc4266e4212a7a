"""Bake to Image (issue 17) inside Blender: the source sphere's curvature from its tiny fitted model into a float
and an 8-bit image through its UV map, packed, undoable; a mesh without a UV map is refused. Fixtures: conftest.py."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("bpy") is None:
    pytest.skip("needs Blender's Python module: pip install bpy==5.0.1", allow_module_level=True)

from .blender_support import SPHERE_RADIUS, select_only, undo_enabled, use_test_preferences  # noqa: E402

SIZE = 32


def test_bake_to_image_writes_packed_float_and_colour_images_of_the_sphere(
    bpy, fitted_sphere_blend, cache_dir, tmp_path
):
    use_test_preferences(cache_dir)
    bpy.ops.wm.open_mainfile(filepath=str(fitted_sphere_blend))
    source = bpy.data.objects["Sphere"]
    assert source.data.uv_layers.active is not None  # Blender's ico sphere comes unwrapped
    select_only(bpy, source)
    settings = bpy.context.scene.neural_sdf
    settings.quantity, settings.bake_size, settings.project = "mean", SIZE, True
    images_before = set(bpy.data.images.keys())

    with undo_enabled(bpy):
        assert bpy.ops.neural_sdf.bake_curvature() == {"FINISHED"}
        values_image, colors_image = bpy.data.images["Sphere Mean (H)"], bpy.data.images["Sphere Mean (H) Colours"]
        for image in (values_image, colors_image):
            assert tuple(image.size) == (SIZE, SIZE) and image.packed_file is not None
        assert values_image.is_float and values_image.colorspace_settings.name == "Non-Color"
        assert not colors_image.is_float and colors_image.colorspace_settings.name == "sRGB"
        pixels = np.empty(SIZE * SIZE * 4, np.float32)
        values_image.pixels.foreach_get(pixels)
        values = pixels.reshape(SIZE, SIZE, 4)[..., 0].copy()
        assert np.isfinite(values).all()
        colors_image.pixels.foreach_get(pixels)
        alpha = pixels.reshape(SIZE, SIZE, 4)[..., 3]
        baked = alpha > 0
        assert baked.mean() > 0.3
        # A sphere of radius r: H = 1/r (loosely: 150 tiny steps of a faceted icosphere), outside the islands 0.
        assert np.median(values[baked]) == pytest.approx(1 / SPHERE_RADIUS, rel=0.25)
        assert (values[~baked] == 0).all()

        bpy.ops.ed.undo()
        assert set(bpy.data.images.keys()) == images_before

    # A second bake overwrites the images the first made (at the new size) instead of adding more.
    for size in (SIZE, 16):
        bpy.context.scene.neural_sdf.bake_size = size  # undo replaced the scene: no older reference to it is valid
        assert bpy.ops.neural_sdf.bake_curvature() == {"FINISHED"}
    assert set(bpy.data.images.keys()) - images_before == {"Sphere Mean (H)", "Sphere Mean (H) Colours"}
    assert tuple(bpy.data.images["Sphere Mean (H)"].size) == (16, 16)

    # Packed in the .blend, floats and all: saved (no material uses them yet) and read back unclamped.
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "baked.blend"))
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "baked.blend"))
    reloaded = bpy.data.images["Sphere Mean (H)"]
    assert reloaded.packed_file is not None and reloaded.is_float
    pixels = np.empty(16 * 16 * 4, np.float32)
    reloaded.pixels.foreach_get(pixels)
    assert pixels.reshape(-1, 4)[:, 0].max() > 1.0


def test_bake_to_image_refuses_a_mesh_without_a_uv_map(bpy, fitted_sphere_blend, cache_dir):
    use_test_preferences(cache_dir)
    bpy.ops.wm.open_mainfile(filepath=str(fitted_sphere_blend))
    fitted = bpy.data.objects["Sphere SDF"]  # the extracted surface has no UV map
    assert fitted.data.uv_layers.active is None
    select_only(bpy, fitted)
    assert not bpy.ops.neural_sdf.bake_curvature.poll()
    with pytest.raises(RuntimeError, match="has no UV map"):
        bpy.ops.neural_sdf.bake_curvature()

