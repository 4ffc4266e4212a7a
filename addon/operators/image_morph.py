from pathlib import Path

import bpy

from .. import model_store, preferences
from ..core.errors import EngineError
from ..core.images import (
    FRAME_FILENAME,
    blender_pixels,
    check_same_aspect,
    encoded,
    image_morph_params,
    one_encoding,
    output_image,
    paired_landmarks,
)
from ..core.model_files import model_filename
from ..core.text import format_duration
from ..core.worker_client import JobRequest
from ..engine_jobs import EngineJobOperator
from . import checks
from .image_common import ImageJobProgress, custom_steps, link_model, read_pixels
from .image_landmarks import landmarks_of
from .image_tile import show_image


def morph_pair(cls, context) -> bool:
    settings = context.scene.neural_sdf_image
    if settings.morph_source is None or settings.morph_target is None:
        cls.poll_message_set("Choose the From and Into images in the Morph panel")
        return False
    if settings.morph_source == settings.morph_target:
        cls.poll_message_set("Choose two different images")
        return False
    return True


class NEURALSDF_OT_image_morph(ImageJobProgress, EngineJobOperator, bpy.types.Operator):
    """Morph the From image into the Into image along a warp trained from their landmark pairs, and add the frames
    as an image sequence (and a strip in the Video Sequencer); the images are not changed"""

    bl_idname = "neural_sdf.image_morph"
    bl_label = "Morph Images"
    bl_options = {"REGISTER", "UNDO"}
    makes_model = True

    @classmethod
    def poll(cls, context):
        return checks.no_job_running(cls) and morph_pair(cls, context)

    def requests(self, context):
        settings = context.scene.neural_sdf_image
        source, target = settings.morph_source, settings.morph_target
        check_same_aspect((source.name, *source.size), (target.name, *target.size))
        inputs = paired_landmarks((source.name, landmarks_of(source)), (target.name, landmarks_of(target)))
        inputs["image_0"], inputs["image_1"], encoding = one_encoding(read_pixels(source), read_pixels(target))
        params = image_morph_params(
            names=(source.name, target.name), encoding=encoding, frames=settings.morph_frames,
            preset=settings.morph_preset, steps=custom_steps(settings), device=preferences.get(context).device,
            seed=settings.seed,
        )  # fmt: skip
        return [JobRequest("image_morph", params, inputs, f"morphing '{source.name}' into '{target.name}'")]

    def apply(self, context, results):
        (result,) = results
        params, summary = result.request.params, result.summary
        source, target = params["names"]
        frames = [output_image(result.outputs, f"frame_{index}") for index in range(params["frames"])]
        name = f"{source} to {target} Morph"
        model_path = model_store.keep_model(context, result.files["model"], name)
        folder = model_store.models_dir(context) / (Path(model_filename(name)).stem + "_frames")
        paths = write_frames(folder, frames)
        sequence = bpy.data.images.load(str(paths[0]))
        sequence.name, sequence.source, sequence.use_fake_user = name, "SEQUENCE", True
        if bpy.data.filepath:  # the frames went beside the .blend: they move with it
            sequence.filepath = bpy.path.relpath(str(paths[0]))
        quality = summary.get("quality", {})
        text = (f"{len(frames)} frames, landmarks off by "
                f"{quality.get('landmark_error_px', {}).get('forward_mean', float('nan')):.2f} px, "
                f"{format_duration(summary.get('train_seconds') or 0.0)} on {summary.get('device')}")  # fmt: skip
        link_model(sequence, "MORPH", model_path, text)
        show_image(context, sequence)
        space = getattr(context, "space_data", None)
        if getattr(space, "type", "") == "IMAGE_EDITOR":
            space.image_user.frame_duration, space.image_user.frame_start = len(frames), context.scene.frame_start
        made = f"the image sequence '{sequence.name}' ({folder})"
        if context.scene.neural_sdf_image.add_strip:
            strip = add_strip(context.scene, name, paths)
            made += f" and the strip '{strip.name}' (channel {strip.channel})"
        warnings = "".join(f"; {warning}" for warning in summary.get("warnings", []))
        return f"Morphed '{source}' into '{target}': {made}, {text}{warnings}"


def write_frames(folder: Path, frames: list) -> list[Path]:
    """Each frame as an 8-bit sRGB PNG in ``folder`` (new), through a temporary byte image Blender saves."""
    try:
        folder.mkdir(parents=True)
    except OSError as error:
        raise EngineError(f"The frames folder {folder} could not be made ({error.strerror or error})") from error
    paths = []
    height, width, channels = frames[0].shape
    scratch = bpy.data.images.new("Neural SDF frame", width, height, alpha=channels in (2, 4))
    try:
        scratch.file_format = "PNG"
        for index, frame in enumerate(frames):
            scratch.pixels.foreach_set(blender_pixels(encoded(frame)))
            paths.append(folder / FRAME_FILENAME.format(index))
            scratch.filepath_raw = str(paths[-1])
            scratch.save()
    finally:
        bpy.data.images.remove(scratch)
    return paths


def add_strip(scene, name: str, paths: list[Path]):
    """An image strip of the frames from the scene's start frame, in the first free channel."""
    editor = scene.sequence_editor or scene.sequence_editor_create()
    used = {strip.channel for strip in editor.strips_all} if hasattr(editor, "strips_all") else set()
    channel = next(channel for channel in range(1, 129) if channel not in used)
    strip = editor.strips.new_image(name, str(paths[0]), channel, scene.frame_start)
    for path in paths[1:]:
        strip.elements.append(path.name)
    if bpy.data.filepath:
        strip.directory = bpy.path.relpath(str(paths[0].parent)) + "/"
    return strip
