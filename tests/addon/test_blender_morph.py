"""Morph in Blender (issue #6): a small sphere (source, t = 0) morphed into a concentric large one (target, active,
t = 1) by the engine's morph job, baked into one object whose frame switch shows one frame at a time (level set), and
with the flow method a shape-keyed copy of the source's own mesh; landmark empties; refusals, cancel and undo.

Both shapes are fitted for 100 steps of the tiny preset and the morph trains for 20 steps: the frames go the right
way (the engine's own tests check the methods' accuracy).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("bpy") is None:
    pytest.skip("needs Blender's Python module: pip install bpy==5.0.1", allow_module_level=True)

from .blender_support import (  # noqa: E402
    addon_module,
    draw,
    empty_scene_with_tiny_fit,
    event,
    once_training,
    prefs,
    reports,
    scripted,
    select_only,
    snapshot,
    undo_enabled,
    use_test_preferences,
)

CENTER = np.array([0.5, -0.3, 0.2])
SMALL_RADIUS, LARGE_RADIUS = 0.5, 0.9
FRAME_START, FRAME_END = 1, 3
FIT_STEPS = 100
MORPH_STEPS = 20
MORPH_RESOLUTION = 24
MORPHED = "Small to Large Morph"
KEYED = "Small to Large Shape Keys"


def two_spheres(bpy, cache_dir, method: str):
    """An empty scene with the small sphere (source, a UV sphere: quads) and the large one (target, an icosphere)
    selected, the target active, and small morph settings (frames 1 to 3)."""
    empty_scene_with_tiny_fit(bpy, cache_dir)
    scene = bpy.context.scene
    scene.neural_sdf.steps = FIT_STEPS
    settings = scene.neural_sdf_morph
    settings.method, settings.use_scene_range, settings.frame_start, settings.frame_end = (
        method, False, FRAME_START, FRAME_END
    )  # fmt: skip
    settings.resolution, settings.use_custom_steps, settings.steps = MORPH_RESOLUTION, True, MORPH_STEPS
    bpy.ops.mesh.primitive_uv_sphere_add(segments=32, ring_count=16, radius=SMALL_RADIUS, location=CENTER)
    small = bpy.context.active_object
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=4, radius=LARGE_RADIUS, location=CENTER)
    large = bpy.context.active_object
    small.name, large.name = "Small", "Large"
    select_only(bpy, small, large)
    scene.frame_set(FRAME_START)
    return small, large


def evaluated_world(bpy, obj, frame: float) -> tuple[np.ndarray, object]:
    """World positions of the evaluated object's vertices at a scene frame (with subframe), and its evaluated mesh."""
    bpy.context.scene.frame_set(int(frame), subframe=frame - int(frame))
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    mesh = evaluated.data
    positions = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", positions)
    world = np.array(evaluated.matrix_world)
    return positions.reshape(-1, 3) @ world[:3, :3].T + world[:3, 3], mesh


def mean_radius(points: np.ndarray) -> float:
    return float(np.linalg.norm(points - CENTER, axis=1).mean())


@pytest.fixture(scope="module")
def morphed_blend(bpy, cache_dir, tmp_path_factory) -> Path:
    """A saved .blend holding the two spheres and their level-set morph (morphed once for the module)."""
    two_spheres(bpy, cache_dir, "LEVELSET")
    assert bpy.ops.neural_sdf.morph() == {"FINISHED"}
    for name in ("Small", "Large"):
        bpy.data.objects[name].hide_set(False)  # Hide Sources hid them; the panel test selects them
    path = tmp_path_factory.mktemp("morph") / "morph.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    return path


def test_a_level_set_morph_grows_the_sphere_one_frame_at_a_time_and_survives_reload(bpy, morphed_blend, cache_dir):
    use_test_preferences(cache_dir)
    bpy.ops.wm.open_mainfile(filepath=str(morphed_blend))
    morphed = bpy.data.objects[MORPHED]
    assert np.allclose(np.array(morphed.matrix_world), np.eye(4))
    frame_attribute = addon_module("frame_switch").FRAME_ATTRIBUTE
    radii = []
    for index, frame in enumerate(range(FRAME_START, FRAME_END + 1)):
        points, mesh = evaluated_world(bpy, morphed, frame)
        indices = np.empty(len(mesh.vertices), np.intc)
        mesh.attributes[frame_attribute].data.foreach_get("value", indices)
        assert len(points) > 100 and set(indices) == {index}
        radii.append(mean_radius(points))
    assert radii[0] == pytest.approx(SMALL_RADIUS, abs=0.04)
    assert radii[-1] == pytest.approx(LARGE_RADIUS, abs=0.04)
    assert radii[0] < radii[1] < radii[2], radii

    morph = morphed.neural_sdf_morph
    assert (morph.holds, morph.method, morph.frame_start, morph.frame_count) == ("FRAMES", "LEVELSET", 1, 3)
    assert morph.summary.startswith("Level Set from 'Small' to 'Large': tiny fits ")
    assert morph.model_path.startswith("//morph_neural_sdf/Small_to_Large_Morph-")
    assert (morphed_blend.parent / morph.model_path[2:]).is_file()
    modifier = addon_module("frame_switch").frame_switch_modifier(morphed)
    assert modifier.name == "Morph"
    assert KEYED not in bpy.data.objects  # the level-set method has no shape-keyed copy
    assert not morphed.neural_sdf.model_path and not morphed.neural_sdf_evolution.model_path


def test_a_flow_morph_with_landmarks_animates_a_copy_of_the_source_and_undoes(bpy, cache_dir, capfd, tmp_path):
    small, large = two_spheres(bpy, cache_dir, "FLOW")
    scene = bpy.context.scene
    settings = scene.neural_sdf_morph
    settings.animate_source, settings.use_landmarks = True, True
    source_world, _ = evaluated_world(bpy, small, FRAME_START)
    scene.cursor.location = CENTER + (SMALL_RADIUS, 0.0, 0.0)
    assert bpy.ops.neural_sdf.add_landmark_pair(offset=(LARGE_RADIUS - SMALL_RADIUS, 0.0, 0.0)) == {"FINISHED"}
    landmarks = {obj.name: obj for obj in bpy.data.objects if obj.type == "EMPTY"}
    assert sorted(landmarks) == ["Landmark 1 Source", "Landmark 1 Target"]
    target_landmark = landmarks["Landmark 1 Target"]
    assert bpy.context.active_object == target_landmark and target_landmark.empty_display_type == "CUBE"
    assert (target_landmark.neural_sdf_landmark.role, target_landmark.neural_sdf_landmark.pair) == ("TARGET", 1)
    assert tuple(target_landmark.location) == pytest.approx(tuple(CENTER + (LARGE_RADIUS, 0.0, 0.0)))
    select_only(bpy, small, large)
    before = snapshot(bpy)
    capfd.readouterr()
    with undo_enabled(bpy):
        assert bpy.ops.neural_sdf.morph() == {"FINISHED"}
        (message,) = reports(capfd)
        assert message == (
            f"Info: Morphed 'Small' into 'Large' (Flow) over frames 1 to 3: '{MORPHED}' and '{KEYED}'; 'Small' and "
            "'Large' are hidden (Hide Sources)"
        )
        assert small.hide_get() and large.hide_get()
        morphed, keyed = bpy.data.objects[MORPHED], bpy.data.objects[KEYED]
        assert bpy.context.active_object == morphed and keyed.select_get()
        after = snapshot(bpy)
        assert {name: after["objects"][name] for name in before["objects"]} == before["objects"]
        assert {name: after["meshes"][name] for name in before["meshes"]} == before["meshes"]

        assert keyed.neural_sdf_morph.holds == "SHAPE_KEYS" and not keyed.neural_sdf_morph.model_path
        assert [block.name for block in keyed.data.shape_keys.key_blocks] == ["Basis", "t = 0.5", "t = 1"]
        assert [len(polygon.vertices) for polygon in keyed.data.polygons] == [
            len(polygon.vertices) for polygon in small.data.polygons
        ]  # the source's quads stay quads
        start, _ = evaluated_world(bpy, keyed, FRAME_START)
        np.testing.assert_allclose(start, source_world, atol=1e-5)
        end, _ = evaluated_world(bpy, keyed, FRAME_END)
        assert mean_radius(end) > SMALL_RADIUS + 0.2, mean_radius(end)
        middle, _ = evaluated_world(bpy, keyed, FRAME_START + 1)
        between, _ = evaluated_world(bpy, keyed, FRAME_START + 1.5)
        np.testing.assert_allclose(between, (middle + end) / 2, atol=1e-5)
        assert mean_radius(evaluated_world(bpy, morphed, FRAME_END)[0]) > SMALL_RADIUS + 0.2
        copy = tmp_path / "flow.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(copy), copy=True)

        bpy.ops.ed.undo()
        assert MORPHED not in bpy.data.objects and KEYED not in bpy.data.objects
        assert snapshot(bpy)["objects"] == before["objects"]
        assert not bpy.data.objects["Small"].hide_get() and not bpy.data.objects["Large"].hide_get()

    bpy.ops.wm.open_mainfile(filepath=str(copy))
    reloaded, _ = evaluated_world(bpy, bpy.data.objects[KEYED], FRAME_END)
    np.testing.assert_allclose(reloaded, end, atol=1e-6)


def test_a_landmark_without_its_partner_is_refused_and_changes_nothing(bpy, cache_dir):
    small, large = two_spheres(bpy, cache_dir, "FLOW")
    bpy.context.scene.neural_sdf_morph.use_landmarks = True
    assert bpy.ops.neural_sdf.add_landmark_pair() == {"FINISHED"}
    bpy.data.objects.remove(bpy.data.objects["Landmark 1 Target"])
    select_only(bpy, small, large)
    before = snapshot(bpy)
    with pytest.raises(
        RuntimeError,
        match=r"The source landmark 'Landmark 1 Source' \(pair 1\) has no target partner: give a target landmark "
        r"the pair id 1, or delete 'Landmark 1 Source'",
    ):
        bpy.ops.neural_sdf.morph()
    assert snapshot(bpy) == before
    assert not addon_module("engine_jobs").job_running()


def test_the_selection_must_be_two_meshes_with_the_target_active(bpy, cache_dir):
    small, large = two_spheres(bpy, cache_dir, "LEVELSET")
    select_only(bpy, small)
    with pytest.raises(
        RuntimeError, match=r"Select exactly two mesh objects, the source and then the target \(active\); 1 is "
        r"selected \('Small'\)"
    ):  # fmt: skip
        bpy.ops.neural_sdf.morph()
    assert bpy.ops.neural_sdf.add_landmark_pair() == {"FINISHED"}
    select_only(bpy, small, large, bpy.data.objects["Landmark 1 Target"])
    with pytest.raises(
        RuntimeError, match="The target is the active object, but 'Landmark 1 Target' is not one of the two selected "
        "meshes \\('Small', 'Large'\\): shift-click the target last"
    ):  # fmt: skip
        bpy.ops.neural_sdf.morph()


def test_a_level_set_morph_between_shapes_apart_says_why_its_middle_frame_is_empty(bpy, cache_dir, capfd):
    # Issue 14: the blend of two distance fields is outside both shapes between them, so frame 2 has no surface.
    small, large = two_spheres(bpy, cache_dir, "LEVELSET")
    large.location = CENTER + (SMALL_RADIUS + LARGE_RADIUS + 1.0, 0.0, 0.0)
    capfd.readouterr()
    assert bpy.ops.neural_sdf.morph() == {"FINISHED"}
    (message,) = reports(capfd)
    assert message == (
        f"Info: Morphed 'Small' into 'Large' (Level Set) over frames 1 to 3: '{MORPHED}'; the surface is empty in 1 "
        "of them: the shapes do not overlap in frame 2: move them together, or use the Flow method; 'Small' and "
        "'Large' are hidden (Hide Sources)"
    )


def test_esc_cancels_a_morph_and_changes_nothing(bpy, cache_dir, capfd):
    two_spheres(bpy, cache_dir, "LEVELSET")
    bpy.context.scene.neural_sdf.steps = 100_000
    before = snapshot(bpy)
    seen = []

    def watch_then_cancel(operator):
        seen.append(bpy.context.window_manager.neural_sdf_job.text)
        return once(operator)

    once = once_training(lambda operator: event("ESC"), stage="fit")
    capfd.readouterr()
    with scripted(bpy, "morph", watch_then_cancel) as (morph, steps):
        assert morph() == {"CANCELLED"}
    assert ("ESC", {"RUNNING_MODAL"}) in steps
    (message,) = reports(capfd)
    assert message.startswith("Warning: Cancelled morphing 'Small' into 'Large' at step ")
    assert message.endswith("of 200000. The scene was not changed")
    assert any(text.startswith("Morphing 'Small' into 'Large': fitting both shapes, step ") for text in seen), seen
    assert snapshot(bpy) == before
    assert not addon_module("engine_jobs").job_running() and not list((Path(prefs().cache_dir) / "jobs").iterdir())


def test_the_panel_shows_the_settings_the_active_landmark_and_the_morph(bpy, morphed_blend):
    panel = addon_module("panels.sidebar").NEURALSDF_PT_morph
    bpy.ops.wm.open_mainfile(filepath=str(morphed_blend))
    scene = bpy.context.scene
    small, large = bpy.data.objects["Small"], bpy.data.objects["Large"]
    select_only(bpy, small, large)
    drawn = draw(panel)
    assert ("operator", "neural_sdf.morph") in drawn and ("prop", "method") in drawn
    assert ("label", "'Small' to 'Large'") in drawn and ("prop", "animate_source") in drawn
    assert ("operator", "neural_sdf.add_landmark_pair") in drawn and ("prop", "steps") in drawn
    scene.neural_sdf_morph.use_custom_steps = False
    drawn = draw(panel)
    assert ("label", "500 steps (the Level Set default)") in drawn and ("prop", "steps") not in drawn
    assert ("prop", "use_scene_range") in drawn and ("prop", "frame_start") in drawn  # its own range, 1 to 3

    scene.neural_sdf_morph.use_landmarks = True
    assert bpy.ops.neural_sdf.add_landmark_pair() == {"FINISHED"}
    drawn = draw(panel)
    assert ("prop", "role") in drawn and ("prop", "pair") in drawn
    assert ("label", "2 landmark empties in the scene") in drawn
    assert ("label", "Select the source, then the target (active)") in drawn

    morphed = bpy.data.objects[MORPHED]
    select_only(bpy, morphed)
    scene.frame_set(2)
    drawn = draw(panel)
    assert ("label", morphed.neural_sdf_morph.summary) in drawn
    assert ("label", "Frames 1 to 3: t = 0 to 1") in drawn and ("label", "Frame 2 shows t = 0.5") in drawn
    assert not [entry for entry in drawn if entry[0] == "label" and "missing" in entry[1]]
