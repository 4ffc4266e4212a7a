"""Image model files: an `ImageField` (a fit, or a seamless tile) in one pickle-free file.

The layout follows `engine.model`'s: one ``torch.save`` archive of ``{"header_json": str, "state_dict": {name:
tensor}}`` read back with ``torch.load(weights_only=True)`` (no pickled code runs), written whole or not at all
(`engine.model.replaced_whole`). The header:

    {"format": "engine.image_field", "format_version": 1, "engine_version": "...",
     "image": {"width": W, "height": H, "channels": C, "encoding": "srgb" | "linear"},
     "stages": [{StageConfig fields}, ...], "metadata": {...}}

with the tensors ``stages.<i>.<name>``. ``format`` is the file's magic: an SDF model file (a fit, an evolution, a
morph) is named as such. A file is untrusted input: the archive (size, records), the header (keys, JSON types,
limits), and every tensor's name, shape, dtype and values (finite; integer frequencies within the band) are checked
before a network is built, so a small file cannot make the engine allocate more than the weights it holds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path

import torch

from .. import __version__
from ..model import _read_archive, not_ours, replaced_whole
from ..networks import MAX_HIDDEN_FEATURES, MAX_HIDDEN_LAYERS, MAX_OMEGA
from .field import ImageField, SineStage, StageConfig
from .io import CHANNEL_NAMES

IMAGE_FORMAT = "engine.image_field"
"""The magic of an image model file (its header's ``format``)."""
IMAGE_FORMAT_VERSION = 1
"""Bumped when the layout changes; readers take every version up to this one."""
MAX_STAGES = 16
"""Most stages a file may hold: MR-Net uses up to 7 (a 512^2 image); 16 covers a 65536^2 one."""
MAX_BAND = 1e5
"""Highest first-layer frequency a file may hold, radians per field unit (a 65536-pixel side's Nyquist is ~1e5)."""
MAX_SIDE = 65536
"""Largest image side a file may describe."""

_HEADER_KEYS = {"format", "format_version", "engine_version", "image", "stages", "metadata"}


def save_image_field(path: str | Path, field: ImageField, metadata: dict | None = None) -> Path:
    """Write ``field`` (see the module's notes), whole or not at all."""
    header = {
        "format": IMAGE_FORMAT,
        "format_version": IMAGE_FORMAT_VERSION,
        "engine_version": __version__,
        "image": {"width": field.width, "height": field.height, "channels": field.channels, "encoding": field.encoding},
        "stages": [dataclasses.asdict(config) for config in field.stage_configs],
        "metadata": metadata or {},
    }
    state = {f"stages.{key}": tensor.detach().cpu().contiguous() for key, tensor in field.stages.state_dict().items()}
    with replaced_whole(path) as temporary:
        torch.save({"header_json": json.dumps(header), "state_dict": state}, temporary)
    return Path(path)


def load_image_field(path: str | Path) -> tuple[ImageField, dict]:
    """The field and metadata of a file written by `save_image_field`, checked whole before anything is built.

    Raises FileNotFoundError for a missing path, ValueError naming the file for anything else."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not an image model file")
    if not path.exists():
        raise FileNotFoundError(f"image model file {path} does not exist")
    header, state = _read_archive(path)
    refuse = lambda problem: ValueError(f"{path} is not an image model file written by this engine ({problem})")  # noqa: E731
    if header.get("format") != IMAGE_FORMAT:
        if "architecture" in header or "networks" in header:
            raise ValueError(
                f"{path} holds an SDF model (a fit, an evolution or a morph), not an image model; use "
                "'python -m engine extract' or engine.model.load_model for it"
            )
        raise refuse(f"its format is {header.get('format')!r}, not {IMAGE_FORMAT!r}")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise refuse(f"its format_version is {version!r}")
    if version > IMAGE_FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by engine {header.get('engine_version')} (image format {version}); update the "
            "engine to read it"
        )
    missing, unknown = sorted(_HEADER_KEYS - set(header)), sorted(set(header) - _HEADER_KEYS)
    if missing or unknown:
        parts = [f"lacks {', '.join(missing)}" if missing else "", f"has unknown {', '.join(unknown)}" if unknown else ""]
        raise refuse(f"its header {' and '.join(p for p in parts if p)}")
    if not isinstance(header["engine_version"], str) or not isinstance(header["metadata"], dict):
        raise refuse("its engine_version must be a string and its metadata a JSON object")
    try:
        width, height, channels, encoding = _checked_image(header["image"])
        configs = _checked_stages(header["stages"])
        _check_state(state, configs, channels)
    except ValueError as error:
        raise refuse(str(error)) from None
    field = ImageField(configs, channels, height, width, encoding)
    field.stages.load_state_dict({key[len("stages.") :]: value for key, value in state.items()})
    return field.eval(), header["metadata"]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _checked_image(image) -> tuple[int, int, int, str]:
    if not isinstance(image, dict) or set(image) != {"width", "height", "channels", "encoding"}:
        raise ValueError("its image must be a JSON object of width, height, channels and encoding")
    width, height, channels, encoding = image["width"], image["height"], image["channels"], image["encoding"]
    if not (_is_int(width) and _is_int(height) and 1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise ValueError(f"its image size must be integers in [1, {MAX_SIDE}], got {width!r} x {height!r}")
    if channels not in CHANNEL_NAMES or not _is_int(channels):
        raise ValueError(f"its image has {channels!r} channels; images have 1 to 4")
    if encoding not in ("srgb", "linear"):
        raise ValueError(f"its image encoding must be 'srgb' or 'linear', got {encoding!r}")
    return width, height, channels, encoding


def _checked_stages(stages) -> list[StageConfig]:
    if not isinstance(stages, list) or not 1 <= len(stages) <= MAX_STAGES:
        raise ValueError(f"its stages must be a list of 1 to {MAX_STAGES} architectures")
    names = [f.name for f in dataclasses.fields(StageConfig)]
    hints = typing.get_type_hints(StageConfig)
    configs = []
    for index, stage in enumerate(stages):
        where = f"stage {index}"
        if not isinstance(stage, dict) or set(stage) != set(names):
            raise ValueError(f"{where} must be a JSON object of exactly {', '.join(names)}")
        for name in ("hidden_features", "hidden_layers", "low_limit"):
            if not _is_int(stage[name]):
                raise ValueError(f"{where}'s {name} must be an integer, got {stage[name]!r}")
        if not 1 <= stage["hidden_features"] <= MAX_HIDDEN_FEATURES or not 0 <= stage["hidden_layers"] <= MAX_HIDDEN_LAYERS:
            raise ValueError(
                f"{where} is {stage['hidden_features']} wide and {stage['hidden_layers']} deep; at most "
                f"{MAX_HIDDEN_FEATURES} and {MAX_HIDDEN_LAYERS}"
            )
        if not (_is_number(stage["band"]) and 0 < stage["band"] <= MAX_BAND):
            raise ValueError(f"{where}'s band must be a number in (0, {MAX_BAND:g}], got {stage['band']!r}")
        if not (_is_number(stage["hidden_omega"]) and 0 < stage["hidden_omega"] <= MAX_OMEGA):
            raise ValueError(f"{where}'s hidden_omega must be a number in (0, {MAX_OMEGA:g}]")
        if stage["first_layer"] not in typing.get_args(hints["first_layer"]):
            raise ValueError(f"{where}'s first_layer must be 'random' or 'integer', got {stage['first_layer']!r}")
        period = stage["period"]
        if not (isinstance(period, list) and len(period) == 2 and all(_is_number(p) and 0 < p <= 1e3 for p in period)):
            raise ValueError(f"{where}'s period must be two positive numbers, got {period!r}")
        if not isinstance(stage["coupled"], bool) or (stage["coupled"] and (index == 0 or stage["hidden_layers"] == 0)):
            raise ValueError(f"{where}'s coupled must be true or false, and false for a first stage or one without hidden layers")
        if stage["low_limit"] < 0:
            raise ValueError(f"{where}'s low_limit must be at least 0")
        configs.append(StageConfig(**{**stage, "period": tuple(float(p) for p in period)}))
    return configs


def _check_state(state: dict, configs: list[StageConfig], channels: int) -> None:
    expected, previous = {}, 0
    for index, config in enumerate(configs):
        for name, shape in SineStage.state_shapes(config, channels, previous).items():
            expected[f"stages.{index}.{name}"] = (shape, config)
        previous = config.hidden_features
    missing, unknown = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unknown:
        what = [f"lack {', '.join(missing[:3])}" if missing else "", f"hold unknown {', '.join(unknown[:3])}" if unknown else ""]
        raise ValueError(f"its weights {' and '.join(w for w in what if w)} for its stages")
    for name, ((shape, integer), config) in expected.items():
        tensor = state[name]
        if tuple(tensor.shape) != shape:
            raise ValueError(f"its tensor {name} has shape {tuple(tensor.shape)}, but its stage needs {shape}")
        if integer:
            if tensor.dtype != torch.int64:
                raise ValueError(f"its tensor {name} must hold int64 frequencies, not {tensor.dtype}")
            if len(tensor) and int(tensor.abs().max()) > config.integer_band():
                raise ValueError(f"its tensor {name} holds frequencies above its stage's band")
        elif not tensor.is_floating_point() or not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"its tensor {name} must hold finite floating-point weights")
