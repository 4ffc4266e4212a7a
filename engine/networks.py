"""The networks the engine trains, and the one registry of network kinds that model files name.

- `Siren` (kind ``"siren"``): sin(omega (W x + b)) layers and a linear output, configured by `SirenConfig`, with
  an explicit pass for its value, gradient and Hessian (`siren_derivatives`).
- `NETWORK_KINDS` maps the kind written in a model file's header to its class and config class; `network_kind`
  and `build_network` go between the two. A new architecture joins by adding one entry here.
- A model file is untrusted input: `network_from_state` checks its architecture (JSON types, limits such as
  `MAX_HIDDEN_FEATURES`) and its tensors' names, shapes and values against each other BEFORE building anything, so
  a small file cannot make the engine allocate more than the weights it holds.
- `evaluate`: a network's values at many points in batches of bounded memory.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import nn

# Re-exported as well: the image fields import these from here (issue 16).
from .frequency_control import IntegerSineLayer, checked_frequency_control, clamp_columns, integer_frequencies  # noqa: F401
from .frequency_control import tuner_bounds, tuner_initialize  # noqa: F401


@dataclass(frozen=True)
class SirenConfig:
    """Architecture of a SIREN: sin(omega * (W x + b)) layers and a linear output."""

    hidden_features: int = 256
    """Width of every hidden layer."""
    hidden_layers: int = 3
    """Number of hidden-to-hidden sine layers (after the first sine layer)."""
    first_omega: float = 30.0
    """Frequency factor of the first layer; higher fits finer detail but risks noise."""
    hidden_omega: float = 30.0
    """Frequency factor of the hidden layers."""
    in_features: int = 3
    """Input size: 3 for an SDF f(x), 4 for a time-dependent f(x, t)."""
    out_features: int = 1
    """Output size: 1 for a scalar field (``forward`` gives (n,)), 3 for a vector field such as a warp (n, 3)."""
    first_layer: Literal["trained", "integer"] = "trained"
    """``trained``: SIREN's first layer. ``integer`` (TUNER, periodic networks): its weights are distinct integer
    vectors k (`integer_frequencies`) times 2 pi / (period first_omega), frozen (no gradient), its bias trainable;
    the network is then ``period``-periodic along every axis (`Siren.first_layer_frequencies` recovers k)."""
    period: float = 4.0
    """Period P of an ``integer`` first layer (unit-cube lengths; TUNER's 4 is twice the cube, so nothing tiles)."""
    band_limit: int = 0
    """Largest |k_i| of an ``integer`` first layer's frequencies (2 pi band_limit / period radians per unit)."""
    low_limit: int = 0
    """The dense low cube |k|_inf <= low_limit of an ``integer`` first layer holds 70 % of its frequencies, the rest
    lie sparse up to ``band_limit`` (TUNER); 0: drawn from the whole cube."""
    hidden_bounds: tuple[float, float] | None = None
    """TUNER's (c_low, c_high) with an ``integer`` first layer and a low cube: the first hidden layer's weights on the
    columns fed by low (high) frequencies stay within +-c / hidden_omega, clamped after every optimizer step
    (`Siren.clamp_hidden_weights`; they start as SIREN's, clamped); None: unbounded."""


class SineLayer(nn.Module):
    """sin(omega * (W x + b)) with the SIREN initialization."""

    def __init__(self, in_features: int, out_features: int, omega: float, is_first: bool):
        super().__init__()
        self.omega = omega
        self.linear = nn.Linear(in_features, out_features)
        bound = 1.0 / in_features if is_first else math.sqrt(6.0 / in_features) / omega
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega * self.linear(x))


class Siren(nn.Module):
    """A field f: R^in -> R^out. ``forward`` maps (n, in_features) to (n,) for a scalar field (out_features = 1),
    else to (n, out_features)."""

    def __init__(self, config: SirenConfig):
        super().__init__()
        self.config = config
        width = config.hidden_features
        layers = [SineLayer(config.in_features, width, config.first_omega, is_first=True)]
        layers += [SineLayer(width, width, config.hidden_omega, is_first=False) for _ in range(config.hidden_layers)]
        self.layers = nn.Sequential(*layers)
        self.output = nn.Linear(width, config.out_features)
        bound = math.sqrt(6.0 / width) / config.hidden_omega
        with torch.no_grad():
            self.output.weight.uniform_(-bound, bound)
        if config.first_layer == "integer":
            self._integer_first_layer()

    def _integer_first_layer(self) -> None:
        config, first = self.config, self.layers[0].linear
        frequencies = integer_frequencies(
            config.hidden_features, config.band_limit, config.in_features, config.low_limit or None
        )
        with torch.no_grad():
            first.weight.copy_(frequencies.double() * (2.0 * math.pi / (config.period * config.first_omega)))
            # A phase shift U(-pi/2, pi/2) (TUNER): the layer multiplies its bias by omega too.
            first.bias.uniform_(-math.pi / 2, math.pi / 2).div_(config.first_omega)
        first.weight.requires_grad_(False)
        # The first hidden layer keeps SIREN's initialization, inside the bounds (TUNER's own start is
        # `tuner_initialize`, which `engine.fit` applies on request: at 256 neurons it trained slower here).
        self.clamp_hidden_weights(self.hidden_column_bounds())

    def first_layer_frequencies(self) -> torch.Tensor | None:
        """The integer frequency vectors k (width, in_features) int64 of an ``integer`` first layer, recovered from its
        weights as k = W first_omega period / (2 pi) (TUNER's public code divides by period pi / 2 instead); None for a
        trained first layer."""
        if self.config.first_layer != "integer":
            return None
        scaled = self.layers[0].linear.weight.double() * (self.config.first_omega * self.config.period / (2.0 * math.pi))
        return scaled.round().long()

    def hidden_column_bounds(self) -> torch.Tensor | None:
        """TUNER's bound c_j / hidden_omega on each column of the first hidden layer (`tuner_bounds`), or None where
        the config bounds nothing (no ``hidden_bounds``, no hidden layer)."""
        config = self.config
        if config.hidden_bounds is None or config.hidden_layers == 0 or config.first_layer != "integer":
            return None
        return tuner_bounds(self.first_layer_frequencies().cpu(), config.low_limit, config.hidden_omega, *config.hidden_bounds)

    def release_first_layer(self) -> None:
        """Make an ``integer`` first layer an ordinary trained one (its config, its gradient) after its weights were
        changed (a change of coordinates, `engine.model.reexpressed`): they are no longer the integer frequencies."""
        self.config = dataclasses.replace(
            self.config, first_layer="trained", period=4.0, band_limit=0, low_limit=0, hidden_bounds=None
        )
        self.layers[0].linear.weight.requires_grad_(True)

    def clamp_hidden_weights(self, bounds: torch.Tensor | None) -> None:
        """Clamp the first hidden layer's columns to ``bounds`` (`hidden_column_bounds`, computed once per fit: after
        every optimizer step); nothing for None."""
        if bounds is not None:
            clamp_columns(self.layers[1], bounds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.output(self.layers(x))
        return out.squeeze(-1) if self.config.out_features == 1 else out

    @staticmethod
    def state_shapes(config: SirenConfig) -> dict[str, tuple[int, ...]]:
        """The names and shapes of the tensors of a SIREN's ``state_dict`` with architecture ``config``."""
        width = config.hidden_features
        shapes = {}
        for index in range(config.hidden_layers + 1):
            shapes[f"layers.{index}.linear.weight"] = (width, config.in_features if index == 0 else width)
            shapes[f"layers.{index}.linear.bias"] = (width,)
        shapes["output.weight"] = (config.out_features, width)
        shapes["output.bias"] = (config.out_features,)
        return shapes

    def zero_output(self) -> "Siren":
        """Zero the output layer, so the network starts as the zero function (a correction or a displacement that
        changes nothing until training moves it); returns the network."""
        with torch.no_grad():
            self.output.weight.zero_()
            self.output.bias.zero_()
        return self


_UPPER_TRIANGLE = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
"""The entries (i, j), i <= j, of a symmetric 3x3 matrix that `siren_derivatives` accumulates."""


@torch.no_grad()
def siren_derivatives(network: Siren, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """f (n,), grad f (n, 3) and Hess f (n, 3, 3) of a scalar Siren at points (n, 3), without autograd (the fast
    path of `engine.geometry`).

    f is linear except for its sines, so Hess f = sum over layers l of J_l^T diag(a_l * s_l'') J_l, where J_l is
    the Jacobian of layer l's pre-activations z_l with respect to x (carried forward), s_l'' = -omega^2 sin(omega z_l)
    and a_l = df/d(sin(omega z_l)) is the adjoint (carried backward).
    """
    count = len(points)
    activations, jacobian = points, None  # jacobian: (3, n, width), d(activations)/dx_i stacked over i
    saved = []
    for layer in network.layers:
        weight, omega = layer.linear.weight, layer.omega
        pre = torch.addmm(layer.linear.bias, activations, weight.T)
        if jacobian is None:  # the first layer's Jacobian is its weight, the same at every point
            pre_jacobian = weight.T
        else:
            pre_jacobian = (jacobian.reshape(3 * count, -1) @ weight.T).view(3, count, -1)
        phase = omega * pre
        sine, cosine = torch.sin(phase), torch.cos(phase)
        saved.append((pre_jacobian, sine, cosine, omega, weight))
        activations = sine
        jacobian = (omega * cosine) * (pre_jacobian.unsqueeze(1) if pre_jacobian.ndim == 2 else pre_jacobian)
    value = network.output(activations).squeeze(-1)

    adjoint = network.output.weight[0].expand(count, -1)
    upper = points.new_zeros(count, len(_UPPER_TRIANGLE))
    for pre_jacobian, sine, cosine, omega, weight in reversed(saved):
        second = (-omega * omega) * adjoint * sine
        if pre_jacobian.ndim == 2:
            products = torch.stack([pre_jacobian[i] * pre_jacobian[j] for i, j in _UPPER_TRIANGLE], dim=1)
            upper += second @ products
        else:
            weighted = second * pre_jacobian
            for column, (i, j) in enumerate(_UPPER_TRIANGLE):
                upper[:, column] += torch.linalg.vecdot(weighted[i], pre_jacobian[j])
        adjoint = (adjoint * (omega * cosine)) @ weight
    hessian = points.new_empty(count, 3, 3)
    for column, (i, j) in enumerate(_UPPER_TRIANGLE):
        hessian[:, i, j] = hessian[:, j, i] = upper[:, column]
    return value, adjoint, hessian


MAX_HIDDEN_FEATURES = 2048
"""Widest hidden layer a model file may hold: 8 times the widest the engine trains (256, the fit presets; an
evolution adds a few); one such layer already holds 4M weights (16 MB)."""
MAX_HIDDEN_LAYERS = 32
"""Most hidden layers a model file may hold: ten times the most the engine trains (3)."""
MAX_OMEGA = 1000.0
"""Largest SIREN frequency factor a model file may hold (the engine trains with 8 to 30): above it the field is
noise at any grid resolution."""
IN_FEATURES = (3, 4)
"""Input sizes of the engine's networks: a point (an SDF, a fit) or a point and a time (an evolution, a morph; an
image point and a time: an image morph's warp)."""
OUT_FEATURES = (1, 2, 3)
"""Output sizes of the engine's networks: a scalar field (an SDF), a 2-vector (an image morph's warp) or a
3-vector (a flow morph's warp)."""


SIREN_FIELDS_ADDED_LATER = {
    "out_features": 1, "first_layer": "trained", "period": 4.0, "band_limit": 0, "low_limit": 0, "hidden_bounds": None
}
"""Fields of `SirenConfig` that files written before them lack, with the value those files mean (out_features came
with the flow morph's vector warp, issue 6; the integer first layer and hidden bounds with TUNER, issue 15); every
other field is required."""


def checked_siren_config(architecture) -> SirenConfig:
    """The `SirenConfig` of a model file's architecture (a JSON object), every field present, of its JSON type and
    within the limits above; a ValueError says what does not fit."""
    if not isinstance(architecture, dict):
        raise ValueError(f"its architecture must be a JSON object, got {type(architecture).__name__}")
    names = [f.name for f in dataclasses.fields(SirenConfig)]
    architecture = {**SIREN_FIELDS_ADDED_LATER, **architecture}
    missing, unknown = [n for n in names if n not in architecture], sorted(set(architecture) - set(names))
    if missing or unknown:
        parts = [f"lacks {', '.join(missing)}" if missing else "", f"has unknown {', '.join(unknown)}" if unknown else ""]
        raise ValueError(f"its architecture {' and '.join(p for p in parts if p)}")
    for name in ("hidden_features", "hidden_layers", "in_features", "out_features"):
        value = architecture[name]
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"its architecture's {name} must be an integer, got {value!r}")
    for name in ("first_omega", "hidden_omega"):
        value = architecture[name]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"its architecture's {name} must be a finite number, got {value!r}")
        if not 0.0 < value <= MAX_OMEGA:
            raise ValueError(
                f"its architecture's {name} is {value}, outside (0, {MAX_OMEGA:g}] (the engine trains with 8 to 30; "
                "higher turns the field into noise)"
            )
    limits = {
        "hidden_features": (1, MAX_HIDDEN_FEATURES, "8 times the widest network the engine trains"),
        "hidden_layers": (0, MAX_HIDDEN_LAYERS, "10 times the deepest network the engine trains"),
    }
    for name, (low, high, why) in limits.items():
        if not low <= architecture[name] <= high:
            raise ValueError(f"its architecture's {name} is {architecture[name]}, outside [{low}, {high}] ({why})")
    if architecture["in_features"] not in IN_FEATURES or architecture["out_features"] not in OUT_FEATURES:
        raise ValueError(
            f"its network takes {architecture['in_features']} inputs and gives {architecture['out_features']} "
            "outputs; the engine's networks take 3 (a point, or an image point and a time) or 4 (a point and a time) "
            "and give 1 (a distance), 2 (an image warp) or 3 (a warp)"
        )
    checked_frequency_control(architecture)
    return SirenConfig(**{name: architecture[name] for name in names})


@dataclass(frozen=True)
class NetworkKind:
    """A kind of network a model file can hold: built as ``network_class(config_class(**architecture))``, its
    architecture saved as the fields of its ``config`` attribute."""

    network_class: type[nn.Module]
    config_class: type
    checked_config: Callable[[object], object]
    """The config of a model file's architecture (JSON), checked against the kind's limits (ValueError)."""
    state_shapes: Callable[[object], dict[str, tuple[int, ...]]]
    """The names and shapes of the ``state_dict`` of a network of a config."""


NETWORK_KINDS: dict[str, NetworkKind] = {
    "siren": NetworkKind(Siren, SirenConfig, checked_siren_config, Siren.state_shapes),
}
"""Network kinds by the name a model file's header gives them."""


def network_kind(network: nn.Module) -> str:
    """The registered kind of ``network`` (its exact class: a subclass may hold other weights)."""
    for name, kind in NETWORK_KINDS.items():
        if type(network) is kind.network_class:
            return name
    raise ValueError(
        f"a {type(network).__name__} is no registered network kind (known: {', '.join(NETWORK_KINDS)}); "
        "register it in engine.networks.NETWORK_KINDS to save it"
    )


def _registered(kind) -> NetworkKind:
    if not isinstance(kind, str) or kind not in NETWORK_KINDS:
        raise ValueError(
            f"unknown network kind {kind!r} (this engine knows {', '.join(NETWORK_KINDS)}): the file was written by "
            "a newer engine; update the engine to read it"
        )
    return NETWORK_KINDS[kind]


def build_network(kind: str, config: dict) -> nn.Module:
    """A fresh network of ``kind`` with the architecture ``config`` (as saved in a model file's header)."""
    entry = _registered(kind)
    return entry.network_class(entry.config_class(**config))


def checked_config(kind, architecture):
    """The config of a network of ``kind`` (a name of `NETWORK_KINDS`) with a model file's ``architecture``,
    checked (JSON types, limits); builds nothing. A ValueError says what does not fit."""
    return _registered(kind).checked_config(architecture)


def network_from_state(kind: str, config, state: dict) -> nn.Module:
    """A network of ``kind`` and ``config`` (from `checked_config`) holding the tensors ``state``: their names,
    shapes, dtypes and values (finite) are checked against the config before the network is built, so it is never
    larger than the weights given. A ValueError says what does not fit."""
    expected = _registered(kind).state_shapes(config)
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ValueError("its weights must be a set of named tensors")
    missing, unknown = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unknown:
        what = [f"lack {', '.join(missing[:3])}" if missing else "", f"hold unknown {', '.join(unknown[:3])}" if unknown else ""]
        raise ValueError(f"its weights {' and '.join(w for w in what if w)} for its architecture")
    for name, shape in expected.items():
        tensor = state[name]
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"its tensor {name} has shape {tuple(tensor.shape)}, but its architecture needs {shape}"
            )
        if not tensor.is_floating_point():
            raise ValueError(f"its tensor {name} holds {tensor.dtype} values, not floating-point weights")
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"its tensor {name} holds NaN or infinite weights")
    network = _registered(kind).network_class(config)
    network.load_state_dict(state)
    return network


def evaluate(network: nn.Module, points: torch.Tensor, batch_size: int = 65536) -> torch.Tensor:
    """f at points (n, d) in batches of bounded memory, without gradients; returns (n,) on the CPU."""
    device = next(network.parameters()).device
    out = torch.empty(len(points), dtype=torch.float32)
    with torch.no_grad():
        for start in range(0, len(points), batch_size):
            chunk = points[start : start + batch_size].to(device, torch.float32)
            out[start : start + batch_size] = network(chunk).float().cpu()
    return out


# A forward-mode Jacobian of sine chains (issue 16: images use it).


def sine_jacobian(first: nn.Module, hidden, output: nn.Linear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The chain output(hidden[-1](... hidden[0](first(x)))) (n, out) and its Jacobian d out / dx (n, out, dims),
    carried forward as one tangent per input dimension: differentiable with respect to the weights (a loss may use
    both), and about (1 + dims) forward passes whatever the number of outputs. ``first`` is a `SineLayer` or an
    `IntegerSineLayer`, ``hidden`` a sequence of `SineLayer`."""
    if isinstance(first, IntegerSineLayer):
        phase = first.phase(x)
        value = torch.sin(phase).to(x.dtype)
        tangent = (torch.cos(phase).unsqueeze(1) * first.angular().T.unsqueeze(0)).to(x.dtype)
    else:
        phase = first.omega * first.linear(x)
        value = torch.sin(phase)
        tangent = (first.omega * torch.cos(phase)).unsqueeze(1) * first.linear.weight.T.unsqueeze(0)
    for layer in hidden:
        phase = layer.omega * layer.linear(value)
        tangent = (layer.omega * torch.cos(phase)).unsqueeze(1) * (tangent @ layer.linear.weight.T)
        value = torch.sin(phase)
    return output(value), (tangent @ output.weight.T).transpose(1, 2)
