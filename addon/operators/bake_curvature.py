import bpy
import numpy as np

from .. import preferences, scene_io
from ..core.bake import bake_image_names, bake_images, bake_params, byte_pixels, float_pixels
from ..core.errors import EngineError
from ..core.items import QUANTITY_ITEMS, item_names
from ..core.text import curvature_unit
from ..core.worker_client import JobRequest
from ..engine_jobs import EngineJobOperator
from ..properties import model_file
from . import checks

QUANTITY_NAMES = item_names(QUANTITY_ITEMS)
BAKE_TAG = "neural_sdf_bake"
"""Custom property on the images Bake to Image made: only those are overwritten by a later bake."""


class NEURALSDF_OT_bake_curvature(EngineJobOperator, bpy.types.Operator):
    """Bake the curvature of a neural SDF into two images through the active mesh's UV map: the values (float,
    Non-Color) and their colour map (8-bit), both packed into the .blend"""

    bl_idname = "neural_sdf.bake_curvature"
    bl_label = "Bake to Image"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if not (
            checks.no_job_running(cls) and checks.in_object_mode(cls, context) and checks.active_mesh(cls, context)
        ):
            return False
        target = context.active_object
        if target.data.uv_layers.active is None:
            cls.poll_message_set(f"'{target.name}' has no UV map: unwrap it first (UV > Unwrap in Edit Mode)")
            return False
        return checks.model_for_active_mesh(cls, context)

    def requests(self, context):
        settings = context.scene.neural_sdf
        target, owner = context.active_object, checks.model_owner(context)
        mesh = target.data
        if len(mesh.polygons) == 0:
            raise EngineError(f"'{target.name}' has no faces to bake through")
        mesh.calc_loop_triangles()
        count = len(mesh.loop_triangles)
        triangle_vertices = np.empty(count * 3, dtype=np.int32)
        triangle_loops = np.empty(count * 3, dtype=np.int32)
        mesh.loop_triangles.foreach_get("vertices", triangle_vertices)
        mesh.loop_triangles.foreach_get("loops", triangle_loops)
        loop_uvs = np.empty(len(mesh.loops) * 2, dtype=np.float32)
        mesh.uv_layers.active.data.foreach_get("uv", loop_uvs)
        uvs = loop_uvs.reshape(-1, 2)[triangle_loops.reshape(-1, 3)].astype(np.float64)
        # The model's coordinates are world space at fit time; the model object may have moved since.
        model_world = owner.matrix_world @ owner.neural_sdf.model_to_object
        to_model = scene_io.matrix_array(model_world.inverted() @ target.matrix_world)
        vertices = scene_io.transform_points(to_model, scene_io.vertex_positions(mesh))
        self.target_name, self.size = target.name, settings.bake_size
        value_range = self._legend_range(settings, mesh)
        params = bake_params(
            model=model_file(owner),
            size=settings.bake_size,
            quantity=settings.quantity,
            colormap=settings.colormap,
            value_range=value_range,
            project=settings.project,
            device=preferences.get(context).device,
        )
        inputs = {"vertices": vertices, "faces": triangle_vertices.reshape(-1, 3), "uvs": uvs}
        return [JobRequest("bake", params, inputs, f"baking the curvature of '{target.name}'")]

    @staticmethod
    def _legend_range(settings, mesh):
        """The panel's custom range; else the mesh's legend where it shows this quantity and map (the texture then
        matches the vertex colours); else None (the engine's robust range)."""
        if settings.use_custom_range:
            return settings.range_low, settings.range_high
        legend = mesh.neural_sdf_curvature
        if legend.quantity == settings.quantity and legend.colormap == settings.colormap and legend.low < legend.high:
            return legend.low, legend.high
        return None

    def apply(self, context, results):
        (result,) = results
        target = bpy.data.objects.get(self.target_name)
        if target is None or target.type != "MESH":
            raise EngineError(f"'{self.target_name}' was deleted while it was baked: run Bake to Image again")
        values, colors = bake_images(result.outputs, self.size)
        quantity = result.request.params["quantity"]
        float_name, color_name = bake_image_names(target.name, QUANTITY_NAMES[quantity])
        float_image = self._image(float_name, is_float=True)
        float_image.pixels.foreach_set(float_pixels(values))
        color_image = self._image(color_name, is_float=False)
        color_image.pixels.foreach_set(byte_pixels(colors))
        for image in (float_image, color_image):
            image.update()
            image.pack()
        low, high = result.summary["range"]
        unit = curvature_unit(quantity, scene_io.length_unit_name(context.scene))
        return (
            f"Baked {QUANTITY_NAMES[quantity]} of '{target.name}' into '{float_image.name}' and "
            f"'{color_image.name}' ({self.size} x {self.size}, colours over {low:.4g} to {high:.4g} {unit}, packed)"
        )

    def _image(self, name: str, is_float: bool) -> bpy.types.Image:
        """The image this operator made under that name before (resized if needed), or a new one; a user's own image
        of that name is left alone (the new one gets Blender's .001 suffix)."""
        image = bpy.data.images.get(name)
        if image is None or not image.get(BAKE_TAG) or image.is_float != is_float:
            image = bpy.data.images.new(name, self.size, self.size, alpha=not is_float, float_buffer=is_float)
            image[BAKE_TAG] = True
        elif tuple(image.size) != (self.size, self.size):
            # Generated anew at the new size (scaling a packed image's buffer crashes Blender 5.0); packed again after.
            image.source = "GENERATED"
            image.generated_width = image.generated_height = self.size
            image.use_generated_float = is_float
        image.colorspace_settings.name = "Non-Color" if is_float else "sRGB"
        # What pack() writes: a float image packed as PNG would come back clamped to [0, 1] in 8 bits.
        image.file_format = "OPEN_EXR" if is_float else "PNG"
        image.use_fake_user = True  # an image no material uses yet is still saved with the .blend
        return image
