"""The live preview of a fit (issue 14): the surface as it forms, in a temporary object that the final result
replaces.

- The engine writes a low-resolution surface into the job's folder every few seconds (`INTERVAL_S`, the fit job's
  ``preview_interval``) and numbers it in its progress messages; `show` puts it into one preview object, named
  after the source with `SUFFIX`, drawn as a wireframe, neither selectable nor rendered, linked to the scene's own
  collection and placed in the frame the result will have (the source's transform).
- The preview object and its mesh carry the `MARK` property; `remove_all` deletes every such object and mesh. The fit
  calls it at every end (before the result is written, so the undo step of the fit holds only the result; on
  cancel, failure, and when Blender drops the operator); the load, save and undo handlers and the add-on's
  unregister call it too, so a preview is never saved, never comes back with an undo step, and no mesh is orphaned.
- A preview file that cannot be read or holds bad arrays (`job_files.mesh_arrays` checks them) is ignored: a
  preview never fails a fit.
"""

import bpy
from bpy.app.handlers import persistent

from . import engine_jobs, scene_io
from .core import job_files
from .core.errors import EngineError

INTERVAL_S = 3.0
"""Seconds between previews the fit asks the engine for (the engine also keeps them to about 5 % of the training
time)."""
SUFFIX = " (fitting preview)"
MARK = "neural_sdf_preview"
"""Custom property on the preview object and its mesh."""


def show(context: bpy.types.Context, source_name: str, path, frame) -> bool:
    """Show the surface in the preview file ``path`` (world coordinates, as the fit's result) in the preview object,
    placed at ``frame`` (its vertices moved into that frame, as the result's are). Returns False, changing nothing,
    when the file cannot be read or its arrays are bad."""
    try:
        vertices, faces = job_files.mesh_arrays(job_files.read_npz(path))
    except EngineError:
        return False
    name = f"{source_name}{SUFFIX}"
    local = scene_io.transform_points(scene_io.matrix_array(frame.inverted()), vertices)
    mesh = scene_io.new_mesh(name, local, faces)
    mesh[MARK] = True
    obj = _preview_object(context)
    if obj is None:
        obj = bpy.data.objects.new(name, mesh)
        obj[MARK] = True
        obj.display_type = "WIRE"
        obj.hide_select = True
        obj.hide_render = True
        context.scene.collection.objects.link(obj)
    else:
        old = obj.data
        obj.data = mesh
        if old is not None and old.users == 0:
            bpy.data.meshes.remove(old)
        obj.name = name
    mesh.name = name
    obj.matrix_world = frame
    return True


def remove_all() -> None:
    """Delete every preview object and preview mesh (in the current file)."""
    for obj in [obj for obj in bpy.data.objects if obj.get(MARK)]:
        bpy.data.objects.remove(obj, do_unlink=True)
    for mesh in [mesh for mesh in bpy.data.meshes if mesh.get(MARK)]:
        bpy.data.meshes.remove(mesh, do_unlink=True)


def _preview_object(context: bpy.types.Context):
    for obj in context.scene.collection.objects:
        if obj.get(MARK):
            return obj
    return None


@persistent
def remove_previews(*_unused) -> None:
    """save_pre and load_pre handler: a file saved during a fit holds no preview (the next one comes back in the
    scene), and File > New or Open leaves none behind in the file it drops."""
    remove_all()


@persistent
def remove_stale(*_unused) -> None:
    """load_post, undo_post and redo_post handler: a preview outside a running fit (one an undo step taken during a
    fit brought back, or one in a file saved by a crashed session) is removed."""
    if not engine_jobs.job_running():
        remove_all()
