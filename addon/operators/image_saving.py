"""Saving a .blend keeps what the Image Editor's operators made beside it, as `model_store` does for the 3D models:
the image models (Image.neural_sdf_image.model_path) and a morph's frames folder, which waits in the cache until
the file is first saved. Its image sequence and its Video Sequencer strips then point to the copy, by paths relative
to the .blend; after a Save a Copy the open file's paths are put back. Only folders the add-on wrote are copied
(`model_store.allowed_model_dirs`), and of them only the frame files."""

import os
import shutil
import tempfile
from pathlib import Path

import bpy
from bpy.app.handlers import persistent

from .. import model_store
from ..core.images import FRAME_FILENAME
from ..core.model_files import blend_relative, gather_models, models_dir_beside
from .image_common import image_model_file

FRAME_PREFIX = FRAME_FILENAME.split("{", 1)[0]
"""How every frame file's name starts (`FRAME_FILENAME`)."""

_paths_before_save: list[tuple[object, str, str]] = []
"""(data-block, property, value before the save in progress) for each path a save changed (restored after a Save a
Copy)."""


def _set_path(owner, name: str, value: str) -> None:
    _paths_before_save.append((owner, name, getattr(owner, name)))
    setattr(owner, name, value)


@persistent
def gather_image_models(filepath: str, *_unused) -> None:
    """save_pre handler: the image models and the morphs' frames join the .blend's models folder."""
    _paths_before_save.clear()
    if not filepath:
        return
    blend = Path(filepath)
    target_dir = models_dir_beside(blend)
    allowed = model_store.allowed_model_dirs(target_dir)
    holders = [image for image in bpy.data.images if image.library is None and image.neural_sdf_image.model_path]
    sources = {image.name: image_model_file(image) for image in holders}
    gathered = gather_models(list(sources.values()), target_dir, allowed)
    for image in holders:
        source = sources[image.name]
        if source in gathered.moved:
            _set_path(image.neural_sdf_image, "model_path", blend_relative(gathered.moved[source], blend))
    for source, why in sorted(gathered.refused.items()):
        print(f"{model_store.LOG_PREFIX}WARNING: saving {blend.name} did not copy the image model {source}: it {why}")
    for image in holders:
        if image.neural_sdf_image.kind == "MORPH" and image.source == "SEQUENCE":
            _gather_frames(image, blend, target_dir, allowed)


def _gather_frames(sequence: bpy.types.Image, blend: Path, target_dir: Path, allowed: list[Path]) -> None:
    """Copy a morph's frames folder into ``target_dir`` when it lies in another of the ``allowed`` folders (the
    cache's, the open file's), and point the sequence and the strips that show it to the copy."""
    first = Path(bpy.path.abspath(sequence.filepath))
    folder = first.parent
    if not folder.is_dir() or folder.resolve().parent not in {Path(root).resolve() for root in allowed}:
        return  # moved or deleted by the user, or not the add-on's: left as it is
    copy = target_dir / folder.name
    if folder.resolve() != copy.resolve():
        try:
            _copy_frames(folder, copy)
        except OSError as error:
            print(f"{model_store.LOG_PREFIX}WARNING: saving {blend.name} did not copy the frames {folder} of "
                  f"'{sequence.name}' ({error.strerror or error}): the sequence keeps its path")  # fmt: skip
            return
    _set_path(sequence, "filepath", _data_path(copy / first.name, blend))
    for scene in bpy.data.scenes:
        editor = scene.sequence_editor
        if editor is None:
            continue
        for strip in editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all:
            if strip.type == "IMAGE" and _same_folder(bpy.path.abspath(strip.directory), folder):
                _set_path(strip, "directory", _data_path(copy, blend) + "/")


def _copy_frames(folder: Path, copy: Path) -> None:
    """The frame files of ``folder`` into the new folder ``copy`` (made whole under a temporary name, then renamed,
    so a failed copy leaves nothing); an existing ``copy`` is kept (an earlier save made it)."""
    if copy.is_dir():
        return
    copy.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".frames-", dir=copy.parent))
    try:
        for frame in sorted(folder.iterdir()):
            if frame.name.startswith(FRAME_PREFIX) and frame.suffix == ".png" and frame.is_file():
                shutil.copyfile(frame, scratch / frame.name)
        os.replace(scratch, copy)
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def _data_path(path: Path, blend: Path) -> str:
    """``path`` as a data-block's file path in the .blend being written: Blender rebases relative paths of its data
    from the open file's folder to the written file's after save_pre, so they are given relative to the open file
    (to the written one when the open file was never saved, and nothing is rebased)."""
    if bpy.data.filepath:
        return bpy.path.relpath(str(path))
    return blend_relative(path, blend)


def _same_folder(path: str, folder: Path) -> bool:
    try:
        return Path(path).resolve() == folder.resolve()
    except OSError:
        return False


@persistent
def restore_image_model_paths(filepath: str, *_unused) -> None:
    """save_post handler: after Save a Copy the open file's images and strips get their paths back."""
    if filepath and bpy.data.filepath and Path(bpy.data.filepath) != Path(filepath):
        for owner, name, value in _paths_before_save:
            try:
                setattr(owner, name, value)
            except ReferenceError:
                continue  # removed by another save handler: nothing to restore
    _paths_before_save.clear()


HANDLERS = (("save_pre", gather_image_models), ("save_post", restore_image_model_paths))
