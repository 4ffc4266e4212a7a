"""Baking a fitted model's curvature into a texture through a mesh's UV map (issue 17).

- Texel layout: ``image[row, col]`` is the texel whose centre is at UV ((col + 0.5) / width, (row + 0.5) / height),
  so row 0 is at v = 0, the bottom of the image, as in Blender's ``Image.pixels`` (an image file writer flips it).
- Rasterising (`rasterize_uvs`): each texel centre inside a UV triangle gets that triangle and its barycentric
  coordinates (a centre on a shared edge goes to the first triangle in face order, as does one where UV islands
  overlap); UVs outside [0, 1] are not wrapped (their part of the triangle falls off the image).
- Each covered texel's 3-D point is its barycentric blend of the triangle's vertices, moved onto the model's
  surface first when asked (`engine.geometry.model_curvatures` with ``project``, as the curvature job's).
- Seams are padded as Blender's bake margin does: ``margin`` passes of dilation, each giving the uncovered texels
  next to covered (or already padded) ones the mean of those neighbours (`pad_image`).
- Outputs: a float32 image of the quantity (input units; texels neither covered nor padded hold ``fill``), the
  8-bit sRGB RGBA image of the colour map (`engine.colormaps.colorize`; alpha 0 where nothing was baked) and the
  coverage (`EMPTY`, `COVERED`, `PADDED`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

EMPTY, COVERED, PADDED = 0, 1, 2
"""Coverage of a texel: no triangle, a triangle's interior, filled by the seam padding."""

CANDIDATES_PER_CHUNK = 1 << 22
"""Texel centres tested per rasterising step (the triangles' bounding boxes, taken a run of triangles at a time)."""
EVALUATION_CHUNK = 32768
"""Texels per curvature evaluation between progress reports and cancel checks."""
INSIDE_TOLERANCE = 1e-9
"""A texel centre counts as inside when no barycentric coordinate is below minus this (centres on edges count)."""


@dataclass(frozen=True)
class Texels:
    """The covered texels of an image and where each falls in the UV triangles."""

    index: np.ndarray
    """(k,) int64 flat texel index row * width + col, increasing."""
    triangle: np.ndarray
    """(k,) int64 triangle (face) each texel centre falls in."""
    barycentric: np.ndarray
    """(k, 3) float64 weights of the triangle's corners at the texel centre (sum 1)."""


@dataclass(frozen=True)
class TextureBake:
    """A baked quantity: the images and what went into them."""

    values: np.ndarray
    """(height, width) float32 quantity, padded at the seams; `fill` where nothing was baked."""
    colors: np.ndarray
    """(height, width, 4) uint8 sRGB colours of the map over ``value_range``; (0, 0, 0, 0) where nothing was baked."""
    coverage: np.ndarray
    """(height, width) uint8 `EMPTY`, `COVERED` or `PADDED`."""
    value_range: tuple[float, float]
    """(low, high) that the colour map spans (the legend's range)."""
    points: np.ndarray
    """(k, 3) float64 surface points of the covered texels (input coordinates; projected when asked)."""
    texels: Texels
    nonfinite: int
    """Covered texels where the quantity was not finite (grad f = 0 there): left to the padding, as holes are."""
    seconds: float


def rasterize_uvs(uvs, width: int, height: int) -> Texels:
    """The texels whose centres fall inside the UV triangles ``uvs`` (m, 3, 2) of a ``width`` x ``height`` image.

    Vectorised over each run of triangles: every texel centre of a triangle's bounding box is tested with its
    barycentric coordinates. Degenerate (zero-area) UV triangles cover nothing.
    """
    uvs = np.asarray(uvs, dtype=np.float64)
    if uvs.ndim != 3 or uvs.shape[1:] != (3, 2):
        raise ValueError(f"the UVs must be (faces, 3, 2), one (u, v) per face corner, got shape {uvs.shape}")
    if not np.isfinite(uvs).all():
        raise ValueError("the UVs hold NaN or infinite coordinates")
    # Pixel coordinates in which texel centres sit at integers: x = u * width - 0.5.
    corners = uvs * np.array([width, height], dtype=np.float64) - 0.5
    low = np.clip(np.ceil(corners.min(axis=1) - INSIDE_TOLERANCE), 0, [width - 1, height - 1]).astype(np.int64)
    high = np.clip(np.floor(corners.max(axis=1) + INSIDE_TOLERANCE), -1, [width - 1, height - 1]).astype(np.int64)
    extent = np.maximum(high - low + 1, 0)
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    doubled_area = _cross(b - a, c - a)
    extent[np.abs(doubled_area) <= 1e-12 * (np.abs(corners).max(axis=(1, 2)) + 1.0) ** 2] = 0
    counts = extent[:, 0] * extent[:, 1]

    indices, triangles, weights = [], [], []
    start = 0
    cumulative = np.cumsum(counts)
    while start < len(counts):
        # The longest run of triangles with at most CANDIDATES_PER_CHUNK centres (at least one triangle).
        before = cumulative[start - 1] if start else 0
        stop = max(int(np.searchsorted(cumulative, before + CANDIDATES_PER_CHUNK, side="right")), start + 1)
        chunk = np.arange(start, stop)
        chunk_counts = counts[chunk]
        triangle = np.repeat(chunk, chunk_counts)
        offset = np.arange(len(triangle)) - np.repeat(np.cumsum(chunk_counts) - chunk_counts, chunk_counts)
        columns = extent[triangle, 0]
        x = low[triangle, 0] + offset % np.maximum(columns, 1)
        y = low[triangle, 1] + offset // np.maximum(columns, 1)
        point = np.stack([x, y], axis=1).astype(np.float64)
        weight = np.stack(
            [
                _cross(b[triangle] - point, c[triangle] - point),
                _cross(c[triangle] - point, a[triangle] - point),
                _cross(a[triangle] - point, b[triangle] - point),
            ],
            axis=1,
        ) / doubled_area[triangle, None]
        inside = (weight >= -INSIDE_TOLERANCE).all(axis=1)
        indices.append(y[inside] * width + x[inside])
        triangles.append(triangle[inside])
        weights.append(weight[inside])
        start = stop
    index = np.concatenate(indices) if indices else np.zeros(0, np.int64)
    triangle = np.concatenate(triangles) if triangles else np.zeros(0, np.int64)
    weight = np.concatenate(weights) if weights else np.zeros((0, 3))
    # np.unique keeps the first occurrence, and candidates run in face order: the first triangle wins a texel.
    index, first = np.unique(index, return_index=True)
    weight = np.clip(weight[first], 0.0, None)
    return Texels(index, triangle[first], weight / weight.sum(axis=1, keepdims=True))


def texel_points(texels: Texels, vertices, faces) -> np.ndarray:
    """(k, 3) float64 3-D points of the texel centres on the mesh's (flat) triangles."""
    corners = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)[texels.triangle]]
    return np.einsum("kc,kcd->kd", texels.barycentric, corners)


def pad_image(values: np.ndarray, filled: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (h, w) dilated ``margin`` texels into the texels where ``filled`` (h, w) is False: each pass gives
    every unfilled texel with filled neighbours (8-neighbourhood) their mean. Returns the new values (float64) and
    the mask of the texels filled by the padding."""
    values = np.where(filled, values, 0.0).astype(np.float64)
    filled = filled.copy()
    padded = np.zeros_like(filled)
    height, width = filled.shape
    for _ in range(margin):
        total = np.zeros((height + 2, width + 2))
        count = np.zeros((height + 2, width + 2))
        weight = filled.astype(np.float64)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                if dy == dx == 1:
                    continue
                total[dy : dy + height, dx : dx + width] += values * weight
                count[dy : dy + height, dx : dx + width] += weight
        total, count = total[1:-1, 1:-1], count[1:-1, 1:-1]
        grown = ~filled & (count > 0)
        if not grown.any():
            break
        values[grown] = total[grown] / count[grown]
        filled |= grown
        padded |= grown
    return values, padded


def bake_texture(
    model,
    vertices,
    faces,
    uvs,
    width: int,
    height: int,
    quantity: str,
    *,
    project: bool = False,
    margin: int = 8,
    fill: float = 0.0,
    colormap: str = "auto",
    value_range: tuple[float, float] | None = None,
    report: Callable[[int, int, float], None] | None = None,
    raise_if_cancelled: Callable[[str], None] | None = None,
) -> TextureBake:
    """Bake ``quantity`` (a name of `engine.colormaps.QUANTITIES`) of an `engine.model.SDFModel` through the UV map
    of a triangle mesh: ``vertices`` (n, 3) in the model's input coordinates, ``faces`` (m, 3), ``uvs`` (m, 3, 2)
    per face corner. See the module's notes for the layout, the padding and the outputs.

    ``report(done, total, eta_s)`` after each evaluated chunk of texels; ``raise_if_cancelled(where)`` before each.
    The colour map spans ``value_range`` or the robust range of the covered texels (`engine.colormaps.colorize`).
    """
    from .colormaps import colorize, map_kind
    from .geometry import model_curvatures

    started = time.perf_counter()
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces)
    kind = map_kind(quantity, colormap)
    if not np.isfinite(fill):
        raise ValueError(f"the fill value must be finite, got {fill}")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise ValueError(f"the faces must be a non-empty (m, 3) array of triangles, got shape {faces.shape}")
    if np.shape(uvs)[:1] != (len(faces),):
        raise ValueError(f"the UVs must give one (3, 2) triangle per face: {len(faces)} faces, UVs {np.shape(uvs)}")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ValueError(f"the faces index vertices outside 0..{len(vertices) - 1}")
    texels = rasterize_uvs(uvs, width, height)
    if len(texels.index) == 0:
        raise ValueError(
            f"no texel centre of the {width} x {height} image falls inside a UV triangle: the UV map lies outside "
            "[0, 1] or its triangles are smaller than a texel (unwrap the mesh, or bake at a larger size)"
        )
    points = texel_points(texels, vertices, faces)

    total = len(points)
    shown = np.empty(total, dtype=np.float64)
    surface_points = np.empty_like(points)
    evaluation_started = time.perf_counter()
    for start in range(0, total, EVALUATION_CHUNK):
        if raise_if_cancelled is not None:
            raise_if_cancelled(f"after {start} of {total} texels")
        stop = min(start + EVALUATION_CHUNK, total)
        result = model_curvatures(model, points[start:stop], project=project)
        shown[start:stop] = getattr(result, quantity)
        surface_points[start:stop] = result.points
        if report is not None:
            elapsed = time.perf_counter() - evaluation_started
            report(stop, total, elapsed / stop * (total - stop))

    finite = np.isfinite(shown)
    if not finite.any():
        raise ValueError(f"the model's {quantity} is not finite at any texel (its gradient vanishes there)")
    baked = np.zeros(width * height)
    baked[texels.index[finite]] = shown[finite]
    covered = np.zeros(width * height, dtype=bool)
    covered[texels.index[finite]] = True
    values, padded = pad_image(baked.reshape(height, width), covered.reshape(height, width), margin)
    coverage = np.full((height, width), EMPTY, dtype=np.uint8)
    coverage.flat[texels.index[finite]] = COVERED
    coverage[padded] = PADDED
    filled = coverage != EMPTY

    _, value_range = colorize(shown[finite], kind, value_range=value_range)
    colors = np.zeros((height, width, 4), dtype=np.uint8)
    mapped, _ = colorize(values[filled], kind, value_range=value_range)
    colors[filled] = np.round(mapped * 255.0).astype(np.uint8)
    values[~filled] = fill
    return TextureBake(
        values=values.astype(np.float32),
        colors=colors,
        coverage=coverage,
        value_range=value_range,
        points=surface_points,
        texels=texels,
        nonfinite=int((~finite).sum()),
        seconds=time.perf_counter() - started,
    )


def load_uv_mesh(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The vertices (n, 3) float64, triangles (m, 3) int64 and per-corner UVs (m, 3, 2) of a triangle mesh file with
    texture coordinates (OBJ ``vt``, PLY ``s t``, GLB), as trimesh reads it: a vertex on a UV seam is split per UV."""
    from .mesh_io import MeshError, check_mesh, load_geometry

    loaded = load_geometry(path)
    name = getattr(path, "name", str(path))
    if not hasattr(loaded, "faces"):
        raise MeshError(f"{name} contains no faces: a UV-mapped surface mesh is needed")
    uv = getattr(loaded.visual, "uv", None)
    if uv is None or len(uv) != len(loaded.vertices):
        raise MeshError(f"{name} has no UV map (texture coordinates): unwrap it and export it with its UVs")
    # Checked whole, but faces of zero area stay (unlike a fit's input): their UV triangles still hold texels.
    vertices, faces = np.asarray(loaded.vertices, np.float64), np.asarray(loaded.faces, np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the one check_mesh gives about dropping those faces
        check_mesh(vertices, faces, name=name)
    return vertices, faces, np.asarray(uv, np.float64)[faces]


def write_bake_files(folder, arrays: dict[str, np.ndarray], summary: dict) -> list[str]:
    """A bake's ``QUANTITY.png`` (the 8-bit colours), ``QUANTITY.npy`` (the float32 values) and ``bake.json`` (the
    summary) in ``folder``; both images top row first (v = 1), as image files are. Returns the file names."""
    import json
    from pathlib import Path

    import imageio.v3 as iio

    folder, quantity = Path(folder), summary["quantity"]
    names = [f"{quantity}.png", f"{quantity}.npy", "bake.json"]
    iio.imwrite(folder / names[0], np.ascontiguousarray(arrays["colors"][::-1]), extension=".png")
    np.save(folder / names[1], np.ascontiguousarray(arrays["values"][::-1]))
    (folder / names[2]).write_text(json.dumps(summary, indent=2) + "\n")
    return names

def _cross(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """z of the cross product of 2-D vectors (..., 2): twice the signed area they span."""
    return first[..., 0] * second[..., 1] - first[..., 1] * second[..., 0]
