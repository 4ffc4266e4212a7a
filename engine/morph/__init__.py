"""Morphing one fitted shape into another, as a time-dependent field f(x, t) with f(., 0) = g_a and f(., 1) = g_b.

- Both SDFs are fitted in ONE shared cube (`fit_pair`): each network is trained only inside its own cube.
- The methods are the entries of `METHODS`: ``levelset`` blends the two SDFs (`engine.morph.levelset`: any change
  of topology), ``flow`` carries g_a along a learned warp (`engine.morph.flow`: keeps the source's topology and can
  move its mesh). `morph_config` and `morph` reach every method through it.
- A morph is saved as one file of named networks (`engine.model.save_networks`); `load_morph` reads it back.
  Its time runs over [0, 1]; `engine.fields.at_time` and `extract_frames` take it like an evolution.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from torch import nn

from ..fields import FORMAT_1_TIME_KEY, TIME_KEY, time_axis_problem
from ..model import SDFModel, read_model_file, save_networks
from ..training import Progress
from .common import MORPH_KEY, align_bounds, fit_pair, frozen_networks, morph_metadata, shared_normalization
from .flow import FlowMorph, FlowMorphConfig, FlowMorphWeights, flow_loss, inverse_consistency_error, morph_flow
from .flow import warp_points
from .levelset import MIN_GRADIENT_NORM, SURFACE_BAND, LevelSetMorph, LevelSetMorphConfig, morph_levelset

__all__ = [
    "METHODS", "MORPH_KEY", "MIN_GRADIENT_NORM", "SURFACE_BAND",
    "FlowMorph", "FlowMorphConfig", "FlowMorphWeights", "LevelSetMorph", "LevelSetMorphConfig", "MorphMethod",
    "align_bounds", "fit_pair", "flow_loss", "frozen_networks", "inverse_consistency_error", "load_morph", "morph",
    "morph_config", "morph_flow", "morph_levelset", "morph_metadata", "save_morph", "shared_normalization",
    "warp_points",
]


@dataclass(frozen=True)
class MorphMethod:
    """One morph method: the field it trains, its config and its training function."""

    network_class: type[nn.Module]
    """An nn.Module of (x, t) with ``networks()`` (its named networks, as saved), ``from_networks(dict)`` and
    ``NETWORK_SHAPES`` (name -> (inputs, outputs) of each network a file of it holds)."""
    config_class: type
    """Its config dataclass: keyword ``device`` and ``seed``, a ``steps`` field, ``to_dict`` and ``from_dict``."""
    train: Callable[..., SDFModel]
    """``train(model_a, model_b, config, *, on_progress, should_cancel[, landmarks])``."""
    takes_landmarks: bool
    """Whether ``train`` takes ``landmarks=(points on A, points on B)``."""


METHODS: dict[str, MorphMethod] = {
    "levelset": MorphMethod(LevelSetMorph, LevelSetMorphConfig, morph_levelset, takes_landmarks=False),
    "flow": MorphMethod(FlowMorph, FlowMorphConfig, morph_flow, takes_landmarks=True),
}
"""The morph methods by name (`engine.protocol.MORPH_METHODS` lists the same names, kept free of torch)."""


def morph_config(
    method: str, *, steps: int | None = None, device: Literal["auto", "cpu", "cuda"] = "auto", seed: int = 0
):
    """The default settings of morph ``method`` (a name of `METHODS`), with ``steps`` training steps if given."""
    if method not in METHODS:
        raise ValueError(f"unknown morph method {method!r}; choose one of {', '.join(METHODS)}")
    config = METHODS[method].config_class(device=device, seed=seed)
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
    ``landmarks`` (source points, target points) steer the methods that take them."""
    method = next((entry for entry in METHODS.values() if isinstance(config, entry.config_class)), None)
    if method is None:
        raise ValueError(f"a {type(config).__name__} is no morph config; make one with engine.morph.morph_config")
    callbacks = {"on_progress": on_progress, "should_cancel": should_cancel}
    if method.takes_landmarks:
        return method.train(model_a, model_b, config, landmarks=landmarks, **callbacks)
    if landmarks is not None:
        takers = [name for name, entry in METHODS.items() if entry.takes_landmarks]
        raise ValueError(f"landmarks apply to the {' and '.join(takers)} method only")
    return method.train(model_a, model_b, config, **callbacks)


def save_morph(model: SDFModel, path: str | Path) -> None:
    """Write a morph (`morph`'s result) as one file of named networks (no pickle on load)."""
    save_networks(path, model.network.networks(), model.normalization, model.metadata)


def load_morph(path: str | Path) -> SDFModel:
    """A morph saved by `save_morph` (no pickle), ready for `engine.fields.extract_frames`, checked before any network
    is built (`engine.model.read_model_file`; a file of another kind is named as what it is); files of engine 0.1.0
    get their time axis moved to `TIME_KEY`."""
    model_file = read_model_file(path, "morph")
    metadata = model_file.header["metadata"]
    info = metadata[MORPH_KEY]
    method = info.get("method") if isinstance(info, dict) else None
    if not isinstance(method, str) or method not in METHODS:
        raise model_file.refusal(f"its morph method is {method!r}, not one of {', '.join(METHODS)}")
    if TIME_KEY not in metadata and FORMAT_1_TIME_KEY in metadata:
        metadata[TIME_KEY] = metadata.pop(FORMAT_1_TIME_KEY)
    problem = time_axis_problem(metadata)
    if problem:
        raise model_file.refusal(problem)
    network_class = METHODS[method].network_class
    networks = model_file.networks(network_class.NETWORK_SHAPES)
    return SDFModel(network_class.from_networks(networks).eval(), model_file.normalization(), metadata)
