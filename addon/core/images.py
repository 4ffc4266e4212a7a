"""Images between Blender and the engine's image jobs, without bpy: pixel layouts and colour, landmark pairs stored on
images, the Image Editor's coordinates, the jobs' params and the checks of their outputs.

- Blender's ``Image.pixels`` is a flat float array, RGBA (``Image.channels`` per pixel), the bottom row first. A byte
  image's values are its bytes / 255 in its own colour space (sRGB for a photo, raw for Non-Color data); a float
  image's are in scene linear (Blender converts float files on load) with colour premultiplied by alpha (a byte
  image's alpha is straight). The engine takes (height, width, channels) with the top row first and alpha
  straight, encoded as a job's ``encoding`` says ("srgb" or "linear"), and returns linear light.
- Results come back as new float images (scene linear, the default colour space of a float buffer): no rounding to
  bytes, and values a network overshoots by are kept.
- Pixel coordinates (landmarks, the engine's): origin at the image's top-left corner, x to the right, y down, in
  pixels; the Image Editor's view coordinates (u, v) run from 0 to 1 from the bottom-left corner.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import EngineError

SRGB_SPACES = ("sRGB",)
"""Colour spaces whose byte values are sRGB-encoded."""
LINEAR_SPACES = ("Non-Color", "Linear Rec.709", "scene_linear", "Linear", "Raw")
"""Colour spaces whose values the engine takes as they are (linear light, or data)."""
LANDMARKS_PROPERTY = "neural_sdf_landmarks"
"""The custom property of an image that holds its landmarks: a flat list pair, x, y, pair, x, y, ..."""
MIN_LANDMARK_PAIRS = 3
"""The engine's least number of pairs (`engine.images.landmarks.MIN_LANDMARK_PAIRS`)."""
ASPECT_TOLERANCE_PX = 1.0
"""Two images have the same aspect when their sides differ by at most a pixel at the smaller one's size (the
engine's `engine.images.landmarks.ASPECT_TOLERANCE_PX`)."""
MIN_SIDE = 8
"""The engine's smallest image side."""
HIT_RADIUS_PX = 12.0
"""How near (screen pixels) a click must be to a landmark to pick it."""
FRAME_FILENAME = "frame_{:04d}.png"


def srgb_to_linear(encoded: np.ndarray) -> np.ndarray:
    """Decode sRGB (IEC 61966-2-1, the engine's `engine.images.io.srgb_to_linear`)."""
    encoded = np.asarray(encoded, dtype=np.float64)
    return np.where(encoded <= 0.04045, encoded / 12.92, ((np.maximum(encoded, 0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Encode linear values as sRGB (the inverse of `srgb_to_linear`)."""
    linear = np.asarray(linear, dtype=np.float64)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * np.maximum(linear, 0.0031308) ** (1 / 2.4) - 0.055)


def _colour_channels(pixels: np.ndarray) -> slice:
    return slice(0, 1 if pixels.shape[-1] <= 2 else 3)


def decoded(pixels: np.ndarray) -> np.ndarray:
    """sRGB-encoded pixels (h, w, c) in linear light: colour channels decoded, alpha as it is (float32)."""
    out = np.array(pixels, dtype=np.float32)
    colour = _colour_channels(out)
    out[..., colour] = srgb_to_linear(out[..., colour])
    return out


def encoded(pixels: np.ndarray) -> np.ndarray:
    """Linear pixels (h, w, c) sRGB-encoded and clipped to [0, 1] (what an 8-bit file holds), alpha clipped."""
    out = np.array(pixels, dtype=np.float32)
    colour = _colour_channels(out)
    out[..., colour] = linear_to_srgb(out[..., colour])
    return np.clip(out, 0.0, 1.0)


def pixel_encoding(name: str, is_float: bool, colorspace: str) -> str:
    """The engine's ``encoding`` of an image's ``pixels``: "linear" for a float image (scene linear) or a byte image
    in a linear or data space, "srgb" for a byte image in sRGB. Raises `EngineError` for another colour space."""
    if is_float or colorspace in LINEAR_SPACES:
        return "linear"
    if colorspace in SRGB_SPACES:
        return "srgb"
    raise EngineError(
        f"Image '{name}' is in the colour space '{colorspace}', which the engine does not decode: set its Color Space "
        "to sRGB (a photo) or Non-Color (data) in the Image Editor's sidebar, or save it as a float image (EXR)"
    )


def engine_pixels(flat: np.ndarray, width: int, height: int, channels: int, premultiplied: bool = False) -> np.ndarray:
    """Blender's flat pixels as (height, width, c) float32, the top row first, alpha straight (``premultiplied``:
    a float buffer's colour, which Blender keeps multiplied by alpha, is divided by it; where alpha is 0 the colour
    is 0): RGB when the alpha is 1 everywhere (an opaque image needs no alpha channel fitted), else RGBA; grey
    images (1 or 2 channels) stay grey."""
    pixels = np.array(np.asarray(flat, dtype=np.float32).reshape(height, width, channels)[::-1])
    if premultiplied and channels in (2, 4):
        alpha = pixels[..., -1:]
        pixels[..., :-1] = np.divide(pixels[..., :-1], alpha, out=np.zeros_like(pixels[..., :-1]), where=alpha > 0)
    if channels in (2, 4) and np.all(pixels[..., -1] == 1.0):
        pixels = pixels[..., :-1]
    return np.ascontiguousarray(pixels)


def blender_pixels(pixels: np.ndarray, premultiply: bool = False) -> np.ndarray:
    """An engine image (height, width, 1..4; alpha straight), the top row first, as the flat RGBA array Blender's
    ``pixels`` of a new image takes (the bottom row first; grey repeated into RGB; alpha 1 where there is none;
    ``premultiply`` for a float buffer: colour times alpha)."""
    pixels = np.asarray(pixels, dtype=np.float32)
    colour, alpha = (pixels[..., :-1], pixels[..., -1:]) if pixels.shape[2] in (2, 4) else (pixels, None)
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    if premultiply and alpha is not None:
        colour = colour * alpha
    rgba = np.concatenate([colour, np.ones_like(colour[..., :1]) if alpha is None else alpha], axis=2)
    return np.ascontiguousarray(rgba[::-1]).ravel()


def check_image_size(name: str, width: int, height: int) -> None:
    """An `EngineError` for an image without pixels or smaller than the engine takes."""
    if width == 0 or height == 0:
        raise EngineError(
            f"Image '{name}' has no pixels (its file may be missing): open it again (Image > Open), or pick another"
        )
    if min(width, height) < MIN_SIDE:
        raise EngineError(f"Image '{name}' is {width}x{height} pixels: both sides must be at least {MIN_SIDE}")


def check_same_aspect(first: tuple[str, int, int], second: tuple[str, int, int]) -> None:
    """An `EngineError` with a hint unless the images (name, width, height) have the same aspect (sizes may
    differ), as the engine's morph needs."""
    (name0, w0, h0), (name1, w1, h1) = first, second
    long0, long1 = max(w0, h0), max(w1, h1)
    smaller = min(long0, long1)
    gap = max(abs(w0 / long0 - w1 / long1), abs(h0 / long0 - h1 / long1)) * smaller
    if gap > ASPECT_TOLERANCE_PX:
        wider, other = (name0, name1) if w0 / h0 > w1 / h1 else (name1, name0)
        raise EngineError(
            f"Image '{name0}' is {w0}x{h0} (aspect {w0 / h0:.3g}) and '{name1}' {w1}x{h1} (aspect {w1 / h1:.3g}): a "
            f"morph needs two images of the same aspect. Crop '{wider}' to the aspect of '{other}' (or pad "
            f"'{other}'), e.g. in an image editor; Image > Resize keeps the aspect wrong unless both sides change"
        )


# --- landmarks ------------------------------------------------------------------------------------------------------


def landmark_points(raw) -> dict[int, tuple[float, float]]:
    """An image's landmarks (its `LANDMARKS_PROPERTY`, a flat list pair, x, y, ...) by pair id; a property that is
    not such a list reads as none."""
    values = list(raw) if raw is not None else []
    if len(values) % 3:
        values = values[: len(values) - len(values) % 3]
    points = {}
    for index in range(0, len(values), 3):
        pair, x, y = values[index : index + 3]
        if float(pair).is_integer() and math.isfinite(x) and math.isfinite(y):
            points[int(pair)] = (float(x), float(y))
    return points


def stored_landmarks(points: dict[int, tuple[float, float]]) -> list[float]:
    """Landmarks by pair id as the flat list stored on the image, in pair order."""
    return [value for pair in sorted(points) for value in (float(pair), *points[pair])]


def next_pair(here: dict[int, tuple[float, float]], there: dict[int, tuple[float, float]]) -> int:
    """The pair id of a landmark added to an image with ``here`` whose partner image has ``there``: the first id
    that waits for its partner on this image, else the smallest id neither image uses."""
    waiting = sorted(set(there) - set(here))
    if waiting:
        return waiting[0]
    pair = 1
    while pair in here or pair in there:
        pair += 1
    return pair


def nearest_landmark(points: dict[int, tuple[float, float]], screen, at: tuple[float, float], radius: float):
    """The pair id of the landmark drawn nearest to ``at`` (screen pixels) within ``radius``, or None;
    ``screen(x, y)`` maps an image pixel to screen pixels."""
    best, best_distance = None, radius
    for pair, point in points.items():
        sx, sy = screen(*point)
        distance = math.hypot(sx - at[0], sy - at[1])
        if distance <= best_distance:
            best, best_distance = pair, distance
    return best


def view_to_pixel(u: float, v: float, width: int, height: int) -> tuple[float, float] | None:
    """The Image Editor's view coordinates (0 to 1 from the bottom-left) as pixel coordinates (origin top-left, y
    down), or None outside the image."""
    if not (0.0 <= u <= 1.0 and 0.0 <= v <= 1.0):
        return None
    return u * width, (1.0 - v) * height


def pixel_to_view(x: float, y: float, width: int, height: int) -> tuple[float, float]:
    """Pixel coordinates as the Image Editor's view coordinates (the inverse of `view_to_pixel`)."""
    return x / width, 1.0 - y / height


def paired_landmarks(first: tuple[str, dict], second: tuple[str, dict]) -> dict[str, np.ndarray]:
    """The morph job's ``landmarks_0`` / ``landmarks_1`` ((k, 2) float64, row i of both the pair with the i-th
    smallest id) from two images' (name, landmarks by pair id). Raises `EngineError` for a landmark without its
    partner and for fewer than `MIN_LANDMARK_PAIRS` pairs."""
    (name0, points0), (name1, points1) = first, second
    for (here, points), (there, others) in (((name0, points0), (name1, points1)), ((name1, points1), (name0, points0))):
        alone = sorted(set(points) - set(others))
        if alone:
            x, y = points[alone[0]]
            raise EngineError(
                f"Landmark {alone[0]} of image '{here}' (at {x:.0f}, {y:.0f}) has no partner on '{there}': click "
                f"its partner on '{there}' with Place Landmarks, or clear it"
            )
    pairs = sorted(points0)
    if len(pairs) < MIN_LANDMARK_PAIRS:
        raise EngineError(
            f"The morph needs at least {MIN_LANDMARK_PAIRS} landmark pairs, '{name0}' and '{name1}' have "
            f"{len(pairs)}: place them with Place Landmarks (click a point on one image, then its partner on the other)"
        )
    return {
        "landmarks_0": np.array([points0[pair] for pair in pairs], dtype=np.float64),
        "landmarks_1": np.array([points1[pair] for pair in pairs], dtype=np.float64),
    }


# --- jobs -----------------------------------------------------------------------------------------------------------


def image_fit_params(*, name: str, encoding: str, preset: str, levels: int, steps: int | None, tuner: bool,
                     device: str, seed: int) -> dict:  # fmt: skip
    """The ``image_fit`` job of the image ``name`` (its pixels sent as ``image``, encoded as ``encoding``)."""
    return {"name": name, "encoding": encoding, "preset": preset, "levels": levels, "steps": steps,
            "tuner": bool(tuner), "device": device, "seed": seed}  # fmt: skip


def image_render_params(*, model: str, size: tuple[int, int], level: float | None, device: str) -> dict:
    """The ``image_render`` job of the model file ``model`` at ``size`` (width, height): at ``level`` (a number in
    [0, levels]), or with None each pixel's level from its footprint (anti-aliased: a mip level)."""
    detail = "auto" if level is None else "level"
    return {"model": str(model), "size": [int(size[0]), int(size[1])], "detail": detail,
            "level": None if level is None else float(level), "device": device}  # fmt: skip


def image_tile_params(*, name: str, encoding: str, size: int | None, preset: str, steps: int | None, device: str,
                      seed: int) -> dict:  # fmt: skip
    """The ``image_tile`` job of the image ``name``; ``size`` None keeps the input's size."""
    return {"name": name, "encoding": encoding, "size": size, "preset": preset, "steps": steps, "device": device,
            "seed": seed}  # fmt: skip


def image_morph_params(*, names: tuple[str, str], encoding: str, frames: int, preset: str, steps: int | None,
                       device: str, seed: int) -> dict:  # fmt: skip
    """The ``image_morph`` job from image ``names[0]`` (t = 0) to ``names[1]`` (t = 1), both sent in ``encoding``."""
    return {"names": list(names), "encoding": encoding, "frames": frames, "preset": preset, "steps": steps,
            "device": device, "seed": seed}  # fmt: skip


def mip_sizes(width: int, height: int, count: int) -> list[tuple[int, int]]:
    """The sizes of ``count`` mip levels below (width, height): each half the one above (rounded down, at least 1)."""
    sizes = []
    for _ in range(count):
        width, height = max(1, width // 2), max(1, height // 2)
        sizes.append((width, height))
        if (width, height) == (1, 1):
            break
    return sizes


_REINSTALL = "reinstall the extension so that the add-on and the engine come from one release"


def output_image(outputs: dict[str, np.ndarray], name: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """A checked output image ``name``: (height, width, 1..4) float32, finite; of ``size`` (width, height) if given."""
    if name not in outputs:
        raise EngineError(
            f"The engine's output has no '{name}' image (it has {', '.join(outputs) or 'none'}): {_REINSTALL}"
        )
    pixels = outputs[name]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4) or not np.issubdtype(pixels.dtype, np.floating):
        raise EngineError(f"The engine returned an image of shape {pixels.shape} ({pixels.dtype}): {_REINSTALL}")
    if size is not None and (pixels.shape[1], pixels.shape[0]) != tuple(size):
        raise EngineError(f"The engine returned a {pixels.shape[1]}x{pixels.shape[0]} image, expected "
                          f"{size[0]}x{size[1]}: {_REINSTALL}")  # fmt: skip
    if not np.isfinite(pixels).all():
        raise EngineError("The engine returned an image with NaN or infinite pixels: the training failed; try again "
                          "with another seed or fewer levels")  # fmt: skip
    return pixels.astype(np.float32)


def one_encoding(first: tuple[np.ndarray, str], second: tuple[np.ndarray, str]) -> tuple[np.ndarray, np.ndarray, str]:
    """Two images' (pixels, encoding) in one encoding for one job: as they are when both share it, else both in
    linear light (the sRGB one decoded)."""
    (pixels0, encoding0), (pixels1, encoding1) = first, second
    if encoding0 == encoding1:
        return pixels0, pixels1, encoding0
    as_linear = [decoded(p) if e == "srgb" else p for p, e in ((pixels0, encoding0), (pixels1, encoding1))]
    return as_linear[0], as_linear[1], "linear"
