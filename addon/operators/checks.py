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
    if not selected_mesh_objects(context):
        cls.poll_message_set("Select at least one mesh object")
        return False
    return True


def selected_fit_sources(cls, context) -> bool:
    if not fit_source_objects(context):
        cls.poll_message_set("Select at least one mesh object or point cloud")
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


def model_owner(context):
    """The object whose model the active mesh is coloured, baked or traced from: its own, else the panel's Model
    object (None when neither has one)."""
    target = context.active_object
    return target if has_model(target) else context.scene.neural_sdf.model_object


def model_for_active_mesh(cls, context) -> bool:
    owner = model_owner(context)
    if owner is None:
        cls.poll_message_set("The active object has no neural SDF model: fit one, or pick a Model object in the panel")
        return False
    return model_file_present(cls, owner)


def model_file_present(cls, obj) -> bool:
    if not model_file(obj).is_file():
        cls.poll_message_set(
            f"The model file of '{obj.name}' is missing ({obj.neural_sdf.model_path}): put the .blend's "
            "_neural_sdf folder back beside it, or fit again"
        )
        return False
    return True


def morph_pair(cls, context) -> bool:
    """Exactly two selected meshes, one of them active (the target)."""
    meshes = selected_mesh_objects(context)
    if len(meshes) != 2:
        chosen = ", ".join(f"'{obj.name}'" for obj in meshes[:4]) + (" ..." if len(meshes) > 4 else "")
        cls.poll_message_set(
            f"Select exactly two mesh objects, the source and then the target (active); {len(meshes)} "
            f"{'is' if len(meshes) == 1 else 'are'} selected" + (f" ({chosen})" if meshes else "")
        )
        return False
    if source_and_target(context) is None:
        active = context.active_object
        what = f"'{active.name}' is" if active is not None else "no object is"
        cls.poll_message_set(
            f"The target is the active object, but {what} not one of the two selected meshes "
            f"('{meshes[0].name}', '{meshes[1].name}'): shift-click the target last to make it active"
        )
        return False
    return True


def source_and_target(context) -> tuple | None:
    """The morph's source (the selected mesh that is not active) and target (the active mesh), when exactly two
    meshes are selected and one of them is active."""
    meshes = selected_mesh_objects(context)
    target = context.active_object
    if len(meshes) != 2 or target not in meshes:
        return None
    return meshes[0] if meshes[1] == target else meshes[1], target


def selected_mesh_objects(context) -> list:
    return [obj for obj in context.selected_objects if obj.type == "MESH"]


def fit_source_objects(context) -> list:
    """The selected objects a fit takes: meshes (with faces, or vertices only) and point clouds, by name."""
    chosen = [obj for obj in context.selected_objects if obj.type in ("MESH", "POINTCLOUD")]
    return sorted(chosen, key=lambda obj: obj.name)
