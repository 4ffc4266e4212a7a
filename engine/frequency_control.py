"""Integer first layers and TUNER's bounds (periodic networks, TUNER; images since issue 16, surfaces since issue 15).

- `integer_frequencies`: distinct integer frequency vectors for a frozen first layer sin(2 pi <k, x> / P + b).
- `IntegerSineLayer`: such a layer as its own module, evaluated in float64 (the image fields).
- `tuner_bounds`, `tuner_initialize`, `clamp_columns`: TUNER's bounds on the first hidden layer, its start inside
  them, and the clamp after every optimizer step.
- `checked_frequency_control`: the checks of a model file's integer first layer and bounds (`engine.networks`'s
  SirenConfig fields ``first_layer``, ``period``, ``band_limit``, ``low_limit``, ``hidden_bounds``).
Nothing here is image-specific; a surface SIREN (`engine.networks.Siren`) uses the same functions.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MAX_PERIOD = 1000.0
"""Longest period of an integer first layer a model file may hold (the engine trains with 4: twice the cube)."""
MAX_FREQUENCY_CUBE = 2_000_000
"""Most integer vectors (2 band_limit + 1)^in_features an integer first layer may draw from (16 MB of int64 per
input): a model file cannot make the engine build a larger cube (the engine trains 3D with a band of 16: 35,937)."""
MAX_HIDDEN_BOUND = 100.0
"""Largest TUNER bound c a model file may hold (TUNER uses 0.4 to 1; above ~10 it bounds nothing)."""


def checked_frequency_control(architecture: dict) -> None:
    """Check the integer first layer's and the hidden bounds' fields of a model file's SIREN architecture (a dict with
    every field present; issue 15, see `engine.networks.SirenConfig`): a ValueError says what does not fit; the bounds
    become a tuple."""
    first_layer, period = architecture["first_layer"], architecture["period"]
    if first_layer not in ("trained", "integer"):
        raise ValueError(f"its architecture's first_layer must be 'trained' or 'integer', got {first_layer!r}")
    if not isinstance(period, (int, float)) or isinstance(period, bool) or not 0.0 < period <= MAX_PERIOD:
        raise ValueError(f"its architecture's period must be a number in (0, {MAX_PERIOD:g}], got {period!r}")
    for name in ("band_limit", "low_limit"):
        value = architecture[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"its architecture's {name} must be an integer >= 0, got {value!r}")
    band, low, bounds = architecture["band_limit"], architecture["low_limit"], architecture["hidden_bounds"]
    if first_layer == "trained":
        if band or low or bounds is not None:
            raise ValueError(
                "its architecture gives band_limit, low_limit or hidden_bounds to a trained first layer: they belong to "
                "an integer one (first_layer 'integer')"
            )
        return
    dims = architecture["in_features"]
    if not 1 <= band or (2 * band + 1) ** dims > MAX_FREQUENCY_CUBE:
        raise ValueError(
            f"its architecture's band_limit is {band}: an integer first layer needs 1 to "
            f"{int((MAX_FREQUENCY_CUBE ** (1 / dims) - 1) // 2)} with {dims} inputs"
        )
    if ((2 * band + 1) ** dims - 1) // 2 < architecture["hidden_features"]:
        raise ValueError(
            f"its architecture's band_limit {band} leaves fewer distinct integer frequencies than its "
            f"{architecture['hidden_features']} first-layer neurons"
        )
    if low > band:
        raise ValueError(f"its architecture's low_limit {low} exceeds its band_limit {band}")
    if bounds is None:
        return
    if (
        not isinstance(bounds, (list, tuple)) or len(bounds) != 2
        or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and 0.0 < c <= MAX_HIDDEN_BOUND for c in bounds)
    ):  # fmt: skip
        raise ValueError(
            f"its architecture's hidden_bounds must be null or two numbers (c_low, c_high) in (0, {MAX_HIDDEN_BOUND:g}], "
            f"got {bounds!r}"
        )
    if low < 1:
        raise ValueError("its architecture bounds the hidden weights (hidden_bounds) without a low cube (low_limit 0)")
    architecture["hidden_bounds"] = (float(bounds[0]), float(bounds[1]))


def integer_frequencies(
    count: int, band_limit: int, dims: int = 2, low_limit: int | None = None, low_share: float = 0.7,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``count`` distinct integer frequency vectors (count, dims) int64 for a frozen first layer sin(2pi<k, x>/P + b).

    - Only one of k and -k (the half-space whose first non-zero entry is positive): sin(<k, x> + a) and
      sin(<-k, x> + b) span the same functions.
    - |k|_inf <= band_limit; the axis rows (1, 0, ...), (0, 1, ...) come first, the others in random order, drawn
      without replacement (TUNER's public code draws its low frequencies with replacement, giving duplicate neurons,
      and takes its candidates in product order).
    - With ``low_limit`` L (TUNER): ``low_share`` of them from the dense low cube |k|_inf <= L, the rest from
      L < |k|_inf <= band_limit (either side lends to the other when it runs short); without: from the whole cube.
    A ValueError when the cube holds fewer than ``count`` vectors.
    """
    if dims < 1 or band_limit < 1 or count < dims:
        raise ValueError(f"need dims >= 1, band_limit >= 1 and count >= dims, got {dims}, {band_limit}, {count}")
    axis = torch.arange(-band_limit, band_limit + 1)
    cube = torch.cartesian_prod(*[axis] * dims) if dims > 1 else axis[:, None]
    lead = cube.gather(1, (cube != 0).int().argmax(dim=1, keepdim=True)).squeeze(1)
    half = cube[lead > 0]
    if len(half) < count:
        raise ValueError(
            f"only {len(half)} distinct integer frequencies have |k| <= {band_limit} in {dims}D; {count} were asked "
            "for: raise the band limit or use fewer features"
        )
    axes = torch.eye(dims, dtype=torch.int64)
    rest = half[half.abs().sum(dim=1) != 1]  # every k but the axis rows
    rest = rest[torch.randperm(len(rest), generator=generator)]
    wanted = count - dims
    if low_limit is None:
        return torch.cat([axes, rest[:wanted]])
    is_low = rest.abs().amax(dim=1) <= low_limit
    low, high = rest[is_low], rest[~is_low]
    low_count = min(len(low), max(round(low_share * count) - dims, 0))
    low_count = max(low_count, wanted - len(high))
    return torch.cat([axes, low[:low_count], high[: wanted - low_count]])


class IntegerSineLayer(nn.Module):
    """sin(2pi <k, x> / P + b): integer frequencies k (a buffer, never trained) and a trainable bias b ~ U(-pi/2, pi/2).

    A network that starts with it is P-periodic along each axis by construction: every later sine layer only makes
    integer combinations of these frequencies. The layer is evaluated in float64 and returned in the input's dtype,
    so f(x + P) = f(x) up to the output's rounding rather than up to float32's rounding of large phases."""

    def __init__(self, frequencies: torch.Tensor, period, generator: torch.Generator | None = None):
        super().__init__()
        frequencies = torch.as_tensor(frequencies, dtype=torch.int64)
        if frequencies.ndim != 2 or len(tuple(period)) != frequencies.shape[1]:
            raise ValueError(f"frequencies must be (width, dims) with one period per dim, got {tuple(frequencies.shape)}")
        self.period = tuple(float(p) for p in period)
        self.register_buffer("frequencies", frequencies)
        self.bias = nn.Parameter(torch.empty(len(frequencies)).uniform_(-math.pi / 2, math.pi / 2, generator=generator))

    def angular(self) -> torch.Tensor:
        """2pi k / P (width, dims), float64: the layer's frozen weights in radians per unit."""
        period = torch.tensor(self.period, dtype=torch.float64, device=self.frequencies.device)
        return self.frequencies.double() * (2.0 * math.pi / period)

    def phase(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias.double(), x.double(), self.angular().T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.phase(x)).to(x.dtype)


def tuner_bounds(frequencies: torch.Tensor, low_limit: int, omega: float, c_low: float, c_high: float):
    """TUNER's bound c_j / omega on column j of the first hidden layer's weights (width,): c_low for the columns fed by
    low frequencies (|k|_inf <= low_limit), c_high for the high ones. A hidden neuron sin(sum_j a_j sin(<k_j, x> +
    p_j) + b) holds the integer combinations of the k_j, order m weighted by at most prod (|a_j|/2)^|m_j| / |m_j|!,
    so bounding |omega W| caps the energy above the input band (c = 1: 0.5, 0.125, 0.021 for orders 1-3). The
    defaults live with their fits: `engine.fit.FitConfig.tuner_bounds`,
    `engine.images.fit.ImageFitConfig.tuner_bounds`."""
    low = frequencies.abs().amax(dim=1) <= low_limit
    return torch.where(low, c_low, c_high).float() / omega


def tuner_initialize(layer: nn.Module, bounds: torch.Tensor, generator: torch.Generator | None = None) -> None:
    """TUNER's first hidden layer: column j ~ N(0, (0.3 * bounds_j)^2), inside its bound (`tuner_bounds`); columns
    with an infinite bound (inputs that are not sines of the input frequencies) keep their initialization."""
    with torch.no_grad():
        weight = layer.linear.weight
        bounds = bounds.to(weight.device)
        bounded = torch.isfinite(bounds)
        noise = torch.randn(weight.shape, generator=generator).to(weight.device)
        drawn = (noise * (0.3 * bounds.clamp(max=1e30))).clamp(-bounds, bounds)
        weight.copy_(torch.where(bounded, drawn, weight))


def clamp_columns(layer: nn.Module, bounds: torch.Tensor) -> None:
    """Clamp column j of a layer's weights to +-bounds_j (TUNER, after every optimizer step)."""
    with torch.no_grad():
        weight = layer.linear.weight
        bounds = bounds.to(weight.device)
        weight.copy_(weight.clamp(-bounds, bounds))
