"""The ``fit`` and ``extract`` jobs: a SIREN SDF fitted to meshes, and a fitted model's surface."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .. import protocol
from .base import MAX_STEPS, Device, JobContext, JobOutput, JobSpec, check_bounds, extract_surface, input_shapes

MAX_PREVIEW_INTERVAL_S = 3600.0
"""Longest interval between live previews: an hour (longer is as good as none)."""


@dataclass(frozen=True)
class FitJob(JobSpec):
    """Fit one SDF to the union of the inputs, extract its zero level set and (optionally) measure it against the
    input. Outputs ``vertices`` (n, 3) float64 and ``faces`` (m, 3) int32 in the input's coordinates; file
    ``model.pt``.

    Inputs, one per name, all meshes or all point clouds:
    - a mesh: ``vertices_<i>`` (n, 3) float64 and ``faces_<i>`` (m, 3) integer vertex indices;
    - a point cloud (a scan, a mesh of vertices only): ``points_<i>`` (n, 3) float64, at least
      `engine.point_clouds.MIN_POINTS`, and optionally ``normals_<i>`` (n, 3) (any length but zero, outward). Where
      they are missing they are estimated (`engine.point_clouds.estimate_normals`), and the summary says so:
      ``"normals": "estimated"`` (or ``"partly estimated"``; ``"given"`` otherwise), ``"normals_estimated_for"``
      (the names) and a line in ``"warnings"`` for the front end to show. Point clouds are measured against their
      points (`engine.metrics.point_metrics`: no IoU; ``"metrics_reference"`` says what was compared).
    Meshes whose faces lie partly inside the shape (parts modelled into each other: `engine.sampling.buried_faces`)
    are fitted as the surface of their union; the summary gives that area's share, ``"interior_area_share"``, and a
    line in ``"warnings"``."""

    kind = "fit"
    stages = ("fit", "extract", "measure")

    names: tuple[str, ...]
    """What each input mesh is called (messages and the model's metadata): one per mesh."""
    preset: str = "fast"
    """Starting settings: a name of engine.fit.PRESETS."""
    steps: int | None = None
    """Optimizer steps (default: the preset's); with levels, of each level."""
    levels: int = 1
    """Levels of detail in one model (engine.multires_fit): 1, one SIREN; 2 to 4, a small smooth SIREN and residual
    SIRENs of rising frequency, each trained in a band around the coarser levels' surface (nested levels; extract
    any level later). The surface is the finest level's."""
    resolution: int = 256
    """Marching-cubes grid points per axis."""
    device: Device = "auto"
    """Where to train: auto takes CUDA when PyTorch sees a GPU."""
    seed: int = 0
    """Seed of every random draw."""
    curvature_sampling: bool = False
    """Draw surface samples by curvature bands (i3d) instead of by area (meshes only)."""
    point_method: Literal["winding", "siren"] = "winding"
    """Point clouds only: winding, a signed distance to fit off the surface (sign from the winding number of the
    oriented points, distance from the nearest points); siren, no distance (SIREN's off-surface loss)."""
    metrics: bool = True
    """Measure the surface against the input (Chamfer-L1, normal consistency, F-score, IoU, Hausdorff)."""
    compiled_step: bool = False
    """Train on a compiled step (`engine.fit.FitConfig.compiled_step`: the same loss through the explicit derivative
    pass, compiled by torch.compile; meant for CUDA, slower on the CPU)."""
    tuner: bool = False
    """TUNER's frequency control (`engine.fit.FitConfig.tuner`): a frozen integer first layer of band limit 16 and
    bounded first hidden weights, saved in the model file."""
    colors: bool = False
    """Also fit a colour network from the inputs' colours (vertex_colors_<i>, or color_points_<i> with
    color_values_<i>) and give the extracted vertices their colours."""
    color_steps: int | None = None
    """Colour network training steps (default: the preset's, engine.surface_colors.COLOR_PRESETS)."""
    preview_interval: float = 0.0
    """Seconds between live previews of the surface while it trains (a low-resolution extraction written for the
    front end that shows it; previews take about 5 % of the training time at most); 0: none. The command line shows
    none."""

    def check(self) -> None:
        from ..fit import PRESETS

        if not 0.0 <= self.preview_interval <= MAX_PREVIEW_INTERVAL_S:
            self.fail(
                "preview_interval", f"must be 0 (off) to {MAX_PREVIEW_INTERVAL_S:g} seconds, got {self.preview_interval:g}"
            )
        if self.preset not in PRESETS:
            self.fail("preset", f"must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if not self.names:
            self.fail("names", "must name at least one input mesh")
        check_bounds(self, "color_steps", 1, MAX_STEPS)
        from ..multires_fit import MAX_LEVELS

        check_bounds(self, "levels", 1, MAX_LEVELS, "levels of detail a fit trains")
        if self.tuner and self.levels > 1:
            self.fail("tuner", "needs levels 1: the levels of detail set their own frequency bands")
        if self.color_steps is not None and not self.colors:
            self.fail("color_steps", "needs colors (a colour network to train)")

    def fit_config(self):
        """The `engine.fit.FitConfig` of these settings."""
        from ..fit import preset

        overrides = {"device": self.device, "seed": self.seed, "curvature_sampling": self.curvature_sampling,
                     "point_method": self.point_method, "tuner": self.tuner,
                     "compiled_step": self.compiled_step}  # fmt: skip
        if self.steps is not None:
            overrides["steps"] = self.steps
        return preset(self.preset, **overrides)

    def color_config(self):
        """The `engine.surface_colors.ColorConfig` of these settings."""
        from ..surface_colors import COLOR_PRESETS

        overrides = {"device": self.device, "seed": self.seed}
        if self.color_steps is not None:
            overrides["steps"] = self.color_steps
        return dataclasses.replace(COLOR_PRESETS[self.preset], **overrides)

    def run(self, inputs: dict[str, np.ndarray], context: JobContext) -> JobOutput:
        from ..mesh_io import merge_meshes
        from ..multires_fit import fit_levels
        from ..point_clouds import PointCloud, merge_point_clouds, with_normals
        from ..preview import LivePreview

        shapes = input_shapes(inputs, self.names, context)
        clouds = [name for name, shape in zip(self.names, shapes) if isinstance(shape, PointCloud)]
        if clouds and len(clouds) < len(shapes):
            meshes = [name for name in self.names if name not in clouds]
            raise ValueError(
                f"one fit takes meshes or point clouds, not both: {_listed(meshes, context)} "
                f"{'is a mesh' if len(meshes) == 1 else 'are meshes'}, {_listed(clouds, context)} "
                f"{'is a point cloud' if len(clouds) == 1 else 'are point clouds'}; fit them separately"
            )
        if clouds and self.curvature_sampling:
            self.fail("curvature_sampling", "needs meshes: point clouds are sampled by their points' areas")
        config = self.fit_config()
        color_samples, color_config = self._color_samples(inputs, shapes, context)
        color_steps = color_config.steps if color_config else 0
        shape_steps = config.steps * self.levels
        preview = on_step = None
        if self.preview_interval > 0 and context.show_preview is not None:
            preview = LivePreview(self.preview_interval, context.show_preview)

            def on_step(step, model):
                if step < shape_steps and preview.due():  # the last step's surface is the result itself
                    preview.show_model(model)
        context.report("fit", 0, shape_steps + color_steps, None, None)
        estimated = [name for name, shape in zip(self.names, shapes) if clouds and shape.normals is None]
        if estimated:
            shapes = [with_normals(shape) for shape in shapes]
            context.raise_if_cancelled("after estimating normals")
        model = fit_levels(
            shapes,
            config,
            self.levels,
            on_progress=_counted(context, 0, shape_steps + color_steps),
            should_cancel=context.should_cancel,
            on_step=on_step,
        )
        model.metadata["sources"] = list(self.names)
        if color_samples is not None:
            from ..surface_colors import fit_colors

            context.raise_if_cancelled("after training the shape, before its colours")
            model = fit_colors(
                model, color_samples, color_config, should_cancel=context.should_cancel,
                on_progress=_counted(context, shape_steps, shape_steps + color_steps),
            )  # fmt: skip
        context.raise_if_cancelled("after training, before extraction")
        vertices, faces, extract_seconds = extract_surface(model, self.resolution, self.device, context)
        arrays = {"vertices": vertices, "faces": faces}
        if model.colors is not None:
            from ..surface_colors import colors_at

            arrays["colors"] = colors_at(model, vertices)
        reference = merge_point_clouds(shapes) if clouds else merge_meshes(shapes)
        summary = {
            "train_seconds": round(model.metadata["train_seconds"], 2),
            "extract_seconds": round(extract_seconds, 2),
            "loss": model.metadata["best_validation_loss"],
            "device": model.metadata["device"],
            "steps": config.steps,
            "levels": self.levels,
            **({"deltas": list(model.network.config.deltas)} if self.levels > 1 else {}),
            "preset": self.preset,
            "resolution": self.resolution,
            **({"input_points": int(len(reference.points))} if clouds else {"input_faces": int(len(reference.faces))}),
            "output_vertices": int(len(vertices)),
            "output_faces": int(len(faces)),
        }
        if clouds:
            summary["point_method"] = self.point_method
            every = len(estimated) == len(shapes)
            summary["normals"] = "given" if not estimated else "estimated" if every else "partly estimated"
            if estimated:
                summary["normals_estimated_for"] = estimated
                summary["warnings"] = [
                    f"normals of {_listed(estimated, context)} were estimated from the points (PCA over their nearest "
                    "neighbours, oriented along a spanning tree and by the winding number): where the result's inside "
                    "and outside look swapped, give normals"
                ]
        interior = model.metadata["interior_area_share"]
        if interior > 0.0:
            summary["interior_area_share"] = round(interior, 4)
            summary.setdefault("warnings", []).append(
                f"{interior:.1%} of the surface area of {_listed(list(self.names), context)} lies inside the shape "
                "(parts modelled into each other): those faces were taken as its inside, not its surface; where they "
                "should be a surface (a hollow), make their normals point out of the solid"
            )
        if model.colors is not None:
            from ..model import COLORS_KEY

            facts = model.metadata[COLORS_KEY]
            summary["colors"] = {
                "samples": facts["samples"], "train_seconds": round(facts["train_seconds"], 2),
                "training_psnr_db": round(facts["training_psnr_db"], 2), "steps": color_steps,
            }  # fmt: skip
        if preview is not None:
            summary["previews"] = preview.shown
            summary["preview_seconds"] = round(preview.spent_s, 2)
        if self.metrics:
            from ..metrics import mesh_metrics, point_metrics
            from ..ply_io import as_written

            context.raise_if_cancelled("before measuring the surface")
            context.report("measure", 0, 1, None, None)
            # Measured as a PLY file holds them: float32 coordinates where they keep the mesh's precision.
            if clouds:
                measured = point_metrics(as_written(vertices), faces, reference.points, reference.normals)
                summary["metrics_normalization"] = "input points scaled so their largest bounding-box side is 1"
                summary["metrics_reference"] = (
                    "the input points: distances from the surface to the nearest point and from each point to the "
                    f"surface, normal consistency with the {'estimated' if estimated else 'given'} normals; no IoU"
                )
            else:
                measured = mesh_metrics(as_written(vertices), faces, reference.vertices, reference.faces)
                summary["metrics_normalization"] = "ground truth scaled so its largest bounding-box side is 1"
            context.report("measure", 1, 1, None, None)
            summary["metrics"] = measured.to_dict()
        model.save(context.output_dir / protocol.MODEL_FILENAME)
        return JobOutput(arrays, {"model": protocol.MODEL_FILENAME}, summary)

    def _color_samples(self, inputs, shapes, context: JobContext):
        """The inputs' colour samples and the colour settings (None, None without ``colors``), checked before any
        training."""
        from ..color_samples import COLOR_INPUT_PREFIXES, input_color_samples

        if not self.colors:
            given = sorted(name for name in inputs if name.startswith(COLOR_INPUT_PREFIXES))
            if given:
                self.fail("colors", f"is false, but the inputs hold colours ({', '.join(given)}): set it to fit them")
            return None, None
        config = self.color_config()
        shown = [context.input_name(name) for name in self.names]
        rng = np.random.default_rng(self.seed)
        return input_color_samples(inputs, shapes, shown, config.pool_size, rng), config


def _counted(context: JobContext, before: int, total: int):
    """An ``on_progress`` that reports a training as the ``fit`` stage, its steps after ``before`` of ``total``
    (the shape's steps, then the colours')."""
    return lambda p: context.report("fit", before + p.step, total, p.loss, p.eta_s)


def _listed(names: list[str], context: JobContext) -> str:
    shown = [context.input_name(name) for name in names[:3]]
    return ", ".join(shown) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


@dataclass(frozen=True)
class ExtractJob(JobSpec):
    """Extract a fitted model's zero level set again, without training. Outputs as for ``fit`` (``colors`` too when
    the model has a colour network)."""

    kind = "extract"
    stages = ("extract",)

    model: str
    """Path of a model file written by a fit."""
    resolution: int = 256
    """Marching-cubes grid points per axis."""
    device: Device = "auto"
    """Where to evaluate the network."""
    level: float | None = None
    """Level of detail of a model fitted with levels: 0 the coarsest to levels - 1 the finest, between two a blend
    (engine.multires); default the finest. Extracted band-culled: the finer stages only near the coarser surface."""

    def run(self, inputs: dict[str, np.ndarray], context: JobContext) -> JobOutput:
        from ..model import load_model
        from ..multires import LevelOfDetail, MultiresSDF

        model = load_model(self.model)
        if isinstance(model.network, MultiresSDF):
            try:
                model = dataclasses.replace(model, network=LevelOfDetail(model.network, self.level))
            except ValueError as error:
                self.fail("level", str(error))
        elif self.level not in (None, 0):
            self.fail("level", f"is {self.level:g}, but {self.model} holds one level (0): fit it with levels to choose")
        vertices, faces, seconds = extract_surface(model, self.resolution, self.device, context)
        summary = {"vertices": int(len(vertices)), "faces": int(len(faces)), "extract_seconds": round(seconds, 2)}
        if self.level is not None:
            summary["level"] = self.level
        arrays = {"vertices": vertices, "faces": faces}
        if model.colors is not None:
            from ..surface_colors import colors_at

            arrays["colors"] = colors_at(model, vertices)
        return JobOutput(arrays, {}, summary)
