"""The ``params`` of each engine job (documented in the engine's ``engine/protocol.py``, parsed by the specs of
``engine.jobs``), built from plain values as the operators read them from Blender's properties: one builder per job
kind in `BUILDERS`, held against the engine's specs by ``tests/addon/test_contract.py``.

A builder sends every parameter the add-on decides, and those whose engine default is not what the add-on wants
(a fit's ``metrics``, a morph's ``align``); the others take the engine's default (a fit's ``curvature_sampling``, an
evolution's ``colormap``, a curvature job's ``resolution``, unused when points are sent).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .bake import bake_params, ridges_params
from .evolution import FieldEmpty, flow_params, frame_times
from .frames import frame_count
from .images import image_fit_params, image_morph_params, image_render_params, image_tile_params
from .morph import ENGINE_METHODS
from .render_camera import render_params

NO_CURVATURE = "NONE"
"""The evolution's curvature choice that colours nothing (the first of `items.EVOLUTION_CURVATURE_ITEMS`)."""
MORPH_ALIGN = "none"
"""Morphs take both objects as they are placed in world space: the engine moves nothing onto anything."""


def fit_params(
    *,
    preset: str,
    steps: int | None,
    resolution: int,
    device: str,
    seed: int,
    names: Sequence[str],
    preview_interval: float = 0.0,
    levels: int = 1,
    colors: bool = False,
    tuner: bool = False,
) -> dict:
    """The ``fit`` job: one SDF for the meshes ``names`` (one per input mesh, in the inputs' order) as one shape.

    - ``preset``: a name of `items.PRESET_ITEMS`; ``steps`` None trains for the preset's steps;
    - ``preview_interval``: seconds between the live previews of the surface while it trains (`preview`); 0: none;
    - ``levels``: levels of detail in the model (1: one network);
    - ``colors``: also fit the inputs' colours (``color_points_<i>``, ``color_values_<i>``: every input has them);
    - ``tuner``: TUNER's frequency control (the engine's ``fit --tuner``: a frozen integer first layer, bounded first
      hidden weights); the engine takes it with ``levels`` 1 only;
    - the engine's surface metrics are not measured: the add-on shows none.
    """
    return {
        "preset": preset,
        "steps": steps,
        "resolution": resolution,
        "device": device,
        "seed": seed,
        "names": list(names),
        "metrics": False,
        "preview_interval": float(preview_interval),
        "levels": int(levels),
        "colors": bool(colors),
        "tuner": bool(tuner),
    }


def extract_params(*, model: str | os.PathLike, resolution: int, device: str, level: float | None = None) -> dict:
    """The ``extract`` job: the surface of the model file ``model`` again, at ``resolution`` (and, for a model with
    levels of detail, at ``level``; None: the finest)."""
    return {"model": str(model), "resolution": resolution, "device": device, "level": level}


def curvature_params(
    *,
    model: str | os.PathLike,
    quantity: str,
    colormap: str,
    value_range: tuple[float, float] | None,
    project: bool,
    device: str,
) -> dict:
    """The ``curvature`` job at the points sent as its input.

    - ``quantity``, ``colormap``: names of `items.QUANTITY_ITEMS`, `items.COLORMAP_ITEMS`;
    - ``value_range``: (low, high) the colour map spans, or None for the engine's robust automatic range;
    - ``project``: move the points onto the model's surface first.
    """
    return {
        "model": str(model),
        "quantity": quantity,
        "colormap": colormap,
        "range": None if value_range is None else [float(value_range[0]), float(value_range[1])],
        "project": bool(project),
        "device": device,
    }


def evolve_params(
    *,
    model: str | os.PathLike,
    flow: str,
    speed: float,
    fields: list[FieldEmpty],
    world_to_model: np.ndarray,
    frame_start: int,
    frame_end: int,
    time_end: float,
    steps: int | None,
    resolution: int,
    device: str,
    seed: int,
    curvature: str,
) -> dict:
    """The ``evolve`` job: the fitted model file ``model`` under a flow, one frame per scene frame.

    - ``flow``, ``speed``, ``fields``, ``world_to_model``: as `evolution.flow_params` (world space in, model
      coordinates out);
    - frames ``frame_start`` to ``frame_end`` at flow times 0 to ``time_end`` (`evolution.frame_times`);
    - ``steps`` None trains for the engine's default steps;
    - ``curvature``: a name of `items.EVOLUTION_CURVATURE_ITEMS`, `NO_CURVATURE` for no colours.

    Raises `EngineError` saying what to fix for an empty frame range, a zero end time or a flow without fields.
    """
    times = frame_times(frame_start, frame_end, time_end)
    return {
        "model": str(model),
        "flow": flow_params(flow, speed, fields, world_to_model),
        "times": times,
        "steps": steps,
        "resolution": resolution,
        "device": device,
        "seed": seed,
        "curvature": None if curvature == NO_CURVATURE else curvature,
    }


def morph_params(
    *,
    method: str,
    names: tuple[str, str],
    frame_start: int,
    frame_end: int,
    preset: str,
    fit_steps: int | None,
    steps: int | None,
    resolution: int,
    device: str,
    seed: int,
    animate_source: bool,
    colors: bool = False,
) -> dict:
    """The ``morph`` job from ``names`` = (source, target), as placed in world space, over frames ``frame_start`` to
    ``frame_end`` (t evenly from 0 to 1).

    - ``method``: a key of `morph.ENGINE_METHODS` (a name of `items.MORPH_METHOD_ITEMS`);
    - ``preset``, ``fit_steps`` (None: the preset's) for the fits of both shapes; ``steps`` None: the method's;
    - ``animate_source``: also move the source mesh's own vertices (the Flow method only; ignored otherwise);
    - ``colors``: also fit both shapes' colours (``color_points_<i>`` with ``color_values_<i>``, i = 0 the source, 1
      the target: both have them) and colour every frame.

    Raises `EngineError` for a frame range that holds no animation.
    """
    source, target = names
    return {
        "method": ENGINE_METHODS[method],
        "names": [source, target],
        "frames": frame_count(frame_start, frame_end),
        "preset": preset,
        "fit_steps": fit_steps,
        "steps": steps,
        "resolution": resolution,
        "device": device,
        "seed": seed,
        "warp_source": method == "FLOW" and bool(animate_source),
        "align": MORPH_ALIGN,
        "colors": bool(colors),
    }


BUILDERS = {
    "fit": fit_params,
    "extract": extract_params,
    "curvature": curvature_params,
    "evolve": evolve_params,
    "morph": morph_params,
    "bake": bake_params,
    "ridges": ridges_params,
    "image_fit": image_fit_params,
    "image_render": image_render_params,
    "image_tile": image_tile_params,
    "image_morph": image_morph_params,
    "render": render_params,
}
"""The params builder of each job kind the add-on runs."""
