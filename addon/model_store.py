"""Model files and the .blend: a new model goes beside the saved .blend (or into the cache folder until the first
save), and every save gathers the models of the file beside it with relative paths (see `core.model_files`); a Save
a Copy gives the copy its own models and leaves the open file's paths as they were. A save copies only model files
the add-on wrote, from those two folders: any other path an object holds is kept as it is, and said once."""

import shutil
from pathlib import Path

import bpy
from bpy.app.handlers import persistent

from . import preferences
from .core.errors import EngineError
from .core.folders import CHOOSE_CACHE, SAVE_ELSEWHERE, check_folder_can_be_made, make_folder
from .core.model_files import blend_relative, gather_models, model_filename, models_dir_beside
from .properties import model_holders, stored_file

MODELS_DIRNAME = "models"
LOG_PREFIX = "Neural SDF: "


def models_dir(context: bpy.types.Context) -> Path:
    """Where a new model goes: beside the saved .blend, else the cache's models folder."""
    if bpy.data.filepath:
        return models_dir_beside(Path(bpy.data.filepath))
    return preferences.cache_dir(preferences.get(context)) / MODELS_DIRNAME


def check_models_dir(context: bpy.types.Context) -> None:
    """Before a job that makes a model: raise `EngineError` if the model could not be kept afterwards. The cache's
    models folder is made now; the folder beside a .blend only when a model goes into it."""
    if bpy.data.filepath:
        check_folder_can_be_made(models_dir(context), "models folder beside the .blend", SAVE_ELSEWHERE)
    else:
        make_folder(models_dir(context), "models folder in the cache", CHOOSE_CACHE)


def keep_model(context: bpy.types.Context, job_file: Path, object_name: str) -> str:
    """Move a model out of its job directory to where the .blend keeps it; returns the path to store."""
    target = models_dir(context) / model_filename(object_name)
    saved = bool(bpy.data.filepath)
    if saved:
        make_folder(target.parent, "models folder beside the .blend", SAVE_ELSEWHERE)
    else:
        make_folder(target.parent, "models folder in the cache", CHOOSE_CACHE)
    try:
        shutil.move(job_file, target)
    except OSError as error:
        raise EngineError(
            f"The model could not be stored in {target.parent} ({error.strerror or error}): save the .blend in a "
            "writable folder, or choose another cache folder in the add-on preferences"
        ) from error
    return blend_relative(target, Path(bpy.data.filepath)) if saved else str(target)


_paths_before_save: dict[tuple[str, int], str] = {}
"""Model paths as they were before the save in progress, by object name and index in its `model_holders` (restored
after a Save a Copy)."""


@persistent
def gather_models_beside_blend(filepath: str, *_unused) -> None:
    """save_pre handler: copy the file's models beside the .blend being written and store relative paths."""
    _paths_before_save.clear()
    if not filepath:
        return
    blend = Path(filepath)
    sources = {
        (obj.name, index): (holder, stored_file(obj, holder.model_path))
        for obj in bpy.data.objects
        if obj.library is None
        for index, holder in enumerate(model_holders(obj))
        if holder.model_path
    }
    target_dir = models_dir_beside(blend)
    gathered = gather_models([source for _, source in sources.values()], target_dir, allowed_model_dirs(target_dir))
    for key, (holder, source) in sources.items():
        if source in gathered.moved:
            _paths_before_save[key] = holder.model_path
            holder.model_path = blend_relative(gathered.moved[source], blend)
    users = {
        source: sorted({name for (name, _), (_, path) in sources.items() if path == source})
        for source in gathered.refused
    }
    _tell_refused(blend, gathered.refused, users)


_told: set[tuple[Path, str]] = set()
"""Refused model paths already printed in this Blender session (each is said once)."""


def allowed_model_dirs(target_dir: Path) -> list[Path]:
    """The folders a save copies models from: the cache's models folder, the open file's models folder and the one
    of the file being written."""
    allowed = [target_dir]
    if bpy.data.filepath:
        allowed.append(models_dir_beside(Path(bpy.data.filepath)))
    try:
        allowed.append(preferences.cache_dir(preferences.get(bpy.context)) / MODELS_DIRNAME)
    except (KeyError, AttributeError, OSError):
        pass  # no preferences (the add-on is being disabled): nothing comes from the cache
    return allowed


def _tell_refused(blend: Path, refused: dict[Path, str], users: dict[Path, list[str]]) -> None:
    """A save handler cannot report to the UI: print one line per refused path (once per session) and leave a
    status line for the panel."""
    for source, why in sorted(refused.items()):
        if (source, why) not in _told:
            _told.add((source, why))
            print(
                f"{LOG_PREFIX}WARNING: saving {blend.name} did not copy {source} for "
                f"{', '.join(repr(name) for name in users[source])}: it {why}. The object keeps its path",
                flush=True,
            )
    status = getattr(bpy.context.window_manager, "neural_sdf_job", None)
    if status is not None:
        status.save_warning = (
            f"Saving did not copy {len(refused)} model path{'s' if len(refused) > 1 else ''} (see the system console)"
            if refused
            else ""
        )


@persistent
def restore_paths_after_copy(filepath: str, *_unused) -> None:
    """save_post handler: after Save a Copy the open file is still the old one, so its objects get their paths back
    (the copy keeps the paths to its own models)."""
    if filepath and bpy.data.filepath and Path(bpy.data.filepath) != Path(filepath):
        for (name, index), path in _paths_before_save.items():
            if name in bpy.data.objects:
                model_holders(bpy.data.objects[name])[index].model_path = path
    _paths_before_save.clear()
