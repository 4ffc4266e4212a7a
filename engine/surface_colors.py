"""Colour fields on a fitted surface (issue 17): a small SIREN c(x) -> linear RGB beside the SDF f.

- Trained on surface samples with their colours (`engine.color_samples.ColorSamples`: points in the input's
  coordinates, linear RGB in [0, 1]) after the shape fit (`fit_colors`). Each step reads every sample at a point moved along the fitted
  surface's normal n = grad f / |grad f| by a uniform offset in [-band, band] (unit-cube lengths) with the same
  colour, and a term on the derivative dc/dn there (``normal_weight``), so c is constant along the normal in that
  band.
- `colors_at` looks colours up at any points: each point first moves onto the zero set of f along its gradient
  (damped Newton steps: along the normal direction, to the nearest surface point of an SDF), then c is read and
  clipped to [0, 1]. Offset, evolved and morphed surfaces take their colours this way; the band makes the look-up
  insensitive to the few 1e-3 that projection and extraction leave.
- A coloured model is one model file of named networks ``"sdf"`` and ``"colors"`` (`engine.model.COLORS_KEY`);
  `engine.model.load_model` gives it back with `SDFModel.colors` set.
- Colours are linear light (as Blender's FLOAT_COLOR attributes); `engine.color_samples` converts them to and
  from the 8-bit sRGB of PLY files and images.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np
import torch

from .color_samples import ColorSamples
from .model import COLORS_KEY, SDFModel
from .networks import Siren, SirenConfig
from .settings import SavedSettings
from .training import Progress, TrainingMonitor, cosine_schedule, pick_device, seeded

PROJECTION_STEPS = 4
"""Newton steps that move a look-up point onto the zero set (an SDF's points within the cube reach it in one or
two; the rest are cheap insurance where |grad f| departs from 1)."""
MAX_PROJECTION_STEP = 0.2
"""Longest Newton step (unit cube) of the projection: where |grad f| is small a full step would throw a point away."""


@dataclass(frozen=True)
class ColorConfig(SavedSettings):
    """How the colour network is trained (saved with the model)."""

    network: SirenConfig = field(
        default_factory=lambda: SirenConfig(hidden_features=128, hidden_layers=2, out_features=3)
    )
    """Architecture of the colour SIREN: 3 inputs (unit-cube points), 3 outputs (linear RGB)."""
    steps: int = 1000
    """Optimizer steps."""
    batch: int = 4096
    """Colour samples per step."""
    learning_rate: float = 1e-3
    """Adam learning rate at the start; it decays along a cosine to ``final_learning_rate``."""
    final_learning_rate: float = 1e-5
    """Learning rate at the last step."""
    band: float = 0.01
    """Half-width (unit cube, where the shape spans about 1.8) of the band along the normal in which the colour is
    trained constant."""
    normal_weight: float = 10.0
    """Weight of (band * dc/dn)^2, the change of colour across the band along the normal n, beside the colour error
    (both in squared colour units): it keeps c constant along the normal where the offsets alone leave it drifting
    as the network's smooth extension does."""
    pool_size: int = 200_000
    """Colour samples drawn by area from a mesh with vertex colours (given samples are taken as they are)."""
    seed: int = 0
    """Seed of every random draw."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train: ``auto`` takes CUDA when present."""

    def __post_init__(self):
        self.require_counts("steps", "batch", "pool_size")
        if (self.network.in_features, self.network.out_features) != (3, 3):
            raise ValueError("ColorConfig.network must take 3 inputs (points) and give 3 outputs (RGB)")
        if not 0.0 <= self.band <= 0.5:
            raise ValueError(f"ColorConfig.band must be in [0, 0.5] (unit cube), got {self.band}")
        if not 0.0 < self.final_learning_rate <= self.learning_rate:
            raise ValueError("ColorConfig needs 0 < final_learning_rate <= learning_rate")


COLOR_PRESETS: dict[str, ColorConfig] = {
    "tiny": ColorConfig(
        network=SirenConfig(hidden_features=64, hidden_layers=2, out_features=3), steps=300, batch=2000,
        pool_size=50_000,
    ),
    "fast": ColorConfig(),
    "quality": ColorConfig(network=SirenConfig(hidden_features=256, hidden_layers=3, out_features=3), steps=2000),
}  # fmt: skip
"""The colour settings that go with each preset of `engine.fit.PRESETS`."""


def surface_normals(network: torch.nn.Module, points: torch.Tensor, batch_size: int = 65536) -> torch.Tensor:
    """grad f / |grad f| of a 3D SDF network at unit-cube points (n, 3), without a graph."""
    normals = []
    for chunk in points.split(batch_size):
        with torch.enable_grad():
            chunk = chunk.detach().requires_grad_(True)
            (gradient,) = torch.autograd.grad(network(chunk).sum(), chunk)
        normals.append(torch.nn.functional.normalize(gradient, dim=-1))
    return torch.cat(normals) if normals else points.new_zeros((0, 3))


def onto_zero_set(network: torch.nn.Module, points: torch.Tensor, steps: int = PROJECTION_STEPS) -> torch.Tensor:
    """Unit-cube points (n, 3) moved by damped Newton steps x - f grad f / |grad f|^2 onto the zero set of a 3D
    network (along its gradient: the normal direction), each step at most `MAX_PROJECTION_STEP`."""
    for _ in range(steps):
        with torch.enable_grad():
            moving = points.detach().requires_grad_(True)
            values = network(moving)
            (gradient,) = torch.autograd.grad(values.sum(), moving)
        step = values.detach().unsqueeze(-1) * gradient / (gradient * gradient).sum(-1, keepdim=True).clamp_min(1e-6)
        length = step.norm(dim=-1, keepdim=True)
        points = (points - step * (MAX_PROJECTION_STEP / length.clamp_min(MAX_PROJECTION_STEP))).clamp(-1.0, 1.0)
    return points.detach()


class ColorTrainer:
    """The colour network and its optimizer, one `step` at a time: `fit_colors` runs it after the shape fit; a fit's
    ``on_step`` can run it alongside (``step(network)``: normals from the shape as it trains), which is how the
    benchmark compares the two."""

    def __init__(self, samples: ColorSamples, normalization, config: ColorConfig):
        self.config, self.device = config, pick_device(config.device)
        _, self.generator = seeded(config.seed)
        self.points = torch.from_numpy(normalization.to_unit(samples.points).astype(np.float32)).to(self.device)
        self.colors = torch.from_numpy(samples.colors).to(self.device)
        self.normals: torch.Tensor | None = None
        self.network = Siren(config.network).to(self.device)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=config.learning_rate)
        self.schedule = cosine_schedule(self.optimizer, config.steps, config.final_learning_rate / config.learning_rate)
        self.steps_done = 0

    def use_normals_of(self, sdf_network: torch.nn.Module) -> None:
        """Fix every sample's normal to that of the (trained) shape, once."""
        self.normals = surface_normals(sdf_network, self.points)

    def step(self, sdf_network: torch.nn.Module | None = None) -> tuple[torch.Tensor, dict]:
        """One optimizer step; the normals of this batch come from ``sdf_network`` when given, else from
        `use_normals_of`. Returns the loss and its terms (detached)."""
        count = min(self.config.batch, len(self.points))
        chosen = torch.randint(len(self.points), (count,), generator=self.generator).to(self.device)
        points = self.points[chosen]
        normals = surface_normals(sdf_network, points) if sdf_network is not None else self.normals[chosen]
        offsets = (torch.rand(count, 1, generator=self.generator).to(self.device) * 2.0 - 1.0) * self.config.band
        # The colours and their derivative along the normal, in one forward-mode pass.
        colors, along_normal = torch.func.jvp(self.network, (points + offsets * normals,), (normals,))
        terms = {"color": (colors - self.colors[chosen]).square().mean()}
        if self.config.normal_weight and self.config.band:
            terms["normal"] = self.config.normal_weight * (self.config.band * along_normal).square().mean()
        loss = sum(terms.values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.steps_done < self.config.steps:
            self.schedule.step()
        self.steps_done += 1
        return loss, {name: term.detach() for name, term in terms.items()}

    def finished(self, model: SDFModel, seconds: float, mode: str) -> SDFModel:
        """``model`` with this colour network and the facts of its fit (`engine.model.COLORS_KEY`)."""
        network = self.network.cpu().eval()
        with torch.no_grad():
            subset = slice(0, min(len(self.points), 20_000))
            fitted = network(self.points[subset].cpu()).clamp(0.0, 1.0)
            error = float((fitted - self.colors[subset].cpu()).square().mean())
        facts = {
            "color_config": self.config.to_dict(),
            "mode": mode,
            "samples": int(len(self.points)),
            "train_seconds": seconds,
            "training_psnr_db": psnr_from_mse(error),
            "color_space": "linear",
            "device": str(self.device),
        }
        return dataclasses.replace(model, metadata={**model.metadata, COLORS_KEY: facts}, colors=network)


def fit_colors(
    model: SDFModel,
    samples: ColorSamples | Sequence[ColorSamples],
    config: ColorConfig | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    progress_interval_s: float = 0.5,
) -> SDFModel:
    """A colour network for a fitted model (its SDF unchanged) from colour samples on its surface (input
    coordinates); returns the model with `SDFModel.colors` set and ``metadata[COLORS_KEY]``: the settings, the
    seconds, the samples' count and the PSNR (dB, linear RGB) on them.

    ``on_progress`` and ``should_cancel`` as for `engine.fit.fit_sdf` (`engine.training.Cancelled`)."""
    config = config or ColorConfig()
    merged = _merged([samples] if isinstance(samples, ColorSamples) else list(samples))
    started = time.perf_counter()
    trainer = ColorTrainer(merged, model.normalization, config)
    sdf_device = next(model.network.parameters()).device
    model.network.to(trainer.device)
    trainer.use_normals_of(model.network)
    model.network.to(sdf_device)
    monitor = TrainingMonitor(
        "colour fit", config.steps, on_progress, should_cancel, progress_interval_s,
        advice="lower the colour learning rate (engine.surface_colors.ColorConfig)",
    )  # fmt: skip
    for step in range(1, config.steps + 1):
        monitor.before_step(step)
        loss, terms = trainer.step()
        monitor.after_step(step, loss, terms)
    monitor.check_weights(trainer.network)
    return trainer.finished(model, time.perf_counter() - started, "after the shape fit")


def _merged(samples: list[ColorSamples]) -> ColorSamples:
    if not samples:
        raise ValueError("a colour fit needs colour samples; none were given")
    return ColorSamples(
        np.concatenate([s.points for s in samples]), np.concatenate([s.colors for s in samples]).astype(np.float32)
    )


@torch.no_grad()
def colors_at(model: SDFModel, points, *, project: bool = True, batch_size: int = 65536) -> np.ndarray:
    """Linear RGB (n, 3) float32 in [0, 1] of a coloured model at points (n, 3) in the input's coordinates: each point
    moved onto the model's surface along the normal direction first (``project``; `onto_zero_set`), then read from
    the colour network. Raises ValueError for a model without colours."""
    if model.colors is None:
        raise ValueError("this model has no colour network: fit it with colours (fit --colors, or Colours in Blender)")
    points = np.asanyarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (n, 3), got {points.shape}")
    device = next(model.colors.parameters()).device
    model.network.to(device)
    unit = torch.from_numpy(np.clip(model.normalization.to_unit(points), -1.0, 1.0).astype(np.float32))
    out = [np.zeros((0, 3), dtype=np.float32)]
    for chunk in unit.split(batch_size):
        chunk = chunk.to(device)
        if project:
            chunk = onto_zero_set(model.network, chunk)
        out.append(model.colors(chunk).clamp(0.0, 1.0).cpu().numpy().astype(np.float32))
    return np.concatenate(out)


def blended_colors(model_a: SDFModel, model_b: SDFModel, points, t: float) -> np.ndarray:
    """A level-set morph's colours at time t: (1 - t) c_a + t c_b, each read on its own shape (`colors_at`)."""
    t = float(t)
    if t <= 0.0:
        return colors_at(model_a, points)
    if t >= 1.0:
        return colors_at(model_b, points)
    return ((1.0 - t) * colors_at(model_a, points) + t * colors_at(model_b, points)).astype(np.float32)


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error of colours in [0, 1] (peak 1); infinite for 0."""
    return float("inf") if mse <= 0.0 else float(-10.0 * np.log10(mse))
