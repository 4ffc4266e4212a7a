"""Surface evolution settings in the terms of the engine's ``evolve`` job: the time of each baked frame, and the
flow (speeds, vector fields placed by empties) moved from Blender's world space into the model's coordinates.

The model's coordinates are world space at the time of the fit; when the fitted object was moved or scaled since,
the flow is carried along with it so that the baked frames line up with the object. Lengths scale by the mean scale
s of that world-to-model map: a radius or a speed by s, the mean-curvature speed lambda (length^2 per time) by s^2;
rotation rates (radians per time) do not change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import EngineError
from .frames import frame_count

_REINSTALL = "reinstall the extension so that the add-on and the engine come from one release"

ENGINE_FIELD_KINDS = {"SOURCE": "source", "SINK": "source", "TWIST": "twist", "ROTATION": "rotation"}
"""The kinds of field empty and the engine's field for each; a sink is a source with the opposite strength."""


@dataclass(frozen=True)
class FieldEmpty:
    """A flow field as an empty places it, in world space."""

    name: str
    kind: str
    """A key of `ENGINE_FIELD_KINDS`."""
    center: tuple[float, float, float]
    axis: tuple[float, float, float]
    """The empty's +Z axis (any length but zero)."""
    strength: float
    """Source and sink: peak speed (length per time); twist and rotation: radians per time."""
    radius: float
    """Where a source's push peaks, and the reach of a twist (world length)."""


def frame_times(frame_start: int, frame_end: int, time_end: float) -> list[float]:
    """The flow time of each frame from ``frame_start`` to ``frame_end``: 0 at the start, ``time_end`` at the end,
    linear in between."""
    count = frame_count(frame_start, frame_end)
    if time_end == 0.0:
        raise EngineError("The end time is 0, so nothing would move: set a positive end time (negative sharpens)")
    return [time_end * index / (count - 1) for index in range(count)]


def flow_params(flow: str, speed: float, fields: list[FieldEmpty], world_to_model: np.ndarray) -> dict:
    """The evolve job's ``flow`` (engine.evolution.Flow.to_dict) in model coordinates.

    - ``flow`` "MCF": mean curvature flow at ``speed`` = lambda (world length^2 per time);
    - "OFFSET": constant outward normal ``speed`` (world length per time; negative erodes);
    - "FIELDS": the sum of ``fields`` (``speed`` unused).
    """
    world_to_model = np.asarray(world_to_model, dtype=np.float64)
    linear = world_to_model[:3, :3]
    scale = abs(np.linalg.det(linear)) ** (1.0 / 3.0)
    if flow == "MCF":
        return {"mean_curvature": speed * scale**2, "normal_speed": 0.0, "fields": []}
    if flow == "OFFSET":
        return {"mean_curvature": 0.0, "normal_speed": speed * scale, "fields": []}
    if flow != "FIELDS":
        raise ValueError(f"unknown flow {flow!r}; expected MCF, OFFSET or FIELDS")
    if not fields:
        raise EngineError(
            "There are no flow field empties in the scene: add one with Add Flow Field (Surface Evolution panel), "
            "or choose another flow"
        )
    model_fields = [_model_field(field, world_to_model, scale) for field in fields]
    return {"mean_curvature": 0.0, "normal_speed": 0.0, "fields": model_fields}


def _model_field(field: FieldEmpty, world_to_model: np.ndarray, scale: float) -> dict:
    axis = world_to_model[:3, :3] @ np.asarray(field.axis, dtype=np.float64)
    if not (np.linalg.norm(axis) > 1e-12 and field.radius > 0.0):
        raise EngineError(f"The field empty '{field.name}' has a zero scale or radius: give it a size")
    center = world_to_model[:3, :3] @ np.asarray(field.center, dtype=np.float64) + world_to_model[:3, 3]
    strength = field.strength
    if field.kind in ("SOURCE", "SINK"):
        strength *= scale if field.kind == "SOURCE" else -scale
    return {
        "kind": ENGINE_FIELD_KINDS[field.kind],
        "center": [float(v) for v in center],
        "strength": float(strength),
        "radius": float(field.radius * scale),
        "axis": [float(v) for v in axis / np.linalg.norm(axis)],
    }


def evolution_colors_text(surface_colors: bool, curvature_colors: bool, attribute: str) -> str:
    """What a bake's report says about its colours: of a coloured model (``surface_colors``, in the colour attribute
    ``attribute``) and, where asked for, the curvature colours, which are then the ones shown."""
    if not surface_colors:
        return ""
    if not curvature_colors:
        return " with the model's colours"
    return f" with the model's colours in '{attribute}' and the curvature colours shown"


def tracked_frames(
    outputs: dict[str, np.ndarray], frame_count: int, first_vertex_count: int, first_faces: np.ndarray
) -> np.ndarray:
    """Checked ``tracked_positions`` (k, n, 3) of an evolve job with ``track_vertices``: the first frame's n
    vertices at the first k of ``frame_count`` times (1 <= k), on the first frame's faces ``first_faces`` (m, 3),
    which ``tracked_faces`` must equal; float64, in the job's (model) coordinates."""
    for name in ("tracked_positions", "tracked_faces"):
        if name not in outputs:
            raise EngineError(f"The engine's output has no '{name}' array: {_REINSTALL}")
    positions, faces = outputs["tracked_positions"], outputs["tracked_faces"]
    if not np.array_equal(faces, first_faces):
        raise EngineError(f"The engine's tracked faces are not the first frame's: {_REINSTALL}")
    if (
        positions.ndim != 3
        or not 1 <= len(positions) <= frame_count
        or positions.shape[1] != first_vertex_count
        or positions.shape[2] != 3
        or not np.issubdtype(positions.dtype, np.floating)
    ):
        raise EngineError(
            f"The engine returned tracked positions of shape {positions.shape}, expected (1 to {frame_count}, "
            f"{first_vertex_count}, 3) floats: {_REINSTALL}"
        )
    if not np.isfinite(positions).all():
        raise EngineError("The engine returned tracked positions with NaN or infinite coordinates: the tracking failed")
    return positions.astype(np.float64)


def tracking_text(tracking: dict, frame_start: int, object_name: str) -> str:
    """What a bake's report adds about its tracked vertices (the summary's ``tracking``: frames, stop), e.g. "; frames
    1 to 12 tracked as shape keys of 'X'; tracking stopped at frame 13 (at t = 0.5: ...)"."""
    count = tracking["frames"]
    text = f"; frames {frame_start} to {frame_start + count - 1} tracked as shape keys of '{object_name}'"
    stop = tracking.get("stop")
    if stop is None:
        return text
    return text + f"; tracking stopped at frame {frame_start + stop['frame']} ({stop['message']})"
