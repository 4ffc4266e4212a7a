"""Image morph geometry and landmarks (`engine.images.morph`'s coordinates: pixel and morph coordinates, the same
aspect), the landmark file checked before any work, landmark triangles that flip, and the least-squares affine map of
the landmarks (the warp's analytic start)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_LANDMARK_PAIRS = 3
"""Fewest landmark pairs: three points not on a line fix an affine map of the plane."""
MAX_LANDMARK_PAIRS = 100_000
"""Most landmark pairs read (ifmorph's faces use ~130; a file of more is not a landmark file)."""
MAX_RENDER_SIDE = 16384
"""Longest side of a rendered frame."""
ASPECT_TOLERANCE_PX = 1.0
"""Two images have the same aspect when, scaled to the same long side, their short sides differ by at most this many
pixels of the smaller image (so a 640 x 427 photo pairs with its 320 x 213 copy, not with a 320 x 240 one)."""


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
            if isinstance(pair, list) and len(pair) == 2 and all(is_number(v) for v in pair):
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
            if len(point) != 2 or not all(is_number(v) for v in point):
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


def is_number(value) -> bool:
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


