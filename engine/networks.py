"""The networks the engine trains, and the one registry of network kinds that model files name.

- `Siren` (kind ``"siren"``): sin(omega (W x + b)) layers and a linear output, configured by `SirenConfig`, with
  an explicit pass for its value, gradient and Hessian (`siren_derivatives`).
- `NETWORK_KINDS` maps the kind written in a model file's header to its class and config class; `network_kind`
  and `build_network` go between the two. A new architecture joins by adding one entry here.
- `evaluate`: a network's values at many points in batches of bounded memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.output(self.layers(x))
        return out.squeeze(-1) if self.config.out_features == 1 else out

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


@dataclass(frozen=True)
class NetworkKind:
    """A kind of network a model file can hold: built as ``network_class(config_class(**architecture))``, its
    architecture saved as the fields of its ``config`` attribute."""

    network_class: type[nn.Module]
    config_class: type


NETWORK_KINDS: dict[str, NetworkKind] = {"siren": NetworkKind(Siren, SirenConfig)}
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


def build_network(kind: str, config: dict) -> nn.Module:
    """A fresh network of ``kind`` with the architecture ``config`` (as saved in a model file's header)."""
    if kind not in NETWORK_KINDS:
        raise ValueError(
            f"unknown network kind {kind!r} (this engine knows {', '.join(NETWORK_KINDS)}): the file was written by "
            "a newer engine; update the engine to read it"
        )
    entry = NETWORK_KINDS[kind]
    return entry.network_class(entry.config_class(**config))


def evaluate(network: nn.Module, points: torch.Tensor, batch_size: int = 65536) -> torch.Tensor:
    """f at points (n, d) in batches of bounded memory, without gradients; returns (n,) on the CPU."""
    device = next(network.parameters()).device
    out = torch.empty(len(points), dtype=torch.float32)
    with torch.no_grad():
        for start in range(0, len(points), batch_size):
            chunk = points[start : start + batch_size].to(device, torch.float32)
            out[start : start + batch_size] = network(chunk).float().cpu()
    return out
