#!/usr/bin/env python3
"""The Blender demo, headless (Blender's Python module): build the extension, install it, import the bundled bunny,
run Fit Neural SDF and Curvature Colours through the extension's operators, save the .blend (the model lands
beside it) and render a PNG with Cycles on the CPU.

    .venv/bin/python scripts/blender_demo.py [-o out/blender_demo] [--steps N] [--resolution N] [--samples N]

Writes OUTDIR/bunny.blend, OUTDIR/bunny_neural_sdf/ (the model), OUTDIR/bunny.png and OUTDIR/summary.json.
Blender's user folders go to OUTDIR/blender_user, so the user's own Blender set-up is not touched.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUNNY = REPO / "data" / "bunny.ply"
EXTENSIONS_REPO = "user_default"
PACKAGE = f"bl_ext.{EXTENSIONS_REPO}.neural_sdf"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=REPO / "out" / "blender_demo", help="output folder")
    parser.add_argument(
        "--preset", default="tiny", help="fit preset (default tiny: the demo must run in minutes on a CPU)"
    )
    parser.add_argument("--steps", type=int, default=1500, help="training steps (default 1500)")
    parser.add_argument("--resolution", type=int, default=160, help="marching-cubes resolution (default 160)")
    parser.add_argument("--samples", type=int, default=48, help="Cycles samples per pixel (default 48)")
    args = parser.parse_args()
    output = args.output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    timings = {}

    started = time.perf_counter()
    built = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_extension.py"), "--output-dir", str(output / "dist")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    extension_zip = Path(built.stdout.strip())
    # Set before bpy is imported: Blender reads its user folders once.
    os.environ["BLENDER_USER_RESOURCES"] = str(output / "blender_user")
    import bpy

    bpy.ops.extensions.package_install_files(filepath=str(extension_zip), repo=EXTENSIONS_REPO, enable_on_install=True)
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    prefs.cache_dir = str(output / "cache")
    # The tiny network trains as fast on one thread, and one thread stays fast when other work shares the CPU.
    prefs.threads = 1
    timings["install_s"] = time.perf_counter() - started

    bunny = build_scene(bpy)
    settings = bpy.context.scene.neural_sdf
    settings.preset, settings.use_custom_steps, settings.steps = args.preset, True, args.steps
    settings.resolution, settings.fit_mode = args.resolution, "JOINED"
    bpy.ops.object.select_all(action="DESELECT")
    bunny.select_set(True)
    bpy.context.view_layer.objects.active = bunny

    started = time.perf_counter()
    run("Fit Neural SDF", bpy.ops.neural_sdf.fit)
    timings["fit_s"] = time.perf_counter() - started
    fitted = bpy.context.active_object
    bunny.hide_render = bunny.hide_viewport = True
    settings.quantity, settings.colormap = "mean", "auto"
    started = time.perf_counter()
    run("Curvature Colours", bpy.ops.neural_sdf.curvature_colors)
    timings["curvature_s"] = time.perf_counter() - started

    blend = output / "bunny.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    image = output / "bunny.png"
    started = time.perf_counter()
    render(bpy, image, args.samples)
    timings["render_s"] = time.perf_counter() - started

    legend = fitted.data.neural_sdf_curvature
    summary = {
        "blend": str(blend),
        "image": str(image),
        "model": fitted.neural_sdf.model_path,
        "fit": fitted.neural_sdf.fit_summary,
        "faces": len(fitted.data.polygons),
        "colours": f"{legend.quantity} curvature over [{legend.low:.4g}, {legend.high:.4g}] per metre",
        "seconds": {name: round(value, 1) for name, value in timings.items()},
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


def run(label: str, operator) -> None:
    print(f"{label} ...", flush=True)
    if operator() != {"FINISHED"}:
        raise SystemExit(f"{label} did not finish (see the report above)")


def build_scene(bpy):
    """The bunny standing on a floor, a camera and a sun; returns the bunny."""
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    bpy.ops.wm.ply_import(filepath=str(BUNNY), up_axis="Y", forward_axis="NEGATIVE_Z", global_scale=0.1)
    bunny = bpy.context.selected_objects[0]
    bunny.name = "Bunny"
    # Subdivided and smoothed: the fit sees the evaluated mesh, modifiers applied.
    bunny.modifiers.new("Smooth", "SUBSURF").levels = 1

    bpy.ops.mesh.primitive_plane_add(size=20.0, location=(0.0, 0.0, 0.0))
    floor = bpy.context.active_object
    floor.name = "Floor"
    floor_material = bpy.data.materials.new("Floor")
    floor_material.diffuse_color = (0.8, 0.8, 0.78, 1.0)
    if floor_material.node_tree is None:
        floor_material.use_nodes = True
    principled = next(node for node in floor_material.node_tree.nodes if node.type == "BSDF_PRINCIPLED")
    principled.inputs["Base Color"].default_value = (0.8, 0.8, 0.78, 1.0)
    floor.data.materials.append(floor_material)

    camera_data = bpy.data.cameras.new("Camera")
    camera = bpy.data.objects.new("Camera", camera_data)
    scene.collection.objects.link(camera)
    camera.location = (-1.9, -1.9, 1.2)
    camera.rotation_euler = (math.radians(73), 0.0, math.radians(-45))
    camera_data.lens = 45
    scene.camera = camera

    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (math.radians(40), math.radians(15), math.radians(-30))
    scene.collection.objects.link(sun)
    world = bpy.data.worlds.new("World")
    if world.node_tree is None:  # Blender before 5.0 creates worlds without nodes
        world.use_nodes = True
    background = next(node for node in world.node_tree.nodes if node.type == "BACKGROUND")
    background.inputs["Color"].default_value = (0.35, 0.38, 0.42, 1.0)
    background.inputs["Strength"].default_value = 0.6
    scene.world = world
    return bunny


def render(bpy, image: Path, samples: int) -> None:
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = True
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 800, 600, 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.filepath = str(image)
    print("Rendering with Cycles on the CPU ...", flush=True)
    bpy.ops.render.render(write_still=True)


if __name__ == "__main__":
    sys.exit(main())
