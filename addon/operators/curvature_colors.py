import bpy

from .. import preferences, scene_io
from ..core import job_files
from ..core.colors import srgb_to_linear
from ..core.errors import EngineError
from ..core.items import QUANTITY_ITEMS, item_names
from ..core.params import curvature_params
from ..core.text import curvature_unit
from ..core.worker_client import JobRequest
from ..engine_jobs import EngineJobOperator
from ..properties import model_file
from . import checks

QUANTITY_NAMES = item_names(QUANTITY_ITEMS)


class NEURALSDF_OT_curvature_colors(EngineJobOperator, bpy.types.Operator):
    """Colour the active mesh by the curvature of a neural SDF and store mean, Gaussian, k1 and k2 as attributes"""

    bl_idname = "neural_sdf.curvature_colors"
    bl_label = "Curvature Colours"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if not (
            checks.no_job_running(cls) and checks.in_object_mode(cls, context) and checks.active_mesh(cls, context)
        ):
            return False
        return checks.model_for_active_mesh(cls, context)

    def requests(self, context):
        settings = context.scene.neural_sdf
        target = context.active_object
        model_owner = checks.model_owner(context)
        # The model's coordinates are world space at fit time; the model object may have moved since.
        model_world = model_owner.matrix_world @ model_owner.neural_sdf.model_to_object
        to_model = scene_io.matrix_array(model_world.inverted() @ target.matrix_world)
        points = scene_io.transform_points(to_model, scene_io.vertex_positions(target.data))
        self.target_name, self.vertex_count = target.name, len(points)
        params = curvature_params(
            model=model_file(model_owner),
            quantity=settings.quantity,
            colormap=settings.colormap,
            value_range=(settings.range_low, settings.range_high) if settings.use_custom_range else None,
            project=settings.project,
            device=preferences.get(context).device,
        )
        return [JobRequest("curvature", params, {"points": points}, f"evaluating the curvature of '{target.name}'")]

    def apply(self, context, results):
        (result,) = results
        target = bpy.data.objects.get(self.target_name)
        if target is None or target.type != "MESH" or len(target.data.vertices) != self.vertex_count:
            raise EngineError(
                f"'{self.target_name}' was deleted or edited while its curvature was computed: "
                "run Curvature Colours again"
            )
        fields, colors = job_files.curvature_arrays(result.outputs, self.vertex_count)
        mesh = target.data
        scene_io.write_curvature(mesh, fields, srgb_to_linear(colors))
        quantity = result.request.params["quantity"]
        low, high = result.summary["range"]
        legend = mesh.neural_sdf_curvature
        legend.quantity, legend.colormap, legend.low, legend.high = (
            quantity,
            result.request.params["colormap"],
            low,
            high,
        )
        material_shown = scene_io.show_curvature(context, target)
        unit = curvature_unit(quantity, scene_io.length_unit_name(context.scene))
        message = f"{QUANTITY_NAMES[quantity]} on '{target.name}' coloured over {low:.4g} to {high:.4g} {unit}"
        if not material_shown:
            message += " (its own materials were kept: the colours show in Solid shading)"
        return message
