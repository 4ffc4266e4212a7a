"""Preview Render in Blender (issue 15): the active fitted object's model rendered from the scene camera into an
Image; its silhouette against a Cycles render of the fitted mesh from the same camera (the object moved, turned and
scaled since its fit); the camera conversion against Blender's own camera frame (sensor fits, orthographic); what is
refused. Fixtures: conftest.py; helpers: blender_support.py."""

from __future__ import annotations

import contextlib
import importlib.util
import math
import types

import numpy as np
import pytest

if importlib.util.find_spec("bpy") is None:
    pytest.skip("needs Blender's Python module: pip install bpy==5.0.1", allow_module_level=True)

from .blender_support import (  # noqa: E402
    SPHERE_CENTER,
    addon_module,
    reports,
    select_only,
    snapshot,
    use_test_preferences,
)

FITTED = "Sphere SDF"
PREVIEW = f"{FITTED} Preview"
SIZE = (64, 48)


def open_with_camera(bpy, blend, cache_dir, kind="PERSP"):
    """The fitted sphere's file, the fitted object moved, turned and scaled since its fit (active), the source
    hidden from renders, and a camera looking at it at a small resolution."""
    from mathutils import Vector

    bpy.ops.wm.open_mainfile(filepath=str(blend))
    use_test_preferences(cache_dir)
    scene = bpy.context.scene
    bpy.data.objects["Sphere"].hide_render = True
    fitted = bpy.data.objects[FITTED]
    fitted.location = Vector(fitted.location) + Vector((0.3, -0.2, 0.1))
    fitted.rotation_euler = (0.2, 0.0, 0.5)
    fitted.scale = (1.25, 1.25, 1.25)
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    camera.data.type, camera.data.ortho_scale = kind, 3.5
    target = Vector(SPHERE_CENTER) + Vector((0.3, -0.2, 0.1))
    camera.location = target + Vector((2.4, -3.2, 1.6))
    camera.rotation_euler = (target - camera.location).to_track_quat("-Z", "Y").to_euler()
    scene.collection.objects.link(camera)
    scene.camera = camera
    render = scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = 2 * SIZE[0], 2 * SIZE[1], 50
    bpy.context.view_layer.update()
    select_only(bpy, fitted)
    return fitted, camera


def image_alpha(image) -> np.ndarray:
    width, height = image.size
    pixels = np.empty(width * height * 4, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    return pixels.reshape(height, width, 4)[..., 3]


def cycles_alpha(bpy, path) -> np.ndarray:
    scene = bpy.context.scene
    render = scene.render
    render.engine, render.film_transparent, render.filepath = "CYCLES", True, str(path)
    scene.cycles.device, scene.cycles.samples = "CPU", 16
    scene.cycles.pixel_filter_type, scene.cycles.filter_width = "BOX", 1.0  # alpha: the pixel's covered share
    bpy.ops.render.render(write_still=True)
    return image_alpha(bpy.data.images.load(str(path)))


@pytest.mark.parametrize("kind", ["PERSP", "ORTHO"])
def test_preview_render_matches_cycles_on_the_fitted_mesh(bpy, fitted_sphere_blend, cache_dir, tmp_path, kind):
    open_with_camera(bpy, fitted_sphere_blend, cache_dir, kind)
    assert bpy.ops.neural_sdf.preview_render() == {"FINISHED"}
    image = bpy.data.images[PREVIEW]
    assert tuple(image.size) == SIZE and image.get(addon_module("operators.preview_render").PREVIEW_MARK) == FITTED
    preview = image_alpha(image) > 0.5
    assert 300 < preview.sum() < 0.8 * SIZE[0] * SIZE[1]
    cycles = cycles_alpha(bpy, tmp_path / "cycles.png") > 0.5
    iou = (preview & cycles).sum() / (preview | cycles).sum()
    only_preview, only_cycles = (preview & ~cycles).sum(), (cycles & ~preview).sum()
    print(f"{kind}: IoU {iou:.4f} over {(preview | cycles).sum()} pixels")  # shown with pytest -s
    assert iou >= 0.99, f"IoU {iou:.4f}: {only_preview} pixels only in the preview, {only_cycles} only in Cycles"


def test_a_second_render_reuses_its_image_and_never_an_image_of_the_user(bpy, fitted_sphere_blend, cache_dir):
    fitted, _ = open_with_camera(bpy, fitted_sphere_blend, cache_dir)
    mine = bpy.data.images.new(PREVIEW, 4, 4)
    assert bpy.ops.neural_sdf.preview_render() == {"FINISHED"}
    made = [image for image in bpy.data.images if image.get(addon_module("operators.preview_render").PREVIEW_MARK)]
    assert len(made) == 1 and made[0] != mine and tuple(mine.size) == (4, 4)
    bpy.context.scene.render.resolution_percentage = 25
    assert bpy.ops.neural_sdf.preview_render(shading="curvature") == {"FINISHED"}
    again = [image for image in bpy.data.images if image.get(addon_module("operators.preview_render").PREVIEW_MARK)]
    assert again == made and tuple(made[0].size) == (SIZE[0] // 2, SIZE[1] // 2)


def test_without_a_camera_or_a_3d_view_nothing_is_made(bpy, fitted_sphere_blend, cache_dir):
    open_with_camera(bpy, fitted_sphere_blend, cache_dir)
    bpy.context.scene.camera = None
    before = set(bpy.data.images)
    with pytest.raises(RuntimeError, match="no camera and this is not a 3D view"):
        bpy.ops.neural_sdf.preview_render()
    assert set(bpy.data.images) == before


def test_an_uneven_scale_since_the_fit_is_refused(bpy, fitted_sphere_blend, cache_dir):
    fitted, _ = open_with_camera(bpy, fitted_sphere_blend, cache_dir)
    fitted.scale = (1.0, 2.0, 1.0)
    with pytest.raises(RuntimeError, match="scaled unevenly"):
        bpy.ops.neural_sdf.preview_render()
    assert PREVIEW not in bpy.data.images


@pytest.mark.parametrize(
    "fit, size, kind",
    [("AUTO", (80, 40), "PERSP"), ("AUTO", (40, 80), "PERSP"), ("VERTICAL", (80, 40), "PERSP"),
     ("HORIZONTAL", (40, 80), "PERSP"), ("AUTO", (40, 80), "ORTHO"), ("VERTICAL", (80, 40), "ORTHO")],
)  # fmt: skip
def test_the_camera_file_frames_what_blenders_camera_frames(bpy, fit, size, kind):
    """The corner rays of the converted camera pass through the corners of Blender's own camera frame."""
    from engine.render_camera import camera_from_dict, camera_rays

    core = addon_module("core.render_camera")
    camera_in_model = core.camera_in_model
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = *size, 100
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    data = camera.data
    data.type, data.sensor_fit, data.lens, data.sensor_width, data.sensor_height = kind, fit, 35.0, 32.0, 20.0
    data.ortho_scale = 3.0
    camera.location, camera.rotation_euler = (1.0, -2.0, 0.5), (1.1, 0.2, -0.4)
    bpy.context.view_layer.update()
    fov = core.horizontal_fov(data.lens, data.sensor_width, data.sensor_height, fit, size) if kind == "PERSP" else None
    width = core.ortho_width(data.ortho_scale, fit, size) if kind == "ORTHO" else None
    model_world = np.diag([2.0, 2.0, 2.0, 1.0])  # model units are half a world unit
    model_world[:3, 3] = (0.5, 0.0, -1.0)
    converted = camera_in_model(camera.matrix_world, model_world, kind, size, fov=fov, width=width)
    converted = camera_from_dict(converted)
    rays = camera_rays(converted)
    # Blender's frame corners (camera space, at its frame distance) to world, then to the model's coordinates.
    frame = [np.array(camera.matrix_world @ corner) for corner in data.view_frame(scene=scene)]
    to_model = np.linalg.inv(model_world)
    corners = [to_model[:3, :3] @ point + to_model[:3, 3] for point in frame]
    w, h = size
    # view_frame's corners: top right, bottom right, bottom left, top left; the rays go through pixel centres.
    for corner, (row, column) in zip(corners, [(0, w - 1), (h - 1, w - 1), (h - 1, 0), (0, 0)]):
        index = row * w + column
        origin, direction = rays.origins[index], rays.directions[index]
        if kind == "PERSP":
            towards = (corner - origin) / np.linalg.norm(corner - origin)
            # A pixel centre sits half a pixel inside the frame's corner: within a pixel's angle of it.
            assert math.degrees(math.acos(min(1.0, towards @ direction))) < converted.fov / w
        else:
            offset = corner - origin
            lateral = offset - (offset @ direction) * direction
            assert np.linalg.norm(lateral) < 0.8 * converted.ortho_scale / w


@contextlib.contextmanager
def escaped_once_rendering(bpy):
    """A test twin of Preview Render whose modal() gets an Esc at its first step once the engine reports rendering
    (as `blender_support.scripted` makes twins of the other operators)."""
    base = addon_module("operators.preview_render").NEURALSDF_OT_preview_render
    steps = []

    def modal(self, context, tick):
        progress = self.session.progress
        if not any(kind == "ESC" for kind, _ in steps) and progress is not None and progress.stage == "render":
            steps.append(("ESC", base.modal(self, context, types.SimpleNamespace(type="ESC", value="PRESS"))))
        result = base.modal(self, context, tick)
        steps.append((tick.type, result))
        return result

    namespace = {name: value for name, value in vars(base).items() if not name.startswith("__") and name != "bl_rna"}
    namespace.update(bl_idname="neural_sdf_test.preview_render", bl_label="Test Preview Render", modal=modal,
                     __annotations__=dict(base.__annotations__))  # its properties (shading, multiscale)
    twin = type("NEURALSDFTEST_OT_preview_render", base.__bases__, namespace)
    bpy.utils.register_class(twin)
    try:
        yield bpy.ops.neural_sdf_test.preview_render, steps
    finally:
        bpy.utils.unregister_class(twin)


def test_esc_cancels_a_render_and_makes_no_image(bpy, fitted_sphere_blend, cache_dir, capfd):
    open_with_camera(bpy, fitted_sphere_blend, cache_dir)
    render = bpy.context.scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = 2000, 1500, 100  # a minute's render
    before, images = snapshot(bpy), set(bpy.data.images)
    capfd.readouterr()
    with escaped_once_rendering(bpy) as (preview_render, steps):
        assert preview_render() == {"CANCELLED"}
    assert ("ESC", {"RUNNING_MODAL"}) in steps and steps[-1][1] == {"CANCELLED"}
    (message,) = reports(capfd)
    assert message.startswith("Warning: Cancelled") and message.endswith("The scene was not changed"), message
    assert snapshot(bpy) == before and set(bpy.data.images) == images
    assert not addon_module("engine_jobs").job_running()
