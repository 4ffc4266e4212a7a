"""The ``curvature`` job: a fitted model's curvatures at points (or on its own surface), with colours."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .base import Colormap, Device, JobContext, JobOutput, JobSpec, extract_surface, input_array

CHUNK = 32768
"""Points per curvature evaluation between progress reports and cancel checks."""


@dataclass(frozen=True)
class CurvatureJob(JobSpec):
    """Curvatures of a fitted model at the input ``points`` (n, 3), or, without points, at the vertices of its own
    extracted surface (then also output as ``vertices`` and ``faces``). Outputs float32 (n,) ``mean`` (H = kappa /
    2), ``gaussian``, ``k1``, ``k2`` in input units (`engine.fields.CURVATURE_FIELDS`) and ``colors`` (n, 4) float32
    sRGB."""

    kind = "curvature"
    stages = ("extract", "curvature")

    model: str
    """Path of a model file written by a fit."""
    quantity: str = "mean"
    """What the colours show: a name of engine.colormaps.QUANTITIES (mean is H = kappa / 2)."""
    colormap: Colormap = "auto"
    """auto: diverging for signed quantities, sequential for magnitudes."""
    range: tuple[float, float] | None = None
    """Colour range [low, high] (default: robust automatic)."""
    project: bool = False
    """Move the points onto the model's surface first (the vertices of another mesh)."""
    resolution: int = 256
    """Grid points per axis when the model's own surface is extracted (no points given)."""
    device: Device = "auto"
    """Where to evaluate the network."""

    def check(self) -> None:
        from ..colormaps import QUANTITIES

        if self.quantity not in QUANTITIES:
            self.fail("quantity", f"must be one of {', '.join(QUANTITIES)}, got {self.quantity!r}")
        if self.range is not None and not self.range[0] < self.range[1]:
            self.fail("range", f"must be [low, high] with low < high, got {list(self.range)}")

    def run(self, inputs: dict[str, np.ndarray], context: JobContext) -> JobOutput:
        from ..colormaps import colorize, map_kind
        from ..conventions import CURVATURE_CONVENTION
        from ..fields import CURVATURE_FIELDS
        from ..geometry import model_curvatures
        from ..model import load_model
        from ..training import pick_device

        model = load_model(self.model)
        arrays = {}
        if "points" in inputs:
            points = np.asarray(input_array(inputs, "points"), dtype=np.float64)
            if points.ndim != 2 or points.shape[1] != 3:
                raise ValueError(f"the points to colour must be (n, 3), got shape {points.shape}")
            if len(points) == 0:
                raise ValueError("There are no points to colour: the mesh has no vertices")
        else:
            if self.project:
                self.fail("project", "applies to given points; the model's own surface is already on it")
            arrays["vertices"], arrays["faces"], _ = extract_surface(model, self.resolution, self.device, context)
            points = arrays["vertices"].astype(np.float64)
        model.network.to(pick_device(self.device))

        chunks = []
        total = len(points)
        context.report("curvature", 0, total, None, None)
        started = time.perf_counter()
        for start in range(0, total, CHUNK):
            context.raise_if_cancelled(f"after {start} of {total} points")
            chunks.append(model_curvatures(model, points[start : start + CHUNK], project=self.project))
            done = min(start + CHUNK, total)
            elapsed = time.perf_counter() - started
            context.report("curvature", done, total, None, elapsed / done * (total - done))
        for name in CURVATURE_FIELDS:
            arrays[name] = np.concatenate([getattr(chunk, name) for chunk in chunks]).astype(np.float32)
        shown = np.concatenate([getattr(chunk, self.quantity) for chunk in chunks])
        colors, (low, high) = colorize(shown, map_kind(self.quantity, self.colormap), value_range=self.range)
        arrays["colors"] = colors.astype(np.float32)
        summary = {
            "quantity": self.quantity,
            "colormap": self.colormap,
            "range": [low, high],
            "convention": CURVATURE_CONVENTION,
            "points": total,
            "seconds": round(time.perf_counter() - started, 2),
        }
        return JobOutput(arrays, {}, summary)
