"""Surface evolution (NISE): a time-dependent network f(x, t) that starts as a fitted SDF g and follows a flow.

- Every level set of f moves by the level-set equation df/dt + v_n |grad f| + <grad f, V> = 0, where the normal
  speed v_n (positive outward) is a constant ``normal_speed`` minus ``mean_curvature`` * kappa (kappa =
  div(grad f / |grad f|) = k1 + k2, `engine.conventions`), and V is a sum of vector fields (`FieldTerm`).
  Mean curvature flow alone: df/dt = lambda kappa |grad f|; a sphere of radius r0 shrinks as sqrt(r0^2 - 4 lambda t).
- Units are the INPUT's: lengths and centres in input coordinates, time t in the caller's unit, speeds in length
  per time, lambda in length^2 per time. The network itself works in unit-cube coordinates and a time scaled to
  [-1, 1] (`EVOLUTION_TIME_KEY` in the model's metadata says by how much).
- f(x, 0) = g(x) is the initial condition, held exactly: f = g + tau c with a trained correction c that starts at
  zero (`EvolutionField`), so training starts from f(., t) = g for every t.
- Only the level sets near the zero set are trained (`EvolveConfig.pde_band`): the level-set equation moves the zero
  set by the zero set alone, and a fit's far level sets are noise.
- The evolution works in a cube up to `MAX_ZOOM` times larger than the fit's when the flow needs room to grow the
  shape (`room_for_motion`); the returned model's normalization says which.
- t < 0 runs the flow backwards: for mean curvature flow that sharpens, an ill-posed direction the network keeps
  bounded only for short times (`SHARPEN_LIMIT`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from .conventions import UNIT_HALF_SIZE, Normalization
from .extraction import EmptySurfaceError, extract_mesh
from .fit import Cancelled, Progress, TrainingMonitor, cosine_schedule, pick_device
from .mesh_io import TriangleMesh
from .model import SDFModel, Siren, SirenConfig, load_networks, reexpressed, save_networks
from .sampling import SurfaceSampler

EVOLUTION_TIME_KEY = "evolution"
"""Metadata key of a time-dependent model: {"time_scale": T, "time_range": [t0, t1], "flow": {...}}."""

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


@dataclass(frozen=True)
class EvolveConfig:
    """How the time-dependent network is trained."""

    steps: int = 800
    """Optimizer steps."""
    spacetime_batch: int = 2000
    """Space-time points per step where the level-set equation is enforced (mean curvature flow needs their
    Hessians: 2000 points cost ~0.4 s of one CPU core for a 3x256 network, 4000 three times that)."""
    learning_rate: float = 5e-4
    """Adam learning rate at the start (cosine decay to a tenth)."""
    averaging_share: float = 0.125
    """The correction's weights are kept as an exponential moving average whose time constant is this share of the
    steps (100 of 800: decay 0.99; so the first weights weigh e^-8 in it whatever the steps), 0 keeps the last ones.
    The residual is noisy (it holds the fit's own curvature noise); on a full-size sphere fit the average brought
    mean curvature flow's radius error at half the extinction time from -1.25 % to -0.86 % of r0."""
    curvature_correction: SirenConfig = SirenConfig(hidden_features=128, hidden_layers=2, first_omega=8.0, in_features=4)
    """The correction network of flows that move by curvature (see `EvolutionField`)."""
    extra_width: int = 0
    """Neurons added to every hidden layer of the copy of g that corrects the other flows (zero-initialized outgoing
    weights keep f = g)."""
    pde_band: float = 0.05
    """The level-set residual at a point counts with weight sech^2(f / pde_band) (unit cube): only the level sets near
    the zero set matter, and a fit's far level sets are too noisy to follow (their curvature would rule the loss).
    On a full-size sphere fit, mean curvature flow's radius error at half the extinction time was -0.57 % of r0 with
    0.05 and -0.86 % with 0.1."""
    near_surface_share: float = 0.5
    """Share of space-time points drawn near g's surface (the rest uniform in the unit cube)."""
    near_surface_sigma: float = 0.05
    """Noise scale (unit cube) around the tracked surface of the near-surface space-time points."""
    pool_size: int = 200_000
    """Points on g's surface that the near-surface space-time points start from."""
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self):
        for name in ("steps", "spacetime_batch", "pool_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"EvolveConfig.{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.averaging_share <= 1.0:
            raise ValueError(f"EvolveConfig.averaging_share must be in [0, 1], got {self.averaging_share}")
        if self.extra_width < 0 or self.learning_rate <= 0 or self.pde_band <= 0:
            raise ValueError("EvolveConfig needs extra_width >= 0, learning_rate > 0 and pde_band > 0")
        if not 0.0 <= self.near_surface_share <= 1.0:
            raise ValueError(f"EvolveConfig.near_surface_share must be in [0, 1], got {self.near_surface_share}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def time_dependent_copy(network: Siren, extra_width: int = 0) -> Siren:
    """A SIREN f(x, t) with f(x, t) = network(x) for every t, optionally wider.

    The time column of the first layer is zero; extra neurons get the SIREN initialization on their inputs and zero
    weights towards the old neurons and the output, so they change nothing until training moves them.
    """
    config = network.config
    if config.in_features != 3:
        raise ValueError(f"the network to copy must take 3D points, it takes {config.in_features} inputs")
    width = config.hidden_features
    copy_ = Siren(dataclasses.replace(config, in_features=4, hidden_features=width + extra_width))
    copy_.to(next(network.parameters()).device)
    with torch.no_grad():
        for index, (old, new) in enumerate(zip(network.layers, copy_.layers)):
            columns = 3 if index == 0 else width
            new.linear.weight[:width, :columns] = old.linear.weight
            new.linear.weight[:width, columns:] = 0.0
            new.linear.bias[:width] = old.linear.bias
        copy_.output.weight[:, :width] = network.output.weight
        copy_.output.weight[:, width:] = 0.0
        copy_.output.bias.copy_(network.output.bias)
    return copy_


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


def _field_velocity(fields: Sequence[FieldTerm], points: torch.Tensor) -> torch.Tensor:
    """The sum of the vector fields at input-coordinate points (n, 3)."""
    return sum(term.velocity(points) for term in fields)


class TimeSlice(nn.Module):
    """x -> f(x, tau) for a fixed network time tau: a 3D field every 3D tool (extraction, curvature) accepts."""

    def __init__(self, network: nn.Module, network_time: float):
        super().__init__()
        self.network = network
        self.network_time = float(network_time)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        times = points.new_full((len(points), 1), self.network_time)
        return self.network(torch.cat([points, times], dim=-1))


class EvolutionField(nn.Module):
    """f(x, tau) = g_ext(x) + tau c(x, tau): the fitted SDF g plus tau times a trained correction c.

    - f(., 0) = g holds exactly, by construction, so no loss can trade the start away. (With the initial condition
      as a loss term, mean curvature flow on a full-size fit gave up the whole shape for a lower residual on the
      fit's noisy far level sets.)
    - For flows that move by curvature, c is a fresh, small, low-frequency network with a zero output layer: the
      change such a flow makes is smooth, and the residual's Hessians train stably only through a well-conditioned
      network (through a copy of a 3x256 fit at omega 30 they diverged at rates that let it learn the flow).
    - For the other flows c = N - g, where N starts as a copy of g (`time_dependent_copy`): vector fields and
      offsets carry all of g's detail along, which a copy of g holds (a rigid motion is a change of its first layer).
    - g_ext is g inside the fitted cube. Outside it (when `room_for_motion` grew the evolution's cube) g holds
      untrained noise that could hold stray surfaces, so g_ext(x) = g(c(x)) + |x - c(x)| reads the fit at the nearest
      point c(x) of its cube and rises at unit slope.
    """

    def __init__(self, correction: Siren, fitted: Siren, fitted_half_size: float, correction_is_copy: bool):
        super().__init__()
        self.correction, self.fitted = correction, fitted
        self.fitted_half_size, self.correction_is_copy = float(fitted_half_size), bool(correction_is_copy)
        for parameter in fitted.parameters():
            parameter.requires_grad_(False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        points, taus = inputs[:, :3], inputs[:, 3]
        fitted = self.fitted(points)
        correction = self.correction(inputs)
        if self.correction_is_copy:
            correction = correction - fitted
        start = fitted
        outside = (points.abs() > self.fitted_half_size).any(dim=-1).nonzero().squeeze(-1)
        if len(outside):
            far = points[outside]
            nearest = far.clamp(-self.fitted_half_size, self.fitted_half_size)
            start = fitted.index_add(0, outside, self.fitted(nearest) + (far - nearest).norm(dim=-1) - fitted[outside])
        return start + taus * correction

    def networks(self) -> dict[str, Siren]:
        return {"correction": self.correction, "fitted": self.fitted}


def save_evolution(model: SDFModel, path) -> None:
    """Write an evolution (`evolve`'s result) as one file of named networks (no pickle on load)."""
    save_networks(path, model.network.networks(), model.normalization, model.metadata)


def load_evolution(path) -> SDFModel:
    """Read a file written by `save_evolution`."""
    networks, normalization, metadata = load_networks(path)
    info = metadata.get(EVOLUTION_TIME_KEY)
    if info is None or "fitted_half_size" not in info:
        raise ValueError(f"{path} is not an evolution file; write one with 'python -m engine evolve'")
    if "correction_is_copy" not in info:
        raise ValueError(f"{path} was written by an older version of the engine; evolve (bake) it again")
    field_ = EvolutionField(
        networks["correction"], networks["fitted"], info["fitted_half_size"], info["correction_is_copy"]
    ).eval()
    return SDFModel(field_, normalization, metadata)


def at_time(model: SDFModel, t: float) -> SDFModel:
    """The 3D SDF model of a time-dependent model (an evolution or a morph) at time t (in its time unit)."""
    info = model.metadata.get(EVOLUTION_TIME_KEY)
    if info is None:
        raise ValueError("this model is not time-dependent: it was made by neither 'evolve' nor 'morph'")
    return SDFModel(TimeSlice(model.network, t / info["time_scale"]), model.normalization, model.metadata)


def extinction_time(normalization: Normalization, mean_curvature: float) -> float:
    """When mean curvature flow at ``mean_curvature`` removes a sphere of the shape's half-size: r^2 / (4 lambda)."""
    radius = UNIT_HALF_SIZE / normalization.scale
    return radius**2 / (4.0 * mean_curvature)


def evolve(
    model: SDFModel,
    flow: Flow,
    time_range: tuple[float, float],
    config: EvolveConfig | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    progress_interval_s: float = 0.5,
) -> SDFModel:
    """Train f(x, t) for t in ``time_range`` (which must contain 0) starting from the fitted SDF ``model``.

    Returns a time-dependent model (same normalization; `at_time` gives the shape at any t in the range).
    ``on_progress`` and ``should_cancel`` behave as in `engine.fit.fit_sdf`.
    """
    config = config or EvolveConfig()
    start_time, end_time = (float(t) for t in time_range)
    if not (start_time <= 0.0 <= end_time) or start_time == end_time:
        raise ValueError(f"the time range must contain t = 0 and have some length, got [{start_time}, {end_time}]")
    if model.network.config.in_features != 3:
        raise ValueError("evolve needs a fitted 3D SDF model, not a time-dependent one")
    if flow.mean_curvature > 0 and start_time < 0:
        limit = SHARPEN_LIMIT * extinction_time(model.normalization, flow.mean_curvature)
        if -start_time > limit * (1 + 1e-9):
            raise ValueError(
                f"sharpening (mean curvature flow backwards) is only stable down to t = -{limit:.4g} for this shape "
                f"and speed ({SHARPEN_LIMIT} of the extinction time); got t = {start_time:.4g}"
            )
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    time_scale = max(-start_time, end_time)
    zoom = room_for_motion(flow, model.normalization, (start_time, end_time))
    normalization = Normalization(model.normalization.center, model.normalization.scale / zoom)
    unit_flow = _UnitFlow(flow, normalization, time_scale)

    fitted = reexpressed(model, normalization).to(device).eval()
    correction_is_copy = flow.mean_curvature == 0
    if correction_is_copy:
        correction = time_dependent_copy(fitted, config.extra_width)
    else:
        correction = Siren(dataclasses.replace(config.curvature_correction, in_features=4)).to(device).zero_output()
    network = EvolutionField(correction, fitted, 1.0 / zoom, correction_is_copy).train()
    surface = _SurfaceTracker(network, config, rng, device)
    optimizer = torch.optim.Adam(correction.parameters(), lr=config.learning_rate)
    schedule = cosine_schedule(optimizer, config.steps, 0.1)
    tau_range = (start_time / time_scale, end_time / time_scale)
    averaged = None
    if config.averaging_share:
        decay = 1.0 - 1.0 / max(1.0, config.averaging_share * config.steps)
        averaged = torch.optim.swa_utils.AveragedModel(
            correction, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay)
        )

    monitor = TrainingMonitor("evolution", config.steps, on_progress, should_cancel, progress_interval_s)
    for step in range(1, config.steps + 1):
        monitor.before_step(step)
        spacetime = surface.spacetime_batch(generator, config.spacetime_batch, tau_range)
        loss = evolution_loss(network, unit_flow, spacetime, config.pde_band)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if averaged is not None:
            averaged.update_parameters(correction)
        monitor.after_step(step, loss, {"pde": loss.detach()})
    if averaged is not None:
        correction.load_state_dict(averaged.module.state_dict())

    network.eval()
    metadata = {
        **model.metadata,
        EVOLUTION_TIME_KEY: {
            "time_scale": time_scale,
            "time_range": [start_time, end_time],
            "zoom": zoom,
            "fitted_half_size": 1.0 / zoom,
            "correction_is_copy": correction_is_copy,
            "flow": flow.to_dict(),
            "evolve_config": config.to_dict(),
            "train_seconds": monitor.elapsed_s,
            "device": str(device),
        },
    }
    return SDFModel(network.cpu(), normalization, metadata)


class _UnitFlow:
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
        if not self.fields:
            return None
        points = unit_points.detach() / self.scale + unit_points.new_tensor(self.center)
        return self.field_factor * _field_velocity(self.fields, points)


class _SurfaceTracker:
    """Space-time samples: a share near the moving surface, the rest uniform in the unit cube.

    Near-surface samples start on g's marching-cubes surface (resolution 128) and take `TRACKING_STEPS` Newton steps
    towards the zero level set of f(., tau) as the network has it now, so they follow the surface wherever the flow
    has carried it; Gaussian noise then spreads them.
    """

    def __init__(self, network: EvolutionField, config: EvolveConfig, rng: np.random.Generator, device: torch.device):
        self.network, self.config, self.device = network, config, device
        start = SDFModel(TimeSlice(network, 0.0), Normalization(center=(0.0, 0.0, 0.0), scale=1.0))
        vertices, faces = extract_mesh(start, 128)
        points, _ = SurfaceSampler(TriangleMesh(vertices, faces)).sample(rng, config.pool_size)
        self.points = torch.from_numpy(points.astype(np.float32)).to(device)

    def spacetime_batch(self, generator: torch.Generator, count: int, tau_range: tuple[float, float]) -> torch.Tensor:
        near_count = int(round(count * self.config.near_surface_share))
        low, high = tau_range
        taus = (low + (high - low) * torch.rand(count, 1, generator=generator)).to(self.device)
        index = torch.randint(len(self.points), (near_count,), generator=generator).to(self.device)
        near = towards_zero_set(self.network, self.points[index], taus[:near_count], TRACKING_STEPS)
        noise = torch.randn(near_count, 3, generator=generator).to(self.device) * self.config.near_surface_sigma
        uniform = (torch.rand(count - near_count, 3, generator=generator) * 2 - 1).to(self.device)
        points = torch.cat([near + noise, uniform]).clamp(-1.0, 1.0)
        return torch.cat([points, taus], dim=-1)


TRACKING_STEPS = 2
"""Newton steps that carry near-surface space-time samples from g's surface to the surface of f(., tau)."""
MAX_TRACKING_STEP = 0.2
"""Longest Newton step (unit cube): where |grad f| is small a full step would throw a point far away."""


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


def evolution_loss(network: nn.Module, flow: _UnitFlow, spacetime: torch.Tensor, band: float) -> torch.Tensor:
    """Mean squared level-set residual at the space-time points (x, tau), each weighted by sech^2(f / band).

    Residual (times the time scale T): df/dtau + T (<grad f, V> + v |grad f| - lambda kappa |grad f|), with
    kappa |grad f| = laplacian f - n^T Hess f n. The initial condition needs no term: `EvolutionField` holds it.
    """
    spacetime = spacetime.detach().requires_grad_(True)
    values = network(spacetime)
    (gradient,) = torch.autograd.grad(values.sum(), spacetime, create_graph=True)
    spatial, time_derivative = gradient[:, :3], gradient[:, 3]
    norm = spatial.norm(dim=-1)
    residual = time_derivative
    if flow.normal_speed:
        residual = residual + flow.normal_speed * norm
    velocity = flow.field_velocity(spacetime[:, :3])
    if velocity is not None:
        residual = residual + (spatial * velocity).sum(-1)
    if flow.needs_curvature:
        residual = residual - flow.mean_curvature * _kappa_times_gradient_norm(spacetime, spatial, norm)
    return (residual / torch.cosh(values.detach() / band).square()).square().mean()


def _kappa_times_gradient_norm(inputs: torch.Tensor, spatial: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """kappa |grad f| = laplacian f - n^T (Hess f) n, differentiable (for training) through the Hessian rows."""
    normal = spatial / norm.clamp_min(1e-6).unsqueeze(-1)
    rows = [
        torch.autograd.grad(spatial[:, axis].sum(), inputs, create_graph=True)[0][:, :3] for axis in range(3)
    ]
    hessian = torch.stack(rows, dim=1)
    laplacian = hessian.diagonal(dim1=-2, dim2=-1).sum(-1)
    return laplacian - torch.einsum("ni,nij,nj->n", normal, hessian, normal)


@dataclass(frozen=True)
class Frame:
    """The evolving surface at one time: mesh in input coordinates, faces outward."""

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
    info = model.metadata.get(EVOLUTION_TIME_KEY)
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
    """``mean``, ``gaussian``, ``k1``, ``k2``: (n,) each."""
    colors: np.ndarray
    """(n, 4) float32 sRGB."""


def frame_curvatures(model: SDFModel, frames: Sequence[Frame], quantity: str) -> tuple[list[FrameCurvature], tuple[float, float]]:
    """Curvatures of every frame, coloured by ``quantity`` on ONE range for all frames, so a colour means the same
    value at every time of the animation. Returns the frames' curvatures and that range."""
    from .colormaps import QUANTITIES, colorize
    from .geometry import model_curvatures

    if quantity not in QUANTITIES:
        raise ValueError(f"unknown curvature {quantity!r}; choose one of {', '.join(QUANTITIES)}")
    fields = []
    for frame in frames:
        if len(frame.vertices):
            values = model_curvatures(at_time(model, frame.time), frame.vertices)
            fields.append({name: getattr(values, name) for name in CURVATURE_FIELDS})
        else:
            fields.append({name: np.zeros(0) for name in CURVATURE_FIELDS})
    colors, value_range = colorize(np.concatenate([f[quantity] for f in fields]), QUANTITIES[quantity])
    ends = np.cumsum([len(f[quantity]) for f in fields])[:-1]
    return [FrameCurvature(f, c) for f, c in zip(fields, np.split(colors, ends))], value_range


CURVATURE_FIELDS = ("mean", "gaussian", "k1", "k2")
"""Per-vertex curvature fields of a frame, in input units; ``mean`` is H = kappa / 2."""
