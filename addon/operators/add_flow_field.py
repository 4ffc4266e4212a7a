import bpy
from mathutils import Matrix

from .. import scene_io
from ..properties import FIELD_KIND_ITEMS
from . import checks

FIELD_KINDS = tuple(item for item in FIELD_KIND_ITEMS if item[0] != "NONE")
FIELD_NAMES = {identifier: name for identifier, name, _ in FIELD_KINDS}


class NEURALSDF_OT_add_flow_field(bpy.types.Operator):
    """Add an empty at the 3D cursor that pushes, pulls or turns the surface in a Fields evolution"""

    bl_idname = "neural_sdf.add_flow_field"
    bl_label = "Add Flow Field"
    bl_options = {"REGISTER", "UNDO"}

    kind: bpy.props.EnumProperty(name="Field", items=FIELD_KINDS, default="SOURCE")

    @classmethod
    def poll(cls, context):
        return checks.in_object_mode(cls, context)

    def execute(self, context):
        cursor = Matrix.Translation(context.scene.cursor.location)
        obj = scene_io.add_object(context, f"{FIELD_NAMES[self.kind]} Field", None, cursor)
        obj.neural_sdf_field.kind = self.kind  # its update draws the empty as the field's shape
        return {"FINISHED"}
