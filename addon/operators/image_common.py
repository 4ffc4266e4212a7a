"""What the Image Editor's operators share: their settings (Scene.neural_sdf_image), the link from an image the
engine made to its model file (Image.neural_sdf_image), reading an image's pixels and writing new images."""

from pathlib import Path

import bpy
import numpy as np
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from ..core.errors import EngineError
from ..engine_jobs import EngineJobOperator
from ..core.images import blender_pixels, check_image_size, engine_pixels, pixel_encoding
from ..properties import BLEND_RELATIVE_PATH

IMAGE_MODEL_KINDS = [("NONE", "None", "Not made by the engine"), ("FIT", "Fit", "An image network's render"),
                     ("TILE", "Tile", "A seamless tile"),
                     ("MORPH", "Morph", "The frames of an image morph")]  # fmt: skip
FIT_PRESETS = [("fast", "Fast", "Minutes on a CPU at 256x256 (4 levels, 1,000 steps at the finest)"),
               ("quality", "Quality", "Wider finest level, 3,000 steps"),
               ("gpu", "GPU", "Wide, deep stages and large batches: for a GPU")]  # fmt: skip
TILE_PRESETS = [("cpu", "CPU", "Minutes on 2 CPU cores (trained at 256 pixels, 1,500 steps)"),
                ("gpu", "GPU", "The paper's settings: 512 pixels, 3 x 256 network, full batches (a GPU)")]  # fmt: skip
MORPH_PRESETS = [("cpu", "CPU", "Minutes on a CPU"), ("gpu", "GPU", "The paper's settings (20,001 steps; a GPU)")]


def _is_still_image(_settings, image) -> bool:
    return image.source in {"FILE", "GENERATED"}


class NeuralSDFImageSettings(bpy.types.PropertyGroup):
    """Settings of the Image Editor's Neural SDF tab (Scene.neural_sdf_image)."""

    image: PointerProperty(type=bpy.types.Image, name="Image", poll=_is_still_image,
                           description="The image to work on (default: the one the Image Editor shows)")  # fmt: skip
    tile_size: IntProperty(name="Tile Size", min=0, max=16384, default=0,
                           description="The tile's long side in pixels; 0: the image's own size")  # fmt: skip
    tile_preset: EnumProperty(name="Preset", items=TILE_PRESETS, default="cpu")
    make_material: BoolProperty(name="Add Material", default=True,
                                description="Also add a material with the tile on a repeating mapping")  # fmt: skip
    repeats: FloatProperty(name="Repeats", min=0.01, soft_max=64.0, default=4.0,
                           description="How many times the tile repeats across the material's UV square")  # fmt: skip
    fit_preset: EnumProperty(name="Preset", items=FIT_PRESETS, default="fast")
    levels: IntProperty(name="Levels", min=1, max=12, default=4,
                        description="Levels of detail (MR-Net stages); 1: a single SIREN")  # fmt: skip
    tuner: BoolProperty(name="TUNER", default=False, description="TUNER's integer frequencies and bounds")
    use_custom_steps: BoolProperty(name="Custom Steps", default=False)
    steps: IntProperty(name="Steps", min=1, max=1_000_000, default=300, description="Training steps")
    render_width: IntProperty(name="Width", min=1, max=65536, default=1024)
    render_height: IntProperty(name="Height", min=1, max=65536, default=1024)
    level_mode: EnumProperty(name="Level", default="AUTO", items=[
        ("AUTO", "Auto", "Each pixel's level from its footprint: anti-aliased when smaller than the image"),
        ("LEVEL", "Fixed", "One level of detail everywhere (0: the coarsest)"),
    ])  # fmt: skip
    level: FloatProperty(name="Level", min=0.0, max=12.0, default=1.0)
    mip_levels: IntProperty(name="Mip Levels", min=1, max=16, default=4,
                            description="Images of half, a quarter, ... the model's size")  # fmt: skip
    morph_source: PointerProperty(type=bpy.types.Image, name="From", poll=_is_still_image,
                                  description="The image the morph starts at (t = 0)")  # fmt: skip
    morph_target: PointerProperty(type=bpy.types.Image, name="Into", poll=_is_still_image,
                                  description="The image the morph ends at (t = 1), of the same aspect")  # fmt: skip
    morph_frames: IntProperty(name="Frames", min=2, max=1000, default=24)
    morph_preset: EnumProperty(name="Preset", items=MORPH_PRESETS, default="cpu")
    add_strip: BoolProperty(name="Add Strip", default=True,
                            description="Also add the frames as an image strip in the Video Sequencer")  # fmt: skip
    seed: IntProperty(name="Seed", min=0, default=0)


class NeuralSDFImageLink(bpy.types.PropertyGroup):
    """What an image the engine made links to (Image.neural_sdf_image)."""

    kind: EnumProperty(name="Kind", items=IMAGE_MODEL_KINDS, default="NONE")
    model_path: StringProperty(name="Model", subtype="FILE_PATH", options=BLEND_RELATIVE_PATH)
    summary: StringProperty(name="Summary")


ATTACHED = (
    (bpy.types.Scene, "neural_sdf_image", NeuralSDFImageSettings),
    (bpy.types.Image, "neural_sdf_image", NeuralSDFImageLink),
)
classes = (NeuralSDFImageSettings, NeuralSDFImageLink)


def active_image(context) -> bpy.types.Image | None:
    """The image to work on: the settings' Image, else the one the Image Editor shows."""
    chosen = context.scene.neural_sdf_image.image
    if chosen is not None:
        return chosen
    space = getattr(context, "space_data", None)
    return getattr(space, "image", None) if getattr(space, "type", "") == "IMAGE_EDITOR" else None


def read_pixels(image: bpy.types.Image) -> tuple[np.ndarray, str]:
    """An image's pixels as the engine takes them ((height, width, c) float32, the top row first) and their
    encoding, read from its buffer (foreach_get): packed, generated, unsaved and edited images read as they are
    shown, not from their files. Raises `EngineError` for what has no single still picture."""
    if image.source not in {"FILE", "GENERATED"}:
        raise EngineError(
            f"Image '{image.name}' is a {image.source.lower()}, not a still image: pick a single image (a frame of a "
            "sequence or a movie can be saved as one with Image > Save As)"
        )
    if not image.has_data:
        image.pixels[0:1]  # loads the buffer of an image not shown yet  # noqa: B018
    width, height = image.size
    check_image_size(image.name, width, height)
    encoding = pixel_encoding(image.name, image.is_float, image.colorspace_settings.name)
    flat = np.empty(width * height * image.channels, dtype=np.float32)
    image.pixels.foreach_get(flat)
    return engine_pixels(flat, width, height, image.channels, premultiplied=image.is_float), encoding


def new_image(name: str, pixels: np.ndarray) -> bpy.types.Image:
    """A new float image (scene linear) of linear-light pixels (height, width, c), packed into the .blend (as
    OpenEXR: no rounding to bytes) and kept by a fake user, so it survives a save without a file or a user of its
    own."""
    height, width, channels = pixels.shape
    image = bpy.data.images.new(name, width, height, alpha=channels in (2, 4), float_buffer=True)
    image.pixels.foreach_set(blender_pixels(pixels, premultiply=True))  # float buffers hold premultiplied colour
    image.file_format = "OPEN_EXR"
    image.pack()
    image.use_fake_user = True
    return image


def link_model(image: bpy.types.Image, kind: str, model_path: str, summary: str) -> None:
    link = image.neural_sdf_image
    link.kind, link.model_path, link.summary = kind, model_path, summary


def image_model_file(image: bpy.types.Image) -> Path:
    """An image's model file as an absolute path (relative ones are beside the .blend or its library)."""
    return Path(bpy.path.abspath(image.neural_sdf_image.model_path, library=image.library))


def redraw_image_editors(context) -> None:
    """Redraw the Image Editors (their sidebar shows the progress; `engine_jobs` redraws the 3D views')."""
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR":
                area.tag_redraw()


class ImageJobProgress:
    """The progress shows in the Image Editors too (mixed in before `EngineJobOperator`)."""

    def _show_progress(self, context) -> None:
        EngineJobOperator._show_progress(self, context)
        redraw_image_editors(context)


def has_image(cls, context) -> bool:
    """poll(): an image to work on (`active_image`)."""
    if active_image(context) is None:
        cls.poll_message_set("Open an image in the Image Editor, or choose one in the Neural SDF tab")
        return False
    return True


def has_image_model(cls, context) -> bool:
    """poll(): the image to work on was made by an image fit or a tile (it links to their model)."""
    image = active_image(context)
    if image is None or image.neural_sdf_image.kind not in {"FIT", "TILE"}:
        cls.poll_message_set("Show an image made by Fit Image or Make Seamless Tile (it keeps their network)")
        return False
    return True


def custom_steps(settings) -> int | None:
    return settings.steps if settings.use_custom_steps else None
