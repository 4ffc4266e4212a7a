import bpy

from .. import model_store, preferences
from ..core.images import image_tile_params, output_image
from ..core.text import format_duration
from ..core.worker_client import JobRequest
from ..engine_jobs import EngineJobOperator
from . import checks
from .image_common import active_image, custom_steps, has_image, link_model, new_image, read_pixels
from .image_common import ImageJobProgress

MATERIAL_SUFFIX = " Tile"


class NEURALSDF_OT_image_tile(ImageJobProgress, EngineJobOperator, bpy.types.Operator):
    """Make a seamless tile of the image: a periodic network trained on it (the seam removed, the inside kept) as a
    new image '<name> Tile', optionally with a material that repeats it; the image is not changed"""

    bl_idname = "neural_sdf.image_tile"
    bl_label = "Make Seamless Tile"
    bl_options = {"REGISTER", "UNDO"}
    makes_model = True

    @classmethod
    def poll(cls, context):
        return checks.no_job_running(cls) and has_image(cls, context)

    def requests(self, context):
        settings = context.scene.neural_sdf_image
        image = active_image(context)
        pixels, encoding = read_pixels(image)
        params = image_tile_params(
            name=image.name, encoding=encoding, size=settings.tile_size or None, preset=settings.tile_preset,
            steps=custom_steps(settings), device=preferences.get(context).device, seed=settings.seed,
        )  # fmt: skip
        return [JobRequest("image_tile", params, {"image": pixels}, f"making a seamless tile of '{image.name}'")]

    def apply(self, context, results):
        (result,) = results
        settings, source = context.scene.neural_sdf_image, result.request.params["name"]
        pixels = output_image(result.outputs, "tile")
        name = f"{source}{MATERIAL_SUFFIX}"
        model_path = model_store.keep_model(context, result.files["model"], name)
        tile = new_image(name, pixels)
        summary = result.summary
        text = (f"seam score {summary.get('seam_score', 0):.2f} (the photo {summary.get('seam_score_photo', 0):.2f}), "
                f"{format_duration(summary.get('train_seconds', 0.0))} on {summary.get('device')}")  # fmt: skip
        link_model(tile, "TILE", model_path, text)
        show_image(context, tile)
        made = f"'{tile.name}' ({tile.size[0]}x{tile.size[1]})"
        if settings.make_material:
            material = tile_material(tile, settings.repeats)
            made += f" and the material '{material.name}'"
        return f"Made the seamless tile {made} of '{source}': {text}"


def show_image(context, image) -> None:
    """Show ``image`` in the Image Editor the operator ran in (if it ran in one)."""
    space = getattr(context, "space_data", None)
    if getattr(space, "type", "") == "IMAGE_EDITOR":
        space.image = image


def tile_material(tile: bpy.types.Image, repeats: float) -> bpy.types.Material:
    """A new material whose base colour is ``tile`` repeated ``repeats`` times across the UV square (Image Texture
    with Repeat extension, scaled by a Mapping node)."""
    material = bpy.data.materials.new(tile.name)
    if material.node_tree is None:  # Blender before 5.0 creates materials without nodes
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    shader = next(node for node in nodes if node.type == "BSDF_PRINCIPLED")
    coordinates = nodes.new("ShaderNodeTexCoord")
    mapping = nodes.new("ShaderNodeMapping")
    texture = nodes.new("ShaderNodeTexImage")
    texture.image, texture.extension, texture.interpolation = tile, "REPEAT", "Linear"
    mapping.inputs["Scale"].default_value = (repeats, repeats, 1.0)
    for offset, node in ((-300, texture), (-500, mapping), (-700, coordinates)):
        node.location = (shader.location.x + offset, shader.location.y)
    links.new(coordinates.outputs["UV"], mapping.inputs["Vector"])
    links.new(mapping.outputs["Vector"], texture.inputs["Vector"])
    links.new(texture.outputs["Color"], shader.inputs["Base Color"])
    return material
