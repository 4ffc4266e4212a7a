"""Preview renders straight from the network: sphere tracing, coarse levels first (DESIGN 7.2, M-plicits).

- Rays come from a `engine.render_camera.Camera` in the model's input coordinates and are clipped to the fitted cube
  [-1, 1]^3 of its normalization (a SIREN is only reliable where it was trained); tracing runs in unit-cube
  coordinates from each ray's entry point (float32 keeps its precision there), depths come back in input units.
- Levels (`engine.render_levels.LevelStack`, coarse to fine): a ray at a coarse level k steps by F_k - delta_k (the
  offset surface {F_k = delta_k} encloses the finest surface, so the step cannot cross it) and moves to the next
  level once that bound is below the pixel footprint; at the finest level it steps by F_K. Rays at a finer level
  step by the largest bound they computed and fall back to level j once F_j - delta_j >= ``band_exit`` * delta_j
  (M-plicits' 1.4 delta_0 rule), so rays that only graze a band go back to the cheap network. Single-scale is the
  same loop on the finest level alone.
- Hits: the footprint eps(t) = t * 2 tan(fov / 2) / w (orthographic: ortho_scale / w) is added to every step at the
  finest level (``step_margin`` * eps), so rays neither crawl to the surface nor graze it for long; a hit is where
  F_K changes sign, refined on its bracket by regula falsi to within ``refine_tolerance`` * eps along the ray
  (``refine_steps`` evaluations at most) and finished by one Newton step along the ray with the gradient the normals
  need anyway, so silhouettes are where the surface is (``hit_threshold`` > 0 also takes the classic hit
  F_K < threshold * eps, unrefined: cheaper, silhouettes grown).
- Active-ray compaction: every iteration works on the rays still marching only.
- Normals: the finest level's gradient by the explicit forward-mode pass (`engine.networks.sine_jacobian`) at the
  refined hit points; world (input) space, unit length. Optional curvature colours (`engine.geometry.curvatures`,
  mean curvature H = kappa / 2 in input units, `engine.colormaps`).
- Safety: at most ``max_steps`` iterations per ray (rays that run out count as misses and are reported); a NaN or
  infinite network value stops the render with a ValueError.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .conventions import Normalization
from .render_camera import Camera, camera_rays, clip_to_cube
from .render_hits import BATCH_SIZE, Evaluations, evaluate, refine
from .render_levels import LevelStack, level_stack, stage_parameters_device
from .render_output import RENDER_FILES, shade, write_passes

__all__ = ["RENDER_FILES", "Render", "RenderSettings", "render", "render_model", "write_render"]


@dataclass(frozen=True)
class RenderSettings:
    """How a render traces and shades."""

    multiscale: bool = True
    """Trace coarse levels first (a nested model's levels); False traces the finest level alone."""
    max_steps: int = 256
    """Iterations per ray at most (all levels); rays that run out count as misses and are reported."""
    step_margin: float = 0.5
    """Added to every step at the finest level, as a fraction of the pixel footprint eps(t): a ray reaches the
    surface's crossing in a step or two from within a footprint instead of crawling to it (a feature thinner than
    this along the ray may be stepped over, as with any smallest step)."""
    hit_threshold: float = 0.0
    """0: hits are sign changes of F_K (exact silhouettes). Above 0: also where 0 < F_K < hit_threshold * eps(t),
    unrefined (the classic footprint threshold: fewer evaluations, silhouettes grown by up to that distance)."""
    refine_steps: int = 4
    """Regula falsi iterations at most on each hit's bracket (value evaluations of the finest level)."""
    refine_tolerance: float = 0.001
    """A hit's refinement stops once the root is within this fraction of the footprint eps(t) along the ray (|F_K|
    over the bracket's secant slope); a last Newton step along the ray with the gradient the normals need anyway then
    takes it to the surface (kept only inside the bracket)."""
    band_exit: float = 0.4
    """A ray goes back to level j once F_j - delta_j >= band_exit * delta_j."""
    step_scale: float = 1.0
    """Factor on every sphere-tracing step (below 1 for a field whose gradient exceeds 1)."""
    shading: str = "plain"
    """"plain" (grey, headlight) or "curvature" (coloured by ``quantity``)."""
    quantity: str = "mean"
    """Curvature quantity for ``shading="curvature"`` (a name of engine.colormaps.QUANTITIES)."""
    value_range: tuple[float, float] | None = None
    """Curvature colour range (default: robust automatic)."""

    def __post_init__(self):
        from .colormaps import QUANTITIES

        checks = [
            (1 <= self.max_steps <= 100_000, f"max_steps must be in [1, 100000], got {self.max_steps}"),
            (0.0 < self.step_margin <= 1.0, f"step_margin must be in (0, 1], got {self.step_margin}"),
            (0.0 <= self.hit_threshold <= 2.0, f"hit_threshold must be in [0, 2], got {self.hit_threshold}"),
            (0 <= self.refine_steps <= 64, f"refine_steps must be in [0, 64], got {self.refine_steps}"),
            (0.0 <= self.refine_tolerance < 1.0, f"refine_tolerance must be in [0, 1), got {self.refine_tolerance}"),
            (0.0 <= self.band_exit <= 10.0, f"band_exit must be in [0, 10], got {self.band_exit}"),
            (0.0 < self.step_scale <= 1.0, f"step_scale must be in (0, 1], got {self.step_scale}"),
            (self.shading in ("plain", "curvature"), f'shading must be "plain" or "curvature", got {self.shading!r}'),
            (self.quantity in QUANTITIES, f"quantity must be one of {', '.join(QUANTITIES)}, got {self.quantity!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class Render:
    """A render's passes (row 0 at the top) and its report."""

    rgba: np.ndarray
    """(h, w, 4) float32 colour in linear light in [0, 1] (render.png holds it sRGB-encoded), alpha 0 where the ray
    misses."""
    depth: np.ndarray
    """(h, w) float32 distance from the camera along each ray (input units), inf on misses."""
    normal: np.ndarray
    """(h, w, 3) float32 outward unit normals in input (world) space, 0 on misses."""
    report: dict = field(default_factory=dict)
    """Evaluations per stage, steps, seconds, counts (written as render.json)."""


@dataclass
class _Trace:
    distance: np.ndarray
    """(n,) float64 unit-cube distance from each ray's entry point to its hit, NaN on misses."""
    low: np.ndarray
    high: np.ndarray
    """(n,) float64 the bracket [low, high] of each refined hit's crossing (F_K(low) > 0 >= F_K(high)), NaN on misses
    and threshold hits."""
    evaluations: list[int]
    steps: np.ndarray
    exhausted: int
    unbracketed: int


def render(
    stack: LevelStack,
    normalization: Normalization,
    camera: Camera,
    settings: RenderSettings = RenderSettings(),
    *,
    should_cancel: Callable[[], bool] = lambda: False,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
) -> Render:
    """Render the SDF ``stack`` (unit-cube coordinates of ``normalization``) from ``camera`` (input coordinates).

    ``on_progress(done, total)`` gets the rays finished after every iteration; ``should_cancel`` is asked as often
    and True raises `engine.training.Cancelled`."""
    started_cpu, started = time.process_time(), time.perf_counter()
    device = stage_parameters_device(stack.stages)
    rays = camera_rays(camera)
    origins = normalization.to_unit(rays.origins)
    t_near, t_far = clip_to_cube(origins, rays.directions)
    inside = np.flatnonzero(t_near < t_far)
    scale = normalization.scale
    entry = origins[inside] + t_near[inside, None] * rays.directions[inside]
    # The footprint in unit-cube lengths: distances along a ray scale like the offset, the slope is dimensionless.
    slope, offset = rays.footprint_slope, rays.footprint_offset * scale
    pixels = camera.width * camera.height
    missed = pixels - len(inside)
    traced = _trace(stack, settings, device, entry, rays.directions[inside], t_near[inside],
                    t_far[inside] - t_near[inside], slope, offset, should_cancel,
                    lambda done: on_progress(done + missed, pixels))  # fmt: skip
    trace_seconds = time.perf_counter() - started

    hit = np.isfinite(traced.distance)
    hit_rays = inside[hit]
    distance = traced.distance[hit]
    hit_points = entry[hit] + distance[:, None] * rays.directions[hit_rays]
    value, gradient = _finest_gradient(stack, hit_points, device)
    normals = gradient / np.linalg.norm(gradient, axis=1, keepdims=True).clip(min=1e-30)
    # The last Newton step along the ray, s - F / (grad F . d), where it stays in the hit's bracket (a refined hit is
    # within refine_tolerance * eps of the surface, so its normal is the surface's to that distance).
    with np.errstate(divide="ignore", invalid="ignore"):
        newton = distance - value / (gradient * rays.directions[hit_rays]).sum(axis=1)
    on_bracket = (newton >= traced.low[hit]) & (newton <= traced.high[hit])
    distance = np.where(on_bracket, newton, distance)
    depth = np.full(pixels, np.inf, dtype=np.float64)
    depth[hit_rays] = (t_near[hit_rays] + distance) / scale
    if not (np.isfinite(depth[hit_rays]).all() and np.isfinite(normals).all()):
        raise ValueError("the network's surface gives NaN or infinite depths or normals: the model is damaged")
    colors = shade(stack, normalization, camera, settings, hit_points, normals)
    rgba = np.zeros((pixels, 4), dtype=np.float32)
    rgba[hit_rays, :3], rgba[hit_rays, 3] = colors, 1.0
    normal = np.zeros((pixels, 3), dtype=np.float32)
    normal[hit_rays] = normals
    height, width = camera.height, camera.width
    levels = len(stack.stages)
    report = {
        "resolution": [width, height],
        "levels": levels,
        "multiscale": settings.multiscale and levels > 1,
        "deltas": list(stack.deltas),
        "evaluations": traced.evaluations,
        "evaluations_note": "points at which each stage (coarse to fine) was evaluated, tracing and refining hits",
        "derivative_points": int(len(hit_points)),
        "pixels": pixels,
        "rays_in_cube": int(len(inside)),
        "hits": int(hit.sum()),
        "rays_out_of_steps": traced.exhausted,
        "hits_without_bracket": traced.unbracketed,
        "max_abs_sdf_at_hits": float(np.abs(value).max() / scale) if len(value) else 0.0,
        "steps": {"total": int(traced.steps.sum()), "mean_per_ray": float(traced.steps.mean()) if len(inside) else 0.0,
                  "max": int(traced.steps.max()) if len(inside) else 0},  # fmt: skip
        "seconds": {"trace": round(trace_seconds, 4), "total": round(time.perf_counter() - started, 4)},
        "cpu_seconds": round(time.process_time() - started_cpu, 4),
        "settings": {k: getattr(settings, k) for k in ("max_steps", "step_margin", "hit_threshold", "refine_steps",
                                                       "refine_tolerance", "band_exit", "step_scale", "shading",
                                                       "quantity")},  # fmt: skip
        "camera": camera.to_dict(),
    }
    return Render(rgba.reshape(height, width, 4), depth.astype(np.float32).reshape(height, width),
                  normal.reshape(height, width, 3), report)  # fmt: skip


def render_model(model, camera: Camera, settings: RenderSettings = RenderSettings(), **callbacks) -> Render:
    """Render a fitted model (`engine.model.SDFModel`; a nested multiresolution network renders by its levels)."""
    return render(level_stack(model.network), model.normalization, camera, settings, **callbacks)


def _trace(stack, settings, device, entry, directions, t_near, s_far, slope, offset, should_cancel, on_progress):
    """March the rays from their entry points (unit cube) over at most ``s_far`` each; see the module's notes."""
    from .training import Cancelled

    count, finest = len(entry), stack.finest
    multiscale = settings.multiscale and finest > 0
    evaluations = Evaluations(len(stack.stages), should_cancel)
    distance = np.full(count, np.nan)
    low, high = np.full(count, np.nan), np.full(count, np.nan)
    steps_taken = np.zeros(count, dtype=np.int64)
    exhausted = 0
    def as_tensor(array):
        return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32, device=device)

    entry_t, direction_t = as_tensor(entry), as_tensor(directions)
    eps_base, s_far_t = as_tensor(offset + slope * t_near), as_tensor(s_far)
    deltas = torch.tensor(list(stack.deltas) + [0.0], dtype=torch.float32, device=device)
    bound_levels = range(finest) if multiscale else range(0)
    # The state of the rays still marching (compacted every iteration).
    index = torch.arange(count, device=device)
    s = torch.zeros(count, device=device)
    level = torch.full((count,), 0 if multiscale else finest, dtype=torch.int64, device=device)
    promoted = torch.zeros(count, dtype=torch.bool, device=device)
    carried = torch.zeros(count, device=device)  # F_level at the point of a just-promoted ray (cumulative stacks)
    previous_s = torch.full((count,), -1.0, device=device)  # last finest-level sample with F_K > 0 (a bracket's end)
    previous_f = torch.zeros(count, device=device)
    earlier_s = torch.full((count,), -1.0, device=device)  # the finest-level sample before that one (a third point)
    earlier_f = torch.zeros(count, device=device)
    last_s = torch.zeros(count, device=device)  # where the last step started, at whatever level
    steps = torch.zeros(count, dtype=torch.int64, device=device)
    found = {key: [] for key in ("index", "low", "high", "f_low", "f_high", "earlier", "f_earlier", "eps")}
    with torch.no_grad():
        while len(index):
            if should_cancel():
                raise Cancelled(f"cancelled with {len(index)} of {count} rays still marching")
            points = entry_t[index] + s[:, None] * direction_t[index]
            eps = eps_base[index] + slope * s
            known, values = _level_values(stack, points, level, promoted, carried, evaluations, multiscale)
            at_finest = level == finest
            f = values[finest]
            bound = torch.full_like(s, -math.inf)
            for k in bound_levels:
                bound = torch.where(known[k], torch.maximum(bound, stack.bound(k, points, values[k])), bound)
            steps += 1
            crossed = at_finest & (f <= 0.0)  # a sign change (or an exact zero) of the finest level
            near = at_finest & (f > 0.0) & (f < settings.hit_threshold * eps)  # a threshold hit (if asked for)
            hit = crossed | near
            promote = ~at_finest & (bound < eps)  # inside a coarse band: next level, no step
            marching = ~hit & ~promote
            largest = torch.where(at_finest, torch.maximum(f, bound), bound)
            step = settings.step_scale * largest
            step = torch.where(at_finest, step + settings.step_margin * eps, step)
            back = level.clone()  # the coarsest level whose band the ray has left (its bound is informative again)
            for k in reversed(bound_levels):
                left = known[k] & (k < level) & (values[k] - deltas[k] >= settings.band_exit * deltas[k])
                back = torch.where(left, k, back)
            stays_fine = at_finest & marching & (back == finest)
            kept = at_finest & ~marching
            earlier_s = torch.where(stays_fine, previous_s, torch.where(kept, earlier_s, -1.0))
            earlier_f = torch.where(stays_fine, previous_f, earlier_f)
            previous_s = torch.where(stays_fine, s, torch.where(kept, previous_s, -1.0))
            previous_f = torch.where(stays_fine, f, previous_f)
            if near.any():
                distance[index[near].cpu().numpy()] = s[near].double().cpu().numpy()
            if crossed.any():
                bracketed = previous_s >= 0.0
                found["index"].append(index[crossed])
                # Without a finest-level sample before the crossing, the bracket starts where the last step did.
                found["low"].append(torch.where(bracketed, previous_s, last_s)[crossed])
                found["f_low"].append(torch.where(bracketed, previous_f, math.nan)[crossed])
                found["high"].append(s[crossed])
                found["f_high"].append(f[crossed])
                found["earlier"].append(torch.where(bracketed, earlier_s, -1.0)[crossed])
                found["f_earlier"].append(earlier_f[crossed])
                found["eps"].append(eps[crossed])
            if multiscale:
                carried = torch.where(promote, _at_level(values, level), carried)
                level = torch.where(promote, level + 1, torch.where(marching, back, level))
            promoted = promote
            last_s = torch.where(marching, s, last_s)
            s = torch.where(marching, s + step, s)
            out = marching & (s > s_far_t[index])
            tired = ~hit & ~out & (steps >= settings.max_steps)
            exhausted += int(tired.sum())
            alive = ~(hit | out | tired)
            steps_taken[index[~alive].cpu().numpy()] = steps[~alive].cpu().numpy()
            index, s, level, promoted, carried = index[alive], s[alive], level[alive], promoted[alive], carried[alive]
            previous_s, previous_f, last_s, steps = previous_s[alive], previous_f[alive], last_s[alive], steps[alive]
            earlier_s, earlier_f = earlier_s[alive], earlier_f[alive]
            on_progress(count - len(index))
        unbracketed = 0
        if found["index"]:
            where = torch.cat(found["index"])
            brackets = [torch.cat(found[key]) for key in ("low", "high", "f_low", "f_high", "earlier", "f_earlier")]
            tolerance = settings.refine_tolerance * torch.cat(found["eps"])
            refined, bracket, unbracketed = refine(stack, entry_t[where], direction_t[where], *brackets,
                                                   settings.refine_steps, tolerance, evaluations)  # fmt: skip
            where = where.cpu().numpy()
            distance[where] = refined.double().cpu().numpy()
            low[where], high[where] = (end.double().cpu().numpy() for end in bracket)
    return _Trace(distance, low, high, list(evaluations), steps_taken, exhausted, unbracketed)


def _at_level(values: list[torch.Tensor], level: torch.Tensor) -> torch.Tensor:
    stacked = torch.stack([torch.nan_to_num(v) for v in values], dim=1)
    return stacked.gather(1, level[:, None]).squeeze(1)


def _level_values(stack: LevelStack, points, level, promoted, carried, evaluations, multiscale: bool):
    """Which levels each ray knows at its point this iteration (masks), and their values (NaN where not known).

    Cumulative stacks: a just-promoted ray adds its new stage to the carried sum; the others evaluate stages 0 up to
    their level (every partial sum on the way is a bound). Independent levels: the ray's own level, and (multiscale)
    level 0 beside it for rays that did not just move up, so they can fall back to it."""
    known, values = [], []
    total = torch.where(promoted, carried, torch.zeros_like(carried))
    for k in range(len(stack.stages)):
        if stack.cumulative:
            need = (level >= k) & ~(promoted & (level > k))
        else:
            need = (level == k) | ((k == 0) & ~promoted & multiscale)
        value = torch.full_like(carried, math.nan)
        if need.any():
            stage = evaluate(stack, k, points[need], evaluations)
            if stack.cumulative:
                total[need] += stage
                value[need] = total[need]
            else:
                value[need] = stage
        known.append(need)
        values.append(value)
    return known, values


def _finest_gradient(stack: LevelStack, points: np.ndarray, device) -> tuple[np.ndarray, np.ndarray]:
    values, gradients = [], []
    query = torch.as_tensor(points, dtype=torch.float32, device=device)
    for start in range(0, len(query), BATCH_SIZE // 4):
        value, gradient = stack.gradient(query[start : start + BATCH_SIZE // 4])
        values.append(value.cpu())
        gradients.append(gradient.cpu())
    if not values:
        return np.zeros(0), np.zeros((0, 3))
    return torch.cat(values).double().numpy(), torch.cat(gradients).double().numpy()


def write_render(folder: str | Path, result: Render) -> dict[str, str]:
    """The passes as `RENDER_FILES` in ``folder`` (each written whole: a temporary file, then renamed); returns
    role -> file name."""
    return write_passes(folder, result.rgba, result.depth, result.normal, result.report)
