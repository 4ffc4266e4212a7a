"""What every GUI scenario uses (tests/gui/in_blender.py runs them): the run's record, the add-on's modules,
real input through xdotool, waiting inside Blender's event loop, screenshots and the scenes they start from."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import bpy

REPO = Path(__file__).resolve().parents[2]
BUNNY = REPO / "data" / "bunny.ply"
PACKAGE = "bl_ext.user_default.neural_sdf"
TICK_S = 0.1
SETTLE_S = 1.0
"""How long a scenario lets Blender redraw before a screenshot of a finished step."""
FIT_STEPS = 300
FIT_RESOLUTION = 96
LONG_FIT_STEPS = 5000
"""A fit that is sure to run on while a scenario opens menus (a job that ends closes an open menu)."""
SIDEBAR_TAB_INSET_PX = 10
STATUS_BAR_PX = 20
NEURAL_SDF_TAB_OFFSET_PX = 175


class Scenario:
    """The record of one run: checks, timings and screenshots, rewritten to result.json after each."""

    def __init__(self, name: str, out: Path):
        self.name, self.out = name, out
        self.checks: list[dict] = []
        self.timings: dict[str, float] = {}
        self.screenshots: list[dict] = []
        self.error = ""
        out.mkdir(parents=True, exist_ok=True)

    def check(self, what: str, ok: bool, detail="") -> bool:
        self.checks.append({"check": what, "ok": bool(ok), "detail": str(detail)})
        print(f"[gui] {'ok  ' if ok else 'FAIL'} {what} {detail}", flush=True)
        self.save()
        return ok

    def shot(self, name: str, shows: str) -> None:
        path = self.out / f"{len(self.screenshots):02d}-{name}.png"
        subprocess.run(["import", "-window", "root", str(path)], check=False)
        self.screenshots.append({"file": path.name, "shows": shows})
        self.save()

    def save(self) -> None:
        record = {
            "scenario": self.name,
            "checks": self.checks,
            "timings_s": self.timings,
            "screenshots": self.screenshots,
            "error": self.error,
        }
        (self.out / "result.json").write_text(json.dumps(record, indent=1), encoding="utf-8")


def addon(name: str):
    return sys.modules[f"{PACKAGE}.{name}"]


def prefs():
    return bpy.context.preferences.addons[PACKAGE].preferences


def job_status():
    return bpy.context.window_manager.neural_sdf_job


def view3d():
    """The 3D view's window, area and its main region (for context overrides and for aiming the mouse)."""
    window = bpy.context.window_manager.windows[0]
    area = max((a for a in window.screen.areas if a.type == "VIEW_3D"), key=lambda a: a.width * a.height)
    region = next(r for r in area.regions if r.type == "WINDOW")
    return window, area, region


def invoke(operator: str, **props) -> set:
    window, area, region = view3d()
    category, name = operator.split(".")
    with bpy.context.temp_override(window=window, area=area, region=region):
        return getattr(getattr(bpy.ops, category), name)("INVOKE_DEFAULT", **props)


def xdotool(*args: str) -> None:
    subprocess.run(["xdotool", *args], check=False)


def mouse_over_view() -> None:
    """Put the pointer in the middle of the 3D view (X's y axis points down, Blender's up)."""
    window, _, region = view3d()
    x = region.x + region.width // 2
    y = window.height - (region.y + region.height // 2)
    xdotool("mousemove", str(x), str(y))


def press(keys: str) -> None:
    mouse_over_view()
    xdotool("key", "--clearmodifiers", keys)


def wait(seconds: float):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        yield


def wait_until(condition, timeout_s: float):
    """Yield ticks until ``condition()`` holds; returns whether it did before ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            return False
        yield
    return True


def reports() -> list[str]:
    """The Info log's lines (every report the operators made), read through an Info editor in the bottom area."""
    window = bpy.context.window_manager.windows[0]
    area = next(a for a in window.screen.areas if a.type == "INFO")
    saved = bpy.context.window_manager.clipboard
    with bpy.context.temp_override(window=window, area=area, region=area.regions[-1]):
        bpy.ops.info.select_all(action="SELECT")
        bpy.ops.info.report_copy()
        bpy.ops.info.select_all(action="DESELECT")
    text = bpy.context.window_manager.clipboard
    bpy.context.window_manager.clipboard = saved
    return [line for line in text.splitlines() if line.strip()]


def running_session():
    running = list(addon("engine_jobs")._running)
    return running[0] if running else None


def training_step() -> int:
    session = running_session()
    progress = getattr(session, "progress", None)
    return progress.step if progress is not None and progress.stage == "fit" else 0


def process_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def scene_snapshot() -> dict:
    return {obj.name: (obj.type, len(obj.data.vertices) if obj.type == "MESH" else 0) for obj in bpy.data.objects}


def preview_objects() -> list[str]:
    return [obj.name for obj in bpy.data.objects if obj.get(addon("preview").MARK)]


# --- set-up -------------------------------------------------------------------------------------------------------


def install_extension(zip_path: str, engine_python: str) -> None:
    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    preferences = prefs()
    preferences.python_path = engine_python
    preferences.device = "cpu"
    preferences.threads = 1  # one core trains, the other keeps Blender's UI (llvmpipe) drawing
    # File > New would ask to save the scenario's unsaved scene first (the preview alone makes it dirty).
    bpy.context.preferences.view.use_save_prompt = False


def bunny_scene() -> None:
    """The bunny alone, selected and framed, the Neural SDF sidebar open, an Info editor where the timeline was."""
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    for mesh in list(bpy.data.meshes):
        bpy.data.meshes.remove(mesh)
    bpy.ops.wm.ply_import(filepath=str(BUNNY))
    bunny = bpy.context.active_object
    bunny.name = "Bunny"
    settings = bpy.context.scene.neural_sdf
    settings.preset, settings.use_custom_steps, settings.steps, settings.resolution = (
        "tiny", True, FIT_STEPS, FIT_RESOLUTION
    )  # fmt: skip
    window, area, region = view3d()
    area.spaces.active.show_region_ui = True
    with bpy.context.temp_override(window=window, area=area, region=region):
        bpy.ops.view3d.view_selected()
    for other in window.screen.areas:
        if other.type == "DOPESHEET_EDITOR":
            other.type = "INFO"
    bpy.ops.ed.undo_push(message="Scenario scene")  # Ctrl+Z in a scenario must stop here, as after a user's import


def open_sidebar_tab() -> None:
    """Click the sidebar's Neural SDF tab (scripts cannot choose a sidebar tab): the tabs run down the region's
    right edge, Item, Tool, View, Neural SDF, at Blender's default UI scale."""
    window, area, _ = view3d()
    ui = next(r for r in area.regions if r.type == "UI")
    x = ui.x + ui.width - SIDEBAR_TAB_INSET_PX
    y = window.height - (ui.y + ui.height) + NEURAL_SDF_TAB_OFFSET_PX
    xdotool("mousemove", str(x), str(y), "click", "1")


def status_bar_changes(run: Scenario, seconds: float):
    """Whether the status bar's pixels change over ``seconds`` while the pointer rests (Blender redraws a region
    only when told to: progress must not wait for the mouse to move)."""
    window = bpy.context.window_manager.windows[0]
    # The status bar is a global area, outside window.screen.areas: its strip at the bottom of the window.
    crop = f"{window.width}x{STATUS_BAR_PX}+0+{window.height - STATUS_BAR_PX}"
    first, second = run.out / "status-a.png", run.out / "status-b.png"
    subprocess.run(["import", "-window", "root", "-crop", crop, str(first)], check=False)
    yield from wait(seconds)
    subprocess.run(["import", "-window", "root", "-crop", crop, str(second)], check=False)
    compared = subprocess.run(["compare", "-metric", "AE", str(first), str(second), "null:"],
                              capture_output=True, text=True)
    changed = compared.stderr.strip().split()[0] if compared.stderr.strip() else "0"
    return float(changed) > 0
