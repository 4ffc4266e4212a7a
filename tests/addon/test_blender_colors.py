"""Colours in a fit (issue 17): the bpy-free look-ups (barycentric, bilinear, colour spaces) against known values,
and in Blender a vertex-coloured and a UV-textured mesh fitted at tiny size, whose results get a linear colour
attribute and a material that shows it. Fixtures: conftest.py; helpers: blender_support.py."""

from __future__ import annotations

import numpy as np

from addon.core.surface_colors import (
    TriangleColors,
    area_samples,
    color_samples,
    image_to_linear,
    interpolated,
    srgb_to_linear,
    texture_lookup,
)

from .blender_support import reports, select_only

# bpy-free core


def test_texture_lookup_hits_known_pixels_and_blends_between_them():
    image = np.zeros((2, 2, 3))  # Blender's pixel rows: row 0 is the bottom (v near 0)
    image[0, 0], image[0, 1], image[1, 0], image[1, 1] = (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 1)
    centres = np.array([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    np.testing.assert_allclose(texture_lookup(image, centres), [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
    np.testing.assert_allclose(texture_lookup(image, np.array([[0.5, 0.25]])), [[0.5, 0.5, 0.0]])
    np.testing.assert_allclose(texture_lookup(image, centres - 1.0), texture_lookup(image, centres))  # repeats


def test_barycentric_samples_lie_on_their_triangles_and_interpolate_corner_values():
    vertices = np.array([[0.0, 0, 0], [2, 0, 0], [0, 1, 0], [0, 0, 3]])
    triangles = np.array([[0, 1, 2], [0, 2, 3]])
    chosen, weights = area_samples(vertices, triangles, 20_000, np.random.default_rng(0))
    assert np.allclose(weights.sum(axis=1), 1.0) and (weights >= 0).all()
    assert abs(np.mean(chosen == 1) - 1.5 / 2.5) < 0.02  # areas 1 and 1.5
    points = interpolated(vertices, triangles, chosen, weights)
    # Corner values equal to the positions interpolate to the points themselves.
    corner_values = vertices[triangles].reshape(-1, 3)
    np.testing.assert_allclose(interpolated(corner_values, np.arange(6).reshape(2, 3), chosen, weights), points)


def test_colour_samples_from_an_attribute_a_texture_and_plain_materials():
    vertices = np.array([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    triangles = np.array([[0, 1, 2], [0, 2, 3]])
    values = np.array([[1.0, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1], [1, 1, 1, 1]])
    points, colors = color_samples(vertices, triangles, attribute=(values, triangles), count=500)
    expected = interpolated(values[:, :3], triangles, *area_samples(vertices, triangles, 500, np.random.default_rng(0)))
    np.testing.assert_allclose(colors, expected, atol=1e-6)
    # A texture on the first triangle only (u = x, v = y); the second takes its material's colour.
    image = np.zeros((4, 4, 3))
    image[:, 2:] = 1.0  # the right half white
    corner_uvs = vertices[triangles].reshape(-1, 3)[:, :2]
    materials = TriangleColors(np.array([[0.0, 0, 0], [0.2, 0.3, 0.4]]), image, np.array([True, False]))
    points, colors = color_samples(
        vertices, triangles, uvs=(corner_uvs, np.arange(6).reshape(2, 3)), materials=materials, count=2000
    )
    first = points[:, 0] > points[:, 1]  # the triangle (0, 1, 2) lies below the diagonal
    away = (np.abs(points[:, 0] - 0.5) > 0.2) & (np.abs(points[:, 0] - 0.5) < 0.3)  # off the ramps (it repeats)
    np.testing.assert_allclose(colors[first & away, 0], (points[first & away, 0] > 0.5).astype(float), atol=1e-6)
    np.testing.assert_allclose(colors[~first], np.tile([0.2, 0.3, 0.4], (np.count_nonzero(~first), 1)), atol=1e-6)


def test_images_are_read_in_linear_colour():
    pixels = np.full((1, 1, 4), 0.5)
    np.testing.assert_allclose(image_to_linear(pixels, "sRGB", is_float=False), srgb_to_linear(np.full((1, 1, 3), 0.5)))
    assert abs(srgb_to_linear(np.array(0.5)) - 0.2140) < 1e-4
    np.testing.assert_allclose(image_to_linear(pixels, "Non-Color", is_float=False), np.full((1, 1, 3), 0.5))
    np.testing.assert_allclose(image_to_linear(pixels, "sRGB", is_float=True), np.full((1, 1, 3), 0.5))


# In Blender


def truth(points: np.ndarray) -> np.ndarray:
    """Colours by height: red at the bottom, blue at the top (linear)."""
    up = np.clip((points[:, 2:3] + 1.0) / 2.0, 0.0, 1.0)
    return np.hstack([1.0 - up, np.full_like(up, 0.2), up])


def result_colors(bpy, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The fitted object's world-space vertices and its colour attribute's RGB."""
    obj = bpy.data.objects[name]
    attribute = obj.data.attributes["neural_sdf_color"]
    assert attribute.data_type == "FLOAT_COLOR" and attribute.domain == "POINT"
    colors = np.empty(len(attribute.data) * 4, dtype=np.float32)
    attribute.data.foreach_get("color", colors)
    local = np.empty(len(obj.data.vertices) * 3, dtype=np.float32)
    obj.data.vertices.foreach_get("co", local)
    matrix = np.array(obj.matrix_world)
    return local.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3], colors.reshape(-1, 4)[:, :3]


def test_a_vertex_coloured_mesh_gives_its_colours_to_the_result(scene, bpy, capfd):
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=4, radius=1.0)
    sphere = bpy.context.active_object
    sphere.name = "Sphere"
    attribute = sphere.data.color_attributes.new("Paint", "BYTE_COLOR", "CORNER")
    corners = np.empty(len(sphere.data.loops), dtype=np.intc)
    sphere.data.loops.foreach_get("vertex_index", corners)
    positions = np.empty(len(sphere.data.vertices) * 3, dtype=np.float32)
    sphere.data.vertices.foreach_get("co", positions)
    paint = np.hstack([truth(positions.reshape(-1, 3)[corners]), np.ones((len(corners), 1))]).astype(np.float32)
    attribute.data.foreach_set("color", paint.ravel())
    select_only(bpy, sphere)
    assert bpy.ops.neural_sdf.fit() == {"FINISHED"}
    vertices, colors = result_colors(bpy, "Sphere SDF")
    assert np.abs(colors - truth(vertices)).mean() < 0.05
    fitted = bpy.data.objects["Sphere SDF"]
    assert [slot.material.name for slot in fitted.material_slots] == ["Neural SDF Colour"]
    assert fitted.data.color_attributes.active_color.name == "neural_sdf_color"
    assert "with colours from colour attribute 'Paint'" in reports(capfd)[-1]
    assert "neural_sdf_color" not in sphere.data.attributes  # the source is as it was


def test_a_uv_textured_mesh_gives_its_texture_to_the_result(scene, bpy, capfd):
    bpy.ops.mesh.primitive_uv_sphere_add(segments=32, ring_count=16, radius=1.0)
    sphere = bpy.context.active_object
    sphere.name = "Sphere"
    image = bpy.data.images.new("Halves", 8, 8)  # 8-bit sRGB: the upper half (v > 0.5, the top) bright
    pixels = np.zeros((8, 8, 4), dtype=np.float32)
    pixels[..., 3] = 1.0
    pixels[4:, :, 2] = 1.0  # rows 4..7 are v > 0.5: blue
    pixels[:4, :, 0] = 0.5  # below: sRGB 0.5 red, linear 0.214
    image.pixels.foreach_set(pixels.ravel())
    material = bpy.data.materials.new("Textured")
    if material.node_tree is None:
        material.use_nodes = True
    nodes = material.node_tree.nodes
    texture = nodes.new("ShaderNodeTexImage")
    texture.image = image
    shader = next(node for node in nodes if node.type == "BSDF_PRINCIPLED")
    material.node_tree.links.new(texture.outputs["Color"], shader.inputs["Base Color"])
    sphere.data.materials.append(material)
    select_only(bpy, sphere)
    assert bpy.ops.neural_sdf.fit() == {"FINISHED"}
    vertices, colors = result_colors(bpy, "Sphere SDF")
    top, bottom = vertices[:, 2] > 0.3, vertices[:, 2] < -0.3  # away from the equator's blend
    np.testing.assert_allclose(np.median(colors[top], axis=0), [0.0, 0.0, 1.0], atol=0.05)
    np.testing.assert_allclose(np.median(colors[bottom], axis=0), [0.214, 0.0, 0.0], atol=0.05)
    assert "with colours from texture 'Halves'" in reports(capfd)[-1]
    fitted = bpy.data.objects["Sphere SDF"]
    assert [slot.material.name for slot in fitted.material_slots] == ["Neural SDF Colour"]


def test_no_colours_without_a_source_of_them_or_with_the_toggle_off(scene, bpy, capfd):
    scene.neural_sdf.hide_sources = False  # the source is fitted twice
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=3, radius=1.0)
    sphere = bpy.context.active_object
    select_only(bpy, sphere)
    assert bpy.ops.neural_sdf.fit() == {"FINISHED"}
    assert "neural_sdf_color" not in bpy.data.objects["Icosphere SDF"].data.attributes
    assert "colours" not in reports(capfd)[-1]
    sphere.data.color_attributes.new("Paint", "FLOAT_COLOR", "POINT")
    scene.neural_sdf.fit_colors = False
    select_only(bpy, sphere)
    assert bpy.ops.neural_sdf.fit() == {"FINISHED"}
    assert all("neural_sdf_color" not in obj.data.attributes for obj in bpy.data.objects if obj.name != "Icosphere")
