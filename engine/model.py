"""Fitted models and their pickle-free files.

- `SDFModel`: a network in unit-cube coordinates, the `Normalization` back to the input's, and free metadata.
- A model file is one ``torch.save`` archive holding only tensors and a JSON header, read back with
  ``torch.load(weights_only=True)``: no pickled code runs on load. The header holds the format and engine versions,
  the normalization, the metadata and, for each network, its kind (a name in `engine.networks.NETWORK_KINDS`) and
  architecture: ``"kind"`` beside ``"architecture"`` for one model (`SDFModel.save`, `load_model`);
  ``"networks": {name: {"kind": ..., "architecture": {...}}}`` for several sharing one normalization
  (`save_networks`, `load_networks`: evolutions and morphs).
- A fitted model with a colour network (`SDFModel.colors`, `engine.surface_colors`) is saved as named networks
  ``"sdf"`` and ``"colors"`` with ``metadata[COLORS_KEY]``; `load_model` reads both layouts.
- Format 1 (engine 0.1.0) names no kind: its networks are SIRENs, and it is still read.
- A file is untrusted input, checked whole before any network is built (`read_model_file`): a PyTorch zip of at
  most `MAX_MODEL_FILE_BYTES`, read with ``weights_only=True``; a header of the keys and JSON types above and no
  others; what it holds (`FILE_KINDS`: a fitted model, an evolution or a morph, named when it is not what a loader
  wants); a normalization of finite center and positive finite scale; each architecture within the limits of
  `engine.networks` and matching the stored tensors' names and shapes, every weight finite. Anything else is one
  ValueError: "<path> is not a model file written by this engine (what is wrong)".
- Files are written whole or not at all and never through a symlink (`replaced_whole`).
- `reexpressed`: a fitted SIREN moved exactly into another normalization's cube.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import secrets
import zipfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from . import __version__
from .conventions import Normalization
from . import multires  # noqa: F401  (registers the "multires" network kind: every reader of model files knows it)
from .networks import Siren, checked_config, evaluate, network_from_state, network_kind
from .networks import SirenConfig  # noqa: F401  (re-exported for one release: `from engine.model import SirenConfig`)

MODEL_FORMAT_VERSION = 2
"""Bumped when the file layout changes; the readers take every version up to this one. 2: each network names its
kind."""

FORMAT_1_KIND = "siren"
"""The kind of every network of a format-1 file, which names none."""


@dataclass
class SDFModel:
    """A fitted SDF: the network (in unit-cube coordinates) and the way back to the input's coordinates.

    Conventions: negative inside, positive outside; `network` takes unit-cube points, `sdf` takes input points and
    returns distances in input units.
    """

    network: nn.Module
    normalization: Normalization
    metadata: dict = field(default_factory=dict)
    """Free JSON-serializable facts saved with the model (fit settings, source files, training summary)."""
    colors: nn.Module | None = None
    """A colour network c: unit-cube points (n, 3) -> linear RGB (n, 3), constant along the normal near the surface
    (`engine.surface_colors`), or None; with it the file also needs ``metadata[COLORS_KEY]``."""

    @torch.no_grad()
    def sdf(self, points: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """Signed distance (input units, float32) at input-coordinate points (n, 3)."""
        points = np.asanyarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f"points must be (n, 3), got {points.shape}")
        unit = torch.from_numpy(self.normalization.to_unit(points).astype(np.float32))
        return evaluate(self.network, unit, batch_size).numpy() / self.normalization.scale

    def save(self, path: str | Path) -> None:
        """Write the model file (see the module's notes) whole or not at all (`replaced_whole`)."""
        if self.colors is not None:
            if not isinstance(self.metadata.get(COLORS_KEY), dict):
                raise ValueError(
                    f"a model with a colour network needs the facts of its colour fit in metadata[{COLORS_KEY!r}]"
                )
            networks = {SDF_NETWORK: self.network, COLOR_NETWORK: self.colors}
            save_networks(path, networks, self.normalization, self.metadata)
            return
        header = {
            "format_version": MODEL_FORMAT_VERSION,
            "engine_version": __version__,
            "kind": network_kind(self.network),
            "architecture": asdict(self.network.config),
            "normalization": self.normalization.to_dict(),
            "metadata": self.metadata,
        }
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.network.state_dict().items()}
        with replaced_whole(path) as temporary:
            torch.save({"header_json": json.dumps(header), "state_dict": state}, temporary)


@contextmanager
def replaced_whole(path: str | Path) -> Iterator[Path]:
    """A temporary path in ``path``'s folder (same suffix) to write a file to; when the block ends without an error
    it is moved onto ``path`` in one step (``os.replace``), else removed.

    - Readers see the old file or the new one whole, never a part, and an interrupted write leaves the old file.
    - A symlink (or any entry) named ``path`` is replaced itself, never written through: the file lands where
      ``path`` names, never where a link points. A folder named ``path`` is refused (IsADirectoryError).
    """
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        raise IsADirectoryError(f"{path} is a folder; cannot write a file there")
    temporary = path.with_name(f".{path.stem}.{secrets.token_hex(6)}.partial{path.suffix}")
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the usual permissions (umask)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


MAX_MODEL_FILE_BYTES = 2**30
"""Largest model file read (its records unpacked): 1 GiB, a thousand times a default fit's (~0.8 MB), so a file
cannot make the engine read or unpack without bound."""

FILE_KINDS = {
    "model": ("a fitted model", "engine.model.load_model"),
    "evolution": ("an evolution", "engine.evolution.load_evolution"),
    "morph": ("a morph", "engine.morph.load_morph"),
    "image_morph": ("an image morph", "engine.images.morph.load_image_morph"),
}
"""What a model file can hold (`ModelFile.holds`): its name in messages and the function that loads it. A file of
named networks is an image morph when its metadata has the key "image_morph" (`engine.images.morph.IMAGE_MORPH_KEY`),
a morph when it has "morph" (`engine.morph.MORPH_KEY`, checked before "evolution": files of engine 0.1.0 kept a
morph's time axis under "evolution"), an evolution when it has "evolution" (`engine.evolution.EVOLUTION_KEY`), a
fitted model with colours when it has `COLORS_KEY`."""

COLORS_KEY = "surface_colors"
"""Metadata key of a fitted model with a colour network (the facts of its colour fit): a file of named networks that
has it holds a model (`FILE_KINDS`), its networks `SDF_NETWORK` and `COLOR_NETWORK`."""
SDF_NETWORK, COLOR_NETWORK = "sdf", "colors"
COLORED_MODEL_SHAPES = {SDF_NETWORK: (3, 1), COLOR_NETWORK: (3, 3)}
"""The networks of a coloured model file: name -> (inputs, outputs)."""

_HEADER_KEYS = {"format_version", "engine_version", "normalization", "metadata"}


@dataclass(frozen=True)
class ModelFile:
    """A model file read and checked (`read_model_file`), before any network is built."""

    path: Path
    header: dict
    state: dict
    """Tensors by name, as stored."""
    holds: str
    """A key of `FILE_KINDS`."""

    def refusal(self, problem: str) -> ValueError:
        """The one error of a file that does not hold what this engine writes."""
        return not_ours(self.path, problem)

    def single_network(self) -> nn.Module:
        """The network of a single fitted model (``holds == "model"``), checked, then built."""
        kind = self.header.get("kind", FORMAT_1_KIND)
        return self._build(kind, self._config(kind, self.header["architecture"], ""), self.state, "")

    def networks(self, shapes: dict[str, tuple[int, int]] | None = None) -> dict[str, nn.Module]:
        """The named networks of an evolution or a morph, all checked before any is built; ``shapes`` (when given)
        maps the names the file must hold to each network's (inputs, outputs)."""
        entries = self.header["networks"]
        if not isinstance(entries, dict) or not entries or (shapes is not None and set(entries) != set(shapes)):
            found = ", ".join(entries) if isinstance(entries, dict) else repr(entries)
            needed = f"{FILE_KINDS[self.holds][0]} holds the networks {', '.join(shapes)}; " if shapes else ""
            raise self.refusal(f"{needed}this file names the networks {found or 'none'}")
        configs = {}
        for name, entry in entries.items():
            if self.header["format_version"] == 1:  # the entry is the architecture of a SIREN
                entry = {"kind": FORMAT_1_KIND, "architecture": entry}
            if not isinstance(entry, dict) or set(entry) != {"kind", "architecture"}:
                raise self.refusal(f"network {name!r} must name its kind and architecture and nothing else")
            config = self._config(entry["kind"], entry["architecture"], f"network {name!r}: ")
            if shapes is not None and (config.in_features, config.out_features) != tuple(shapes[name]):
                raise self.refusal(
                    f"network {name!r} takes {config.in_features} inputs and gives {config.out_features} outputs; "
                    f"in {FILE_KINDS[self.holds][0]} it takes {shapes[name][0]} and gives {shapes[name][1]}"
                )
            configs[name] = (entry["kind"], config)
        if any(key.partition(".")[0] not in entries for key in self.state):
            raise self.refusal("it holds weights of a network it does not name")
        return {
            name: self._build(
                kind,
                config,
                {key[len(name) + 1 :]: value for key, value in self.state.items() if key.startswith(f"{name}.")},
                f"network {name!r}: ",
            ).eval()
            for name, (kind, config) in configs.items()
        }

    def normalization(self) -> Normalization:
        """The file's normalization, checked (JSON types; finite center, positive finite scale)."""
        data = self.header["normalization"]
        if not isinstance(data, dict) or set(data) != {"center", "scale"}:
            raise self.refusal("its normalization must be a JSON object of a center and a scale")
        center, scale = data["center"], data["scale"]
        numbers = [*center, scale] if isinstance(center, list) else [None]
        if not isinstance(center, list) or len(center) != 3 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers
        ):
            raise self.refusal(f"its normalization must have a center of 3 numbers and a scale, got {data}")
        try:
            return Normalization.from_dict(data)
        except ValueError as error:
            raise self.refusal(f"its normalization: {error}") from None

    def _config(self, kind, architecture, where: str):
        try:
            return checked_config(kind, architecture)
        except ValueError as error:
            if str(error).startswith("unknown network kind"):
                raise ValueError(f"{self.path}: {where}{error}") from None
            raise self.refusal(f"{where}{error}") from None

    def _build(self, kind: str, config, state: dict, where: str) -> nn.Module:
        try:
            return network_from_state(kind, config, state)
        except ValueError as error:
            raise self.refusal(f"{where}{error}") from None


def not_ours(path, problem: str) -> ValueError:
    """The one error of a file that is not a model file written by this engine: its path and what is wrong."""
    return ValueError(f"{path} is not a model file written by this engine ({problem})")


def load_model(path: str | Path) -> SDFModel:
    """Read a model file written by `SDFModel.save`: checked whole (`read_model_file`) before its network is built;
    a file of another kind (an evolution, a morph) is named as what it is."""
    model_file = read_model_file(path, "model")
    metadata = model_file.header["metadata"]
    if "networks" not in model_file.header:
        return SDFModel(model_file.single_network().eval(), model_file.normalization(), metadata)
    if not isinstance(metadata[COLORS_KEY], dict):
        raise model_file.refusal(f"its {COLORS_KEY} must be a JSON object, got {type(metadata[COLORS_KEY]).__name__}")
    networks = model_file.networks(COLORED_MODEL_SHAPES)
    return SDFModel(networks[SDF_NETWORK], model_file.normalization(), metadata, networks[COLOR_NETWORK])


def read_model_file(path: str | Path, expected: str | None = None) -> ModelFile:
    """A model file read without unpickling anything (``torch.load(weights_only=True)``) and its header checked:
    JSON types, required and unknown keys, format version, what it holds (a key of `FILE_KINDS`; when it is not
    ``expected``, the error names what it is and its loader). Its networks are checked when they are built.

    Raises FileNotFoundError for a missing path, ValueError (one line naming the file) for everything else."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a model file")
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    header, state = _read_archive(path)
    refuse = lambda problem: not_ours(path, problem)  # noqa: E731
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise refuse(f"its format_version is {version!r}")
    if version > MODEL_FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by engine {header.get('engine_version')} (format {version}); "
            "update the engine to read it"
        )
    if ("architecture" in header) == ("networks" in header):
        raise refuse("its header must hold either an architecture or named networks")
    single = "architecture" in header
    expected_keys = _HEADER_KEYS | ({"architecture"} | ({"kind"} if version >= 2 else set()) if single else {"networks"})
    missing, unknown = sorted(expected_keys - set(header)), sorted(set(header) - expected_keys)
    if missing or unknown:
        parts = [f"lacks {', '.join(missing)}" if missing else "", f"has unknown {', '.join(unknown)}" if unknown else ""]
        raise refuse(f"its header {' and '.join(p for p in parts if p)}")
    if not isinstance(header["engine_version"], str):
        raise refuse(f"its engine_version must be a string, got {header['engine_version']!r}")
    if not isinstance(header["metadata"], dict):
        raise refuse(f"its metadata must be a JSON object, got {type(header['metadata']).__name__}")
    named_kinds = ("image_morph", "morph", "evolution")  # keys of the metadata, in the order they are looked for
    holds = "model" if single else next((kind for kind in named_kinds if kind in header["metadata"]), None)
    if holds is None and COLORS_KEY in header["metadata"]:
        holds = "model"
    if holds is None:
        raise refuse("its networks are neither an evolution, a morph nor a coloured model")
    model_file = ModelFile(path, header, state, holds)
    model_file.normalization()
    if expected is not None and holds != expected:
        name, loader = FILE_KINDS[holds]
        raise ValueError(f"{path} holds {name}, not {FILE_KINDS[expected][0]}; load it with {loader}")
    return model_file


def _read_archive(path: Path) -> tuple[dict, dict]:
    """The header (a JSON object) and the tensors of a PyTorch zip archive, or a ValueError naming the file."""
    size = path.stat().st_size
    if size == 0:
        raise not_ours(path, "it is empty")
    if not zipfile.is_zipfile(path):
        raise not_ours(path, "it is not a PyTorch archive")
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise not_ours(path, f"its zip archive is damaged: {error}") from None
    if not any(record.filename.endswith("/data.pkl") and record.filename.count("/") == 1 for record in records):
        raise not_ours(path, "it is a zip archive, but not one PyTorch wrote")
    if sum(record.file_size for record in records) > MAX_MODEL_FILE_BYTES or any(
        record.compress_type != zipfile.ZIP_STORED for record in records
    ):
        raise not_ours(
            path, f"it unpacks to more than {MAX_MODEL_FILE_BYTES >> 20} MiB or holds compressed records (a model "
            "file of this engine is far smaller and never compressed)"
        )
    try:
        archive = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # PyTorch's own text would suggest weights_only=False: running the file's code, which this engine never does.
        raise not_ours(path, "it holds pickled Python objects other than tensors, which this engine never loads") from None
    except Exception as error:  # any other failure here means the file is not one of ours
        raise not_ours(path, f"PyTorch cannot read it: {type(error).__name__}") from None
    if not isinstance(archive, dict) or set(archive) != {"header_json", "state_dict"}:
        raise not_ours(path, "it holds no engine header and weights")
    if not isinstance(archive["header_json"], str) or not isinstance(archive["state_dict"], dict):
        raise not_ours(path, "its header must be JSON text and its weights a set of named tensors")
    try:
        header = json.loads(archive["header_json"])
    except (ValueError, RecursionError) as error:
        raise not_ours(path, f"its header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise not_ours(path, "its header is not a JSON object")
    if not all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in archive["state_dict"].items()):
        raise not_ours(path, "its weights must be a set of named tensors")
    return header, archive["state_dict"]


def save_networks(path: str | Path, networks: dict[str, nn.Module], normalization: Normalization, metadata: dict) -> None:
    """Several named networks sharing one normalization in one file (an evolution, a morph), pickle-free, written
    whole or not at all (`replaced_whole`)."""
    header = {
        "format_version": MODEL_FORMAT_VERSION,
        "engine_version": __version__,
        "networks": {
            name: {"kind": network_kind(network), "architecture": asdict(network.config)}
            for name, network in networks.items()
        },
        "normalization": normalization.to_dict(),
        "metadata": metadata,
    }
    states = {
        f"{name}.{key}": tensor.detach().cpu().contiguous()
        for name, network in networks.items()
        for key, tensor in network.state_dict().items()
    }
    with replaced_whole(path) as temporary:
        torch.save({"header_json": json.dumps(header), "state_dict": states}, temporary)


def load_networks(path: str | Path) -> tuple[dict[str, nn.Module], Normalization, dict]:
    """Read a file written by `save_networks` (no pickle), every network checked before any is built. The loaders of
    evolutions and morphs use `read_model_file` and `ModelFile.networks`, which also check the networks' names."""
    model_file = read_model_file(path)
    if model_file.holds == "model" and "networks" not in model_file.header:
        raise ValueError(
            f"{path} holds a fitted model, not a set of networks (an evolution or a morph); load it with "
            "engine.model.load_model"
        )
    return model_file.networks(), model_file.normalization(), model_file.header["metadata"]


def reexpressed(model: SDFModel, normalization: Normalization) -> nn.Module:
    """The model's network in the unit cube of another ``normalization``: an exact change of coordinates (the first
    layer absorbs the scale and shift, the output layer the change of distance unit), so two models fitted apart can
    share one cube (a morph) or a shape can get room to move (an evolution). Supports SIRENs (kind ``siren``) and
    multiresolution SDFs (kind ``multires``: every stage moved, the band half-widths in the new distance unit)."""
    if not isinstance(model.network, (Siren, multires.MultiresSDF)):
        raise ValueError(
            f"only a SIREN (network kind 'siren') or a multires SDF can be re-expressed in other coordinates, got a "
            f"{type(model.network).__name__}"
        )
    if model.network.config.in_features != 3:
        raise ValueError("only a 3D SDF network can be re-expressed in other coordinates")
    own = model.normalization
    # u = (x - c_own) s_own and x = v / s_new + c_new, so u = (s_own / s_new) v + (c_new - c_own) s_own.
    ratio = own.scale / normalization.scale
    shift = (torch.tensor(normalization.center, dtype=torch.float64) - torch.tensor(own.center, dtype=torch.float64)) * own.scale
    network = copy.deepcopy(model.network)
    sirens = network.stages if isinstance(network, multires.MultiresSDF) else [network]
    with torch.no_grad():
        for siren in sirens:
            first = siren.layers[0].linear
            first.bias.add_((first.weight.double() @ shift.to(first.weight.device)).to(first.bias.dtype))
            first.weight.mul_(ratio)
            siren.output.weight.div_(ratio)
            siren.output.bias.div_(ratio)
    for siren in sirens:
        siren.release_first_layer()
    if isinstance(network, multires.MultiresSDF):
        config = network.config
        # The local reach grid's cells are the old cube's: dropped, a tracer then steps on the reaches.
        network.with_deltas([delta / ratio for delta in config.deltas], [reach / ratio for reach in config.reaches])
    return network
