"""The ``ridges`` job: a fitted model's ridge and valley lines, traced on a mesh of its surface."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Device, JobContext, JobOutput, JobSpec, extract_surface, input_array


@dataclass(frozen=True)
class RidgesJob(JobSpec):
    """Ridge (crest) and valley lines of a fitted model (`engine.ridges`: where k1 is a maximum along its direction
    and k1 > |k2|; valleys where k2 is a minimum and k2 < -|k1|), traced on the input mesh ``vertices`` (n, 3) /
    ``faces`` (m, 3) in the model's input coordinates (e.g. its fitted surface), or, without them, on its surface
    extracted at ``resolution``. Outputs, for each of ``ridge`` and ``valley``: ``<kind>_points`` (p, 3) float64,
    ``<kind>_offsets`` (lines + 1,) int64 (line i is points[offsets[i]:offsets[i + 1]]) and ``<kind>_closed``
    (lines,) bool (the line loops back to its first point)."""

    kind = "ridges"
    stages = ("extract", "curvature")

    model: str
    """Path of a model file written by a fit."""
    min_length: float = 0.05
    """Lines shorter than this fraction of the surface's bounding-box diagonal are dropped."""
    min_strength: float = 0.5
    """Lines whose mean curvature across them is below this fraction of the 90th percentile of the surface's
    largest |principal curvature| are dropped (a fit's small bumps); 0 keeps every line."""
    project: bool = True
    """Move the traced points from the mesh onto the model's zero level set."""
    resolution: int = 256
    """Grid points per axis when the model's own surface is extracted (no mesh given)."""
    device: Device = "auto"
    """Where to evaluate the network."""

    def check(self) -> None:
        if not 0.0 <= self.min_length <= 1.0:
            self.fail("min_length", f"must be a fraction of the bounding-box diagonal in [0, 1], got {self.min_length}")
        if not self.min_strength >= 0.0:
            self.fail("min_strength", f"must be at least 0, got {self.min_strength}")

    def run(self, inputs: dict[str, np.ndarray], context: JobContext) -> JobOutput:
        import time

        from ..mesh_io import check_mesh
        from ..model import load_model
        from ..ridges import model_ridges
        from ..training import pick_device

        model = load_model(self.model)
        if "vertices" in inputs or "faces" in inputs:
            mesh = check_mesh(input_array(inputs, "vertices"), input_array(inputs, "faces"), name="the mesh to trace")
            vertices, faces = mesh.vertices, mesh.faces
        else:
            vertices, faces, _ = extract_surface(model, self.resolution, self.device, context)
        model.network.to(pick_device(self.device))
        started = time.perf_counter()
        context.report("curvature", 0, len(vertices), None, None)
        ridges, valleys = model_ridges(
            model,
            vertices,
            faces,
            min_length=self.min_length,
            min_strength=self.min_strength,
            project=self.project,
            report=lambda done, total, eta: context.report("curvature", done, total, None, eta),
            raise_if_cancelled=context.raise_if_cancelled,
        )
        arrays, summary = {}, {"vertices": len(vertices), "faces": len(faces)}
        for name, lines in (("ridge", ridges), ("valley", valleys)):
            if not np.isfinite(lines.points).all():
                raise ValueError(f"the model gave non-finite {name} points: its surface has no normal there")
            arrays[f"{name}_points"] = lines.points.astype(np.float64)
            arrays[f"{name}_offsets"] = lines.offsets.astype(np.int64)
            arrays[f"{name}_closed"] = lines.closed.astype(bool)
            summary[f"{name}_lines"] = len(lines)
            summary[f"{name}_length"] = round(float(lines.lengths().sum()), 6)
        summary["seconds"] = round(time.perf_counter() - started, 2)
        return JobOutput(arrays, {}, summary)
