"""Fitting a multiresolution SDF (`engine.multires.MultiresSDF`): levels of detail from one model, nested.

- Stage 0 is fitted like a plain fit (`engine.fit.fit_sdf`), only smaller and smoother (`stage_configs`).
- Stage k >= 1 is a residual: f_<=k = f_<k + g_k with the earlier stages frozen, g_k starting at zero. It is trained
  with the fit's i3d loss (`engine.fit.fitting_loss`) on the sum, but only in the band |f_<k| <= delta_{k-1}
  (M-plicits): on surface samples, on points offset along the normal by delta U(-1, 1) with the offset as target,
  and on the fit's volume samples that fall in the band (exact distances). Outside the band g_k is pulled to 0, so
  the finer level keeps the coarser one's sign there and its surface stays in the band (nesting).
- delta_k = 1.3 max |f_<=k| over input surface samples (M-plicits' `extract_deltas.py`), or more where level k puts
  volume samples on the wrong side of the surface (a stray surface of a small coarse level: `band_delta`); after
  training, widened where needed so that every finer level's surface (samples projected onto it) lies in the band:
  1.1 times the largest |f_<=k| seen there; the reaches, what a tracer needs, the same on the finest surface alone,
  also per cell of a grid (`measured_bands`).
- Level targets come from the fit itself (the input at every level; a coarse level is coarse by its capacity and
  band), not from the mean-curvature-flow scale space: bench/results/lod_quality_cpu.md measures why.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import Callable, Sequence

import torch

from .conventions import Normalization
from .fit import FitConfig, LossWeights, fit_sdf, fitting_loss, unit_source
from .model import SDFModel
from .multires import MAX_DELTA, LevelOfDetail, MultiresConfig, MultiresSDF
from .networks import Siren, SirenConfig
from .render_levels import local_reaches
from .sampling import SamplePool
from .training import Diverged, Progress, TrainingMonitor, cosine_schedule, pick_device, seeded

MAX_LEVELS = 4
"""Most levels a fit trains (`engine.multires.MAX_STAGES` lets a file hold twice as many)."""
BAND_FACTOR = 1.3
"""delta = this times the largest |f_<=k| on the input surface samples (M-plicits)."""
NESTING_FACTOR = 1.1
"""A band is widened to this times the largest |f_<=k| on the finer levels' surfaces where those reach past it."""
MIN_WIDTH = 32
"""Narrowest stage `stage_configs` makes."""
DELTA_SAMPLES = 100_000
"""Input surface samples on which the deltas are measured."""
REACH_CELLS = 32
"""Cells per axis of the local reaches: on a 3-level bunny 3.9x fewer finest evaluations than single-scale with
threshold hits (2.9x on the reaches alone) for 130 KB a level (bench/results/render_speed_cpu.md)."""


def stage_configs(finest: SirenConfig, levels: int) -> tuple[SirenConfig, ...]:
    """The stages of an N-level fit whose finest stage is ``finest``: stage k has half the width and half the first
    layer's frequency of stage k + 1 (dyadic bands, as MR-Net's), at least `MIN_WIDTH` wide, and at most 2 hidden
    layers below the finest: e.g. 3 levels of 3x256 at omega 30 are 2x64 at 7.5, 2x128 at 15, 3x256 at 30."""
    if not 1 <= levels <= MAX_LEVELS:
        raise ValueError(f"levels must be 1 to {MAX_LEVELS}, got {levels}")
    configs = []
    for index in range(levels):
        halvings = levels - 1 - index
        configs.append(dataclasses.replace(
            finest,
            hidden_features=max(MIN_WIDTH, finest.hidden_features >> halvings),
            hidden_layers=finest.hidden_layers if halvings == 0 else min(finest.hidden_layers, 2),
            first_omega=finest.first_omega / 2**halvings,
        ))  # fmt: skip
    return tuple(configs)


def stage_steps(steps: int, levels: int) -> tuple[int, ...]:
    """The steps of each stage of an N-level fit of ``steps`` a level: every coarser stage trains half of them (it is
    small and smooth, and the finer stages correct what it leaves), the finest the rest, so N * steps in all: e.g.
    3 levels of 500 are 250, 250 and 1000 steps."""
    if levels == 1:
        return (steps,)
    coarse = max(1, steps // 2)
    return (coarse,) * (levels - 1) + (levels * steps - (levels - 1) * coarse,)


def fit_multires(
    meshes,
    config: FitConfig,
    levels: int,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    progress_interval_s: float = 0.5,
    normalization: Normalization | None = None,
    on_step: Callable[[int, SDFModel], None] | None = None,
) -> SDFModel:
    """A `MultiresSDF` of ``levels`` stages fitted to ``meshes`` (as `engine.fit.fit_sdf` takes them); the stages
    share ``levels * config.steps`` steps as `stage_steps` splits them, their architectures from `stage_configs`
    (``config.network`` is the finest). Progress counts the steps of all stages; ``on_step`` gets the global step and
    the levels trained so far."""
    configs = stage_configs(config.network, levels)
    steps = stage_steps(config.steps, levels)
    offsets = [sum(steps[:index]) for index in range(levels)]
    total = sum(steps)

    def stage_config(index: int, **changes) -> FitConfig:
        # Each stage warms up over the same share of its steps as the config asks of a whole fit.
        return dataclasses.replace(
            config, steps=steps[index], warmup_steps=config.warmup_steps * steps[index] // config.steps, **changes
        )
    started, cpu_started = time.perf_counter(), time.process_time()

    def progress_from(offset: int):
        if on_progress is None:
            return None

        def report(progress: Progress) -> None:
            done = offset + progress.step
            elapsed = time.perf_counter() - started
            on_progress(dataclasses.replace(
                progress, step=done, total=total, elapsed_s=elapsed, eta_s=elapsed / done * (total - done)
            ))  # fmt: skip

        return report

    def steps_from(offset: int):
        return None if on_step is None else (lambda step, model: on_step(offset + step, model))

    coarsest = fit_sdf(
        meshes, stage_config(0, network=configs[0]), on_progress=progress_from(0),
        should_cancel=should_cancel, progress_interval_s=progress_interval_s, normalization=normalization,
        on_step=steps_from(0),
    )  # fmt: skip
    normalization = coarsest.normalization
    device = pick_device(config.device)
    network = MultiresSDF(MultiresConfig(configs, (0.0,) * levels)).to(device)
    network.stages[0].load_state_dict(coarsest.network.state_dict())
    for stage in network.stages[1:]:
        stage.zero_output()
    network.requires_grad_(False)
    stage_seconds, trained = [coarsest.metadata["train_seconds"]], []
    stage_cpu_seconds = [time.process_time() - cpu_started]
    best_loss = coarsest.metadata["best_validation_loss"]
    if levels > 1:
        source, _ = unit_source(meshes, config, normalization)
        rng, generator = seeded(config.seed + 1)
        pool = SamplePool(
            source, config.pool_size, config.pool_size, config.volume_sampling, config.curvature_sampling, rng
        )
        deltas = [0.0] * levels
        for index in range(1, levels):
            deltas[index - 1] = band_delta(network, index - 1, pool, device)
            trained.append(deltas[index - 1])
            network.with_deltas(deltas)
            began, cpu_began = time.perf_counter(), time.process_time()
            best_loss = _train_stage(
                network, index, pool, stage_config(index), generator, normalization,
                TrainingMonitor(
                    f"fit of level {index}", steps[index], progress_from(offsets[index]), should_cancel,
                    progress_interval_s, advice="lower the learning rate, or fit fewer levels",
                ),
                steps_from(offsets[index]),
            )  # fmt: skip
            stage_seconds.append(time.perf_counter() - began)
            stage_cpu_seconds.append(time.process_time() - cpu_began)
        network.with_deltas(*measured_bands(network, pool.surface_points[:DELTA_SAMPLES].to(device)))
    network.eval()
    metadata = {
        "fit_config": config.to_dict(),
        "levels": levels,
        "stage_steps": list(steps),
        "train_seconds": time.perf_counter() - started,
        "stage_train_seconds": [round(s, 3) for s in stage_seconds],
        "stage_cpu_seconds": [round(s, 3) for s in stage_cpu_seconds],
        "trained_deltas": trained,
        "best_validation_loss": best_loss,
        "device": str(device),
        "interior_area_share": coarsest.metadata["interior_area_share"],
    }
    return SDFModel(network.cpu(), normalization, metadata)


def band_delta(network: MultiresSDF, level: int, pool: SamplePool, device) -> float:
    """The band stage level + 1 trains in: `BAND_FACTOR` times the largest |f_<=level| at input surface samples
    (M-plicits), or, where larger, `NESTING_FACTOR` times the largest |f_<=level| at the volume samples that level
    puts on the wrong side (their exact distance's sign): a coarse level's stray surface or pocket then lies in the
    band, where the finer stage sees its true distances and can remove it; outside the band it could not (the finer
    levels keep the coarser sign there)."""
    with torch.no_grad():
        delta = BAND_FACTOR * float(network(pool.surface_points[:DELTA_SAMPLES].to(device), level).abs().max())
        if pool.volume_sdf is not None:
            values = evaluate_in_batches(network, pool.volume_points, level, device)
            wrong = torch.sign(values) != torch.sign(pool.volume_sdf)
            if bool(wrong.any()):
                delta = max(delta, NESTING_FACTOR * float(values[wrong].abs().max()))
    return min(delta, MAX_DELTA)


def evaluate_in_batches(network: MultiresSDF, points: torch.Tensor, level, device, batch: int = 65536) -> torch.Tensor:
    """f(points, level) on the CPU, in batches of bounded memory."""
    with torch.no_grad():
        return torch.cat([network(points[i : i + batch].to(device), level).cpu() for i in range(0, len(points), batch)])


def level_surface_samples(network: MultiresSDF, level, points: torch.Tensor, iterations: int = 8, tolerance=1e-4):
    """``points`` moved onto the zero set of level ``level`` by Newton steps x <- x - f grad f / |grad f|^2 (from
    input surface samples they land on the nearby part of that level's surface); those that end within
    ``tolerance`` of it, inside the cube."""
    field = LevelOfDetail(network, level)
    x = points.detach().clone()
    for _ in range(iterations):
        with torch.enable_grad():
            query = x.clone().requires_grad_(True)
            value = field(query)
            (gradient,) = torch.autograd.grad(value.sum(), query)
        step = (value / gradient.square().sum(-1).clamp_min(1e-12)).detach()
        x = x - step.clamp(-0.1, 0.1)[:, None] * gradient
    with torch.no_grad():
        keep = (field(x).abs() <= tolerance) & (x.abs() <= 1.0).all(dim=1)
    return x[keep]


def measured_bands(network: MultiresSDF, surface_points: torch.Tensor):
    """The deltas widened so that every finer level's surface lies in each coarser band, delta_k = max(delta_k,
    `NESTING_FACTOR` max |f_<=k| over samples of the surfaces of levels k + 1 .. N - 1), the reaches, reach_k =
    `NESTING_FACTOR` max |f_<=k| over the finest surface's samples alone (at most delta_k; the last of each is 0),
    and the local reaches on `REACH_CELLS`^3 cells (`engine.render_levels.local_reaches`; None without samples)."""
    deltas, reaches, grid = list(network.config.deltas), [0.0] * network.levels, None
    with torch.no_grad():
        for finer in range(1, network.levels):
            on_surface = level_surface_samples(network, finer, surface_points)
            if not len(on_surface):
                continue
            values = [network(on_surface, level) for level in range(finer)]
            widest = [NESTING_FACTOR * float(value.abs().max()) for value in values]
            deltas[:finer] = [max(delta, reach) for delta, reach in zip(deltas, widest)]
            if finer == network.levels - 1:
                reaches[:finer] = widest
                grid = local_reaches(on_surface, values, REACH_CELLS, NESTING_FACTOR)
    deltas[-1] = 0.0
    return deltas, [reach if reach > 0.0 else delta for reach, delta in zip(reaches, deltas)], grid


class _Frozen(torch.autograd.Function):
    """A frozen field's values with its gradient computed in the same pass, for a loss that differentiates the sum
    once with create_graph: the backward is grad_out * grad f (a constant), so no graph of the frozen stages is kept
    and no second derivative of them is taken (no trained weight depends on it). A residual step cost 1.47x a plain
    SIREN's with autograd through the frozen stages (2 frozen stages under a 128x2 one, 4,000 points)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, field: torch.nn.Module) -> torch.Tensor:
        if not ctx.needs_input_grad[0]:
            with torch.no_grad():
                return field(x)
        with torch.enable_grad():
            query = x.detach().requires_grad_(True)
            value = field(query)
            (gradient,) = torch.autograd.grad(value.sum(), query)
        ctx.save_for_backward(gradient)
        return value.detach()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (gradient,) = ctx.saved_tensors
        return grad_output[:, None] * gradient, None


class _Residual(torch.nn.Module):
    """f_<k + g: the frozen coarser levels (`_Frozen`) plus the stage being trained (or its weight average)."""

    def __init__(self, coarse: LevelOfDetail, stage: Siren):
        super().__init__()
        self.coarse, self.stage = coarse, stage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Frozen.apply(x, self.coarse) + self.stage(x)


class _Band:
    """The samples of a residual stage, from the fit's pools: surface samples; in the band |f_<k| <= delta, the
    volume samples with their exact distances and points offset along the normal by delta U(-1, 1) with the offset
    as their distance; outside it, volume samples where the residual is pulled to 0."""

    def __init__(self, pool: SamplePool, coarse: LevelOfDetail, delta: float, generator: torch.Generator, device):
        self.pool, self.coarse, self.delta, self.generator, self.device = pool, coarse, delta, generator, device
        self.rebuild()

    def rebuild(self) -> None:
        pool, device = self.pool, self.device
        surface, normals = pool.surface_points.to(device), pool.surface_normals.to(device)
        offsets = self.delta * (2.0 * torch.rand(len(surface), generator=self.generator) - 1.0).to(device)
        band_points, band_sdf = [surface + offsets[:, None] * normals], [offsets]
        volume = pool.volume_points.to(device)
        with torch.no_grad():
            coarse = torch.cat([self.coarse(volume[i : i + 65536]) for i in range(0, len(volume), 65536)])
            inside = coarse.abs() <= self.delta
        if pool.volume_sdf is not None:
            band_points.append(volume[inside])
            band_sdf.append(pool.volume_sdf.to(device)[inside])
        self.surface, self.normals = surface, normals
        self.band_points, self.band_sdf = torch.cat(band_points), torch.cat(band_sdf)
        self.outside = volume[~inside] if bool((~inside).any()) else volume[:1]

    def batch(self, surface_count: int, volume_count: int):
        def draw(tensor, count):
            return torch.randint(len(tensor), (count,), generator=self.generator).to(tensor.device)

        s, v = draw(self.surface, surface_count), draw(self.band_points, volume_count)
        o = draw(self.outside, volume_count // 4)
        return self.surface[s], self.normals[s], self.band_points[v], self.band_sdf[v], self.outside[o]


def stage_loss(residual: _Residual, batch, weights: LossWeights, eikonal_share: float):
    """The fit's i3d loss of f_<k + g in the band, plus g^2 outside it (weighted as the off-surface term)."""
    surface, normals, band_points, band_sdf, outside = batch
    loss, terms = fitting_loss(residual, surface, normals, band_points, band_sdf, weights, eikonal_share)
    away = weights.sdf * residual.stage(outside).square().mean()
    return loss + away, {**terms, "outside_band": away.detach()}


def _train_stage(network, index, pool, config: FitConfig, generator, normalization, monitor, on_step) -> float:
    """Train stage ``index`` of ``network`` in place (the best weight average on a fixed validation batch); returns
    its validation loss."""
    stage = network.stages[index]
    stage.requires_grad_(True)
    device = next(stage.parameters()).device
    coarse = LevelOfDetail(network, index - 1)
    band = _Band(pool, coarse, float(network.deltas[index - 1]), generator, device)
    residual = _Residual(coarse, stage)
    optimizer = torch.optim.Adam(stage.parameters(), lr=config.learning_rate)
    schedule = cosine_schedule(
        optimizer, config.steps, config.final_learning_rate / config.learning_rate, config.warmup_steps
    )
    kept = stage
    if config.weight_averaging:
        kept = torch.optim.swa_utils.AveragedModel(
            stage, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.weight_averaging)
        )
    kept_stage = lambda: kept if kept is stage else kept.module  # noqa: E731
    validation = band.batch(config.surface_batch, config.volume_batch)
    best_loss, best_state = math.inf, copy.deepcopy(stage.state_dict())
    for step in range(1, config.steps + 1):
        monitor.before_step(step)
        if step % config.refresh_every == 0:
            pool.refresh(config.refresh_fraction)
            band.rebuild()
        loss, terms = stage_loss(residual, band.batch(config.surface_batch, config.volume_batch), config.weights,
                                 config.eikonal_share)  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if kept is not stage:
            kept.update_parameters(stage)
        if step % config.validate_every == 0 or step == config.steps:
            checked = _Residual(coarse, kept_stage())
            validation_loss = stage_loss(checked, validation, config.weights, config.eikonal_share)[0].item()
            if validation_loss < best_loss:
                best_loss, best_state = validation_loss, copy.deepcopy(kept_stage().state_dict())
        monitor.after_step(step, loss, terms)
        if on_step is not None:
            on_step(step, SDFModel(_Residual(coarse, kept_stage()), normalization))
    if not math.isfinite(best_loss):
        raise Diverged(
            f"the fit of level {index} diverged (no validation loss was finite in {config.steps} steps): lower the "
            "learning rate, or fit fewer levels"
        )
    stage.load_state_dict(best_state)
    monitor.check_weights(stage)
    stage.requires_grad_(False)
    return best_loss


def fit_levels(meshes: Sequence, config: FitConfig, levels: int = 1, **options) -> SDFModel:
    """`engine.fit.fit_sdf` for one level (a SIREN), `fit_multires` for more: what ``fit --levels N`` runs."""
    if levels == 1:
        return fit_sdf(meshes, config, **options)
    return fit_multires(meshes, config, levels, **options)
