"""Playing back baked frames of changing topology (a surface evolution, a morph) without Python: the object's one
mesh holds every frame, each vertex tagged with its frame index (`FRAME_ATTRIBUTE`), and a Geometry Nodes modifier
keeps the vertices of the scene's current frame. It renders, exports and survives save and reload like any modifier,
where swapping meshes from a frame handler would not (DESIGN.md, section 5)."""

import bpy
import numpy as np

from . import scene_io
from .core.frames import stack_frames

FRAME_ATTRIBUTE = "nsdf_frame"
"""Integer point attribute: the index of the baked frame a vertex belongs to (0 at the start frame)."""
NODE_GROUP_NAME = "Neural SDF Evolution Frame"
"""Kept from the first release, which baked evolutions only: files made then find their group by this name."""
FRAME_START_INPUT = "Start Frame"
FRAME_COUNT_INPUT = "Frames"


def frames_mesh(name: str, frames: list[tuple[np.ndarray, np.ndarray]], to_local: np.ndarray) -> bpy.types.Mesh:
    """One mesh holding every frame's vertices (n_i, 3), mapped by the (4, 4) ``to_local``, and faces (m_i, 3), each
    vertex tagged with its frame index."""
    vertices, faces, frame_of_vertex = stack_frames(frames)
    mesh = scene_io.new_mesh(name, scene_io.transform_points(to_local, vertices), faces)
    scene_io.write_int_attribute(mesh, FRAME_ATTRIBUTE, frame_of_vertex)
    return mesh


def add_frame_switch(
    obj: bpy.types.Object, modifier_name: str, frame_start: int, frame_count: int
) -> bpy.types.NodesModifier:
    """The modifier that shows frame index round(scene frame - ``frame_start``), held at the first frame before the
    start and at the last after the end. Its Start Frame input shifts the animation in time."""
    modifier = obj.modifiers.new(modifier_name, "NODES")
    modifier.node_group = frame_switch_group()
    set_input(modifier, FRAME_START_INPUT, frame_start)
    set_input(modifier, FRAME_COUNT_INPUT, frame_count)
    return modifier


def frame_switch_modifier(obj: bpy.types.Object) -> bpy.types.NodesModifier | None:
    """The object's frame switch, if it still has one."""
    for modifier in obj.modifiers:
        if modifier.type == "NODES" and modifier.node_group is not None and modifier.node_group.name == NODE_GROUP_NAME:
            return modifier
    return None


def get_input(modifier: bpy.types.NodesModifier, name: str):
    return modifier[_input_identifier(modifier.node_group, name)]


def set_input(modifier: bpy.types.NodesModifier, name: str, value) -> None:
    modifier[_input_identifier(modifier.node_group, name)] = value
    modifier.id_data.update_tag()  # an ID property change alone does not re-evaluate the object


def input_path(modifier: bpy.types.NodesModifier, name: str) -> str:
    """The modifier's property that holds an input, for UILayout.prop."""
    return f'["{_input_identifier(modifier.node_group, name)}"]'


def frame_switch_group() -> bpy.types.GeometryNodeTree:
    """The node group (made once per file, shared by every frames object):
    Scene Time -> minus Start Frame -> clamp to [0, Frames - 1] -> round -> compare with the frame attribute ->
    Delete Geometry of the other frames' points."""
    group = bpy.data.node_groups.get(NODE_GROUP_NAME)
    if group is not None and group.bl_idname == "GeometryNodeTree":
        return group
    group = bpy.data.node_groups.new(NODE_GROUP_NAME, "GeometryNodeTree")
    group.is_modifier = True
    interface = group.interface
    interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    start = interface.new_socket(FRAME_START_INPUT, in_out="INPUT", socket_type="NodeSocketInt")
    start.description = "Scene frame that shows the first baked frame"
    start.default_value = 1
    count = interface.new_socket(FRAME_COUNT_INPUT, in_out="INPUT", socket_type="NodeSocketInt")
    count.description = "How many frames the mesh holds"
    count.default_value, count.min_value = 1, 1
    interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")

    nodes, links = group.nodes, group.links
    group_input, group_output = nodes.new("NodeGroupInput"), nodes.new("NodeGroupOutput")
    scene_time = nodes.new("GeometryNodeInputSceneTime")
    since_start = _math(nodes, "SUBTRACT")
    last_index = _math(nodes, "SUBTRACT")
    last_index.inputs[1].default_value = 1.0
    clamp = nodes.new("ShaderNodeClamp")
    clamp.inputs["Min"].default_value = 0.0
    # Rounding, not truncation: motion blur and subframe renders ask for frames in between.
    to_index = nodes.new("FunctionNodeFloatToInt")
    to_index.rounding_mode = "ROUND"
    frame_of_point = nodes.new("GeometryNodeInputNamedAttribute")
    frame_of_point.data_type = "INT"
    frame_of_point.inputs["Name"].default_value = FRAME_ATTRIBUTE
    other_frame = nodes.new("FunctionNodeCompare")
    other_frame.data_type, other_frame.operation = "INT", "NOT_EQUAL"
    delete = nodes.new("GeometryNodeDeleteGeometry")
    delete.domain = "POINT"

    links.new(scene_time.outputs["Frame"], since_start.inputs[0])
    links.new(group_input.outputs[FRAME_START_INPUT], since_start.inputs[1])
    links.new(group_input.outputs[FRAME_COUNT_INPUT], last_index.inputs[0])
    links.new(since_start.outputs["Value"], clamp.inputs["Value"])
    links.new(last_index.outputs["Value"], clamp.inputs["Max"])
    links.new(clamp.outputs["Result"], to_index.inputs["Float"])
    links.new(frame_of_point.outputs["Attribute"], _socket(other_frame.inputs, "A_INT"))
    links.new(to_index.outputs["Integer"], _socket(other_frame.inputs, "B_INT"))
    links.new(group_input.outputs["Geometry"], delete.inputs["Geometry"])
    links.new(other_frame.outputs["Result"], delete.inputs["Selection"])
    links.new(delete.outputs["Geometry"], group_output.inputs["Geometry"])
    columns = (
        (scene_time, group_input),
        (since_start, last_index, frame_of_point),
        (clamp,),
        (to_index,),
        (other_frame,),
        (delete,),
        (group_output,),
    )
    for column, nodes_in_column in enumerate(columns):
        for row, node in enumerate(nodes_in_column):
            node.location = (column * 200.0, -row * 180.0)
    return group


def _math(nodes, operation: str) -> bpy.types.ShaderNodeMath:
    node = nodes.new("ShaderNodeMath")
    node.operation = operation
    return node


def _socket(sockets, identifier: str):
    """A socket by identifier: the Compare node's inputs for each data type share the names A and B."""
    return next(socket for socket in sockets if socket.identifier == identifier)


def _input_identifier(group: bpy.types.NodeTree, name: str) -> str:
    return next(
        item.identifier
        for item in group.interface.items_tree
        if item.item_type == "SOCKET" and item.in_out == "INPUT" and item.name == name
    )
