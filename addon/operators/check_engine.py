import bpy

from .. import engine_jobs, preferences
from ..core.errors import EngineError
from ..core.text import describe_engine
from ..core.worker_client import EngineSession, SessionState
from ..engine_jobs import EngineJobOperator
from . import checks


class NEURALSDF_OT_check_engine(EngineJobOperator, bpy.types.Operator):
    """Start the engine once and show its versions and the device it found"""

    bl_idname = "neural_sdf.check_engine"
    bl_label = "Check Engine"

    # A session without jobs, run like the job operators' (invoke: modal with a timer, Esc cancels; execute: to the
    # end), so the engine's start-up (its torch import, seconds) never blocks Blender's UI. It always starts a fresh
    # worker (that start is what it checks) and, once it answered, keeps it warm for the next job.

    @classmethod
    def poll(cls, context):
        return checks.no_job_running(cls)

    def _start(self, context) -> bool:
        prefs = preferences.get(context)
        self._timer = None
        try:
            self.session = EngineSession(
                preferences.worker_launch(prefs),
                [],
                preferences.jobs_dir(prefs),
                hang_timeout_s=prefs.hang_timeout,
                warm=engine_jobs.WARM,
                keep_warm_s=prefs.keep_warm,
                reuse=False,
            )
            self.session.start()
        except EngineError as error:
            prefs.engine_report = f"Not working: {error}"
            self.report({"ERROR"}, str(error))
            return False
        engine_jobs.claim(self.session)
        self._show_progress(context)
        return True

    def _show_progress(self, context) -> None:
        engine_jobs.show_progress(context, "Checking the engine: starting it", 0.0, "Starting the engine\u2026")

    def _finish(self, context):
        session = self.session
        self._let_go(context)
        engine_jobs.close_session(session)
        prefs = preferences.get(context)
        if session.state is SessionState.SUCCEEDED:
            prefs.engine_report = describe_engine(session.hello)
            self.report({"INFO"}, prefs.engine_report)
            return {"FINISHED"}
        if session.state is SessionState.CANCELLED:
            self.report({"WARNING"}, session.message)
        else:
            prefs.engine_report = f"Not working: {session.message}"
            self.report({"ERROR"}, session.message)
        return {"CANCELLED"}
