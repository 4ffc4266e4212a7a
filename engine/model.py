"""Fitted models and their pickle-free files.

- `SDFModel`: a network in unit-cube coordinates, the `Normalization` back to the input's, and free metadata.
- A model file is one ``torch.save`` archive holding only tensors and a JSON header, read back with
  ``torch.load(weights_only=True)``: no pickled code runs on load. The header holds the format and engine versions,
  the normalization, the metadata and, for each network, its kind (a name in `engine.networks.NETWORK_KINDS`) and
  architecture: ``"kind"`` beside ``"architecture"`` for one model (`SDFModel.save`, `load_model`);
  ``"networks": {name: {"kind": ..., "architecture": {...}}}`` for several sharing one normalization
  (`save_networks`, `load_networks`: evolutions and morphs).
- Format 1 (engine 0.1.0) names no kind: its networks are SIRENs, and it is still read.
- `reexpressed`: a fitted SIREN moved exactly into another normalization's cube.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .conventions import Normalization
from .networks import Siren, build_network, evaluate, network_kind
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

    @torch.no_grad()
    def sdf(self, points: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """Signed distance (input units, float32) at input-coordinate points (n, 3)."""
        points = np.asanyarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f"points must be (n, 3), got {points.shape}")
        unit = torch.from_numpy(self.normalization.to_unit(points).astype(np.float32))
        return evaluate(self.network, unit, batch_size).numpy() / self.normalization.scale

    def save(self, path: str | Path) -> None:
        header = {
            "format_version": MODEL_FORMAT_VERSION,
            "engine_version": __version__,
            "kind": network_kind(self.network),
            "architecture": asdict(self.network.config),
            "normalization": self.normalization.to_dict(),
            "metadata": self.metadata,
        }
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.network.state_dict().items()}
        torch.save({"header_json": json.dumps(header), "state_dict": state}, Path(path))


def load_model(path: str | Path) -> SDFModel:
    """Read a model file written by `SDFModel.save` (no pickle: ``weights_only=True``)."""
    header, state = _read_archive(path)
    if "architecture" not in header:
        raise ValueError(f"{path} holds a morph, not a fitted model; load it with engine.morph.load_morph")
    network = build_network(header.get("kind", FORMAT_1_KIND), header["architecture"])
    network.load_state_dict(state)
    network.eval()
    return SDFModel(network, Normalization.from_dict(header["normalization"]), header.get("metadata", {}))


def _read_archive(path: str | Path) -> tuple[dict, dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        archive = torch.load(path, map_location="cpu", weights_only=True)
        header = json.loads(archive["header_json"])
    except Exception as error:  # any failure here means the file is not one of ours
        raise ValueError(f"{path} is not a neural SDF model file ({error})") from error
    if header.get("format_version", 0) > MODEL_FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by engine {header.get('engine_version')} (format {header['format_version']}); "
            "update the engine to read it"
        )
    return header, archive["state_dict"]


def save_networks(path: str | Path, networks: dict[str, nn.Module], normalization: Normalization, metadata: dict) -> None:
    """Several named networks sharing one normalization in one file (an evolution, a morph), pickle-free."""
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
    torch.save({"header_json": json.dumps(header), "state_dict": states}, Path(path))


def load_networks(path: str | Path) -> tuple[dict[str, nn.Module], Normalization, dict]:
    """Read a file written by `save_networks` (no pickle)."""
    header, states = _read_archive(path)
    if "networks" not in header:
        raise ValueError(f"{path} holds a single fitted model, not a set of networks (a morph); load it with load_model")
    networks = {}
    for name, entry in header["networks"].items():
        if header["format_version"] == 1:  # the entry is the architecture of a SIREN
            entry = {"kind": FORMAT_1_KIND, "architecture": entry}
        network = build_network(entry["kind"], entry["architecture"])
        prefix = f"{name}."
        network.load_state_dict({key[len(prefix) :]: value for key, value in states.items() if key.startswith(prefix)})
        networks[name] = network.eval()
    return networks, Normalization.from_dict(header["normalization"]), header.get("metadata", {})


def reexpressed(model: SDFModel, normalization: Normalization) -> Siren:
    """The model's network in the unit cube of another ``normalization``: an exact change of coordinates (the first
    layer absorbs the scale and shift, the output layer the change of distance unit), so two models fitted apart can
    share one cube (a morph) or a shape can get room to move (an evolution). Supports SIRENs (kind ``siren``)."""
    if not isinstance(model.network, Siren):
        raise ValueError(
            f"only a SIREN (network kind 'siren') can be re-expressed in other coordinates, got a "
            f"{type(model.network).__name__}"
        )
    if model.network.config.in_features != 3:
        raise ValueError("only a 3D SDF network can be re-expressed in other coordinates")
    own = model.normalization
    # u = (x - c_own) s_own and x = v / s_new + c_new, so u = (s_own / s_new) v + (c_new - c_own) s_own.
    ratio = own.scale / normalization.scale
    shift = (torch.tensor(normalization.center, dtype=torch.float64) - torch.tensor(own.center, dtype=torch.float64)) * own.scale
    network = copy.deepcopy(model.network)
    first = network.layers[0].linear
    with torch.no_grad():
        first.bias.add_((first.weight.double() @ shift.to(first.weight.device)).to(first.bias.dtype))
        first.weight.mul_(ratio)
        network.output.weight.div_(ratio)
        network.output.bias.div_(ratio)
    return network
