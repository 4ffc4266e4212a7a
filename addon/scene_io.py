"""Between Blender data and numpy arrays: evaluated meshes, their colours, flow field and landmark empties out of the
scene, new meshes, curvature, surface colour and frame attributes and the materials that show them into it. Bulk
foreach_get/foreach_set with explicit dtypes and one transform per array."""

import bpy
import numpy as np

from .core.evolution import FieldEmpty
from .core.job_files import CURVATURE_FIELDS
from .core.morph import Landmark
from .core.text import hidden_sources_text
from .properties import is_flow_field, is_landmark

CURVATURE_ATTRIBUTES = {name: f"curvature_{name}" for name in CURVATURE_FIELDS}
"""Float point attributes written by Curvature Colours, in 1/length (Gaussian 1/length^2) of the model's units."""
COLOR_ATTRIBUTE = "curvature_color"
MATERIAL_NAME = "Neural SDF Curvature"


def matrix_array(matrix) -> np.ndarray:
    """A mathutils 4x4 matrix as a (4, 4) float64 array."""
    return np.array(matrix, dtype=np.float64).reshape(4, 4)


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (n, 3) mapped by an affine (4, 4) matrix, in float64."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def length_unit_name(scene: bpy.types.Scene) -> str:
    """The name of the scene's length unit for curvature legends: "m" where a Blender unit is a metre, else "unit"."""
    units = scene.unit_settings
    return "m" if units.system != "NONE" and abs(units.scale_length - 1.0) < 1e-9 else "unit"


def evaluated_world_mesh(obj: bpy.types.Object, depsgraph) -> tuple[np.ndarray, np.ndarray]:
    """World-space vertices (n, 3) float64 and triangles (m, 3) intc of a mesh object with its modifiers applied."""
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        mesh.calc_loop_triangles()
        vertices = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", vertices)
        triangles = np.empty(len(mesh.loop_triangles) * 3, dtype=np.intc)
        mesh.loop_triangles.foreach_get("vertices", triangles)
        world = matrix_array(evaluated.matrix_world)
    finally:
        evaluated.to_mesh_clear()
    return transform_points(world, vertices.reshape(-1, 3)), triangles.reshape(-1, 3)


NORMAL_ATTRIBUTES = ("normal", "N", "normals", "Normal")
"""Point attributes (3D vectors on points) read, in this order, as the normals of a point cloud or of a mesh of
vertices only; without one the engine estimates them."""


def fit_source(obj: bpy.types.Object, depsgraph) -> dict[str, np.ndarray]:
    """What a fit takes from a selected object, evaluated (modifiers applied) in world space: ``vertices``/``faces``
    for a mesh with faces (or one with nothing at all, which the engine refuses with its message); ``points`` and,
    from a `NORMAL_ATTRIBUTES` attribute, ``normals`` for a point cloud object or a mesh of vertices without faces."""
    evaluated = obj.evaluated_get(depsgraph)
    if obj.type == "POINTCLOUD":
        return _world_points(evaluated.data, len(evaluated.data.points), evaluated.matrix_world)
    mesh = evaluated.to_mesh()
    try:
        if len(mesh.polygons) == 0 and len(mesh.vertices) > 0:
            return _world_points(mesh, len(mesh.vertices), evaluated.matrix_world)
    finally:
        evaluated.to_mesh_clear()
    vertices, faces = evaluated_world_mesh(obj, depsgraph)
    return {"vertices": vertices, "faces": faces}


def _world_points(data, count: int, matrix_world) -> dict[str, np.ndarray]:
    """World-space ``points`` (n, 3) float64 of a point cloud's or a mesh's ``position`` attribute, and ``normals``
    (n, 3) float64 from the first `NORMAL_ATTRIBUTES` attribute it has (normals transform by the inverse
    transpose, then are scaled back to unit length)."""
    positions = np.empty(count * 3, dtype=np.float32)
    data.attributes["position"].data.foreach_get("vector", positions)
    world = matrix_array(matrix_world)
    arrays = {"points": transform_points(world, positions.reshape(-1, 3))}
    for name in NORMAL_ATTRIBUTES:
        attribute = data.attributes.get(name)
        if attribute is not None and attribute.data_type == "FLOAT_VECTOR" and attribute.domain == "POINT":
            normals = np.empty(count * 3, dtype=np.float32)
            attribute.data.foreach_get("vector", normals)
            normals = normals.reshape(-1, 3).astype(np.float64) @ np.linalg.inv(world[:3, :3])
            length = np.linalg.norm(normals, axis=1, keepdims=True)
            arrays["normals"] = np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)
            break
    return arrays


def evaluated_polygons(obj: bpy.types.Object, depsgraph) -> tuple[np.ndarray, np.ndarray]:
    """The polygons of a mesh object with its modifiers applied: each polygon's corner count (p,) and the vertex
    index of every corner (sum of the counts,), both intc; the vertices are those of `evaluated_world_mesh`."""
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        corner_counts = np.empty(len(mesh.polygons), dtype=np.intc)
        mesh.polygons.foreach_get("loop_total", corner_counts)
        corner_vertices = np.empty(len(mesh.loops), dtype=np.intc)
        mesh.loops.foreach_get("vertex_index", corner_vertices)
    finally:
        evaluated.to_mesh_clear()
    return corner_counts, corner_vertices


def field_empties(scene: bpy.types.Scene) -> list[FieldEmpty]:
    """Every flow field empty of the scene, in world space, by name. The radius grows with the empty's largest
    scale, as its drawn sphere does."""
    fields = []
    for obj in sorted((obj for obj in scene.objects if is_flow_field(obj)), key=lambda obj: obj.name):
        field, matrix = obj.neural_sdf_field, obj.matrix_world
        radius = field.radius * max(abs(scale) for scale in matrix.to_scale())
        axis = tuple(matrix.col[2][:3])  # the empty's world +Z
        fields.append(FieldEmpty(obj.name, field.kind, tuple(matrix.translation), axis, field.strength, radius))
    return fields


def landmark_empties(scene: bpy.types.Scene) -> list[Landmark]:
    """Every landmark empty of the scene, at its world location, by name."""
    landmarks = []
    for obj in sorted((obj for obj in scene.objects if is_landmark(obj)), key=lambda obj: obj.name):
        landmark = obj.neural_sdf_landmark
        landmarks.append(Landmark(obj.name, landmark.role, landmark.pair, tuple(obj.matrix_world.translation)))
    return landmarks


def vertex_positions(mesh: bpy.types.Mesh) -> np.ndarray:
    """The mesh's own (unevaluated) vertex positions (n, 3) float64 in object space."""
    positions = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", positions)
    return positions.reshape(-1, 3).astype(np.float64)


def new_mesh(name: str, vertices: np.ndarray, faces: np.ndarray) -> bpy.types.Mesh:
    """A smooth-shaded triangle mesh from checked arrays (vertices (n, 3), faces (m, 3) indices)."""
    return new_polygon_mesh(name, vertices, np.full(len(faces), 3, dtype=np.intc), faces.ravel())


def new_polygon_mesh(
    name: str, vertices: np.ndarray, corner_counts: np.ndarray, corner_vertices: np.ndarray
) -> bpy.types.Mesh:
    """A smooth-shaded mesh from checked arrays: vertices (n, 3), each polygon's corner count (p,) and the vertex
    index of every corner, polygon after polygon."""
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(vertices))
    mesh.vertices.foreach_set("co", np.ascontiguousarray(vertices, dtype=np.float32).ravel())
    mesh.loops.add(len(corner_vertices))
    mesh.loops.foreach_set("vertex_index", np.ascontiguousarray(corner_vertices, dtype=np.intc))
    mesh.polygons.add(len(corner_counts))
    corner_counts = np.asarray(corner_counts, dtype=np.intc)
    mesh.polygons.foreach_set("loop_start", (np.cumsum(corner_counts) - corner_counts).astype(np.intc))
    mesh.update()
    mesh.validate()
    mesh.shade_smooth()
    return mesh


def add_object(context: bpy.types.Context, name: str, data: bpy.types.ID | None, matrix_world) -> bpy.types.Object:
    """A new object (an empty without ``data``) in the active collection, selected and active (the others
    deselected), like Blender's Add."""
    obj = bpy.data.objects.new(name, data)
    context.collection.objects.link(obj)
    obj.matrix_world = matrix_world
    for selected in context.selected_objects:
        selected.select_set(False)
    obj.select_set(True)
    context.view_layer.objects.active = obj
    return obj


def hide_sources(context: bpy.types.Context, names: list[str]) -> str:
    """Hide the named source objects in the viewport (``hide_set``: undone with the operator, nothing else about
    them changes) when the scene's *Hide Sources* is on, so the result that lands on them does not z-fight. Returns
    what the report says about it ("" when nothing was hidden)."""
    if not context.scene.neural_sdf.hide_sources:
        return ""
    hidden = []
    for name in dict.fromkeys(names):
        obj = bpy.data.objects.get(name)
        if obj is not None and obj.name in context.view_layer.objects and not obj.hide_get():
            obj.hide_set(True)
            hidden.append(name)
    return hidden_sources_text(hidden)


def write_curvature(mesh: bpy.types.Mesh, fields: dict[str, np.ndarray], linear_colors: np.ndarray) -> None:
    """Point attributes ``curvature_mean`` ... (float) and ``curvature_color`` (linear float RGBA), made the
    active and rendered colour attribute."""
    for name, values in fields.items():
        attribute = _fresh_attribute(mesh, CURVATURE_ATTRIBUTES[name], "FLOAT")
        attribute.data.foreach_set("value", np.ascontiguousarray(values, dtype=np.float32))
    write_curvature_colors(mesh, linear_colors)


def write_curvature_colors(mesh: bpy.types.Mesh, linear_colors: np.ndarray) -> None:
    """The colour attribute ``curvature_color`` (linear float RGBA per point), made the active and rendered one."""
    colors = _fresh_attribute(mesh, COLOR_ATTRIBUTE, "FLOAT_COLOR")
    colors.data.foreach_set("color", np.ascontiguousarray(linear_colors, dtype=np.float32).ravel())
    mesh.color_attributes.active_color = mesh.color_attributes[COLOR_ATTRIBUTE]
    mesh.color_attributes.render_color_index = mesh.color_attributes.find(COLOR_ATTRIBUTE)
    mesh.update()


def write_int_attribute(mesh: bpy.types.Mesh, name: str, values: np.ndarray) -> None:
    """An integer point attribute (one value per vertex)."""
    attribute = _fresh_attribute(mesh, name, "INT")
    attribute.data.foreach_set("value", np.ascontiguousarray(values, dtype=np.intc))
    mesh.update()


def show_curvature(context: bpy.types.Context, obj: bpy.types.Object) -> bool:
    """Make the colours visible at once: Solid views show attribute colours, and an object without materials gets
    the curvature material (rendered too). Returns False when the object's own materials were kept."""
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.spaces.active.shading.color_type = "VERTEX"
                area.tag_redraw()
    materials = obj.data.materials
    material = curvature_material()
    if len(materials) == 0:
        materials.append(material)
    return all(slot is None or slot == material for slot in materials)


def curvature_material() -> bpy.types.Material:
    """A material whose base colour is the ``curvature_color`` attribute (made once per file)."""
    material = bpy.data.materials.get(MATERIAL_NAME)
    if material is not None:
        return material
    material = bpy.data.materials.new(MATERIAL_NAME)
    if material.node_tree is None:  # Blender before 5.0 creates materials without nodes
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    shader = next(node for node in nodes if node.type == "BSDF_PRINCIPLED")
    attribute = nodes.new("ShaderNodeAttribute")
    attribute.attribute_type = "GEOMETRY"
    attribute.attribute_name = COLOR_ATTRIBUTE
    attribute.location = (shader.location.x - 250, shader.location.y)
    links.new(attribute.outputs["Color"], shader.inputs["Base Color"])
    shader.inputs["Roughness"].default_value = 0.45
    return material


def _fresh_attribute(mesh: bpy.types.Mesh, name: str, data_type: str):
    """A point attribute of that type, replacing one of the same name with another type or domain."""
    attribute = mesh.attributes.get(name)
    if attribute is not None and (attribute.data_type != data_type or attribute.domain != "POINT"):
        mesh.attributes.remove(attribute)
        attribute = None
    return attribute if attribute is not None else mesh.attributes.new(name, data_type, "POINT")


SOURCE_COLOR_ATTRIBUTE = "neural_sdf_color"
"""The point colour attribute (linear FLOAT_COLOR) a fit with colours gives its result."""
COLOR_MATERIAL_NAME = "Neural SDF Colour"


def source_color_inputs(
    objects: list[bpy.types.Object], depsgraph, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, str]] | None:
    """The colour inputs of a fit or morph job for ``objects`` (input i the i-th object: ``color_points_<i>`` with
    ``color_values_<i>``, or ``vertex_colors_<i>``, as `fit_source_colors` gives them), where at least one object
    has colours of its own; the others take their materials' base colours. Also what each object's colours came
    from, by name ("" for base colours). None where none has colours, or one has nothing to take colours from (an
    empty mesh: the engine refuses it with its own message)."""
    found = [fit_source_colors(obj, depsgraph, seed) for obj in objects]
    if all(colors is None for colors in found):
        return None
    inputs, sources = {}, {}
    for index, (obj, colors) in enumerate(zip(objects, found, strict=True)):
        if colors is None:
            colors = fit_source_colors(obj, depsgraph, seed, plain=True)
            if colors is None:
                return None
        arrays, sources[obj.name] = colors
        inputs.update({f"{name}_{index}": array for name, array in arrays.items()})
    return inputs, sources


def fit_source_colors(
    obj: bpy.types.Object, depsgraph, seed: int = 0, plain: bool = False
) -> tuple[dict[str, np.ndarray], str] | None:
    """A fit source's colours, evaluated (modifiers applied), in linear RGB, as fit-job inputs without their
    ``_<i>`` suffix, and what they came from ("colour attribute 'Col'", "texture 'wood.png'"):

    - a mesh with faces: samples on its surface in world space (``color_points``, ``color_values``) from its active
      colour attribute, else from its material's Base Color image through its active UV map
      (`addon.core.surface_colors`);
    - a point cloud or a mesh of vertices only: one colour per point of `fit_source`'s ``points``
      (``vertex_colors``) from a colour attribute on its points (a mesh's active one; a point cloud's active
      attribute where it is a colour attribute, else its first);

    None where it has neither; with ``plain``, its materials' base colours instead of None."""
    from .core.surface_colors import TriangleColors, color_samples, image_to_linear

    if obj.type == "POINTCLOUD":
        evaluated = obj.evaluated_get(depsgraph)
        cloud = evaluated.data
        return _point_colors(cloud, len(cloud.points), _point_cloud_color_attribute(cloud), evaluated, plain)
    if obj.type != "MESH":
        return None
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        if len(mesh.polygons) == 0 and len(mesh.vertices) > 0:
            attribute = mesh.color_attributes.active_color
            attribute = attribute if attribute is not None and attribute.domain == "POINT" else None
            return _point_colors(mesh, len(mesh.vertices), attribute, evaluated, plain)
        mesh.calc_loop_triangles()
        count = len(mesh.loop_triangles)
        if count == 0:
            return None
        positions = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", positions)
        vertices = transform_points(matrix_array(evaluated.matrix_world), positions.reshape(-1, 3))
        triangles = np.empty(count * 3, dtype=np.intc)
        mesh.loop_triangles.foreach_get("vertices", triangles)
        corners = np.empty(count * 3, dtype=np.intc)
        mesh.loop_triangles.foreach_get("loops", corners)
        triangles, corners = triangles.reshape(-1, 3), corners.reshape(-1, 3)
        attribute = mesh.color_attributes.active_color
        if attribute is not None and attribute.domain in ("POINT", "CORNER"):
            values = _attribute_colors(attribute)
            indices = triangles if attribute.domain == "POINT" else corners
            points, colors = color_samples(vertices, triangles, attribute=(values, indices), seed=seed)
            return {"color_points": points, "color_values": colors}, f"colour attribute '{attribute.name}'"
        slots = np.empty(count, dtype=np.intc)
        mesh.loop_triangles.foreach_get("material_index", slots)
        materials = [slot.material for slot in evaluated.material_slots] or [None]
        found = [_base_color(material) for material in materials]
        textured = [index for index, (_, image) in enumerate(found) if image is not None]
        constant = np.array([color for color, _ in found], dtype=np.float64)[np.clip(slots, 0, len(found) - 1)]
        if not textured or mesh.uv_layers.active is None:
            if not plain:
                return None
            points, colors = color_samples(vertices, triangles, materials=TriangleColors(constant), seed=seed)
            return {"color_points": points, "color_values": colors}, ""
        image = found[textured[0]][1]  # one image per object: the first textured material's
        image_triangles = np.isin(np.clip(slots, 0, len(found) - 1), [i for i, f in enumerate(found) if f[1] == image])
        pixels = np.empty(image.size[0] * image.size[1] * image.channels, dtype=np.float32)
        image.pixels.foreach_get(pixels)
        pixels = pixels.reshape(image.size[1], image.size[0], image.channels)
        linear = image_to_linear(pixels, image.colorspace_settings.name, image.is_float)
        uvs = np.empty(len(mesh.loops) * 2, dtype=np.float32)
        mesh.uv_layers.active.data.foreach_get("uv", uvs)
        materials_colors = TriangleColors(constant, linear, image_triangles)
        points, colors = color_samples(
            vertices, triangles, uvs=(uvs.reshape(-1, 2), corners), materials=materials_colors, seed=seed
        )
        return {"color_points": points, "color_values": colors}, f"texture '{image.name}'"
    finally:
        evaluated.to_mesh_clear()


_COLOR_DATA_TYPES = ("FLOAT_COLOR", "BYTE_COLOR")


def _point_cloud_color_attribute(cloud: bpy.types.PointCloud):
    """A point cloud's colour attribute: the active attribute where it is one, else the first (Blender keeps no
    active colour attribute on point clouds)."""
    active = cloud.attributes.active
    if active is not None and active.data_type in _COLOR_DATA_TYPES and active.domain == "POINT":
        return active
    return next((a for a in cloud.attributes if a.data_type in _COLOR_DATA_TYPES and a.domain == "POINT"), None)


def _point_colors(data, count: int, attribute, evaluated, plain: bool) -> tuple[dict[str, np.ndarray], str] | None:
    """``vertex_colors`` (count, 3) of the points of ``data``: their colour ``attribute`` (point domain), else
    (None) with ``plain`` the base colour of the object's first material at every point, without it None."""
    if attribute is not None:
        colors = np.clip(_attribute_colors(attribute)[:, :3], 0.0, 1.0)  # HDR colours clipped: the engine fits [0, 1]
        return {"vertex_colors": colors.astype(np.float32)}, f"colour attribute '{attribute.name}'"
    if not plain:
        return None
    slots = evaluated.material_slots
    color, _ = _base_color(slots[0].material if len(slots) else None)
    return {"vertex_colors": np.tile(np.asarray(color, dtype=np.float32), (count, 1))}, ""


def _attribute_colors(attribute) -> np.ndarray:
    """A colour attribute's values (k, 4) float32, linear for byte and float colours alike."""
    values = np.empty(len(attribute.data) * 4, dtype=np.float32)
    attribute.data.foreach_get("color", values)
    return values.reshape(-1, 4)


def _base_color(material) -> tuple[tuple[float, float, float], bpy.types.Image | None]:
    """A material's Principled BSDF base colour (linear RGB) and the image of an Image Texture node linked straight
    into it (None when there is none)."""
    from .core.surface_colors import DEFAULT_BASE_COLOR

    if material is None or material.node_tree is None:
        return (tuple(material.diffuse_color[:3]) if material is not None else DEFAULT_BASE_COLOR), None
    shader = next((node for node in material.node_tree.nodes if node.type == "BSDF_PRINCIPLED"), None)
    if shader is None:
        return tuple(material.diffuse_color[:3]), None
    socket = shader.inputs["Base Color"]
    color = tuple(socket.default_value[:3])
    for link in socket.links:
        node = link.from_node
        if node.type == "TEX_IMAGE" and node.image is not None and node.image.size[0] > 0:
            return color, node.image
    return color, None


def write_surface_colors(mesh: bpy.types.Mesh, linear_colors: np.ndarray) -> None:
    """The point colour attribute `SOURCE_COLOR_ATTRIBUTE` (linear FLOAT_COLOR, alpha 1) of a coloured model's
    surface (one colour per vertex), made the active and rendered one."""
    rgba = np.ones((len(linear_colors), 4), dtype=np.float32)
    rgba[:, :3] = linear_colors
    attribute = _fresh_attribute(mesh, SOURCE_COLOR_ATTRIBUTE, "FLOAT_COLOR")
    attribute.data.foreach_set("color", rgba.ravel())
    mesh.color_attributes.active_color = mesh.color_attributes[SOURCE_COLOR_ATTRIBUTE]
    mesh.color_attributes.render_color_index = mesh.color_attributes.find(SOURCE_COLOR_ATTRIBUTE)
    mesh.update()


def show_surface_colors(mesh: bpy.types.Mesh) -> None:
    """Where the mesh has no material, give it the one that shows `SOURCE_COLOR_ATTRIBUTE` (`surface_color_material`):
    a material of its own is kept."""
    if len(mesh.materials) == 0:
        mesh.materials.append(surface_color_material())


def surface_color_material() -> bpy.types.Material:
    """A material whose base colour is the `SOURCE_COLOR_ATTRIBUTE` colour attribute (made once per file)."""
    material = bpy.data.materials.get(COLOR_MATERIAL_NAME)
    if material is not None:
        return material
    material = bpy.data.materials.new(COLOR_MATERIAL_NAME)
    if material.node_tree is None:  # Blender before 5.0 creates materials without nodes
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    shader = next(node for node in nodes if node.type == "BSDF_PRINCIPLED")
    attribute = nodes.new("ShaderNodeVertexColor")
    attribute.layer_name = SOURCE_COLOR_ATTRIBUTE
    attribute.location = (shader.location.x - 250, shader.location.y)
    links.new(attribute.outputs["Color"], shader.inputs["Base Color"])
    return material
