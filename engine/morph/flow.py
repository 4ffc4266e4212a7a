"""The flow morph (ifmorph): a learned warp T(x, t) carries the first shape onto the second.

- T(x, t) = x + t w(x, t), with w a small SIREN of (x, t) giving a 3-vector, so T(x, 0) = x EXACTLY: ifmorph's
  identity loss is zero by construction and is not trained. T(., t) for t in [0, 1] moves the source's points
  towards the target; T(., -t) is its inverse (trained, not exact: see the inverse-consistency term).
- The shape at time t is the source carried along the flow: f(x, t) = g_a(T(x, -t)) (`FlowMorph`). Its zero set
  at t is T(zero set of g_a, t) (as far as T(., -t) inverts T(., t)), so it keeps the source's topology at every t;
  at t = 0 it is g_a exactly. `warp_points` moves the source mesh's own vertices (same topology: shape keys).
- Both SDFs are fitted in ONE shared cube (`engine.morph.fit_pair`); every length below is in that cube's units
  unless it says "input units". g_a is trained only inside the cube, so `FlowMorph` reads it at the nearest point
  of the cube where the warp carries a point outside (no stray surfaces from its untrained extrapolation).
- Training needs no correspondences (landmarks are optional). Terms (`FlowMorphWeights`):
  - matching: g_b(T(x, 1)) = 0 for x on g_a's zero set (the source lands ON the target) and g_a(T(y, -1)) = 0 for
    y on g_b's zero set (every part of the target is reached). Both are needed: one alone lets the source shrink
    onto a part of the target. The SDF's gradient pulls each point along the normal; the smoothness terms decide
    the tangential part.
  - sides: inside goes to inside (the sign of g_b(T(x, 1)) is that of g_a(x), and back), near both shapes and in
    the whole cube: matching only places the surfaces, this keeps outside space out of the carried shape.
  - inverse consistency: T(T(x, t), -t) = x for x in the cube and near both surfaces, t in [-1, 1], and the round
    trips of the matching points themselves (T(T(y, -1), 1) = y for y on the target). Without those round trips
    T(., -1) reached thin parts of the target by folding while T(., 1) never got there: the level set looked
    right but the carried source mesh missed them.
  - smoothness: a thin-plate-like penalty on the displacement u = t w (`engine.morph.warp_field.smoothness_terms`,
    shared with the image morph), a weak membrane term |du/dx|^2 that picks the least deformation among equally good
    matches (a translation rather than a translation and a spin for a sphere), and a fold term on det dT/dx.
  - steadiness: w(x, t) = w(x, s) for times of the same sign, so every point moves at a steady pace along a nearly
    straight path and the frame at t = 0.5 is halfway (the smoothness terms alone put the motion off to the end).
  - landmarks: |T(p_i, 1) - q_i|^2 + |T(q_i, -1) - p_i|^2 for pairs given in input coordinates.
  - identity T(x, 0) = x: exact by construction, not trained.
- Surface samples are marching-cubes points of each network in the shared cube (resolution
  ``surface_resolution``) moved onto the network's zero set by Newton steps, so they are the networks' surfaces,
  not the marching cubes' chords.
- A flow cannot change topology: between shapes of different genus the carried shape keeps the source's.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch
from torch import nn

from ..conventions import Normalization
from ..extraction import EmptySurfaceError, extract_mesh
from ..fields import SpatialOnly, towards_zero_set
from ..mesh_io import TriangleMesh
from ..model import SDFModel
from ..networks import Siren, SirenConfig
from ..sampling import SurfaceSampler
from ..settings import SavedSettings
from ..training import Progress, TrainingMonitor, cosine_schedule, pick_device, seeded
from .common import MORPH_KEY, check_fitted, checked_landmarks, frozen_networks, morph_metadata, shared_normalization
from .warp_field import MIN_JACOBIAN_DETERMINANT, displacement, smoothness_terms  # noqa: F401  (re-exported)
NEAR_SURFACE_SIGMA = 0.1
"""Noise (cube units) around the surface samples used as inverse-consistency and smoothness points: the warp matters
most near the shapes, and most folds were seen within 0.1 of them."""


class FlowMorph(nn.Module):
    """f(x, t) = g_a(T(x, -t)) on points (n, 4) = (x, t) in the shared cube, with T(x, t) = x + t w(x, t).

    - ``source``: g_a, fitted in the shared cube (a 3D SDF SIREN, frozen during training).
    - ``warp``: w, a SIREN with in_features = 4 and out_features = 3.
    """

    NETWORK_SHAPES = {"source": (3, 1), "warp": (4, 3)}
    """The networks of a flow morph file: name -> (inputs, outputs)."""

    def __init__(self, source: Siren, warp: Siren):
        super().__init__()
        if source.config.in_features != 3 or source.config.out_features != 1:
            raise ValueError("the source of a flow morph must be a 3D SDF network (3 inputs, 1 output)")
        if warp.config.in_features != 4 or warp.config.out_features != 3:
            raise ValueError(
                f"the warp must take (x, t) and give a 3-vector (4 inputs, 3 outputs), got "
                f"{warp.config.in_features} inputs and {warp.config.out_features} outputs"
            )
        self.source, self.warp = source, warp

    def displacement(self, points: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """t w(x, t) for points (n, 3) and t (n,) or one float: (n, 3), exactly zero at t = 0."""
        return displacement(self.warp, points, t)

    def transform(self, points: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """T(x, t) = x + t w(x, t) for points (n, 3) and t (n,) or one float; (n, 3). T(x, 0) = x exactly."""
        return points + self.displacement(points, t)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        points, t = inputs[:, :3], inputs[:, 3]
        # g_a is trained only inside the cube: past it, its extrapolation may dip below zero (stray bubbles seen
        # where a warp that shrinks the shape carries cube-border points outside); its value at the nearest point of
        # the cube is positive there, the shape lying inside the cube's central 0.9.
        return self.source(self.transform(points, -t).clamp(-1.0, 1.0))

    def networks(self) -> dict[str, Siren]:
        return {"source": self.source, "warp": self.warp}

    @classmethod
    def from_networks(cls, networks: dict[str, Siren]) -> "FlowMorph":
        return cls(networks["source"], networks["warp"])


@dataclass(frozen=True)
class FlowMorphWeights:
    """Loss weights (means over the samples, lengths in cube units). ifmorph's are landmarks 1e4, identity 1e3,
    inverse consistency 1e4, thin-plate 1e3; identity is exact here (T(x, 0) = x by construction), so it has no
    weight, and the thin-plate weight is far lower (see ``thin_plate``)."""

    matching: float = 1e4
    """g_b(T(x, 1))^2 on the source's surface plus g_a(T(y, -1))^2 on the target's (cube units squared)."""
    sides: float = 1e4
    """Inside goes to inside: g_b(T(x, 1)) must have the sign of g_a(x), and g_a(T(y, -1)) that of g_b(y), at points
    near both shapes and in the whole cube (squared by how much it is wrong). Matching alone only places the
    surfaces; this keeps the warp from carrying outside space into the shape (stray bubbles where T(., -1) folds).
    """
    landmarks: float = 1e4
    """|T(p, 1) - q|^2 + |T(q, -1) - p|^2 per landmark pair (cube units squared)."""
    inverse: float = 1e4
    """|T(T(x, t), -t) - x|^2."""
    thin_plate: float = 1.0
    """Estimate of |second derivatives of the displacement|^2 (zero for any affine warp). 1e2 kept a sphere from
    reaching a cube's corners (Chamfer-L1 0.007 against 0.002 with 1.0, 300 steps) and an ellipsoid from a bunny's
    ears; the warp's low first-layer frequency already keeps it smooth, and no folds appeared at 1.0."""
    membrane: float = 1.0
    """|d displacement / dx|^2: a weak preference for the least deformation among equally good matches."""
    fold: float = 1e3
    """max(0, `MIN_JACOBIAN_DETERMINANT` - det dT/dx)^2: keeps T(., t) one-to-one (no folds, which would turn
    the carried shape inside out)."""
    steady: float = 1e4
    """|w(x, t) - w(x, s)|^2 for times t, s of the same sign: each point keeps its velocity, so the shape moves at a
    steady pace. Inverse consistency at the times between (easiest for a small displacement) and the smoothness
    terms (which grow with the displacement t w) reward putting the motion off to the end. Chamfer-L1 from the
    bunny at t = 0.25, 0.5, 0.75, 1 on bunny -> knot2: 0.012, 0.024, 0.034, 0.096 without this term; 0.017, 0.034,
    0.051, 0.091 with 1e4 (1e3: 0.013, 0.026, 0.038, 0.092). The last step stays the largest there: a warp cannot
    open the knot's hole, it squeezes the bunny into it at the end."""


@dataclass(frozen=True)
class FlowMorphConfig(SavedSettings):
    """How the warp of a flow morph is trained."""

    steps: int = 1000
    """Optimizer steps."""
    surface_batch: int = 2000
    """Points on EACH surface per step for the matching terms."""
    volume_batch: int = 2000
    """Space-time points per step for inverse consistency (half uniform in the cube, half near the surfaces)."""
    smoothness_batch: int = 500
    """Space-time points per step for the smoothness terms (each needs the warp's Jacobian at two points)."""
    warp: SirenConfig = field(
        default_factory=lambda: SirenConfig(
            hidden_features=128, hidden_layers=2, first_omega=15.0, hidden_omega=30.0, in_features=4, out_features=3
        )
    )
    """The warp network w(x, t): small and of low first-layer frequency, since a warp is smooth."""
    learning_rate: float = 1e-3
    """Adam learning rate at the start (cosine decay to a tenth)."""
    weights: FlowMorphWeights = field(default_factory=FlowMorphWeights)
    smoothness_step: float = 0.05
    """Finite-difference step (cube units) of the thin-plate estimate."""
    surface_resolution: int = 64
    """Marching-cubes resolution of the surfaces the matching samples start from."""
    pool_size: int = 30_000
    """Surface samples drawn once on each shape before training."""
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self):
        self.require_counts("steps", "surface_batch", "volume_batch", "smoothness_batch", "pool_size")
        if self.warp.in_features != 4 or self.warp.out_features != 3:
            raise ValueError("FlowMorphConfig.warp must have in_features=4 and out_features=3 (a 3-vector of (x, t))")
        if not (self.learning_rate > 0 and self.smoothness_step > 0 and self.surface_resolution >= 8):
            raise ValueError("FlowMorphConfig needs learning_rate > 0, smoothness_step > 0, surface_resolution >= 8")
        if any(not (value >= 0 and math.isfinite(value)) for value in dataclasses.asdict(self.weights).values()):
            raise ValueError(f"FlowMorphConfig.weights must be finite and non-negative, got {self.weights}")


def morph_flow(
    model_a: SDFModel,
    model_b: SDFModel,
    config: FlowMorphConfig | None = None,
    *,
    landmarks: tuple[np.ndarray, np.ndarray] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    progress_interval_s: float = 0.5,
) -> SDFModel:
    """A flow morph from ``model_a`` (t = 0) to ``model_b`` (t = 1); see the module's notes.

    - ``landmarks``: optional (p, q), each (k, 3) in INPUT coordinates: p_i on shape A should go to q_i on B.
    - ``on_progress`` and ``should_cancel`` behave as in `engine.fit.fit_sdf`.
    - The returned model's metadata["morph"] adds ``inverse_consistency`` (`inverse_consistency_error`),
      ``surface_gap`` (mean |g_b(T(x, 1))| over the source's surface samples and mean |g_a(T(y, -1))| over the
      target's, input units), ``landmark_error`` (mean |T(p, 1) - q|, input units; when landmarks were given) and
      ``final_terms`` (the loss terms of the last step).
    """
    config = config or FlowMorphConfig()
    for name, model in (("model_a", model_a), ("model_b", model_b)):
        check_fitted(model, name)
    normalization = shared_normalization([model_a, model_b])
    pairs = checked_landmarks(landmarks, normalization)
    device = pick_device(config.device)
    rng, generator = seeded(config.seed)

    source, target = frozen_networks(model_a, model_b, device)
    surface_a = _surface_pool(source, config, rng, device, "model_a")
    surface_b = _surface_pool(target, config, rng, device, "model_b")
    if pairs is not None:
        pairs = tuple(p.to(device) for p in pairs)
    warp = Siren(config.warp).to(device).zero_output()  # the identity: T(x, t) = x, so f(., t) = g_a at every t
    morph = FlowMorph(source, warp)
    optimizer = torch.optim.Adam(warp.parameters(), lr=config.learning_rate)
    schedule = cosine_schedule(optimizer, config.steps, 0.1)

    monitor = TrainingMonitor(
        "morph", config.steps, on_progress, should_cancel, progress_interval_s,
        advice="lower the learning rate or the loss weights, and place the landmarks on the shapes",
    )
    for step in range(1, config.steps + 1):
        monitor.before_step(step)
        loss, terms = flow_loss(morph, target, surface_a, surface_b, pairs, config, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        monitor.after_step(step, loss, terms)

    seconds = monitor.elapsed_s
    monitor.check_weights(warp)
    morph.eval()
    metadata = morph_metadata("flow", model_a, model_b, config.to_dict(), seconds, device)
    summary = metadata[MORPH_KEY]
    summary["final_terms"] = {name: term.item() for name, term in terms.items()}
    with torch.no_grad():
        gap_a = target(morph.transform(surface_a, 1.0)).abs().mean().item()
        gap_b = source(morph.transform(surface_b, -1.0)).abs().mean().item()
        summary["surface_gap"] = {
            "source_to_target": gap_a / normalization.scale,
            "target_to_source": gap_b / normalization.scale,
        }
        if pairs is not None:
            moved = morph.transform(pairs[0], 1.0)
            summary["landmark_error"] = (moved - pairs[1]).norm(dim=-1).mean().item() / normalization.scale
    model = SDFModel(morph.cpu(), normalization, metadata)
    summary["inverse_consistency"] = inverse_consistency_error(model)
    return model


def flow_loss(
    morph: FlowMorph,
    target: Siren,
    surface_a: torch.Tensor,
    surface_b: torch.Tensor,
    landmarks: tuple[torch.Tensor, torch.Tensor] | None,
    config: FlowMorphConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted loss of one step and its terms (detached), on fresh samples."""
    weights = config.weights
    device = surface_a.device
    source, transform = morph.source, morph.transform

    def draw(pool: torch.Tensor, count: int) -> torch.Tensor:
        return pool[torch.randint(len(pool), (count,), generator=generator).to(device)]

    def around_both(count: int) -> torch.Tensor:
        """Half near the two surfaces (noise `NEAR_SURFACE_SIGMA`), half uniform in the cube."""
        near = count // 2
        points = torch.cat(
            [
                draw(surface_a, near // 2),
                draw(surface_b, near - near // 2),
                (torch.rand(count - near, 3, generator=generator) * 2 - 1).to(device),
            ]
        )
        points[:near] += torch.randn(near, 3, generator=generator).to(device) * NEAR_SURFACE_SIGMA
        return points

    terms = {}
    on_a, on_b = draw(surface_a, config.surface_batch), draw(surface_b, config.surface_batch)
    moved_a, moved_b = transform(on_a, 1.0), transform(on_b, -1.0)
    terms["matching"] = weights.matching * (target(moved_a).square().mean() + source(moved_b).square().mean())
    # The round trips of the surface points themselves: T(., 1) must reach every part of the target that T(., -1)
    # brought back (else the source mesh carried forward misses, e.g., a thin part of the target).
    cycle = (transform(moved_b, 1.0) - on_b).square().sum(-1).mean()
    cycle = cycle + (transform(moved_a, -1.0) - on_a).square().sum(-1).mean()

    points = around_both(config.volume_batch)
    if weights.sides:
        with torch.no_grad():
            inside_a, inside_b = source(points) < 0, target(points) < 0
        terms["sides"] = weights.sides * (
            _wrong_side(target(transform(points, 1.0)), inside_a)
            + _wrong_side(source(transform(points, -1.0)), inside_b)
        )
    times = (torch.rand(len(points), generator=generator) * 2 - 1).to(device)
    back = transform(transform(points, times), -times)
    terms["inverse"] = weights.inverse * ((back - points).square().sum(-1).mean() + cycle)

    if weights.thin_plate or weights.membrane or weights.fold:
        points = around_both(config.smoothness_batch)
        times = (torch.rand(len(points), generator=generator) * 2 - 1).to(device)
        directions = torch.randn(len(points), 3, generator=generator).to(device)
        directions = directions / directions.norm(dim=-1, keepdim=True)
        thin_plate, membrane, fold = smoothness_terms(morph.warp, points, times, directions, config.smoothness_step)
        terms["thin_plate"] = weights.thin_plate * thin_plate
        terms["membrane"] = weights.membrane * membrane
        terms["fold"] = weights.fold * fold

    if weights.steady:
        points = around_both(config.smoothness_batch)
        sign = torch.randint(0, 2, (len(points), 1), generator=generator).to(device) * 2.0 - 1.0
        times = sign * torch.rand(len(points), 2, generator=generator).to(device)
        velocities = [morph.warp(torch.cat([points, times[:, i : i + 1]], dim=-1)) for i in range(2)]
        terms["steady"] = weights.steady * (velocities[0] - velocities[1]).square().sum(-1).mean()

    if landmarks is not None:
        p, q = landmarks
        terms["landmarks"] = weights.landmarks * (
            (transform(p, 1.0) - q).square().sum(-1).mean() + (transform(q, -1.0) - p).square().sum(-1).mean()
        )
    return sum(terms.values()), {name: term.detach() for name, term in terms.items()}


def _wrong_side(values: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Mean squared amount by which ``values`` have the wrong sign: positive where ``inside``, negative elsewhere."""
    return torch.where(inside, values.clamp_min(0.0), values.clamp_max(0.0)).square().mean()


def _surface_pool(network: Siren, config: FlowMorphConfig, rng: np.random.Generator, device, name: str) -> torch.Tensor:
    """``pool_size`` points on the network's zero level set (shared cube): marching cubes, then Newton steps."""
    unit_model = SDFModel(network, Normalization(center=(0.0, 0.0, 0.0), scale=1.0))
    try:
        vertices, faces = extract_mesh(unit_model, config.surface_resolution)
    except EmptySurfaceError as error:
        raise ValueError(f"{name} has no surface inside the shared cube: nothing to morph ({error})") from error
    points, _ = SurfaceSampler(TriangleMesh(vertices, faces)).sample(rng, config.pool_size)
    points = torch.from_numpy(points.astype(np.float32)).to(device)
    spatial = SpatialOnly(network)
    return towards_zero_set(spatial, points, points.new_zeros(len(points), 1), steps=3)


def _flow_morph(model: SDFModel) -> FlowMorph:
    if not isinstance(model.network, FlowMorph):
        raise ValueError("this model is not a flow morph (made by 'morph' with the flow method)")
    return model.network


def warp_points(model: SDFModel, points: np.ndarray, t: float, batch_size: int = 65536) -> np.ndarray:
    """Where the source's points (n, 3), input coordinates, are at time t: T(x, t), input coordinates (float64).

    Applied to the source mesh's vertices this gives its shape at t with the same topology (shape keys).
    - t in [0, 1] follows the morph; t in [-1, 0) is the inverse warp (carries the target's points back).
    """
    morph = _flow_morph(model)
    points = np.asanyarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (n, 3), got {points.shape}")
    t = float(t)
    if not -1.0 <= t <= 1.0:
        raise ValueError(f"t must be in [-1, 1] (the morph runs over [0, 1]; negative t is its inverse), got {t}")
    device = next(morph.parameters()).device
    unit = torch.from_numpy(model.normalization.to_unit(points).astype(np.float32))
    moves = [np.zeros((0, 3))]
    with torch.no_grad():
        for chunk in unit.split(batch_size):
            moves.append(morph.displacement(chunk.to(device), t).cpu().double().numpy())
    # The float64 points plus the displacement in input units: exactly the points at t = 0.
    moved = points + np.concatenate(moves) / model.normalization.scale
    if not np.isfinite(moved).all():
        raise ValueError(
            f"the warp carries {int(np.count_nonzero(~np.isfinite(moved).all(axis=1)))} of the points to NaN or "
            f"infinite coordinates at t = {t:g} (input points must be finite; else the morph is broken: morph again)"
        )
    return moved


def inverse_consistency_error(
    model: SDFModel, resolution: int = 16, times: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
) -> dict:
    """|T(T(x, t), -t) - x| on a ``resolution``^3 grid over the shared cube, in INPUT units.

    Returns {"mean", "max"} over every grid point and time, and "per_time": [{"time", "mean", "max"}, ...].
    """
    morph = _flow_morph(model)
    if resolution < 2:
        raise ValueError(f"resolution must be at least 2, got {resolution}")
    device = next(morph.parameters()).device
    axis = torch.linspace(-1.0, 1.0, resolution)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3).to(device)
    per_time, errors = [], []
    with torch.no_grad():
        for t in times:
            error = (morph.transform(morph.transform(grid, float(t)), -float(t)) - grid).norm(dim=-1).cpu().double()
            error = error / model.normalization.scale
            errors.append(error)
            per_time.append({"time": float(t), "mean": float(error.mean()), "max": float(error.max())})
    everything = torch.cat(errors)
    return {"mean": float(everything.mean()), "max": float(everything.max()), "per_time": per_time}
