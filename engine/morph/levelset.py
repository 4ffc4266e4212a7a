"""The level-set morph: f(x, t) = (1 - t) g_a(x) + t g_b(x) + t (1 - t) h(x, t), in the shared cube of both fits.

- The endpoints hold by construction (f(., 0) = g_a, f(., 1) = g_b) and topology may change along the way.
- The blend of two SDFs fails where their gradients cancel (grad g_a ~ -grad g_b): |grad f| collapses and the zero
  level set frays into blobs. The correction h (a smooth SIREN starting at zero) is trained near the zero level set
  of every f(., t) to keep |grad f| >= `MIN_GRADIENT_NORM` there, with an L2 pull towards the blend; where the blend
  is already sound (e.g. concentric spheres, whose blend is an exact SDF at every t) it stays zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import nn

from ..fields import towards_zero_set
from ..model import SDFModel
from ..networks import Siren, SirenConfig
from ..settings import SavedSettings
from ..training import Progress, TrainingMonitor, pick_device, seeded
from .common import check_fitted, frozen_networks, morph_metadata, shared_normalization

MIN_GRADIENT_NORM = 0.5
"""Where |grad f| of a level-set morph falls below this near its zero level set, the correction lifts it: a
distance field has 1, and below ~0.5 marching cubes starts to place the surface badly."""

SURFACE_BAND = 0.02
"""|f| (unit cube) within which a point of a level-set morph counts as on its zero level set."""


class LevelSetMorph(nn.Module):
    """f(x, t) = (1 - t) g_a(x) + t g_b(x) + t (1 - t) h(x, t) on points (n, 4) = (x, t), in the shared cube."""

    NETWORK_SHAPES = {"source": (3, 1), "target": (3, 1), "correction": (4, 1)}
    """The networks of a level-set morph file: name -> (inputs, outputs)."""

    def __init__(self, source: Siren, target: Siren, correction: Siren):
        super().__init__()
        self.source, self.target, self.correction = source, target, correction

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        points, t = inputs[:, :3], inputs[:, 3]
        blend = (1 - t) * self.source(points) + t * self.target(points)
        return blend + t * (1 - t) * self.correction(inputs)

    def networks(self) -> dict[str, Siren]:
        return {"source": self.source, "target": self.target, "correction": self.correction}

    @classmethod
    def from_networks(cls, networks: dict[str, Siren]) -> "LevelSetMorph":
        return cls(networks["source"], networks["target"], networks["correction"])


@dataclass(frozen=True)
class LevelSetMorphConfig(SavedSettings):
    """How the correction h of a level-set morph is trained."""

    steps: int = 500
    batch: int = 2000
    """Space-time points per step."""
    correction: SirenConfig = SirenConfig(hidden_features=128, hidden_layers=2, first_omega=8.0, in_features=4)
    """The correction network: small and of low first-layer frequency, since it only mends the blend smoothly."""
    learning_rate: float = 1e-4
    gradient_weight: float = 1.0
    """max(0, MIN_GRADIENT_NORM - |grad f|)^2 near the zero level set of f(., t)."""
    blend_weight: float = 0.1
    """(t (1 - t) h)^2: how strongly the morph stays the plain blend."""
    near_surface_share: float = 0.75
    """Share of points tracked onto the zero level set of f(., t) (then spread by `near_surface_sigma`)."""
    near_surface_sigma: float = 0.03
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self):
        self.require_counts("steps", "batch")
        if self.correction.in_features != 4 or self.correction.out_features != 1:
            raise ValueError(
                "LevelSetMorphConfig.correction must have in_features=4 and out_features=1 (a scalar of (x, t))"
            )
        if not self.learning_rate > 0:
            raise ValueError(f"LevelSetMorphConfig.learning_rate must be positive, got {self.learning_rate}")
        weights = (self.gradient_weight, self.blend_weight, self.near_surface_sigma)
        if any(not (value >= 0 and math.isfinite(value)) for value in weights):
            raise ValueError(
                "LevelSetMorphConfig.gradient_weight, blend_weight and near_surface_sigma must be finite and "
                f"non-negative, got {weights}"
            )
        if not 0.0 <= self.near_surface_share <= 1.0:
            raise ValueError(f"LevelSetMorphConfig.near_surface_share must be in [0, 1], got {self.near_surface_share}")


def morph_levelset(
    model_a: SDFModel,
    model_b: SDFModel,
    config: LevelSetMorphConfig | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    progress_interval_s: float = 0.5,
) -> SDFModel:
    """A level-set morph from ``model_a`` (t = 0) to ``model_b`` (t = 1); see the module's notes.

    ``on_progress`` and ``should_cancel`` behave as in `engine.fit.fit_sdf`."""
    config = config or LevelSetMorphConfig()
    for name, model in (("model_a", model_a), ("model_b", model_b)):
        check_fitted(model, name)
    device = pick_device(config.device)
    _, generator = seeded(config.seed)
    normalization = shared_normalization([model_a, model_b])
    source, target = frozen_networks(model_a, model_b, device)
    correction = Siren(config.correction).to(device).zero_output()
    morph = LevelSetMorph(source, target, correction)
    optimizer = torch.optim.Adam(correction.parameters(), lr=config.learning_rate)

    monitor = TrainingMonitor(
        "morph", config.steps, on_progress, should_cancel, progress_interval_s, advice="lower the learning rate"
    )
    for step in range(1, config.steps + 1):
        monitor.before_step(step)
        inputs = _spacetime_points(morph, config, generator, device)
        inputs.requires_grad_(True)
        values = morph(inputs)
        (gradient,) = torch.autograd.grad(values.sum(), inputs, create_graph=True)
        t = inputs[:, 3].detach()
        # Only the zero level set matters: elsewhere (e.g. at a sphere's centre, where every smooth SDF has a
        # vanishing gradient) a collapsed gradient is harmless and lifting it would bend the surface.
        near = (values.detach().abs() < SURFACE_BAND).float()
        terms = {
            "gradient": config.gradient_weight
            * ((MIN_GRADIENT_NORM - gradient[:, :3].norm(dim=-1)).clamp_min(0.0).square() * near).mean(),
            "blend": config.blend_weight * (t * (1 - t) * correction(inputs)).square().mean(),
        }
        loss = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        monitor.after_step(step, loss, terms)

    monitor.check_weights(correction)
    morph.eval()
    metadata = morph_metadata("levelset", model_a, model_b, config.to_dict(), monitor.elapsed_s, device)
    return SDFModel(morph.cpu(), normalization, metadata)


def _spacetime_points(morph: nn.Module, config: LevelSetMorphConfig, generator, device) -> torch.Tensor:
    """One step's points (x, t) (n, 4): a share tracked onto the zero level set of f(., t), then spread; the rest
    uniform in the cube."""
    count = config.batch
    near = int(round(count * config.near_surface_share))
    points = (torch.rand(count, 3, generator=generator) * 2 - 1).to(device)
    times = torch.rand(count, 1, generator=generator).to(device)
    tracked = towards_zero_set(morph, points[:near], times[:near], steps=4)
    noise = torch.randn(near, 3, generator=generator).to(device) * config.near_surface_sigma
    points = torch.cat([tracked + noise, points[near:]]).clamp(-1.0, 1.0)
    return torch.cat([points, times], dim=-1)
