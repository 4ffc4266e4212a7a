"""The camera of a preview render (`engine.render`): its file, checked strictly, and its rays.

The camera file is a JSON object in the model's INPUT coordinates (the names are a stable interface):

    {"location": [x, y, z], "rotation": [[3 x 3 world-from-camera]], "type": "perspective" | "orthographic",
     "fov": horizontal angle in degrees, "ortho_scale": image width in input units, "resolution": [w, h]}

- Blender's convention: the camera looks along its local -Z, its local +Y is up and +X right in the image;
  ``rotation`` maps camera axes to world axes (its columns are the camera's X, Y, Z in the world), so a camera at
  rest looks down the world's -Z.
- ``fov`` is the HORIZONTAL angle (a Blender camera's sensor fit is converted by the add-on); perspective cameras
  need it, orthographic ones need ``ortho_scale`` (the width the image spans); the other key may be present.
- Pixel (row i, column j), row 0 at the top, is sampled at its centre. Perspective rays start at the location;
  orthographic rays start on the plane through the location normal to the view, so nothing behind it is seen.
- Depth is the distance from a ray's start along its unit direction, in input units.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CAMERA_TYPES = ("perspective", "orthographic")
MAX_SIDE = 8192
"""Most pixels along one side of a render."""
MAX_PIXELS = 4096 * 4096
"""Most pixels of a render: its passes are a few float arrays of this size."""
ROTATION_TOLERANCE = 1e-4
"""How far R^T R may be from the identity (a rotation written with 6 to 7 significant digits passes)."""
_REQUIRED = ("location", "rotation", "type", "resolution")
_BY_TYPE = {"perspective": "fov", "orthographic": "ortho_scale"}


@dataclass(frozen=True)
class Camera:
    """A checked camera (`camera_from_dict`): see the module's notes for the conventions."""

    location: tuple[float, float, float]
    rotation: tuple[tuple[float, float, float], ...]
    """World-from-camera, a proper rotation (3 x 3)."""
    type: str
    """"perspective" or "orthographic"."""
    resolution: tuple[int, int]
    """(width, height) in pixels."""
    fov: float | None = None
    """Horizontal angle in degrees (perspective)."""
    ortho_scale: float | None = None
    """Width of the image in input units (orthographic)."""

    @property
    def width(self) -> int:
        return self.resolution[0]

    @property
    def height(self) -> int:
        return self.resolution[1]

    def to_dict(self) -> dict:
        data = {"location": list(self.location), "rotation": [list(row) for row in self.rotation], "type": self.type,
                "resolution": list(self.resolution)}  # fmt: skip
        data[_BY_TYPE[self.type]] = self.fov if self.type == "perspective" else self.ortho_scale
        return data


def camera_from_dict(data, where: str = "the camera") -> Camera:
    """A `Camera` from a camera file's JSON object; a ValueError names ``where``, the key and what to write."""

    def refuse(problem: str) -> ValueError:
        return ValueError(f"{where}: {problem}")

    if not isinstance(data, dict):
        raise refuse(
            f"must be a JSON object with {', '.join(_REQUIRED)} and fov or ortho_scale, got {type(data).__name__}"
        )
    known = set(_REQUIRED) | set(_BY_TYPE.values())
    unknown = sorted(str(key) for key in data if key not in known)
    if unknown:
        raise refuse(f"unknown key(s) {', '.join(unknown)}; a camera has {', '.join(sorted(known))}")
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise refuse(f"lacks {', '.join(missing)}")
    kind = data["type"]
    if kind not in CAMERA_TYPES:
        raise refuse(f'"type" must be "perspective" or "orthographic", got {kind!r}')
    needed = _BY_TYPE[kind]
    if needed not in data:
        raise refuse(f"a {kind} camera needs {needed!r} (" + (
            "its horizontal angle in degrees)" if kind == "perspective" else "the image's width in input units)"))

    def number(value, name: str) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise refuse(f"{name} must be a finite number, got {value!r}")
        return float(value)

    location = data["location"]
    if not isinstance(location, list) or len(location) != 3:
        raise refuse(f'"location" must be a list of 3 numbers [x, y, z], got {location!r}')
    location = tuple(number(v, f"location[{i}]") for i, v in enumerate(location))
    rows = data["rotation"]
    if not isinstance(rows, list) or len(rows) != 3 or not all(isinstance(r, list) and len(r) == 3 for r in rows):
        raise refuse(f'"rotation" must be a 3 x 3 list of lists (world-from-camera), got {rows!r}')
    rotation = np.array([[number(v, f"rotation[{i}][{j}]") for j, v in enumerate(r)] for i, r in enumerate(rows)])
    error = float(np.abs(rotation.T @ rotation - np.eye(3)).max())
    if error > ROTATION_TOLERANCE or np.linalg.det(rotation) <= 0.0:
        raise refuse(
            f'"rotation" must be a rotation (orthonormal columns, determinant +1): R^T R is {error:.3g} from the '
            f"identity and det R = {np.linalg.det(rotation):.4g}; take the scale and any mirroring out of the matrix"
        )
    resolution = data["resolution"]
    if (not isinstance(resolution, list) or len(resolution) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in resolution)):  # fmt: skip
        raise refuse(f'"resolution" must be [width, height] in whole pixels, got {resolution!r}')
    width, height = resolution
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE) or width * height > MAX_PIXELS:
        raise refuse(
            f'"resolution" {width} x {height} is outside 1 to {MAX_SIDE} per side and {MAX_PIXELS} pixels in all'
        )
    fov = ortho_scale = None
    if "fov" in data:
        fov = number(data["fov"], '"fov"')
        if not 0.0 < fov < 180.0:
            raise refuse(f'"fov" is the horizontal angle in degrees, strictly between 0 and 180, got {fov}')
    if "ortho_scale" in data:
        ortho_scale = number(data["ortho_scale"], '"ortho_scale"')
        if ortho_scale <= 0.0:
            raise refuse(f'"ortho_scale" is the image width in input units and must be positive, got {ortho_scale}')
    return Camera(location, tuple(tuple(float(v) for v in row) for row in rotation), kind, (width, height), fov,
                  ortho_scale)  # fmt: skip


def load_camera(path: str | Path) -> Camera:
    """The camera of a camera file; errors name the file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a camera file")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"camera file {path} does not exist") from None
    except json.JSONDecodeError as error:
        where = f"{error.msg} at line {error.lineno}, column {error.colno}"
        raise ValueError(f"{path} is not valid JSON ({where})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text file (a camera file is JSON)") from None
    return camera_from_dict(data, where=f"camera file {path}")


@dataclass(frozen=True)
class Rays:
    """One ray per pixel, row-major from the top-left pixel, in float64."""

    origins: np.ndarray
    """(h * w, 3) where each ray starts."""
    directions: np.ndarray
    """(h * w, 3) unit directions."""
    footprint_slope: float
    """The width of a pixel at distance t along a ray is ``footprint_offset + footprint_slope * t``."""
    footprint_offset: float


def camera_rays(camera: Camera) -> Rays:
    """The rays of ``camera``'s pixels in its own (input) coordinates; the footprint is the pixel's width, 2 tan(fov
    / 2) / w per unit of distance (perspective) or ortho_scale / w (orthographic)."""
    width, height = camera.resolution
    rotation = np.asarray(camera.rotation, dtype=np.float64)
    columns = np.arange(width) + 0.5 - width / 2.0
    rows = height / 2.0 - (np.arange(height) + 0.5)
    x, y = np.meshgrid(columns, rows)  # (h, w): x grows to the right, y upwards
    x, y = x.ravel(), y.ravel()
    location = np.asarray(camera.location, dtype=np.float64)
    if camera.type == "perspective":
        pixel = 2.0 * math.tan(math.radians(camera.fov) / 2.0) / width  # at unit distance
        local = np.stack([x * pixel, y * pixel, -np.ones_like(x)], axis=1)
        directions = local @ rotation.T
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        origins = np.broadcast_to(location, directions.shape).copy()
        return Rays(origins, directions, pixel, 0.0)
    pixel = camera.ortho_scale / width
    local = np.stack([x * pixel, y * pixel, np.zeros_like(x)], axis=1)
    origins = location + local @ rotation.T
    directions = np.broadcast_to(-rotation[:, 2], origins.shape).copy()
    return Rays(origins, directions, 0.0, pixel)


def clip_to_cube(origins: np.ndarray, directions: np.ndarray, half_size: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Where each ray (origins, unit directions: (n, 3)) enters and leaves the cube [-half_size, half_size]^3, as
    distances t_near, t_far along it (t_near >= 0; t_near >= t_far where a ray misses the cube)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = 1.0 / directions
        low = (-half_size - origins) * inverse
        high = (half_size - origins) * inverse
    # A ray parallel to a pair of faces: inside the slab for every t, or outside for every t.
    parallel = directions == 0.0
    inside = np.abs(origins) <= half_size
    low = np.where(parallel, np.where(inside, -np.inf, np.inf), low)
    high = np.where(parallel, np.where(inside, np.inf, -np.inf), high)
    near = np.maximum(np.minimum(low, high).max(axis=1), 0.0)
    far = np.maximum(low, high).min(axis=1)
    return near, far
