"""Bad model files (issue 12): malformed headers, garbage, files of another kind and hostile payloads, through every
entry point that reads a model file (load_model, load_evolution, load_morph, a worker job). Each is refused before
any network is built, in one line that names the file: "<path> is not a model file written by this engine (...)",
or what the file holds and how to load it; FileNotFoundError only for a missing path. No pickled code runs, and no
message repeats PyTorch's advice to retry with weights_only=False. A worker job never writes outside its folder.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from engine import protocol
from engine.evolution import load_evolution, save_evolution
from engine.model import load_model, replaced_whole
from engine.morph import load_morph, save_morph
from tests.engine.test_worker import job

DATA = Path(__file__).resolve().parent.parent / "data"
NOT_OURS = "is not a model file written by this engine"
MARKER = "pwned_marker"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Sound files of each kind, written by today's engine (format 2) from the tiny fixtures of tests/data."""
    folder = tmp_path_factory.mktemp("sound")
    paths = {kind: folder / f"{kind}.pt" for kind in ("model", "evolution", "morph")}
    load_model(DATA / "legacy_v1_model.pt").save(paths["model"])
    save_evolution(load_evolution(DATA / "legacy_v1_evolution.pt"), paths["evolution"])
    save_morph(load_morph(DATA / "legacy_v1_morph.pt"), paths["morph"])
    return paths


def rewritten(source: Path, target: Path, header: Callable[[dict], None] | None = None, state=None) -> Path:
    """A copy of a model file with its header (a dict, changed in place) and/or its tensors changed."""
    archive = torch.load(source, weights_only=True)
    found = json.loads(archive["header_json"])
    if header is not None:
        header(found)
    weights = archive["state_dict"] if state is None else state(archive["state_dict"])
    torch.save({"header_json": json.dumps(found), "state_dict": weights}, target)
    return target


class Payload:
    """Runs a shell command when unpickled: what a hostile model file would hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def set_in(path: tuple, value) -> Callable[[dict], None]:
    def change(header: dict) -> None:
        node = header
        for key in path[:-1]:
            node = node[key]
        if value is DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return change


DELETE = object()


def make_zip_of_text(tmp: Path, files) -> Path:
    path = tmp / "notes.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes/readme.txt", "hello")
    return path


def make_compressed(tmp: Path, files) -> Path:
    """A sound model file whose records are deflated: a model file of this engine never is (a zip bomb could be)."""
    path = tmp / "deflated.pt"
    with zipfile.ZipFile(files["model"]) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for record in source.infolist():
            target.writestr(record.filename, source.read(record.filename))
    return path


def make_pickle_file(tmp: Path, files) -> Path:
    path = tmp / "evil_legacy.pt"
    path.write_bytes(pickle.dumps({"header_json": "{}", "state_dict": {}, "x": Payload(tmp / MARKER)}))
    return path


def make_pickle_in_zip(tmp: Path, files) -> Path:
    path = tmp / "evil.pt"
    torch.save({"header_json": "{}", "state_dict": {}, "x": Payload(tmp / MARKER)}, path)
    return path


def make_wide(tmp: Path, files) -> Path:
    """Tiny weights under a header asking for 3000 x 3000 x 8 layers (288 MB that the old loader allocated first)."""
    return rewritten(files["model"], tmp / "wide.pt", set_in(("architecture", "hidden_features"), 3000))


def make_deep(tmp: Path, files) -> Path:
    return rewritten(files["model"], tmp / "deep.pt", set_in(("architecture", "hidden_layers"), 5000))


def make_nan_weights(tmp: Path, files) -> Path:
    def poison(state):
        state = dict(state)
        state["output.bias"] = torch.full_like(state["output.bias"], float("nan"))
        return state

    return rewritten(files["model"], tmp / "nan.pt", state=poison)


def make_extra_archive_key(tmp: Path, files) -> Path:
    archive = torch.load(files["model"], weights_only=True)
    torch.save({**archive, "extra": torch.zeros(1)}, tmp / "extra.pt")
    return tmp / "extra.pt"


def make_header_not_json(tmp: Path, files) -> Path:
    archive = torch.load(files["model"], weights_only=True)
    torch.save({**archive, "header_json": "{not json"}, tmp / "header.pt")
    return tmp / "header.pt"


def header_case(kind: str, change: Callable[[dict], None], name: str) -> Callable:
    return lambda tmp, files: rewritten(files[kind], tmp / f"{name}.pt", change)


def raw(name: str, content: bytes) -> Callable:
    def make(tmp: Path, files) -> Path:
        (tmp / name).write_bytes(content)
        return tmp / name

    return make


def existing(kind: str) -> Callable:
    return lambda tmp, files: files[kind]


def folder(tmp: Path, files) -> Path:
    (tmp / "a_folder.pt").mkdir()
    return tmp / "a_folder.pt"


@dataclass(frozen=True)
class Case:
    name: str
    entry: str
    """load_model, load_evolution, load_morph or worker job (an extract job given the file)."""
    make: Callable[[Path, dict], Path]
    error: type
    expected: str
    """A regex the message must match."""

    def __str__(self) -> str:
        return self.name


LOADERS = {"load_model": load_model, "load_evolution": load_evolution, "load_morph": load_morph}
RANDOM = np.random.default_rng(12).bytes(4096)

CASES = [
    Case("random bytes", "load_model", raw("random.pt", RANDOM), ValueError, f"{NOT_OURS}.*not a PyTorch archive"),
    Case("empty file", "load_model", raw("empty.pt", b""), ValueError, f"{NOT_OURS}.*it is empty"),
    Case("text file", "load_model", raw("notes.pt", b"a model, honest\n"), ValueError, f"{NOT_OURS}.*not a PyTorch"),
    Case("zip of something else", "load_model", make_zip_of_text, ValueError, f"{NOT_OURS}.*not one PyTorch wrote"),
    Case("deflated (zip bomb shape)", "load_model", make_compressed, ValueError, f"{NOT_OURS}.*compressed"),
    Case("a folder", "load_model", folder, ValueError, r"a_folder\.pt is a folder, not a model file"),
    Case("missing path", "load_model", lambda tmp, files: tmp / "gone.pt", FileNotFoundError, "gone.pt does not exist"),
    Case("pickle with os.system (plain pickle)", "load_model", make_pickle_file, ValueError, f"{NOT_OURS}.*not a PyTorch archive"),
    Case("pickle with os.system (torch zip)", "load_model", make_pickle_in_zip, ValueError, f"{NOT_OURS}.*pickled"),
    Case("pickle with os.system, as an evolution", "load_evolution", make_pickle_in_zip, ValueError, NOT_OURS),
    Case("pickle with os.system, as a morph", "load_morph", make_pickle_in_zip, ValueError, NOT_OURS),
    Case("extra record in the archive", "load_model", make_extra_archive_key, ValueError, f"{NOT_OURS}.*no engine header"),
    Case("header is not JSON", "load_model", make_header_not_json, ValueError, f"{NOT_OURS}.*header is not JSON"),
    Case("header lacks normalization", "load_model",
         header_case("model", set_in(("normalization",), DELETE), "nonorm"), ValueError, f"{NOT_OURS}.*lacks normalization"),
    Case("header lacks kind (format 2)", "load_model",
         header_case("model", set_in(("kind",), DELETE), "nokind"), ValueError, f"{NOT_OURS}.*lacks kind"),
    Case("unknown header key", "load_model",
         header_case("model", set_in(("run_this",), "rm -rf"), "unknown"), ValueError, f"{NOT_OURS}.*unknown run_this"),
    Case("unknown architecture key", "load_model",
         header_case("model", set_in(("architecture", "activation"), "relu"), "arch"), ValueError, f"{NOT_OURS}.*unknown activation"),
    Case("format_version is a string", "load_model",
         header_case("model", set_in(("format_version",), "2"), "fmt"), ValueError, f"{NOT_OURS}.*format_version"),
    Case("hidden_features is a string", "load_model",
         header_case("model", set_in(("architecture", "hidden_features"), "16"), "str"), ValueError, f"{NOT_OURS}.*must be an integer"),
    Case("in_features is true", "load_model",
         header_case("model", set_in(("architecture", "in_features"), True), "bool"), ValueError, f"{NOT_OURS}.*must be an integer"),
    Case("metadata is a list", "load_model",
         header_case("model", set_in(("metadata",), []), "meta"), ValueError, f"{NOT_OURS}.*metadata must be a JSON object"),
    Case("width 3000 over tiny weights", "load_model", make_wide, ValueError, f"{NOT_OURS}.*hidden_features is 3000.*2048"),
    Case("5000 layers over tiny weights", "load_model", make_deep, ValueError, f"{NOT_OURS}.*hidden_layers is 5000.*32"),
    Case("shape mismatch", "load_model",
         header_case("model", set_in(("architecture", "hidden_features"), 32), "shape"), ValueError, f"{NOT_OURS}.*has shape"),
    Case("NaN weights", "load_model", make_nan_weights, ValueError, f"{NOT_OURS}.*NaN or infinite weights"),
    Case("first_omega NaN", "load_model",
         header_case("model", set_in(("architecture", "first_omega"), float("nan")), "omega"), ValueError, f"{NOT_OURS}.*first_omega"),
    Case("normalization scale 0", "load_model",
         header_case("model", set_in(("normalization", "scale"), 0.0), "scale0"), ValueError, f"{NOT_OURS}.*scale must be a positive"),
    Case("normalization scale negative", "load_model",
         header_case("model", set_in(("normalization", "scale"), -1.8), "scaleneg"), ValueError, f"{NOT_OURS}.*scale must be a positive"),
    Case("normalization scale inf", "load_model",
         header_case("model", set_in(("normalization", "scale"), float("inf")), "scaleinf"), ValueError, f"{NOT_OURS}.*scale must be a positive"),
    Case("normalization center NaN", "load_model",
         header_case("model", set_in(("normalization", "center"), [0.0, float("nan"), 0.0]), "centernan"), ValueError, f"{NOT_OURS}.*center must be 3 finite"),
    Case("normalization center of 2", "load_model",
         header_case("model", set_in(("normalization", "center"), [0.0, 0.0]), "center2"), ValueError, f"{NOT_OURS}.*center of 3 numbers"),
    Case("an evolution where a fit is expected", "load_model", existing("evolution"), ValueError,
         r"holds an evolution, not a fitted model; load it with engine\.evolution\.load_evolution"),
    Case("a morph where a fit is expected", "load_model", existing("morph"), ValueError,
         r"holds a morph, not a fitted model; load it with engine\.morph\.load_morph"),
    Case("a fit where an evolution is expected", "load_evolution", existing("model"), ValueError,
         r"holds a fitted model, not an evolution; load it with engine\.model\.load_model"),
    Case("a morph where an evolution is expected", "load_evolution", existing("morph"), ValueError,
         r"holds a morph, not an evolution; load it with engine\.morph\.load_morph"),
    Case("a fit where a morph is expected", "load_morph", existing("model"), ValueError, r"holds a fitted model, not a morph"),
    Case("an evolution where a morph is expected", "load_morph", existing("evolution"), ValueError,
         r"holds an evolution, not a morph; load it with engine\.evolution\.load_evolution"),
    Case("evolution without its correction network", "load_evolution",
         header_case("evolution", set_in(("networks", "correction"), DELETE), "nocorr"), ValueError,
         f"{NOT_OURS}.*holds the networks correction, fitted"),
    Case("evolution whose correction takes 3 inputs", "load_evolution",
         header_case("evolution", set_in(("networks", "correction", "architecture", "in_features"), 3), "corr3"),
         ValueError, f"{NOT_OURS}.*'correction' takes 3 inputs"),
    Case("evolution with time_scale 0", "load_evolution",
         header_case("evolution", set_in(("metadata", "time", "time_scale"), 0.0), "time0"), ValueError, f"{NOT_OURS}.*time_scale"),
    Case("evolution with fitted_half_size a string", "load_evolution",
         header_case("evolution", set_in(("metadata", "evolution", "fitted_half_size"), "1"), "half"), ValueError, f"{NOT_OURS}.*fitted_half_size"),
    Case("evolution with copy_read_at_cube a string", "load_evolution",
         header_case("evolution", set_in(("metadata", "evolution", "copy_read_at_cube"), "yes"), "atcube"), ValueError, f"{NOT_OURS}.*copy_read_at_cube"),
    Case("evolution network of 3000 wide", "load_evolution",
         header_case("evolution", set_in(("networks", "fitted", "architecture", "hidden_features"), 3000), "evowide"),
         ValueError, f"{NOT_OURS}.*'fitted'.*hidden_features is 3000"),
    Case("morph of an unknown method", "load_morph",
         header_case("morph", set_in(("metadata", "morph", "method"), "teleport"), "method"), ValueError, f"{NOT_OURS}.*'teleport'"),
    Case("morph with a NaN scale", "load_morph",
         header_case("morph", set_in(("normalization", "scale"), float("nan")), "morphnan"), ValueError, f"{NOT_OURS}.*scale"),
    Case("morph network with unknown kind", "load_morph",
         header_case("morph", set_in(("networks", "source", "kind"), "hash_grid"), "kind"), ValueError,
         r"unknown network kind 'hash_grid'.*update the engine"),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_bad_model_file_is_refused_in_one_line_naming_it(case: Case, files, tmp_path):
    path = case.make(tmp_path, files)
    started = time.perf_counter()
    with pytest.raises(case.error, match=case.expected) as caught:
        LOADERS[case.entry](path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and "weights_only" not in message
    assert time.perf_counter() - started < 5.0  # refused before any large network is built
    assert not (tmp_path / MARKER).exists()


WORKER_CASES = [
    Case("an evolution given to extract", "worker job", existing("evolution"), ValueError, "holds an evolution, not a fitted model"),
    Case("a pickle payload given to extract", "worker job", make_pickle_in_zip, ValueError, f"{NOT_OURS}.*pickled"),
    Case("a folder given to extract", "worker job", folder, ValueError, "is a folder, not a model file"),
    Case("a 5000-layer header given to extract", "worker job", make_deep, ValueError, "hidden_layers is 5000"),
]


@pytest.mark.parametrize("case", WORKER_CASES, ids=str)
def test_a_worker_job_given_a_bad_model_file_fails_with_the_same_line(case: Case, worker, files, tmp_path):
    path = case.make(tmp_path, files)
    (tmp_path / "job").mkdir()
    worker.send(job("bad", "extract", tmp_path / "job", model=str(path), resolution=16, device="cpu"))
    message, _ = worker.until_end_of_job("bad")
    assert message["type"] == "error", message
    assert __import__("re").search(case.expected, message["message"]) and "weights_only" not in message["message"]
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize("name", [protocol.OUTPUTS_FILENAME, protocol.MODEL_FILENAME])
def test_a_worker_job_never_writes_through_a_link_in_its_folder(name, worker, files, tmp_path):
    """A link named like a job's output, pointing outside the job folder, is refused before the job runs; the file
    it points at stays as it was."""
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    folder_ = tmp_path / "job"
    folder_.mkdir()
    (folder_ / name).symlink_to(outside)
    worker.send(job("link", "extract", folder_, model=str(files["model"]), resolution=16, device="cpu"))
    message, _ = worker.until_end_of_job("link")
    assert message["type"] == "error" and "outside" in message["message"], message
    assert outside.read_text() == "keep me"


def test_saving_replaces_a_link_instead_of_writing_through_it(files, tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    (tmp_path / "model.pt").symlink_to(outside)
    load_model(files["model"]).save(tmp_path / "model.pt")
    assert outside.read_text() == "keep me" and not (tmp_path / "model.pt").is_symlink()
    assert load_model(tmp_path / "model.pt").metadata == load_model(files["model"]).metadata
    with pytest.raises(RuntimeError), replaced_whole(tmp_path / "other.pt") as temporary:
        temporary.write_text("half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "precious.txt"]  # nothing half-written left


def test_files_are_told_apart_by_the_keys_the_evolution_and_the_morph_write():
    from engine.evolution import EVOLUTION_KEY
    from engine.model import FILE_KINDS
    from engine.images.morph import IMAGE_MORPH_KEY
    from engine.morph import MORPH_KEY

    assert {EVOLUTION_KEY, MORPH_KEY, IMAGE_MORPH_KEY} == set(FILE_KINDS) - {"model"}


def test_a_saved_file_gets_the_usual_permissions(files, tmp_path):
    load_model(files["model"]).save(tmp_path / "model.pt")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "model.pt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_every_case_of_the_matrix_is_named_once():
    names = [case.name for case in CASES + WORKER_CASES]
    assert len(names) == len(set(names)) and len(names) >= 25
