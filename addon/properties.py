"""Settings and links stored in the .blend: the tool settings (Scene), an object's model, its baked evolution or
morph, its flow field or landmark (Object), a mesh's curvature legend (Mesh), and the running job's progress
(WindowManager, not saved)."""

from pathlib import Path

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    FloatVectorProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from .core.items import (
    COLORMAP_ITEMS,
    EVOLUTION_CURVATURE_ITEMS,
    FIELD_DISPLAY,
    FIELD_KIND_ITEMS,
    FIT_MODE_ITEMS,
    FLOW_ITEMS,
    LANDMARK_DISPLAY,
    LANDMARK_ROLE_ITEMS,
    MORPH_HOLDS_ITEMS,
    MORPH_METHOD_ITEMS,
    PRESET_ITEMS,
    QUANTITY_ITEMS,
)

BLEND_RELATIVE_PATH = {"PATH_SUPPORTS_BLEND_RELATIVE"} if bpy.app.version >= (4, 5, 0) else set()
"""Blender 4.5 and later warn about "//" paths in a FILE_PATH property that does not declare it takes them."""

IDENTITY = ((1.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0), (0.0, 0.0, 0.0, 1.0))


def has_evolution(obj: bpy.types.Object | None) -> bool:
    return obj is not None and obj.type == "MESH" and bool(obj.neural_sdf_evolution.model_path)


def has_morph(obj: bpy.types.Object | None) -> bool:
    return obj is not None and obj.type == "MESH" and obj.neural_sdf_morph.holds != "NONE"


def is_flow_field(obj: bpy.types.Object | None) -> bool:
    return obj is not None and obj.type == "EMPTY" and obj.neural_sdf_field.kind != "NONE"


def is_landmark(obj: bpy.types.Object | None) -> bool:
    return obj is not None and obj.type == "EMPTY" and obj.neural_sdf_landmark.role != "NONE"


def model_holders(obj: bpy.types.Object) -> list:
    """The object's property groups that point to a model file (a model_path each)."""
    return [obj.neural_sdf, obj.neural_sdf_evolution, obj.neural_sdf_morph]


def has_model(obj: bpy.types.Object | None) -> bool:
    return obj is not None and obj.type == "MESH" and bool(obj.neural_sdf.model_path)


def model_file(obj: bpy.types.Object) -> Path:
    """The object's model file as an absolute path."""
    return stored_file(obj, obj.neural_sdf.model_path)


def stored_file(obj: bpy.types.Object, path: str) -> Path:
    """A file path stored on the object, made absolute (relative paths are beside the .blend or its library)."""
    return Path(bpy.path.abspath(path, library=obj.library))


def _model_object_poll(_settings, obj) -> bool:
    return has_model(obj)


MAX_LEVELS = 4
"""Most levels of detail a fit trains (the engine's `engine.multires_fit.MAX_LEVELS`)."""


def _clamp_level(link, _context) -> None:
    """Keep an object's level within its model's levels (the slider's range is the same for every object)."""
    if link.level > link.levels - 1:
        link.level = link.levels - 1


class NeuralSDFSettings(bpy.types.PropertyGroup):
    """Tool settings of the Neural SDF panel (Scene.neural_sdf)."""

    preset: EnumProperty(
        name="Preset", items=PRESET_ITEMS, default="fast", description="Network size and training length"
    )
    use_custom_steps: BoolProperty(
        name="Custom Steps", description="Train for another number of steps than the preset's"
    )
    steps: IntProperty(name="Steps", min=1, soft_max=20000, default=500, description="Optimizer steps")
    resolution: IntProperty(
        name="Resolution", min=16, max=1024, soft_max=512, default=128,
        description="Marching-cubes grid points per axis, for Fit and Re-extract (memory and time grow with its cube)",
    )  # fmt: skip
    fit_mode: EnumProperty(name="Objects", items=FIT_MODE_ITEMS, default="JOINED")
    levels: IntProperty(
        name="Levels", min=1, max=MAX_LEVELS, default=1,
        description=(
            "Levels of detail in one model: 1, one network; more, a small smooth network and finer residual ones "
            "in bands around it (Re-extract at any level, Make LOD Objects). The levels share Levels x Steps steps: "
            "the coarser ones half the steps each, the finest the rest"
        ),
    )  # fmt: skip
    hide_sources: BoolProperty(
        name="Hide Sources", default=True,
        description=(
            "Hide the objects a Fit, Evolution or Morph is made from in the viewport, so the result that lands on "
            "them does not flicker against them (undo shows them again; nothing else about them changes)"
        ),
    )  # fmt: skip
    live_preview: BoolProperty(
        name="Live Preview", default=True,
        description=(
            "Show the surface as it forms while a fit trains, in a temporary wireframe object that the result "
            "replaces (a coarse extraction every few seconds, about 5 % of the training time)"
        ),
    )  # fmt: skip
    fit_colors: BoolProperty(
        name="Colours", default=True,
        description=(
            "Where a source of a Fit or Morph has colours (its active colour attribute, the Base Color image of its "
            "material through its active UV map, or a point cloud's colour attribute), fit them too: the result, "
            "and what Re-extract, Bake Evolution and Make LOD Objects make of it, gets a colour attribute and, "
            "without a material, one that shows it"
        ),
    )  # fmt: skip
    tuner: BoolProperty(
        name="Frequency Control (TUNER)",
        description=(
            "TUNER's frequency control: a frozen first layer of integer frequencies and bounded hidden weights keep "
            "the network from making frequencies the surface does not have. Cleaner inside and around the surface "
            "(offsets, evolutions and curvature away from it; fewer stray pieces on short fits); it can smooth away "
            "fine detail on some shapes. Needs Levels 1"
        ),
    )  # fmt: skip
    seed: IntProperty(
        name="Seed", min=0, description="Random seed: the same seed, mesh and settings give the same model"
    )
    quantity: EnumProperty(name="Quantity", items=QUANTITY_ITEMS, default="mean", description="What the colours show")
    colormap: EnumProperty(name="Colour Map", items=COLORMAP_ITEMS, default="auto")
    use_custom_range: BoolProperty(
        name="Custom Range", description="Set the range the colour map spans instead of a robust automatic one"
    )
    range_low: FloatProperty(name="Low", default=-1.0, description="Value shown with the low end of the map")
    range_high: FloatProperty(name="High", default=1.0, description="Value shown with the high end of the map")
    project: BoolProperty(
        name="Project onto Surface",
        description="Evaluate at the vertices moved onto the model's surface (for a mesh that is not the model's own)",
    )
    bake_size: IntProperty(
        name="Size", min=8, max=8192, soft_max=4096, default=1024,
        description="Width and height in texels of the images Bake to Image writes",
    )
    model_object: PointerProperty(
        name="Model", type=bpy.types.Object, poll=_model_object_poll,
        description="Fitted object whose model colours a mesh that has no model of its own",
    )  # fmt: skip


class NeuralSDFObjectLink(bpy.types.PropertyGroup):
    """The model an object was made from (Object.neural_sdf)."""

    model_path: StringProperty(
        name="Model File", subtype='FILE_PATH', options=BLEND_RELATIVE_PATH,
        description="The trained model; // paths are relative to the .blend's folder",
    )  # fmt: skip
    model_to_object: FloatVectorProperty(
        name="Model to Object", size=(4, 4), subtype='MATRIX', default=IDENTITY,
        description="Maps the model's coordinates (world space when it was fitted) to the object's local space",
    )  # fmt: skip
    fit_summary: StringProperty(name="Fit", description="How the model was trained")
    levels: IntProperty(name="Levels", min=1, max=MAX_LEVELS, default=1, description="Levels of detail the model holds")
    level: FloatProperty(
        name="Level", min=0.0, max=MAX_LEVELS - 1, default=0.0, update=_clamp_level,
        description="Level of detail Re-extract uses: 0 the coarsest, Levels - 1 the finest; between two levels a blend",
    )  # fmt: skip


class FrameRangeSettings:
    """Settings of a bake over frames: the scene's range (use_scene_range), or their own frame_start to frame_end."""

    def frame_range(self, scene: bpy.types.Scene) -> tuple[int, int]:
        return (scene.frame_start, scene.frame_end) if self.use_scene_range else (self.frame_start, self.frame_end)


class NeuralSDFEvolutionSettings(FrameRangeSettings, bpy.types.PropertyGroup):
    """Settings of Bake Surface Evolution (Scene.neural_sdf_evolution). Time is the flow's own unit: 0 at the start
    frame, End Time at the end frame."""

    flow: EnumProperty(name="Flow", items=FLOW_ITEMS, default="MCF", description="What moves the surface")
    curvature_speed: FloatProperty(
        name="Speed", min=0.0, soft_max=1.0, default=0.05, precision=4,
        description=(
            "Lambda, in length² per unit of time: a sphere of radius r shrinks as sqrt(r² - 4 lambda t) and "
            "vanishes at t = r² / (4 lambda)"
        ),
    )  # fmt: skip
    offset_speed: FloatProperty(
        name="Speed", subtype='DISTANCE', soft_min=-1.0, soft_max=1.0, default=0.2,
        description="Outward distance per unit of time; negative shrinks",
    )  # fmt: skip
    time_end: FloatProperty(
        name="End Time", soft_min=-1.0, soft_max=10.0, default=1.0,
        description=(
            "Flow time at the end frame (0 at the start frame). Negative runs the flow backwards: under mean "
            "curvature that sharpens, which stays stable only for a short time"
        ),
    )  # fmt: skip
    use_scene_range: BoolProperty(
        name="Scene Range", default=True, description="Bake one frame for each frame of the scene's range"
    )
    frame_start: IntProperty(name="Start", default=1, description="First baked frame (flow time 0)")
    frame_end: IntProperty(name="End", default=48, description="Last baked frame (flow time End Time)")
    resolution: IntProperty(
        name="Resolution", min=16, max=512, soft_max=256, default=96,
        description="Marching-cubes grid points per axis of every frame (memory and time grow with its cube)",
    )  # fmt: skip
    curvature: EnumProperty(
        name="Colours", items=EVOLUTION_CURVATURE_ITEMS, default="NONE",
        description="Colour every frame by a curvature (each frame spans its own range)",
    )  # fmt: skip
    track_vertices: BoolProperty(
        name="Track Vertices",
        description=(
            "Also add the first frame's mesh carried along the flow, one shape key per frame (one topology for "
            "exporters), for as long as it stays valid: the report says at which frame it stops and why"
        ),
    )
    use_custom_steps: BoolProperty(
        name="Custom Steps", description="Train the evolution for another number of steps than the engine's default"
    )
    steps: IntProperty(name="Steps", min=1, soft_max=20000, default=600, description="Optimizer steps")


class NeuralSDFMorphSettings(FrameRangeSettings, bpy.types.PropertyGroup):
    """Settings of Morph (Scene.neural_sdf_morph): the source is at the start frame (t = 0), the target at the end
    frame (t = 1). Both shapes are fitted with the Fit settings (preset, custom steps, seed)."""

    method: EnumProperty(name="Method", items=MORPH_METHOD_ITEMS, default="LEVELSET", description="How to morph")
    use_scene_range: BoolProperty(
        name="Scene Range", default=True, description="Bake one frame for each frame of the scene's range"
    )
    frame_start: IntProperty(name="Start", default=1, description="First baked frame: the source (t = 0)")
    frame_end: IntProperty(name="End", default=48, description="Last baked frame: the target (t = 1)")
    resolution: IntProperty(
        name="Resolution", min=16, max=512, soft_max=256, default=96,
        description="Marching-cubes grid points per axis of every frame (memory and time grow with its cube)",
    )  # fmt: skip
    animate_source: BoolProperty(
        name="Animate Source Mesh", default=True,
        description=(
            "Flow only: also add a copy of the source's mesh (modifiers applied) with one shape key per frame, "
            "animated: the same vertices and faces in every frame"
        ),
    )  # fmt: skip
    use_landmarks: BoolProperty(
        name="Use Landmarks",
        description=(
            "Flow only: send each source landmark empty to the target landmark empty of the same pair id "
            "(Add Landmark Pair)"
        ),
    )
    use_custom_steps: BoolProperty(
        name="Custom Steps", description="Train the morph for another number of steps than the method's default"
    )
    steps: IntProperty(name="Steps", min=1, soft_max=20000, default=500, description="Optimizer steps of the morph")


def _show_field(field, _context) -> None:
    """Draw a field empty as what it does: a sphere of its radius, or an arrow along its axis."""
    obj = field.id_data
    if field.kind in FIELD_DISPLAY:
        obj.empty_display_type = FIELD_DISPLAY[field.kind]
    obj.empty_display_size = field.radius


class NeuralSDFField(bpy.types.PropertyGroup):
    """A flow field placed by an empty (Object.neural_sdf_field): centred on the empty, about its world Z axis.
    The radius is in the empty's own units: its largest world scale multiplies it."""

    kind: EnumProperty(name="Field", items=FIELD_KIND_ITEMS, default="NONE", update=_show_field)
    strength: FloatProperty(
        name="Strength", soft_min=-10.0, soft_max=10.0, default=0.5,
        description=(
            "Source and sink: the largest speed, in length per unit of time; twist and rotation: the turn rate in "
            "radians per unit of time (negative turns the other way)"
        ),
    )  # fmt: skip
    radius: FloatProperty(
        name="Radius", subtype='DISTANCE', min=1e-4, soft_max=10.0, default=0.5, update=_show_field,
        description="Where a source or sink pushes hardest, and how far a twist reaches (rotation: unused)",
    )  # fmt: skip


class NeuralSDFEvolution(bpy.types.PropertyGroup):
    """What a baked surface evolution holds (Object.neural_sdf_evolution): every frame is part of the mesh, and its
    Geometry Nodes modifier shows the current one."""

    model_path: StringProperty(
        name="Evolution Model", subtype='FILE_PATH', options=BLEND_RELATIVE_PATH,
        description="The trained time-dependent model; // paths are relative to the .blend's folder",
    )  # fmt: skip
    time_end: FloatProperty(name="End Time", description="Flow time of the last frame (the first is at 0)")
    frame_count: IntProperty(name="Frames", description="Frames baked into the mesh")
    summary: StringProperty(name="Evolution", description="How the evolution was made")


def _show_landmark(landmark, _context) -> None:
    """Draw a landmark empty as its role: a sphere on the source, a cube on the target."""
    if landmark.role in LANDMARK_DISPLAY:
        landmark.id_data.empty_display_type = LANDMARK_DISPLAY[landmark.role]


class NeuralSDFLandmark(bpy.types.PropertyGroup):
    """A morph landmark placed by an empty (Object.neural_sdf_landmark): the source landmark goes to the target
    landmark of the same pair id, at the empties' world locations."""

    role: EnumProperty(name="Landmark", items=LANDMARK_ROLE_ITEMS, default="NONE", update=_show_landmark)
    pair: IntProperty(
        name="Pair", min=1, default=1, description="The source and the target landmark of one pair share this id"
    )


class NeuralSDFMorph(bpy.types.PropertyGroup):
    """What a morph result holds (Object.neural_sdf_morph): every frame's mesh with a frame switch modifier, or the
    source's mesh with a shape key per frame."""

    holds: EnumProperty(name="Holds", items=MORPH_HOLDS_ITEMS, default="NONE")
    model_path: StringProperty(
        name="Morph Model", subtype='FILE_PATH', options=BLEND_RELATIVE_PATH,
        description="The trained morph (on the frames object); // paths are relative to the .blend's folder",
    )  # fmt: skip
    method: EnumProperty(name="Method", items=MORPH_METHOD_ITEMS)
    frame_start: IntProperty(
        name="Start Frame", description="Scene frame of the source (t = 0) when made; a frame switch can shift it"
    )
    frame_count: IntProperty(name="Frames", description="Frames baked, t evenly from 0 to 1")
    summary: StringProperty(name="Morph", description="How the morph was made")


class NeuralSDFCurvatureLegend(bpy.types.PropertyGroup):
    """What a mesh's curvature colours show (Mesh.neural_sdf_curvature): kept with its attributes."""

    quantity: StringProperty(name="Quantity")
    colormap: StringProperty(name="Colour Map")
    low: FloatProperty(name="Low")
    high: FloatProperty(name="High")


class NeuralSDFJobStatus(bpy.types.PropertyGroup):
    """Progress of the running engine job, and what the last save could not copy, for the panel
    (WindowManager.neural_sdf_job: never saved)."""

    is_running: BoolProperty()
    text: StringProperty()
    """The whole progress line (the status bar)."""
    short_text: StringProperty()
    """The same, short enough for the panel's progress bar at the default sidebar width."""
    fraction: FloatProperty(subtype="FACTOR", min=0.0, max=1.0)
    save_warning: StringProperty()
    """Set by the save handler when it left model paths as they were (they named files the add-on did not write)."""


classes = (
    NeuralSDFSettings,
    NeuralSDFObjectLink,
    NeuralSDFEvolutionSettings,
    NeuralSDFField,
    NeuralSDFEvolution,
    NeuralSDFMorphSettings,
    NeuralSDFLandmark,
    NeuralSDFMorph,
    NeuralSDFCurvatureLegend,
    NeuralSDFJobStatus,
)

ATTACHED = (
    (bpy.types.Scene, "neural_sdf", NeuralSDFSettings),
    (bpy.types.Object, "neural_sdf", NeuralSDFObjectLink),
    (bpy.types.Scene, "neural_sdf_evolution", NeuralSDFEvolutionSettings),
    (bpy.types.Object, "neural_sdf_field", NeuralSDFField),
    (bpy.types.Object, "neural_sdf_evolution", NeuralSDFEvolution),
    (bpy.types.Scene, "neural_sdf_morph", NeuralSDFMorphSettings),
    (bpy.types.Object, "neural_sdf_landmark", NeuralSDFLandmark),
    (bpy.types.Object, "neural_sdf_morph", NeuralSDFMorph),
    (bpy.types.Mesh, "neural_sdf_curvature", NeuralSDFCurvatureLegend),
    (bpy.types.WindowManager, "neural_sdf_job", NeuralSDFJobStatus),
)
"""Where each property group hangs (owner type, attribute name, group)."""
