"""The Neural SDF tab of the Image Editor's sidebar: Make Seamless Tile, Fit Image and Render at Size or Level (the
image network as an upscaler and mip-chain generator), Morph Images with the landmark pairs placed on the images."""

import bpy

from ..operators.image_common import active_image
from ..operators.image_landmarks import landmarks_of


class NeuralSDFImageSidebar:
    bl_space_type = "IMAGE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Neural SDF"


class NEURALSDF_PT_image(NeuralSDFImageSidebar, bpy.types.Panel):
    bl_label = "Neural SDF"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.neural_sdf_image
        job = context.window_manager.neural_sdf_job
        if job.is_running:
            layout.progress(factor=job.fraction, type="BAR", text=job.short_text or job.text)
            layout.label(text="Esc cancels", icon="CANCEL")
        layout.prop(settings, "image")
        image = active_image(context)
        if image is None:
            layout.label(text="Open an image, or choose one", icon="INFO")
        else:
            layout.label(text=f"{image.name}: {image.size[0]}x{image.size[1]}", icon="IMAGE_DATA")
            link = image.neural_sdf_image
            if link.kind != "NONE":
                layout.label(text=link.summary)
        layout.prop(settings, "seed")


class NEURALSDF_PT_image_tile(NeuralSDFImageSidebar, bpy.types.Panel):
    bl_label = "Seamless Tile"
    bl_parent_id = "NEURALSDF_PT_image"

    def draw(self, context):
        layout, settings = self.layout, context.scene.neural_sdf_image
        row = layout.row(align=True)
        row.operator("neural_sdf.image_tile", icon="MOD_ARRAY")
        row.prop(settings, "tile_preset", text="")
        layout.prop(settings, "tile_size")
        row = layout.row()
        row.prop(settings, "make_material")
        row.prop(settings, "repeats")


class NEURALSDF_PT_image_fit(NeuralSDFImageSidebar, bpy.types.Panel):
    bl_label = "Fit and Render"
    bl_parent_id = "NEURALSDF_PT_image"

    def draw(self, context):
        layout, settings = self.layout, context.scene.neural_sdf_image
        row = layout.row(align=True)
        row.operator("neural_sdf.image_fit", icon="IMAGE_REFERENCE")
        row.prop(settings, "fit_preset", text="")
        row = layout.row()
        row.prop(settings, "levels")
        row.prop(settings, "tuner")
        row = layout.row(align=True)
        row.prop(settings, "use_custom_steps")
        sub = row.row(align=True)
        sub.enabled = settings.use_custom_steps
        sub.prop(settings, "steps")
        box = layout.box()
        col = box.column(align=True)
        col.prop(settings, "render_width")
        col.prop(settings, "render_height")
        box.row().prop(settings, "level_mode", expand=True)
        if settings.level_mode == "LEVEL":
            box.prop(settings, "level")
        box.operator("neural_sdf.image_render", icon="RENDER_STILL")
        row = box.row(align=True)
        row.prop(settings, "mip_levels")
        row.operator("neural_sdf.image_mip_chain", icon="TEXTURE")


class NEURALSDF_PT_image_morph(NeuralSDFImageSidebar, bpy.types.Panel):
    bl_label = "Morph"
    bl_parent_id = "NEURALSDF_PT_image"

    def draw(self, context):
        layout, settings = self.layout, context.scene.neural_sdf_image
        col = layout.column(align=True)
        col.prop(settings, "morph_source")
        col.prop(settings, "morph_target")
        counts = [len(landmarks_of(image)) if image is not None else 0
                  for image in (settings.morph_source, settings.morph_target)]  # fmt: skip
        layout.label(text=f"Landmarks: {counts[0]} on From, {counts[1]} on Into", icon="EMPTY_SINGLE_ARROW")
        row = layout.row(align=True)
        row.operator("neural_sdf.image_place_landmarks", icon="RESTRICT_SELECT_OFF")
        row.operator("neural_sdf.image_clear_landmarks", text="", icon="X")
        row = layout.row(align=True)
        row.operator("neural_sdf.image_morph", icon="SEQUENCE")
        row.prop(settings, "morph_preset", text="")
        row = layout.row()
        row.prop(settings, "morph_frames")
        row.prop(settings, "add_strip")


classes = (NEURALSDF_PT_image, NEURALSDF_PT_image_tile, NEURALSDF_PT_image_fit, NEURALSDF_PT_image_morph)
