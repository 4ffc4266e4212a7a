"""One GUI scenario inside a real, interactive Blender (run by tests/gui/run_gui.py, never by pytest).

    blender --factory-startup --python tests/gui/in_blender.py -- --scenario NAME --zip EXT.zip
            --engine-python PY --out DIR

Installs the built extension from its zip, sets its preferences, loads the bundled bunny and runs the scenario from
a persistent timer, so Blender's own event loop runs throughout: operators are started with ``INVOKE_DEFAULT``
(their invoke() and modal() run, as from a button), keys are real X events sent with xdotool (Esc, Ctrl+Z,
Ctrl+N), screenshots are taken of the X screen with ImageMagick's ``import``. Each check is written to
``DIR/result.json`` as it is made, with the timings and screenshots; Blender then quits. Runs under Blender's own
Python (3.13 in Debian 13), which has numpy but no torch: the engine runs in the project's ``.venv``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
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


# --- scenarios ----------------------------------------------------------------------------------------------------


def fit_then_esc(run: Scenario):
    before = scene_snapshot()
    started = time.monotonic()
    run.check("Fit starts modal", invoke("neural_sdf.fit") == {"RUNNING_MODAL"})
    shown = yield from wait_until(lambda: job_status().is_running and "starting" in job_status().short_text.lower()
                                  or training_step() > 0, 30)
    run.check("a starting state is shown before step 1", shown, job_status().short_text)
    run.shot("starting", "the sidebar and status bar while the engine starts")
    stepping = yield from wait_until(lambda: training_step() >= 30, 120)
    run.timings["click to step 30"] = time.monotonic() - started
    run.check("training reaches step 30", stepping, job_status().text)
    pid = running_session().pid
    run.shot("training", "progress bar with step count and ETA, full line in the status bar")
    changes = yield from status_bar_changes(run, 2.0)
    run.check("the status bar's progress redraws while the mouse rests", changes)
    pressed = time.monotonic()
    press("Escape")
    stopped = yield from wait_until(lambda: not addon("engine_jobs").job_running(), 15)
    run.timings["Esc to stopped"] = time.monotonic() - pressed
    run.check("Esc stops the job", stopped)
    yield from wait(1.0)
    run.check("the worker process is gone", not process_alive(pid), f"pid {pid}")
    run.check("the scene is as before", scene_snapshot() == before, sorted(scene_snapshot()))
    run.check("the source is visible again", not bpy.data.objects["Bunny"].hide_get())
    lines = reports()
    run.check("the report says cancelled at a step", any("Cancelled" in line and "step" in line for line in lines),
              lines[-1:] if lines else "no reports")
    run.check("no progress left in the panel", not job_status().is_running)
    yield from wait(SETTLE_S)
    run.shot("cancelled", "the scene as before, the 'Cancelled ... at step N' report")


def fit_preview_undo(run: Scenario):
    before = scene_snapshot()
    started = time.monotonic()
    run.check("Fit starts modal", invoke("neural_sdf.fit") == {"RUNNING_MODAL"})
    seen_preview = yield from wait_until(lambda: preview_objects() or not addon("engine_jobs").job_running(), 240)
    run.check("a live preview appears during the fit", seen_preview and preview_objects(), preview_objects())
    if preview_objects():
        run.timings["click to first preview"] = time.monotonic() - started
        yield from wait(0.5)
        run.shot("preview", "the preview surface forming while the fit trains")
        yield from wait_until(lambda: training_step() >= FIT_STEPS * 0.8, 240)
        run.shot("preview-late", "the preview near the end of training")
    done = yield from wait_until(lambda: not addon("engine_jobs").job_running(), 300)
    run.timings["click to result (fit)"] = time.monotonic() - started
    run.check("the fit finishes", done)
    added = sorted(set(scene_snapshot()) - set(before))
    run.check("one result object added, no preview left", len(added) == 1 and not preview_objects(), added)
    orphans = [mesh.name for mesh in bpy.data.meshes if mesh.users == 0]
    run.check("no orphan meshes", not orphans, orphans)
    run.check("the source is hidden", bpy.data.objects["Bunny"].hide_get())
    lines = reports()
    run.check("the report names the result and the hidden source", lines and "hid" in lines[-1].lower(), lines[-1:])
    yield from wait(SETTLE_S)
    run.shot("result", "the fitted surface, the source hidden, the report")
    result_name = added[0] if added else ""

    press("ctrl+z")
    undone = yield from wait_until(lambda: result_name not in bpy.data.objects, 10)
    run.check("Ctrl+Z removes the result", undone, sorted(scene_snapshot()))
    run.check("... and shows the source again", "Bunny" in bpy.data.objects
              and not bpy.data.objects["Bunny"].hide_get())
    run.check("... and no preview comes back", not preview_objects(), preview_objects())
    yield from wait(SETTLE_S)
    run.shot("undone", "after Ctrl+Z: the bunny alone")
    press("ctrl+shift+z")
    redone = yield from wait_until(lambda: result_name in bpy.data.objects, 10)
    run.check("Ctrl+Shift+Z brings the result back", redone, sorted(scene_snapshot()))
    run.check("... without the preview", not preview_objects(), preview_objects())
    if not redone:
        return
    result = bpy.data.objects[result_name]
    bpy.ops.object.select_all(action="DESELECT")
    result.select_set(True)
    bpy.context.view_layer.objects.active = result

    for label, operator in (("Curvature Colours", "neural_sdf.curvature_colors"), ("Re-extract", "neural_sdf.reextract")):
        started = time.monotonic()
        run.check(f"{label} starts modal", invoke(operator) == {"RUNNING_MODAL"})
        done = yield from wait_until(lambda: not addon("engine_jobs").job_running(), 120)
        run.timings[f"click to result ({label}, warm engine)"] = time.monotonic() - started
        lines = reports()
        run.check(f"{label} succeeds", done and lines and "error" not in lines[-1].lower(), lines[-1:])
        yield from wait(SETTLE_S)
        run.shot(label.lower().replace(" ", "-"), f"after {label}")


def file_new_during_job(run: Scenario):
    bpy.context.scene.neural_sdf.steps = LONG_FIT_STEPS
    run.check("Fit starts modal", invoke("neural_sdf.fit") == {"RUNNING_MODAL"})
    stepping = yield from wait_until(lambda: training_step() >= 5, 120)
    run.check("training runs", stepping, job_status().text)
    pid = running_session().pid
    pressed = time.monotonic()
    press("ctrl+n")
    yield from wait(0.5)
    run.shot("file-new-menu", "the File > New menu over the running job")
    xdotool("click", "1")  # the menu opens with its first item, General, under the pointer
    loaded = yield from wait_until(lambda: "Bunny" not in bpy.data.objects, 20)
    run.check("File > New loads the general template", loaded, sorted(scene_snapshot()))
    yield from wait(1.5)
    run.timings["File > New to worker gone"] = time.monotonic() - pressed
    run.check("the worker process is gone", not process_alive(pid), f"pid {pid}")
    run.check("no job is claimed", not addon("engine_jobs").job_running())
    run.check("no progress shown", not job_status().is_running, job_status().text)
    cube = bpy.data.objects.get("Cube")
    run.check("the new file has its cube", cube is not None)
    if cube is None:
        return
    bpy.ops.object.select_all(action="DESELECT")
    cube.select_set(True)
    bpy.context.view_layer.objects.active = cube
    settings = bpy.context.scene.neural_sdf
    settings.preset, settings.use_custom_steps, settings.steps, settings.resolution = "tiny", True, 60, 48
    window, area, region = view3d()
    with bpy.context.temp_override(window=window, area=area, region=region):
        can_fit = bpy.ops.neural_sdf.fit.poll()
    run.check("Fit is available again in the new file", can_fit)
    started = time.monotonic()
    run.check("a new Fit starts", invoke("neural_sdf.fit") == {"RUNNING_MODAL"})
    done = yield from wait_until(lambda: not addon("engine_jobs").job_running(), 180)
    run.timings["click to result (cube fit after File > New)"] = time.monotonic() - started
    run.check("... and finishes", done and any("Cube" in name for name in set(scene_snapshot()) - {"Cube"}),
              sorted(scene_snapshot()))
    yield from wait(SETTLE_S)
    run.shot("new-file-fit", "the new file's cube fitted: the add-on works after File > New")


def failed_job(run: Scenario):
    prefs().python_path = "/usr/bin/python3"  # Blender's system Python: numpy, no torch
    before = scene_snapshot()
    started = time.monotonic()
    run.check("Fit starts modal", invoke("neural_sdf.fit") == {"RUNNING_MODAL"})
    done = yield from wait_until(lambda: not addon("engine_jobs").job_running(), 60)
    run.timings["click to error"] = time.monotonic() - started
    run.check("the job ends", done)
    lines = reports()
    run.check("the error says what is missing and what to do",
              lines and "torch" in lines[-1] and "Set up engine" in lines[-1], lines[-1:])
    run.check("the scene is as before", scene_snapshot() == before)
    run.check("the source is visible", not bpy.data.objects["Bunny"].hide_get())
    yield from wait(SETTLE_S)
    run.shot("error", "the error report in the status bar and the Info editor")


def close_preferences_during_check(run: Scenario):
    bpy.context.window_manager.addon_search = "Neural SDF"
    bpy.ops.preferences.addon_expand(module=PACKAGE)
    bpy.ops.screen.userpref_show("INVOKE_DEFAULT", section="ADDONS")
    yield from wait(1.0)
    xdotool("search", "--name", "Preferences", "windowmove", "%@", "300", "40")  # no window manager places it
    yield from wait(1.0)
    run.check("the Preferences window opens", len(bpy.context.window_manager.windows) == 2)
    window = bpy.context.window_manager.windows[-1]
    area = window.screen.areas[0]
    pressed = time.monotonic()
    with bpy.context.temp_override(window=window, area=area):
        started = bpy.ops.neural_sdf.check_engine("INVOKE_DEFAULT")
    run.timings["Check Engine's invoke held the UI thread"] = time.monotonic() - pressed
    run.check("Check Engine starts in the background", started == {"RUNNING_MODAL"}, started)
    gaps, last = [], time.monotonic()
    for _ in range(8):
        yield
        now = time.monotonic()
        gaps.append(now - last)
        last = now
    run.timings["longest UI gap during Check Engine"] = max(gaps)
    run.shot("check-engine", "Preferences while Check Engine runs: its progress in the add-on's preferences")
    session = running_session()
    run.check("Check Engine is still running when the window is closed", session is not None)
    pid = session.pid if session is not None else None
    with bpy.context.temp_override(window=window):
        bpy.ops.wm.window_close()
    yield from wait(1.0)
    run.check("the Preferences window is closed", len(bpy.context.window_manager.windows) == 1)
    run.check("no job is left claimed", not addon("engine_jobs").job_running())
    run.check("no progress left", not job_status().is_running, job_status().text)
    run.check("its worker is gone", not process_alive(pid), f"pid {pid}")
    bpy.ops.object.select_all(action="DESELECT")
    bunny = bpy.data.objects["Bunny"]
    bunny.select_set(True)
    bpy.context.view_layer.objects.active = bunny
    window, area, region = view3d()
    with bpy.context.temp_override(window=window, area=area, region=region):
        run.check("Fit is available afterwards", bpy.ops.neural_sdf.fit.poll())
    yield from wait(SETTLE_S)
    run.shot("after-close", "the main window after the Preferences window was closed")


SCENARIOS = {
    "fit_then_esc": fit_then_esc,
    "fit_preview_undo": fit_preview_undo,
    "file_new_during_job": file_new_during_job,
    "failed_job": failed_job,
    "close_preferences_during_check": close_preferences_during_check,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", choices=SCENARIOS, required=True)
    parser.add_argument("--zip", required=True)
    parser.add_argument("--engine-python", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else [])
    run = Scenario(args.scenario, Path(args.out))
    steps = None

    def tick():
        nonlocal steps
        try:
            if steps is None:
                press("Escape")  # the splash screen
                install_extension(args.zip, args.engine_python)
                bunny_scene()
                open_sidebar_tab()
                steps = SCENARIOS[args.scenario](run)
                return 1.0  # let the window draw the new scene before the scenario acts
            next(steps)
            return TICK_S
        except StopIteration:
            pass
        except Exception:
            run.error = traceback.format_exc()
            print(run.error, flush=True)
        run.save()
        os._exit(0)  # result.json says how it went; quit_blender would ask about the unsaved file

    bpy.app.timers.register(tick, first_interval=3.0, persistent=True)


main()
