"""Settings and links stored in the .blend: the tool settings (Scene), an object's model (Object), a mesh's
curvature legend (Mesh), and the running job's progress (WindowManager, not saved)."""

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

PRESET_ITEMS = (
    ("tiny", "Tiny", "2 x 64 network, 300 steps: seconds on a CPU, for previews"),
    ("fast", "Fast", "3 x 256 network, 2000 steps: the default"),
    ("quality", "Quality", "3 x 256 network, 6000 steps: finer detail, three times the time of Fast"),
)
"""The engine's presets (engine.fit.PRESETS)."""

QUANTITY_ITEMS = (
    ("mean", "Mean (H)", "Mean curvature H = (k1 + k2) / 2: positive where convex, negative where concave"),
    ("gaussian", "Gaussian (K)", "Gaussian curvature K = k1 k2: positive on domes and dents, negative on saddles"),
    ("k1", "Max Principal (k1)", "The larger principal curvature"),
    ("k2", "Min Principal (k2)", "The smaller principal curvature"),
    ("curvedness", "Curvedness", "sqrt((k1^2 + k2^2) / 2): how strongly the surface bends, whatever the sign"),
)
"""Quantities that can colour a mesh (names of engine.colormaps.QUANTITIES)."""

COLORMAP_ITEMS = (
    ("auto", "Automatic", "Diverging for signed quantities, sequential for magnitudes"),
    ("diverging", "Diverging", "Blue, white at zero, red: the range is symmetric unless set"),
    ("sequential", "Sequential", "Viridis, dark purple to yellow, over the range"),
)

BLEND_RELATIVE_PATH = {"PATH_SUPPORTS_BLEND_RELATIVE"} if bpy.app.version >= (4, 5, 0) else set()
"""Blender 4.5 and later warn about "//" paths in a FILE_PATH property that does not declare it takes them."""

IDENTITY = ((1.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0), (0.0, 0.0, 0.0, 1.0))


def has_model(obj: bpy.types.Object | None) -> bool:
    return obj is not None and obj.type == "MESH" and bool(obj.neural_sdf.model_path)


def model_file(obj: bpy.types.Object) -> Path:
    """The object's model file as an absolute path (relative paths are beside the .blend or its library)."""
    return Path(bpy.path.abspath(obj.neural_sdf.model_path, library=obj.library))


def _model_object_poll(_settings, obj) -> bool:
    return has_model(obj)


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
    fit_mode: EnumProperty(
        name="Objects",
        items=(
            ("JOINED", "As One Shape", "Fit one SDF to the union of the selected objects"),
            ("SEPARATE", "Each Object", "Fit one SDF per selected object"),
        ),
        default="JOINED",
    )
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


class NeuralSDFCurvatureLegend(bpy.types.PropertyGroup):
    """What a mesh's curvature colours show (Mesh.neural_sdf_curvature): kept with its attributes."""

    quantity: StringProperty(name="Quantity")
    colormap: StringProperty(name="Colour Map")
    low: FloatProperty(name="Low")
    high: FloatProperty(name="High")


class NeuralSDFJobStatus(bpy.types.PropertyGroup):
    """Progress of the running engine job, for the panel (WindowManager.neural_sdf_job: never saved)."""

    is_running: BoolProperty()
    text: StringProperty()
    fraction: FloatProperty(subtype="FACTOR", min=0.0, max=1.0)


classes = (NeuralSDFSettings, NeuralSDFObjectLink, NeuralSDFCurvatureLegend, NeuralSDFJobStatus)

ATTACHED = (
    (bpy.types.Scene, "neural_sdf", NeuralSDFSettings),
    (bpy.types.Object, "neural_sdf", NeuralSDFObjectLink),
    (bpy.types.Mesh, "neural_sdf_curvature", NeuralSDFCurvatureLegend),
    (bpy.types.WindowManager, "neural_sdf_job", NeuralSDFJobStatus),
)
"""Where each property group hangs (owner type, attribute name, group)."""
