"""What moves a surface in an evolution: the normal speed and the vector fields of a `Flow`, in the input's units,
and the same terms in the network's unit cube and time (`UnitFlow`).

- The level-set equation df/dt + v_n |grad f| + <grad f, V> = 0 moves every level set of f, where the normal speed
  v_n (positive outward) is a constant ``normal_speed`` minus ``mean_curvature`` * kappa (kappa =
  div(grad f / |grad f|) = k1 + k2, `engine.conventions`), and V is a sum of vector fields (`FieldTerm`).
  Mean curvature flow alone: df/dt = lambda kappa |grad f|; a sphere of radius r0 shrinks as sqrt(r0^2 - 4 lambda t).
- Units are the INPUT's: lengths and centres in input coordinates, time t in the caller's unit, speeds in length per
  time, lambda in length^2 per time.
- The evolution's cube may be up to `MAX_ZOOM` times larger than the fit's so the flow has room to grow the shape
  (`room_for_motion`); sharpening (mean curvature flow backwards) is bounded by `SHARPEN_LIMIT`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from .conventions import UNIT_HALF_SIZE, Normalization

SHARPEN_LIMIT = 0.25
"""Backward mean curvature flow (t < 0) is documented to stay bounded down to t = -SHARPEN_LIMIT times the
extinction time r^2 / (4 lambda) of a sphere of the shape's half-size; `evolve` refuses to go further back."""

FieldKind = Literal["source", "twist", "rotation"]


@dataclass(frozen=True)
class FieldTerm:
    """One vector field, in input coordinates (e.g. placed by a Blender empty).

    - ``source``: radial push from ``center``, V = strength * sqrt(e) * exp(-r^2 / (2 radius^2)) * r / radius
      (r = x - center): the speed peaks at ``strength`` (length per time) at distance ``radius``; negative
      strength is a sink.
    - ``twist``: rotation about the axis through ``center`` whose rate grows with the height h along ``axis``:
      V = strength * (h / radius) * exp(-r^2 / (2 radius^2)) * (axis x r); ``strength`` is the rate in radians
      per time at height ``radius``.
    - ``rotation``: rigid rotation about the axis through ``center`` at ``strength`` radians per time
      (right-handed about ``axis``); ``radius`` is not used.
    """

    kind: FieldKind
    center: tuple[float, float, float]
    strength: float
    radius: float = 1.0
    axis: tuple[float, float, float] = (0.0, 0.0, 1.0)

    def __post_init__(self):
        if self.kind not in ("source", "twist", "rotation"):
            raise ValueError(f"unknown vector field kind {self.kind!r}; choose source, twist or rotation")
        if len(self.center) != 3 or len(self.axis) != 3:
            raise ValueError(f"a {self.kind} field needs a 3D center and axis, got {self.center} and {self.axis}")
        values = [*self.center, *self.axis, self.strength, self.radius]
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"a {self.kind} field has a NaN or infinite parameter: {self}")
        if self.radius <= 0:
            raise ValueError(f"a {self.kind} field needs a positive radius, got {self.radius}")
        if math.hypot(*self.axis) == 0:
            raise ValueError(f"a {self.kind} field needs a non-zero axis")

    def velocity(self, points: torch.Tensor) -> torch.Tensor:
        """V at input-coordinate points (n, 3)."""
        center = points.new_tensor(self.center)
        axis = points.new_tensor(self.axis)
        axis = axis / axis.norm()
        offset = points - center
        if self.kind == "rotation":
            return self.strength * torch.cross(axis.expand_as(offset), offset, dim=-1)
        falloff = torch.exp(-(offset * offset).sum(-1, keepdim=True) / (2 * self.radius**2))
        if self.kind == "source":
            return self.strength * math.sqrt(math.e) * falloff * offset / self.radius
        height = (offset * axis).sum(-1, keepdim=True)
        return self.strength * (height / self.radius) * falloff * torch.cross(axis.expand_as(offset), offset, dim=-1)

    @classmethod
    def from_dict(cls, data: dict) -> "FieldTerm":
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown vector field parameter(s) {', '.join(sorted(unknown))}")
        data = dict(data)
        for name in ("center", "axis"):
            if name in data:
                data[name] = tuple(float(v) for v in data[name])
        return cls(**data)


@dataclass(frozen=True)
class Flow:
    """What moves the surface: normal speed ``normal_speed - mean_curvature * kappa`` plus the sum of ``fields``."""

    mean_curvature: float = 0.0
    """lambda (length^2 per time): the surface moves inward at lambda * kappa (smoothing for t > 0)."""
    normal_speed: float = 0.0
    """Constant outward speed (length per time): positive dilates, negative erodes."""
    fields: tuple[FieldTerm, ...] = ()
    """Vector fields whose sum carries the surface."""

    def __post_init__(self):
        if not (math.isfinite(self.mean_curvature) and math.isfinite(self.normal_speed)):
            raise ValueError("the flow's mean_curvature and normal_speed must be finite")
        if self.mean_curvature < 0:
            raise ValueError(
                f"mean_curvature must be >= 0 (got {self.mean_curvature}); to sharpen, evolve to negative times"
            )
        if self.mean_curvature == 0 and self.normal_speed == 0 and not self.fields:
            raise ValueError("the flow moves nothing: give a mean-curvature speed, a normal speed or a vector field")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Flow":
        data = dict(data)
        data["fields"] = tuple(FieldTerm.from_dict(f) for f in data.get("fields", ()))
        return cls(**data)


MAX_ZOOM = 2.0
"""The evolution's cube is at most this many times larger than the fit's (each frame's grid spans it, so a larger
cube means coarser frames); a flow that moves the surface further leaves the cube and is clipped there."""


def room_for_motion(flow: Flow, normalization: Normalization, time_range: tuple[float, float]) -> float:
    """How many times larger than the fit's unit cube the evolution's must be (>= 1) so the moving surface stays
    inside: points of the shape's box are carried by the vector fields over the time range (both ways from t = 0),
    then pushed out by the normal speed. Mean curvature flow forwards only shrinks. Backwards (sharpening) its
    reach grows by the factor 1 + |t| / extinction time (`extinction_time`): a sphere of the shape's half-size grows
    by its square root, but sharp convex parts move out faster; a full-size bunny fit sharpened to `SHARPEN_LIMIT`
    reached 1.248 times its half-size, against 1.25 given."""
    axis = torch.linspace(-UNIT_HALF_SIZE, UNIT_HALF_SIZE, 9, dtype=torch.float64)
    unit_points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    center = unit_points.new_tensor(normalization.center)
    farthest = UNIT_HALF_SIZE
    for duration in time_range:
        points = unit_points / normalization.scale + center
        reach = UNIT_HALF_SIZE
        if flow.fields and duration != 0.0:
            step = duration / ROOM_STEPS
            for _ in range(ROOM_STEPS):  # midpoint rule; the farthest point of the whole path counts
                velocity = _field_velocity(flow.fields, points)
                points = points + step * _field_velocity(flow.fields, points + 0.5 * step * velocity)
                reach = max(reach, float(((points - center) * normalization.scale).abs().max()))
        if flow.mean_curvature and duration < 0:
            reach *= 1.0 - duration / extinction_time(normalization, flow.mean_curvature)
        farthest = max(farthest, reach + abs(flow.normal_speed * duration) * normalization.scale)
    return float(min(MAX_ZOOM, farthest / UNIT_HALF_SIZE))


ROOM_STEPS = 32
"""Midpoint steps that carry the shape's box along the vector fields in `room_for_motion`."""

MAX_TRAVEL = 10.0
"""How far, in sizes of the shape (its bounding box's largest side), one term of a flow may carry the surface over
the time range (|t| times its speed), checked before training (`check_time_range`): the evolution's cube is at most
`MAX_ZOOM` sizes wide, so farther the surface has long left it (or vanished), and the network's time terms grow
with the distance (at t = 1e30 they overflowed and the evolution trained to NaN)."""


def check_time_range(flow: Flow, normalization: Normalization, time_range: tuple[float, float]) -> None:
    """A ValueError, saying the limit and the fix, when a term of ``flow`` would carry the surface farther than
    `MAX_TRAVEL` shape sizes over ``time_range``: the normal speed |v|, mean curvature flow's speed lambda kappa on
    a sphere of the shape's half-size, the fields' largest speed over the shape's box."""
    low, high = (float(t) for t in time_range)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"the time range must be finite, got [{low}, {high}]")
    duration = max(-low, high)
    size = 2.0 * UNIT_HALF_SIZE / normalization.scale  # the shape's size, input units
    speeds = {
        "normal speed": abs(flow.normal_speed),
        "mean curvature flow": flow.mean_curvature * 2.0 / (size / 2.0),
    }
    if flow.fields:
        axis = torch.linspace(-UNIT_HALF_SIZE, UNIT_HALF_SIZE, 9, dtype=torch.float64)
        grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
        points = grid / normalization.scale + grid.new_tensor(normalization.center)
        speeds["vector fields"] = float(_field_velocity(flow.fields, points).norm(dim=-1).max())
    for term, speed in speeds.items():
        travel = speed * duration / size
        if speed and not travel <= MAX_TRAVEL:
            raise ValueError(
                f"the time range [{low:g}, {high:g}] is too long for this flow: its {term} would carry the surface "
                f"{travel:.3g} times the shape's size ({size:.3g} input units), beyond the limit of {MAX_TRAVEL:g} (the "
                f"evolution's cube is at most {MAX_ZOOM:g} sizes wide); shorten the time range or lower the speed "
                f"(|t| up to {MAX_TRAVEL * size / speed:.3g} here)"
            )


def _field_velocity(fields: Sequence[FieldTerm], points: torch.Tensor) -> torch.Tensor:
    """The sum of the vector fields at input-coordinate points (n, 3)."""
    return sum(term.velocity(points) for term in fields)


def extinction_time(normalization: Normalization, mean_curvature: float) -> float:
    """When mean curvature flow at ``mean_curvature`` removes a sphere of the shape's half-size: r^2 / (4 lambda)."""
    radius = UNIT_HALF_SIZE / normalization.scale
    return radius**2 / (4.0 * mean_curvature)


class UnitFlow:
    """The flow's terms in unit-cube coordinates u = (x - c) s and network time tau = t / T, multiplied by T.

    Lengths scale by s, so a speed by s, lambda by s^2 and a field V_u(u) = s V(x(u)).
    """

    def __init__(self, flow: Flow, normalization: Normalization, time_scale: float):
        scale = normalization.scale
        self.mean_curvature = flow.mean_curvature * scale**2 * time_scale
        self.normal_speed = flow.normal_speed * scale * time_scale
        self.fields = flow.fields
        self.center = normalization.center
        self.field_factor = scale * time_scale
        self.scale = scale

    @property
    def needs_curvature(self) -> bool:
        return self.mean_curvature != 0.0

    def field_velocity(self, unit_points: torch.Tensor) -> torch.Tensor | None:
        """T V_u at unit-cube points (n, 3); None when the flow has no vector fields."""
        if not self.fields:
            return None
        points = unit_points.detach() / self.scale + unit_points.new_tensor(self.center)
        return self.field_factor * _field_velocity(self.fields, points)
