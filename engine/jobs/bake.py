"""The ``bake`` job: a fitted model's curvature baked into images through a mesh's UV map."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Colormap, Device, JobContext, JobOutput, JobSpec, check_bounds, input_array

MAX_BAKE_SIZE = 8192
"""Texels per side at most: an 8192^2 bake holds ~67 M texels (about 3 GB of points and curvatures on the way)."""
MAX_MARGIN = 64
"""Padding passes at most (Blender's own bake margin defaults to 16)."""


@dataclass(frozen=True)
class BakeJob(JobSpec):
    """The model's curvature at the surface point of each texel of a UV-mapped triangle mesh. Inputs: ``vertices``
    (n, 3) in the model's input coordinates, ``faces`` (m, 3) triangles and ``uvs`` (m, 3, 2), one (u, v) per face
    corner. Outputs: ``values`` (height, width) float32 (the quantity in input units, seams padded, ``fill`` where
    no texel was baked), ``colors`` (height, width, 4) uint8 sRGB (the colour map over the summary's ``range``;
    alpha 0 where nothing was baked) and ``coverage`` (height, width) uint8 (0 empty, 1 inside a UV triangle, 2
    padding). Row 0 is v = 0, the image's bottom, as Blender stores pixels (`engine.texture_bake`)."""

    kind = "bake"
    stages = ("curvature",)

    model: str
    """Path of a model file written by a fit."""
    size: int = 1024
    """Image width in texels (and its height unless ``height`` is given)."""
    height: int | None = None
    """Image height in texels (default: ``size``, a square image)."""
    quantity: str = "mean"
    """What is baked: a name of engine.colormaps.QUANTITIES (mean is H = kappa / 2)."""
    colormap: Colormap = "auto"
    """The 8-bit image's map. auto: diverging for signed quantities, sequential for magnitudes."""
    range: tuple[float, float] | None = None
    """Colour range [low, high] of the 8-bit image (default: robust automatic over the baked texels)."""
    project: bool = False
    """Move each texel's point on the mesh onto the model's surface first."""
    margin: int = 8
    """Texels of padding grown out of the UV islands, so that filtering does not bleed the background in at seams."""
    fill: float = 0.0
    """The float image's value where nothing was baked (outside the islands and their padding)."""
    device: Device = "auto"
    """Where to evaluate the network."""

    def check(self) -> None:
        from ..colormaps import QUANTITIES, map_kind

        check_bounds(self, "size", 1, MAX_BAKE_SIZE, "the bake's points and curvatures would not fit in memory")
        check_bounds(self, "height", 1, MAX_BAKE_SIZE, "the bake's points and curvatures would not fit in memory")
        check_bounds(self, "margin", 0, MAX_MARGIN)
        if self.quantity not in QUANTITIES:
            self.fail("quantity", f"must be one of {', '.join(QUANTITIES)}, got {self.quantity!r}")
        if self.range is not None and not self.range[0] < self.range[1]:
            self.fail("range", f"must be [low, high] with low < high, got {list(self.range)}")
        if self.range is not None and map_kind(self.quantity, self.colormap) == "signed":
            if not self.range[0] < 0 < self.range[1]:
                self.fail("range", f"must contain 0 for the diverging map (white at 0), got {list(self.range)}")

    def run(self, inputs: dict[str, np.ndarray], context: JobContext) -> JobOutput:
        from ..conventions import CURVATURE_CONVENTION
        from ..model import load_model
        from ..texture_bake import PADDED, bake_texture
        from ..training import pick_device

        vertices = np.asarray(input_array(inputs, "vertices"), dtype=np.float64)
        faces = np.asarray(input_array(inputs, "faces"))
        uvs = np.asarray(input_array(inputs, "uvs"), dtype=np.float64)
        if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.isfinite(vertices).all():
            raise ValueError(f"the mesh's vertices must be finite (n, 3) coordinates, got shape {vertices.shape}")
        if not np.issubdtype(faces.dtype, np.integer):
            raise ValueError(f"the mesh's faces must be integer vertex indices, got {faces.dtype}")
        model = load_model(self.model)
        model.network.to(pick_device(self.device))
        width, height = self.size, self.height or self.size
        context.report("curvature", 0, width * height, None, None)
        baked = bake_texture(
            model,
            vertices,
            faces,
            uvs,
            width,
            height,
            self.quantity,
            project=self.project,
            margin=self.margin,
            fill=self.fill,
            colormap=self.colormap,
            value_range=self.range,
            report=lambda done, total, eta: context.report("curvature", done, total, None, eta),
            raise_if_cancelled=context.raise_if_cancelled,
        )
        arrays = {"values": baked.values, "colors": baked.colors, "coverage": baked.coverage}
        summary = {
            "quantity": self.quantity,
            "colormap": self.colormap,
            "range": list(baked.value_range),
            "convention": CURVATURE_CONVENTION,
            "width": width,
            "height": height,
            "texels": int(len(baked.texels.index)),
            "padded": int((baked.coverage == PADDED).sum()),
            "nonfinite_texels": baked.nonfinite,
            "seconds": round(baked.seconds, 2),
        }
        return JobOutput(arrays, {}, summary)
