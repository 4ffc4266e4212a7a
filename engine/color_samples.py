"""Colour samples on surfaces (issue 17), numpy only: the colours a colour fit (`engine.surface_colors`) learns from.

- `ColorSamples`: points (input coordinates) and their colours, linear RGB in [0, 1], checked by `check_colors`.
- From a mesh's vertex colours (`vertex_color_samples`, by area, barycentric), from a texture through UVs
  (`texture_lookup`: bilinear in linear light), from a fit job's input arrays (`input_color_samples`) or from a
  mesh file (`file_color_inputs`: PLY colours, OBJ/GLB vertex colours or base colour textures).
- `srgb8_to_linear` / `linear_to_srgb8`: between the 8-bit sRGB of files and linear light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .mesh_io import TriangleMesh

MIN_COLOR_SAMPLES = 16
"""Fewest colour samples a colour fit takes."""


@dataclass(frozen=True)
class ColorSamples:
    """Points on a surface (n, 3) float64 in the input's coordinates and their colours (n, 3) float32, linear RGB
    in [0, 1]."""

    points: np.ndarray
    colors: np.ndarray


def check_colors(colors, count: int, name: str = "colours") -> np.ndarray:
    """Colours (count, 3) RGB or (count, 4) RGBA (alpha dropped), floats of linear light in [0, 1], as float32
    (count, 3); a ValueError says what does not fit (8-bit colours must be decoded first: `srgb8_to_linear`)."""
    colors = np.asanyarray(colors)
    if colors.ndim != 2 or colors.shape[0] != count or colors.shape[1] not in (3, 4):
        raise ValueError(f"{name} must be ({count}, 3) RGB or ({count}, 4) RGBA, got shape {colors.shape}")
    if colors.dtype.kind != "f":
        raise ValueError(
            f"{name} must be floats (linear RGB in [0, 1]), got {colors.dtype}; decode 8-bit sRGB colours first "
            "(engine.color_samples.srgb8_to_linear)"
        )
    colors = colors[:, :3].astype(np.float32)
    bad = ~np.isfinite(colors).all(axis=1) | (colors < 0.0).any(axis=1) | (colors > 1.0 + 1e-6).any(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name}: {int(bad.sum())} colours are NaN, infinite or outside [0, 1] (first: {first}, "
            f"{colors[first].tolist()}); give linear RGB in [0, 1] (clip bright HDR colours first)"
        )
    return np.minimum(colors, 1.0)


def check_color_samples(points, colors, name: str = "colour samples") -> ColorSamples:
    """`ColorSamples` of points (n, 3) and their colours (`check_colors`), checked."""
    points = np.asanyarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"{name}: points must be (n, 3), got shape {points.shape}")
    if len(points) < MIN_COLOR_SAMPLES:
        raise ValueError(f"{name}: a colour fit needs at least {MIN_COLOR_SAMPLES} samples, got {len(points)}")
    if not np.isfinite(points).all():
        raise ValueError(f"{name}: points hold NaN or infinite coordinates")
    return ColorSamples(points, check_colors(colors, len(points), name))


def vertex_color_samples(
    mesh: TriangleMesh, vertex_colors: np.ndarray, count: int, rng: np.random.Generator
) -> ColorSamples:
    """``count`` points drawn uniformly by area on ``mesh`` with its vertex colours (linear, (n, 3)) interpolated
    barycentrically."""
    faces, weights = area_samples(mesh, count, rng)
    points = np.einsum("kj,kjd->kd", weights, mesh.vertices[faces])
    colors = np.einsum("kj,kjd->kd", weights, np.asarray(vertex_colors, dtype=np.float64)[faces])
    return ColorSamples(points, np.clip(colors, 0.0, 1.0).astype(np.float32))


def area_samples(mesh: TriangleMesh, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points uniformly by area: the vertex indices of their faces (count, 3) and their barycentric
    weights (count, 3) (`sampled_faces` for the faces' numbers)."""
    chosen, weights = sampled_faces(mesh, count, rng)
    return mesh.faces[chosen], weights


def sampled_faces(mesh: TriangleMesh, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points uniformly by area: their faces' numbers (count,) and barycentric weights (count, 3)."""
    corners = mesh.vertices[mesh.faces]
    areas = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    chosen = rng.choice(len(areas), size=count, p=areas / areas.sum())
    first, second = rng.random(count), rng.random(count)
    root = np.sqrt(first)
    weights = np.stack([1.0 - root, root * (1.0 - second), root * second], axis=1)
    return chosen, weights


def texture_lookup(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear look-up of an image (h, w, c) of LINEAR colours at texture coordinates (n, 2): u to the right, v up
    (OpenGL and Blender), repeating outside [0, 1], pixel centres at (i + 0.5) / size. Returns (n, c) float64."""
    image = np.asarray(image, dtype=np.float64)
    height, width = image.shape[:2]
    x = np.asarray(uv[:, 0], dtype=np.float64) * width - 0.5
    y = (1.0 - np.asarray(uv[:, 1], dtype=np.float64)) * height - 0.5  # row 0 is the image's top, v = 1
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    x1, y1 = (x0 + 1) % width, (y0 + 1) % height
    x0, y0 = x0 % width, y0 % height
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def srgb8_to_linear(values) -> np.ndarray:
    """8-bit sRGB values (any shape, 0..255) as linear light in [0, 1] (float32)."""
    encoded = np.asarray(values, dtype=np.float64) / 255.0
    return np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb8(colors) -> np.ndarray:
    """Linear colours (any shape, clipped to [0, 1]) as 8-bit sRGB (uint8)."""
    linear = np.clip(np.nan_to_num(np.asarray(colors, dtype=np.float64)), 0.0, 1.0)
    encoded = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.round(encoded * 255.0).astype(np.uint8)


def input_color_samples(
    inputs: dict, shapes: Sequence, shown_names: Sequence[str], pool_size: int, rng: np.random.Generator
) -> list[ColorSamples]:
    """The colour samples of a fit job's inputs, checked, one per shape (a `TriangleMesh` or a point cloud):
    ``vertex_colors_<i>`` (one linear RGB per vertex or point; a mesh's are drawn at ``pool_size`` points by area),
    or ``color_points_<i>`` with ``color_values_<i>`` (samples as they are). Every shape needs one of them."""
    found = []
    for index, (shape, shown) in enumerate(zip(shapes, shown_names)):
        per_vertex = inputs.get(f"vertex_colors_{index}")
        points, values = inputs.get(f"color_points_{index}"), inputs.get(f"color_values_{index}")
        if (points is None) != (values is None):
            given, lacking = (f"color_points_{index}", f"color_values_{index}")[:: 1 if values is None else -1]
            raise ValueError(f"the job's inputs give {given} for {shown} without {lacking}: send both")
        if per_vertex is not None and points is not None:
            raise ValueError(f"the job's inputs give {shown} colours both per vertex and per sample: send one of them")
        if per_vertex is None and points is None:
            raise ValueError(
                f"{shown} has no colours (vertex_colors_{index}, or color_points_{index} with color_values_{index}): "
                "give it colours or fit without them"
            )
        if points is not None:
            found.append(check_color_samples(points, values, f"{shown}'s colour samples"))
        elif isinstance(shape, TriangleMesh):
            colors = check_colors(per_vertex, len(shape.vertices), f"{shown}'s vertex colours")
            found.append(vertex_color_samples(shape, colors, pool_size, rng))
        else:
            colors = check_colors(per_vertex, len(shape.points), f"{shown}'s point colours")
            found.append(ColorSamples(shape.points, colors))
    return found


COLOR_INPUT_PREFIXES = ("vertex_colors_", "color_points_", "color_values_")
"""Input arrays of a fit job that carry colours."""


def file_color_inputs(path, index: int, shape, pool_size: int = 200_000, seed: int = 0) -> dict[str, np.ndarray]:
    """The colours of the mesh or point file ``path`` (read as `engine.point_clouds.load_shape` read ``shape``) as
    fit-job inputs for input ``index``: vertex or point colours (PLY ``red green blue``, 8-bit sRGB, or OBJ/GLB
    vertex colours) as ``vertex_colors_<i>``; face colours, or a texture image looked up bilinearly through the
    vertices' UVs (OBJ with its MTL, GLB's base colour), at ``pool_size`` points by area as ``color_points_<i>`` and
    ``color_values_<i>``. A ValueError names the file when it holds no colours."""
    from pathlib import Path

    from .mesh_io import load_geometry

    name = Path(path).name
    geometry = load_geometry(path)
    rng = np.random.default_rng(seed)
    if isinstance(shape, TriangleMesh):
        visual = getattr(geometry, "visual", None)
        kind = getattr(visual, "kind", None)
        if kind == "vertex":
            return {f"vertex_colors_{index}": srgb8_to_linear(visual.vertex_colors[:, :3])}
        if kind == "face":
            faces, weights = sampled_faces(shape, pool_size, rng)
            colors = srgb8_to_linear(visual.face_colors[:, :3])[faces]
            points = np.einsum("kj,kjd->kd", weights, shape.vertices[shape.faces[faces]])
            return {f"color_points_{index}": points, f"color_values_{index}": colors}
        if kind == "texture":
            image = _texture_image(visual.material)
            if image is not None and visual.uv is not None and len(visual.uv) == len(shape.vertices):
                corners, weights = area_samples(shape, pool_size, rng)
                uv = np.einsum("kj,kjd->kd", weights, np.asarray(visual.uv, dtype=np.float64)[corners])
                colors = texture_lookup(image, uv)[:, :3]
                points = np.einsum("kj,kjd->kd", weights, shape.vertices[corners])
                return {f"color_points_{index}": points, f"color_values_{index}": colors.astype(np.float32)}
            raise ValueError(f"{name}: its material has no texture image with UVs on every vertex to read colours from")
    elif getattr(geometry, "colors", None) is not None and len(geometry.colors) == len(shape.points):
        return {f"vertex_colors_{index}": srgb8_to_linear(np.asarray(geometry.colors)[:, :3])}
    raise ValueError(
        f"{name} holds no colours (PLY red green blue per vertex, OBJ/GLB vertex colours or a texture with UVs): "
        "fit it without --colors"
    )


def _texture_image(material) -> np.ndarray | None:
    """A trimesh material's base colour image as linear RGB (h, w, 3) float32 (times a glTF base colour factor);
    None without one."""
    image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
    if image is None:
        return None
    pixels = np.asarray(image.convert("RGB"))
    linear = srgb8_to_linear(pixels)
    factor = getattr(material, "baseColorFactor", None)  # glTF: linear multipliers, which trimesh keeps as 8-bit
    if factor is not None:
        linear = linear * (np.asarray(factor, dtype=np.float32)[:3] / 255.0)
    return linear
