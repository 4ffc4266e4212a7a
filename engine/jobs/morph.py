"""The ``morph`` job: two meshes fitted in one cube, a morph trained between them and meshed at evenly spaced
times."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .base import MAX_FRAMES, Device, JobContext, JobOutput, JobSpec, check_bounds, frame_arrays, input_array
from .base import input_meshes
from .fit import FitJob


@dataclass(frozen=True)
class MorphJob(JobSpec):
    """Morph the source ``vertices_0`` / ``faces_0`` (t = 0) into the target ``vertices_1`` / ``faces_1`` (t = 1),
    optionally guided by ``landmarks_source`` / ``landmarks_target`` (k, 3) point pairs (flow only). Outputs per
    frame i ``vertices_<i>``, ``faces_<i>`` and ``times``; with ``warp_source`` also ``source_positions`` (frames,
    n, 3) float64, the source's own vertices at each time (same topology). File ``morph.pt``. Coordinates are the
    source's (the target is moved onto it with ``align`` "bounds").

    With ``colors``, both shapes' colours come in as for ``fit`` (``vertex_colors_<i>``, or ``color_points_<i>``
    with ``color_values_<i>``; i = 0 the source, 1 the target), a colour network is fitted to each, and every frame
    gets ``surface_colors_<i>`` (n, 3) float32 linear RGB: levelset, (1 - t) c_source + t c_target, each read on its
    own shape; flow, the source's colour carried along the warp (read at T(x, -t)); with ``warp_source`` also
    ``source_colors`` (n, 3) float32, the colour at each of the source's own vertices (which the flow carries)."""

    kind = "morph"
    stages = ("fit", "morph", "frames")

    names: tuple[str, str]
    """What the source and the target are called (messages and the fits' metadata)."""
    method: Literal["levelset", "flow"] = "levelset"
    """levelset: blend the two distance fields (exact ends, topology may change); flow: carry the source along a
    learned warp (keeps its topology)."""
    frames: int = 9
    """Frames from t = 0 to 1, both included."""
    align: Literal["bounds", "none"] = "bounds"
    """bounds: first move and scale the target onto the source's bounding box; none: take both as they are."""
    preset: str = "fast"
    """Fit settings of both shapes: a name of engine.fit.PRESETS."""
    fit_steps: int | None = None
    """Fit steps of each shape (default: the preset's)."""
    steps: int | None = None
    """Morph training steps (default: the method's)."""
    resolution: int = 128
    """Marching-cubes grid points per axis of each frame."""
    device: Device = "auto"
    """Where to train."""
    seed: int = 0
    """Seed of every random draw."""
    warp_source: bool = False
    """flow: also move the source mesh's own vertices along the morph (shape keys)."""
    colors: bool = False
    """Also fit both shapes' colours (vertex_colors_<i>, or color_points_<i> with color_values_<i>) and colour the
    frames: blended (levelset) or carried along the warp (flow)."""

    def check(self) -> None:
        from ..fit import PRESETS

        if self.preset not in PRESETS:
            self.fail("preset", f"must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.warp_source and self.method != "flow":
            self.fail("warp_source", "needs the flow method (a level-set morph does not move the source's vertices)")
        check_bounds(self, "frames", 2, MAX_FRAMES, "every frame comes back in one result")

    def run(self, inputs: dict[str, np.ndarray], context: JobContext) -> JobOutput:
        from .. import protocol
        from ..fields import even_times
        from ..morph import METHODS, align_bounds, fit_pair, morph, morph_config, save_morph, warp_points
        from ..morph.common import checked_landmarks, shared_cube

        times = even_times(self.frames)
        source, target = input_meshes(inputs, self.names, context)
        landmarks = None
        if "landmarks_source" in inputs or "landmarks_target" in inputs:
            if not METHODS[self.method].takes_landmarks:
                raise ValueError(f"landmarks guide the flow method only, not {self.method}")
            landmarks = (input_array(inputs, "landmarks_source"), input_array(inputs, "landmarks_target"))
        alignment = None
        if self.align == "bounds":
            target, scale, offset = align_bounds(target, source)
            alignment = {"scale": scale, "offset": offset.tolist()}
            if landmarks is not None:
                landmarks = (landmarks[0], np.asarray(landmarks[1], dtype=np.float64) * scale + offset)
        if landmarks is not None:  # checked before the fits, which take minutes
            checked_landmarks(landmarks, shared_cube(source, target))
        fit_job = FitJob(names=self.names, preset=self.preset, steps=self.fit_steps, device=self.device, seed=self.seed)
        fit_config = fit_job.fit_config()
        color_samples = None
        if self.colors:
            from ..color_samples import input_color_samples

            if alignment is not None:  # the target's colour samples move with it
                inputs = dict(inputs)
                if "color_points_1" in inputs:
                    inputs["color_points_1"] = np.asarray(inputs["color_points_1"], dtype=np.float64) * scale + offset
            shown = [context.input_name(name) for name in self.names]
            pool = fit_job.color_config().pool_size
            color_samples = input_color_samples(inputs, (source, target), shown, pool, np.random.default_rng(self.seed))
        else:
            from ..color_samples import COLOR_INPUT_PREFIXES

            if any(name.startswith(COLOR_INPUT_PREFIXES) for name in inputs):
                self.fail("colors", "is false, but the inputs hold colours: set it to colour the morph")

        context.report("fit", 0, 2 * fit_config.steps, None, None)
        model_a, model_b = fit_pair(
            source,
            target,
            fit_config,
            on_progress=lambda index, p: context.report(
                "fit", index * p.total + p.step, 2 * p.total, p.loss, p.eta_s + (1 - index) * (p.elapsed_s + p.eta_s)
            ),  # the second fit trains the same network as many steps as the first: it takes as long again
            should_cancel=context.should_cancel,
        )
        for model, name in zip((model_a, model_b), self.names):
            model.metadata["sources"] = [name]
        if color_samples is not None:
            from ..surface_colors import fit_colors

            model_a, model_b = (
                fit_colors(model, samples, fit_job.color_config(), should_cancel=context.should_cancel)
                for model, samples in zip((model_a, model_b), color_samples)
            )
        config = morph_config(self.method, steps=self.steps, device=self.device, seed=self.seed)
        context.report("morph", 0, config.steps, None, None)
        morphed = morph(
            model_a,
            model_b,
            config,
            landmarks=landmarks,
            on_progress=context.training_progress("morph"),
            should_cancel=context.should_cancel,
        )
        arrays, frames, frame_seconds = frame_arrays(morphed, tuple(times), self.resolution, context)
        if color_samples is not None:
            from ..surface_colors import blended_colors, colors_at

            for index, frame in enumerate(frames):
                if self.method == "flow":  # the source's colour where the warp takes each point back to
                    back = warp_points(morphed, frame.vertices, -frame.time) if len(frame.vertices) else frame.vertices
                    arrays[f"surface_colors_{index}"] = colors_at(model_a, back)
                else:
                    arrays[f"surface_colors_{index}"] = blended_colors(model_a, model_b, frame.vertices, frame.time)
            if self.warp_source:  # the source's own vertices keep their colour as the flow carries them
                arrays["source_colors"] = colors_at(model_a, source.vertices)
        if self.warp_source:
            positions = [warp_points(morphed, source.vertices, t) for t in times]
            arrays["source_positions"] = np.stack(positions)
        save_morph(morphed, context.output_dir / protocol.MORPH_MODEL_FILENAME)
        facts = morphed.metadata["morph"]
        summary = {
            "method": self.method,
            "times": times,
            "target_alignment": alignment,
            "fit_seconds": round(model_a.metadata["train_seconds"] + model_b.metadata["train_seconds"], 2),
            "train_seconds": round(facts["train_seconds"], 2),
            "frame_seconds": frame_seconds,
            "device": facts["device"],
            "steps": config.steps,
            "resolution": self.resolution,
        }
        return JobOutput(arrays, {"model": protocol.MORPH_MODEL_FILENAME}, summary)
