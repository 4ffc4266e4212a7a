import bpy
from mathutils import Matrix, Vector

from .. import scene_io
from ..core.morph import free_pair_id
from . import checks


class NEURALSDF_OT_add_landmark_pair(bpy.types.Operator):
    """Add a source landmark empty at the 3D cursor and its target partner beside it, with the next free pair id:
    move the target onto the point of the target shape where the source point should go"""

    bl_idname = "neural_sdf.add_landmark_pair"
    bl_label = "Add Landmark Pair"
    bl_options = {"REGISTER", "UNDO"}

    offset: bpy.props.FloatVectorProperty(
        name="Target Offset", subtype="TRANSLATION", default=(0.5, 0.0, 0.0),
        description="Where the target landmark goes, from the source landmark at the 3D cursor",
    )  # fmt: skip
    size: bpy.props.FloatProperty(
        name="Size", subtype="DISTANCE", min=1e-4, soft_max=1.0, default=0.1,
        description="How large the empties are drawn",
    )  # fmt: skip

    @classmethod
    def poll(cls, context):
        return checks.in_object_mode(cls, context)

    def execute(self, context):
        pair = free_pair_id({landmark.pair for landmark in scene_io.landmark_empties(context.scene)})
        cursor = context.scene.cursor.location
        # The target is added last, so it is the one selected and active: ready to be moved onto the target shape.
        for role, location in (("SOURCE", cursor), ("TARGET", cursor + Vector(self.offset))):
            obj = scene_io.add_object(context, f"Landmark {pair} {role.title()}", None, Matrix.Translation(location))
            obj.empty_display_size = self.size
            landmark = obj.neural_sdf_landmark
            landmark.pair, landmark.role = pair, role  # the role's update draws the empty as its role
        return {"FINISHED"}
