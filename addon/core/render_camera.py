"""The Blender-free pieces of Preview Render: a Blender camera (or 3D view) as the engine's camera file in a model's
input coordinates, the ``render`` job's params, and the check of what comes back.

- The camera file (`engine.render_camera`): location, rotation (world-from-camera, a rotation), type, the
  HORIZONTAL fov in degrees or the ortho_scale (image width), resolution [w, h]; the camera looks along its local
  -Z with +Y up, as Blender's.
- Blender's sensor fit: AUTO fits the sensor width (and the ortho scale) to the larger side of the image,
  HORIZONTAL to the width, VERTICAL the sensor height (and the ortho scale) to the height; the horizontal angle
  follows from the aspect of the rendered resolution (resolution x percentage).
- A model's input coordinates are world space at fit time: ``model_world`` (the fitted object's matrix_world @
  model_to_object) takes them to today's world. The camera is moved into the model's coordinates by its inverse; a
  uniform scale since the fit scales the ortho width (angles keep), a non-uniform one cannot be rendered by a camera
  and is refused. The camera object's own scale is ignored, as Blender ignores it.
"""

from __future__ import annotations

import math
import os

import numpy as np

from .errors import EngineError

SENSOR_FITS = ("AUTO", "HORIZONTAL", "VERTICAL")
VIEW_SENSOR_WIDTH = 72.0
"""The 3D view's frustum is that of a 72 mm sensor at the view's lens (Blender: a 36 mm sensor at zoom 2)."""
SIMILARITY_TOLERANCE = 1e-4
_REINSTALL = "reinstall the extension so that the add-on and the engine come from one release"


def render_size(resolution_x: int, resolution_y: int, percentage: int) -> tuple[int, int]:
    """The rendered size of a scene's resolution at its percentage (as Blender rounds it, at least one pixel)."""
    return max(1, int(resolution_x * percentage / 100)), max(1, int(resolution_y * percentage / 100))


def horizontal_fov(lens: float, sensor_width: float, sensor_height: float, sensor_fit: str, size) -> float:
    """The horizontal angle (degrees) of a Blender perspective camera at the rendered ``size`` (w, h)."""
    width, height = size
    if sensor_fit not in SENSOR_FITS:
        raise EngineError(f"Unknown sensor fit {sensor_fit!r} (Blender's are {', '.join(SENSOR_FITS)})")
    if not (lens > 0 and sensor_width > 0 and sensor_height > 0):
        raise EngineError("The camera's focal length and sensor size must be positive")
    horizontal = sensor_fit == "HORIZONTAL" or (sensor_fit == "AUTO" and width >= height)
    if horizontal:
        half = sensor_width / (2.0 * lens)
    else:
        sensor = sensor_height if sensor_fit == "VERTICAL" else sensor_width
        half = sensor / (2.0 * lens) * width / height
    return math.degrees(2.0 * math.atan(half))


def ortho_width(ortho_scale: float, sensor_fit: str, size) -> float:
    """The width an orthographic Blender camera's image spans (its ortho scale fits the side its sensor fit says)."""
    width, height = size
    if sensor_fit not in SENSOR_FITS:
        raise EngineError(f"Unknown sensor fit {sensor_fit!r} (Blender's are {', '.join(SENSOR_FITS)})")
    horizontal = sensor_fit == "HORIZONTAL" or (sensor_fit == "AUTO" and width >= height)
    return ortho_scale if horizontal else ortho_scale * width / height


def camera_in_model(camera_world, model_world, kind: str, size, *, fov=None, width=None, object_name="the object"):
    """The engine's camera file (a dict) of a camera with world matrix ``camera_world`` (4 x 4, any scale: only its
    rotation and location count), ``kind`` "PERSP" or "ORTHO", rendered ``size`` (w, h), horizontal ``fov`` in
    degrees (perspective) or image ``width`` in world units (orthographic), in the input coordinates of a model
    whose ``model_world`` (4 x 4) takes them to world space."""
    camera_world = np.asarray(camera_world, dtype=np.float64)
    model_world = np.asarray(model_world, dtype=np.float64)
    if camera_world.shape != (4, 4) or model_world.shape != (4, 4):
        raise EngineError("The camera and model matrices must be 4 x 4")
    axes = camera_world[:3, :3]
    lengths = np.linalg.norm(axes, axis=0)
    if not (lengths > 1e-12).all():
        raise EngineError("The camera is scaled to zero along an axis: give it a non-zero scale")
    rotation_world = axes / lengths
    if np.linalg.det(rotation_world) < 0:
        rotation_world[:, 0] *= -1.0  # a mirrored camera object still renders unmirrored in Blender
    to_model = np.linalg.inv(model_world)
    linear = to_model[:3, :3] @ rotation_world
    determinant = np.linalg.det(linear)
    if determinant <= 0:
        raise EngineError(
            f"'{object_name}' is mirrored (a negative scale) since its fit: a preview render needs it unmirrored; "
            "apply the scale or fit again"
        )
    scale = determinant ** (1.0 / 3.0)  # model units per world unit
    rotation = linear / scale
    if np.abs(rotation.T @ rotation - np.eye(3)).max() > SIMILARITY_TOLERANCE:
        raise EngineError(
            f"'{object_name}' is scaled unevenly (or sheared) since its fit, which a camera cannot render: give it "
            "the same scale on X, Y and Z, or fit again"
        )
    location = to_model @ np.append(camera_world[:3, 3], 1.0)
    camera = {
        "location": [float(v) for v in location[:3]],
        "rotation": [[float(v) for v in row] for row in rotation],
        "resolution": [int(size[0]), int(size[1])],
    }
    if kind == "PERSP":
        camera.update(type="perspective", fov=float(fov))
    elif kind == "ORTHO":
        camera.update(type="orthographic", ortho_scale=float(width) * scale)
    else:
        kind_name = {"PANO": "panoramic"}.get(kind, kind.lower())
        raise EngineError(f"A {kind_name} camera cannot be preview-rendered: use a perspective or orthographic camera")
    return camera


def view_camera_world(view_matrix, perspective: bool, back: float):
    """The world matrix of the 3D view's eye: the inverse of its ``view_matrix`` (world to view); an orthographic
    view's eye is moved back along its view axis by ``back`` (world units) so that what is in front of the view's
    clipping range is in front of the camera too."""
    world = np.linalg.inv(np.asarray(view_matrix, dtype=np.float64))
    if not perspective:
        world = world.copy()
        world[:3, 3] += world[:3, 2] * float(back)
    return world


def render_params(
    *, model: str | os.PathLike, camera: dict, multiscale: bool, shading: str, quantity: str, device: str
) -> dict:
    """The ``render`` job of the model file ``model`` from ``camera`` (`camera_in_model`); ``shading`` "plain" or
    "curvature" (coloured by the curvature ``quantity``)."""
    return {"model": str(model), "camera": camera, "multiscale": bool(multiscale), "shading": shading,
            "quantity": quantity, "device": device}  # fmt: skip


def render_pixels(outputs: dict[str, np.ndarray], size) -> np.ndarray:
    """Checked ``rgba`` (h, w, 4) float32 of a render job, finite and in [0, 1], as Blender's image pixels want them:
    the bottom row first, flattened."""
    width, height = size
    rgba = outputs.get("rgba")
    if rgba is None:
        raise EngineError(f"The engine's render result lacks its image: {_REINSTALL}")
    if rgba.shape != (height, width, 4) or not np.issubdtype(rgba.dtype, np.floating):
        raise EngineError(
            f"The engine returned an image of shape {rgba.shape} ({rgba.dtype}), expected ({height}, {width}, 4) floats"
        )
    if not np.isfinite(rgba).all():
        raise EngineError("The engine's render holds NaN or infinite pixels: the model is damaged; fit again")
    return np.ascontiguousarray(np.clip(rgba[::-1], 0.0, 1.0), dtype=np.float32).ravel()
