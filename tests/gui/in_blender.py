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
import os
import sys
import time
import traceback
from pathlib import Path

import bpy

sys.path.insert(0, str(Path(__file__).resolve().parent))  # Blender runs this file as a script: its siblings
from gui_support import (  # noqa: E402
    PACKAGE,
    TICK_S,
    SETTLE_S,
    FIT_STEPS,
    LONG_FIT_STEPS,
    Scenario,
    addon,
    prefs,
    job_status,
    view3d,
    invoke,
    xdotool,
    press,
    wait,
    wait_until,
    reports,
    running_session,
    training_step,
    process_alive,
    scene_snapshot,
    preview_objects,
    install_extension,
    bunny_scene,
    open_sidebar_tab,
    status_bar_changes,
)
from image_scenarios import image_landmarks_click  # noqa: E402


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
    "image_landmarks_click": image_landmarks_click,
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
