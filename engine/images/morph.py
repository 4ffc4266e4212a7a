"""Neural image morphing (ifmorph, Schardong et al., CVPR 2024): a learned 2D warp T(x, t) carries image 0 onto
image 1, and each frame blends the two discrete images looked up along it.

Coordinates (one place for them):
- Pixel coordinates (landmarks, frames): origin at the top-left CORNER of the image, x to the right, y down, in
  pixels; pixel (column j, row i) covers [j, j + 1] x [i, i + 1], its centre at (j + 0.5, i + 0.5); an image of
  W x H pixels spans [0, W] x [0, H]. (Blender's image editor: x = u W, y = (1 - v) H. A tool whose pixel centres
  are the integers (OpenCV, scikit-image) is half a pixel off: add 0.5.)
- Morph coordinates (the warp's): each image scaled by its OWN long side L = max(W, H) into u = (2x - W) / L,
  v = (2y - H) / L, so the long side spans [-1, 1] and both axes have the same unit (ifmorph's pitfall: squeezing a
  non-square image into [-1, 1]^2 makes the thin-plate term anisotropic). The two images must have the same aspect
  (to `ASPECT_TOLERANCE_PX`): then they cover the same rectangle of morph coordinates at any resolutions.

The warp (`engine.morph.warp_field`, shared with the 3D flow morph): T(x, t) = x + t w(x, t), T(x, 0) = x EXACTLY,
with w = w_H + r (`ImageWarp`): w_H(x, t) = (H^t x - x) / t, the velocity of the one-parameter group H^t = exp(t log H)
of the least-squares affine map H of the landmarks (analytic: 6 numbers), and r a SIREN of (u, v, t) giving a
2-vector (ifmorph's: 2 sine layers of 128, omega 24) that starts at zero. The group satisfies every term below
exactly for an affine pair (H^t H^-t = I, H^(1 - t) H^t = H), so training learns only what is not affine; ``init``
"identity" drops w_H (ifmorph's start, T(x, t) = x). Trained (`ImageMorphWeights`):
- landmarks: T(p, 1) = q and T(q, -1) = p for pairs p (image 0), q (image 1); at times tau between,
  T(p, tau) = T(q, tau - 1) (both meet) and the round trips T(T(p, tau), -tau) = p, T(T(q, tau - 1), 1 - tau) = q;
- inverse consistency: T(T(x, t), -t) = x for t in [-1, 1], and T(T(x, t), 1 - t) = T(x, 1) for t in [0, 1] (the
  frame's look-up into image 1 is consistent with its look-up into image 0);
- thin-plate: the mean square of the Hessian in (u, v, t) (all 18 second derivatives, ifmorph's term) of the
  learned displacement t r, estimated by `engine.morph.warp_field.smoothness_terms` with directions in space and
  time. The affine group is not penalised, as a classical thin-plate energy leaves affine maps free (ifmorph's,
  on all of T, also penalises d^2 T / dx dt, nonzero for any motion but a translation: it pulled the warp of an
  affine pair 0.5 px off on average, 3 px at the corners, at 64^2);
- fold: det dT/dx (of the whole warp) is pushed above `engine.morph.warp_field.MIN_JACOBIAN_DETERMINANT`.

Frames: frame(t) = (1 - t) I0(T(x, -t)) + t I1(T(x, 1 - t)), bilinear look-ups of the discrete images (no image
network), edge pixels repeated outside; blended in linear light (``blend="linear"``, the engine's convention) or in
sRGB-encoded values (``blend="srgb"``, as ifmorph and most morphing tools). At the images' own size frame 0 IS
image 0 and frame 1 IS image 1, bit for bit (T(x, 0) = x exactly, the look-ups hit pixel centres, the weights are
1 and 0; with ``blend="srgb"`` the pixels pass through the encoding and back, 1 ulp in float32, and are bit for bit
the images in the 8-bit files written); at another size they are the images resampled bilinearly.

A morph is saved as one file (`ImageMorph.save`, `load_image_morph`: the engine's model file, no pickle, checked
before anything is built) holding the warp, the images' sizes and the landmarks;
`engine.images.morph_frames.render_frames` re-renders any times at any size from it without training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..conventions import Normalization
from ..model import read_model_file, save_networks
from ..morph.warp_field import displacement, smoothness_terms, spatial_jacobian, transform
from ..networks import Siren
from ..training import Progress, TrainingMonitor, cosine_schedule, pick_device, seeded
from .io import ImageError
from .landmarks import (
    ASPECT_TOLERANCE_PX, MAX_RENDER_SIDE, MIN_LANDMARK_PAIRS, ImageGeometry, affine_fit, check_landmarks,
    check_same_aspect, flipped_triangles, is_number, read_landmarks,
)  # fmt: skip
from .morph_settings import PRESETS, WARP_SHAPE, ImageMorphConfig, ImageMorphWeights, preset

IMAGE_MORPH_KEY = "image_morph"
"""Metadata key of an image morph file: {"images": [{"name", "width", "height"}, x2], "landmarks": ...}."""


# --- the morph ------------------------------------------------------------------------------------------------------


MAX_LOGARITHM_NORM = 8.0
"""Largest |log H| (spectral norm) of the affine group: a turn of 2.5 pi or a scale of e^8; a larger one (or none,
for a map that turns about half a circle) leaves the warp without the affine part."""


class ImageWarp(nn.Module):
    """w(x, t) of an image morph on inputs (n, 3) = (u, v, t): the velocity w_H(x, t) = (H^t x - x) / t of the affine
    group H^t = exp(t L) plus the SIREN ``network`` (module notes). ``logarithm``: the top two rows of L (2, 3);
    None or zeros: no affine part (``forward`` is the network's output exactly)."""

    def __init__(self, network: Siren, logarithm: np.ndarray | None = None):
        super().__init__()
        if network.config.in_features != WARP_SHAPE[0] or network.config.out_features != WARP_SHAPE[1]:
            raise ValueError("an image warp's network takes (u, v, t) and gives a 2-vector (3 inputs, 2 outputs)")
        self.network = network
        full = np.zeros((3, 3))
        if logarithm is not None:
            full[:2] = np.asarray(logarithm, dtype=np.float64).reshape(2, 3)
        self.logarithm = full[:2].copy()
        # (H^t - I) / t = sum_k t^k L^(k+1) / (k+1)!: as many terms as make the rest below 1e-12.
        coefficients, power, norm = [], np.eye(3), float(np.linalg.norm(full, 2))
        while norm > 0 and len(coefficients) < 80:
            power = power @ full / (len(coefficients) + 1)
            coefficients.append(power.copy())
            if norm ** (len(coefficients) + 1) / math.factorial(len(coefficients) + 1) < 1e-12:
                break
        series = torch.tensor(np.array(coefficients).reshape(-1, 3, 3), dtype=torch.float32)
        self.register_buffer("coefficients", series)

    def group_rate(self, t: torch.Tensor) -> torch.Tensor:
        """(H^t - I) / t (n, 3, 3) for times t (n,)."""
        powers = t.unsqueeze(-1) ** torch.arange(len(self.coefficients), device=t.device, dtype=t.dtype)
        return torch.einsum("nk,kij->nij", powers, self.coefficients)

    def group_jacobian(self, t: torch.Tensor) -> torch.Tensor:
        """d(t w_H)/dx = the linear part of H^t - I (n, 2, 2) for times t (n,)."""
        if not len(self.coefficients):
            return t.new_zeros(len(t), 2, 2)
        return t.reshape(-1, 1, 1) * self.group_rate(t)[:, :2, :2]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        learned = self.network(inputs)
        if not len(self.coefficients):
            return learned
        homogeneous = torch.cat([inputs[:, :2], torch.ones_like(inputs[:, :1])], dim=-1)
        return learned + torch.einsum("nij,nj->ni", self.group_rate(inputs[:, 2]), homogeneous)[:, :2]


@dataclass
class ImageMorph:
    """A trained image morph: the warp (morph coordinates) and the two images' sizes; ``metadata[IMAGE_MORPH_KEY]``
    holds the images' names and sizes, the landmarks, the affine group's logarithm, the settings and the quality
    report (`warp_report`)."""

    warp: ImageWarp
    geometries: tuple[ImageGeometry, ImageGeometry]
    metadata: dict = field(default_factory=dict)

    def transform(self, points: np.ndarray, t: float) -> np.ndarray:
        """T(x, t) for morph coordinates (n, 2) (float64 in, float64 out; exactly x at t = 0)."""
        points = np.asarray(points, dtype=np.float64)
        return points + self.displacement(points, t)

    def displacement(self, points: np.ndarray, t: float, batch_size: int = 65536) -> np.ndarray:
        """t w(x, t) for morph coordinates (n, 2), float64 (exactly 0 at t = 0)."""
        device = next(self.warp.parameters()).device
        unit = torch.from_numpy(np.asarray(points, dtype=np.float32).reshape(-1, 2))
        moves = [np.zeros((0, 2))]
        with torch.no_grad():
            for chunk in unit.split(batch_size):
                moves.append(displacement(self.warp, chunk.to(device), float(t)).cpu().double().numpy())
        return np.concatenate(moves)

    def save(self, path: str | Path) -> None:
        """One model file (`engine.model.save_networks`: no pickle on load), written whole or not at all."""
        metadata = {**self.metadata, IMAGE_MORPH_KEY: {**self.metadata.get(IMAGE_MORPH_KEY, {}),
                                                       "affine_logarithm": self.warp.logarithm.tolist()}}
        save_networks(path, {"warp": self.warp.network}, Normalization((0.0, 0.0, 0.0), 1.0), metadata)


def load_image_morph(path: str | Path) -> ImageMorph:
    """An image morph saved by `ImageMorph.save`: the file is checked whole before its network is built
    (`engine.model.read_model_file`; a file of another kind is named as what it is), the images' sizes too."""
    model_file = read_model_file(path, "image_morph")
    info = model_file.header["metadata"][IMAGE_MORPH_KEY]
    images = info.get("images") if isinstance(info, dict) else None
    if not isinstance(images, list) or len(images) != 2 or not all(isinstance(image, dict) for image in images):
        raise model_file.refusal("its image morph must name two images")
    geometries = []
    for index, image in enumerate(images):
        size = [image.get("width"), image.get("height")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_RENDER_SIDE for v in size):
            raise model_file.refusal(f"image {index} of its morph has size {size}, not two whole numbers of pixels")
        geometries.append(ImageGeometry(*size))
    logarithm = info.get("affine_logarithm")
    rows = np.asarray(logarithm, dtype=object) if isinstance(logarithm, list) else None
    if rows is None or rows.shape != (2, 3) or not all(is_number(v) and math.isfinite(v) for v in rows.ravel()):
        raise model_file.refusal(f"its affine_logarithm must be 2 rows of 3 finite numbers, got {logarithm!r}")
    rows = rows.astype(np.float64)
    if np.linalg.norm(np.vstack([rows, np.zeros(3)]), 2) > MAX_LOGARITHM_NORM:
        raise model_file.refusal(f"its affine_logarithm is larger than {MAX_LOGARITHM_NORM:g} (no warp trains to that)")
    network = model_file.networks({"warp": WARP_SHAPE})["warp"]
    return ImageMorph(ImageWarp(network, rows).eval(), tuple(geometries), model_file.header["metadata"])


def train_image_morph(
    geometries: tuple[ImageGeometry, ImageGeometry],
    landmarks: tuple[np.ndarray, np.ndarray],
    config: ImageMorphConfig | None = None,
    *,
    names: tuple[str, str] = ("image 0", "image 1"),
    on_progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    progress_interval_s: float = 0.5,
) -> ImageMorph:
    """Train the warp of a morph from image 0 (t = 0) to image 1 (t = 1); see the module's notes.

    - ``geometries``: the two images' sizes (same aspect); ``landmarks``: (points of image 0, points of image 1),
      each (k, 2) in pixel coordinates, checked as `check_landmarks` does (call it first for messages naming the
      file).
    - ``on_progress`` and ``should_cancel`` behave as in `engine.fit.fit_sdf`.
    - The result's metadata holds `warp_report` (landmark and inverse-consistency errors in pixels, det dT/dx).
    """
    config = config or ImageMorphConfig()
    first, second = geometries
    check_same_aspect(first, second, names)
    pairs = [np.asarray(values, dtype=np.float64) for values in landmarks]
    as_json = [[list(map(float, p)), list(map(float, q))] for p, q in zip(*pairs)]
    sources, targets = check_landmarks(as_json, first, second)
    device = pick_device(config.device)
    _, generator = seeded(config.seed)

    p = torch.from_numpy(first.to_morph(sources).astype(np.float32)).to(device)
    q = torch.from_numpy(second.to_morph(targets).astype(np.float32)).to(device)
    extent = torch.tensor(first.extent, dtype=torch.float32)
    affine = affine_fit(first.to_morph(sources), second.to_morph(targets))
    logarithm = affine_logarithm(affine) if config.init == "affine" else None
    warp = ImageWarp(Siren(config.warp).zero_output(), logarithm).to(device)  # the residual starts at zero
    monitor = TrainingMonitor(
        "image morph", config.steps, on_progress, should_cancel, progress_interval_s,
        advice="lower the learning rate, and check that each landmark pair marks the same feature in both images",
    )
    optimizer = torch.optim.Adam(warp.network.parameters(), lr=config.learning_rate)
    schedule = cosine_schedule(optimizer, config.steps, 0.1, warmup_steps=config.warmup_steps)
    for step in range(1, config.steps + 1):
        monitor.before_step(step)
        loss, terms = image_morph_loss(warp, (p, q), extent, config, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        monitor.after_step(step, loss, terms)
    monitor.check_weights(warp.network)

    warp = warp.eval()
    metadata = {
        IMAGE_MORPH_KEY: {
            "images": [{"name": name, "width": g.width, "height": g.height} for name, g in zip(names, geometries)],
            "landmarks": {"image0": sources.tolist(), "image1": targets.tolist()},
            "affine": affine.tolist(),
            "start": "affine" if logarithm is not None else "identity",
            "flipped_triangles": flipped_triangles(sources, targets),
            "config": config.to_dict(),
            "train_seconds": monitor.elapsed_s,
            "device": str(device),
        }
    }
    morph = ImageMorph(warp.cpu(), (first, second), metadata)
    metadata[IMAGE_MORPH_KEY]["final_terms"] = {name: float(term) for name, term in terms.items()}
    metadata[IMAGE_MORPH_KEY]["report"] = warp_report(morph)
    return morph


def image_morph_loss(
    warp: ImageWarp,
    landmarks: tuple[torch.Tensor, torch.Tensor],
    extent: torch.Tensor,
    config: ImageMorphConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted loss of one step and its terms (detached), on fresh samples; ``landmarks`` and ``extent`` (the
    image's half-sizes) in morph coordinates."""
    weights, device = config.weights, landmarks[0].device
    p, q = landmarks
    moved = lambda x, t: transform(warp, x, t)  # noqa: E731
    terms = {}
    terms["landmarks"] = weights.landmarks * (
        (moved(p, 1.0) - q).square().mean() + (moved(q, -1.0) - p).square().mean()
    )
    if weights.meeting or weights.round_trips:
        tau = torch.rand(len(p) * config.landmark_times, generator=generator).to(device)
        many_p, many_q = p.repeat(config.landmark_times, 1), q.repeat(config.landmark_times, 1)
        from_p, from_q = moved(many_p, tau), moved(many_q, tau - 1.0)
        terms["meeting"] = weights.meeting * (from_p - from_q).square().mean()
        terms["round_trips"] = weights.round_trips * (
            (moved(from_p, -tau) - many_p).square().mean() + (moved(from_q, 1.0 - tau) - many_q).square().mean()
        )

    points, times = _space_time(config.batch, extent, generator, device)
    back = moved(moved(points, times), -times)
    forward = times.abs()  # the path term's times, in [0, 1]
    onward = moved(moved(points, forward), 1.0 - forward) - moved(points, 1.0)
    terms["inverse"] = weights.inverse * ((back - points).square().mean() + onward.square().mean())

    if weights.thin_plate or weights.fold:
        points, times = _space_time(config.smoothness_batch, extent, generator, device)
        variables = 3 if config.thin_plate_in_time else 2
        directions = torch.randn(len(points), variables, generator=generator).to(device)
        directions = directions / directions.norm(dim=-1, keepdim=True)
        estimate, _, fold = smoothness_terms(
            warp.network, points, times, directions, config.smoothness_step, warp.group_jacobian(times)
        )
        # The estimate is |Hess T|^2 / k for random directions in k variables; the mean of the 2 k^2 entries of the
        # Hessian is |Hess T|^2 / (2 k^2).
        terms["thin_plate"] = weights.thin_plate * estimate / (2 * variables)
        terms["fold"] = weights.fold * fold
    return sum(terms.values()), {name: term.detach() for name, term in terms.items()}


def _space_time(count: int, extent: torch.Tensor, generator: torch.Generator, device) -> tuple[torch.Tensor, ...]:
    """``count`` points uniform in the rectangle of half-sizes ``extent`` and times uniform in [-1, 1]."""
    points = (torch.rand(count, 2, generator=generator) * 2 - 1) * extent
    times = torch.rand(count, generator=generator) * 2 - 1
    return points.to(device), times.to(device)


def affine_logarithm(affine: np.ndarray) -> np.ndarray | None:
    """The top two rows (2, 3) of the real logarithm L of the affine map ``affine`` (3x3 homogeneous), so that
    H^t = exp(t L); None when it has none of norm at most `MAX_LOGARITHM_NORM` (a map that turns about half a circle,
    or one that flips the image): the warp then starts as the identity."""
    from scipy.linalg import logm

    if np.linalg.det(affine[:2, :2]) <= 0:
        return None
    with np.errstate(all="ignore"):
        logarithm = logm(affine)
    if np.iscomplexobj(logarithm):
        if np.abs(logarithm.imag).max() > 1e-9:
            return None
        logarithm = logarithm.real
    if not np.isfinite(logarithm).all() or np.linalg.norm(logarithm, 2) > MAX_LOGARITHM_NORM:
        return None
    return logarithm[:2].copy()


# --- quality --------------------------------------------------------------------------------------------------------

REPORT_TIMES = tuple(k / 8 for k in range(-8, 9) if k != 0)
"""Times at which `warp_report` checks det dT/dx (both signs: the frames look up T(., -t) and T(., 1 - t))."""


def warp_report(morph: ImageMorph, resolution: int = 64) -> dict:
    """How good a trained warp is, in pixels (of the image each point lies in):

    - ``landmark_error_px``: mean and max |T(p, 1) - q| (image 1's pixels) and |T(q, -1) - p| (image 0's);
    - ``inverse_error_px``: mean and max |T(T(x, t), -t) - x| over a ``resolution`` grid on the image (long side)
      at t = +-1/4 ... +-1, in image 0's pixels; ``path_error_px``: |T(T(x, t), 1 - t) - T(x, 1)| at t = 1/4, 1/2,
      3/4 in image 1's pixels;
    - ``min_det``: the least det dT/dx over the grid at `REPORT_TIMES`, where (time, pixel of image 0), and
      ``folded_points``: how many grid points have det <= 0 there; ``folds``: whether any has (a grid check: a fold
      smaller than the grid's spacing can slip between its points).
    """
    first, second = morph.geometries
    info = morph.metadata.get(IMAGE_MORPH_KEY, {})
    sources = np.asarray(info.get("landmarks", {}).get("image0", np.zeros((0, 2))), dtype=np.float64).reshape(-1, 2)
    targets = np.asarray(info.get("landmarks", {}).get("image1", np.zeros((0, 2))), dtype=np.float64).reshape(-1, 2)
    report = {}
    if len(sources):
        forward = np.linalg.norm(second.to_pixels(morph.transform(first.to_morph(sources), 1.0)) - targets, axis=1)
        backward = np.linalg.norm(first.to_pixels(morph.transform(second.to_morph(targets), -1.0)) - sources, axis=1)
        report["landmark_error_px"] = {
            "forward_mean": float(forward.mean()), "forward_max": float(forward.max()),
            "backward_mean": float(backward.mean()), "backward_max": float(backward.max()),
        }  # fmt: skip
    columns = max(2, round(resolution * first.width / first.long_side))
    rows = max(2, round(resolution * first.height / first.long_side))
    xs, ys = (np.arange(columns) + 0.5) * first.width / columns, (np.arange(rows) + 0.5) * first.height / rows
    grid_pixels = np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1).reshape(-1, 2)
    grid = first.to_morph(grid_pixels)
    errors = []
    for t in (0.25, 0.5, 0.75, 1.0, -0.25, -0.5, -0.75, -1.0):
        errors.append(np.linalg.norm(morph.transform(morph.transform(grid, t), -t) - grid, axis=1))
    errors = np.concatenate(errors) * first.pixels_per_unit
    report["inverse_error_px"] = {"mean": float(errors.mean()), "max": float(errors.max())}
    path = []
    end = morph.transform(grid, 1.0)
    for t in (0.25, 0.5, 0.75):
        path.append(np.linalg.norm(morph.transform(morph.transform(grid, t), 1.0 - t) - end, axis=1))
    path = np.concatenate(path) * second.pixels_per_unit
    report["path_error_px"] = {"mean": float(path.mean()), "max": float(path.max())}

    device = next(morph.warp.parameters()).device
    points = torch.from_numpy(grid.astype(np.float32)).to(device)
    worst, where, folded = math.inf, None, 0
    for t in REPORT_TIMES:
        determinant = torch.linalg.det(spatial_jacobian(morph.warp, points, t)).cpu().double().numpy()
        folded += int((determinant <= 0).sum())
        index = int(np.argmin(determinant))
        if determinant[index] < worst:
            worst, where = float(determinant[index]), {"time": t, "pixel": grid_pixels[index].tolist()}
    report.update({"min_det": worst, "min_det_at": where, "folded_points": folded, "folds": folded > 0})
    report["grid"] = [columns, rows]
    return report


__all__ = [
    "ASPECT_TOLERANCE_PX", "IMAGE_MORPH_KEY", "MIN_LANDMARK_PAIRS", "PRESETS", "ImageError", "ImageGeometry",
    "ImageMorph", "ImageMorphConfig", "ImageMorphWeights", "ImageWarp", "affine_fit", "affine_logarithm",
    "check_landmarks", "check_same_aspect", "flipped_triangles", "image_morph_loss", "load_image_morph", "preset",
    "read_landmarks", "train_image_morph", "warp_report",
]  # fmt: skip
