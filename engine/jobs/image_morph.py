"""The ``image_morph`` job: a warp trained between two images from landmark pairs (ifmorph), or a saved one, and
its frames rendered. Images travel as arrays (`engine.jobs.images`' notes: float32, row 0 at the top, encoded as
``encoding`` says; frames come back in linear light)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .base import MAX_FRAMES, Device, JobContext, JobOutput, JobSpec, check_bounds, input_array
from .images import Encoding, finite_image, input_image


def flipped_warning(flipped: list[tuple[int, int, int]]) -> str:
    """What to say about landmark triangles that turn the other way in image 1 (`engine.images.landmarks`)."""
    listed = ", ".join(f"({a}, {b}, {c})" for a, b, c in flipped[:5]) + (", ..." if len(flipped) > 5 else "")
    many = len(flipped) > 1
    return (
        f"{len(flipped)} landmark triangle{'s' if many else ''} (pairs {listed}) turn{'' if many else 's'} the other "
        "way in image 1: a warp through them must fold or swirl there; check those pairs (move or drop one of each "
        "triangle)"
    )


def fold_message(quality: dict) -> str:
    """What to say when a warp folds (det dT/dx <= 0 somewhere on `engine.images.morph.warp_report`'s grid)."""
    where = quality.get("min_det_at") or {}
    return (
        f"the warp folds: det dT/dx = {quality['min_det']:.3g} <= 0 at t = {where.get('time')}, pixel "
        f"{[round(v, 1) for v in where.get('pixel', [])]} of image 0 ({quality['folded_points']} grid points); "
        "the frames show the fold. Check the landmark pairs there (crossing pairs fold any warp), or train longer"
    )


def landmark_pairs(points0: np.ndarray, points1: np.ndarray) -> list:
    """Two (k, 2) arrays of pixel coordinates as the landmarks' JSON form (a list of ``[[x0, y0], [x1, y1]]``)."""
    for index, points in enumerate((points0, points1)):
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"landmarks_{index} must be (k, 2) pixel coordinates (x, y), got shape {points.shape}")
    if len(points0) != len(points1):
        raise ValueError(
            f"landmarks_0 has {len(points0)} points and landmarks_1 {len(points1)}: every landmark of image 0 needs "
            "its partner in image 1 (row i of each is one pair)"
        )
    return [[[float(v) for v in p], [float(v) for v in q]] for p, q in zip(points0, points1)]


@dataclass(frozen=True)
class ImageMorphJob(JobSpec):
    """Morph ``image_0`` (t = 0) into ``image_1`` (t = 1), two images of the same aspect (sizes may differ), along a
    warp trained from the landmark pairs ``landmarks_0`` / ``landmarks_1`` ((k, 2) float64 each, row i of both one
    pair, pixel coordinates of each image: origin top-left, x right, y down), or rendered again from ``model``
    (then no landmarks are taken). Outputs per frame i ``frame_<i>`` (height, width, channels) float32 in linear
    light (colour if either image has colour, alpha if either has alpha) and ``times`` (frames,) float64. File
    ``morph.pt`` (only when trained). The summary holds the warp's quality report (landmark and
    inverse-consistency errors in pixels, the least det dT/dx, ``folds``) and ``warnings`` to show."""

    kind = "image_morph"
    stages = ("morph", "frames")

    names: tuple[str, str] = ("image 0", "image 1")
    """What the two images are called (messages, the morph's metadata)."""
    encoding: Encoding = "linear"
    """How the inputs' colour channels are encoded: linear (linear light) or srgb (sRGB-encoded, in [0, 1])."""
    frames: int = 9
    """Frames from t = 0 (image 0) to 1 (image 1), both included."""
    preset: Literal["cpu", "gpu"] = "cpu"
    """cpu: minutes on a CPU; gpu: the paper's settings (20,001 steps)."""
    steps: int | None = None
    """Training steps (default: the preset's)."""
    size: tuple[int, int] | None = None
    """Frame width and height in pixels, of image 0's aspect (default: image 0's size)."""
    blend: Literal["linear", "srgb"] = "linear"
    """Cross-dissolve in linear light, or in sRGB-encoded values (as ifmorph)."""
    model: str | None = None
    """Path of a saved image morph (morph.pt) to render the frames of again, without training; None: train one."""
    device: Device = "auto"
    """Where to train: auto takes CUDA when PyTorch sees a GPU."""
    seed: int = 0
    """Seed of every random draw."""

    def check(self) -> None:
        from ..images.landmarks import MAX_RENDER_SIDE

        check_bounds(self, "frames", 2, MAX_FRAMES, "every frame comes back in one result")
        if self.model is not None and self.steps is not None:
            self.fail("steps", "sets the training; a morph rendered again from its model does not train")
        if self.size is not None and not all(1 <= side <= MAX_RENDER_SIDE for side in self.size):
            self.fail("size", f"must be two sides in [1, {MAX_RENDER_SIDE}] pixels, got {list(self.size)}")

    def run(self, inputs: dict[str, np.ndarray], context: JobContext) -> JobOutput:
        from .. import protocol
        from ..fields import even_times
        from ..images import morph as image_morph
        from ..images.landmarks import ImageGeometry, check_landmarks, check_same_aspect, flipped_triangles
        from ..images.morph_frames import render_frames

        images = [input_image(inputs, f"image_{i}", name, self.encoding) for i, name in enumerate(self.names)]
        geometries = tuple(ImageGeometry(image.width, image.height) for image in images)
        check_same_aspect(*geometries, self.names)
        if self.size is not None:
            check_same_aspect(geometries[0], ImageGeometry(*self.size), (self.names[0], f"a frame of {self.size[0]}x"
                                                                           f"{self.size[1]}"))  # fmt: skip
        warnings, files, train_seconds, config = [], {}, None, None
        if self.model is not None:
            if "landmarks_0" in inputs or "landmarks_1" in inputs:
                raise ValueError("a morph rendered again from its model takes no landmarks: send none, or no model")
            morph = image_morph.load_image_morph(self.model)
        else:
            pairs = landmark_pairs(*(np.asarray(input_array(inputs, f"landmarks_{i}")) for i in range(2)))
            try:
                landmarks = check_landmarks(pairs, *geometries)
            except ValueError as error:
                raise ValueError(f"landmarks: {error}") from None
            flipped = flipped_triangles(*landmarks)
            if flipped:
                warnings.append(flipped_warning(flipped))
            config = image_morph.preset(self.preset, steps=self.steps, device=self.device, seed=self.seed)
            context.report("morph", 0, config.steps, None, None)
            morph = image_morph.train_image_morph(geometries, landmarks, config, names=self.names,
                                                  on_progress=context.training_progress("morph"),
                                                  should_cancel=context.should_cancel)  # fmt: skip
            train_seconds = round(morph.metadata["image_morph"]["train_seconds"], 2)
            morph.save(context.output_dir / protocol.MORPH_MODEL_FILENAME)
            files["model"] = protocol.MORPH_MODEL_FILENAME
        times = even_times(self.frames)
        arrays = {"times": np.asarray(times, dtype=np.float64)}
        started = time.perf_counter()

        def keep(index: int, total: int, pixels: np.ndarray) -> None:
            arrays[f"frame_{index}"] = finite_image(pixels, f"frame {index} of the morph")
            done = index + 1
            context.report("frames", done, total, None, (time.perf_counter() - started) / done * (total - done))

        context.report("frames", 0, len(times), None, None)
        render_frames(morph, *images, times, size=self.size, blend=self.blend, on_frame=keep,
                      should_cancel=context.should_cancel)  # fmt: skip
        facts = morph.metadata["image_morph"]
        quality = facts.get("report", {})
        if quality.get("folds"):
            warnings.append(fold_message(quality))
        summary = {
            "times": times,
            "images": list(self.names),
            "size": list(self.size) if self.size is not None else [images[0].width, images[0].height],
            "blend": self.blend,
            "preset": None if config is None else self.preset,
            "steps": None if config is None else config.steps,
            "landmark_pairs": len(facts["landmarks"]["image0"]),
            "start": facts.get("start"),
            "flipped_triangles": facts.get("flipped_triangles", []),
            "train_seconds": train_seconds,
            "frame_seconds": round(time.perf_counter() - started, 2),
            "device": facts.get("device"),
            "quality": quality,
            "folds": bool(quality.get("folds", False)),
            "warnings": warnings,
        }
        return JobOutput(arrays, files, summary)
