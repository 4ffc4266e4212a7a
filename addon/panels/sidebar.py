"""The Neural SDF tab of the 3D view's sidebar: Fit, the active object's model (Re-extract), Curvature Colours."""

import bpy

from ..core.text import curvature_unit
from ..properties import QUANTITY_ITEMS, has_model, model_file
from ..scene_io import length_unit_name

QUANTITY_NAMES = {identifier: name for identifier, name, _ in QUANTITY_ITEMS}
COLORMAP_LEGENDS = {
    "diverging": "Blue below zero, white at zero, red above",
    "sequential": "Dark purple at the low end, yellow at the high end",
}


class NeuralSDFSidebar:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Neural SDF"


class NEURALSDF_PT_main(NeuralSDFSidebar, bpy.types.Panel):
    bl_label = "Neural SDF"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.neural_sdf
        job = context.window_manager.neural_sdf_job
        if job.is_running:
            layout.progress(factor=job.fraction, type="BAR", text=job.text)
            layout.label(text="Esc cancels", icon="CANCEL")
        row = layout.row(align=True)
        row.operator("neural_sdf.fit", icon="MESH_ICOSPHERE")
        row.prop(settings, "preset", text="")
        col = layout.column(align=True)
        col.prop(settings, "resolution")
        col.row(align=True).prop(settings, "fit_mode", expand=True)
        header, body = layout.panel("neural_sdf_fit_advanced", default_closed=True)
        header.label(text="Advanced")
        if body is not None:
            row = body.row(align=True)
            row.prop(settings, "use_custom_steps", text="")
            steps = row.row(align=True)
            steps.active = settings.use_custom_steps
            steps.prop(settings, "steps")
            body.prop(settings, "seed")


class NEURALSDF_PT_model(NeuralSDFSidebar, bpy.types.Panel):
    bl_label = "Model"
    bl_parent_id = "NEURALSDF_PT_main"

    def draw(self, context):
        layout = self.layout
        obj = context.active_object
        if not has_model(obj):
            layout.label(text="The active object has no model", icon="INFO")
            return
        link = obj.neural_sdf
        layout.label(text=link.fit_summary, icon="NETWORK_DRIVE")
        layout.prop(link, "model_path", text="")
        if not model_file(obj).is_file():
            layout.label(text="The model file is missing", icon="ERROR")
        row = layout.row(align=True)
        row.operator("neural_sdf.reextract", icon="FILE_REFRESH")
        row.prop(context.scene.neural_sdf, "resolution", text="")


class NEURALSDF_PT_curvature(NeuralSDFSidebar, bpy.types.Panel):
    bl_label = "Curvature"
    bl_parent_id = "NEURALSDF_PT_main"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.neural_sdf
        obj = context.active_object
        row = layout.row(align=True)
        row.operator("neural_sdf.curvature_colors", icon="COLOR")
        row.prop(settings, "quantity", text="")
        layout.prop(settings, "colormap")
        row = layout.row(align=True)
        row.prop(settings, "use_custom_range", text="")
        limits = row.row(align=True)
        limits.active = settings.use_custom_range
        limits.prop(settings, "range_low")
        limits.prop(settings, "range_high")
        if not has_model(obj):
            col = layout.column()
            col.prop(settings, "model_object")
            col.prop(settings, "project")
        if obj is not None and obj.type == "MESH" and obj.data.neural_sdf_curvature.quantity:
            draw_legend(layout.box(), obj.data.neural_sdf_curvature, length_unit_name(context.scene))


def draw_legend(layout: bpy.types.UILayout, legend, length_unit: str) -> None:
    """What the active mesh's colours show: the quantity, its range with units, and how the map reads."""
    unit = curvature_unit(legend.quantity, length_unit)
    layout.label(
        text=f"{QUANTITY_NAMES.get(legend.quantity, legend.quantity)}: {legend.low:.4g} to {legend.high:.4g} {unit}"
    )
    colormap = legend.colormap
    if colormap == "auto":
        colormap = "sequential" if legend.quantity == "curvedness" else "diverging"
    layout.label(text=COLORMAP_LEGENDS[colormap])


classes = (NEURALSDF_PT_main, NEURALSDF_PT_model, NEURALSDF_PT_curvature)
