"""Seamless tiles: a periodic network trained on a photo with the seamless objective (Paz, Novello, Velho 2024).

- The network is one `engine.images.field` stage whose first layer is frozen integer frequencies of period the
  image's extent (`field_period`), so f(u + P) = f(u) exactly by construction (`engine.networks.IntegerSineLayer`):
  the tile repeats with no seam to hide, whatever the training does.
- Objective on the torus: L = mean (1 - m) |J f - U|^2 + mean m (f_gt - f)^2, m a soft mask (1 inside, falling to
  0 at the border over ``border`` of each side: `mask`). Values are held inside; near the border only the photo's
  gradients U are matched, so the network bends the photo's far sides into each other with the photo's own texture
  instead of a jump. U comes from one-sided differences at the photo's edges (numpy's gradient): wrapped differences
  would put the seam back into the targets.
- Cost cuts (bench/results/seamless_tile_cpu.md): the photo is trained at ``train_size`` (downsampled by the
  Gaussian pyramid in linear light) and rendered at any size; J f only where 1 - m > 0 (exact: the term is zero
  elsewhere), and by forward tangents (`engine.networks.sine_jacobian`: two tangents, whatever the channels);
  mini-batches and fewer steps. ``preset("gpu")`` keeps the paper's settings (512^2, 3 x 256, full batches, 500
  epochs).
- Values and gradients are the sRGB-encoded ones (what is seen; as in `engine.images.fit`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Literal

import numpy as np
import torch

from ..networks import IntegerSineLayer, sine_jacobian
from ..settings import SavedSettings
from ..training import TrainingMonitor, cosine_schedule, pick_device, seeded
from .field import ImageField, StageConfig, field_period, to_field
from .fit import psnr, tuner_low_limit
from .io import Image, to_srgb
from .pyramid import downsample, level_centres

LUMA = (0.2126, 0.7152, 0.0722)
"""Rec. 709 weights of the luminance whose gradient ``gradients="luminance"`` matches."""


@dataclass(frozen=True)
class TileConfig(SavedSettings):
    """Everything that decides a seamless tile; saved in the model file's metadata."""

    hidden_features: int = 256
    """Width of the periodic network."""
    hidden_layers: int = 1
    """Hidden sine layers."""
    band: float = 0.25
    """Highest first-layer integer frequency, as a share of the training image's Nyquist (long side / 2 cycles per
    tile); the hidden layers make sums of these, reaching higher."""
    hidden_omega: float = 30.0
    """omega of the hidden layers."""
    train_size: int = 256
    """Long side the photo is trained at (downsampled when larger); the tile renders at any size."""
    steps: int = 1500
    """Optimizer steps."""
    value_batch: int = 8192
    """Pixels per step for the value term (0: all)."""
    gradient_batch: int = 4096
    """Border-band pixels per step for the gradient term (0: all of the band)."""
    border: float = 0.15
    """Share of each side over which the mask falls from 1 to 0 towards the edge."""
    gradient_weight: float = 1.0
    """Weight of the gradient term (gradients in pixel units: steps between neighbouring pixels)."""
    jacobian: Literal["band", "everywhere"] = "band"
    """Where J f is computed: only where the mask is below 1 (exact), or at every pixel (the paper's code)."""
    gradients: Literal["forward", "autograd", "luminance"] = "forward"
    """How J f is computed: forward tangents (all channels), reverse-mode autograd (one pass per channel), or
    autograd of the luminance alone (matched to the photo's luminance gradient)."""
    learning_rate: float = 1e-3
    """Adam's learning rate at the start (cosine decay to ``final_learning_rate``)."""
    final_learning_rate: float = 5e-5
    """Learning rate at the last step."""
    seed: int = 0
    """Seed of every random draw."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train."""

    def __post_init__(self):
        self.require_counts("hidden_features", "steps", "train_size")
        if not 0.0 < self.border < 0.5 or not 0.0 < self.band <= 1.0:
            raise ValueError("TileConfig.border must be in (0, 0.5) and band in (0, 1]")
        if self.value_batch < 0 or self.gradient_batch < 0 or self.gradient_weight < 0:
            raise ValueError("TileConfig batches and gradient_weight must be at least 0")


PRESETS: dict[str, TileConfig] = {
    "cpu": TileConfig(),
    # The paper's: 512^2, 3 x 256, 500 epochs of full batches, J f everywhere (12-24 s on an RTX 3090).
    "gpu": TileConfig(hidden_layers=3, train_size=512, steps=500, value_batch=0, gradient_batch=0, jacobian="everywhere"),
}
"""Named settings; ``cpu`` is the default (minutes on 2 CPU cores)."""


def preset(name: str, **overrides) -> TileConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown tile preset {name!r}; the presets are {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def mask(height: int, width: int, border: float) -> np.ndarray:
    """The soft mask m (h, w) at pixel centres: smoothstep of the distance to the nearest edge over ``border`` of
    the side, 1 inside, near 0 at the edge."""
    x = np.minimum(np.arange(width) + 0.5, width - np.arange(width) - 0.5) / (border * width)
    y = np.minimum(np.arange(height) + 0.5, height - np.arange(height) - 0.5) / (border * height)
    t = np.clip(np.minimum(x[None, :], y[:, None]), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def photo_gradients(values: np.ndarray) -> np.ndarray:
    """U (h, w, c, 2): d/dx and d/dy of the values per pixel, central differences inside and one-sided at the
    edges (never wrapped)."""
    return np.stack([np.gradient(values, axis=1), np.gradient(values, axis=0)], axis=-1).astype(np.float32)


def training_image(image: Image, train_size: int) -> tuple[np.ndarray, int]:
    """The photo's linear pixels at most ``train_size`` along the long side (halved by the pyramid's step) and the
    pyramid level they are."""
    pixels, level = image.pixels, 0
    while max(pixels.shape[:2]) > train_size and min(pixels.shape[:2]) >= 16:
        pixels, level = downsample(pixels, alpha=image.has_alpha), level + 1
    return pixels, level


def seam_score(values: np.ndarray) -> float:
    """Mean jump across the wrap divided by the mean step between neighbours inside, averaged over the two axes, of
    values (h, w, c) as seen (sRGB-encoded): about 1 for a seamless tile, much more for a photo tiled as is."""
    values = np.asarray(values, dtype=np.float64)
    ratios = []
    for axis in (0, 1):
        inside = np.abs(np.diff(values, axis=axis)).mean()
        wrap = np.abs(np.take(values, 0, axis=axis) - np.take(values, -1, axis=axis)).mean()
        ratios.append(wrap / max(inside, 1e-12))
    return float(np.mean(ratios))


def periodicity_error(field: ImageField, count: int = 4096, seed: int = 0) -> float:
    """max |f(u + n P) - f(u)| over random u and shifts n in {-2, ..., 2}^2 (float32 inputs on a 2^-12 grid, so
    that u + n P is exact)."""
    rng = np.random.default_rng(seed)
    period = np.array(field_period(field.height, field.width))
    u = np.round(rng.uniform(-1, 1, (count, 2)) * 4096) / 4096
    shift = rng.integers(-2, 3, (count, 2)) * period
    with torch.no_grad():
        a = field(torch.from_numpy(u).float())
        b = field(torch.from_numpy(u + shift).float())
    return float((a - b).abs().max())


def fit_tile(
    image: Image, config: TileConfig | None = None, *, on_progress: Callable | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> tuple[ImageField, dict]:
    """Train a periodic field on ``image`` with the seamless objective. Returns the field (CPU, eval mode; its size
    is the image's) and a summary (seconds, PSNR inside the held region on the training pixels)."""
    config = config or TileConfig()
    device = pick_device(config.device)
    _, generator = seeded(config.seed)
    pixels, level = training_image(image, config.train_size)
    height, width, channels = pixels.shape
    period = field_period(image.height, image.width)
    long_side = max(height, width)
    band = config.band * (long_side / 2) * 2 * math.pi / min(period)
    stage = StageConfig(
        hidden_features=config.hidden_features, hidden_layers=config.hidden_layers, band=band,
        hidden_omega=config.hidden_omega, first_layer="integer", period=period,
        low_limit=tuner_low_limit(config.hidden_features),
    )
    field = ImageField([stage], channels, image.height, image.width, "srgb", generator).to(device)
    network = field.stages[0]
    values = to_srgb(pixels)
    weights = mask(height, width, config.border).reshape(-1)
    coords = to_field(level_centres(image.height, image.width, level), image.height, image.width)
    tensor = lambda array: torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)  # noqa: E731
    coords, targets, weights_t = tensor(coords), tensor(values.reshape(-1, channels)), tensor(weights)
    gradients = photo_gradients(values).reshape(-1, channels, 2)
    if config.gradients == "luminance" and channels >= 3:
        gradients = np.einsum("ncd,c->nd", gradients[:, :3], np.array(LUMA, np.float32))[:, None]
    gradients = tensor(gradients)
    band_pixels = (torch.arange(len(coords), device=device) if config.jacobian == "everywhere"
                   else torch.from_numpy(np.flatnonzero(weights < 1.0)).to(device))  # fmt: skip
    band_share = len(band_pixels) / len(coords)
    use_gradients = config.gradient_weight > 0 and len(band_pixels) > 0  # a mask of ones leaves no border band
    to_pixels = 2.0 * 2**level / max(image.height, image.width)  # field units per training pixel
    optimizer = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=config.learning_rate)
    schedule = cosine_schedule(optimizer, config.steps, config.final_learning_rate / config.learning_rate)
    monitor = TrainingMonitor("seamless tile", config.steps, on_progress, should_cancel, advice="lower the learning rate")
    started, cpu_started = time.perf_counter(), time.process_time()

    def draw(pool: torch.Tensor, count: int) -> torch.Tensor:
        if count == 0 or count >= len(pool):
            return pool
        return pool[torch.randint(len(pool), (count,), generator=generator).to(device)]

    everything = torch.arange(len(coords), device=device)
    for step in range(1, config.steps + 1):
        monitor.before_step(step)
        pick = draw(everything, config.value_batch)
        value_loss = torch.mean(weights_t[pick, None] * (network(coords[pick])[0] - targets[pick]) ** 2)
        gradient_loss = torch.zeros((), device=device)
        if use_gradients:
            pick = draw(band_pixels, config.gradient_batch)
            jacobian = _jacobian(network, coords[pick], config.gradients) * to_pixels
            error = ((jacobian - gradients[pick]) ** 2).sum(dim=2).mean(dim=1)
            gradient_loss = band_share * torch.mean((1.0 - weights_t[pick]) * error)
        loss = value_loss + config.gradient_weight * gradient_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        monitor.after_step(step, loss.detach(), {"value": value_loss.detach(), "gradient": gradient_loss.detach()})
    monitor.check_weights(network)
    field = field.cpu().eval().requires_grad_(False)
    predicted = _predict(field, coords.cpu())
    held = weights >= 0.99
    summary = {
        "train_size": [width, height],
        "parameters": field.parameter_count(),
        "band_limit": stage.integer_band(),
        "train_seconds": round(time.perf_counter() - started, 2),
        "train_cpu_seconds": round(time.process_time() - cpu_started, 2),
        "device": str(device),
        "psnr_inside_db": round(psnr(predicted[held], values.reshape(-1, channels)[held]), 3),
        "periodicity_error": periodicity_error(field),
    }
    return field, summary


def _jacobian(network, coords: torch.Tensor, how: str) -> torch.Tensor:
    """d f / d u (n, channels, 2) of one stage (``how``: "forward" tangents, "autograd" per channel, or "luminance":
    autograd of the luminance, (n, 1, 2))."""
    if how == "forward":
        return sine_jacobian(network.first, network.hidden, network.output, coords)[1]
    coords = coords.detach().requires_grad_(True)
    out = network(coords)[0]
    if how == "luminance" and out.shape[1] >= 3:
        outputs = [out[:, :3] @ torch.tensor(LUMA, device=out.device)]
    else:
        outputs = [out[:, channel] for channel in range(out.shape[1])]
    rows = [torch.autograd.grad(o.sum(), coords, create_graph=True)[0] for o in outputs]
    return torch.stack(rows, dim=1)


def _predict(field: ImageField, coords: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([field(coords[start : start + 65536]) for start in range(0, len(coords), 65536)]).numpy()


def is_periodic(field: ImageField) -> bool:
    """Whether every stage of ``field`` starts with an integer layer whose period is the image's extent."""
    period = field_period(field.height, field.width)
    return all(
        isinstance(stage.first, IntegerSineLayer) and np.allclose(stage.first.period, period) for stage in field.stages
    )
