"""The Blender-free pieces of Preview Render (issue 15), with plain pytest: sensor fits, the camera moved into a
model's coordinates (a uniform scale since the fit keeps angles and scales widths; mirrored or uneven ones are
refused), the render job's params against the engine's spec, and the check of the returned image."""

from __future__ import annotations

import math

import numpy as np
import pytest

from addon.core.errors import EngineError
from addon.core.render_camera import (
    camera_in_model,
    horizontal_fov,
    ortho_width,
    render_params,
    render_pixels,
    render_size,
)
from engine.jobs import JOBS
from engine.render_camera import camera_from_dict


def test_sensor_fits_give_the_horizontal_angle():
    # 36 mm across at 50 mm: 39.6 degrees; a portrait AUTO fit puts the 36 mm on the height.
    assert horizontal_fov(50.0, 36.0, 24.0, "AUTO", (1920, 1080)) == pytest.approx(39.5978, abs=1e-4)
    assert horizontal_fov(50.0, 36.0, 24.0, "HORIZONTAL", (1080, 1920)) == pytest.approx(39.5978, abs=1e-4)
    portrait = math.degrees(2 * math.atan(18.0 / 50.0 * 1080 / 1920))
    assert horizontal_fov(50.0, 36.0, 24.0, "AUTO", (1080, 1920)) == pytest.approx(portrait)
    vertical = math.degrees(2 * math.atan(12.0 / 50.0 * 1920 / 1080))
    assert horizontal_fov(50.0, 36.0, 24.0, "VERTICAL", (1920, 1080)) == pytest.approx(vertical)
    assert ortho_width(6.0, "AUTO", (100, 50)) == 6.0 and ortho_width(6.0, "AUTO", (50, 100)) == 3.0
    assert ortho_width(6.0, "VERTICAL", (100, 50)) == 12.0
    assert render_size(1920, 1080, 50) == (960, 540) and render_size(3, 3, 10) == (1, 1)


def similarity(scale: float, angle: float, shift) -> np.ndarray:
    matrix = np.eye(4)
    c, s = math.cos(angle), math.sin(angle)
    matrix[:3, :3] = scale * np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    matrix[:3, 3] = shift
    return matrix


def test_the_camera_moves_into_the_model_coordinates():
    camera_world = similarity(3.0, 0.4, (1.0, 2.0, 3.0))  # a camera object's own scale counts for nothing
    model_world = similarity(2.0, -0.3, (0.5, 0.0, -1.0))  # the fitted object turned and doubled since its fit
    perspective = camera_from_dict(camera_in_model(camera_world, model_world, "PERSP", (40, 30), fov=50.0))
    world_from_model = np.linalg.inv(model_world)
    location = world_from_model[:3, :3] @ [1.0, 2.0, 3.0] + world_from_model[:3, 3]
    np.testing.assert_allclose(perspective.location, location)
    expected = similarity(1.0, 0.4 + 0.3, (0, 0, 0))[:3, :3]
    np.testing.assert_allclose(perspective.rotation, expected, atol=1e-12)
    assert perspective.fov == 50.0 and perspective.resolution == (40, 30)
    orthographic = camera_from_dict(camera_in_model(camera_world, model_world, "ORTHO", (40, 30), width=4.0))
    assert orthographic.ortho_scale == pytest.approx(2.0)  # 4 world units are 2 model units


def test_what_a_camera_cannot_render_is_refused():
    camera_world = similarity(1.0, 0.0, (0, 0, 5))
    uneven = np.diag([1.0, 2.0, 1.0, 1.0])
    with pytest.raises(EngineError, match="'Blob' is scaled unevenly"):
        camera_in_model(camera_world, uneven, "PERSP", (8, 8), fov=40.0, object_name="Blob")
    with pytest.raises(EngineError, match="mirrored"):
        camera_in_model(camera_world, np.diag([1.0, 1.0, -1.0, 1.0]), "PERSP", (8, 8), fov=40.0)
    with pytest.raises(EngineError, match="panoramic camera"):
        camera_in_model(camera_world, np.eye(4), "PANO", (8, 8))


def test_the_params_parse_with_the_engines_spec():
    camera = camera_in_model(similarity(1.0, 0.2, (0, 0, 5)), np.eye(4), "PERSP", (8, 6), fov=40.0)
    sent = render_params(model="/m.pt", camera=camera, multiscale=False, shading="curvature", quantity="k1",
                         device="cpu")  # fmt: skip
    spec = JOBS["render"].from_params(sent)
    assert (spec.camera, spec.multiscale, spec.shading, spec.quantity, spec.device) == (camera, False, "curvature",
                                                                                         "k1", "cpu")  # fmt: skip


def test_the_returned_image_is_checked_and_flipped_for_blender():
    rgba = np.zeros((2, 3, 4), dtype=np.float32)
    rgba[0, :, 3] = 1.0  # the top row is covered
    pixels = render_pixels({"rgba": rgba}, (3, 2)).reshape(2, 3, 4)
    assert (pixels[1, :, 3] == 1).all() and (pixels[0, :, 3] == 0).all()  # Blender's pixels start at the bottom
    with pytest.raises(EngineError, match="expected \\(2, 3, 4\\)"):
        render_pixels({"rgba": rgba[:, :2]}, (3, 2))
    rgba[0, 0, 0] = np.nan
    with pytest.raises(EngineError, match="NaN"):
        render_pixels({"rgba": rgba}, (3, 2))
    with pytest.raises(EngineError, match="lacks its image"):
        render_pixels({}, (3, 2))
