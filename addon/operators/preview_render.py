import bpy

from .. import preferences
from ..core.errors import EngineError
from ..core.render_camera import (
    VIEW_SENSOR_WIDTH,
    camera_in_model,
    horizontal_fov,
    ortho_width,
    render_params,
    render_pixels,
    render_size,
    view_camera_world,
)
from ..core.worker_client import JobRequest
from ..engine_jobs import EngineJobOperator
from ..properties import model_file
from . import checks

PREVIEW_MARK = "neural_sdf_preview"
"""Custom property of the Images this operator made (the name of the object rendered): only those are reused."""


class NEURALSDF_OT_preview_render(EngineJobOperator, bpy.types.Operator):
    """Render the active fitted object's model straight from its network (sphere tracing, coarse levels first) from
    the scene camera, or the 3D view when the scene has no camera, into the Image "<object> Preview\""""

    bl_idname = "neural_sdf.preview_render"
    bl_label = "Preview Render"
    bl_options = {"REGISTER", "UNDO"}

    shading: bpy.props.EnumProperty(
        name="Shading",
        items=(("plain", "Plain", "Grey under a headlight"),
               ("curvature", "Curvature", "Coloured by the panel's curvature quantity")),  # fmt: skip
        default="plain",
    )
    multiscale: bpy.props.BoolProperty(
        name="Multiscale", default=True,
        description="Trace a model with levels of detail on its coarse levels first (the same image, faster)",
    )  # fmt: skip

    @classmethod
    def poll(cls, context):
        return checks.no_job_running(cls) and checks.in_object_mode(cls, context) and checks.active_model(cls, context)

    def requests(self, context):
        obj = context.active_object
        model_world = obj.matrix_world @ obj.neural_sdf.model_to_object
        camera, source = self._camera(context, obj, model_world)
        self.object_name, self.size = obj.name, tuple(camera["resolution"])
        params = render_params(
            model=model_file(obj), camera=camera, multiscale=self.multiscale, shading=self.shading,
            quantity=context.scene.neural_sdf.quantity, device=preferences.get(context).device,
        )  # fmt: skip
        width, height = self.size
        return [JobRequest("render", params, {}, f"rendering '{obj.name}' from {source} at {width} x {height}")]

    def _camera(self, context, obj, model_world) -> tuple[dict, str]:
        scene = context.scene
        render = scene.render
        if render.pixel_aspect_x != render.pixel_aspect_y:
            raise EngineError("Preview Render needs square pixels: set the Pixel Aspect X and Y to the same value")
        if scene.camera is not None and scene.camera.type == "CAMERA":
            camera = scene.camera
            data = camera.data
            if data.shift_x or data.shift_y:
                raise EngineError(f"Camera '{camera.name}' has a lens shift, which Preview Render does not take: "
                                  "set its Shift X and Y to 0")  # fmt: skip
            size = render_size(render.resolution_x, render.resolution_y, render.resolution_percentage)
            fov = width = None
            if data.type == "PERSP":
                fov = horizontal_fov(data.lens, data.sensor_width, data.sensor_height, data.sensor_fit, size)
            elif data.type == "ORTHO":
                width = ortho_width(data.ortho_scale, data.sensor_fit, size)
            return camera_in_model(camera.matrix_world, model_world, data.type, size, fov=fov, width=width,
                                   object_name=obj.name), f"camera '{camera.name}'"  # fmt: skip
        space = context.space_data
        if space is None or space.type != "VIEW_3D" or space.region_3d is None:
            raise EngineError("The scene has no camera and this is not a 3D view: add a camera, or run Preview Render "
                              "from the 3D view's sidebar")  # fmt: skip
        view = space.region_3d
        region = next((r for r in context.area.regions if r.type == "WINDOW"), None)
        if region is None or region.width < 1 or region.height < 1:
            raise EngineError("The 3D view has no drawing area to render")
        size = render_size(region.width, region.height, render.resolution_percentage)
        perspective = view.is_perspective
        back = view.view_distance + 10.0 * max(obj.dimensions)
        world = view_camera_world(view.view_matrix, perspective, back)
        if perspective:
            fov = horizontal_fov(space.lens, VIEW_SENSOR_WIDTH, VIEW_SENSOR_WIDTH, "AUTO", size)
            return camera_in_model(world, model_world, "PERSP", size, fov=fov, object_name=obj.name), "the 3D view"
        # An orthographic view spans view_distance * 72 mm / lens along its larger side (as the camera's AUTO fit).
        width = ortho_width(view.view_distance * VIEW_SENSOR_WIDTH / space.lens, "AUTO", size)
        return camera_in_model(world, model_world, "ORTHO", size, width=width, object_name=obj.name), "the 3D view"

    def apply(self, context, results):
        (result,) = results
        pixels = render_pixels(result.outputs, self.size)
        width, height = self.size
        # The object's own preview image is reused; an image the user made is never written (even by that name).
        image = next((image for image in bpy.data.images if image.get(PREVIEW_MARK) == self.object_name), None)
        if image is None:
            image = bpy.data.images.new(f"{self.object_name} Preview", width, height, alpha=True, float_buffer=True)
            image[PREVIEW_MARK] = self.object_name
        elif tuple(image.size) != (width, height):
            image.scale(width, height)
        image.pixels.foreach_set(pixels)
        image.update()
        shown = False
        for area in context.screen.areas if context.screen is not None else ():
            if area.type == "IMAGE_EDITOR":
                area.spaces.active.image = image
                area.tag_redraw()
                shown = True
                break
        summary = result.summary
        where = "" if shown else " (open an Image Editor to see it)"
        levels = f", {summary['levels']} levels" if summary.get("levels", 1) > 1 else ""
        return (f"Rendered '{self.object_name}' into '{image.name}'{where}: {width} x {height}, "
                f"{summary['hits']:,} pixels on the surface{levels}, {summary['seconds']['total']:.1f} s")  # fmt: skip
