"""Where trained models live on disk.

A model is a file beside the .blend, in a folder named after it (``scene.blend`` -> ``scene_neural_sdf/``), and
the object that uses it holds a Blender-relative path (``//scene_neural_sdf/Bunny-1a2b3c4d.pt``). Move the folder
with the .blend. Models made before the file was first saved sit in the cache folder until the save copies them
beside it; a Save As copies them beside the new file.
"""

from __future__ import annotations

import re
import shutil
import uuid
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


def gather_models(sources: Iterable[Path], target_dir: Path) -> dict[Path, Path]:
    """Copy each existing model file into ``target_dir`` unless it is there already; returns where each one now
    is. Missing files are left out, so their users keep the old path (and show it as missing)."""
    moved = {}
    for source in set(sources):
        if not source.is_file():
            continue
        target = target_dir / source.name
        if source.resolve() != target.resolve():
            target_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        moved[source] = target
    return moved
