"""Image files and colour: PNG/JPEG (and whatever else imageio reads) in, PNG/JPEG out, and the sRGB transfer
function both ways.

Conventions (one place for them):
- An image in the engine is a float array (height, width, channels), channels 1 (grey), 2 (grey, alpha), 3 (RGB)
  or 4 (RGBA), row 0 at the top, column 0 at the left: pixel (x, y) is ``image[y, x]``.
- Colour channels of 8- and 16-bit files are sRGB-encoded; float files (TIFF) are taken as already linear. Alpha is
  never encoded (it is a coverage, linear by definition) and files store it straight (not premultiplied).
- `srgb_to_linear` / `linear_to_srgb` are the exact piecewise IEC 61966-2-1 functions (a linear toe below 0.04045 /
  0.0031308, a 2.4 power above); they extend to values outside [0, 1] (a network's output may overshoot) by the toe's
  line below 0 and the power above 1, so both are monotonic and inverse to each other everywhere.
- Files are written whole (a temporary file moved into place) and never through a symlink.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..model import replaced_whole

CHANNEL_NAMES = {1: "grey", 2: "grey and alpha", 3: "RGB", 4: "RGBA"}
"""The channel layouts an image may have, by count."""
MIN_SIDE = 8
"""The smallest image side the engine fits (a network of fewer pixels is pointless, and pyramids need room)."""
MAX_PIXELS = 2**26
"""The largest image read: 67M pixels (8192 x 8192), whose float copy already takes 1 GB for RGBA."""
WRITE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""What `write_image` writes: 8-bit PNG (any channel layout) or JPEG (no alpha)."""


class ImageError(ValueError):
    """An image file or array that cannot be used: the message names it and says what is wrong."""


@dataclass(frozen=True)
class Image:
    """Pixels in linear light (float32, (height, width, channels)) with the encoding they came in."""

    pixels: np.ndarray
    source_encoding: str
    """"srgb" (an 8- or 16-bit file, decoded here) or "linear" (a float file, or an array said to be linear)."""
    name: str = "image"

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def channels(self) -> int:
        return self.pixels.shape[2]

    @property
    def has_alpha(self) -> bool:
        return self.channels in (2, 4)


def srgb_to_linear(encoded):
    """Decode sRGB values (any shape, a numpy array or a torch tensor) to linear light."""
    if _is_tensor(encoded):
        import torch

        return torch.where(encoded <= 0.04045, encoded / 12.92, ((encoded.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)
    encoded = np.asarray(encoded)
    return np.where(encoded <= 0.04045, encoded / 12.92, ((np.maximum(encoded, 0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear):
    """Encode linear values (any shape, a numpy array or a torch tensor) as sRGB."""
    if _is_tensor(linear):
        import torch

        return torch.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)
    linear = np.asarray(linear)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * np.maximum(linear, 0.0031308) ** (1 / 2.4) - 0.055)


def _is_tensor(values) -> bool:
    return type(values).__module__.split(".")[0] == "torch"


def to_linear(pixels: np.ndarray) -> np.ndarray:
    """sRGB-encoded pixels (h, w, c) in linear light: colour channels decoded, alpha as it is."""
    out = np.array(pixels, dtype=np.float32)
    colour = _colour_channels(out.shape[2])
    out[..., colour] = srgb_to_linear(out[..., colour])
    return out


def to_srgb(pixels: np.ndarray) -> np.ndarray:
    """Linear pixels (h, w, c) sRGB-encoded: colour channels encoded, alpha as it is."""
    out = np.array(pixels, dtype=np.float32)
    colour = _colour_channels(out.shape[2])
    out[..., colour] = linear_to_srgb(out[..., colour])
    return out


def _colour_channels(channels: int) -> slice:
    return slice(0, 1 if channels <= 2 else 3)


def check_image(pixels, name: str = "image", encoding: str = "srgb") -> Image:
    """An array of pixels checked and converted to an `Image` in linear light.

    - ``pixels``: (h, w) or (h, w, c) with c in 1..4; integer types are scaled by their maximum (uint8 /255, uint16
      /65535), floats taken as they are (finite; colour in [0, 1] for an sRGB array, alpha in [0, 1]).
    - ``encoding``: "srgb" (decoded here) or "linear".
    Raises `ImageError` naming ``name`` and what is wrong (no pixels, too small, channels, non-finite values).
    """
    array = np.asanyarray(pixels)
    if encoding not in ("srgb", "linear"):
        raise ValueError(f"encoding must be 'srgb' or 'linear', got {encoding!r}")
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ImageError(f"{name} holds {array.dtype} values, not pixels")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim == 4 and array.shape[0] > 1:
        raise ImageError(f"{name} holds {array.shape[0]} frames (an animation or a stack); give a single image")
    if array.ndim == 4:
        array = array[0]
    if array.ndim != 3:
        raise ImageError(f"{name} must be (height, width) or (height, width, channels), got shape {array.shape}")
    height, width, channels = array.shape
    if channels not in CHANNEL_NAMES:
        raise ImageError(
            f"{name} has {channels} channels; the engine takes 1 (grey), 2 (grey, alpha), 3 (RGB) or 4 (RGBA)"
        )
    if min(height, width) < MIN_SIDE:
        raise ImageError(f"{name} is {width}x{height} pixels, too small: both sides must be at least {MIN_SIDE}")
    if height * width > MAX_PIXELS:
        raise ImageError(f"{name} is {width}x{height} pixels, more than the {MAX_PIXELS >> 20}M pixels the engine reads")
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        if np.issubdtype(array.dtype, np.signedinteger) and array.min() < 0:
            raise ImageError(f"{name} holds negative integer pixels")
        top = 1 if array.dtype == bool else np.iinfo(array.dtype).max
        values = array.astype(np.float32) / np.float32(top)
    else:
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).any(axis=2).sum())
            raise ImageError(f"{name} holds NaN or infinite values ({bad} pixels)")
        if values.min() < 0.0 or (encoding == "srgb" and values.max() > 1.0):
            raise ImageError(
                f"{name} holds values in [{values.min():.3g}, {values.max():.3g}]; an sRGB-encoded float image must "
                "lie in [0, 1] (give encoding='linear' for linear light, which may exceed 1)"
            )
        if channels in (2, 4) and values[..., -1].max() > 1.0:
            raise ImageError(f"{name}'s alpha exceeds 1")
    linear = to_linear(values) if encoding == "srgb" else values
    return Image(np.ascontiguousarray(linear, dtype=np.float32), encoding, name)


def read_image(path: str | Path) -> Image:
    """An image file (PNG, JPEG, or anything imageio reads: TIFF, BMP, ...) in linear light: 8- and 16-bit files are
    decoded from sRGB, float files taken as linear. Raises FileNotFoundError for a missing path and `ImageError`
    naming the file for everything else (a folder, not an image, an animation, too small, channels, non-finite)."""
    import imageio.v3 as iio

    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path} is a folder, not an image file")
    if not path.exists():
        raise FileNotFoundError(f"image file {path} does not exist")
    try:
        array = iio.imread(path, index=None)
    except Exception as error:  # imageio raises many types for an unreadable file; the user needs one message
        detail = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise ImageError(f"{path} is not an image file imageio can read ({detail})") from None
    encoding = "linear" if np.issubdtype(array.dtype, np.floating) else "srgb"
    return check_image(array, str(path), encoding)


def write_image(path: str | Path, linear: np.ndarray) -> Path:
    """Write linear pixels (h, w, c) as an 8-bit sRGB-encoded PNG or JPEG (by the suffix), whole or not at all.
    Values are clipped to [0, 1] after encoding; JPEG refuses alpha (write a PNG)."""
    import imageio.v3 as iio

    path = Path(path)
    pixels = np.asanyarray(linear, dtype=np.float32)
    if pixels.ndim != 3 or pixels.shape[2] not in CHANNEL_NAMES:
        raise ValueError(f"pixels must be (height, width, 1..4), got {pixels.shape}")
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise ImageError(f"{path}: the engine writes {', '.join(WRITE_SUFFIXES)} files, not {suffix or 'no suffix'}")
    if suffix != ".png" and pixels.shape[2] in (2, 4):
        raise ImageError(f"{path}: JPEG has no alpha channel; write a .png for an image with alpha")
    encoded = np.clip(np.nan_to_num(to_srgb(pixels), nan=0.0), 0.0, 1.0)
    data = np.round(encoded * 255.0).astype(np.uint8)
    if data.shape[2] == 1:
        data = data[:, :, 0]
    with replaced_whole(path) as temporary:
        iio.imwrite(temporary, data, extension=suffix, **({"quality": 95} if suffix != ".png" else {}))
    return path
