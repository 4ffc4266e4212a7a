"""Colours carried by every result of a coloured model (issue 17): Re-extract, Bake Evolution (beside curvature
colours, not over them), Morph (the shape without colours of its own takes its material's base colour), Make LOD
Objects, and Fit of point clouds (a point cloud object's and a vertex-only mesh's colour attributes). The sources are
red on their +x side and blue on their -x side; each result must be reddish there and bluish opposite. Undo and
cancel leave the scene as the uncoloured paths do. The bpy-free checks come first. Fixtures: conftest.py; helpers:
blender_support.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from addon.core import job_files
from addon.core.errors import EngineError
from addon.core.evolution import evolution_colors_text
from addon.core.morph import morph_colors_text
from addon.core.params import morph_params

from .blender_support import (
    SPHERE_CENTER,
    SPHERE_RADIUS,
    add_sphere,
    addon_module,
    empty_scene_with_tiny_fit,
    event,
    once_training,
    reports,
    scripted,
    select_only,
    snapshot,
    undo_enabled,
    use_test_preferences,
)

COLOR_ATTRIBUTE = "neural_sdf_color"
FITTED = "Sphere SDF"

# bpy-free core


def test_frame_colours_are_checked_per_frame_and_absent_without_a_coloured_model():
    outputs = {"surface_colors_0": np.full((3, 3), 0.5), "surface_colors_1": np.zeros((0, 3))}
    frames = job_files.frame_surface_colors(outputs, [3, 0])  # a vanished frame has no colours
    assert [colors.shape for colors in frames] == [(3, 3), (0, 3)] and frames[0].dtype == np.float32
    assert job_files.frame_surface_colors({}, [3, 0]) is None
    assert job_files.source_colors({}, 3) is None and job_files.source_colors({"source_colors": np.full((3, 3), 0.5)}, 3).shape == (3, 3)
    with pytest.raises(EngineError, match=r"source_colors of shape \(3, 3\), expected \(4, 3\)"):
        job_files.source_colors({"source_colors": np.zeros((3, 3))}, 4)
    with pytest.raises(EngineError, match=r"surface_colors_1 of shape \(0, 3\), expected \(2, 3\)"):
        job_files.frame_surface_colors(outputs, [3, 2])
    with pytest.raises(EngineError, match="no 'surface_colors_1' array"):
        job_files.frame_surface_colors({"surface_colors_0": np.zeros((3, 3))}, [3, 4])
    with pytest.raises(EngineError, match="surface_colors_0 outside"):
        job_files.frame_surface_colors({"surface_colors_0": np.full((1, 3), 1.5)}, [1])


def test_reports_and_params_of_coloured_bakes_and_morphs():
    assert evolution_colors_text(False, True, COLOR_ATTRIBUTE) == ""
    assert evolution_colors_text(True, False, COLOR_ATTRIBUTE) == " with the model's colours"
    assert "in 'neural_sdf_color' and the curvature colours shown" in evolution_colors_text(True, True, COLOR_ATTRIBUTE)
    text = morph_colors_text({"Small": "colour attribute 'Paint'", "Large": ""})
    assert text == ", coloured from colour attribute 'Paint' of 'Small' and the base colours of 'Large'"
    base = dict(method="LEVELSET", names=("A", "B"), frame_start=1, frame_end=3, preset="tiny", fit_steps=None,
                steps=None, resolution=16, device="cpu", seed=0, animate_source=False)  # fmt: skip
    assert morph_params(**base)["colors"] is False and morph_params(**base, colors=True)["colors"] is True


# In Blender


def red_to_blue(points: np.ndarray, center, radius: float) -> np.ndarray:
    """Linear RGB by x about ``center``: red at +x, blue at -x, a ramp between."""
    share = np.clip((1.0 + (points[:, :1] - center[0]) / radius) / 2.0, 0.0, 1.0)
    return np.hstack([share, np.zeros_like(share), 1.0 - share])


def paint(bpy, obj, center, radius: float, name="Paint", data_type="FLOAT_COLOR") -> None:
    """A point colour attribute ``name`` on a mesh or point cloud: `red_to_blue` of its world-space points."""
    bpy.context.view_layer.update()  # the object's matrix_world follows its location
    data = obj.data
    positions = np.empty(len(data.attributes["position"].data) * 3, np.float32)
    data.attributes["position"].data.foreach_get("vector", positions)
    world = world_points(obj, positions.reshape(-1, 3))
    colors = np.hstack([red_to_blue(world, center, radius), np.ones((len(world), 1))]).astype(np.float32)
    data.color_attributes.new(name, data_type, "POINT").data.foreach_set("color", colors.ravel())


def world_points(obj, local: np.ndarray) -> np.ndarray:
    matrix = np.array(obj.matrix_world)
    return local.astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]


def point_colors(mesh, name=COLOR_ATTRIBUTE) -> np.ndarray:
    """A mesh's point colour attribute's RGB."""
    attribute = mesh.attributes[name]
    assert attribute.data_type == "FLOAT_COLOR" and attribute.domain == "POINT"
    values = np.empty(len(attribute.data) * 4, np.float32)
    attribute.data.foreach_get("color", values)
    return values.reshape(-1, 4)[:, :3]


def colored_vertices(bpy, obj, evaluated: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """World-space vertices of the object's mesh (evaluated: what its frame switch shows now) and their surface
    colours."""
    if evaluated:
        obj = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    mesh = obj.data
    local = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", local)
    return world_points(obj, local.reshape(-1, 3)), point_colors(mesh)


def assert_red_east_blue_west(vertices, colors, center=SPHERE_CENTER, radius=SPHERE_RADIUS) -> None:
    """Reddish on the +x side, bluish on the -x side (away from the ramp's middle), and near the truth overall."""
    assert len(vertices) > 100
    east, west = vertices[:, 0] > center[0] + 0.4 * radius, vertices[:, 0] < center[0] - 0.4 * radius
    assert colors[east, 0].mean() > 0.7 and colors[east, 2].mean() < 0.3, colors[east].mean(axis=0)
    assert colors[west, 2].mean() > 0.7 and colors[west, 0].mean() < 0.3, colors[west].mean(axis=0)
    assert np.abs(colors - red_to_blue(vertices, center, radius)).mean() < 0.1


def fit_painted_sphere(bpy, levels: int = 1) -> None:
    sphere = add_sphere(bpy)
    paint(bpy, sphere, SPHERE_CENTER, SPHERE_RADIUS)
    select_only(bpy, sphere)
    bpy.context.scene.neural_sdf.levels = levels
    assert bpy.ops.neural_sdf.fit() == {"FINISHED"}
    assert_red_east_blue_west(*colored_vertices(bpy, bpy.data.objects[FITTED]))


@pytest.fixture(scope="module")
def colored_sphere_blend(bpy, cache_dir, tmp_path_factory) -> Path:
    """A saved .blend holding a sphere painted red (+x) to blue (-x) and its coloured fit (fitted once)."""
    empty_scene_with_tiny_fit(bpy, cache_dir)
    fit_painted_sphere(bpy)
    path = tmp_path_factory.mktemp("colored") / "colored.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    return path


def open_colored_sphere(bpy, blend: Path, cache_dir: Path):
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    use_test_preferences(cache_dir)
    fitted = bpy.data.objects[FITTED]
    select_only(bpy, fitted)
    return fitted


def test_re_extract_colours_the_new_vertices_keeps_the_material_and_undoes(scene, bpy, capfd):
    # Fitted in this session, not opened from a file: see `undo_enabled` for why undo follows no file load here.
    fit_painted_sphere(bpy)
    fitted = bpy.data.objects[FITTED]
    select_only(bpy, fitted)
    old_count = len(fitted.data.vertices)
    scene.neural_sdf.resolution = 24
    before = snapshot(bpy)
    capfd.readouterr()
    with undo_enabled(bpy):
        assert bpy.ops.neural_sdf.reextract() == {"FINISHED"}
        fitted = bpy.data.objects[FITTED]
        assert len(fitted.data.vertices) != old_count
        assert_red_east_blue_west(*colored_vertices(bpy, fitted))
        assert fitted.data.color_attributes.active_color.name == COLOR_ATTRIBUTE
        assert [slot.material.name for slot in fitted.material_slots] == ["Neural SDF Colour"]
        assert reports(capfd)[-1].startswith(f"Info: Re-extracted '{FITTED}' at resolution 24: ")
        bpy.ops.ed.undo()
        assert snapshot(bpy) == before
        assert len(bpy.data.objects[FITTED].data.vertices) == old_count
    # Without a material (removed by the user), the new mesh gets the one that shows the colours, as a fit's does.
    fitted = bpy.data.objects[FITTED]
    select_only(bpy, fitted)
    fitted.data.materials.clear()
    assert bpy.ops.neural_sdf.reextract() == {"FINISHED"}
    assert [slot.material.name for slot in bpy.data.objects[FITTED].material_slots] == ["Neural SDF Colour"]
    assert "faces with colours" in reports(capfd)[-1]


def evolution_settings(bpy, curvature: str, track: bool) -> None:
    settings = bpy.context.scene.neural_sdf_evolution
    settings.flow, settings.offset_speed, settings.time_end = "OFFSET", 0.1, 1.0
    settings.use_scene_range, settings.frame_start, settings.frame_end = False, 1, 3
    settings.resolution, settings.use_custom_steps, settings.steps = 24, True, 30
    settings.curvature, settings.track_vertices = curvature, track
    bpy.context.scene.frame_set(1)


def check_every_frame(bpy, evolved, radius_growth: float) -> None:
    """Each frame that the frame switch shows is coloured red (+x) to blue (-x), on a sphere that grows."""
    for index, frame in enumerate((1, 2, 3)):
        bpy.context.scene.frame_set(frame)
        vertices, colors = colored_vertices(bpy, evolved, evaluated=True)
        radius = SPHERE_RADIUS + radius_growth * index / 2
        assert_red_east_blue_west(vertices, colors, radius=radius)


def test_a_bake_of_a_coloured_model_colours_every_frame_beside_the_curvature_colours(
    bpy, colored_sphere_blend, cache_dir, capfd
):
    open_colored_sphere(bpy, colored_sphere_blend, cache_dir)
    evolution_settings(bpy, "mean", track=False)
    capfd.readouterr()
    assert bpy.ops.neural_sdf.bake_evolution() == {"FINISHED"}
    evolved = bpy.data.objects[f"{FITTED} Evolution"]
    assert "with the model's colours in 'neural_sdf_color' and the curvature colours shown" in reports(capfd)[-1]
    check_every_frame(bpy, evolved, 0.1)
    mesh = evolved.data
    assert {COLOR_ATTRIBUTE, "curvature_color"} <= set(mesh.color_attributes.keys())
    assert mesh.color_attributes.active_color.name == "curvature_color"  # what was asked for shows
    assert [slot.material.name for slot in evolved.material_slots] == ["Neural SDF Curvature"]
    bpy.context.scene.frame_set(1)
    curvature = point_colors(mesh, "curvature_color")
    assert not np.allclose(curvature, point_colors(mesh), atol=0.05)  # each attribute holds its own colours


def test_a_bake_without_curvature_shows_the_colours_tracks_them_and_undoes(bpy, colored_sphere_blend, cache_dir, capfd):
    open_colored_sphere(bpy, colored_sphere_blend, cache_dir)
    evolution_settings(bpy, "NONE", track=True)
    before = snapshot(bpy)
    capfd.readouterr()
    with undo_enabled(bpy):
        assert bpy.ops.neural_sdf.bake_evolution() == {"FINISHED"}
        evolved = bpy.data.objects[f"{FITTED} Evolution"]
        assert " with the model's colours;" in reports(capfd)[-1]
        check_every_frame(bpy, evolved, 0.1)
        assert evolved.data.color_attributes.active_color.name == COLOR_ATTRIBUTE
        assert "curvature_color" not in evolved.data.attributes
        assert [slot.material.name for slot in evolved.material_slots] == ["Neural SDF Colour"]
        tracked = bpy.data.objects[f"{FITTED} Evolution Tracked"]  # its vertices keep the first frame's colours
        bpy.context.scene.frame_set(1)
        assert_red_east_blue_west(*colored_vertices(bpy, tracked, evaluated=True))
        assert [slot.material.name for slot in tracked.material_slots] == ["Neural SDF Colour"]
        bpy.ops.ed.undo()
        assert snapshot(bpy)["objects"] == before["objects"]
        assert f"{FITTED} Evolution" not in bpy.data.objects


def test_make_lod_objects_of_a_coloured_model_colours_every_lod_and_undoes(scene, bpy, capfd):
    settings = scene.neural_sdf
    settings.steps = 80
    fit_painted_sphere(bpy, levels=2)
    fitted = bpy.data.objects[FITTED]
    select_only(bpy, fitted)
    before = snapshot(bpy)
    capfd.readouterr()
    with undo_enabled(bpy):
        assert bpy.ops.neural_sdf.make_lod() == {"FINISHED"}
        assert reports(capfd)[-1].startswith(f"Info: Made 2 LOD objects with colours in '{FITTED}_LOD': ")
        for name in (f"{FITTED}_LOD0", f"{FITTED}_LOD1"):
            lod = bpy.data.objects[name]
            assert_red_east_blue_west(*colored_vertices(bpy, lod))
            assert [slot.material.name for slot in lod.material_slots] == ["Neural SDF Colour"]
        bpy.ops.ed.undo()
        assert snapshot(bpy)["objects"] == before["objects"]


SMALL_RADIUS, LARGE_RADIUS = 0.5, 0.9
MORPH_CENTER = np.array([0.5, -0.3, 0.2])
GREEN = (0.0, 1.0, 0.0)


def painted_and_green_spheres(bpy, cache_dir):
    """An empty scene with a small sphere (source) painted red (+x) to blue (-x) and a concentric large one
    (target, active) whose material's base colour is green; a level-set morph over frames 1 to 3."""
    empty_scene_with_tiny_fit(bpy, cache_dir)
    scene = bpy.context.scene
    scene.neural_sdf.steps = 100
    settings = scene.neural_sdf_morph
    settings.method, settings.use_scene_range, settings.frame_start, settings.frame_end = "LEVELSET", False, 1, 3
    settings.resolution, settings.use_custom_steps, settings.steps = 24, True, 20
    small = add_sphere(bpy, "Small", SMALL_RADIUS, MORPH_CENTER)
    paint(bpy, small, MORPH_CENTER, SMALL_RADIUS)
    large = add_sphere(bpy, "Large", LARGE_RADIUS, MORPH_CENTER)
    material = bpy.data.materials.new("Green")
    if material.node_tree is None:
        material.use_nodes = True
    shader = next(node for node in material.node_tree.nodes if node.type == "BSDF_PRINCIPLED")
    shader.inputs["Base Color"].default_value = (*GREEN, 1.0)
    large.data.materials.append(material)
    select_only(bpy, small, large)
    scene.frame_set(1)
    return small, large


def test_a_morph_colours_its_frames_from_both_shapes(bpy, cache_dir, capfd):
    painted_and_green_spheres(bpy, cache_dir)
    capfd.readouterr()
    assert bpy.ops.neural_sdf.morph() == {"FINISHED"}
    (message,) = [line for line in reports(capfd) if line.startswith("Info: Morphed")]
    assert ", coloured from colour attribute 'Paint' of 'Small' and the base colours of 'Large'" in message
    morphed = bpy.data.objects["Small to Large Morph"]
    assert [slot.material.name for slot in morphed.material_slots] == ["Neural SDF Colour"]
    bpy.context.scene.frame_set(1)  # t = 0: the source's colours
    assert_red_east_blue_west(*colored_vertices(bpy, morphed, evaluated=True), MORPH_CENTER, SMALL_RADIUS)
    bpy.context.scene.frame_set(3)  # t = 1: the target's base colour
    vertices, colors = colored_vertices(bpy, morphed, evaluated=True)
    assert np.linalg.norm(vertices - MORPH_CENTER, axis=1).mean() == pytest.approx(LARGE_RADIUS, abs=0.04)
    np.testing.assert_allclose(np.median(colors, axis=0), GREEN, atol=0.1)
    bpy.context.scene.frame_set(2)  # t = 0.5: half of each
    vertices, colors = colored_vertices(bpy, morphed, evaluated=True)
    east = vertices[:, 0] > MORPH_CENTER[0] + 0.3
    assert 0.3 < colors[east, 0].mean() < 0.7 and 0.3 < colors[:, 1].mean() < 0.7


def test_a_flow_morphs_shape_keyed_copy_of_the_source_carries_the_sources_colours(bpy, cache_dir, capfd):
    painted_and_green_spheres(bpy, cache_dir)
    settings = bpy.context.scene.neural_sdf_morph
    settings.method, settings.animate_source = "FLOW", True
    assert bpy.ops.neural_sdf.morph() == {"FINISHED"}
    keyed = bpy.data.objects["Small to Large Shape Keys"]
    assert keyed.data.shape_keys is not None and [slot.material.name for slot in keyed.material_slots] == [
        "Neural SDF Colour"
    ]
    bpy.context.scene.frame_set(1)
    start, colors = colored_vertices(bpy, keyed, evaluated=True)
    assert_red_east_blue_west(start, colors, MORPH_CENTER, SMALL_RADIUS)
    bpy.context.scene.frame_set(3)
    end, colors_at_end = colored_vertices(bpy, keyed, evaluated=True)
    assert np.linalg.norm(end - MORPH_CENTER, axis=1).mean() == pytest.approx(LARGE_RADIUS, abs=0.05)  # it moved
    np.testing.assert_array_equal(colors_at_end, colors)  # each vertex keeps its colour as the flow moves it


def test_a_morph_sends_colours_only_with_the_toggle_on_and_esc_changes_nothing(bpy, cache_dir, capfd):
    painted_and_green_spheres(bpy, cache_dir)
    bpy.context.scene.neural_sdf.steps = 100_000
    before = snapshot(bpy)
    for toggle in (True, False):
        bpy.context.scene.neural_sdf.fit_colors = toggle
        sent = []

        def look_then_cancel(operator):
            if not sent:
                request = operator.session.requests[0]
                sent.append((request.params["colors"], sorted(n for n in request.inputs if n.startswith("color_"))))
            return once(operator)

        once = once_training(lambda operator: event("ESC"), stage="fit")
        with scripted(bpy, "morph", look_then_cancel) as (morph, _steps):
            assert morph() == {"CANCELLED"}
        expected = ["color_points_0", "color_points_1", "color_values_0", "color_values_1"] if toggle else []
        assert sent == [(toggle, expected)]
        assert snapshot(bpy) == before
        assert not addon_module("engine_jobs").job_running()


POINT_COUNT = 2000
CLOUD_CENTER = np.array([1.0, -2.0, 0.5])
CLOUD_RADIUS = 0.8


def sphere_points(seed: int) -> tuple[np.ndarray, np.ndarray]:
    directions = np.random.default_rng(seed).normal(size=(POINT_COUNT, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return directions, CLOUD_RADIUS * directions


def vertices_only(bpy, name: str, seed: int, center):
    """A mesh object of vertices only on a sphere about ``center``, with a 'normal' point attribute."""
    normals, points = sphere_points(seed)
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(points.tolist(), [], [])
    mesh.attributes.new("normal", "FLOAT_VECTOR", "POINT").data.foreach_set("vector", normals.astype(np.float32).ravel())
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    obj.location = center
    return obj


def test_point_clouds_and_vertex_meshes_give_their_colour_attributes_to_the_fit(scene, bpy, capfd):
    scene.neural_sdf.fit_mode = "SEPARATE"
    cloud_center = CLOUD_CENTER + (3.0, 0.0, 0.0)  # apart from the other
    plain = vertices_only(bpy, "Vertices", 1, CLOUD_CENTER)
    cloud = vertices_only(bpy, "Scan", 2, cloud_center)
    select_only(bpy, cloud)
    assert bpy.ops.object.convert(target="POINTCLOUD") == {"FINISHED"} and cloud.type == "POINTCLOUD"
    paint(bpy, cloud, cloud_center, CLOUD_RADIUS, name="Col", data_type="BYTE_COLOR")
    paint(bpy, plain, CLOUD_CENTER, CLOUD_RADIUS, name="Paint")
    select_only(bpy, plain, cloud)
    before = snapshot(bpy)
    capfd.readouterr()
    assert bpy.ops.neural_sdf.fit() == {"FINISHED"}
    assert "with colours from colour attribute 'Col', colour attribute 'Paint'" in reports(capfd)[-1]
    for name, center in (("Scan SDF", cloud_center), ("Vertices SDF", CLOUD_CENTER)):
        assert_red_east_blue_west(*colored_vertices(bpy, bpy.data.objects[name]), center, CLOUD_RADIUS)
        assert [slot.material.name for slot in bpy.data.objects[name].material_slots] == ["Neural SDF Colour"]
    after = snapshot(bpy)
    assert {name: after["meshes"][name] for name in before["meshes"]} == before["meshes"]  # sources unchanged
