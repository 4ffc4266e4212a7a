import bpy

from .. import preferences, scene_io
from ..core import job_files
from ..core.errors import EngineError
from ..core.params import extract_params
from ..core.worker_client import JobRequest
from ..engine_jobs import EngineJobOperator
from ..properties import model_file
from ..scene_io import CURVATURE_ATTRIBUTES
from . import checks


class NEURALSDF_OT_reextract(EngineJobOperator, bpy.types.Operator):
    """Extract the active object's surface again from its model at the panel's resolution (and, for a model with
    levels of detail, at its Level), without retraining; a model with colours colours the new vertices"""

    bl_idname = "neural_sdf.reextract"
    bl_label = "Re-extract"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return checks.no_job_running(cls) and checks.in_object_mode(cls, context) and checks.active_model(cls, context)

    def requests(self, context):
        obj = context.active_object
        resolution = context.scene.neural_sdf.resolution
        self.object_name = obj.name
        level = chosen_level(obj)
        params = extract_params(
            model=model_file(obj), resolution=resolution, device=preferences.get(context).device, level=level
        )
        at = "" if level is None else f", level {level:g}"
        return [JobRequest("extract", params, {}, f"extracting '{obj.name}' at resolution {resolution}{at}")]

    def apply(self, context, results):
        (result,) = results
        obj = bpy.data.objects.get(self.object_name)
        if obj is None or obj.type != "MESH":
            raise EngineError(f"'{self.object_name}' was deleted while its surface was extracted")
        vertices, faces = job_files.mesh_arrays(result.outputs)
        colors = job_files.surface_colors(result.outputs, len(vertices))
        local = scene_io.transform_points(scene_io.matrix_array(obj.neural_sdf.model_to_object), vertices)
        old = obj.data
        had_curvature = any(name in old.attributes for name in CURVATURE_ATTRIBUTES.values())
        mesh = scene_io.new_mesh(old.name, local, faces)
        for material in old.materials:
            mesh.materials.append(material)
        if colors is not None:
            scene_io.write_surface_colors(mesh, colors)
            scene_io.show_surface_colors(mesh)
        obj.data = mesh
        if old.users == 0:
            name = old.name
            bpy.data.meshes.remove(old)
            mesh.name = name
        level = result.request.params.get("level")
        at = "" if level is None else f", level {level:g}"
        resolution = result.request.params["resolution"]
        message = f"Re-extracted '{obj.name}' at resolution {resolution}{at}: {len(faces):,} faces"
        message += " with colours" if colors is not None else ""
        return message + (" (run Curvature Colours again for the new vertices)" if had_curvature else "")


def chosen_level(obj) -> float | None:
    """The object's Level for a model with levels of detail (within them), None (the only level) otherwise."""
    link = obj.neural_sdf
    if link.levels <= 1:
        return None
    return float(min(max(link.level, 0.0), link.levels - 1))
