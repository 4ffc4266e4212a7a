"""Fit on point clouds in Blender (issue 17): a point cloud object and a mesh of vertices only are fitted end to end
(modifiers applied, world space), the report says when the engine estimated the normals, and the sources stay as
they were. Fixtures: conftest.py; helpers: blender_support.py."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("bpy") is None:
    pytest.skip("needs Blender's Python module: pip install bpy==5.0.1", allow_module_level=True)

from .blender_support import RESOLUTION, add_sphere, reports, select_only, snapshot  # noqa: E402

RADIUS = 0.8
LOCATION = (1.0, -2.0, 0.5)
SCALE = 1.5
COUNT = 2000


def sphere_points(count=COUNT, seed=0):
    """Unit directions and points on a sphere of ``RADIUS`` about the origin, with a little noise."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(count, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return directions, RADIUS * directions + rng.normal(size=(count, 3)) * 0.002


def vertex_mesh_object(bpy, name, points, normals=None):
    """A mesh object of vertices only (no edges, no faces), at ``LOCATION`` scaled by ``SCALE``; ``normals`` as a
    'normal' point attribute."""
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(points.tolist(), [], [])
    if normals is not None:
        mesh.attributes.new("normal", "FLOAT_VECTOR", "POINT").data.foreach_set(
            "vector", np.ascontiguousarray(normals, dtype=np.float32).ravel()
        )
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    obj.location, obj.scale = LOCATION, (SCALE, SCALE, SCALE)
    return obj


def point_cloud_object(bpy, name, points, normals=None):
    """A point cloud object (a mesh of vertices converted by Blender), placed as `vertex_mesh_object`."""
    obj = vertex_mesh_object(bpy, name, points, normals)
    select_only(bpy, obj)
    assert bpy.ops.object.convert(target="POINTCLOUD") == {"FINISHED"}
    assert obj.type == "POINTCLOUD" and len(obj.data.points) == len(points)
    return obj


def positions(data) -> np.ndarray:
    values = np.empty(len(data.attributes["position"].data) * 3, np.float32)
    data.attributes["position"].data.foreach_get("vector", values)
    return values.reshape(-1, 3)


def fitted_radius(bpy, name) -> np.ndarray:
    """The distances of the fitted object's world-space vertices from the source's centre."""
    fitted = bpy.data.objects[name]
    local = positions(fitted.data).astype(np.float64)
    world = local @ np.array(fitted.matrix_world)[:3, :3].T + np.array(fitted.matrix_world)[:3, 3]
    return np.linalg.norm(world - np.array(LOCATION), axis=1)


def test_a_point_cloud_object_with_normals_fits_in_world_space_and_stays_as_it_was(scene, bpy, capfd):
    normals, points = sphere_points()
    cloud = point_cloud_object(bpy, "Scan", points, normals)
    assert "normal" in cloud.data.attributes
    select_only(bpy, cloud)
    before = positions(cloud.data).copy(), tuple(map(tuple, cloud.matrix_world))
    assert bpy.ops.neural_sdf.fit() == {"FINISHED"}
    radius = fitted_radius(bpy, "Scan SDF")
    grid_step = 2 * RADIUS * SCALE / 0.9 / (RESOLUTION - 1)
    assert abs(np.median(radius) - RADIUS * SCALE) < grid_step and len(bpy.data.objects["Scan SDF"].data.polygons) > 500
    report = reports(capfd)[-1]
    assert report.startswith("Info: Fitted 'Scan SDF'") and "estimated" not in report
    np.testing.assert_array_equal(positions(cloud.data), before[0])
    assert tuple(map(tuple, cloud.matrix_world)) == before[1] and cloud.type == "POINTCLOUD"
    assert cloud.hide_get()  # Hide Sources


def test_a_mesh_of_vertices_only_fits_with_estimated_normals_and_the_report_says_so(scene, bpy, capfd):
    _, points = sphere_points()
    obj = vertex_mesh_object(bpy, "Vertices", points)
    select_only(bpy, obj)
    before = snapshot(bpy)
    assert bpy.ops.neural_sdf.fit() == {"FINISHED"}
    report = reports(capfd)[-1]
    assert "Fitted 'Vertices SDF'" in report and "(normals estimated)" in report
    radius = fitted_radius(bpy, "Vertices SDF")
    assert abs(np.median(radius) - RADIUS * SCALE) < 2 * RADIUS * SCALE / 0.9 / (RESOLUTION - 1)
    after = snapshot(bpy)
    assert {name: after["meshes"][name] for name in before["meshes"]} == before["meshes"]
    assert after["objects"]["Vertices"] == before["objects"]["Vertices"]


def test_poll_takes_point_clouds_and_a_fit_refuses_meshes_with_points_in_one_shape(scene, bpy):
    with pytest.raises(RuntimeError, match="Select at least one mesh object or point cloud"):
        bpy.ops.neural_sdf.fit()
    normals, points = sphere_points(200)
    cloud = point_cloud_object(bpy, "Scan", points, normals)
    sphere = add_sphere(bpy)
    select_only(bpy, cloud, sphere)
    scene.neural_sdf.fit_mode = "JOINED"
    before = snapshot(bpy)
    mixed = "meshes or point clouds, not both: Object 'Sphere' is a mesh, Object 'Scan' is a point cloud"
    with pytest.raises(RuntimeError, match=mixed):
        bpy.ops.neural_sdf.fit()
    assert snapshot(bpy) == before
