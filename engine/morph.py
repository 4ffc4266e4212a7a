"""Morphing one fitted shape into another, as a time-dependent field f(x, t) with f(., 0) = g_a and f(., 1) = g_b.

- Both SDFs are fitted in ONE shared cube (`fit_pair`): each network is trained only inside its own cube.
- ``levelset`` (`LevelSetMorph`): f = (1 - t) g_a + t g_b + t (1 - t) h(x, t). The endpoints hold by construction
  and topology may change along the way. The blend of two SDFs fails where their gradients cancel (grad g_a ~
  -grad g_b): |grad f| collapses and the zero level set frays into blobs. The correction h (a smooth SIREN starting
  at zero) is trained near the zero level set of every f(., t) to keep |grad f| >= `MIN_GRADIENT_NORM` there, with
  an L2 pull towards the blend; where the blend is already sound (e.g. concentric spheres, whose blend is an exact
  SDF at every t) it stays zero.
- ``flow``: a warp T(x, t) carries g_a (`engine.warp`).
- A morph is saved as one file of named networks (`engine.model.save_networks`); `load_morph` reads it back.
  Its time runs over [0, 1]; `engine.evolution.at_time` and `extract_frames` take it like an evolution.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from .conventions import Normalization
from .evolution import EVOLUTION_TIME_KEY, towards_zero_set
from .fit import FitConfig, Progress, TrainingMonitor, fit_sdf, pick_device
from .mesh_io import TriangleMesh
from .model import SDFModel, Siren, SirenConfig, load_networks, save_networks

MIN_GRADIENT_NORM = 0.5
"""Where |grad f| of a level-set morph falls below this near its zero level set, the correction lifts it: a
distance field has 1, and below ~0.5 marching cubes starts to place the surface badly."""

SURFACE_BAND = 0.02
"""|f| (unit cube) within which a point of a level-set morph counts as on its zero level set."""

MORPH_KEY = "morph"
"""Metadata key of a morph: {"method": ..., "sources": [...], "config": {...}, "train_seconds": ...}."""


def fit_pair(
    mesh_a: TriangleMesh,
    mesh_b: TriangleMesh,
    config: FitConfig | None = None,
    *,
    on_progress: Callable[[int, Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> tuple[SDFModel, SDFModel]:
    """Fit both shapes of a morph in ONE cube, the bounding box of both: a fitted SDF is trained only inside its own
    cube, so two shapes fitted apart would meet each other's untrained space. ``on_progress(index, progress)``."""
    normalization = Normalization.fit_bounds(np.concatenate([mesh_a.vertices, mesh_b.vertices]))
    return tuple(
        fit_sdf(
            mesh,
            config,
            on_progress=None if on_progress is None else (lambda p, i=index: on_progress(i, p)),
            should_cancel=should_cancel,
            normalization=normalization,
        )
        for index, mesh in enumerate((mesh_a, mesh_b))
    )


def align_bounds(target: TriangleMesh, source: TriangleMesh) -> tuple[TriangleMesh, float, np.ndarray]:
    """The target moved and uniformly scaled so its bounding box has the source's centre and largest side: the
    morph of two files from anywhere (a bunny of 10 units, a knot of 1) then changes shape, not size and place.
    Returns the moved target, the scale and the offset (x -> x * scale + offset)."""
    def box(mesh):
        low, high = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
        return (low + high) / 2, (high - low).max()

    (source_center, source_side), (target_center, target_side) = box(source), box(target)
    scale = source_side / target_side
    offset = source_center - target_center * scale
    return TriangleMesh(target.vertices * scale + offset, target.faces), float(scale), offset


def frozen_networks(model_a: SDFModel, model_b: SDFModel, device: torch.device) -> tuple[Siren, Siren]:
    """Copies of the two fitted networks of a morph on ``device``, in eval mode and untrainable."""
    networks = tuple(copy.deepcopy(model.network).to(device).eval() for model in (model_a, model_b))
    for parameter in [*networks[0].parameters(), *networks[1].parameters()]:
        parameter.requires_grad_(False)
    return networks


def shared_normalization(models: Sequence[SDFModel]) -> Normalization:
    """The one normalization every model of a morph must share (see `fit_pair`); a ValueError names the fix."""
    first = models[0].normalization
    if any(model.normalization != first for model in models[1:]):
        raise ValueError(
            "the two shapes of a morph must be fitted in one shared cube (engine.morph.fit_pair, or "
            "'python -m engine morph MESH_A MESH_B'); these models were fitted apart"
        )
    return first


class LevelSetMorph(nn.Module):
    """f(x, t) = (1 - t) g_a(x) + t g_b(x) + t (1 - t) h(x, t) on points (n, 4) = (x, t), in the shared cube."""

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
class LevelSetMorphConfig:
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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def morph_levelset(
    model_a: SDFModel,
    model_b: SDFModel,
    config: LevelSetMorphConfig | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    progress_interval_s: float = 0.5,
) -> SDFModel:
    """A level-set morph from ``model_a`` (t = 0) to ``model_b`` (t = 1); see the module's notes."""
    config = config or LevelSetMorphConfig()
    for model in (model_a, model_b):
        if model.network.config.in_features != 3:
            raise ValueError("a morph needs two fitted 3D SDF models (from 'fit'), not time-dependent ones")
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    normalization = shared_normalization([model_a, model_b])
    source, target = frozen_networks(model_a, model_b, device)
    correction = Siren(config.correction).to(device).zero_output()
    morph = LevelSetMorph(source, target, correction)
    optimizer = torch.optim.Adam(correction.parameters(), lr=config.learning_rate)

    monitor = TrainingMonitor("morph", config.steps, on_progress, should_cancel, progress_interval_s)
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

    morph.eval()
    metadata = morph_metadata("levelset", model_a, model_b, config.to_dict(), monitor.elapsed_s, device)
    return SDFModel(morph.cpu(), normalization, metadata)


def _spacetime_points(morph: nn.Module, config: LevelSetMorphConfig, generator, device) -> torch.Tensor:
    count = config.batch
    near = int(round(count * config.near_surface_share))
    points = (torch.rand(count, 3, generator=generator) * 2 - 1).to(device)
    times = torch.rand(count, 1, generator=generator).to(device)
    tracked = towards_zero_set(morph, points[:near], times[:near], steps=4)
    noise = torch.randn(near, 3, generator=generator).to(device) * config.near_surface_sigma
    points = torch.cat([tracked + noise, points[near:]]).clamp(-1.0, 1.0)
    return torch.cat([points, times], dim=-1)


def morph_metadata(method: str, model_a: SDFModel, model_b: SDFModel, config: dict, seconds: float, device) -> dict:
    """The metadata every morph carries: its time range (as an evolution's, so frames extract alike) and recipe."""
    return {
        EVOLUTION_TIME_KEY: {"time_scale": 1.0, "time_range": [0.0, 1.0]},
        MORPH_KEY: {
            "method": method,
            "sources": [model_a.metadata.get("sources"), model_b.metadata.get("sources")],
            "config": config,
            "train_seconds": seconds,
            "device": str(device),
        },
    }


def morph_methods() -> dict[str, type]:
    """Morph kinds by name: each an nn.Module of (x, t) with ``networks()`` and ``from_networks(dict)``."""
    from .warp import FlowMorph

    return {"levelset": LevelSetMorph, "flow": FlowMorph}


def morph_config(
    method: str, *, steps: int | None = None, device: Literal["auto", "cpu", "cuda"] = "auto", seed: int = 0
):
    """The default settings of morph ``method`` (a name of `morph_methods`), with ``steps`` training steps if given."""
    from .warp import FlowMorphConfig

    if method not in morph_methods():
        raise ValueError(f"unknown morph method {method!r}; choose one of {', '.join(morph_methods())}")
    config = (LevelSetMorphConfig if method == "levelset" else FlowMorphConfig)(device=device, seed=seed)
    return config if steps is None else dataclasses.replace(config, steps=steps)


def morph(
    model_a: SDFModel,
    model_b: SDFModel,
    config,
    *,
    landmarks: tuple[np.ndarray, np.ndarray] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> SDFModel:
    """Morph ``model_a`` (t = 0) into ``model_b`` (t = 1) by the method whose config (`morph_config`) is given;
    ``landmarks`` (source points, target points) steer the flow method only."""
    from .warp import morph_flow

    callbacks = {"on_progress": on_progress, "should_cancel": should_cancel}
    if isinstance(config, LevelSetMorphConfig):
        if landmarks is not None:
            raise ValueError("landmarks apply to the flow method only")
        return morph_levelset(model_a, model_b, config, **callbacks)
    return morph_flow(model_a, model_b, config, landmarks=landmarks, **callbacks)


def save_morph(model: SDFModel, path: str | Path) -> None:
    save_networks(path, model.network.networks(), model.normalization, model.metadata)


def load_morph(path: str | Path) -> SDFModel:
    """A morph saved by `save_morph` (no pickle), ready for `engine.evolution.extract_frames`."""
    networks, normalization, metadata = load_networks(path)
    method = metadata.get(MORPH_KEY, {}).get("method")
    methods = morph_methods()
    if method not in methods:
        raise ValueError(f"{path} is not a morph file (method {method!r}); write one with 'python -m engine morph'")
    return SDFModel(methods[method].from_networks(networks).eval(), normalization, metadata)


def frame_times(frames: int) -> list[float]:
    """``frames`` times evenly from 0 to 1 (both ends included)."""
    if frames < 2:
        raise ValueError(f"a morph needs at least 2 frames (its two ends), got {frames}")
    return [i / (frames - 1) for i in range(frames)]
