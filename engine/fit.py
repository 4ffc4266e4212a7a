"""Fitting a SIREN SDF to meshes: configuration, presets and the training loop."""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np
import torch

from .conventions import Normalization
from .mesh_io import MeshError, TriangleMesh, merge_meshes
from .model import SDFModel
from .networks import Siren, SirenConfig, sine_jacobian, tuner_initialize
from .point_clouds import PointCloud, PointSource, merge_point_clouds, with_normals
from .sampling import MeshSource, SamplePool, VolumeSampling
from .settings import SavedSettings
from .training import Diverged, Progress, TrainingMonitor, cosine_schedule, pick_device, seeded


@dataclass(frozen=True)
class LossWeights:
    """Weights of the i3d fitting losses."""

    surface: float = 3e3
    """On-surface value f(x)^2."""
    sdf: float = 2e2
    """Off-surface (f(x) - sdf(x))^2 against the true signed distance."""
    normal: float = 1e2
    """Normal alignment 1 - cos(grad f, n) on the surface."""
    eikonal: float = 5e1
    """(|grad f| - 1)^2 on the volume samples."""
    off_surface: float = 1e2
    """SIREN's exp(-off_surface_alpha |f(x)|) on volume samples without a distance (point clouds fitted with
    ``point_method`` "siren"), in place of the off-surface SDF term: it keeps the zero set away from them."""
    off_surface_alpha: float = 1e2
    """The alpha of the off-surface term (SIREN's 100, in unit-cube lengths)."""


@dataclass(frozen=True)
class FitConfig(SavedSettings):
    """Everything that decides a fit; saved beside every model so a result can be reproduced."""

    network: SirenConfig = field(default_factory=SirenConfig)
    """Architecture of the SIREN."""
    steps: int = 2000
    """Optimizer steps."""
    surface_batch: int = 5000
    """Surface samples per step."""
    volume_batch: int = 5000
    """Volume samples per step."""
    learning_rate: float = 5e-4
    """Adam learning rate at the start; it decays along a cosine to ``final_learning_rate``."""
    final_learning_rate: float = 1e-5
    """Learning rate at the last step."""
    weights: LossWeights = field(default_factory=LossWeights)
    """Loss weights."""
    weight_scale: float = 1.0
    """Factor on the initial weights of every layer but the output (weight scaling, Yeom et al. ICLR 2025: larger
    initial weights let a sinusoidal network fit high frequencies sooner); 1: the SIREN initialization."""
    warmup_steps: int = 0
    """Steps over which the learning rate rises linearly from near 0 to ``learning_rate`` before the cosine decay."""
    weight_averaging: float = 0.995
    """Decay of an exponential moving average of the weights, validated and kept in place of the raw weights; it
    smooths the step-to-step noise of the last steps. 0 turns it off."""
    eikonal_share: float = 0.25
    """Share of the volume samples that also get the eikonal term; the others need only f, not grad f, which
    makes them about half as costly."""
    compiled_step: bool = False
    """Train on `explicit_fitting_loss` compiled by `torch.compile` (the same loss; grad f from the explicit
    forward-mode pass, which compiles where autograd's double backward does not). For CUDA, where a step of this
    small network is bound by kernel launches; on the CPU it costs more (0.38 against 0.25 CPU s a step for 3x256,
    plus 2-17 s of compiling: bench/results/fit_step_cpu.md), so it is off by default."""
    curvature_sampling: bool = False
    """Draw surface samples from |curvature| bands (i3d: 20/60/20 % from low/medium/high) instead of by area
    (meshes only)."""
    point_method: Literal["winding", "siren"] = "winding"
    """How a point cloud's volume samples are supervised (meshes ignore it): ``winding``, a signed distance (sign
    from the generalized winding number of the oriented points, distance from the nearest points and their tangent
    planes, `engine.point_clouds.PointSource`); ``siren``, none (SIREN's off-surface term on uniform samples)."""
    volume_sampling: VolumeSampling = field(default_factory=VolumeSampling)
    """Where volume samples go."""
    pool_size: int = 400_000
    """Samples in each of the surface and volume pools."""
    refresh_every: int = 50
    """Steps between refreshes of a slice of the pools."""
    refresh_fraction: float = 0.05
    """Share of each pool replaced at a refresh."""
    validate_every: int = 100
    """Steps between evaluations on a fixed validation set; the best weights there are kept."""
    seed: int = 0
    """Seed of every random draw: the same inputs and config give the same model on the same device."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train: ``auto`` takes CUDA when present."""
    tuner: bool = False
    """TUNER (issue 15): the network's first layer is frozen integer frequencies of period 4 (twice the cube), 70 %
    in a dense low cube, the rest sparse up to ``tuner_band``; the first hidden layer starts inside the bounds
    ``tuner_bounds`` and is clamped to them after every step (`engine.networks.SirenConfig`, saved in the model)."""
    tuner_band: int = 16
    """TUNER's band limit: the largest |k_i| of the integer frequencies (2 pi k / 4 radians per unit-cube length)."""
    tuner_bounds: tuple[float, float] = (0.25, 0.1)
    """TUNER's (c_low, c_high): bounds |hidden_omega W| of the first hidden layer's low and high columns. SIREN's start
    has |hidden_omega W| <= sqrt(6 / width) (0.15 at 256), so c_high 0.1 binds from the first step; at 600 steps these
    beat (1, 0.5), which hardly binds, on the sphere, the torus and the bunny (bench/results/tuner_sdf_cpu.md)."""
    tuner_init: Literal["siren", "tuner"] = "siren"
    """The first hidden layer's start with ``tuner``: SIREN's (inside the bounds), or TUNER's N(0, (0.3 c /
    hidden_omega)^2) per column (`engine.networks.tuner_initialize`), whose 3.4x larger pre-activations at 256
    neurons trained a sphere to 13.6 validation loss in 300 steps against 8.5 (bench/results/tuner_sdf_cpu.md)."""

    def network_config(self) -> SirenConfig:
        """The architecture a fit builds: ``network``, with TUNER's first layer and bounds where ``tuner`` is set."""
        if not self.tuner:
            return self.network
        width, dims = self.network.hidden_features, self.network.in_features
        low_limit = 1
        while ((2 * low_limit + 1) ** dims - 1) // 2 < 0.7 * width:  # the low cube's half holds 70 % of the neurons
            low_limit += 1
        return dataclasses.replace(
            self.network, first_layer="integer", period=4.0, band_limit=self.tuner_band,
            low_limit=min(low_limit, self.tuner_band), hidden_bounds=tuple(self.tuner_bounds),
        )  # fmt: skip

    def __post_init__(self):
        self.require_counts("steps", "surface_batch", "volume_batch", "pool_size", "refresh_every", "validate_every")
        if not 0.0 < self.eikonal_share <= 1.0 or not 0.0 < self.refresh_fraction <= 1.0:
            raise ValueError("FitConfig.eikonal_share and refresh_fraction must be in (0, 1]")
        if not 0.0 <= self.weight_averaging < 1.0:
            raise ValueError(f"FitConfig.weight_averaging must be in [0, 1), got {self.weight_averaging}")
        if not (math.isfinite(self.weight_scale) and self.weight_scale > 0.0):
            raise ValueError(f"FitConfig.weight_scale must be a positive number, got {self.weight_scale}")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"FitConfig.warmup_steps must be in [0, steps), got {self.warmup_steps}")
        if not 0.0 < self.final_learning_rate <= self.learning_rate:
            raise ValueError("FitConfig needs 0 < final_learning_rate <= learning_rate")
        if self.tuner:
            if self.network.first_layer != "trained" or self.weight_scale != 1.0:
                raise ValueError(
                    "FitConfig.tuner sets the network's first layer and initialization: leave network.first_layer "
                    "'trained' and weight_scale 1"
                )
            if ((2 * self.tuner_band + 1) ** self.network.in_features - 1) // 2 < self.network.hidden_features:
                raise ValueError(
                    f"FitConfig.tuner_band {self.tuner_band} holds fewer distinct integer frequencies than the "
                    f"{self.network.hidden_features} first-layer neurons: raise it"
                )
            if self.tuner_init not in ("siren", "tuner"):
                raise ValueError(f"FitConfig.tuner_init must be 'siren' or 'tuner', got {self.tuner_init!r}")
            if not all(0.0 < c <= 10.0 for c in self.tuner_bounds) or len(self.tuner_bounds) != 2:
                raise ValueError(f"FitConfig.tuner_bounds must be two numbers in (0, 10], got {self.tuner_bounds}")


PRESETS: dict[str, FitConfig] = {
    "tiny": FitConfig(
        # A lower first-layer frequency keeps a small, briefly trained network free of stray far-away surfaces.
        network=SirenConfig(hidden_features=64, hidden_layers=2, first_omega=15.0),
        steps=300,
        # An average over ~200 steps would drag in the early weights of so short a fit.
        weight_averaging=0.0,
        learning_rate=1e-3,
        surface_batch=2000,
        volume_batch=2000,
        pool_size=50_000,
    ),
    # Averaging the weights lifted knot2's IoU from 0.987 to 0.990 at 1500 steps and to 0.9915 at 2500
    # (bench/results/knot2_gpu_sweep.md); 2000 steps keep a 3x256 fit under 7 minutes on 2 CPU cores.
    "fast": FitConfig(),
    "quality": FitConfig(steps=3000),
}
"""Named starting points; ``fast`` is the default. They work on any mesh without tuning because every input is
normalized to the same cube."""


def preset(name: str, **overrides) -> FitConfig:
    """A preset with some fields replaced, e.g. ``preset("fast", steps=500)``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


def fit_sdf(
    meshes: TriangleMesh | PointCloud | Sequence[TriangleMesh] | Sequence[PointCloud],
    config: FitConfig | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    progress_interval_s: float = 0.5,
    normalization: Normalization | None = None,
    on_step: Callable[[int, SDFModel], None] | None = None,
) -> SDFModel:
    """Fit one SIREN SDF to the union of ``meshes`` (in their own coordinates): triangle meshes, or point clouds
    (`engine.point_clouds.PointCloud`; those without normals get `engine.point_clouds.estimate_normals`), not both.

    - The shape is normalized into the unit cube (``normalization``, by default the one of its bounding box; a
      morph passes one shared by both shapes); the returned model maps input coordinates back and forth.
    - ``on_progress`` is called at most every ``progress_interval_s`` seconds and at the last step.
    - ``should_cancel`` is checked every step; when it returns True, `engine.training.Cancelled` is raised.
    - ``on_step(step, model)`` is called after every step with the weights kept so far (the average, where the
      config averages) as a model, e.g. for live previews or checkpoints; it must only read them, and then the fit
      gives the same model with it or without it.
    """
    config = config or PRESETS["fast"]
    source, normalization = unit_source(meshes, config, normalization)
    device = pick_device(config.device)
    rng, generator = seeded(config.seed)

    pool = SamplePool(
        source, config.pool_size, config.pool_size, config.volume_sampling, config.curvature_sampling, rng
    )
    validation = _on(device, pool.batch(generator, config.surface_batch, config.volume_batch))
    network = Siren(config.network_config())
    if config.weight_scale != 1.0:
        with torch.no_grad():
            for layer in network.layers:
                if layer.linear.weight.requires_grad:  # a frozen integer first layer stays integer
                    layer.linear.weight.mul_(config.weight_scale)
    bounds = network.hidden_column_bounds()
    if bounds is not None and config.tuner_init == "tuner":
        tuner_initialize(network.layers[1], bounds)  # the global generator, as every initialization
    network = network.to(device)
    bounds = None if bounds is None else bounds.to(device)
    trained = [parameter for parameter in network.parameters() if parameter.requires_grad]
    optimizer = torch.optim.Adam(trained, lr=config.learning_rate)
    schedule = cosine_schedule(
        optimizer, config.steps, config.final_learning_rate / config.learning_rate, config.warmup_steps
    )
    kept = network
    if config.weight_averaging:
        kept = torch.optim.swa_utils.AveragedModel(
            network, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.weight_averaging)
        )

    # Compiled once for the fit: the batch shapes never change, so nothing recompiles.
    training_loss = torch.compile(explicit_fitting_loss, dynamic=False) if config.compiled_step else fitting_loss
    best_loss, best_state = math.inf, copy.deepcopy(network.state_dict())
    monitor = TrainingMonitor(
        "fit", config.steps, on_progress, should_cancel, progress_interval_s,
        advice="lower the learning rate, or start from a preset (engine.fit.preset)",
    )
    for step in range(1, config.steps + 1):
        monitor.before_step(step)
        if step % config.refresh_every == 0:
            pool.refresh(config.refresh_fraction)
        batch = _on(device, pool.batch(generator, config.surface_batch, config.volume_batch), non_blocking=True)
        loss, terms = training_loss(network, *batch, config.weights, config.eikonal_share)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        network.clamp_hidden_weights(bounds)
        schedule.step()
        if kept is not network:
            kept.update_parameters(network)

        if step % config.validate_every == 0 or step == config.steps:
            kept_network = kept if kept is network else kept.module
            validation_loss = fitting_loss(kept_network, *validation, config.weights, config.eikonal_share)[0].item()
            if validation_loss < best_loss:
                best_loss, best_state = validation_loss, copy.deepcopy(kept_network.state_dict())
        monitor.after_step(step, loss, terms)
        if on_step is not None:
            on_step(step, SDFModel(kept if kept is network else kept.module, normalization))

    if not math.isfinite(best_loss):
        raise Diverged(
            f"the fit diverged (no validation loss was finite in {config.steps} steps): lower the learning rate, or "
            "start from a preset (engine.fit.preset)"
        )
    network.load_state_dict(best_state)
    monitor.check_weights(network)
    network.eval()
    metadata = {
        "fit_config": config.to_dict(),
        "train_seconds": monitor.elapsed_s,
        "best_validation_loss": best_loss,
        "device": str(device),
        "interior_area_share": pool.source.buried_share if isinstance(pool.source, MeshSource) else 0.0,
    }
    return SDFModel(network.cpu(), normalization, metadata)


def unit_source(meshes, config: FitConfig, normalization: Normalization | None = None):
    """The sample source of a fit's inputs in unit-cube coordinates (a `TriangleMesh`, or a
    `engine.point_clouds.PointSource`) and the normalization (by default the one of their bounding box), after the
    checks of `fit_sdf` (meshes or point clouds, not both; inside the cube)."""
    shapes = [meshes] if isinstance(meshes, (TriangleMesh, PointCloud)) else list(meshes)
    if shapes and all(isinstance(shape, PointCloud) for shape in shapes):
        if config.curvature_sampling:
            raise ValueError("curvature sampling needs meshes: point clouds are sampled by their points' areas")
        shape = merge_point_clouds([with_normals(shape) for shape in shapes])
        coordinates = shape.points
    elif any(isinstance(shape, PointCloud) for shape in shapes):
        raise MeshError("one fit takes meshes or point clouds, not both: fit them separately")
    else:
        shape = merge_meshes(shapes)
        coordinates = shape.vertices
    normalization = normalization or Normalization.fit_bounds(coordinates)
    outside = np.abs(normalization.to_unit(coordinates)).max()
    if outside > 1.0:
        raise ValueError(
            f"the shape reaches {outside:.3g} in the given normalization's cube; it must lie within [-1, 1]"
        )
    if isinstance(shape, TriangleMesh):
        source = TriangleMesh(normalization.to_unit(shape.vertices), shape.faces)
    else:
        source = PointSource(PointCloud(normalization.to_unit(shape.points), shape.normals), config.point_method)
    return source, normalization


def _on(device: torch.device, batch, non_blocking: bool = False) -> list:
    return [None if t is None else t.to(device, non_blocking=non_blocking) for t in batch]


def fitting_loss(
    network: torch.nn.Module,
    surface_points: torch.Tensor,
    surface_normals: torch.Tensor,
    volume_points: torch.Tensor,
    volume_sdf: torch.Tensor | None,
    weights: LossWeights,
    eikonal_share: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted i3d loss and its weighted terms (detached tensors: read them only when reporting, since each
    read waits for the device) for one batch.

    Gradients are taken at the surface samples (normal term) and the first ``eikonal_share`` of the volume
    samples (eikonal term); the off-surface term uses every volume sample: (f - sdf)^2, or SIREN's
    exp(-alpha |f|) where ``volume_sdf`` is None (samples without a distance).
    """
    eikonal_count = int(round(len(volume_points) * eikonal_share))
    with_gradient = torch.cat([surface_points, volume_points[:eikonal_count]]).requires_grad_(True)
    values = network(with_gradient)
    (gradients,) = torch.autograd.grad(values.sum(), with_gradient, create_graph=True)
    volume_values = torch.cat([values[len(surface_points):], network(volume_points[eikonal_count:])])
    return _weighted_terms(values, gradients, volume_values, surface_normals, volume_sdf, weights)


def explicit_fitting_loss(
    network: Siren,
    surface_points: torch.Tensor,
    surface_normals: torch.Tensor,
    volume_points: torch.Tensor,
    volume_sdf: torch.Tensor | None,
    weights: LossWeights,
    eikonal_share: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`fitting_loss` with grad f from the explicit forward-mode pass (`engine.networks.sine_jacobian`) instead of
    autograd's double backward: the same loss and parameter gradients (to float rounding), and one backward pass
    that `torch.compile` can trace."""
    eikonal_count = int(round(len(volume_points) * eikonal_share))
    layers = network.layers
    with_gradient = torch.cat([surface_points, volume_points[:eikonal_count]])
    values, jacobian = sine_jacobian(layers[0], layers[1:], network.output, with_gradient)
    volume_values = torch.cat([values[len(surface_points):, 0], network(volume_points[eikonal_count:])])
    return _weighted_terms(values[:, 0], jacobian[:, 0], volume_values, surface_normals, volume_sdf, weights)


def _weighted_terms(values, gradients, volume_values, surface_normals, volume_sdf, weights: LossWeights):
    """The i3d loss from f and grad f at the surface samples then the eikonal ones (``values``, ``gradients``) and f
    at every volume sample (``volume_values``)."""
    surface_count = len(surface_normals)
    if volume_sdf is None:
        away = torch.exp(-weights.off_surface_alpha * volume_values.abs()).mean()
        off_surface = ("off_surface", weights.off_surface * away)
    else:
        off_surface = ("sdf", weights.sdf * (volume_values - volume_sdf).square().mean())
    terms = {
        "surface": weights.surface * values[:surface_count].square().mean(),
        off_surface[0]: off_surface[1],
        "normal": weights.normal
        * (1.0 - torch.nn.functional.cosine_similarity(gradients[:surface_count], surface_normals, dim=-1)).mean(),
        "eikonal": weights.eikonal * (gradients[surface_count:].norm(dim=-1) - 1.0).square().mean(),
    }
    return sum(terms.values()), {name: term.detach() for name, term in terms.items()}
