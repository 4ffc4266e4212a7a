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
before anything is built) holding the warp, the images' sizes and the landmarks; `render_frames` re-renders any
times at any size from it without training.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from torch import nn

from ..conventions import Normalization
from ..model import read_model_file, save_networks
from ..morph.warp_field import displacement, smoothness_terms, spatial_jacobian, transform
from ..networks import Siren, SirenConfig
from ..settings import SavedSettings
from ..training import Progress, TrainingMonitor, cosine_schedule, pick_device, seeded
from .io import Image, ImageError, to_linear, to_srgb

IMAGE_MORPH_KEY = "image_morph"
"""Metadata key of an image morph file: {"images": [{"name", "width", "height"}, x2], "landmarks": ...}."""
MIN_LANDMARK_PAIRS = 3
"""Fewest landmark pairs: three points not on a line fix an affine map of the plane."""
MAX_LANDMARK_PAIRS = 100_000
"""Most landmark pairs read (ifmorph's faces use ~130; a file of more is not a landmark file)."""
ASPECT_TOLERANCE_PX = 1.0
"""Two images have the same aspect when, scaled to the same long side, their short sides differ by at most this many
pixels of the smaller image (so a 640 x 427 photo pairs with its 320 x 213 copy, not with a 320 x 240 one)."""
MAX_RENDER_SIDE = 16384
"""Longest side of a rendered frame."""
WARP_SHAPE = (3, 2)
"""The warp network of a file: (u, v, t) -> a 2-vector."""


# --- geometry -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageGeometry:
    """The size of an image and the map between its pixel coordinates and the morph coordinates (module notes)."""

    width: int
    height: int

    @property
    def long_side(self) -> int:
        return max(self.width, self.height)

    @property
    def extent(self) -> tuple[float, float]:
        """Half-sizes of the image in morph coordinates: (W / L, H / L), the longer one 1."""
        return self.width / self.long_side, self.height / self.long_side

    def to_morph(self, pixels: np.ndarray) -> np.ndarray:
        """Pixel coordinates (n, 2) to morph coordinates (float64)."""
        pixels = np.asarray(pixels, dtype=np.float64)
        return (2.0 * pixels - np.array([self.width, self.height])) / self.long_side

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        """Morph coordinates (n, 2) to pixel coordinates (float64)."""
        points = np.asarray(points, dtype=np.float64)
        return (points * self.long_side + np.array([self.width, self.height])) / 2.0

    @property
    def pixels_per_unit(self) -> float:
        """Pixels per unit of morph coordinates (a length in morph units times this is pixels)."""
        return self.long_side / 2.0


def check_same_aspect(first: ImageGeometry, second: ImageGeometry, names=("image 0", "image 1")) -> None:
    """A ValueError unless the two images have the same aspect (`ASPECT_TOLERANCE_PX`)."""
    smaller = min(first.long_side, second.long_side)
    gap = max(abs(a - b) for a, b in zip(first.extent, second.extent)) * smaller
    if gap > ASPECT_TOLERANCE_PX:
        raise ValueError(
            f"{names[0]} is {first.width}x{first.height} pixels (aspect {first.width / first.height:.4g}) and "
            f"{names[1]} {second.width}x{second.height} (aspect {second.width / second.height:.4g}): a morph needs "
            "two images of the same aspect (sizes may differ); crop or pad one to the other's aspect"
        )


# --- landmarks ------------------------------------------------------------------------------------------------------


def read_landmarks(path: str | Path, first: ImageGeometry, second: ImageGeometry) -> tuple[np.ndarray, np.ndarray]:
    """The landmark pairs of a JSON file, checked (`check_landmarks`); a missing file is a FileNotFoundError and
    anything else a ValueError naming the file and, where it is one pair, the pair's index."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"landmarks {path} is a folder, not a JSON file")
    if not path.exists():
        raise FileNotFoundError(f"landmarks file {path} does not exist")
    if path.stat().st_size > 64 * MAX_LANDMARK_PAIRS:
        raise ValueError(f"landmarks {path}: the file is larger than a list of {MAX_LANDMARK_PAIRS} pairs can be")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"landmarks {path} is not a text file (JSON)") from None
    except (json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"landmarks {path} is not JSON ({error})") from None
    try:
        return check_landmarks(data, first, second)
    except ValueError as error:
        raise ValueError(f"landmarks {path}: {error}") from None


def check_landmarks(data, first: ImageGeometry, second: ImageGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Landmark pairs as JSON data (a list of ``[[x0, y0], [x1, y1]]``, pixel coordinates of image 0 and image 1)
    checked and returned as two (k, 2) float64 arrays in pixel coordinates.

    Refused with a ValueError naming the pair (index from 0): a pair that is not two points of two numbers (an
    unpaired entry), booleans or non-finite numbers, a point outside its image, two pairs from one point of image 0
    (or to one point of image 1) whose partners differ; and for the whole list: fewer than `MIN_LANDMARK_PAIRS` pairs,
    the points of an image all on one line, pairs that mirror the image (no morph without folds matches them).
    """
    if not isinstance(data, list):
        raise ValueError(f"must be a JSON list of pairs [[x0, y0], [x1, y1]], got a JSON {_json_type(data)}")
    if len(data) > MAX_LANDMARK_PAIRS:
        raise ValueError(f"holds {len(data)} pairs, more than the {MAX_LANDMARK_PAIRS} read")
    points = np.zeros((2, len(data), 2))
    for index, pair in enumerate(data):
        if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(point, list) for point in pair):
            if isinstance(pair, list) and len(pair) == 2 and all(_is_number(v) for v in pair):
                raise ValueError(
                    f"pair {index} is one point {pair}, not a pair: every entry pairs a point of image 0 with its "
                    "partner in image 1, [[x0, y0], [x1, y1]]"
                )
            count = f"{len(pair)} entr{'y' if len(pair) == 1 else 'ies'}" if isinstance(pair, list) else "not a list"
            raise ValueError(
                f"pair {index} is {json.dumps(pair)[:80]} ({count}): every entry pairs a point of image 0 with its "
                "partner in image 1, [[x0, y0], [x1, y1]]"
            )
        for side, (point, geometry) in enumerate(zip(pair, (first, second))):
            if len(point) != 2 or not all(_is_number(v) for v in point):
                raise ValueError(f"pair {index}: its point in image {side} must be [x, y], two numbers, got {point}")
            if not all(math.isfinite(v) for v in point):
                raise ValueError(f"pair {index}: its point in image {side} {point} is not finite")
            x, y = point
            if not (0.0 <= x <= geometry.width and 0.0 <= y <= geometry.height):
                raise ValueError(
                    f"pair {index}: its point ({x:g}, {y:g}) lies outside image {side}, which spans x in "
                    f"[0, {geometry.width}] and y in [0, {geometry.height}] (pixels, origin at the top-left corner)"
                )
            points[side, index] = point
    if len(data) < MIN_LANDMARK_PAIRS:
        raise ValueError(
            f"holds {len(data)} landmark pair{'s' if len(data) != 1 else ''}; a morph needs at least "
            f"{MIN_LANDMARK_PAIRS} (not on one line), more where the images differ in shape"
        )
    for side in (0, 1):
        _check_one_partner(points[side], points[1 - side], side)
    sources, targets = points
    for side, (values, geometry) in enumerate(zip(points, (first, second))):
        centred = geometry.to_morph(values)
        centred = centred - centred.mean(axis=0)
        singular = np.linalg.svd(centred, compute_uv=False)
        if singular[-1] <= 1e-3 * max(singular[0], 1e-12):
            raise ValueError(
                f"every landmark of image {side} lies on one line: the pairs do not fix the warp across it; add a pair "
                "off that line"
            )
    affine = affine_fit(first.to_morph(sources), second.to_morph(targets))
    determinant = float(np.linalg.det(affine[:2, :2]))
    if determinant <= 0.0:
        raise ValueError(
            f"the pairs mirror the image (the affine map that fits them best has determinant {determinant:.3g}): no "
            "morph without folds matches them; check that each pair lists image 0's point first"
        )
    return sources, targets


def _check_one_partner(here: np.ndarray, there: np.ndarray, side: int) -> None:
    """Two pairs from the same point of image ``side`` must go to the same partner (else the warp must tear)."""
    order = np.lexsort((here[:, 1], here[:, 0]))
    for a, b in zip(order[:-1], order[1:]):
        if np.array_equal(here[a], here[b]) and not np.array_equal(there[a], there[b]):
            first, second = sorted((int(a), int(b)))
            raise ValueError(
                f"pairs {first} and {second} start from the same point {here[a].tolist()} of image {side} but end at "
                f"{there[first].tolist()} and {there[second].tolist()}: one point cannot go to two places"
            )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_type(value) -> str:
    return {dict: "object", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def flipped_triangles(sources: np.ndarray, targets: np.ndarray) -> list[tuple[int, int, int]]:
    """The triangles of the Delaunay triangulation of the landmarks of image 0 (``sources`` (k, 2)) whose partners
    in image 1 (``targets``) turn the other way or collapse, as sorted pair indices: a warp through those pairs must
    fold or swirl there (a warning, not a refusal: the pairs may be right and the warp can swirl)."""
    from scipy.spatial import Delaunay, QhullError

    sources, targets = np.asarray(sources, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    try:
        triangles = Delaunay(sources).simplices
    except QhullError:  # collinear landmarks: refused by check_landmarks
        return []

    def signed_areas(points):
        a, b, c = (points[triangles[:, i]] for i in range(3))
        return (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]

    ratio = signed_areas(targets) / signed_areas(sources)
    return sorted(tuple(sorted(int(i) for i in triangle)) for triangle in triangles[~(ratio > 0)])


def affine_fit(sources: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The least-squares affine map of the plane taking ``sources`` (k, 2) to ``targets`` (k, 2), as a 3x3
    homogeneous matrix H (H @ [x, y, 1] = [x', y', 1])."""
    design = np.concatenate([sources, np.ones((len(sources), 1))], axis=1)
    solution, *_ = np.linalg.lstsq(design, targets, rcond=None)
    matrix = np.eye(3)
    matrix[:2] = solution.T
    return matrix


# --- settings -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageMorphWeights:
    """Loss weights, each on a mean over points and coordinates (morph units squared), at ifmorph's scale: its
    landmark term is 1e4 times 1e2 (ends), 5e1 (meeting at times between) and 2e1 (round trips); identity 1e3 is
    exact here (T(x, 0) = x by construction); inverse consistency 1e4; thin-plate 1e3."""

    landmarks: float = 1e6
    """|T(p, 1) - q|^2 + |T(q, -1) - p|^2."""
    meeting: float = 5e5
    """|T(p, tau) - T(q, tau - 1)|^2 at random times tau in [0, 1]."""
    round_trips: float = 2e5
    """|T(T(p, tau), -tau) - p|^2 + |T(T(q, tau - 1), 1 - tau) - q|^2."""
    inverse: float = 1e4
    """|T(T(x, t), -t) - x|^2 (t in [-1, 1]) + |T(T(x, t), 1 - t) - T(x, 1)|^2 (t in [0, 1]) over the image."""
    thin_plate: float = 1e3
    """Mean square of the second derivatives of T: the 18 in (u, v, t) (ifmorph's), or the 8 in (u, v) with
    ``thin_plate_in_time`` off."""
    fold: float = 1e3
    """max(0, 0.1 - det dT/dx)^2: keeps T(., t) one-to-one (not in ifmorph; zero unless the warp nearly folds)."""


@dataclass(frozen=True)
class ImageMorphConfig(SavedSettings):
    """How the warp of an image morph is trained (`PRESETS` holds the CPU and GPU settings)."""

    steps: int = 20_001
    """Optimizer steps after the start (ifmorph: 20,001)."""
    batch: int = 10_000
    """Points (u, v, t) of the image per step for inverse consistency (ifmorph: 20,000, half at t = 0 for its
    identity term, which is exact here)."""
    smoothness_batch: int = 10_000
    """Points per step for the thin-plate and fold terms (each needs the warp's Jacobian at two points)."""
    landmark_times: int = 4
    """Random times tau per landmark pair per step for the meeting and round-trip terms (ifmorph: 5 fixed ones)."""
    warp: SirenConfig = field(
        default_factory=lambda: SirenConfig(
            hidden_features=128, hidden_layers=1, first_omega=24.0, hidden_omega=24.0, in_features=3, out_features=2
        )
    )
    """The warp network w(u, v, t): ifmorph's two sine layers of 128 (hidden_layers counts the second), omega 24."""
    learning_rate: float = 1e-4
    """Adam learning rate at the start (after ``warmup_steps``; cosine decay to a tenth)."""
    warmup_steps: int = 100
    """Steps over which the learning rate rises from the start's to ``learning_rate``."""
    weights: ImageMorphWeights = field(default_factory=ImageMorphWeights)
    thin_plate_in_time: bool = True
    """The thin-plate term on the full Hessian in (u, v, t) (ifmorph's); off: on the Hessian in (u, v) at each t (the
    classical thin-plate energy, zero for every affine map: it does not pull the warp off an affine map between the
    landmarks, which the mixed derivatives d^2 T / dx dt do)."""
    smoothness_step: float = 0.02
    """Finite-difference step (morph units: 1 % of the long side) of the thin-plate estimate."""
    init: Literal["affine", "identity"] = "affine"
    """affine: the warp is the one-parameter group of the landmarks' best affine map plus the learned residual
    (module notes); identity: the learned part alone, starting at T(x, t) = x (ifmorph)."""
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self):
        self.require_counts("steps", "batch", "smoothness_batch", "landmark_times")
        if self.warp.in_features != WARP_SHAPE[0] or self.warp.out_features != WARP_SHAPE[1]:
            raise ValueError("ImageMorphConfig.warp must have in_features=3 and out_features=2 (w of (u, v, t))")
        if self.init not in ("affine", "identity"):
            raise ValueError(f"ImageMorphConfig.init must be 'affine' or 'identity', got {self.init!r}")
        if not (self.learning_rate > 0 and self.smoothness_step > 0):
            raise ValueError("ImageMorphConfig needs learning_rate > 0 and smoothness_step > 0")
        if self.warmup_steps < 0:
            raise ValueError(f"ImageMorphConfig.warmup_steps must be at least 0, got {self.warmup_steps}")
        if any(not (value >= 0 and math.isfinite(value)) for value in dataclasses.asdict(self.weights).values()):
            raise ValueError(f"ImageMorphConfig.weights must be finite and non-negative, got {self.weights}")


PRESETS: dict[str, ImageMorphConfig] = {
    "cpu": ImageMorphConfig(
        steps=600, batch=2000, smoothness_batch=1000, learning_rate=5e-4, warmup_steps=50,
        weights=ImageMorphWeights(inverse=1e5),
    ),
    "gpu": ImageMorphConfig(),
}
"""cpu: ~40 CPU-seconds (one thread; bench/results/image_morph_cpu.md): 600 steps of 2,000 + 1,000 samples, a
higher learning rate, and inverse consistency weighted 1e5 instead of 1e4: in 600 steps it halves the inverse error
of a hand-made pair (1.27 -> 0.49 px mean) and leaves the landmark and held-out errors as they were (1e6 costs
landmark accuracy: 0.52 -> 0.62 px on the stereo pair). gpu: ifmorph's settings (20,001 steps of 20,000 samples,
Adam 1e-4, its weights), with the affine start."""


def preset(name: str, *, steps: int | None = None, device: str = "auto", seed: int = 0) -> ImageMorphConfig:
    """The settings of preset ``name`` (a key of `PRESETS`), with ``steps`` if given."""
    if name not in PRESETS:
        raise ValueError(f"unknown image morph preset {name!r}; choose one of {', '.join(PRESETS)}")
    changes = {"device": device, "seed": seed, **({} if steps is None else {"steps": steps})}
    return dataclasses.replace(PRESETS[name], **changes)


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
    if rows is None or rows.shape != (2, 3) or not all(_is_number(v) and math.isfinite(v) for v in rows.ravel()):
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


# --- frames ---------------------------------------------------------------------------------------------------------


def matched_pair(image0: Image, image1: Image) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of both images (linear light) with one channel layout: colour if either has colour (grey repeated),
    alpha if either has alpha (opaque added)."""
    colour = max(image0.channels, image1.channels) >= 3
    alpha = image0.has_alpha or image1.has_alpha

    def layout(image: Image) -> np.ndarray:
        pixels = image.pixels
        values, opacity = (pixels[..., :-1], pixels[..., -1:]) if image.has_alpha else (pixels, None)
        if colour and values.shape[2] == 1:
            values = np.repeat(values, 3, axis=2)
        if alpha:
            values = np.concatenate([values, np.ones_like(values[..., :1]) if opacity is None else opacity], axis=2)
        return values

    return layout(image0), layout(image1)


def render_frames(
    morph: ImageMorph,
    image0: Image,
    image1: Image,
    times,
    *,
    size: tuple[int, int] | None = None,
    blend: Literal["linear", "srgb"] = "linear",
    on_frame: Callable[[int, int, np.ndarray], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> list[np.ndarray]:
    """The frames of ``morph`` at ``times`` (each in [0, 1]), linear-light pixels (height, width, channels); see
    the module's notes. ``size`` (width, height): the frames' size, by default image 0's (same aspect as the
    morph's images); the images may be of other resolutions than the morph was trained on, if of its aspect.
    ``on_frame(index, total, pixels)`` after each frame."""
    from ..training import Cancelled

    geometry0, geometry1 = ImageGeometry(image0.width, image0.height), ImageGeometry(image1.width, image1.height)
    check_same_aspect(morph.geometries[0], geometry0, ("the morph's image 0", "image 0"))
    check_same_aspect(morph.geometries[1], geometry1, ("the morph's image 1", "image 1"))
    width, height = size if size is not None else (image0.width, image0.height)
    if not all(isinstance(v, (int, np.integer)) and 1 <= v <= MAX_RENDER_SIDE for v in (width, height)):
        raise ValueError(f"the frame size must be two whole numbers of pixels in [1, {MAX_RENDER_SIDE}], got {size}")
    output = ImageGeometry(int(width), int(height))
    check_same_aspect(geometry0, output, ("image 0", f"a frame of {width}x{height}"))
    if blend not in ("linear", "srgb"):
        raise ValueError(f"blend must be 'linear' or 'srgb', got {blend!r}")
    times = [float(t) for t in times]
    bad = [t for t in times if not 0.0 <= t <= 1.0]
    if bad:
        raise ValueError(f"frame times must lie in [0, 1] (0 is image 0, 1 is image 1), got {bad[0]}")

    first, second = matched_pair(image0, image1)
    if blend == "srgb":
        first, second = to_srgb(first), to_srgb(second)
    # Frame pixel centres in morph coordinates, and in each image's pixel indices (float64: exact at equal sizes).
    columns, rows = np.meshgrid(np.arange(output.width) + 0.5, np.arange(output.height) + 0.5, indexing="xy")
    centres = np.stack([columns.ravel(), rows.ravel()], axis=-1)
    points = output.to_morph(centres)
    bases = [_indices(centres, output, geometry) for geometry in (geometry0, geometry1)]
    frames = []
    for index, t in enumerate(times):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"rendering cancelled at frame {index} of {len(times)}")
        looks = []
        for image, base, geometry, s in ((first, bases[0], geometry0, -t), (second, bases[1], geometry1, 1.0 - t)):
            moved = base + morph.displacement(points, s) * geometry.pixels_per_unit  # exactly base where s = 0
            looks.append(_bilinear(image, moved))
        frame = (1.0 - t) * looks[0] + t * looks[1]  # exactly one image where t is 0 or 1
        frame = frame.reshape(output.height, output.width, -1).astype(np.float32)
        if blend == "srgb":
            frame = to_linear(frame)
        frames.append(frame)
        if on_frame is not None:
            on_frame(index, len(times), frame)
    return frames


def carried(morph: ImageMorph, pixels: np.ndarray, s: float, size: tuple[int, int] | None = None) -> np.ndarray:
    """``pixels`` (h, w, c) looked up at T(x, s) for the pixel centres x of a frame of ``size`` (default: the image's
    own): image 0 with s = -t (or image 1 with s = 1 - t) is its part of the frame at t; image 0 with s = -1 is
    image 0 carried onto image 1. Returns (height, width, c) float64."""
    geometry = ImageGeometry(pixels.shape[1], pixels.shape[0])
    output = geometry if size is None else ImageGeometry(*size)
    columns, rows = np.meshgrid(np.arange(output.width) + 0.5, np.arange(output.height) + 0.5, indexing="xy")
    centres = np.stack([columns.ravel(), rows.ravel()], axis=-1)
    moves = morph.displacement(output.to_morph(centres), s) * geometry.pixels_per_unit
    moved = _indices(centres, output, geometry) + moves
    return _bilinear(pixels, moved).reshape(output.height, output.width, -1)


def _indices(centres: np.ndarray, output: ImageGeometry, image: ImageGeometry) -> np.ndarray:
    """Pixel centres of a frame (pixel coordinates) as pixel indices of ``image`` (centre of pixel j at j): the
    same point of morph coordinates. Exactly the frame's own indices when the sizes agree."""
    scale = image.long_side / output.long_side
    offset = np.array([output.width, output.height]) / 2.0
    return (centres - offset) * scale + np.array([image.width, image.height]) / 2.0 - 0.5


def _bilinear(pixels: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Bilinear look-ups of ``pixels`` (h, w, c) at pixel indices (n, 2) (x, y; centre of pixel j at j), edge pixels
    repeated outside; (n, c) float64. At integer indices the pixel itself, exactly."""
    height, width = pixels.shape[:2]
    x = np.clip(indices[:, 0], 0.0, width - 1.0)
    y = np.clip(indices[:, 1], 0.0, height - 1.0)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    values = pixels.astype(np.float64, copy=False)
    top = values[y0, x0] * (1.0 - fx) + values[y0, x1] * fx
    bottom = values[y1, x0] * (1.0 - fx) + values[y1, x1] * fx
    return top * (1.0 - fy) + bottom * fy


__all__ = [
    "ASPECT_TOLERANCE_PX", "IMAGE_MORPH_KEY", "MIN_LANDMARK_PAIRS", "PRESETS", "ImageError", "ImageGeometry",
    "ImageMorph", "ImageMorphConfig", "ImageMorphWeights", "ImageWarp", "affine_fit", "affine_logarithm", "carried",
    "check_landmarks", "check_same_aspect", "flipped_triangles",
    "image_morph_loss", "load_image_morph", "matched_pair", "preset", "read_landmarks", "render_frames",
    "train_image_morph", "warp_report",
]  # fmt: skip
