"""Where trained models live on disk.

A model is a file beside the .blend, in a folder named after it (``scene.blend`` -> ``scene_neural_sdf/``), and
the object that uses it holds a Blender-relative path (``//scene_neural_sdf/Bunny-1a2b3c4d.pt``). Move the folder
with the .blend. Models made before the file was first saved sit in the cache folder until the save copies them
beside it; a Save As copies them beside the new file. Only model archives from those two places are ever copied
(`gather_models`): a .blend is plain data, and its paths may name any file.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

MODEL_SUFFIX = ".pt"


def model_filename(object_name: str) -> str:
    """A new file name for a model of ``object_name``: readable, and unique so that no model is overwritten."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", object_name).strip("._") or "model"
    return f"{readable}-{uuid.uuid4().hex[:8]}{MODEL_SUFFIX}"


def models_dir_beside(blend_path: Path) -> Path:
    return blend_path.parent / f"{blend_path.stem}_neural_sdf"


def blend_relative(path: Path, blend_path: Path) -> str:
    """Blender's relative form (``//folder/file``) of a path inside the .blend's folder."""
    return "//" + path.relative_to(blend_path.parent).as_posix()


MAX_MODEL_BYTES = 2**30
"""Largest model file gathered beside a .blend: 1 GiB, the largest the engine reads (its ``MAX_MODEL_FILE_BYTES``;
a default fit takes under a megabyte)."""
_ARCHIVE_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class Gathered:
    """What `gather_models` did: where each gathered model now is, and why each other one was left where it was."""

    moved: dict[Path, Path] = field(default_factory=dict)
    refused: dict[Path, str] = field(default_factory=dict)
    """Source path -> why it was not copied ("is outside ...", "is not a model file ...")."""


def gather_models(sources: Iterable[Path], target_dir: Path, allowed_dirs: Iterable[Path]) -> Gathered:
    """Copy each model file into ``target_dir`` unless it is there already; returns where each one now is and why
    the others were not copied. Only files the add-on wrote are copied: a model archive (`model_archive_problem`)
    directly inside one of ``allowed_dirs`` (the cache's models folder, the .blend's own models folder) once links
    are followed. Anything else a path may name (``/etc/passwd``, a key in the home folder, another .blend's models)
    is refused, so a crafted .blend cannot make a save copy it. Missing files are left out silently: their users keep
    the old path (and show it as missing). Copies go through a temporary name, so a link in ``target_dir`` is
    replaced, never written through."""
    roots = {Path(root).resolve() for root in allowed_dirs}
    gathered = Gathered()
    for source in set(sources):
        if not os.path.lexists(source):
            continue
        resolved = source.resolve()
        if resolved.parent not in roots:
            shown = "" if resolved == Path(os.path.abspath(source)) else f" (it leads to {resolved})"
            gathered.refused[source] = (
                f"is outside the add-on's models folders{shown}: only models the add-on wrote are copied"
            )
            continue
        problem = model_archive_problem(resolved)
        if problem is not None:
            gathered.refused[source] = problem
            continue
        target = target_dir / source.name
        if resolved != target.resolve():
            try:
                target_dir.mkdir(parents=True, exist_ok=True)
                partial = target_dir / f".{source.name}.{uuid.uuid4().hex[:8]}.partial"
                try:
                    shutil.copy2(resolved, partial)
                    os.replace(partial, target)
                finally:
                    if os.path.lexists(partial):
                        partial.unlink()
            except OSError as error:
                gathered.refused[source] = f"could not be copied into {target_dir} ({error.strerror or error})"
                continue
        gathered.moved[source] = target
    return gathered


def model_archive_problem(path: Path) -> str | None:
    """None when ``path`` looks like a model file the engine wrote, else what is wrong with it. A model file is a
    ``torch.save`` archive: an uncompressed-or-not zip, starting at its first byte, whose entries all sit in one
    folder ``<name>/`` holding the pickle-free header's ``data.pkl`` and the tensors' ``data/<key>`` records, stored
    uncompressed. Only the zip directory is read: nothing is unpickled (the add-on never imports torch), and the
    sizes are bounded by `MAX_MODEL_BYTES`."""
    not_model = "is not a model file written by this add-on"
    limit = f"{MAX_MODEL_BYTES >> 20} MiB"
    try:
        if not path.is_file():
            return f"{not_model} (not a regular file)"
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            return f"{not_model} ({size:,} bytes, more than the {limit} a model can take)"
        with path.open("rb") as file:
            if file.read(len(_ARCHIVE_MAGIC)) != _ARCHIVE_MAGIC:
                return f"{not_model} (not a model archive)"
            with zipfile.ZipFile(file) as archive:
                entries = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError) as error:
        return f"{not_model} (unreadable: {error})"
    names = [entry.filename for entry in entries]
    folders = {name.split("/", 1)[0] for name in names}
    if len(folders) != 1 or any("/" not in name for name in names):
        return f"{not_model} (a zip, but not a model archive: its entries are not in one folder)"
    (folder,) = folders
    if f"{folder}/data.pkl" not in names or not any(name.startswith(f"{folder}/data/") for name in names):
        return f"{not_model} (a zip, but not a model archive: no data.pkl with data/ records)"
    if any(".." in name.split("/") or name.startswith("/") for name in names):
        return f"{not_model} (a zip with entries outside its folder)"
    if sum(entry.file_size for entry in entries) > MAX_MODEL_BYTES:
        return f"{not_model} (its entries unpack to more than {limit})"
    if any(entry.compress_type != zipfile.ZIP_STORED for entry in entries):
        return f"{not_model} (a zip, but not a model archive: compressed records)"
    return None
