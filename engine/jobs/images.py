"""The image jobs: ``image_fit`` (an image network, SIREN or MR-Net levels), ``image_render`` (a fitted image or
tile at any size, region and level) and ``image_tile`` (a seamless tile); ``image_morph`` is in `.image_morph`.

Images travel as arrays, never as paths, so a remote engine runs them unchanged: an input image is ``image``
(height, width, channels) float32 with row 0 at the top (`engine.images.io`'s layout; channels 1 grey, 2 grey and
alpha, 3 RGB, 4 RGBA), its colour channels encoded as the job's ``encoding`` says ("linear": linear light, as a
float image is; "srgb": sRGB-encoded values in [0, 1], as an 8-bit image's bytes / 255 are; alpha is straight
and never encoded). Every output image is float32 in linear light (alpha straight), of the same layout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .base import Device, JobContext, JobOutput, JobSpec, check_bounds, input_array

Encoding = Literal["linear", "srgb"]
MAX_LEVELS = 12
"""MR-Net levels at most (a 4096-pixel side has 11 halvings above the coarsest 4 pixels)."""
MAX_SIDE = 65536
"""The longest side a render may have (the image model files' limit)."""
MAX_TILE_SIDE = 16384
MAX_TRAIN_SIDE = 8192
MIN_TILE_SIDE = 8
IMAGE_MODEL_FILENAME = "model.pt"
"""The model file of an image fit or a tile (the protocol's ``model.pt``)."""


def input_image(inputs: dict[str, np.ndarray], array: str, name: str, encoding: str):
    """The input array ``array`` checked as an `engine.images.io.Image` in linear light; messages call it ``name``."""
    from ..images.io import check_image

    return check_image(input_array(inputs, array), name, encoding)


def finite_image(pixels: np.ndarray, what: str) -> np.ndarray:
    """``pixels`` as float32, refused (ValueError) when any value is NaN or infinite."""
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    if not np.isfinite(pixels).all():
        raise ValueError(f"{what} has NaN or infinite pixels: the network diverged; lower the learning rate or the "
                         "band (a fit), or train again with another seed")  # fmt: skip
    return pixels


def staged_progress(context: JobContext, stage: str, totals: list[int]):
    """``on_progress(index, progress)`` for trainings of several parts in a row (MR-Net's stages): one count over
    all of them, ``totals`` being each part's most steps (a part that stops early jumps to the next one's start)."""

    def report(index: int, progress) -> None:
        done = sum(totals[:index]) + progress.step
        per_step = progress.elapsed_s / max(progress.step, 1)
        eta = progress.eta_s + per_step * sum(totals[index + 1 :])
        context.report(stage, done, sum(totals), progress.loss, eta)

    return report


@dataclass(frozen=True)
class ImageFitJob(JobSpec):
    """Fit an image network to the input ``image`` (see the module's notes for its layout and encoding). Outputs
    ``render``: the full level at the input's size (float32, linear light). File ``model.pt`` (an image model file,
    `engine.images.files`: ``image render`` and the ``image_render`` job read it). The summary holds per level its
    steps, seconds and PSNR against its targets, and ``psnr_db`` of the render against the input (sRGB values)."""

    kind = "image_fit"
    stages = ("fit", "render")

    name: str = "image"
    """What the image is called (messages, the model's metadata)."""
    encoding: Encoding = "linear"
    """How the input's colour channels are encoded: linear (linear light) or srgb (sRGB-encoded, in [0, 1])."""
    preset: Literal["fast", "quality", "gpu"] = "fast"
    """Starting settings: a name of engine.images.fit.PRESETS."""
    levels: int | None = None
    """MR-Net levels; 1: a single SIREN (default: the preset's, 4)."""
    steps: int | None = None
    """Most optimizer steps of the finest level (default: the preset's)."""
    tuner: bool = False
    """TUNER's integer first layers, initialization and weight bounds."""
    fit_space: Literal["srgb", "linear"] | None = None
    """Values the network is trained on: srgb (errors weighed as seen; the default) or linear light."""
    device: Device = "auto"
    """Where to train: auto takes CUDA when PyTorch sees a GPU."""
    seed: int = 0
    """Seed of every random draw."""

    def check(self) -> None:
        check_bounds(self, "levels", 1, MAX_LEVELS, "a 4096-pixel side has 11 halvings above its coarsest level")

    def fit_config(self):
        """The `engine.images.fit.ImageFitConfig` of these settings."""
        from ..images.fit import preset

        overrides = {"device": self.device, "seed": self.seed, "tuner": self.tuner}
        for name in ("levels", "steps", "fit_space"):
            if getattr(self, name) is not None:
                overrides[name] = getattr(self, name)
        return preset(self.preset, **overrides)

    def run(self, inputs: dict[str, np.ndarray], context: JobContext) -> JobOutput:
        from ..images.field import render
        from ..images.files import save_image_field
        from ..images.fit import check_levels, fit_image, psnr
        from ..images.io import to_srgb

        image = input_image(inputs, "image", self.name, self.encoding)
        config = self.fit_config()
        check_levels(image, config.levels)
        totals = [config.stage_steps(config.levels - 1 - index) for index in range(config.levels)]
        context.report("fit", 0, sum(totals), None, None)
        field, summary = fit_image(image, config, on_progress=staged_progress(context, "fit", totals),
                                   should_cancel=context.should_cancel)  # fmt: skip
        context.raise_if_cancelled("after training, before rendering")
        context.report("render", 0, 1, None, None)
        rendered = finite_image(render(field, level=None), f"the fit of {self.name}")
        context.report("render", 1, 1, None, None)
        summary["psnr_db"] = round(psnr(to_srgb(rendered), to_srgb(image.pixels)), 3)
        summary["source"], summary["size"] = self.name, [image.width, image.height]
        metadata = {"image_fit": {"config": config.to_dict(), "summary": summary}}
        save_image_field(context.output_dir / IMAGE_MODEL_FILENAME, field, metadata)
        return JobOutput({"render": rendered}, {"model": IMAGE_MODEL_FILENAME}, summary)


@dataclass(frozen=True)
class ImageRenderJob(JobSpec):
    """Render an image model (an image fit's or a tile's ``model.pt``) at any size, region and level of detail,
    without training. Takes no inputs. Outputs ``render`` (height, width, channels) float32 in linear light. The
    summary holds the size, the level used ("auto", "full" or the number) and the model's level count."""

    kind = "image_render"
    stages = ("render",)

    model: str
    """Path of a model file written by an image fit or a seamless tile."""
    size: tuple[int, int] | None = None
    """Output width and height in pixels (default: the image's size)."""
    detail: Literal["auto", "full", "level"] = "auto"
    """auto: each pixel's level from its footprint (anti-aliased minification); full: every level, point sampling;
    level: the one level ``level`` everywhere."""
    level: float | None = None
    """The level of detail in [0, levels] when ``detail`` is level (fractions blend two levels)."""
    region: tuple[float, float, float, float] | None = None
    """Part of the image to render, x0 y0 x1 y1 in the input's pixels (origin top-left; default: all of it)."""
    device: Device = "auto"
    """Where to evaluate the network."""

    def check(self) -> None:
        if self.size is not None and not all(1 <= side <= MAX_SIDE for side in self.size):
            self.fail("size", f"must be a width and a height in [1, {MAX_SIDE}] pixels, got {list(self.size)}")
        if self.detail == "level" and self.level is None:
            self.fail("level", "is missing: detail 'level' renders the one level given here")
        if self.detail != "level" and self.level is not None:
            self.fail("level", f"is for detail 'level' only (detail is {self.detail!r})")
        if self.region is not None:
            x0, y0, x1, y1 = self.region
            if not (x1 > x0 and y1 > y0):
                self.fail("region", f"must be x0 y0 x1 y1 with x1 > x0 and y1 > y0, got {list(self.region)}")

    def run(self, inputs: dict[str, np.ndarray], context: JobContext) -> JobOutput:
        from ..images.field import render
        from ..images.files import load_image_field
        from ..training import pick_device

        field, metadata = load_image_field(self.model)
        if self.level is not None and not 0.0 <= self.level <= field.levels:
            levels = field.levels
            self.fail("level", f"must be in [0, {levels}] (the model has {levels} levels), got {self.level:g}")
        level = {"auto": "auto", "full": None, "level": self.level}[self.detail]
        context.report("render", 0, 1, None, None)
        started = time.perf_counter()
        field.to(pick_device(self.device))
        pixels = finite_image(render(field, self.size, self.region, level), f"the render of {self.model}")
        context.report("render", 1, 1, None, None)
        summary = {
            "size": [int(pixels.shape[1]), int(pixels.shape[0])],
            "level": self.detail if self.detail != "level" else self.level,
            "levels": field.levels,
            "made_by": next((kind for kind in ("image_fit", "image_tile") if kind in metadata), None),
            "seconds": round(time.perf_counter() - started, 3),
        }
        return JobOutput({"render": pixels}, {}, summary)


@dataclass(frozen=True)
class ImageTileJob(JobSpec):
    """Make a seamless tile of the input ``image`` (module notes): a periodic network trained with the seamless
    objective. Outputs ``tile`` (float32, linear light; the input's size, or ``size`` along the long side), which
    repeats without a seam. File ``model.pt`` (renders again at any size with ``image_render``). The summary holds
    the seam score of the tile and of the photo tiled as it is, the PSNR inside the held region and the
    periodicity error."""

    kind = "image_tile"
    stages = ("fit", "render")

    name: str = "image"
    """What the image is called (messages, the model's metadata)."""
    encoding: Encoding = "linear"
    """How the input's colour channels are encoded: linear (linear light) or srgb (sRGB-encoded, in [0, 1])."""
    size: int | None = None
    """The tile's long side in pixels (default: the input's size)."""
    preset: Literal["cpu", "gpu"] = "cpu"
    """cpu: minutes on 2 CPU cores; gpu: the paper's settings."""
    steps: int | None = None
    """Optimizer steps (default: the preset's)."""
    train_size: int | None = None
    """Long side the photo is trained at (default: the preset's)."""
    device: Device = "auto"
    """Where to train: auto takes CUDA when PyTorch sees a GPU."""
    seed: int = 0
    """Seed of every random draw."""

    def check(self) -> None:
        check_bounds(self, "size", MIN_TILE_SIDE, MAX_TILE_SIDE)
        check_bounds(self, "train_size", MIN_TILE_SIDE, MAX_TRAIN_SIDE)

    def tile_config(self):
        """The `engine.images.tile.TileConfig` of these settings."""
        from ..images.tile import preset

        overrides = {"device": self.device, "seed": self.seed}
        for name in ("steps", "train_size"):
            if getattr(self, name) is not None:
                overrides[name] = getattr(self, name)
        return preset(self.preset, **overrides)

    def tile_size(self, width: int, height: int) -> tuple[int, int]:
        """The tile's (width, height) for an input of that size."""
        if self.size is None:
            return width, height
        scale = self.size / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))

    def run(self, inputs: dict[str, np.ndarray], context: JobContext) -> JobOutput:
        from ..images.field import render
        from ..images.files import save_image_field
        from ..images.io import to_srgb
        from ..images.tile import fit_tile, seam_score

        image = input_image(inputs, "image", self.name, self.encoding)
        config = self.tile_config()
        context.report("fit", 0, config.steps, None, None)
        field, summary = fit_tile(image, config, on_progress=context.training_progress("fit"),
                                  should_cancel=context.should_cancel)  # fmt: skip
        context.raise_if_cancelled("after training, before rendering")
        size = self.tile_size(image.width, image.height)
        context.report("render", 0, 1, None, None)
        pixels = finite_image(render(field, size, level=None), f"the tile of {self.name}")
        context.report("render", 1, 1, None, None)
        summary["seam_score"] = round(seam_score(to_srgb(pixels)), 3)
        summary["seam_score_photo"] = round(seam_score(to_srgb(image.pixels)), 3)
        summary["source"], summary["size"] = self.name, list(size)
        metadata = {"image_tile": {"config": config.to_dict(), "summary": summary}}
        save_image_field(context.output_dir / IMAGE_MODEL_FILENAME, field, metadata)
        return JobOutput({"tile": pixels}, {"model": IMAGE_MODEL_FILENAME}, summary)
