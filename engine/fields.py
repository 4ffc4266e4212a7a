"""Time-dependent fields f(x, t) (evolutions and morphs): their time axis, slices at one time, frames and the
frames' curvature colours, and damped Newton steps towards a moving zero set.

- A time-dependent model is an `SDFModel` whose network takes points (n, 4) = (x, tau) in unit-cube coordinates and
  a network time tau = t / time_scale; ``metadata[TIME_KEY]`` holds ``{"time_scale": T, "time_range": [t0, t1]}``
  (t in the caller's unit). Facts of the method that made it sit under their own keys ("evolution", "morph").
- Everything a 3D tool accepts comes from `at_time`: extraction, curvature and ``sdf`` at one time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .colormaps import colorize, map_kind
from .extraction import EmptySurfaceError, extract_mesh
from .geometry import model_curvatures
from .model import SDFModel
from .protocol import CURVATURE_FIELDS
from .training import Cancelled

TIME_KEY = "time"
"""Metadata key of every time-dependent model: {"time_scale": T, "time_range": [t0, t1]}."""

FORMAT_1_TIME_KEY = "evolution"
"""Where files of engine 0.1.0 (model format 1) kept ``time_scale`` and ``time_range``, for evolutions and morphs
alike; their loaders move them to `TIME_KEY`."""


def time_axis_problem(metadata: dict) -> str | None:
    """What is wrong with a time-dependent model's time axis (``metadata[TIME_KEY]``, e.g. as read from a file), or
    None: it must be {"time_scale": T, "time_range": [t0, t1]} with T positive and finite and t0 <= 0 <= t1
    finite."""
    info = metadata.get(TIME_KEY)
    if not isinstance(info, dict) or set(info) != {"time_scale", "time_range"}:
        return "its time axis must hold a time_scale and a time_range and nothing else"
    scale, time_range = info["time_scale"], info["time_range"]
    numbers = [scale, *time_range] if isinstance(time_range, list) and len(time_range) == 2 else []
    if not numbers or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
        return f"its time axis must be a finite time_scale and a range of 2 finite times, got {info}"
    if not (scale > 0 and time_range[0] <= 0.0 <= time_range[1]):
        return f"its time axis needs a positive time_scale and a range that contains t = 0, got {info}"
    return None


class TimeSlice(nn.Module):
    """x -> f(x, tau) for a fixed network time tau: a 3D field every 3D tool (extraction, curvature) accepts."""

    def __init__(self, network: nn.Module, network_time: float):
        super().__init__()
        self.network = network
        self.network_time = float(network_time)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        times = points.new_full((len(points), 1), self.network_time)
        return self.network(torch.cat([points, times], dim=-1))


class SpatialOnly(nn.Module):
    """A 3D network taking (x, t) and ignoring t, for the space-time helpers here (`towards_zero_set`)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.network(inputs[:, :3])


def at_time(model: SDFModel, t: float) -> SDFModel:
    """The 3D SDF model of a time-dependent model (an evolution or a morph) at time t (in its time unit)."""
    info = model.metadata.get(TIME_KEY)
    if info is None:
        raise ValueError("this model is not time-dependent: it was made by neither 'evolve' nor 'morph'")
    return SDFModel(TimeSlice(model.network, t / info["time_scale"]), model.normalization, model.metadata)


def even_times(count: int) -> list[float]:
    """``count`` times evenly from 0 to 1, both ends included (a morph's frames)."""
    if count < 2:
        raise ValueError(f"even times from 0 to 1 need at least 2 frames (the two ends), got {count}")
    return [i / (count - 1) for i in range(count)]


MAX_TRACKING_STEP = 0.2
"""Longest Newton step (unit cube) of `towards_zero_set`: where |grad f| is small a full step would throw a point far
away."""


def towards_zero_set(network: nn.Module, points: torch.Tensor, taus: torch.Tensor, steps: int) -> torch.Tensor:
    """Points (n, 3) moved by ``steps`` damped Newton steps towards the zero level set of network(x, tau) at times
    ``taus`` (n, 1) (each step at most `MAX_TRACKING_STEP`); used by the evolution, the morphs' samplers alike."""
    for _ in range(steps):
        with torch.enable_grad():
            inputs = torch.cat([points, taus], dim=-1).requires_grad_(True)
            values = network(inputs)
            (gradient,) = torch.autograd.grad(values.sum(), inputs)
        spatial = gradient[:, :3]
        step = values.detach().unsqueeze(-1) * spatial / (spatial * spatial).sum(-1, keepdim=True).clamp_min(1e-6)
        length = step.norm(dim=-1, keepdim=True)
        points = points - step * (MAX_TRACKING_STEP / length.clamp_min(MAX_TRACKING_STEP))
    return points.detach()


@dataclass(frozen=True)
class Frame:
    """The moving surface at one time: mesh in input coordinates, faces outward."""

    time: float
    vertices: np.ndarray
    faces: np.ndarray


def extract_frames(
    model: SDFModel,
    times: Sequence[float],
    resolution: int = 128,
    *,
    on_frame: Callable[[int, int, Frame], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> list[Frame]:
    """Marching-cubes meshes of a time-dependent model at ``times``; ``on_frame(index, total, frame)`` after each.

    A time where the surface has vanished (e.g. after extinction under mean curvature flow) gives an empty mesh.
    """
    info = model.metadata.get(TIME_KEY)
    if info is None:
        raise ValueError("this model is not time-dependent: it was made by neither 'evolve' nor 'morph'")
    low, high = info["time_range"]
    outside = [t for t in times if not low - 1e-9 * max(abs(low), abs(high)) <= t <= high + 1e-9 * max(abs(low), abs(high))]
    if outside:
        raise ValueError(f"times {outside} are outside the trained range [{low}, {high}]; evolve over a wider range")
    frames = []
    for index, t in enumerate(times):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"frame extraction cancelled after {index} of {len(times)} frames")
        try:
            vertices, faces = extract_mesh(at_time(model, t), resolution)
        except EmptySurfaceError:
            vertices, faces = np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
        frame = Frame(float(t), vertices, faces)
        frames.append(frame)
        if on_frame is not None:
            on_frame(index, len(times), frame)
    return frames


@dataclass(frozen=True)
class FrameCurvature:
    """Curvatures at one frame's vertices (input units, H = kappa / 2, see `engine.conventions`) and their colours."""

    fields: dict[str, np.ndarray]
    """The `CURVATURE_FIELDS` (``mean``, ``gaussian``, ``k1``, ``k2``): (n,) each."""
    colors: np.ndarray
    """(n, 4) float32 sRGB."""


def frame_curvatures(
    model: SDFModel,
    frames: Sequence[Frame],
    quantity: str,
    colormap: str = "auto",
    *,
    on_frame: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> tuple[list[FrameCurvature], tuple[float, float]]:
    """Curvatures of every frame, coloured by ``quantity`` (a name of `engine.colormaps.QUANTITIES`, with
    ``colormap`` of `engine.colormaps.COLORMAPS`) on ONE range for all frames, so a colour means the same value at
    every time of the animation. Returns the frames' curvatures and that range; ``on_frame(done, total)`` after
    each frame."""
    kind = map_kind(quantity, colormap)
    fields, shown = [], []
    for index, frame in enumerate(frames):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"curvature colours cancelled after {index} of {len(frames)} frames")
        if len(frame.vertices):
            values = model_curvatures(at_time(model, frame.time), frame.vertices)
            fields.append({name: getattr(values, name) for name in CURVATURE_FIELDS})
            shown.append(getattr(values, quantity))
        else:
            fields.append({name: np.zeros(0) for name in CURVATURE_FIELDS})
            shown.append(np.zeros(0))
        if on_frame is not None:
            on_frame(index + 1, len(frames))
    colors, value_range = colorize(np.concatenate(shown), kind)
    ends = np.cumsum([len(values) for values in shown])[:-1]
    return [FrameCurvature(f, c) for f, c in zip(fields, np.split(colors, ends))], value_range
