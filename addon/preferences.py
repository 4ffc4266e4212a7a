"""Add-on preferences: where the engine runs (here, or a remote server: `core.remote`), which Python runs it (or
the relay to the server), on which device, where its files go, which PyTorch build Set up engine installs; and,
while Set up engine runs, its progress (where it was pressed)."""

from pathlib import Path

import bpy
from bpy.props import EnumProperty, FloatProperty, IntProperty, StringProperty

from .core.engine_env import VENV_DIRNAME, choose_python, engine_root, progress_detail
from .core.items import DEVICE_ITEMS, ENGINE_MODE_ITEMS, TORCH_BUILD_ITEMS
from .core.remote import DEFAULT_URL, remote_launch
from .core.worker_client import MIN_HANG_TIMEOUT_S, WorkerLaunch

JOBS_DIRNAME = "jobs"


class NeuralSDFPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    engine_mode: EnumProperty(name="Engine", items=ENGINE_MODE_ITEMS, default="LOCAL")
    remote_url: StringProperty(
        name="Server", default=DEFAULT_URL,
        description="Address of the engine server (python -m engine serve prints it): ws://host:port, wss:// with TLS",
    )  # fmt: skip
    remote_token: StringProperty(
        name="Token", subtype='PASSWORD',
        description="The server's token (the content of its --token-file); empty for a server on this computer without one",
    )  # fmt: skip
    python_path: StringProperty(
        name="Python", subtype='FILE_PATH',
        description="Interpreter that runs the engine; empty: the one Set up engine made, else Blender's own",
    )  # fmt: skip
    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default="auto")
    threads: IntProperty(
        name="CPU Threads", min=0, soft_max=64, default=0,
        description="Threads the engine may use on the CPU; 0: all. Fewer keep Blender responsive while it trains",
    )  # fmt: skip
    cache_dir: StringProperty(
        name="Cache Folder", subtype='DIR_PATH',
        description=(
            "Folder for the engine environment, job files and the models of unsaved files; "
            "empty: the extension's user folder"
        ),
    )  # fmt: skip
    hang_timeout: FloatProperty(
        name="Hang Timeout", unit='TIME_ABSOLUTE', min=MIN_HANG_TIMEOUT_S, soft_max=600.0, default=60.0,
        description=(
            "Stop the engine when it has sent nothing (not even its heartbeat) for this long; at least "
            f"{MIN_HANG_TIMEOUT_S:.0f} s, as a healthy engine can be silent for seconds while it prepares a large mesh"
        ),
    )  # fmt: skip
    keep_warm: FloatProperty(
        name="Keep Engine Warm", unit='TIME_ABSOLUTE', min=0.0, soft_max=3600.0, default=300.0,
        description=(
            "Keep the engine running this long after a job, so the next one starts at once instead of after the "
            "engine's start-up (several seconds); it holds about 400 MB of memory while idle. 0: stop it after each "
            "job"
        ),
    )  # fmt: skip
    torch_build: EnumProperty(
        name="PyTorch Build", items=TORCH_BUILD_ITEMS, default="AUTO",
        description="Which PyTorch build Set up engine installs",
    )  # fmt: skip
    engine_report: StringProperty(name="Engine", description="What the last Check engine found")

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        col = layout.column()
        col.prop(self, "engine_mode", expand=True)
        remote = self.engine_mode == "REMOTE"
        if remote:
            col.prop(self, "remote_url")
            col.prop(self, "remote_token")
        col.prop(self, "python_path")
        col.label(text=f"{'Relay runs' if remote else 'Runs'}: {python(self)}", icon="CONSOLE")
        col.prop(self, "device")
        if not remote:
            col.prop(self, "threads")
        col.prop(self, "cache_dir")
        col.prop(self, "hang_timeout")
        col.prop(self, "keep_warm")
        col.prop(self, "torch_build")
        row = layout.row(align=True)
        row.operator("neural_sdf.setup_engine", icon="IMPORT")
        row.operator("neural_sdf.check_engine", icon="CHECKMARK")
        job = context.window_manager.neural_sdf_job
        if job.is_running:
            draw_progress(layout, job)
        if not bpy.app.online_access:
            layout.label(
                text="Set up engine needs online access (Preferences > System > Network)", icon="INTERNET_OFFLINE"
            )
        if self.engine_report:
            layout.label(text=self.engine_report, icon="INFO")


def draw_progress(layout: bpy.types.UILayout, job) -> None:
    """The running job (Set up engine, Check engine) as a bar with its step, and below it what it last printed."""
    col = layout.column(align=True)
    col.progress(factor=job.fraction, type="BAR", text=job.short_text or job.text)
    detail = progress_detail(job.text, job.short_text)
    if detail:
        col.label(text=detail, icon="TIME")


def get(context: bpy.types.Context) -> NeuralSDFPreferences:
    return context.preferences.addons[__package__].preferences


def cache_dir(prefs: NeuralSDFPreferences) -> Path:
    """The cache folder (not made here: each folder in it is made where it is needed, see `core.folders`)."""
    if prefs.cache_dir:
        return Path(bpy.path.abspath(prefs.cache_dir))
    return Path(bpy.utils.extension_path_user(__package__, create=False))


def python(prefs: NeuralSDFPreferences) -> str:
    return choose_python(
        bpy.path.abspath(prefs.python_path) if prefs.python_path else "", cache_dir(prefs) / VENV_DIRNAME
    )


def worker_launch(prefs: NeuralSDFPreferences) -> WorkerLaunch:
    """How a job's engine starts: the local worker, or the relay to the remote server (raises `EngineError` for an
    unusable server address)."""
    if prefs.engine_mode == "REMOTE":
        return remote_launch(python(prefs), engine_root(), prefs.remote_url, prefs.remote_token)
    threads = {name: str(prefs.threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")} if prefs.threads else {}
    return WorkerLaunch(python(prefs), engine_root(), threads)


def jobs_dir(prefs: NeuralSDFPreferences) -> Path:
    return cache_dir(prefs) / JOBS_DIRNAME


classes = (NeuralSDFPreferences,)
