"""Levels of detail as the multiscale sphere tracer sees them (`engine.render`): a small protocol of its own, and an
adapter from a fitted model's network.

- A `LevelStack` is a sequence of stage callables on unit-cube points (n, 3) -> (n,) or (n, 1) and the bands
  ``deltas``. With ``cumulative`` (MR-Net, M-plicits residual stages) level k is F_k = g_0 + ... + g_k; without it
  level k is stage k alone (independent networks, e.g. a small coarse SIREN in front of a fitted one).
- Nesting, which the tracer relies on: the finest surface {F_K = 0} lies in {|F_k| <= deltas[k]} for every k < K,
  so the offset surface {F_k = deltas[k]} encloses it and a ray may step by F_k - deltas[k] without crossing it.
- `level_stack(network)`: a plain network (a `Siren`) is one level; anything with ``stages`` (a sequence of
  modules) and ``deltas`` (a 1-D tensor, deltas[k] for stage k) is its levels, duck-typed, so
  `engine.multires.MultiresSDF` needs no import here; its bands are the ``reaches`` (the finest surface's, narrower)
  where the network has them, else the deltas, and its ``reach_grid`` (local reaches, `local_reaches`) where it has
  one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from .networks import Siren, sine_jacobian

Stage = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LevelStack:
    """Levels of one SDF, coarse to fine, in unit-cube coordinates (see the module's notes)."""

    stages: tuple[Stage, ...]
    deltas: tuple[float, ...]
    """deltas[k] for every level k but the finest: the band of F_k that holds the finest surface."""
    cumulative: bool = True
    """Level k is the sum of stages 0..k (True) or stage k alone (False)."""
    reach_grids: torch.Tensor | None = None
    """Optional local bands (levels - 1, G, G, G): cell c of the G^3 cells of [-1, 1]^3 holds a bound on |F_k| over
    the finest surface in c and its 26 neighbours (see `bound`)."""

    def __post_init__(self):
        if not self.stages:
            raise ValueError("a level stack needs at least one stage")
        if len(self.deltas) != len(self.stages) - 1:
            raise ValueError(f"{len(self.stages)} levels need {len(self.stages) - 1} deltas, got {len(self.deltas)}")
        if not all(math.isfinite(d) and d > 0.0 for d in self.deltas):
            raise ValueError(f"every delta must be a positive finite number, got {list(self.deltas)}")
        grids = self.reach_grids
        if grids is not None and (grids.dim() != 4 or len(grids) != len(self.deltas) or len(set(grids.shape[1:])) != 1):
            raise ValueError(f"reach grids must be ({len(self.deltas)}, G, G, G), got {tuple(grids.shape)}")

    def bound(self, level: int, points: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """A lower bound on the distance from unit-cube ``points`` to the finest surface, from level ``level``'s
        ``value`` there (F_k is 1-Lipschitz): F_k - delta_k, or, with reach grids, the larger of that and min(h,
        F_k - r), r the point's cell's local band and h the cell size (a surface point nearer than h lies in that
        cell or a neighbour, where |F_k| <= r; any other is at least h away)."""
        coarse = value - self.deltas[level]
        if self.reach_grids is None:
            return coarse
        grid = self.reach_grids[level]
        cells = len(grid)
        index = cell_indices(points, cells)
        local = grid[index[:, 0], index[:, 1], index[:, 2]]
        return torch.maximum(coarse, torch.clamp(value - local, max=2.0 / cells))

    @property
    def finest(self) -> int:
        return len(self.stages) - 1

    def stage_value(self, index: int, points: torch.Tensor) -> torch.Tensor:
        """Stage ``index`` at unit-cube points (n, 3), as (n,) float32."""
        return _as_values(self.stages[index](points), len(points), index)

    def level_module(self, level: int | None = None) -> nn.Module:
        """Level ``level`` (default: the finest) as one module (n, 3) -> (n,), e.g. for `engine.geometry`."""
        level = self.finest if level is None else level
        used = self.stages[: level + 1] if self.cumulative else self.stages[level : level + 1]
        if not all(isinstance(stage, nn.Module) for stage in used):
            raise ValueError("curvatures need the stages as torch modules")
        return _StageSum(used)

    def gradient(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The finest level's value (n,) and gradient (n, 3) at unit-cube points: each SIREN stage by its explicit
        forward-mode pass (`engine.networks.sine_jacobian`), other stages by autograd."""
        used = range(self.finest + 1) if self.cumulative else (self.finest,)
        value = points.new_zeros(len(points))
        gradient = points.new_zeros(len(points), 3)
        for index in used:
            stage_value, stage_gradient = _stage_gradient(self.stages[index], points, index)
            value += stage_value
            gradient += stage_gradient
        return value, gradient


def cell_indices(points: torch.Tensor, cells: int) -> torch.Tensor:
    """The (n, 3) integer cell of each unit-cube point among ``cells``^3 cells of [-1, 1]^3 (clamped onto it)."""
    return ((points + 1.0) * (cells / 2.0)).long().clamp(0, cells - 1)


def local_reaches(points: torch.Tensor, values: Sequence[torch.Tensor], cells: int, factor: float) -> torch.Tensor:
    """Reach grids for `LevelStack.reach_grids`: from samples ``points`` (n, 3) of the finest surface (unit cube) and
    each coarser level's values there, per level ``factor`` times the largest |F_k| over the samples in each of the
    ``cells``^3 cells and its 26 neighbours (0 where there are none: no finest surface nearby)."""
    index = cell_indices(points, cells)
    flat = (index[:, 0] * cells + index[:, 1]) * cells + index[:, 2]
    grids = []
    for value in values:
        largest = torch.zeros(cells**3, device=points.device).scatter_reduce(0, flat, value.abs().float(), "amax")
        # A max-pool of 3 cells is the largest over each cell's neighbours (its padding never wins: values are >= 0).
        neighbourhood = torch.nn.functional.max_pool3d(largest.reshape(1, 1, cells, cells, cells), 3, 1, 1)
        grids.append(factor * neighbourhood.reshape(cells, cells, cells))
    return torch.stack(grids)


def level_stack(network) -> LevelStack:
    """The levels of a model's network: ``stages`` and ``reaches`` or ``deltas`` when it has them (a nested
    multiresolution network), else the network itself as the only level."""
    stages, deltas = getattr(network, "stages", None), getattr(network, "deltas", None)
    if stages is None or deltas is None:
        return LevelStack((network,), ())
    reaches = getattr(network, "reaches", None)
    if reaches is not None and torch.as_tensor(reaches).numel():
        deltas = reaches
    stages = tuple(stages)
    values = [float(d) for d in torch.as_tensor(deltas).detach().reshape(-1).cpu()]
    if len(values) < len(stages) - 1:
        raise ValueError(f"the network has {len(stages)} stages but only {len(values)} deltas")
    unmeasured = [k for k, delta in enumerate(values[: len(stages) - 1]) if not (math.isfinite(delta) and delta > 0.0)]
    if unmeasured:
        raise ValueError(
            f"the network's level {unmeasured[0]} has no band (delta {values[unmeasured[0]]}), so its finer surfaces "
            "are not known to lie near it: render it single-scale (multiscale off)"
        )
    grid = getattr(network, "reach_grid", None)
    if grid is not None and not bool((grid >= 0.0).all()):
        raise ValueError("the network's reach grid holds negative reaches: the model is damaged")
    return LevelStack(stages, tuple(values[: len(stages) - 1]), cumulative=True, reach_grids=grid)


def coarse_first(coarse: Stage, fine: Stage, delta: float) -> LevelStack:
    """Two independent networks as levels: ``coarse`` (cheap) whose band |coarse| <= ``delta`` holds the surface of
    ``fine``."""
    return LevelStack((coarse, fine), (float(delta),), cumulative=False)


class _StageSum(nn.Module):
    def __init__(self, stages):
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(_as_values(stage(x), len(x), index) for index, stage in enumerate(self.stages))


def _as_values(out: torch.Tensor, count: int, index: int) -> torch.Tensor:
    if out.shape not in ((count,), (count, 1)):
        raise ValueError(f"stage {index} must map (n, 3) points to (n,) or (n, 1) values, got shape {tuple(out.shape)}")
    return out.reshape(count)


def _stage_gradient(stage: Stage, points: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    if type(stage) is Siren and stage.config.in_features == 3 and stage.config.out_features == 1:
        with torch.no_grad():
            layers = list(stage.layers)
            value, jacobian = sine_jacobian(layers[0], layers[1:], stage.output, points)
        return value.reshape(-1), jacobian[:, 0, :]
    with torch.enable_grad():
        query = points.detach().clone().requires_grad_(True)
        value = _as_values(stage(query), len(query), index)
        (gradient,) = torch.autograd.grad(value.sum(), query, materialize_grads=True)
    return value.detach(), gradient.detach()


def stage_parameters_device(stages: Sequence[Stage]) -> torch.device:
    """The device of the first stage that has parameters (the CPU when none has)."""
    for stage in stages:
        if isinstance(stage, nn.Module):
            for tensor in stage.parameters():
                return tensor.device
    return torch.device("cpu")
