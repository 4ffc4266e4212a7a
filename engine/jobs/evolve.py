"""The ``evolve`` job: a fitted surface moved by a flow (mean curvature, normal speed, vector fields), meshed at
each asked time."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from .base import MAX_FRAMES, Colormap, Device, JobContext, JobOutput, JobSpec, frame_arrays


@dataclass(frozen=True)
class EvolveJob(JobSpec):
    """Train f(x, t) = g(x) + t c(x, t) from the fitted model g under ``flow`` and mesh it at ``times``. No inputs.
    Outputs per frame i ``vertices_<i>`` (n, 3) float64 and ``faces_<i>`` (m, 3) int32 (empty where the surface has
    vanished), ``times``; with ``curvature`` also ``colors_<i>`` (n, 4) float32 sRGB on one range shared by every
    frame and the fields ``mean_<i>``, ``gaussian_<i>``, ``k1_<i>``, ``k2_<i>`` (n,) float32; with ``track_vertices``
    also ``tracked_faces`` (m, 3) int32 (the first frame's) and ``tracked_positions`` (k, n, 3) float64, the first
    frame's vertices at the first k times, for as long as the tracked mesh stays valid (summary ``tracking``: frames,
    stop {frame, time, reason, message} or null, seconds). File ``evolution.pt``."""

    kind = "evolve"
    stages = ("evolve", "frames", "track", "curvature")

    model: str
    """Path of a model file written by a fit."""
    flow: dict
    """What moves the surface, in input coordinates (engine.surface_flows.Flow.to_dict): mean_curvature (lambda,
    length^2 per time), normal_speed (length per time), fields [{kind, center, strength, radius, axis}]."""
    times: tuple[float, ...]
    """The times to mesh, one frame each (negative times under mean curvature flow sharpen)."""
    steps: int | None = None
    """Training steps (default: engine.evolution.EvolveConfig's)."""
    resolution: int = 128
    """Marching-cubes grid points per axis of each frame."""
    device: Device = "auto"
    """Where to train."""
    seed: int = 0
    """Seed of every random draw."""
    curvature: str | None = None
    """Also colour each frame by this quantity (a name of engine.colormaps.QUANTITIES)."""
    colormap: Colormap = "auto"
    """The colour map of the curvature colours."""
    track_vertices: bool = False
    """Also carry the first frame's mesh along the flow (one topology, engine.vertex_tracking) until it stops being
    valid."""

    def check(self) -> None:
        from ..colormaps import QUANTITIES
        from ..surface_flows import Flow

        try:
            Flow.from_dict(self.flow)
        except (TypeError, ValueError) as error:
            self.fail("flow", f"is not a flow: {error}")
        if not self.times:
            self.fail("times", "must list at least one time")
        if len(self.times) > MAX_FRAMES:
            count = len(self.times)
            self.fail("times", f"must list at most {MAX_FRAMES} times (each is a frame of one result), got {count}")
        if self.curvature is not None and self.curvature not in QUANTITIES:
            self.fail("curvature", f"must be one of {', '.join(QUANTITIES)} or null, got {self.curvature!r}")

    def evolve_config(self):
        """The `engine.evolution.EvolveConfig` of these settings."""
        from ..evolution import EvolveConfig

        config = EvolveConfig(device=self.device, seed=self.seed)
        return config if self.steps is None else dataclasses.replace(config, steps=self.steps)

    def run(self, inputs: dict[str, np.ndarray], context: JobContext) -> JobOutput:
        from .. import protocol
        from ..evolution import evolve, save_evolution
        from ..fields import CURVATURE_FIELDS, frame_curvatures
        from ..model import load_model
        from ..surface_flows import Flow

        flow = Flow.from_dict(self.flow)
        config = self.evolve_config()
        model = load_model(self.model)
        context.report("evolve", 0, config.steps, None, None)
        evolved = evolve(
            model,
            flow,
            (min(0.0, *self.times), max(0.0, *self.times)),
            config,
            on_progress=context.training_progress("evolve"),
            should_cancel=context.should_cancel,
        )
        arrays, frames, frame_seconds = frame_arrays(evolved, self.times, self.resolution, context)
        facts = evolved.metadata["evolution"]
        summary = {
            "times": list(self.times),
            "flow": flow.to_dict(),
            "train_seconds": round(facts["train_seconds"], 2),
            "frame_seconds": frame_seconds,
            "device": facts["device"],
            "steps": config.steps,
            "resolution": self.resolution,
            "curvature": self.curvature,
            "colormap": self.colormap,
        }
        if self.track_vertices:
            context.raise_if_cancelled("before tracking the vertices")
            arrays.update(self._tracked(evolved, frames, summary, context))
        if self.curvature is not None:
            context.raise_if_cancelled("before the curvature colours")
            context.report("curvature", 0, len(frames), None, None)
            started = time.perf_counter()

            def report(done: int, total: int) -> None:
                elapsed = time.perf_counter() - started
                context.report("curvature", done, total, None, elapsed / done * (total - done))

            curvatures, value_range = frame_curvatures(
                evolved, frames, self.curvature, self.colormap, on_frame=report, should_cancel=context.should_cancel
            )
            summary["curvature_range"] = list(value_range)
            summary["curvature_seconds"] = round(time.perf_counter() - started, 2)
            for index, values in enumerate(curvatures):
                arrays[f"colors_{index}"] = values.colors.astype(np.float32)
                for name in CURVATURE_FIELDS:
                    arrays[f"{name}_{index}"] = values.fields[name].astype(np.float32)
        if model.colors is not None:
            from ..surface_colors import colors_at

            context.raise_if_cancelled("before the frames' colours")
            for index, frame in enumerate(frames):
                arrays[f"surface_colors_{index}"] = colors_at(model, frame.vertices)
            summary["surface_colors"] = True
        save_evolution(evolved, context.output_dir / protocol.EVOLUTION_MODEL_FILENAME)
        return JobOutput(arrays, {"model": protocol.EVOLUTION_MODEL_FILENAME}, summary)

    def _tracked(self, evolved, frames: list, summary: dict, context: JobContext) -> dict[str, np.ndarray]:
        """The tracked frames' arrays; their facts go into ``summary["tracking"]``."""
        from ..vertex_tracking import TrackingConfig, track_vertices

        first = frames[0]
        if len(first.faces) == 0:
            self.fail("track_vertices", f"needs a surface at the first time t = {self.times[0]:g}: it has vanished there")
        started = time.perf_counter()

        def report(done: int, total: int) -> None:
            elapsed = time.perf_counter() - started
            context.report("track", done, total, None, elapsed / done * (total - done))

        context.report("track", 0, len(frames), None, None)
        tracked = track_vertices(
            evolved, first.vertices, first.faces, self.times, self.resolution, TrackingConfig(device=self.device),
            frames=frames, on_frame=report, should_cancel=context.should_cancel,
        )  # fmt: skip
        context.report("track", len(frames), len(frames), None, 0.0)
        summary["tracking"] = {
            "frames": len(tracked.positions),
            "stop": None if tracked.stop is None else tracked.stop.to_dict(),
            "seconds": round(time.perf_counter() - started, 2),
        }
        return {"tracked_faces": tracked.faces.astype(np.int32), "tracked_positions": tracked.positions}
