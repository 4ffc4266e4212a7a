"""The choices the panels offer, as EnumProperty items ``(identifier, name, description)``, and how empties are
drawn: pure data, so plain pytest can hold them against the engine (``tests/addon/test_contract.py``).

Where an item names an engine value, the identifier is that value (presets, curvature quantities, colour maps) or
maps onto it in one table (`addon.core.evolution.ENGINE_FIELD_KINDS`, `addon.core.morph.ENGINE_METHODS`)."""

import re

DEVICE_ITEMS = (
    ("auto", "Automatic", "A CUDA GPU when PyTorch sees one, else the CPU"),
    ("cpu", "CPU", "Always the CPU"),
    ("cuda", "CUDA", "The first CUDA GPU (fails when PyTorch sees none)"),
)
"""Where the engine runs (every job's ``device``), in the add-on's preferences."""

ENGINE_MODE_ITEMS = (
    ("LOCAL", "Local", "The engine runs on this computer, started by the add-on"),
    ("REMOTE", "Remote", "The engine runs on a server (python -m engine serve), e.g. a GPU machine on the network"),
)
"""Where the jobs run, in the preferences (`addon.core.remote`)."""

TORCH_BUILD_ITEMS = (
    ("AUTO", "Automatic", "CUDA where an NVIDIA driver is found (Linux, Windows), else the CPU build"),
    ("CPU", "CPU", "The CPU build (about 200 MB); on macOS the only build, which also uses the Apple GPU"),
    ("CUDA", "CUDA", "The CUDA 12.8 build (about 3 GB, NVIDIA GPUs with driver 525 or newer; not on macOS)"),
)
"""Which PyTorch build Set up engine installs (`addon.core.engine_env.choose_torch_build`), in the preferences."""

PRESET_ITEMS = (
    ("tiny", "Tiny", "2 x 64 network, 300 steps: seconds on a CPU, for previews"),
    ("fast", "Fast", "3 x 256 network, 2000 steps: the default"),
    ("quality", "Quality", "3 x 256 network, 3000 steps: finer detail, 1.5 times the time of Fast"),
)
"""The engine's presets (engine.fit.PRESETS); each description says "<hidden layers> x <width> network, <steps>
steps" of the preset."""
PRESET_STEPS = {
    identifier: int(re.match(r"\d+ x \d+ network, (\d+) steps\b", description).group(1))
    for identifier, _, description in PRESET_ITEMS
}
"""Training steps of each preset, as its tooltip says: what a fit runs when Custom Steps is off."""
ENGINE_DEFAULT_STEPS = {"evolve": 800, "morph": {"LEVELSET": 500, "FLOW": 1000}}
"""Training steps the engine runs when Custom Steps is off: an evolution's (engine.evolution.EvolveConfig().steps)
and a morph's by method (engine.morph.METHODS[method].config_class().steps)."""

FIT_MODE_ITEMS = (
    ("JOINED", "As One Shape", "Fit one SDF to the union of the selected objects"),
    ("SEPARATE", "Each Object", "Fit one SDF per selected object"),
)

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
"""The engine's colour maps (engine.protocol.COLORMAPS)."""

FLOW_ITEMS = (
    ("MCF", "Mean Curvature", "Smooth and shrink: each point moves inward at its curvature times the speed"),
    ("OFFSET", "Offset", "Grow (or shrink, with a negative speed) at a constant speed along the normals"),
    ("FIELDS", "Fields", "Carry the surface along the vector fields of the scene's flow field empties"),
)
"""What moves an evolving surface (the flows of addon.core.evolution.flow_params)."""
EVOLUTION_CURVATURE_ITEMS = (
    ("NONE", "None", "No colours"),
    *(item for item in QUANTITY_ITEMS if item[0] in ("mean", "gaussian", "k1", "k2")),
)
"""Curvature that can colour each baked frame (the evolve job's curvature names, or none)."""
FIELD_KIND_ITEMS = (
    ("NONE", "None", "Not a flow field"),
    ("SOURCE", "Source", "Pushes the surface away from the empty; the push peaks at the radius"),
    ("SINK", "Sink", "Pulls the surface towards the empty; the pull peaks at the radius"),
    ("TWIST", "Twist", "Twists about the empty's Z axis, faster with the height along it, within about the radius"),
    ("ROTATION", "Rotation", "Turns everything rigidly about the empty's Z axis"),
)
"""Kinds of flow field empty (keys of addon.core.evolution.ENGINE_FIELD_KINDS), or none."""
FIELD_DISPLAY = {"SOURCE": "SPHERE", "SINK": "SPHERE", "TWIST": "SINGLE_ARROW", "ROTATION": "SINGLE_ARROW"}
"""How a field empty is drawn: a sphere of its radius for a source or sink, an arrow along its axis otherwise."""

MORPH_METHOD_ITEMS = (
    ("LEVELSET", "Level Set", "Blend the two distance fields: the surface may split and merge (changes topology)"),
    ("FLOW", "Flow", "Carry the source along a smooth flow onto the target: keeps the source's topology"),
)
"""The morph methods (keys of addon.core.morph.ENGINE_METHODS)."""
LANDMARK_ROLE_ITEMS = (
    ("NONE", "None", "Not a landmark"),
    ("SOURCE", "Source", "A point on the source shape (t = 0)"),
    ("TARGET", "Target", "The point on the target shape (t = 1) where the source landmark of the same pair goes"),
)
"""Roles of a landmark empty (addon.core.morph.LANDMARK_ROLES), or none."""
LANDMARK_DISPLAY = {"SOURCE": "SPHERE", "TARGET": "CUBE"}
"""How a landmark empty is drawn: a sphere on the source, a cube on the target."""
MORPH_HOLDS_ITEMS = (
    ("NONE", "None", "Not made by Morph"),
    ("FRAMES", "Frames", "Every frame's mesh, the scene frame's shown by a Geometry Nodes frame switch"),
    ("SHAPE_KEYS", "Shape Keys", "The source's own mesh with one shape key per frame, animated"),
)
"""What an object made by Morph holds."""


def item_names(items: tuple) -> dict[str, str]:
    """The UI name of each identifier, e.g. ``{"mean": "Mean (H)", ...}``."""
    return {identifier: name for identifier, name, _ in items}
