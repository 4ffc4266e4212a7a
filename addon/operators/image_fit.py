import bpy

from .. import model_store, preferences
from ..core.errors import EngineError
from ..core.images import image_fit_params, image_render_params, mip_sizes, output_image
from ..core.text import format_duration
from ..core.worker_client import JobRequest
from ..engine_jobs import EngineJobOperator
from . import checks
from .image_common import (
    ImageJobProgress,
    active_image,
    custom_steps,
    has_image,
    has_image_model,
    image_model_file,
    link_model,
    new_image,
    read_pixels,
)
from .image_tile import show_image


class NEURALSDF_OT_image_fit(ImageJobProgress, EngineJobOperator, bpy.types.Operator):
    """Fit an image network (MR-Net levels of detail, or one SIREN) to the image and add its render as a new image
    '<name> Fit' that keeps the network: render it at any size or level with Render at Size or Level"""

    bl_idname = "neural_sdf.image_fit"
    bl_label = "Fit Image"
    bl_options = {"REGISTER", "UNDO"}
    makes_model = True

    @classmethod
    def poll(cls, context):
        return checks.no_job_running(cls) and has_image(cls, context)

    def requests(self, context):
        settings = context.scene.neural_sdf_image
        image = active_image(context)
        pixels, encoding = read_pixels(image)
        params = image_fit_params(
            name=image.name, encoding=encoding, preset=settings.fit_preset, levels=settings.levels,
            steps=custom_steps(settings), tuner=settings.tuner, device=preferences.get(context).device,
            seed=settings.seed,
        )  # fmt: skip
        return [JobRequest("image_fit", params, {"image": pixels}, f"fitting '{image.name}'")]

    def apply(self, context, results):
        (result,) = results
        source, summary = result.request.params["name"], result.summary
        pixels = output_image(result.outputs, "render")
        name = f"{source} Fit"
        model_path = model_store.keep_model(context, result.files["model"], name)
        fitted = new_image(name, pixels)
        text = (f"{summary.get('levels')} levels, {summary.get('psnr_db', 0):.1f} dB, "
                f"{format_duration(summary.get('train_seconds', 0.0))} on {summary.get('device')}")  # fmt: skip
        link_model(fitted, "FIT", model_path, text)
        show_image(context, fitted)
        return f"Fitted '{source}' as '{fitted.name}': {text}"


class ImageRender(ImageJobProgress, EngineJobOperator):
    """Render the network of an image made by Fit Image or Make Seamless Tile as new images (``mode``: SIZE, one
    image at the settings' size and level; MIPS, the mip chain)."""

    bl_options = {"REGISTER", "UNDO"}
    mode = "SIZE"

    @classmethod
    def poll(cls, context):
        return checks.no_job_running(cls) and has_image_model(cls, context)

    def requests(self, context):
        settings = context.scene.neural_sdf_image
        image = active_image(context)
        model = image_model_file(image)
        if not model.is_file():
            raise EngineError(
                f"The network of '{image.name}' ({model}) is missing: fit the image again (models live beside the "
                ".blend; keep its folder with it)"
            )
        device = preferences.get(context).device
        if self.mode == "SIZE":
            level = settings.level if settings.level_mode == "LEVEL" else None
            sizes, levels = [(settings.render_width, settings.render_height)], [level]
        else:
            sizes = mip_sizes(*image.size, settings.mip_levels)
            levels = [None] * len(sizes)
        self.image_name = image.name
        return [
            JobRequest("image_render", image_render_params(model=str(model), size=size, level=level, device=device),
                       {}, f"rendering '{image.name}' at {size[0]}x{size[1]}")  # fmt: skip
            for size, level in zip(sizes, levels)
        ]

    def apply(self, context, results):
        planned = []
        for index, result in enumerate(results):
            size = tuple(result.request.params["size"])
            pixels = output_image(result.outputs, "render", size)
            level = result.request.params["level"]
            if self.mode == "MIPS":
                name = f"{self.image_name} Mip {index + 1}"
            else:
                name = f"{self.image_name} {size[0]}x{size[1]}" + ("" if level is None else f" Level {level:g}")
            planned.append((name, pixels))
        made = [new_image(name, pixels) for name, pixels in planned]
        show_image(context, made[-1] if self.mode == "SIZE" else made[0])
        return f"Rendered {', '.join(repr(image.name) for image in made)} from the network of '{self.image_name}'"


class NEURALSDF_OT_image_render(ImageRender, bpy.types.Operator):
    """Render the network of an image made by Fit Image or Make Seamless Tile as a new image at the Width and
    Height: larger than the image (an upscale), or at one level of detail"""

    bl_idname = "neural_sdf.image_render"
    bl_label = "Render at Size or Level"
    mode = "SIZE"


class NEURALSDF_OT_image_mip_chain(ImageRender, bpy.types.Operator):
    """Render the network of an image made by Fit Image or Make Seamless Tile as its mip chain: Mip Levels new
    images, each half the size of the one before, each pixel at the level of its footprint (anti-aliased)"""

    bl_idname = "neural_sdf.image_mip_chain"
    bl_label = "Mip Chain"
    mode = "MIPS"
