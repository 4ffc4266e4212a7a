"""A source object's colours as samples on its surface, for a fit with colours (issue 17). No bpy: the Blender side
(`addon.scene_io.fit_source_colors`) hands over numpy arrays of the evaluated mesh, its colour attribute, UVs and
images; this samples points by area and looks their colours up, in linear light.

- Points are drawn uniformly by area on the triangles (`area_samples`); a colour attribute is interpolated with
  the barycentric weights from its points (point domain) or its triangle corners (corner domain).
- An image is read through the corners' UVs at the sample's barycentric UV (`texture_lookup`: bilinear, repeating,
  u to the right and v up as in Blender, pixel centres at (i + 0.5) / size), in linear colour (`image_to_linear`).
- Triangles whose material shows no image take that material's base colour (`constant`), those of no material
  Blender's default grey.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_BASE_COLOR = (0.8, 0.8, 0.8)
"""Linear base colour of a surface without a material (Blender's default)."""
SAMPLES_PER_OBJECT = 100_000
"""Colour samples sent per source object."""


@dataclass(frozen=True)
class TriangleColors:
    """Where each triangle's colour comes from: ``image`` (h, w, 4 or 3, linear) for the triangles of
    ``image_triangles`` (bool (m,)), else the linear RGB ``constant`` (m, 3) of its material."""

    constant: np.ndarray
    image: np.ndarray | None = None
    image_triangles: np.ndarray | None = None


def srgb_to_linear(encoded: np.ndarray) -> np.ndarray:
    """sRGB-encoded values (any shape, 0..1) in linear light."""
    encoded = np.asarray(encoded, dtype=np.float64)
    return np.where(encoded <= 0.04045, encoded / 12.92, ((np.maximum(encoded, 0.04045) + 0.055) / 1.055) ** 2.4)


def image_to_linear(pixels: np.ndarray, colorspace: str, is_float: bool) -> np.ndarray:
    """An image's ``pixels`` (h, w, c) as Blender gives them in linear RGB (the colour channels; alpha dropped):
    8-bit images in the sRGB colour space hold sRGB-encoded values, which are decoded; float images already hold
    scene-linear values, and Non-Color or linear spaces are taken as they are."""
    rgb = np.asarray(pixels, dtype=np.float64)[..., :3]
    if not is_float and colorspace == "sRGB":
        return srgb_to_linear(rgb)
    return rgb


def area_samples(vertices: np.ndarray, triangles: np.ndarray, count: int, rng: np.random.Generator):
    """``count`` points uniformly by area on the triangles: each one's triangle (count,) and barycentric weights
    (count, 3). Raises ValueError when the triangles have no area."""
    corners = np.asarray(vertices, dtype=np.float64)[triangles]
    areas = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    total = areas.sum()
    if not np.isfinite(total) or total <= 0.0:
        raise ValueError("the mesh's faces have no area to take colours from")
    chosen = rng.choice(len(areas), size=count, p=areas / total)
    first, second = rng.random(count), rng.random(count)
    root = np.sqrt(first)
    return chosen, np.stack([1.0 - root, root * (1.0 - second), root * second], axis=1)


def interpolated(values: np.ndarray, indices: np.ndarray, chosen: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-point or per-corner ``values`` (k, c) at the samples: ``indices`` (m, 3) maps each triangle's corners to
    rows of ``values`` (vertex indices for point-domain values, corner (loop) indices for corner-domain ones)."""
    return np.einsum("kj,kjc->kc", weights, np.asarray(values, dtype=np.float64)[indices[chosen]])


def texture_lookup(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear look-up of an image (h, w, c) of linear colours (row 0 at the bottom, as Blender stores pixels) at
    texture coordinates (n, 2) (u to the right, v up), repeating outside [0, 1]. Returns (n, c) float64."""
    image = np.asarray(image, dtype=np.float64)
    height, width = image.shape[:2]
    x = np.asarray(uv[:, 0], dtype=np.float64) * width - 0.5
    y = np.asarray(uv[:, 1], dtype=np.float64) * height - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    x1, y1 = (x0 + 1) % width, (y0 + 1) % height
    x0, y0 = x0 % width, y0 % height
    low = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    high = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return low * (1 - fy) + high * fy


def color_samples(
    vertices: np.ndarray,
    triangles: np.ndarray,
    *,
    attribute: tuple[np.ndarray, np.ndarray] | None = None,
    uvs: tuple[np.ndarray, np.ndarray] | None = None,
    materials: TriangleColors | None = None,
    count: int = SAMPLES_PER_OBJECT,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Points (count, 3) on a mesh (world ``vertices`` (n, 3), ``triangles`` (m, 3) vertex indices) and their linear
    RGB colours (count, 3) float32 in [0, 1], from (in this order of precedence):

    - ``attribute``: (values (k, 3 or 4) linear, indices (m, 3) into them: the triangles' vertices or corners);
    - ``materials`` with ``uvs``: (corner UVs (l, 2), the triangles' corner indices (m, 3)) for its image;
    - else each triangle's material colour (``materials.constant``) or `DEFAULT_BASE_COLOR`.
    """
    triangles = np.asarray(triangles, dtype=np.int64)
    rng = np.random.default_rng(seed)
    chosen, weights = area_samples(vertices, triangles, count, rng)
    points = interpolated(vertices, triangles, chosen, weights)
    if attribute is not None:
        values, indices = attribute
        colors = interpolated(np.asarray(values)[:, :3], np.asarray(indices, dtype=np.int64), chosen, weights)
    else:
        constant = materials.constant if materials is not None else np.tile(DEFAULT_BASE_COLOR, (len(triangles), 1))
        colors = np.asarray(constant, dtype=np.float64)[chosen]
        if materials is not None and materials.image is not None and uvs is not None:
            corner_uvs, corners = uvs
            textured = np.asarray(materials.image_triangles, dtype=bool)[chosen]
            uv = interpolated(corner_uvs, np.asarray(corners, dtype=np.int64), chosen[textured], weights[textured])
            colors[textured] = texture_lookup(materials.image, uv)[:, :3]
    colors = np.clip(np.nan_to_num(colors, nan=0.0), 0.0, 1.0)  # HDR colours clipped: the engine fits [0, 1]
    return points, colors.astype(np.float32)
