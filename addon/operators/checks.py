"""Small poll() checks that say why a button is disabled (poll_message_set); compose them with ``and``."""

from .. import engine_jobs
from ..properties import has_model, model_file


def no_job_running(cls) -> bool:
    if engine_jobs.job_running():
        cls.poll_message_set("A neural SDF job is running: wait for it, or press Esc to cancel it")
        return False
    return True


def in_object_mode(cls, context) -> bool:
    if context.mode != "OBJECT":
        cls.poll_message_set("Switch to Object Mode")
        return False
    return True


def selected_meshes(cls, context) -> bool:
    if not any(obj.type == "MESH" for obj in context.selected_objects):
        cls.poll_message_set("Select at least one mesh object")
        return False
    return True


def active_mesh(cls, context) -> bool:
    obj = context.active_object
    if obj is None or obj.type != "MESH":
        cls.poll_message_set("Make a mesh object active")
        return False
    if obj.data.library is not None:
        cls.poll_message_set("The active mesh is linked from another file: make it local first (Object > Relations)")
        return False
    return True


def active_model(cls, context) -> bool:
    obj = context.active_object
    if not has_model(obj):
        cls.poll_message_set("The active object has no neural SDF model: make an object from Fit Neural SDF active")
        return False
    return model_file_present(cls, obj)


def model_file_present(cls, obj) -> bool:
    if not model_file(obj).is_file():
        cls.poll_message_set(
            f"The model file of '{obj.name}' is missing ({obj.neural_sdf.model_path}): put the .blend's "
            "_neural_sdf folder back beside it, or fit again"
        )
        return False
    return True
