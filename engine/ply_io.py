"""PLY files carrying per-vertex fields (curvatures) and colours beside the mesh.

Written as binary little-endian PLY: float32 x y z (float64 where float32 would move the vertices, see
`coordinate_type`), then one float32 property per named field (``mean``,
``gaussian``, ...), then uchar red green blue alpha when colours are given, and triangles as
``property list uchar int vertex_indices``. Blender's PLY importer and trimesh read the mesh and colours;
Blender also keeps the extra float properties as attributes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "<i2", "int16": "<i2", "ushort": "<u2", "uint16": "<u2",
    "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4",
    "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8",
}  # fmt: skip
_PROPERTY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_RESERVED = ("x", "y", "z", "red", "green", "blue", "alpha")


FLOAT32_RELATIVE_ERROR = 1e-6
"""Coordinates are written as float32 while rounding them moves no vertex by more than this share of the mesh's
extent; else as float64 (a mesh far from the origin, e.g. in survey coordinates, would snap to a coarse grid)."""


def coordinate_type(vertices: np.ndarray) -> str:
    """``"float"`` or ``"double"``: the PLY type that keeps the vertices (n, 3) as precise as they are."""
    vertices = np.asanyarray(vertices, dtype=np.float64)
    if len(vertices) == 0:
        return "float"
    extent = float(np.ptp(vertices, axis=0).max())
    rounding = float(np.abs(vertices.astype(np.float32).astype(np.float64) - vertices).max())
    return "float" if rounding <= FLOAT32_RELATIVE_ERROR * extent else "double"


def as_written(vertices: np.ndarray) -> np.ndarray:
    """The vertices (float64) as `write_ply` stores them, to measure what a file holds."""
    vertices = np.asanyarray(vertices, dtype=np.float64)
    return vertices.astype(np.float32).astype(np.float64) if coordinate_type(vertices) == "float" else vertices


def write_ply(
    path: str | Path,
    vertices,
    faces,
    *,
    colors=None,
    vertex_properties: Mapping[str, np.ndarray] | None = None,
    comments: Sequence[str] = (),
) -> None:
    """Write a triangle mesh with optional per-vertex colours and float fields as binary little-endian PLY.

    - ``vertices`` (n, 3) and ``faces`` (m, 3) vertex indices (m may be 0).
    - ``colors``: (n, 4) RGBA or (n, 3) RGB floats in [0, 1] (clipped), stored as uchar; alpha 255 when absent.
    - ``vertex_properties``: name -> (n,) values stored as float32, named like identifiers (``mean``, ``k1``),
      none of x y z red green blue alpha.
    - ``comments``: header comment lines (e.g. `engine.conventions.CURVATURE_CONVENTION`).
    """
    vertices = np.asanyarray(vertices, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be (n, 3), got shape {vertices.shape}")
    count = len(vertices)
    faces = np.asanyarray(faces)
    if faces.size == 0:
        faces = np.zeros((0, 3), dtype=np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces must be (m, 3) integer vertex indices, got shape {faces.shape} of {faces.dtype}")
    if len(faces) and (faces.min() < 0 or faces.max() >= count):
        raise ValueError(f"faces refer to vertices outside 0..{count - 1}")
    for comment in comments:
        if "\n" in comment or "\r" in comment:
            raise ValueError(f"a PLY comment must be one line, got {comment!r}")

    if not np.isfinite(vertices).all():
        raise ValueError("vertices hold NaN or infinite coordinates; nothing was written")
    position = coordinate_type(vertices)
    fields: list[tuple[str, str, np.ndarray]] = [(axis, position, vertices[:, i]) for i, axis in enumerate("xyz")]
    for name, values in (vertex_properties or {}).items():
        if not _PROPERTY_NAME.match(name) or name in _RESERVED:
            raise ValueError(f"vertex property name {name!r} must be an identifier other than {', '.join(_RESERVED)}")
        values = np.asanyarray(values, dtype=np.float64)
        if values.shape != (count,):
            raise ValueError(f"vertex property {name!r} must have shape ({count},), got {values.shape}")
        fields.append((name, "float", values))
    if colors is not None:
        colors = np.asanyarray(colors, dtype=np.float64)
        if colors.ndim != 2 or colors.shape != (count, colors.shape[1]) or colors.shape[1] not in (3, 4):
            raise ValueError(f"colors must be ({count}, 4) RGBA or ({count}, 3) RGB, got shape {colors.shape}")
        channels = np.round(np.clip(np.nan_to_num(colors, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
        alpha = channels[:, 3] if colors.shape[1] == 4 else np.full(count, 255, dtype=np.uint8)
        for i, channel in enumerate(("red", "green", "blue")):
            fields.append((channel, "uchar", channels[:, i]))
        fields.append(("alpha", "uchar", alpha))

    vertex_table = np.empty(count, dtype=[(name, _PLY_TYPES[kind]) for name, kind, _ in fields])
    for name, _, values in fields:
        vertex_table[name] = values
    face_table = np.empty(len(faces), dtype=[("count", "u1"), ("indices", "<i4", (3,))])
    face_table["count"] = 3
    face_table["indices"] = faces

    header = ["ply", "format binary_little_endian 1.0"]
    header += [f"comment {comment}" for comment in comments]
    header.append(f"element vertex {count}")
    header += [f"property {kind} {name}" for name, kind, _ in fields]
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    with open(path, "wb") as file:
        file.write(("\n".join(header) + "\n").encode("ascii"))
        file.write(vertex_table.tobytes())
        file.write(face_table.tobytes())


def read_ply_vertex_properties(path: str | Path) -> dict[str, np.ndarray]:
    """Every vertex property of a binary little-endian PLY (x, y, z, colours, extra fields), by name.

    Reads files whose elements before ``vertex`` (if any) have no list properties, which covers `write_ply`
    and the usual writers.
    """
    with open(path, "rb") as file:
        if file.readline().strip() != b"ply":
            raise ValueError(f"{path} is not a PLY file")
        elements: list[tuple[str, int, list[tuple[str, str]]]] = []
        line = b""
        while line != b"end_header":
            raw = file.readline()
            if not raw:
                raise ValueError(f"{path}: the PLY header has no end_header")
            line = raw.strip()
            words = line.decode("ascii", errors="replace").split()
            if not words or words[0] in ("comment", "obj_info", "end_header"):
                continue
            if words[0] == "format" and words[1:2] != ["binary_little_endian"]:
                raise ValueError(f"{path}: only binary_little_endian PLY is read here, got {' '.join(words[1:])}")
            if words[0] == "element":
                elements.append((words[1], int(words[2]), []))
            elif words[0] == "property":
                kind = "list" if words[1] == "list" else _ply_type(words[1], path)
                elements[-1][2].append((words[-1], kind))
        body = file.read()
    offset = 0
    for name, count, properties in elements:
        if any(kind == "list" for _, kind in properties):
            raise ValueError(f"{path}: element {name!r} has list properties, which this reader cannot read or skip")
        layout = np.dtype(properties)
        if len(body) < offset + count * layout.itemsize:
            raise ValueError(f"{path}: the file ends inside its {name!r} element")
        if name == "vertex":
            table = np.frombuffer(body, dtype=layout, count=count, offset=offset)
            return {property_name: table[property_name].copy() for property_name, _ in properties}
        offset += count * layout.itemsize
    raise ValueError(f"{path} has no vertex element")


def _ply_type(name: str, path) -> str:
    if name not in _PLY_TYPES:
        raise ValueError(f"{path}: unknown PLY property type {name!r}")
    return _PLY_TYPES[name]
