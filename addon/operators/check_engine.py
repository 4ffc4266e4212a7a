import bpy

from .. import preferences
from ..core.errors import EngineError
from ..core.text import describe_engine
from ..core.worker_client import check_engine


class NEURALSDF_OT_check_engine(bpy.types.Operator):
    """Start the engine once and show its versions and the device it found"""

    bl_idname = "neural_sdf.check_engine"
    bl_label = "Check Engine"

    def execute(self, context):
        prefs = preferences.get(context)
        try:
            hello = check_engine(
                preferences.worker_launch(prefs), preferences.jobs_dir(prefs), hang_timeout_s=prefs.hang_timeout
            )
        except EngineError as error:
            prefs.engine_report = f"Not working: {error}"
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        prefs.engine_report = describe_engine(hello)
        self.report({"INFO"}, prefs.engine_report)
        return {"FINISHED"}
