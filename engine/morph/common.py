"""What both morph methods share: fitting the two shapes in one cube, aligning them, the frozen copies of their
networks, the checks of their inputs and the metadata every morph carries."""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import numpy as np
import torch

from ..conventions import Normalization
from ..fields import TIME_KEY
from ..fit import FitConfig, fit_sdf
from ..mesh_io import TriangleMesh
from ..model import SDFModel
from ..networks import Siren
from ..training import Progress

MORPH_KEY = "morph"
"""Metadata key of a morph: {"method": ..., "sources": [...], "config": {...}, "train_seconds": ...}."""


def shared_cube(mesh_a: TriangleMesh, mesh_b: TriangleMesh) -> Normalization:
    """The normalization both shapes of a morph are fitted in: that of the bounding box of both."""
    return Normalization.fit_bounds(np.concatenate([mesh_a.vertices, mesh_b.vertices]))


def fit_pair(
    mesh_a: TriangleMesh,
    mesh_b: TriangleMesh,
    config: FitConfig | None = None,
    *,
    on_progress: Callable[[int, Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> tuple[SDFModel, SDFModel]:
    """Fit both shapes of a morph in ONE cube (`shared_cube`): a fitted SDF is trained only inside its own cube, so
    two shapes fitted apart would meet each other's untrained space. ``on_progress(index, progress)``."""
    normalization = shared_cube(mesh_a, mesh_b)
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


def check_fitted(model: SDFModel, name: str) -> None:
    """A ValueError unless ``model`` is a fitted 3D SDF (not an evolution or a morph); ``name`` says which input."""
    config = getattr(model.network, "config", None)
    if TIME_KEY in model.metadata or config is None or config.in_features != 3:
        raise ValueError(
            f"{name}: a morph needs two fitted 3D SDF models (from 'fit'), not a time-dependent one (an evolution "
            "or a morph)"
        )


MAX_LANDMARK_REACH = 4.0
"""Landmarks must lie within this many half-sizes of the shared cube of its centre (|unit coordinate| <= 4): the
shapes lie within 0.9 and the warp is trained inside the cube [-1, 1], so a landmark farther out is a typo or a unit
mistake, and one at 1e30 made the landmark loss infinite."""


def checked_landmarks(landmarks, normalization: Normalization) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Landmark pairs (points on A (k, 3), points on B (k, 3)) in input coordinates, checked (finite, within
    `MAX_LANDMARK_REACH` of the shared cube; the message names the landmark) and moved into the shared cube as
    float32 tensors; None for no landmarks (None or k = 0)."""
    if landmarks is None:
        return None
    if not isinstance(landmarks, (tuple, list)) or len(landmarks) != 2:
        raise ValueError("landmarks must be a pair (points on A, points on B), each an (k, 3) array")
    arrays = []
    for name, values in zip(("landmark points on A", "landmark points on B"), landmarks):
        values = np.asanyarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != 3:
            raise ValueError(f"{name} must be (k, 3), got shape {values.shape}")
        if not np.isfinite(values).all():
            index = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
            raise ValueError(f"{name}: landmark {index} {values[index].tolist()} has NaN or infinite coordinates")
        reach = np.abs(normalization.to_unit(values)).max(axis=1) if len(values) else np.zeros(0)
        if (reach > MAX_LANDMARK_REACH).any():
            index = int(np.argmax(reach > MAX_LANDMARK_REACH))
            half_size = 1.0 / normalization.scale
            raise ValueError(
                f"{name}: landmark {index} {values[index].tolist()} lies {reach[index] * half_size:.3g} input units "
                f"from the centre {list(normalization.center)} of the shapes' cube along an axis; the limit is "
                f"{MAX_LANDMARK_REACH * half_size:.3g} ({MAX_LANDMARK_REACH:g} times the cube's half-size, which holds "
                "both shapes): place each landmark on its shape"
            )
        arrays.append(values)
    if len(arrays[0]) != len(arrays[1]):
        raise ValueError(
            f"landmarks come in pairs: got {len(arrays[0])} points on A and {len(arrays[1])} on B"
        )
    if len(arrays[0]) == 0:
        return None
    return tuple(torch.from_numpy(normalization.to_unit(a).astype(np.float32)) for a in arrays)


def morph_metadata(method: str, model_a: SDFModel, model_b: SDFModel, config: dict, seconds: float, device) -> dict:
    """The metadata every morph carries: its time axis (`TIME_KEY`, t in [0, 1]) and its recipe (`MORPH_KEY`)."""
    return {
        TIME_KEY: {"time_scale": 1.0, "time_range": [0.0, 1.0]},
        MORPH_KEY: {
            "method": method,
            "sources": [model_a.metadata.get("sources"), model_b.metadata.get("sources")],
            "config": config,
            "train_seconds": seconds,
            "device": str(device),
        },
    }
