"""Set up Engine (in the Preferences): a virtual environment with the PyTorch build chosen for this machine (or in
the preferences) and the engine's other requirements; its progress shows in the Preferences, where it was pressed,
and in the status bar."""

import sys

import bpy

from .. import engine_jobs, preferences
from ..core.engine_env import (
    REQUIREMENTS_FILENAME,
    VENV_DIRNAME,
    EnvironmentSetup,
    choose_torch_build,
    engine_root,
    probe_machine,
)
from ..core.errors import EngineError
from ..core.worker_client import SessionState
from ..engine_jobs import SYNC_TICK, SYNC_WAIT_S, TIMER_INTERVAL_S
from . import checks


class NEURALSDF_OT_setup_engine(bpy.types.Operator):
    """Create a Python environment in the cache folder with the engine's requirements and the PyTorch build for this
    machine: CPU (about 200 MB), or CUDA (about 3 GB) where an NVIDIA driver is found"""

    bl_idname = "neural_sdf.setup_engine"
    bl_label = "Set up Engine"

    @classmethod
    def poll(cls, context):
        if not bpy.app.online_access:
            cls.poll_message_set(
                "Online access is off: allow it in Preferences > System > Network to download the engine's packages"
            )
            return False
        return checks.no_job_running(cls)

    def invoke(self, context, event):
        if not self._start(context):
            return {"CANCELLED"}
        self._timer = context.window_manager.event_timer_add(TIMER_INTERVAL_S, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        if not self._start(context):
            return {"CANCELLED"}
        while (result := self.modal(context, SYNC_TICK)) == {"RUNNING_MODAL"}:
            self.setup.commands.wait(SYNC_WAIT_S)
        return result

    def cancel(self, context):
        """Blender drops the running operator (a file is loaded, the Preferences window is closed): the commands are
        stopped and the new environment deleted, as on Esc."""
        commands = self.setup.commands
        commands.cancel()
        engine_jobs.release(commands)
        engine_jobs.remove_timer(context, self)
        engine_jobs.clear_progress(context)
        self.setup.finish()

    def modal(self, context, event):
        commands = self.setup.commands
        if event.type == "ESC" and event.value == "PRESS":
            commands.cancel()
        elif event.type != "TIMER":
            return {"PASS_THROUGH"}
        commands.poll()
        if not commands.finished:
            self._show_progress(context)
            return {"RUNNING_MODAL"}
        engine_jobs.release(commands)
        engine_jobs.remove_timer(context, self)
        engine_jobs.clear_progress(context)
        try:
            self.setup.finish()
        except EngineError as error:
            self.report({"ERROR"}, f"Set up engine: {error}")
            return {"CANCELLED"}
        if commands.state is SessionState.SUCCEEDED:
            self.report({"INFO"}, f"The engine environment is ready in {self.setup.venv_dir}: press Check Engine")
            return {"FINISHED"}
        level = "WARNING" if commands.state is SessionState.CANCELLED else "ERROR"
        self.report({level}, f"Set up engine: {self.setup.failure_message()}")
        return {"CANCELLED"}

    def _start(self, context) -> bool:
        prefs = preferences.get(context)
        self._timer = None
        try:
            build = choose_torch_build(probe_machine(), prefs.torch_build)
            # Blender's own Python makes the environment, whatever Python runs the engine now.
            self.setup = EnvironmentSetup(
                sys.executable,
                preferences.cache_dir(prefs) / VENV_DIRNAME,
                engine_root() / REQUIREMENTS_FILENAME,
                build,
            )
        except EngineError as error:
            self.report({"ERROR"}, f"Set up engine: {error}")
            return False
        self.report({"INFO"}, f"Installing {self.setup.describe()}…")
        self.setup.commands.start()
        engine_jobs.claim(self.setup.commands)
        self._show_progress(context)
        return True

    def _show_progress(self, context) -> None:
        text, short_text, fraction = self.setup.progress()
        engine_jobs.show_progress(context, text, fraction, short_text)
