"""Levels of detail from one model: a multiresolution SDF network (network kind ``"multires"``).

Conventions (one place for them):
- f(x, lambda) = sum_i c_i(lambda) g_i(x) over the stages g_0 (a small, smooth SIREN: low omega, few parameters) to
  g_{N-1} (residual SIRENs of rising frequency band), with c_0 = 1 and c_i(lambda) = clamp(lambda - i + 1, 0, 1)
  (MR-Net's weights shifted by one). The level lambda runs over [0, N - 1]: lambda = k is the sum g_0 + ... + g_k
  ("level k", a surface of its own; level 0 is the coarsest, level N - 1 = ``None`` all stages, the finest), and
  lambda = k + t is g_0 + ... + g_k + t g_{k+1}, a continuous blend. (MR-Net's images count lambda = k as k stages,
  see `engine.images.field`: a surface needs at least one stage, so its levels start at 0 on the first.)
- Nesting (M-plicits): ``deltas[k]`` is a band half-width delta_k with every finer surface (level k + 1 and up,
  blends included) inside {|f_<=k| <= delta_k}, f_<=k = g_0 + ... + g_k; the last one is 0 (nothing is finer). Stage
  k + 1 is trained in that band (`engine.multires_fit`), so away from it the finer levels keep the coarser level's
  sign and a grid may be culled on the cheap coarse sums first (`LevelOfDetail.band_bounded`).
- Reaches: ``reaches[k]`` <= delta_k bounds |f_<=k| on the finest surface alone (measured by the fit). A sphere
  tracer needs only that (it steps by f_<=k - reach_k towards the finest surface), and it is narrower than the
  training band (bench/results/render_speed_cpu.md); culling a grid needs the training band, where the finer stages
  are pulled to 0 and the sign of a culled corner is the coarse sum's. Empty in files written before them: a tracer
  then uses the deltas. Local reaches (``reach_grid``, `MultiresConfig.reach_cells` cells per axis) bound |f_<=k| on
  the finest surface cell by cell: where the coarse surface is close to the finest, a tracer enters the finest level
  later (`engine.render_levels.LevelStack.bound`).
- Stages take unit-cube points (n, 3) and, as every scalar SIREN of the engine, give (n,) values; so does
  `MultiresSDF.forward`.
- Model files keep every stage's architecture, the deltas, the reaches and the reach grid's size in the header
  (``architecture: {"stages": [...], "deltas": [...], "reaches": [...], "reach_cells": G}``; files without reaches or
  a grid still load), the grid in the weights (``reach_grid``), checked as strictly as a SIREN's
  (`checked_multires_config`). Importing this module registers the kind in `engine.networks.NETWORK_KINDS`
  (`engine.model` imports it, so every reader knows it).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from .networks import NETWORK_KINDS, NetworkKind, Siren, SirenConfig, checked_siren_config

KIND = "multires"
"""The network kind a model file's header gives a `MultiresSDF`."""
MAX_STAGES = 8
"""Most stages a model file may hold: twice the most the engine trains (`engine.multires_fit.MAX_LEVELS`)."""
MAX_REACH_CELLS = 64
"""Most cells per axis of a model file's local reach grid (64^3 floats a level: 1 MB)."""
MAX_DELTA = 4.0
"""Largest band half-width a model file may hold: the unit cube's diagonal is 2 sqrt(3) ~ 3.5, so a wider band culls
nothing."""


@dataclass(frozen=True)
class MultiresConfig:
    """Architecture of a `MultiresSDF`: its stages, coarsest first, and their band half-widths."""

    stages: tuple[SirenConfig, ...] = (SirenConfig(64, 2, 8.0), SirenConfig())
    """Each stage's SIREN (3 inputs, 1 output), coarsest first; stage i's ``first_omega`` sets its frequency band."""
    deltas: tuple[float, ...] = (0.0, 0.0)
    """Band half-width delta_k per stage (unit-cube distance): every finer level's surface lies in |f_<=k| <= delta_k;
    the last is 0. Measured by the fit (`engine.multires_fit`)."""
    reaches: tuple[float, ...] = ()
    """Per stage, a bound on |f_<=k| over the finest surface (at most delta_k, the last 0), or empty when unmeasured.
    Measured by the fit."""
    reach_cells: int = 0
    """Cells per axis of the local reaches (``reach_grid`` in the state: per stage but the finest, a bound on
    |f_<=k| over the finest surface in each cell of [-1, 1]^3 and its neighbours, `engine.render_levels`), or 0 for
    none. Measured by the fit; a sphere tracer steps farther on them than on the reaches alone."""

    @property
    def in_features(self) -> int:
        return 3

    @property
    def out_features(self) -> int:
        return 1

    @property
    def levels(self) -> int:
        return len(self.stages)


def level_weights(level, count: int) -> list[float]:
    """c_i(lambda) for i < count (c_0 = 1, c_i = clamp(lambda - i + 1, 0, 1)); ``level`` None means the finest,
    count - 1. A ValueError names a level that is not a number in [0, count - 1]."""
    if level is None:
        return [1.0] * count
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not math.isfinite(level):
        raise ValueError(f"a level must be a number in [0, {count - 1}], got {level!r}")
    if not 0.0 <= level <= count - 1:
        raise ValueError(
            f"level {level:g} is outside [0, {count - 1}]: this model has {count} level{'s' if count > 1 else ''} "
            f"(0 the coarsest, {count - 1} the finest)"
        )
    return [1.0] + [min(max(level - i + 1.0, 0.0), 1.0) for i in range(1, count)]


class MultiresSDF(nn.Module):
    """f(x, lambda): SIREN stages summed with the level weights (see the module's notes)."""

    def __init__(self, config: MultiresConfig):
        super().__init__()
        if len(config.deltas) != len(config.stages) or not config.stages:
            raise ValueError(
                f"a MultiresConfig needs one delta per stage, got {len(config.deltas)} for {len(config.stages)}"
            )
        if config.reaches and len(config.reaches) != len(config.stages):
            raise ValueError(
                f"a MultiresConfig needs one reach per stage or none, got {len(config.reaches)} "
                f"for {len(config.stages)}"
            )
        self.config = config
        self.stages = nn.ModuleList(Siren(stage) for stage in config.stages)
        # Not in the state dict: the header keeps the bands (readable, and checked with the architecture).
        self.register_buffer("deltas", torch.tensor(config.deltas, dtype=torch.float32), persistent=False)
        self.register_buffer("reaches", torch.tensor(config.reaches, dtype=torch.float32), persistent=False)
        cells = config.reach_cells
        self.register_buffer("reach_grid", torch.zeros(len(config.stages) - 1, cells, cells, cells) if cells else None)

    @property
    def levels(self) -> int:
        return len(self.stages)

    def forward(self, x: torch.Tensor, level=None) -> torch.Tensor:
        """f(x, level) (n,) at unit-cube points (n, 3); ``level`` None: every stage (the finest level)."""
        total = None
        for stage, weight in zip(self.stages, level_weights(level, self.levels)):
            if weight == 0.0:
                break
            out = stage(x)
            total = out if total is None else total + (out if weight == 1.0 else weight * out)
        return total

    def with_deltas(self, deltas, reaches=(), reach_grid: torch.Tensor | None = None) -> "MultiresSDF":
        """Set the band half-widths, the finest surface's reaches and their local grid (levels - 1, G, G, G) (config
        and buffers together; none: not measured); returns the network."""
        deltas, reaches = tuple(float(d) for d in deltas), tuple(float(r) for r in reaches)
        if reaches and len(reaches) != len(deltas):
            raise ValueError(f"{len(deltas)} deltas need {len(deltas)} reaches or none, got {len(reaches)}")
        cells = 0 if reach_grid is None else reach_grid.shape[-1]
        if reach_grid is not None and tuple(reach_grid.shape) != (len(deltas) - 1, cells, cells, cells):
            raise ValueError(f"a reach grid must be ({len(deltas) - 1}, G, G, G), got {tuple(reach_grid.shape)}")
        self.config = dataclasses.replace(self.config, deltas=deltas, reaches=reaches, reach_cells=cells)
        self.deltas = torch.tensor(deltas, dtype=torch.float32, device=self.deltas.device)
        self.reaches = torch.tensor(reaches, dtype=torch.float32, device=self.deltas.device)
        self.reach_grid = None if reach_grid is None else reach_grid.to(self.deltas.device, torch.float32)
        return self

    @staticmethod
    def state_shapes(config: MultiresConfig) -> dict[str, tuple[int, ...]]:
        """The names and shapes of a `MultiresSDF`'s ``state_dict`` with architecture ``config``."""
        shapes = {
            f"stages.{index}.{name}": shape
            for index, stage in enumerate(config.stages)
            for name, shape in Siren.state_shapes(stage).items()
        }
        if config.reach_cells:
            shapes["reach_grid"] = (len(config.stages) - 1, *(config.reach_cells,) * 3)
        return shapes


class LevelOfDetail(nn.Module):
    """One level lambda of a `MultiresSDF` as a field of x alone (what extraction and curvature take), counting the
    points each stage is evaluated at by `band_bounded`."""

    def __init__(self, network: MultiresSDF, level=None):
        super().__init__()
        self.weights = level_weights(level, network.levels)
        self.network, self.level = network, level
        self.config = network.config
        self.stage_evaluations = [0] * network.levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x, self.level)

    def band_bounded(self, x: torch.Tensor, margin: float) -> torch.Tensor:
        """Values (n,) with the sign of f(x, lambda) (where the nesting holds) that equal it wherever every coarser
        sum is within its band plus ``margin`` (|f_<=k| <= delta_k + margin), evaluating each finer stage only there.
        Elsewhere (culled at stage k) they are sign(f_<=k)(|f_<=k| - delta_k): at most L times the distance to the
        finer surface for an L-Lipschitz f_<=k, so a Lipschitz bound that proves space empty stays sound. With a
        ``margin`` of the Lipschitz bound times a grid cell's diagonal, every corner of a cell that holds the
        surface gets its exact value: marching cubes then gives the mesh of the full evaluation."""
        stages, deltas = self.network.stages, self.network.deltas.tolist()
        value = stages[0](x)
        self.stage_evaluations[0] += len(x)
        active = torch.arange(len(x), device=x.device)
        for index in range(1, len(stages)):
            weight = self.weights[index]
            if weight == 0.0 or len(active) == 0:
                break
            coarse = value[active]
            near = coarse.abs() <= deltas[index - 1] + margin
            culled = active[~near]
            value[culled] = torch.sign(value[culled]) * (value[culled].abs() - deltas[index - 1])
            active = active[near]
            out = stages[index](x[active])
            self.stage_evaluations[index] += len(active)
            value[active] = value[active] + (out if weight == 1.0 else weight * out)
        return value


def checked_multires_config(architecture) -> MultiresConfig:
    """The `MultiresConfig` of a model file's architecture (a JSON object of ``stages``, ``deltas`` and optionally
    ``reaches``, nothing else): 1 to `MAX_STAGES` stages, each a SIREN architecture within `engine.networks`' limits
    taking a point and giving a distance, one finite delta in [0, `MAX_DELTA`] per stage, and none or one reach per
    stage in [0, its delta]. A ValueError says what does not fit."""
    keys = set(architecture) if isinstance(architecture, dict) else None
    if keys is None or not {"stages", "deltas"} <= keys <= {"stages", "deltas", "reaches", "reach_cells"}:
        got = sorted(architecture) if isinstance(architecture, dict) else type(architecture).__name__
        raise ValueError(
            f"its multires architecture must be a JSON object of stages, deltas, reaches and reach_cells, got {got}"
        )
    cells = architecture.get("reach_cells", 0)
    if isinstance(cells, bool) or not isinstance(cells, int) or not (cells == 0 or 2 <= cells <= MAX_REACH_CELLS):
        raise ValueError(f"its multires reach_cells must be 0 or an integer in [2, {MAX_REACH_CELLS}], got {cells!r}")
    stages, deltas = architecture["stages"], architecture["deltas"]
    if not isinstance(stages, list) or not 1 <= len(stages) <= MAX_STAGES:
        count = len(stages) if isinstance(stages, list) else type(stages).__name__
        raise ValueError(f"its multires architecture must list 1 to {MAX_STAGES} stages, got {count}")
    if not isinstance(deltas, list) or len(deltas) != len(stages):
        raise ValueError(f"its multires architecture must give one delta per stage ({len(stages)}), got {deltas!r}")
    for index, delta in enumerate(deltas):
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0.0 <= delta <= MAX_DELTA:
            raise ValueError(f"its stage {index}'s delta must be a number in [0, {MAX_DELTA:g}], got {delta!r}")
    reaches = architecture.get("reaches", [])
    if not isinstance(reaches, list) or len(reaches) not in (0, len(stages)):
        raise ValueError(
            f"its multires architecture must give no reach or one per stage ({len(stages)}), got {reaches!r}"
        )
    for index, (reach, delta) in enumerate(zip(reaches, deltas)):
        if isinstance(reach, bool) or not isinstance(reach, (int, float)) or not 0.0 <= reach <= delta:
            raise ValueError(f"its stage {index}'s reach must be a number in [0, its delta {delta:g}], got {reach!r}")
    configs = []
    for index, stage in enumerate(stages):
        try:
            config = checked_siren_config(stage)
        except ValueError as error:
            raise ValueError(f"stage {index}: {error}") from None
        if (config.in_features, config.out_features) != (3, 1):
            raise ValueError(
                f"stage {index} takes {config.in_features} inputs and gives {config.out_features} outputs; a "
                "multires SDF's stages take a point (3) and give a distance (1)"
            )
        configs.append(config)
    return MultiresConfig(tuple(configs), tuple(float(d) for d in deltas), tuple(float(r) for r in reaches), cells)


NETWORK_KINDS[KIND] = NetworkKind(MultiresSDF, MultiresConfig, checked_multires_config, MultiresSDF.state_shapes)
