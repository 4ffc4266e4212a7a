"""Image networks: one SIREN, or MR-Net stages summed with a continuous level of detail, and their evaluation at
any size, region and level, with a per-pixel level for anti-aliased minification.

Conventions (one place for them):
- Pixel coordinates: origin at the image's top-left corner, x to the right, y down, pixel (a, b) the cell
  [a, a + 1) x [b, b + 1) with its value at its centre (a + 0.5, b + 0.5) (as in `engine.images.pyramid`).
- Field coordinates u = (2 p - side) / L per axis, L the long side: the long side spans [-1, 1], the short one
  [-s, s], s = short / long, so a frequency means the same along both axes. A tile's period is (2 W / L, 2 H / L).
- f(u, lambda) = sum_i c_i(lambda) g_i(u), c_i(lambda) = clamp(lambda - i, 0, 1) (MR-Net), lambda in [0, N] for N
  stages: lambda = k sums the first k stages (k = N: full detail), lambda = k + d adds d times stage k + 1.
  Stage i (0: the coarsest) is trained on pyramid level N - 1 - i, so lambda = N - j reproduces pyramid level j.
- Per-pixel level: an output pixel covering F input pixels along its longer side gets lambda = N - log2(F),
  clamped to [1, N] (a mip-map's choice: level j's pixels are 2^j input pixels wide).
- A field's output is in its ``encoding``: "srgb" (colour sRGB-encoded, alpha linear; what the fits train, see
  `engine.images.fit`) or "linear"; `render` and `sample` return linear light either way.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from torch import nn

from ..networks import IntegerSineLayer, SineLayer, integer_frequencies, tuner_bounds
from .io import srgb_to_linear


@dataclass(frozen=True)
class StageConfig:
    """Architecture of one stage g_i: a first sine layer, hidden sine layers, a linear output."""

    hidden_features: int = 128
    """Width of the first and hidden layers."""
    hidden_layers: int = 2
    """Hidden-to-hidden sine layers after the first layer."""
    band: float = 64.0
    """Highest first-layer frequency, radians per field unit (the long side spans 2 units): "random" draws
    frequencies uniformly in [-band, band] per axis; "integer" takes integer vectors k with 2 pi |k_i| / P_i <= band."""
    hidden_omega: float = 30.0
    """Frequency factor of the hidden layers (SIREN's omega: weights U(+-sqrt(6/n)/omega))."""
    first_layer: Literal["random", "integer"] = "random"
    """"random": a trained SIREN first layer; "integer": frozen integer frequencies of period ``period`` (a periodic
    network, TUNER) with a trainable bias."""
    period: tuple[float, float] = (4.0, 4.0)
    """Period (x, y) in field units of an "integer" first layer: the image's extent (2 W / L, 2 H / L) makes the
    network tile; TUNER's 4 (twice the extent) forces nothing to tile."""
    low_limit: int = 0
    """An "integer" layer's dense low cube |k|_inf <= low_limit holding 70 % of its frequencies (TUNER); 0: none."""
    coupled: bool = False
    """M-Net: the first hidden layer also takes the previous stage's last hidden features."""

    def integer_band(self) -> int:
        """The integer band limit max |k_i| of an "integer" first layer: from ``band``, raised where needed so that
        the half cube holds ``hidden_features`` distinct vectors ((2B + 1)^2 - 1 >= 2 width)."""
        needed = math.ceil((math.sqrt(2 * self.hidden_features + 1) - 1) / 2)
        return max(1, needed, int(math.floor(self.band * min(self.period) / (2 * math.pi) + 1e-9)))


class SineStage(nn.Module):
    """One stage g_i(u) (n, channels); ``forward`` also returns its last hidden features (for a coupled next stage)."""

    def __init__(self, config: StageConfig, channels: int, previous_width: int = 0, generator=None):
        super().__init__()
        self.config = config
        width = config.hidden_features
        if config.first_layer == "integer":
            frequencies = integer_frequencies(width, config.integer_band(), 2, config.low_limit or None, generator=generator)
            self.first = IntegerSineLayer(frequencies, config.period, generator)
        else:
            self.first = SineLayer(2, width, config.band, is_first=True)
            with torch.no_grad():
                self.first.linear.weight.uniform_(-1.0, 1.0, generator=generator)
        self.coupled_width = previous_width if config.coupled else 0
        if self.coupled_width and config.hidden_layers == 0:
            raise ValueError("a coupled (M-Net) stage needs a hidden layer to take the previous stage's features")
        self.hidden = nn.ModuleList(
            SineLayer(width + (self.coupled_width if index == 0 else 0), width, config.hidden_omega, is_first=False)
            for index in range(config.hidden_layers)
        )
        self.output = nn.Linear(width, channels)
        bound = math.sqrt(6.0 / width) / config.hidden_omega
        with torch.no_grad():
            self.output.weight.uniform_(-bound, bound, generator=generator)
            self.output.bias.zero_()

    def forward(self, u: torch.Tensor, previous: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.first(u)
        for index, layer in enumerate(self.hidden):
            if index == 0 and self.coupled_width:
                features = torch.cat([features, previous], dim=1)
            features = layer(features)
        return self.output(features), features

    def tuner_bounds(self, c_low: float, c_high: float) -> torch.Tensor | None:
        """TUNER's column bounds of the first hidden layer (`engine.networks.tuner_bounds`; the coupled columns are
        free), or None for a stage without an integer first layer, a low cube and a hidden layer."""
        if not isinstance(self.first, IntegerSineLayer) or not self.config.low_limit or not self.hidden:
            return None
        bounds = tuner_bounds(self.first.frequencies.cpu(), self.config.low_limit, self.config.hidden_omega, c_low, c_high)
        return torch.cat([bounds, torch.full((self.coupled_width,), math.inf)])

    @staticmethod
    def state_shapes(config: StageConfig, channels: int, previous_width: int) -> dict[str, tuple[tuple[int, ...], bool]]:
        """Names of a stage's ``state_dict`` with (shape, whether integer)."""
        width, coupled = config.hidden_features, previous_width if config.coupled else 0
        shapes = (
            {"first.frequencies": ((width, 2), True), "first.bias": ((width,), False)}
            if config.first_layer == "integer"
            else {"first.linear.weight": ((width, 2), False), "first.linear.bias": ((width,), False)}
        )
        for index in range(config.hidden_layers):
            shapes[f"hidden.{index}.linear.weight"] = ((width, width + (coupled if index == 0 else 0)), False)
            shapes[f"hidden.{index}.linear.bias"] = ((width,), False)
        shapes["output.weight"], shapes["output.bias"] = ((channels, width), False), ((channels,), False)
        return shapes


def level_weights(level, count: int) -> torch.Tensor:
    """c_i(lambda) = clamp(lambda - i, 0, 1) for i < count: (count,) for a number, (n, count) for a tensor (n,)."""
    stages = torch.arange(count, dtype=torch.float32)
    if isinstance(level, torch.Tensor):
        return (level.float().reshape(-1, 1) - stages.to(level.device)).clamp(0.0, 1.0)
    return (float(level) - stages).clamp(0.0, 1.0)


class ImageField(nn.Module):
    """f(u, lambda): the stages' outputs summed with the level weights (see the module's notes)."""

    def __init__(
        self, stages: Sequence[StageConfig], channels: int, height: int, width: int,
        encoding: Literal["srgb", "linear"] = "srgb", generator=None,
    ):
        super().__init__()
        self.stage_configs = tuple(stages)
        self.channels, self.height, self.width, self.encoding = channels, height, width, encoding
        modules, previous = [], 0
        for config in self.stage_configs:
            modules.append(SineStage(config, channels, previous, generator))
            previous = config.hidden_features
        self.stages = nn.ModuleList(modules)

    @property
    def levels(self) -> int:
        return len(self.stages)

    def forward(self, u: torch.Tensor, level=None) -> torch.Tensor:
        """f(u, lambda) (n, channels) at field coordinates u (n, 2); ``level``: None (all stages), a number, or a
        tensor (n,) of per-point levels."""
        weights = level_weights(self.levels if level is None else level, self.levels)
        if weights.ndim == 2:
            weights = weights.to(u.device)
        total, previous = torch.zeros(len(u), self.channels, device=u.device, dtype=u.dtype), None
        for index, stage in enumerate(self.stages):
            weight = weights[..., index]
            if not bool((weight > 0).any()):
                break
            out, previous = stage(u, previous)
            total = total + (weight.unsqueeze(-1) if weight.ndim else weight) * out
        return total

    def stage_outputs(self, u: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's own output g_i(u) (n, channels), coarsest first."""
        outputs, previous = [], None
        for stage in self.stages:
            out, previous = stage(u, previous)
            outputs.append(out)
        return outputs

    def parameter_count(self) -> int:
        """Trained numbers (an integer first layer's frozen frequencies are not parameters)."""
        return sum(p.numel() for p in self.parameters())

    def architecture(self) -> list[dict]:
        return [asdict(config) for config in self.stage_configs]


def to_field(points: np.ndarray | torch.Tensor, height: int, width: int):
    """Pixel coordinates (n, 2) of (x, y) as field coordinates u (the module's notes)."""
    long_side = max(height, width)
    size = points.new_tensor([width, height]) if isinstance(points, torch.Tensor) else np.array([width, height])
    return (2.0 * points - size) / long_side


def field_period(height: int, width: int) -> tuple[float, float]:
    """The extent (x, y) of an image in field units: the period that makes a network tile it."""
    long_side = max(height, width)
    return 2.0 * width / long_side, 2.0 * height / long_side


def footprint_level(footprint, levels: int):
    """lambda = N - log2(F) clamped to [1, N], for F input pixels per output pixel (numbers or arrays)."""
    footprint = np.maximum(np.asarray(footprint, dtype=np.float64), 1.0)
    return np.clip(levels - np.log2(footprint), min(1.0, levels), float(levels))


@torch.no_grad()
def evaluate(field: ImageField, points: np.ndarray, level=None, batch_size: int = 65536) -> np.ndarray:
    """f at pixel coordinates (n, 2) (x, y) in the field's encoding, float32 (n, channels); ``level`` None, a number
    or an array (n,) of per-point levels."""
    points = np.asanyarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be (n, 2), got {points.shape}")
    per_point = level is not None and np.ndim(level) > 0
    if per_point and np.shape(level) != (len(points),):
        raise ValueError(f"per-point levels must be (n,) = ({len(points)},), got {np.shape(level)}")
    device = next(field.parameters()).device
    out = np.empty((len(points), field.channels), dtype=np.float32)
    for start in range(0, len(points), batch_size):
        chunk = torch.from_numpy(to_field(points[start : start + batch_size], field.height, field.width)).float()
        chunk_level = (
            torch.from_numpy(np.asarray(level[start : start + batch_size], dtype=np.float32)).to(device)
            if per_point else level
        )
        out[start : start + batch_size] = field(chunk.to(device), chunk_level).float().cpu().numpy()
    return out


def to_linear_light(values: np.ndarray, encoding: str) -> np.ndarray:
    """A field's output (..., channels) in linear light."""
    if encoding == "linear":
        return values
    out = np.array(values, dtype=np.float32)
    colour = slice(0, 1 if out.shape[-1] <= 2 else 3)
    out[..., colour] = srgb_to_linear(out[..., colour])
    return out


def sample(field: ImageField, positions: np.ndarray, level="auto") -> np.ndarray:
    """The field at a map of input pixel positions (h, w, 2) (x, y per output pixel): linear pixels (h, w, c).

    ``level="auto"`` gives each output pixel its own level from its footprint: the lengths of the map's steps to
    its neighbours (central differences), the longer one in input pixels (`footprint_level`). A number (or None:
    full detail) is used everywhere."""
    positions = np.asanyarray(positions, dtype=np.float64)
    if positions.ndim != 3 or positions.shape[2] != 2 or min(positions.shape[:2]) < 1:
        raise ValueError(f"positions must be (height, width, 2), got {positions.shape}")
    if isinstance(level, str):
        if level != "auto":
            raise ValueError(f"level must be a number, None or 'auto', got {level!r}")
        steps = [np.gradient(positions, axis=axis) if positions.shape[axis] > 1 else np.zeros_like(positions) for axis in (0, 1)]
        footprint = np.maximum(*(np.linalg.norm(step, axis=2) for step in steps))
        level = footprint_level(footprint, field.levels).ravel()
    values = evaluate(field, positions.reshape(-1, 2), level)
    return to_linear_light(values, field.encoding).reshape(*positions.shape[:2], field.channels)


def region_positions(size: tuple[int, int], region: tuple[float, float, float, float]) -> np.ndarray:
    """Input pixel positions (h, w, 2) of the centres of an output of ``size`` (w, h) covering ``region``
    (x0, y0, x1, y1) in input pixels."""
    (out_w, out_h), (x0, y0, x1, y1) = size, region
    x = x0 + (np.arange(out_w) + 0.5) * (x1 - x0) / out_w
    y = y0 + (np.arange(out_h) + 0.5) * (y1 - y0) / out_h
    grid_x, grid_y = np.meshgrid(x, y)
    return np.stack([grid_x, grid_y], axis=2)


def render(field: ImageField, size: tuple[int, int] | None = None, region=None, level="auto") -> np.ndarray:
    """The field rendered as linear pixels (h, w, channels): ``size`` (w, h) (default: the image's), ``region``
    (x0, y0, x1, y1) in input pixels (default: the whole image), ``level`` "auto" (per-pixel level from the
    footprint: the same everywhere here, N - log2 of input pixels per output pixel), a number in [0, N], or None
    (full detail, point sampling)."""
    region = (0.0, 0.0, float(field.width), float(field.height)) if region is None else tuple(map(float, region))
    if len(region) != 4 or not all(map(math.isfinite, region)) or region[2] <= region[0] or region[3] <= region[1]:
        raise ValueError(f"region must be x0 y0 x1 y1 with x1 > x0 and y1 > y0, got {region}")
    size = (field.width, field.height) if size is None else tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be a width and a height of at least 1, got {size}")
    if isinstance(level, str) and level == "auto":
        footprint = max((region[2] - region[0]) / size[0], (region[3] - region[1]) / size[1])
        level = float(footprint_level(footprint, field.levels))
    elif level is not None and not (isinstance(level, numbers.Real) and 0.0 <= level <= field.levels):
        raise ValueError(f"level must be 'auto', None or a number in [0, {field.levels}], got {level!r}")
    return sample(field, region_positions(size, region), level)
