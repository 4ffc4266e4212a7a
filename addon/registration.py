"""Registering the add-on with Blender: classes, the property groups on Blender's types, the save and load
handlers."""

import bpy

from . import engine_jobs, model_store, operators, panels, preferences, preview, properties
from .operators import image_registration

classes = (*properties.classes, *preferences.classes, *operators.classes, *panels.classes, *image_registration.classes)
ATTACHED = (*properties.ATTACHED, *image_registration.ATTACHED)
HANDLERS = (
    ("save_pre", model_store.gather_models_beside_blend),
    ("save_pre", preview.remove_previews),
    ("save_post", model_store.restore_paths_after_copy),
    ("load_pre", engine_jobs.stop_jobs_before_load),
    ("load_pre", preview.remove_previews),
    ("load_post", engine_jobs.clear_status_after_load),
    ("load_post", preview.remove_stale),
    ("undo_post", preview.remove_stale),
    ("redo_post", preview.remove_stale),
    *image_registration.HANDLERS,
)
"""Which of bpy.app.handlers each handler goes to."""


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    for owner, name, group in ATTACHED:
        setattr(owner, name, bpy.props.PointerProperty(type=group))
    for name, handler in HANDLERS:
        getattr(bpy.app.handlers, name).append(handler)
    image_registration.register_drawing()


def unregister():
    engine_jobs.stop_all()
    preview.remove_all()
    engine_jobs.stop_warm_worker()
    image_registration.unregister_drawing()
    for name, handler in HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        if handler in handlers:
            handlers.remove(handler)
    for owner, name, _ in reversed(ATTACHED):
        delattr(owner, name)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
