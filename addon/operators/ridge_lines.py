import bpy
import numpy as np

from .. import preferences, scene_io
from ..core.bake import RIDGE_KINDS, ridge_polylines, ridges_params
from ..core.errors import EngineError
from ..core.worker_client import JobRequest
from ..engine_jobs import EngineJobOperator
from ..properties import model_file
from . import checks

RIDGES_TAG = "neural_sdf_ridges"
"""Custom property on the curves Ridge Lines made: only those are replaced by a later run."""


class NEURALSDF_OT_ridge_lines(EngineJobOperator, bpy.types.Operator):
    """Trace the ridge and valley lines of a neural SDF on the active mesh (crests where the larger principal
    curvature peaks across them, and troughs) into two curve objects, for line art"""

    bl_idname = "neural_sdf.ridge_lines"
    bl_label = "Ridge Lines"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if not (
            checks.no_job_running(cls) and checks.in_object_mode(cls, context) and checks.active_mesh(cls, context)
        ):
            return False
        return checks.model_for_active_mesh(cls, context)

    def requests(self, context):
        target, owner = context.active_object, checks.model_owner(context)
        mesh = target.data
        if len(mesh.polygons) == 0:
            raise EngineError(f"'{target.name}' has no faces to trace lines on")
        mesh.calc_loop_triangles()
        triangles = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int32)
        mesh.loop_triangles.foreach_get("vertices", triangles)
        # The model's coordinates are world space at fit time; the model object may have moved since.
        model_world = owner.matrix_world @ owner.neural_sdf.model_to_object
        to_model = model_world.inverted() @ target.matrix_world
        self.to_object = scene_io.matrix_array(to_model.inverted())
        vertices = scene_io.transform_points(scene_io.matrix_array(to_model), scene_io.vertex_positions(mesh))
        self.target_name = target.name
        params = ridges_params(model=model_file(owner), device=preferences.get(context).device)
        inputs = {"vertices": vertices, "faces": triangles.reshape(-1, 3)}
        return [JobRequest("ridges", params, inputs, f"tracing the ridges of '{target.name}'")]

    def apply(self, context, results):
        (result,) = results
        target = bpy.data.objects.get(self.target_name)
        if target is None or target.type != "MESH":
            raise EngineError(f"'{self.target_name}' was deleted while its ridges were traced: run Ridge Lines again")
        lines = {kind: ridge_polylines(result.outputs, kind) for kind, _ in RIDGE_KINDS}
        made = []
        for kind, word in RIDGE_KINDS:
            name = f"{target.name} {word}"
            if not lines[kind]:
                continue
            curve = bpy.data.curves.new(name, "CURVE")
            curve.dimensions = "3D"
            for points, closed in lines[kind]:
                local = scene_io.transform_points(self.to_object, points)
                spline = curve.splines.new("POLY")
                spline.points.add(len(local) - 1)
                spline.points.foreach_set("co", np.hstack([local, np.ones((len(local), 1))]).astype(np.float32).ravel())
                spline.use_cyclic_u = closed
            made.append(self._curve_object(context, name, curve, target))
        counts = ", ".join(f"{len(lines[kind])} {word.lower()}" for kind, word in RIDGE_KINDS)
        if not made:
            return f"'{target.name}' has no ridge or valley lines longer than 5 % of its size ({counts})"
        return f"Traced {counts} of '{target.name}' into " + " and ".join(f"'{obj.name}'" for obj in made)

    @staticmethod
    def _curve_object(context, name: str, curve, target) -> bpy.types.Object:
        """A curve object at the target's place: the one this operator made under that name before (its old curve
        data replaced), or a new one in the target's collections."""
        obj = bpy.data.objects.get(name)
        if obj is not None and obj.get(RIDGES_TAG) and obj.type == "CURVE":
            old, obj.data = obj.data, curve
            if old.users == 0:
                bpy.data.curves.remove(old)
        else:
            obj = bpy.data.objects.new(name, curve)
            obj[RIDGES_TAG] = True
            for collection in target.users_collection or (context.scene.collection,):
                collection.objects.link(obj)
        obj.matrix_world = target.matrix_world.copy()
        return obj
