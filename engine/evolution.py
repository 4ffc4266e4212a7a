"""Surface evolution (NISE): a time-dependent network f(x, t) that starts as a fitted SDF g and follows a `Flow`.

- The flow (`engine.surface_flows`) moves every level set of f by the level-set equation df/dt + v_n |grad f| +
  <grad f, V> = 0, in the input's units. The network itself works in unit-cube coordinates and a time scaled to
  [-1, 1] (``metadata[TIME_KEY]`` says by how much, `engine.fields`); the recipe sits under `EVOLUTION_KEY`.
- f(x, 0) = g(x) is the initial condition, held exactly: f = g + tau c with a trained correction c that starts at
  zero (`EvolutionField`), so training starts from f(., t) = g for every t.
- A flow that moves by curvature is trained on the level sets near the zero set only (`EvolveConfig.pde_band`): the
  level-set equation moves the zero set by the zero set alone, and a fit's far level sets' curvature is noise. A
  first-order flow (normal speed, velocity fields) is trained on every level set: they all follow the same law
  without derivatives of the noise, and untrained far level sets drift through zero (stray shells).
- The evolution works in a cube up to `MAX_ZOOM` times larger than the fit's when the flow needs room to grow the
  shape (`room_for_motion`); the returned model's normalization says which.
- t < 0 runs the flow backwards: for mean curvature flow that sharpens, an ill-posed direction the network keeps
  bounded only for short times (`SHARPEN_LIMIT`).
- ``Flow``, ``FieldTerm``, ``at_time``, ``extract_frames`` and ``frame_curvatures`` are re-exported here for the
  README's ``from engine.evolution import ...``; they live in `engine.surface_flows` and `engine.fields`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch
from torch import nn

from .conventions import Normalization
from .extraction import extract_mesh
from .fields import TIME_KEY, TimeSlice, time_axis_problem, towards_zero_set
from .fields import at_time, extract_frames, frame_curvatures  # noqa: F401  (re-exported, see above)
from .mesh_io import TriangleMesh
from .model import SDFModel, read_model_file, reexpressed, save_networks
from .networks import Siren, SirenConfig
from .sampling import SurfaceSampler
from .settings import SavedSettings
from .surface_flows import MAX_ZOOM, SHARPEN_LIMIT, Flow, UnitFlow, check_time_range, extinction_time, room_for_motion
from .surface_flows import FieldTerm  # noqa: F401  (re-exported, see above)
from .training import Progress, TrainingMonitor, cosine_schedule, pick_device, seeded

EVOLUTION_KEY = "evolution"
"""Metadata key of an evolution's recipe and facts: {"time_range": [t0, t1] (as asked of `evolve`), "zoom",
"fitted_half_size", "correction_is_copy", "copy_read_at_cube", "flow": {...}, "evolve_config": {...}, "train_seconds",
"device"}; files without ``copy_read_at_cube`` (before it) keep their own correction beyond the fitted cube."""


@dataclass(frozen=True)
class EvolveConfig(SavedSettings):
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
    """For flows that move by curvature, the level-set residual at a point counts with weight sech^2(f / pde_band)
    (unit cube): only the level sets near the zero set matter, and a fit's far level sets are too noisy to follow
    (their curvature would rule the loss). On a full-size sphere fit, mean curvature flow's radius error at half the
    extinction time was -0.57 % of r0 with 0.05 and -0.86 % with 0.1. First-order flows weigh every level set alike:
    with the band, an offset sphere grown by 20 % left 6 stray shells beyond the fitted cube, without it none and a
    smaller radius error at every time (bench/results/evolution_laws_cpu.md)."""
    near_surface_share: float = 0.5
    """Share of space-time points drawn near g's surface (the rest uniform in the unit cube)."""
    near_surface_sigma: float = 0.05
    """Noise scale (unit cube) around the tracked surface of the near-surface space-time points."""
    pool_size: int = 200_000
    """Points on g's surface that the near-surface space-time points start from."""
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self):
        self.require_counts("steps", "spacetime_batch", "pool_size")
        if not 0.0 <= self.averaging_share <= 1.0:
            raise ValueError(f"EvolveConfig.averaging_share must be in [0, 1], got {self.averaging_share}")
        if self.extra_width < 0 or self.learning_rate <= 0 or self.pde_band <= 0:
            raise ValueError("EvolveConfig needs extra_width >= 0, learning_rate > 0 and pde_band > 0")
        if not 0.0 <= self.near_surface_share <= 1.0:
            raise ValueError(f"EvolveConfig.near_surface_share must be in [0, 1], got {self.near_surface_share}")


def time_dependent_copy(network: Siren, extra_width: int = 0) -> Siren:
    """A SIREN f(x, t) with f(x, t) = network(x) for every t, optionally wider. Supports SIRENs (network kind
    ``siren``) only: the copy is made layer by layer.

    The time column of the first layer is zero; extra neurons get the SIREN initialization on their inputs and zero
    weights towards the old neurons and the output, so they change nothing until training moves them.
    """
    if not isinstance(network, Siren):
        raise ValueError(
            f"only a SIREN (network kind 'siren') can be copied into a time-dependent network, got a "
            f"{type(network).__name__}: a model fitted with levels (fit --levels N) evolves by mean curvature flow "
            "alone; for normal speeds and vector fields fit it with one level"
        )
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
      point c(x) of its cube and rises at unit slope; a copy's correction there is the one at c(x) (N - g at c(x)).
    """

    NETWORK_SHAPES = {"correction": (4, 1), "fitted": (3, 1)}
    """The networks of an evolution file: name -> (inputs, outputs)."""

    def __init__(
        self, correction: Siren, fitted: Siren, fitted_half_size: float, correction_is_copy: bool,
        copy_read_at_cube: bool = True,
    ):  # fmt: skip
        super().__init__()
        self.correction, self.fitted = correction, fitted
        self.fitted_half_size, self.correction_is_copy = float(fitted_half_size), bool(correction_is_copy)
        self.copy_read_at_cube = bool(copy_read_at_cube)
        for parameter in fitted.parameters():
            parameter.requires_grad_(False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        points, taus = inputs[:, :3], inputs[:, 3]
        nearest = points.clamp(-self.fitted_half_size, self.fitted_half_size)
        at_cube = self.fitted(nearest)  # g(c(x)): g itself inside the fitted cube
        start = at_cube
        outside = (points.abs() > self.fitted_half_size).any(dim=-1).nonzero().squeeze(-1)
        if len(outside):  # the distance only where it is not 0 (its derivative there is not)
            start = at_cube.index_add(0, outside, (points[outside] - nearest[outside]).norm(dim=-1))
        if not self.correction_is_copy:
            return start + taus * self.correction(inputs)
        if self.copy_read_at_cube:
            # The copy N holds g's untrained noise beyond the cube too, and N - g drifts where training barely looks
            # (stray shells there): the correction is the one at the nearest point of the cube.
            return start + taus * (self.correction(torch.cat([nearest, inputs[:, 3:]], dim=1)) - at_cube)
        return start + taus * (self.correction(inputs) - self.fitted(points))

    def networks(self) -> dict[str, Siren]:
        return {"correction": self.correction, "fitted": self.fitted}


def save_evolution(model: SDFModel, path) -> None:
    """Write an evolution (`evolve`'s result) as one file of named networks (no pickle on load)."""
    save_networks(path, model.network.networks(), model.normalization, model.metadata)


def load_evolution(path) -> SDFModel:
    """Read a file written by `save_evolution`, checked before any network is built (`engine.model.read_model_file`;
    a file of another kind is named as what it is); files of engine 0.1.0, whose time axis sat among the evolution's
    facts, have it moved to `TIME_KEY`."""
    model_file = read_model_file(path, "evolution")
    metadata = model_file.header["metadata"]
    info = metadata[EVOLUTION_KEY]
    if not isinstance(info, dict) or "fitted_half_size" not in info:
        raise model_file.refusal("its evolution facts lack fitted_half_size")
    if "correction_is_copy" not in info:
        raise ValueError(f"{path} was written by an older version of the engine; evolve (bake) it again")
    half_size, is_copy = info["fitted_half_size"], info["correction_is_copy"]
    if not isinstance(half_size, (int, float)) or isinstance(half_size, bool) or not 1.0 / MAX_ZOOM <= half_size <= 1.0:
        raise model_file.refusal(f"its fitted_half_size must be a number in [{1 / MAX_ZOOM}, 1], got {half_size!r}")
    if not isinstance(is_copy, bool):
        raise model_file.refusal(f"its correction_is_copy must be true or false, got {is_copy!r}")
    read_at_cube = info.get("copy_read_at_cube", False)
    if not isinstance(read_at_cube, bool):
        raise model_file.refusal(f"its copy_read_at_cube must be true or false, got {read_at_cube!r}")
    if TIME_KEY not in metadata and "time_scale" in info:  # engine 0.1.0 kept the time axis here, under its own key
        metadata[TIME_KEY] = {"time_scale": info.pop("time_scale"), "time_range": info.get("time_range")}
    problem = time_axis_problem(metadata)
    if problem:
        raise model_file.refusal(problem)
    networks = model_file.networks(EvolutionField.NETWORK_SHAPES)
    field_ = EvolutionField(networks["correction"], networks["fitted"], half_size, is_copy, read_at_cube).eval()
    return SDFModel(field_, model_file.normalization(), metadata)


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
    check_time_range(flow, model.normalization, (start_time, end_time))
    device = pick_device(config.device)
    rng, generator = seeded(config.seed)
    time_scale = max(-start_time, end_time)
    zoom = room_for_motion(flow, model.normalization, (start_time, end_time))
    normalization = Normalization(model.normalization.center, model.normalization.scale / zoom)
    unit_flow = UnitFlow(flow, normalization, time_scale)

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

    monitor = TrainingMonitor(
        "evolution", config.steps, on_progress, should_cancel, progress_interval_s,
        advice="shorten the time range or lower the speed (or the learning rate)",
    )
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
    monitor.check_weights(correction)

    network.eval()
    metadata = {
        **model.metadata,
        TIME_KEY: {"time_scale": time_scale, "time_range": [start_time, end_time]},
        EVOLUTION_KEY: {
            "time_range": [start_time, end_time],
            "zoom": zoom,
            "fitted_half_size": 1.0 / zoom,
            "correction_is_copy": correction_is_copy,
            "copy_read_at_cube": True,
            "flow": flow.to_dict(),
            "evolve_config": config.to_dict(),
            "train_seconds": monitor.elapsed_s,
            "device": str(device),
        },
    }
    return SDFModel(network.cpu(), normalization, metadata)


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


def evolution_loss(network: nn.Module, flow: UnitFlow, spacetime: torch.Tensor, band: float) -> torch.Tensor:
    """Mean squared level-set residual at the space-time points (x, tau), each weighted by sech^2(f / band) where
    the flow moves by curvature (see `EvolveConfig.pde_band`).

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
        residual = residual / torch.cosh(values.detach() / band).square()
    return residual.square().mean()


def _kappa_times_gradient_norm(inputs: torch.Tensor, spatial: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """kappa |grad f| = laplacian f - n^T (Hess f) n, differentiable (for training) through the Hessian rows."""
    normal = spatial / norm.clamp_min(1e-6).unsqueeze(-1)
    rows = [
        torch.autograd.grad(spatial[:, axis].sum(), inputs, create_graph=True)[0][:, :3] for axis in range(3)
    ]
    hessian = torch.stack(rows, dim=1)
    laplacian = hessian.diagonal(dim1=-2, dim2=-1).sum(-1)
    return laplacian - torch.einsum("ni,nij,nj->n", normal, hessian, normal)
