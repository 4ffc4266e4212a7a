"""Running engine jobs from an operator: modal with progress in the status bar and the panel (invoke), or to the
end for scripts (execute). Both go through the same modal() steps; only the main thread touches bpy, and the scene
is written only once every job has succeeded.

After a job succeeds its worker stays warm (`WARM`, see `core.warm_worker`) for the Keep Engine Warm preference's
seconds, and the next job with the same Python, engine and threads runs on it at once. A Blender timer stops it
when that time is over; without one (background mode runs no timers) the next job stops an expired worker instead
of using it. It is stopped when the add-on is disabled, when Set up engine runs (it may replace the engine's
Python), and at exit."""

import time
import types

import bpy
from bpy.app.handlers import persistent

from . import model_store, preferences
from .core.errors import EngineError
from .core.text import overall_fraction, progress_text, short_progress_text
from .core.warm_worker import WarmWorker
from .core.worker_client import EngineSession, JobRequest, JobResult, SessionState

TIMER_INTERVAL_S = 0.1
SYNC_WAIT_S = 0.25
SYNC_TICK = types.SimpleNamespace(type="TIMER", value="NOTHING")
"""The event execute() hands modal() each time it has waited for the worker."""
BACKGROUND_PRINT_INTERVAL_S = 5.0
"""How often execute() prints the progress line when Blender runs without a UI (headless scripts)."""

_running: set = set()
"""What runs now (engine sessions, the setup's commands): one at a time, stopped when the add-on is disabled or a
file is loaded."""


def job_running() -> bool:
    return bool(_running)


WARM = WarmWorker()
"""The worker kept warm between jobs (at most one)."""


def claim(task) -> None:
    if not isinstance(task, EngineSession):
        stop_warm_worker()  # Set up engine's commands: they may swap in another environment at the same path
    _running.add(task)


def release(task) -> None:
    _running.discard(task)


def stop_all() -> None:
    """Stop every running task (the add-on is being disabled, a file is loaded): workers are killed, job files
    deleted."""
    for task in list(_running):
        task.close()
    _running.clear()


def close_session(session: EngineSession) -> None:
    """Close an ended (or dropped) session: its worker is parked in `WARM` when it succeeded, else stopped; a parked
    worker gets the timer that stops it when its idle time is over."""
    session.close()
    watch_warm_worker()


def _expire_warm_worker() -> float | None:
    """bpy.app.timers function: stops the warm worker once its idle time is over; runs again when it has time left,
    not at all once none is parked (a session took it, or it was stopped)."""
    return WARM.expire()


def watch_warm_worker() -> None:
    """(Re)register the timer for the parked worker's time left (the preference may have changed since)."""
    left = WARM.expire()
    if bpy.app.timers.is_registered(_expire_warm_worker):
        bpy.app.timers.unregister(_expire_warm_worker)
    if left is not None:
        bpy.app.timers.register(_expire_warm_worker, first_interval=left, persistent=True)


def stop_warm_worker() -> None:
    """Stop the warm worker and its timer (the add-on is disabled)."""
    if bpy.app.timers.is_registered(_expire_warm_worker):
        bpy.app.timers.unregister(_expire_warm_worker)
    WARM.stop()


@persistent
def stop_jobs_before_load(*_unused) -> None:
    """load_pre handler: File > New or Open drops the running operators, so their tasks are stopped here (workers
    killed, job files deleted) and the progress cleared, whether Blender calls their cancel() before or after (a
    second stop does nothing). A warm idle worker stays: it holds no scene data (each job sends its inputs), so the
    new file's first job starts at once too."""
    stop_all()
    _clear_status(bpy.context)


@persistent
def clear_status_after_load(*_unused) -> None:
    """load_post handler: a file saved while a job ran must not come back showing that job as running."""
    if not job_running():
        _clear_status(bpy.context)


def _clear_status(context) -> None:
    if context.window_manager is not None and hasattr(context.window_manager, "neural_sdf_job"):
        clear_progress(context)


def show_progress(context: bpy.types.Context, text: str, fraction: float, short_text: str | None = None) -> None:
    """The whole line ``text`` in the status bar; ``short_text`` (else ``text``) on the panel's progress bar, which
    the default sidebar width would cut."""
    status = context.window_manager.neural_sdf_job
    status.is_running, status.text, status.fraction = True, text, fraction
    status.short_text = text if short_text is None else short_text
    if context.workspace is not None:
        context.workspace.status_text_set(f"{text}  (Esc to cancel)")
    redraw_progress(context)


def clear_progress(context: bpy.types.Context) -> None:
    status = context.window_manager.neural_sdf_job
    status.is_running, status.text, status.short_text, status.fraction = False, "", "", 0.0
    if context.workspace is not None:
        context.workspace.status_text_set(None)
    redraw_progress(context)


def remove_timer(context: bpy.types.Context, operator) -> None:
    """Remove the operator's modal timer (``operator._timer``), once."""
    if operator._timer is not None:
        context.window_manager.event_timer_remove(operator._timer)
        operator._timer = None


def redraw_progress(context: bpy.types.Context) -> None:
    """Redraw what shows the progress, every tick: the sidebar (UI region) of each 3D view, not the whole 3D views,
    and the Preferences (Set up Engine and Check Engine are pressed there). The status bar is a global area, not in
    ``screen.areas``: ``status_text_set`` redraws it."""
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                for region in area.regions:
                    if region.type == "UI":
                        region.tag_redraw()
            elif area.type == "PREFERENCES":
                area.tag_redraw()


class EngineJobOperator:
    """Mixin for operators that run engine jobs. A subclass says what to run (`requests`, reading the scene) and
    writes the results (`apply`, returning the report); `apply` checks every array before it changes anything. Every
    folder the jobs need (the jobs folder, and the models folder when ``makes_model``) is checked before they start."""

    makes_model = False
    """Whether `apply` keeps a model file (`model_store.keep_model`)."""

    def requests(self, context: bpy.types.Context) -> list[JobRequest]:
        raise NotImplementedError

    def apply(self, context: bpy.types.Context, results: list[JobResult]) -> str:
        raise NotImplementedError

    def invoke(self, context, event):
        if not self._start(context):
            return {"CANCELLED"}
        window_manager = context.window_manager
        self._timer = window_manager.event_timer_add(TIMER_INTERVAL_S, window=context.window)
        window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        if not self._start(context):
            return {"CANCELLED"}
        printed_at = time.monotonic()
        while (result := self.modal(context, SYNC_TICK)) == {"RUNNING_MODAL"}:
            if bpy.app.background and time.monotonic() - printed_at >= BACKGROUND_PRINT_INTERVAL_S:
                print(context.window_manager.neural_sdf_job.text, flush=True)
                printed_at = time.monotonic()
            self.session.wait(SYNC_WAIT_S)
        return result

    def cancel(self, context):
        """Blender drops the running operator (a file is loaded, the window that ran it is closed): the job is
        stopped as if cancelled, and the scene is left as it was."""
        self._let_go(context)
        close_session(self.session)

    def modal(self, context, event):
        if event.type == "ESC" and event.value == "PRESS":
            self.session.cancel()
        elif event.type != "TIMER":
            return {"PASS_THROUGH"}
        self.session.poll()
        if not self.session.finished:
            self._show_progress(context)
            return {"RUNNING_MODAL"}
        return self._finish(context)

    def _start(self, context) -> bool:
        prefs = preferences.get(context)
        self._timer = None
        try:
            if self.makes_model:
                model_store.check_models_dir(context)
            self.session = EngineSession(
                preferences.worker_launch(prefs),
                self.requests(context),
                preferences.jobs_dir(prefs),
                hang_timeout_s=prefs.hang_timeout,
                warm=WARM,
                keep_warm_s=prefs.keep_warm,
            )
            self.session.start()
        except EngineError as error:
            self.report({"ERROR"}, str(error))
            return False
        claim(self.session)
        self._show_progress(context)
        return True

    def _show_progress(self, context) -> None:
        session = self.session
        count = len(session.requests)
        kind = session.requests[min(session.job_index, count - 1)].kind
        progress = session.progress
        started = session.state is not SessionState.STARTING
        show_progress(
            context,
            progress_text(kind, session.label, progress, session.job_index, count, engine_started=started),
            overall_fraction(kind, progress, session.job_index, count),
            short_progress_text(kind, progress, session.job_index, count, engine_started=started),
        )

    def _let_go(self, context) -> None:
        """What every end of a job does first, whatever its outcome: the claim released, the timer removed, the
        progress cleared. The session is closed after (once its results are applied)."""
        release(self.session)
        remove_timer(context, self)
        clear_progress(context)

    def _finish(self, context):
        session = self.session
        self._let_go(context)
        try:
            if session.state is SessionState.SUCCEEDED:
                try:
                    self.report({"INFO"}, self.apply(context, session.results))
                except EngineError as error:
                    self.report({"ERROR"}, f"{error}. The scene was not changed")
                    return {"CANCELLED"}
                return {"FINISHED"}
            level = "WARNING" if session.state is SessionState.CANCELLED else "ERROR"
            self.report({level}, f"{session.message}. The scene was not changed")
            return {"CANCELLED"}
        finally:
            close_session(session)
