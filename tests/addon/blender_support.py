"""Helpers of the bpy-module tests (test_blender*.py): the test preferences, small scenes, snapshots of what a
failed job must leave alone, undo in background mode, test twins of the operators that inject events between modal()
steps, and a recording layout to draw panels into. Their fixtures are in conftest.py."""

from __future__ import annotations

import contextlib
import sys
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
EXTENSIONS_REPO = "user_default"
PACKAGE = f"bl_ext.{EXTENSIONS_REPO}.neural_sdf"
SPHERE_RADIUS = 0.8
SPHERE_CENTER = (1.0, 2.0, 0.5)
FIT_STEPS = 150
RESOLUTION = 32


def use_test_preferences(cache_dir: Path) -> None:
    """Preferences are reset when the add-on is disabled, so each test sets them. One engine thread: the tiny
    networks here gain nothing from more, and one thread stays fast on a busy 2-core machine."""
    preferences = prefs()
    preferences.cache_dir, preferences.device, preferences.threads = str(cache_dir), "cpu", 1
    preferences.hang_timeout, preferences.python_path = 60.0, ""
    preferences.engine_mode = "LOCAL"


def prefs():
    import bpy

    return bpy.context.preferences.addons[PACKAGE].preferences


def addon_module(name: str):
    return sys.modules[f"{PACKAGE}.{name}"]


def empty_scene_with_tiny_fit(bpy, cache_dir) -> None:
    bpy.ops.wm.read_homefile(use_empty=True)
    settings = bpy.context.scene.neural_sdf
    settings.preset, settings.use_custom_steps, settings.steps, settings.resolution = (
        "tiny",
        True,
        FIT_STEPS,
        RESOLUTION,
    )
    use_test_preferences(cache_dir)



def add_sphere(bpy, name="Sphere", radius=SPHERE_RADIUS, location=SPHERE_CENTER):
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=4, radius=radius, location=location)
    bpy.context.active_object.name = name
    return bpy.context.active_object


def add_cube(bpy, name="Cube", location=(-1.5, 0.0, 0.0)):
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=location)
    obj = bpy.context.active_object
    obj.name = name
    obj.rotation_euler = (0.0, 0.0, 0.3)
    obj.modifiers.new("Bevel", "BEVEL").width = 0.1  # the fit must see the evaluated mesh
    return obj


def select_only(bpy, *objects):
    bpy.ops.object.select_all(action="DESELECT")
    for obj in objects:
        obj.select_set(True)
    bpy.context.view_layer.objects.active = objects[-1]


def world_bounds(bpy, obj) -> np.ndarray:
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    points = np.array([evaluated.matrix_world @ vertex.co for vertex in evaluated.data.vertices])
    return np.stack([points.min(axis=0), points.max(axis=0)])


def snapshot(bpy) -> dict:
    """Everything a failed job must leave as it was."""
    objects = {
        obj.name: (obj.type, tuple(map(tuple, obj.matrix_world)), obj.data.name if obj.data else None)
        for obj in bpy.data.objects
    }
    meshes = {}
    for mesh in bpy.data.meshes:
        positions = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", positions)
        meshes[mesh.name] = (positions.tobytes(), len(mesh.polygons), sorted(mesh.attributes.keys()))
    return {"objects": objects, "meshes": meshes, "materials": sorted(bpy.data.materials.keys())}


@contextlib.contextmanager
def undo_enabled(bpy):
    """Blender's undo in background mode: a window context and an explicitly started undo stack. Not after opening
    a file in the same process: in background mode Blender does not start the undo stack again from the loaded
    file (wm_file_read_post does it only with a UI), so its memfile steps build on the previous file's and undoing
    one restores freed data (a Re-extract of a mesh with a material loaded from the file segfaults; one without
    does not revert). With a UI the stack starts from each loaded file."""
    window = bpy.context.window_manager.windows[0]
    area = next(area for area in window.screen.areas if area.type == "VIEW_3D")
    bpy.ops.ed.undo_push(message="start the undo stack")
    with bpy.context.temp_override(window=window, screen=window.screen, area=area):
        bpy.ops.ed.undo_push(message="before the test")
        yield


@contextlib.contextmanager
def scripted(bpy, operator_name: str, on_modal):
    """A test twin of an add-on operator: execute() drives the real modal(), and ``on_modal(operator)`` runs before
    each modal() step and may return an event to hand modal() first (then the timer tick, if it passed the event
    through). Yields the operator function and the (event type, modal() result) pairs of its steps."""
    module, class_name = {
        "fit": ("operators.fit", "NEURALSDF_OT_fit"),
        "curvature_colors": ("operators.curvature_colors", "NEURALSDF_OT_curvature_colors"),
        "bake_evolution": ("operators.bake_evolution", "NEURALSDF_OT_bake_evolution"),
        "morph": ("operators.morph", "NEURALSDF_OT_morph"),
        "check_engine": ("operators.check_engine", "NEURALSDF_OT_check_engine"),
    }[operator_name]
    base = getattr(addon_module(module), class_name)
    steps = []

    def modal(self, context, tick):
        for event in (on_modal(self), tick):
            if event is not None:
                result = base.modal(self, context, event)
                steps.append((event.type, result))
                if result != {"PASS_THROUGH"}:
                    return result
        return result

    # A sibling with the same bases and methods, not a subclass: unregistering a subclass of a registered operator
    # breaks the registered one.
    namespace = {name: value for name, value in vars(base).items() if not name.startswith("__") and name != "bl_rna"}
    namespace.update(bl_idname=f"neural_sdf_test.{operator_name}", bl_label=f"Test {base.bl_label}", modal=modal)
    twin = type(f"NEURALSDFTEST_OT_{operator_name}", base.__bases__, namespace)
    bpy.utils.register_class(twin)
    try:
        yield getattr(bpy.ops.neural_sdf_test, operator_name), steps
    finally:
        bpy.utils.unregister_class(twin)


def reports(capfd) -> list[str]:
    """The operator reports Blender printed (background mode prints them to stdout)."""
    return [line for line in capfd.readouterr().out.splitlines() if line.startswith(("Info: ", "Warning: ", "Error: "))]


def event(event_type: str):
    return types.SimpleNamespace(type=event_type, value="PRESS")


def once_training(action, stage: str = "fit"):
    """An on_modal hook that calls ``action(operator)`` once, at the first modal() step after training (the progress
    ``stage``: "fit", "evolve" or "morph") started."""
    done = []

    def hook(operator):
        progress = operator.session.progress
        if not done and progress is not None and progress.stage == stage and progress.step > 0:
            done.append(True)
            return action(operator)
        return None

    return hook


class LayoutRecorder:
    """Stands in for UILayout in draw(): records what is drawn, and fails on unknown properties, operators, icons."""

    def __init__(self, log: list):
        self.log = log

    def _child(self, *_args, **_kwargs):
        return LayoutRecorder(self.log)

    row = column = box = split = _child

    def panel(self, idname, default_closed=False):
        return LayoutRecorder(self.log), LayoutRecorder(self.log)

    def prop(self, data, name, **kwargs):
        if name.startswith('["'):  # an ID property, e.g. a Geometry Nodes modifier's input
            assert name[2:-2] in data.keys(), f"{data} has no ID property {name!r}"
        else:
            assert name in data.bl_rna.properties, f"{data} has no property {name!r}"
        self._check_icon(kwargs.get("icon"))
        self.log.append(("prop", name))

    def operator(self, idname, **kwargs):
        self._operator(idname)
        self._check_icon(kwargs.get("icon"))
        self.log.append(("operator", idname))

    def operator_menu_enum(self, idname, property, **kwargs):
        assert property in self._operator(idname).get_rna_type().properties, f"{idname} has no {property!r}"
        self._check_icon(kwargs.get("icon"))
        self.log.append(("operator_menu_enum", idname, property))

    @staticmethod
    def _operator(idname: str):
        category, name = idname.split(".")
        operators = getattr(__import__("bpy").ops, category)
        assert name in dir(operators), f"no operator {idname}"
        return getattr(operators, name)

    def label(self, text="", icon="NONE"):
        self._check_icon(icon)
        self.log.append(("label", text))

    def progress(self, factor=0.0, type="BAR", text=""):
        self.log.append(("progress", text, factor))

    @staticmethod
    def _check_icon(icon):
        import bpy

        if icon is not None:
            assert icon in bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items, f"no icon {icon}"


def draw(panel_class, data=None) -> list:
    import bpy

    log = []

    class Drawn:
        layout = LayoutRecorder(log)

        def __getattr__(self, name):
            return getattr(data, name)

    panel_class.draw(Drawn(), bpy.context)
    return log
