"""The Neural SDF tab of the 3D view's sidebar: Fit, the active object's model (Re-extract), Curvature Colours,
Surface Evolution (with the active flow field empty's settings), Morph (with the active landmark empty's settings)."""

import bpy

from ..core.frames import shown_frame
from ..core.items import ENGINE_DEFAULT_STEPS, MORPH_METHOD_ITEMS, PRESET_ITEMS, PRESET_STEPS, item_names
from ..core.text import curvature_unit
from ..frame_switch import FRAME_START_INPUT, frame_switch_modifier, get_input, input_path
from ..operators.checks import source_and_target
from ..properties import QUANTITY_ITEMS, has_evolution, has_model, has_morph, model_file, stored_file
from ..scene_io import field_empties, landmark_empties, length_unit_name

QUANTITY_NAMES = {identifier: name for identifier, name, _ in QUANTITY_ITEMS}
PRESET_NAMES = item_names(PRESET_ITEMS)
METHOD_NAMES = item_names(MORPH_METHOD_ITEMS)
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
            layout.progress(factor=job.fraction, type="BAR", text=job.short_text or job.text)
            layout.label(text="Esc cancels", icon="CANCEL")
        if job.save_warning:
            layout.label(text=job.save_warning, icon="ERROR")
        row = layout.row(align=True)
        row.operator("neural_sdf.fit", icon="MESH_ICOSPHERE")
        row.prop(settings, "preset", text="")
        col = layout.column(align=True)
        col.prop(settings, "resolution")
        col.prop(settings, "levels")
        col.row(align=True).prop(settings, "fit_mode", expand=True)
        row = layout.row()
        row.prop(settings, "hide_sources")
        row.prop(settings, "live_preview")
        layout.prop(settings, "fit_colors")
        header, body = layout.panel("neural_sdf_fit_advanced", default_closed=True)
        header.label(text="Advanced")
        if body is not None:
            preset = PRESET_NAMES[settings.preset]
            draw_steps(body, settings, PRESET_STEPS[settings.preset], f"the {preset} preset's")
            row = body.row()
            row.active = settings.levels == 1
            row.prop(settings, "tuner")
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
        layout.operator("neural_sdf.preview_render", icon="RENDER_STILL")
        if link.levels > 1:
            layout.prop(link, "level", slider=True)
            layout.operator("neural_sdf.make_lod", icon="MOD_DECIM")


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
        row = layout.row(align=True)
        row.operator("neural_sdf.bake_curvature", icon="TEXTURE")
        row.prop(settings, "bake_size", text="")
        layout.operator("neural_sdf.ridge_lines", icon="CURVE_DATA")
        if obj is not None and obj.type == "MESH" and obj.data.neural_sdf_curvature.quantity:
            draw_legend(layout.box(), obj.data.neural_sdf_curvature, length_unit_name(context.scene))


class NEURALSDF_PT_evolution(NeuralSDFSidebar, bpy.types.Panel):
    bl_label = "Surface Evolution"
    bl_parent_id = "NEURALSDF_PT_main"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.neural_sdf_evolution
        obj = context.active_object
        if obj is not None and obj.type == "EMPTY":
            draw_field(layout.box(), obj)
        if has_evolution(obj):
            draw_baked(layout.box(), context.scene, obj)
        row = layout.row(align=True)
        row.operator("neural_sdf.bake_evolution", icon="RENDER_ANIMATION")
        row.prop(settings, "flow", text="")
        col = layout.column(align=True)
        if settings.flow == "MCF":
            col.prop(settings, "curvature_speed")
        elif settings.flow == "OFFSET":
            col.prop(settings, "offset_speed")
        col.prop(settings, "time_end")
        if settings.flow == "FIELDS":
            count = len(field_empties(context.scene))
            if count:
                layout.label(text=f"{count} flow field{'s' if count > 1 else ''} in the scene", icon="FORCE_FORCE")
            else:
                layout.label(text="No flow field in the scene: add one", icon="ERROR")
        layout.operator_menu_enum("neural_sdf.add_flow_field", "kind", icon="EMPTY_SINGLE_ARROW")
        draw_frame_range(layout, context.scene, settings)
        col = layout.column(align=True)
        col.prop(settings, "resolution")
        col.prop(settings, "curvature")
        col.prop(settings, "track_vertices")
        header, body = layout.panel("neural_sdf_evolution_advanced", default_closed=True)
        header.label(text="Advanced")
        if body is not None:
            draw_steps(body, settings, ENGINE_DEFAULT_STEPS["evolve"], "the engine's default")
            body.prop(context.scene.neural_sdf, "seed")


class NEURALSDF_PT_morph(NeuralSDFSidebar, bpy.types.Panel):
    bl_label = "Morph"
    bl_parent_id = "NEURALSDF_PT_main"

    def draw(self, context):
        layout = self.layout
        scene = context.scene
        settings = scene.neural_sdf_morph
        obj = context.active_object
        if obj is not None and obj.type == "EMPTY":
            draw_landmark(layout.box(), obj)
        if has_morph(obj):
            draw_morph(layout.box(), scene, obj)
        row = layout.row(align=True)
        row.operator("neural_sdf.morph", icon="MOD_SIMPLEDEFORM")
        row.prop(settings, "method", text="")
        pair = source_and_target(context)
        if pair is None:
            layout.label(text="Select the source, then the target (active)", icon="INFO")
        else:
            layout.label(text=f"'{pair[0].name}' to '{pair[1].name}'", icon="FORWARD")
        draw_frame_range(layout, context.scene, settings)
        layout.prop(settings, "resolution")
        row = layout.row()
        row.prop(scene.neural_sdf, "preset", text="Fits")
        row.prop(scene.neural_sdf, "fit_colors")
        flow_only = layout.column(align=True)
        flow_only.active = settings.method == "FLOW"
        flow_only.prop(settings, "animate_source")
        flow_only.prop(settings, "use_landmarks")
        if settings.use_landmarks:
            count = len(landmark_empties(scene))
            flow_only.label(text=f"{count} landmark empt{'y' if count == 1 else 'ies'} in the scene", icon="EMPTY_DATA")
        layout.operator("neural_sdf.add_landmark_pair", icon="EMPTY_AXIS")
        header, body = layout.panel("neural_sdf_morph_advanced", default_closed=True)
        header.label(text="Advanced")
        if body is not None:
            method = METHOD_NAMES[settings.method]
            draw_steps(body, settings, ENGINE_DEFAULT_STEPS["morph"][settings.method], f"the {method} default")
            body.prop(scene.neural_sdf, "seed")


def draw_frame_range(layout: bpy.types.UILayout, scene: bpy.types.Scene, settings) -> None:
    """The Scene Range switch and the frames that will be baked: the scene's range, or the bake's own fields."""
    col = layout.column(align=True)
    col.prop(settings, "use_scene_range")
    if settings.use_scene_range:
        start, end = settings.frame_range(scene)
        col.label(text=f"Frames {start} to {end} ({end - start + 1} frames)", icon="TIME")
    else:
        row = col.row(align=True)
        row.prop(settings, "frame_start")
        row.prop(settings, "frame_end")


def draw_steps(layout: bpy.types.UILayout, settings, default_steps: int, whose: str) -> None:
    """The Custom Steps switch and the steps that will run: its own field, or the default's count."""
    col = layout.column(align=True)
    col.prop(settings, "use_custom_steps")
    if settings.use_custom_steps:
        col.prop(settings, "steps")
    else:
        col.label(text=f"{default_steps} steps ({whose})")


def draw_field(layout: bpy.types.UILayout, obj: bpy.types.Object) -> None:
    """The active empty's flow field settings (any empty can become one)."""
    field = obj.neural_sdf_field
    layout.prop(field, "kind", text=f"'{obj.name}'")
    if field.kind == "NONE":
        return
    col = layout.column(align=True)
    col.prop(field, "strength")
    radius = col.row(align=True)
    radius.active = field.kind != "ROTATION"
    radius.prop(field, "radius")


def draw_baked(layout: bpy.types.UILayout, scene: bpy.types.Scene, obj: bpy.types.Object) -> None:
    """What the active baked evolution holds and which of its frames shows now."""
    evolution = obj.neural_sdf_evolution
    layout.label(text=evolution.summary, icon="INFO")
    if not stored_file(obj, evolution.model_path).is_file():
        layout.label(text="The evolution model file is missing", icon="ERROR")
    draw_frame_switch(layout, scene, obj, evolution.frame_count, evolution.time_end)


def draw_frame_switch(
    layout: bpy.types.UILayout, scene: bpy.types.Scene, obj: bpy.types.Object, frame_count: int, time_end: float
) -> None:
    """When the object's frame switch shows its frames (t = 0 to ``time_end``), and which one shows now."""
    modifier = frame_switch_modifier(obj)
    if modifier is None:
        layout.label(text="Its frame switch modifier is gone: every frame shows at once", icon="ERROR")
        return
    layout.prop(modifier, input_path(modifier, FRAME_START_INPUT), text="Start Frame")
    start = get_input(modifier, FRAME_START_INPUT)
    index = shown_frame(scene.frame_current, start, frame_count)
    layout.label(text=f"Frames {start} to {start + frame_count - 1}: t = 0 to {time_end:.4g}")
    layout.label(text=f"Frame {scene.frame_current} shows t = {time_end * index / max(frame_count - 1, 1):.4g}")


def draw_landmark(layout: bpy.types.UILayout, obj: bpy.types.Object) -> None:
    """The active empty's landmark settings (any empty can become one)."""
    landmark = obj.neural_sdf_landmark
    row = layout.row(align=True)
    row.prop(landmark, "role", text=f"'{obj.name}'")
    pair = row.row(align=True)
    pair.active = landmark.role != "NONE"
    pair.prop(landmark, "pair")


def draw_morph(layout: bpy.types.UILayout, scene: bpy.types.Scene, obj: bpy.types.Object) -> None:
    """How the active morph result was made and when it shows which frame."""
    morph = obj.neural_sdf_morph
    layout.label(text=morph.summary, icon="INFO")
    if morph.holds == "SHAPE_KEYS":
        start = morph.frame_start
        layout.label(text=f"Shape keys: t = 0 at frame {start} to t = 1 at frame {start + morph.frame_count - 1}")
        return
    if not stored_file(obj, morph.model_path).is_file():
        layout.label(text="The morph model file is missing", icon="ERROR")
    draw_frame_switch(layout, scene, obj, morph.frame_count, 1.0)


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


classes = (NEURALSDF_PT_main, NEURALSDF_PT_model, NEURALSDF_PT_curvature, NEURALSDF_PT_evolution, NEURALSDF_PT_morph)
