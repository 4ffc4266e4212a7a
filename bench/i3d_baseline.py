"""A re-implementation of i3d's SDF training loop, the baseline of bench/time_to_quality.py.

Read from the public code (dsilvavinicius/i3d: ``train_sdf.py``, ``i3d/dataset.py`` ``PointCloudDeferredSampling``,
``i3d/loss_functions.py`` ``true_sdf``, ``experiments/*.yaml``), and kept as it is there:
- the mesh centred on its bounding box and scaled so its longest side spans [-1, 1] (``tools/preprocess_mesh.py``);
- a SIREN with the SIREN initialization (the last layer too), omega 30 (``bunny_curvature.yaml``; most of the other
  experiments use 60), Adam at a constant 1e-4 (the script hard-codes it), no schedule, no weight averaging;
- per step B = 20,000 points: B/2 mesh vertices without replacement (their file normals, SDF 0) and B/2 uniform
  points in [-1, 1]^3 with their true signed distance, frozen between refreshes every 10 % of the steps (i3d's
  ``resample_sdf_at: 10`` of 100 epochs; only the vertices are redrawn each step);
- the ``true_sdf`` loss: every term a mean over the whole batch (the masked rows count in the denominator):
  3e3 f^2 on the surface, 2e2 (f - sdf)^2 off it, 1e2 (1 - cos(grad f, n)) on the surface, 5e1 (|grad f| - 1)^2 on
  every point;
- the result: the weights of the lowest single-step loss after the first 10 % of the steps.
Where it differs, and why:
- i3d's step count is epochs * 2N / B (N vertices): on the shared meshes (2k-38k vertices) that is 18-190 steps at
  100 epochs, far too few for these small meshes, so the baseline runs ``steps`` steps (or until ``time_limit_s``)
  and refreshes every 10 % of those; `I3DSettings.i3d_steps` gives i3d's own count for the record;
- a mesh with fewer than B/2 vertices gives all of them each step (i3d's sampler would fail there);
- the true SDF comes from libigl (`engine.sampling.signed_distance`: exact distance, winding-number sign) instead of
  Open3D's raycasting scene: the same values on a closed mesh;
- vertex normals are the area-weighted face normals (`engine.sampling`), i3d reads them from the PLY file.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from engine.conventions import Normalization
from engine.mesh_io import TriangleMesh
from engine.model import SDFModel
from engine.networks import Siren, SirenConfig
from engine.sampling import signed_distance
from engine.training import pick_device, seeded

WEIGHTS = {"surface": 3e3, "sdf": 2e2, "normal": 1e2, "eikonal": 5e1}


@dataclass(frozen=True)
class I3DSettings:
    batch: int = 20_000
    learning_rate: float = 1e-4
    omega: float = 30.0
    hidden_features: int = 256
    hidden_layers: int = 3
    steps: int = 6000
    epochs: int = 100
    refresh_share: float = 0.1
    seed: int = 0
    device: str = "auto"

    def i3d_steps(self, mesh: TriangleMesh) -> int:
        """i3d's own step count, epochs * 2N / B."""
        return round(self.epochs * 2 * len(mesh.vertices) / self.batch)


def i3d_normalization(mesh: TriangleMesh) -> Normalization:
    low, high = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
    return Normalization(center=tuple(float(c) for c in (low + high) / 2), scale=2.0 / float((high - low).max()))


def vertex_normals(mesh: TriangleMesh) -> np.ndarray:
    corners = mesh.vertices[mesh.faces]
    weighted = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])  # twice the area, outward
    normals = np.zeros_like(mesh.vertices)
    for corner in range(3):
        np.add.at(normals, mesh.faces[:, corner], weighted)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def true_sdf_loss(network: Siren, points: torch.Tensor, normals: torch.Tensor, sdf: torch.Tensor, on_count: int):
    points = points.requires_grad_(True)
    values = network(points)
    (gradients,) = torch.autograd.grad(values.sum(), points, create_graph=True)
    count = len(points)
    on, off = slice(0, on_count), slice(on_count, None)
    cosine = torch.nn.functional.cosine_similarity(gradients[on], normals, dim=-1)
    return (
        WEIGHTS["surface"] * values[on].square().sum() / count
        + WEIGHTS["sdf"] * (values[off] - sdf).square().sum() / count
        + WEIGHTS["normal"] * (1.0 - cosine).sum() / count
        + WEIGHTS["eikonal"] * (gradients.norm(dim=-1) - 1.0).square().mean()
    )


def train_i3d(
    mesh: TriangleMesh,
    settings: I3DSettings,
    *,
    on_step: Callable[[int, SDFModel], None] | None = None,
    time_limit_s: float = math.inf,
) -> tuple[SDFModel, int, float]:
    """Train as i3d does for ``settings.steps`` steps or until ``time_limit_s`` seconds of training have passed;
    returns the kept model (the best weights after warm-up), the last step run and the seconds of sample
    preparation. ``on_step(step, model)`` sees the weights i3d would return if it stopped there."""
    started = time.perf_counter()
    device = pick_device(settings.device)
    rng, generator = seeded(settings.seed)
    normalization = i3d_normalization(mesh)
    unit = TriangleMesh(normalization.to_unit(mesh.vertices), mesh.faces)
    vertices = torch.from_numpy(unit.vertices).float().to(device)
    normals = torch.from_numpy(vertex_normals(unit)).float().to(device)
    on_count = min(settings.batch // 2, len(vertices))
    off_count = settings.batch - settings.batch // 2
    steps = settings.steps
    refresh_every = max(1, round(settings.refresh_share * steps))
    warmup = steps // 10

    def volume_samples():
        points = rng.uniform(-1.0, 1.0, size=(off_count, 3))
        sdf = signed_distance(unit, points)
        return torch.from_numpy(points).float().to(device), torch.from_numpy(sdf).float().to(device)

    off_points, off_sdf = volume_samples()
    prep_s = time.perf_counter() - started
    network = Siren(SirenConfig(hidden_features=settings.hidden_features, hidden_layers=settings.hidden_layers,
                                first_omega=settings.omega, hidden_omega=settings.omega)).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=settings.learning_rate)
    best_loss, best = math.inf, network
    training_started = time.perf_counter()
    for step in range(1, steps + 1):
        if step % refresh_every == 0:
            refresh_started = time.perf_counter()
            off_points, off_sdf = volume_samples()
            prep_s += time.perf_counter() - refresh_started
        chosen = torch.randperm(len(vertices), generator=generator)[:on_count].to(device)
        points = torch.cat([vertices[chosen], off_points])
        loss = true_sdf_loss(network, points, normals[chosen], off_sdf, on_count)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loss.item()
        if step > warmup and value < best_loss:
            best_loss, best = value, copy.deepcopy(network)
        kept = SDFModel(best if step > warmup else network, normalization)
        if on_step is not None:
            on_step(step, kept)
        if time.perf_counter() - training_started > time_limit_s:
            break
    return kept, step, prep_s
