"""Arrays exchanged with the worker as ``.npz`` files, and the checks every array from the engine passes before it
reaches the scene (a malformed result must fail loudly, not build a broken mesh)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .errors import EngineError

INPUTS_FILENAME = "inputs.npz"
"""Name of a job's input file in its directory (the protocol's INPUTS_FILENAME)."""
CURVATURE_FIELDS = ("mean", "gaussian", "k1", "k2")
"""Per-point curvature arrays of a curvature job's outputs; ``mean`` is H = kappa / 2."""

_REINSTALL = "reinstall the extension so that the add-on and the engine come from one release"


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Uncompressed: the files are temporary and speed matters more than size."""
    np.savez(path, **arrays)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, loaded into memory without unpickling anything."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise EngineError(
            f"The engine's output {path.name} could not be read ({error}); see the system console"
        ) from error


def mesh_arrays(outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``vertices`` (n, 3) float64 and ``faces`` (m, 3) intc from a fit or extract job. Coordinates stay
    float64 until they are moved into their object's frame (`scene_io.new_mesh` stores float32): a mesh far from the
    world origin keeps its precision around its own origin."""
    vertices, faces = _array(outputs, "vertices"), _array(outputs, "faces")
    if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.issubdtype(vertices.dtype, np.floating):
        raise EngineError(
            f"The engine returned vertices of shape {vertices.shape} ({vertices.dtype}), expected (n, 3) floats: "
            + _REINSTALL
        )
    if not np.isfinite(vertices).all():
        raise EngineError(
            "The engine returned vertices with NaN or infinite coordinates: the fit failed; try more steps"
        )
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise EngineError(
            f"The engine returned faces of shape {faces.shape} ({faces.dtype}), expected (m, 3) integers: {_REINSTALL}"
        )
    if len(faces) == 0:
        raise EngineError("The extracted surface has no faces: the fit failed; try more steps or another preset")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise EngineError(f"The engine returned faces whose indices are outside 0..{len(vertices) - 1}: {_REINSTALL}")
    return vertices.astype(np.float64), faces.astype(np.intc)


def surface_colors(outputs: dict[str, np.ndarray], count: int) -> np.ndarray | None:
    """Checked linear RGB ``colors`` (count, 3) float32 in [0, 1] of a coloured model's surface (a fit or extract
    job), or None when the job returned none (a model without colours)."""
    if "colors" not in outputs:
        return None
    return _linear_colors(outputs, "colors", count)


def source_colors(outputs: dict[str, np.ndarray], count: int) -> np.ndarray | None:
    """Checked linear RGB ``source_colors`` (count, 3) float32 of a coloured flow morph's source vertices, or None
    when the job returned none (no colours)."""
    if "source_colors" not in outputs:
        return None
    return _linear_colors(outputs, "source_colors", count)


def frame_surface_colors(outputs: dict[str, np.ndarray], frame_sizes: list[int]) -> list[np.ndarray] | None:
    """Checked linear RGB ``surface_colors_<i>`` (n_i, 3) float32 of every frame i of an evolve or morph job, for
    its n_i vertices (``frame_sizes``; a vanished frame has none), or None when the job returned none (a model
    without colours: frame 0 has none)."""
    if "surface_colors_0" not in outputs:
        return None
    return [_linear_colors(outputs, f"surface_colors_{index}", count) for index, count in enumerate(frame_sizes)]


def _linear_colors(outputs: dict[str, np.ndarray], name: str, count: int) -> np.ndarray:
    colors = _array(outputs, name)
    if colors.shape != (count, 3) or not np.issubdtype(colors.dtype, np.floating):
        raise EngineError(
            f"The engine returned surface colours {name} of shape {colors.shape}, expected ({count}, 3) floats: "
            + _REINSTALL
        )
    if len(colors) and not (np.isfinite(colors).all() and colors.min() >= 0.0 and colors.max() <= 1.0):
        raise EngineError(f"The engine returned surface colours {name} outside [0, 1]: {_REINSTALL}")
    return colors.astype(np.float32)


def curvature_arrays(outputs: dict[str, np.ndarray], count: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Checked per-point curvature fields (each (count,) float32) and sRGB ``colors`` (count, 4) float32 in [0, 1]."""
    fields = {}
    for name in CURVATURE_FIELDS:
        values = _array(outputs, name)
        if values.shape != (count,) or not np.issubdtype(values.dtype, np.floating):
            raise EngineError(
                f"The engine returned {name} of shape {values.shape}, expected ({count},) floats: {_REINSTALL}"
            )
        fields[name] = values.astype(np.float32)
    colors = _array(outputs, "colors")
    if colors.shape != (count, 4) or not np.issubdtype(colors.dtype, np.floating):
        raise EngineError(
            f"The engine returned colours of shape {colors.shape}, expected ({count}, 4) floats: {_REINSTALL}"
        )
    if not (np.isfinite(colors).all() and colors.min() >= 0.0 and colors.max() <= 1.0):
        raise EngineError(f"The engine returned colours outside [0, 1]: {_REINSTALL}")
    return fields, colors.astype(np.float32)


def frame_meshes(outputs: dict[str, np.ndarray], frame_count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Checked per-frame ``vertices_<i>`` (n, 3) float64 and ``faces_<i>`` (m, 3) intc of a job that extracts frames
    (evolve, morph); a frame where the surface has vanished has no vertices."""
    times = _array(outputs, "times")
    if times.shape != (frame_count,):
        raise EngineError(f"The engine returned {times.shape} frame times, expected {frame_count}: {_REINSTALL}")
    frames = []
    for index in range(frame_count):
        vertices, faces = _array(outputs, f"vertices_{index}"), _array(outputs, f"faces_{index}")
        if len(vertices) == 0 and len(faces) == 0:
            frames.append((np.zeros((0, 3), np.float64), np.zeros((0, 3), np.intc)))
        else:
            frames.append(mesh_arrays({"vertices": vertices, "faces": faces}))
    return frames


def evolution_frames(
    outputs: dict[str, np.ndarray], frame_count: int, with_colors: bool
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """Checked `frame_meshes` of an evolve job and, ``with_colors``, each frame's sRGB ``colors`` (n, 4) float32."""
    frames = []
    for index, (vertices, faces) in enumerate(frame_meshes(outputs, frame_count)):
        colors = None
        if with_colors:
            colors = _array(outputs, f"colors_{index}")
            if colors.shape != (len(vertices), 4) or not np.issubdtype(colors.dtype, np.floating):
                raise EngineError(
                    f"The engine returned colours of shape {colors.shape} for frame {index}, expected "
                    f"({len(vertices)}, 4) floats: {_REINSTALL}"
                )
            if len(colors) and not (np.isfinite(colors).all() and colors.min() >= 0.0 and colors.max() <= 1.0):
                raise EngineError(f"The engine returned colours outside [0, 1]: {_REINSTALL}")
            colors = colors.astype(np.float32)
        frames.append((vertices, faces, colors))
    if not any(len(vertices) for vertices, _, _ in frames):
        raise EngineError("The surface vanished in every frame: lower the speed or the end time")
    return frames


def source_positions(outputs: dict[str, np.ndarray], frame_count: int, vertex_count: int) -> np.ndarray:
    """Checked ``source_positions`` (frames, n, 3) float32 of a flow morph: the source mesh's own vertices at each
    frame."""
    positions = _array(outputs, "source_positions")
    expected = (frame_count, vertex_count, 3)
    if positions.shape != expected or not np.issubdtype(positions.dtype, np.floating):
        raise EngineError(
            f"The engine returned source positions of shape {positions.shape}, expected {expected} floats: "
            + _REINSTALL
        )
    if not np.isfinite(positions).all():
        raise EngineError("The engine returned source positions with NaN or infinite coordinates: the morph failed")
    return positions.astype(np.float32)


def _array(outputs: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in outputs:
        raise EngineError(
            f"The engine's output has no '{name}' array (it has {', '.join(outputs) or 'none'}): {_REINSTALL}"
        )
    return outputs[name]
