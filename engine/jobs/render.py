"""The ``render`` job: a preview render of a fitted model straight from its network (`engine.render`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .base import Device, JobContext, JobOutput, JobSpec

PROGRESS_INTERVAL_S = 0.2
"""Seconds between progress reports while rays march (each tracing iteration is one chance to report)."""


@dataclass(frozen=True)
class RenderJob(JobSpec):
    """Render a fitted model from a camera by sphere tracing its network (coarse levels first for a nested
    multiresolution model). No input arrays. Outputs ``rgba`` (h, w, 4) float32 colour in linear light, the top row
    first, alpha 0 where a ray misses, ``depth`` (h, w) float32 distance from the camera along each ray in input
    units (inf on misses) and ``normal`` (h, w, 3) float32 outward unit normals in input space (0 on misses); the
    summary is the render's report (evaluations per level, steps, seconds)."""

    kind = "render"
    stages = ("render",)

    model: str
    """Path of a model file written by a fit."""
    camera: dict
    """The camera in the model's input coordinates: {"location": [x, y, z], "rotation": 3 x 3 world-from-camera,
    "type": "perspective" | "orthographic", "fov": horizontal degrees, "ortho_scale": width, "resolution": [w, h]}
    (Blender's convention: the camera looks along its local -Z, +Y up)."""
    multiscale: bool = True
    """Trace a nested model's coarse levels first (no effect on a single network)."""
    shading: Literal["plain", "curvature"] = "plain"
    """plain: grey under a headlight; curvature: coloured by the quantity."""
    quantity: str = "mean"
    """The curvature shown with shading curvature: a name of engine.colormaps.QUANTITIES (mean is H = kappa / 2)."""
    range: tuple[float, float] | None = None
    """Curvature colour range [low, high] (default: robust automatic)."""
    max_steps: int = 256
    """Sphere-tracing iterations per ray at most."""
    device: Device = "auto"
    """Where to evaluate the network."""

    def check(self) -> None:
        from ..colormaps import QUANTITIES
        from ..render_camera import camera_from_dict

        try:
            camera_from_dict(self.camera, where="the camera")
        except ValueError as error:
            self.fail("camera", str(error).removeprefix("the camera: "))
        if self.quantity not in QUANTITIES:
            self.fail("quantity", f"must be one of {', '.join(QUANTITIES)}, got {self.quantity!r}")
        if self.range is not None and not self.range[0] < self.range[1]:
            self.fail("range", f"must be [low, high] with low < high, got {list(self.range)}")
        if not 1 <= self.max_steps <= 100_000:
            self.fail("max_steps", f"must be in [1, 100000], got {self.max_steps}")

    def run(self, inputs: dict[str, np.ndarray], context: JobContext) -> JobOutput:
        from ..model import load_model
        from ..render import RenderSettings, render_model
        from ..render_camera import camera_from_dict
        from ..training import pick_device

        model = load_model(self.model)
        model.network.to(pick_device(self.device))
        camera = camera_from_dict(self.camera)
        settings = RenderSettings(multiscale=self.multiscale, max_steps=self.max_steps, shading=self.shading,
                                  quantity=self.quantity, value_range=self.range)  # fmt: skip
        started, last = time.perf_counter(), 0.0

        def progress(done: int, total: int) -> None:
            nonlocal last
            now = time.perf_counter()
            if now - last >= PROGRESS_INTERVAL_S or done == total:
                last = now
                eta = (now - started) / done * (total - done) if done else None
                context.report("render", done, total, None, eta)

        context.report("render", 0, camera.width * camera.height, None, None)
        result = render_model(model, camera, settings, should_cancel=context.should_cancel, on_progress=progress)
        arrays = {"rgba": result.rgba, "depth": result.depth, "normal": result.normal}
        return JobOutput(arrays, {}, result.report)
