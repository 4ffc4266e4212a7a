"""Fitting an image field: one SIREN, or MR-Net stages trained coarse to fine on a Gaussian pyramid, optionally with
TUNER's integer first layers and weight bounds.

- Stage i (0: the coarsest) is trained on pyramid level j = N - 1 - i, at that level's pixel centres
  (`engine.images.pyramid`), against the MSE of the SUMMED output f = g_0 + ... + g_i (MR-Net's scheme). Only the
  newest stage is in the optimizer; the earlier ones are frozen, and their summed output and (M-Net) last hidden
  features at the level's pixels are computed once and cached, so stage i costs one small forward of the earlier
  stages, not their training again.
- With ``dense`` (the default) a stage but the finest is trained at twice its level's rate (the Gaussian tower's
  samples at the next finer level's pixel centres): trained on its own samples only, a stage is free between them,
  and the middle stages put half their energy above their level's Nyquist frequency (measured in
  bench/results/image_fit_cpu.md), which shows when a level is rendered off its grid.
- A stage stops at ``steps`` or when its loss changed by less than ``tolerance`` (relative) over a window of
  `WINDOW` steps (MR-Net's rule).
- Colour: the pyramid is filtered in linear light (averaging light is only right there); the network is trained on
  the sRGB-encoded values by default (``fit_space="srgb"``), because the loss should weigh errors as they are seen:
  a linear-light MSE neglects the shadows (measured in bench/results/image_fit_cpu.md).
- TUNER (``tuner=True``): every stage's first layer is frozen integer frequencies with period 4 (twice the image,
  so nothing is forced to tile), 70 % in a dense low cube, the rest sparse up to the band, half-space only; the first
  hidden layer starts N(0, (0.3 c/omega)^2) per column and is clamped to +-c/omega after every step
  (`engine.networks`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Literal

import numpy as np
import torch

from ..networks import clamp_columns, tuner_initialize
from ..settings import SavedSettings
from ..training import TrainingMonitor, cosine_schedule, pick_device, seeded
from .field import ImageField, StageConfig, to_field
from .io import Image, ImageError, to_srgb
from .pyramid import gaussian_pyramid, level_centres, tower_step

WINDOW = 100
"""Steps over which a stage's loss change is measured for the stopping rule."""
MIN_COARSEST_SIDE = 4
"""The coarsest pyramid level keeps at least this many pixels along the image's short side."""


@dataclass(frozen=True)
class ImageFitConfig(SavedSettings):
    """Everything that decides an image fit; saved in the model file's metadata."""

    levels: int = 4
    """MR-Net stages, trained on as many pyramid levels; 1: a single SIREN on the image."""
    widths: tuple[int, ...] = ()
    """Hidden features of each stage, coarsest first; empty: ``finest_width`` halved per coarser level, never below
    ``min_width`` (MR-Net: little capacity for coarse stages, the most for the finest)."""
    finest_width: int = 128
    """Width of the finest stage when ``widths`` is empty."""
    min_width: int = 32
    """Narrowest stage when ``widths`` is empty."""
    hidden_layers: int = 2
    """Hidden sine layers of every stage."""
    coupled: bool = True
    """M-Net (each stage's first hidden layer also takes the previous stage's last hidden features); False: L-Net
    (independent stages)."""
    band_factor: float = 0.5
    """First-layer band of an MR-Net stage, radians per field unit, per pixel of its level's long side (MR-Net's
    [4, 8, ..., 256] on 512^2 is 0.5)."""
    siren_band: float = 15.0
    """First-layer band of a single SIREN (levels = 1): 15 is SIREN's omega 30 over weights U(-1/2, 1/2)."""
    hidden_omega: float = 30.0
    """omega of the hidden layers."""
    tuner: bool = False
    """TUNER's integer first layers, initialization and bounds (see the module's notes)."""
    tuner_band: float = 0.25
    """TUNER's band limit as a share of its level's Nyquist frequency (0.25 held out pixels better than 0.5 here)."""
    tuner_bounds: tuple[float, float] = (1.0, 0.25)
    """TUNER's c_low, c_high: bounds |omega W| of the first hidden layer's low and high columns."""
    steps: int = 1000
    """Most optimizer steps of the finest stage; a stage j levels coarser may take min(2^j, 4) times as many (its
    level has 4^j times fewer pixels, and small networks learn slowly)."""
    batch: int = 16384
    """Pixels per step (a level with fewer is taken whole)."""
    learning_rate: float = 1e-3
    """Adam's learning rate at each stage's start; it decays along a cosine to ``final_learning_rate``."""
    final_learning_rate: float = 5e-5
    """Learning rate at a stage's last step."""
    tolerance: float = 1e-3
    """A stage stops when its loss fell by less than this share over `WINDOW` steps."""
    dense: bool = True
    """Train each stage but the finest at twice its level's sample rate: level j's image at level j - 1's pixel
    centres (`engine.images.pyramid.tower_step`), so the stage is held between its own samples too and its spectrum
    stays in its band; False: at its level's pixels only (MR-Net's pyramid)."""
    fit_space: Literal["srgb", "linear"] = "srgb"
    """Values the network is trained on: the sRGB-encoded ones (default) or linear light."""
    holdout: float = 0.0
    """Share of the full-resolution pixels kept out of training (to measure generalization); 0: none."""
    seed: int = 0
    """Seed of every random draw."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train."""

    def __post_init__(self):
        self.require_counts("levels", "finest_width", "min_width", "steps", "batch")
        if self.widths and len(self.widths) != self.levels:
            raise ValueError(f"ImageFitConfig.widths must give one width per level ({self.levels}), got {self.widths}")
        if not 0.0 <= self.holdout < 0.5:
            raise ValueError(f"ImageFitConfig.holdout must be in [0, 0.5), got {self.holdout}")
        if not 0.0 < self.final_learning_rate <= self.learning_rate:
            raise ValueError("ImageFitConfig needs 0 < final_learning_rate <= learning_rate")

    def stage_steps(self, level: int) -> int:
        """Most steps of the stage trained on pyramid level ``level``."""
        return self.steps * min(2**level, 4)

    def stage_widths(self) -> tuple[int, ...]:
        if self.widths:
            return tuple(self.widths)
        return tuple(max(self.min_width, self.finest_width >> (self.levels - 1 - i)) for i in range(self.levels))

    def stage_configs(self, height: int, width: int) -> list[StageConfig]:
        """The stages' architectures for an image of that size (bands from its pyramid levels' sizes)."""
        long_side, configs = max(height, width), []
        for index, stage_width in enumerate(self.stage_widths()):
            level_side = math.ceil(long_side / 2 ** (self.levels - 1 - index))
            common = dict(hidden_features=stage_width, hidden_layers=self.hidden_layers, hidden_omega=self.hidden_omega,
                          coupled=self.coupled and index > 0 and self.hidden_layers > 0)  # fmt: skip
            if self.tuner:
                band = self.tuner_band * math.pi * level_side / 2  # Nyquist: level_side / 2 cycles over 2 units
                configs.append(StageConfig(**common, band=band, first_layer="integer", period=(4.0, 4.0),
                                           low_limit=tuner_low_limit(stage_width)))  # fmt: skip
            else:
                band = self.siren_band if self.levels == 1 else self.band_factor * level_side
                configs.append(StageConfig(**common, band=band))
        return configs


PRESETS: dict[str, ImageFitConfig] = {
    "fast": ImageFitConfig(),
    "quality": ImageFitConfig(finest_width=256, steps=3000),
    "gpu": ImageFitConfig(finest_width=256, hidden_layers=3, steps=5000, batch=65536),
}
"""Named starting points; ``fast`` is the default (minutes on 2 CPU cores at 256^2)."""


def tuner_low_limit(width: int, share: float = 0.7) -> int:
    """The low cube |k|_inf <= L whose half (((2L + 1)^2 - 1) / 2 vectors in 2D) holds ``share`` of ``width``."""
    return max(1, math.ceil((math.sqrt(2 * share * width + 1) - 1) / 2))


def fit_space_values(pixels: np.ndarray, space: str) -> np.ndarray:
    """Linear pixels (h, w, c) as the values a network of ``space`` is trained on."""
    return to_srgb(pixels) if space == "srgb" else np.asarray(pixels, dtype=np.float32)


def psnr(values: np.ndarray, reference: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of ``values`` against ``reference`` (same shape, peak 1)."""
    error = float(np.mean((np.asarray(values, np.float64) - np.asarray(reference, np.float64)) ** 2))
    return math.inf if error == 0 else 10.0 * math.log10(peak**2 / error)


def check_levels(image: Image, levels: int) -> None:
    """An `ImageError` when the image is too small for ``levels`` pyramid levels."""
    short = min(image.height, image.width)
    if math.ceil(short / 2 ** (levels - 1)) < MIN_COARSEST_SIDE:
        most = max(1, int(math.floor(math.log2(short / MIN_COARSEST_SIDE))) + 1)
        raise ImageError(
            f"{image.name} is {image.width}x{image.height}: too small for {levels} levels (the coarsest would have "
            f"fewer than {MIN_COARSEST_SIDE} pixels across); use at most {most}"
        )


def fit_image(
    image: Image,
    config: ImageFitConfig | None = None,
    *,
    on_progress: Callable | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> tuple[ImageField, dict]:
    """Fit an `ImageField` to ``image`` (linear light, `engine.images.io`). ``on_progress(stage, progress)`` gets
    each stage's `engine.training.Progress`. Returns the field (on the CPU, eval mode) and a summary: per stage its
    steps, seconds and PSNR (dB, sRGB-encoded values) against its training targets (its pyramid level, or with
    ``dense`` that level at twice its rate)."""
    config = config or ImageFitConfig()
    check_levels(image, config.levels)
    device = pick_device(config.device)
    _, generator = seeded(config.seed)
    field = ImageField(config.stage_configs(image.height, image.width), image.channels, image.height, image.width,
                       config.fit_space, generator).to(device)  # fmt: skip
    pyramid = gaussian_pyramid(image.pixels, config.levels, alpha=image.has_alpha)
    started, stages = time.perf_counter(), []
    for index in range(config.levels):
        level = config.levels - 1 - index
        grid, values = level, pyramid[level]
        if config.dense and level > 0:
            grid, values = level - 1, tower_step(pyramid[level - 1], alpha=image.has_alpha)
        coords = torch.from_numpy(to_field(level_centres(image.height, image.width, grid), image.height, image.width))
        targets = torch.from_numpy(fit_space_values(values, config.fit_space).reshape(-1, image.channels))
        keep = None
        if level == 0 and config.holdout > 0:
            keep = torch.rand(len(coords), generator=torch.Generator().manual_seed(config.seed + 1)) >= config.holdout
        report = None if on_progress is None else (lambda progress, i=index: on_progress(i, progress))
        stages.append(_train_stage(field, index, coords.float().to(device), targets.to(device), keep, config,
                                   generator, report, should_cancel))  # fmt: skip
    field = field.cpu().eval()
    field.requires_grad_(False)
    summary = {
        "levels": config.levels,
        "parameters": field.parameter_count(),
        "train_seconds": round(time.perf_counter() - started, 2),
        "device": str(device),
        "stages": stages,
    }
    return field, summary


def _earlier_outputs(field: ImageField, index: int, coords: torch.Tensor, batch: int = 65536):
    """The frozen stages 0..index-1 at ``coords``: their summed output and the last one's hidden features."""
    total = torch.zeros(len(coords), field.channels, device=coords.device)
    features = None
    if index == 0:
        return total, features
    features = torch.empty(len(coords), field.stages[index - 1].config.hidden_features, device=coords.device)
    with torch.no_grad():
        for start in range(0, len(coords), batch):
            chunk, previous, summed = coords[start : start + batch], None, 0.0
            for stage in field.stages[:index]:
                out, previous = stage(chunk, previous)
                summed = summed + out
            total[start : start + batch], features[start : start + batch] = summed, previous
    return total, features


def _train_stage(field, index, coords, targets, keep, config: ImageFitConfig, generator, on_progress, should_cancel):
    stage = field.stages[index]
    for earlier in field.stages[:index]:
        earlier.requires_grad_(False)
    cached, features = _earlier_outputs(field, index, coords)
    if not stage.coupled_width:
        features = None
    bounds = stage.tuner_bounds(*config.tuner_bounds) if config.tuner else None
    if bounds is not None:
        tuner_initialize(stage.hidden[0], bounds, generator)
    train = torch.arange(len(coords), device=coords.device) if keep is None else keep.nonzero().squeeze(1).to(coords.device)
    parameters = [p for p in stage.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=config.learning_rate)
    total = config.stage_steps(field.levels - 1 - index)
    schedule = cosine_schedule(optimizer, total, config.final_learning_rate / config.learning_rate)
    monitor = TrainingMonitor(
        f"image fit (stage {index + 1} of {field.levels})", total, on_progress, should_cancel,
        advice="lower the learning rate or the band",
    )
    started, window, previous_mean, steps = time.perf_counter(), [], None, 0
    for step in range(1, total + 1):
        monitor.before_step(step)
        if len(train) > config.batch:
            pick = train[torch.randint(len(train), (config.batch,), generator=generator).to(coords.device)]
        else:
            pick = train
        out, _ = stage(coords[pick], None if features is None else features[pick])
        loss = torch.mean((cached[pick] + out - targets[pick]) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if bounds is not None:
            clamp_columns(stage.hidden[0], bounds)
        monitor.after_step(step, loss.detach(), {})
        steps = step
        window.append(loss.detach())
        if len(window) == WINDOW:
            mean = float(torch.stack(window).mean())
            window = []
            if previous_mean is not None and (previous_mean - mean) < config.tolerance * previous_mean:
                break
            previous_mean = mean
    monitor.check_weights(stage)
    with torch.no_grad():
        predicted = torch.cat([
            cached[start : start + 65536] + stage(coords[start : start + 65536],
                                                  None if features is None else features[start : start + 65536])[0]
            for start in range(0, len(coords), 65536)
        ])  # fmt: skip
    values, reference = predicted.cpu().numpy(), targets.cpu().numpy()
    if config.fit_space == "linear":
        values, reference = (to_srgb(v[None]).reshape(v.shape) for v in (values, reference))
    result = {
        "level": field.levels - 1 - index,
        "width": stage.config.hidden_features,
        "band": round(stage.config.band, 3),
        "steps": steps,
        "seconds": round(time.perf_counter() - started, 2),
        "psnr_db": round(psnr(values, reference), 3),
    }
    if keep is not None:
        held = (~keep).cpu().numpy()
        result["psnr_train_db"] = round(psnr(values[~held], reference[~held]), 3)
        result["psnr_heldout_db"] = round(psnr(values[held], reference[held]), 3)
    return result


def preset(name: str, **overrides) -> ImageFitConfig:
    """A preset with some fields replaced, e.g. ``preset("fast", levels=1)``."""
    if name not in PRESETS:
        raise ValueError(f"unknown image fit preset {name!r}; the presets are {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)

