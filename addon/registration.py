"""Registering the add-on with Blender: classes, the property groups on Blender's types, the save handler."""

import bpy

from . import engine_jobs, model_store, operators, panels, preferences, properties

classes = (*properties.classes, *preferences.classes, *operators.classes, *panels.classes)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    for owner, name, group in properties.ATTACHED:
        setattr(owner, name, bpy.props.PointerProperty(type=group))
    bpy.app.handlers.save_pre.append(model_store.gather_models_beside_blend)
    bpy.app.handlers.save_post.append(model_store.restore_paths_after_copy)


def unregister():
    engine_jobs.stop_all()
    for handlers, handler in (
        (bpy.app.handlers.save_pre, model_store.gather_models_beside_blend),
        (bpy.app.handlers.save_post, model_store.restore_paths_after_copy),
    ):
        if handler in handlers:
            handlers.remove(handler)
    for owner, name, _ in reversed(properties.ATTACHED):
        delattr(owner, name)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
