#!/usr/bin/env python3
"""Demo picture of Bake to Image (issue 17), headless (Blender's Python module, Cycles on the CPU): Suzanne, UV
mapped, fitted with the tiny network; its mean curvature baked from the model into a float image through its UV
map; left, the bake's 8-bit colour map as the texture; right, the float bake as a mask in a material (worn bright
metal on the crests, H > 0; dirt in the hollows, H < 0; paint between). A second picture shows the fitted surface
with its Ridge Lines (ridges dark, valleys blue) as line art.

    .venv/bin/python bench/curvature_bake_demo.py [-o out/curvature_bake_demo] [--steps 1200] [--samples 24]
        [--image bench/results/curvature_bake_demo.png] [--ridges-image bench/results/curvature_bake_ridges.png]

Blender's user folders go to OUTDIR/blender_user, so the user's own Blender set-up is not touched.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXTENSIONS_REPO = "user_default"
PACKAGE = f"bl_ext.{EXTENSIONS_REPO}.neural_sdf"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=REPO / "out" / "curvature_bake_demo")
    parser.add_argument("--steps", type=int, default=1200, help="training steps of the tiny fit")
    parser.add_argument("--size", type=int, default=1024, help="bake size in texels")
    parser.add_argument("--samples", type=int, default=24, help="Cycles samples per pixel")
    parser.add_argument("--image", type=Path, default=REPO / "bench" / "results" / "curvature_bake_demo.png")
    parser.add_argument(
        "--ridges-image", type=Path, default=REPO / "bench" / "results" / "curvature_bake_ridges.png"
    )
    args = parser.parse_args()
    output = args.output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    built = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_extension.py"), "--output-dir", str(output / "dist")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    os.environ["BLENDER_USER_RESOURCES"] = str(output / "blender_user")  # read once, when bpy is imported
    import bpy
    import numpy as np

    bpy.ops.extensions.package_install_files(
        filepath=built.stdout.strip(), repo=EXTENSIONS_REPO, enable_on_install=True
    )
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    prefs.cache_dir, prefs.threads = str(output / "cache"), 1

    monkey = build_scene(bpy)
    settings = bpy.context.scene.neural_sdf
    settings.preset, settings.use_custom_steps, settings.steps, settings.resolution = "tiny", True, args.steps, 128
    select(bpy, monkey)
    started = time.perf_counter()
    run("Fit Neural SDF", bpy.ops.neural_sdf.fit)
    fit_s = time.perf_counter() - started
    bpy.data.objects["Suzanne SDF"].hide_render = True
    monkey.hide_set(False)
    select(bpy, monkey)
    settings.quantity, settings.project, settings.bake_size = "mean", True, args.size
    started = time.perf_counter()
    run("Bake to Image", bpy.ops.neural_sdf.bake_curvature)
    bake_s = time.perf_counter() - started

    values_image = bpy.data.images["Suzanne Mean (H)"]
    pixels = np.empty(args.size * args.size * 4, np.float32)
    values_image.pixels.foreach_get(pixels)
    values = pixels[0::4]
    crest = float(np.percentile(values[values > 0], 90))
    hollow = float(np.percentile(values[values < 0], 10))
    colored = monkey.copy()
    bpy.context.scene.collection.objects.link(colored)
    colored.location.x -= 2.7
    colored.data = monkey.data.copy()
    colored.data.materials.clear()
    colored.data.materials.append(texture_material(bpy, bpy.data.images["Suzanne Mean (H) Colours"]))
    monkey.data.materials.clear()
    monkey.data.materials.append(mask_material(bpy, values_image, crest, hollow))
    started = time.perf_counter()
    render(bpy, args.image, args.samples)
    print(
        f"fit {fit_s:.0f} s, bake {bake_s:.0f} s ({args.size}^2), render {time.perf_counter() - started:.0f} s; "
        f"mask: crests from H = 0 to {crest:.3g}, hollows from 0 to {hollow:.3g}; wrote {args.image} "
        f"({args.image.stat().st_size / 1000:.0f} kB)"
    )
    show_ridges(bpy, monkey, colored, args.ridges_image, args.samples)
    return 0


def show_ridges(bpy, monkey, colored, image: Path, samples: int) -> None:
    """The fitted surface in grey clay with its ridge and valley curves, bevelled so that Cycles renders them."""
    fitted = bpy.data.objects["Suzanne SDF"]
    monkey.hide_render = colored.hide_render = True
    fitted.hide_render = False
    fitted.hide_set(False)
    select(bpy, fitted)
    started = time.perf_counter()
    run("Ridge Lines", bpy.ops.neural_sdf.ridge_lines)
    ridges_s = time.perf_counter() - started
    clay, _, _, principled = new_material(bpy, "Clay")
    principled.inputs["Base Color"].default_value = (0.75, 0.72, 0.68, 1.0)
    fitted.data.materials.clear()
    fitted.data.materials.append(clay)
    for word, color in (("Ridges", (0.02, 0.02, 0.02, 1.0)), ("Valleys", (0.05, 0.25, 0.9, 1.0))):
        curve = bpy.data.objects.get(f"Suzanne SDF {word}")
        if curve is None:
            continue
        curve.data.bevel_depth = 0.012
        line, _, _, principled = new_material(bpy, word)
        principled.inputs["Base Color"].default_value = color
        curve.data.materials.append(line)
    camera = bpy.context.scene.camera
    camera.location.x = fitted.matrix_world.translation.x
    started = time.perf_counter()
    render(bpy, image, samples)
    print(f"ridge lines {ridges_s:.0f} s, render {time.perf_counter() - started:.0f} s; wrote {image}")


def run(label: str, operator) -> None:
    print(f"{label} ...", flush=True)
    if operator() != {"FINISHED"}:
        raise SystemExit(f"{label} did not finish (see the report above)")


def select(bpy, obj) -> None:
    bpy.ops.object.select_all(action="DESELECT")
    obj.select_set(True)
    bpy.context.view_layer.objects.active = obj


def build_scene(bpy):
    """Suzanne (subdivided twice and applied: its UV map follows), a camera, a sun and a grey world."""
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_monkey_add(size=2.0, location=(1.35, 0.0, 0.0), rotation=(0.0, 0.0, math.radians(-20)))
    monkey = bpy.context.active_object
    monkey.name = "Suzanne"
    monkey.modifiers.new("Subdivision", "SUBSURF").levels = 2
    bpy.ops.object.modifier_apply(modifier="Subdivision")
    bpy.ops.object.shade_smooth()
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    camera.location = (0.0, -8.4, 0.3)
    camera.rotation_euler = (math.radians(88), 0.0, 0.0)
    camera.data.lens = 50
    scene.camera = camera
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.data.energy = 3.5
    sun.rotation_euler = (math.radians(50), math.radians(10), math.radians(-35))
    scene.collection.objects.link(sun)
    world = bpy.data.worlds.new("World")
    if world.node_tree is None:
        world.use_nodes = True
    background = next(node for node in world.node_tree.nodes if node.type == "BACKGROUND")
    background.inputs["Color"].default_value = (0.30, 0.32, 0.36, 1.0)
    background.inputs["Strength"].default_value = 0.7
    scene.world = world
    return monkey


def new_material(bpy, name: str):
    material = bpy.data.materials.new(name)
    if material.node_tree is None:
        material.use_nodes = True
    nodes = material.node_tree.nodes
    return material, nodes, material.node_tree.links, next(n for n in nodes if n.type == "BSDF_PRINCIPLED")


def texture_material(bpy, image):
    material, nodes, links, principled = new_material(bpy, "Curvature Colours")
    texture = nodes.new("ShaderNodeTexImage")
    texture.image = image
    links.new(texture.outputs["Color"], principled.inputs["Base Color"])
    principled.inputs["Roughness"].default_value = 0.6
    return material


def mask_material(bpy, image, crest: float, hollow: float):
    """Paint, worn to bright metal where H rises towards ``crest`` and dirtied where it falls towards ``hollow``."""
    material, nodes, links, principled = new_material(bpy, "Curvature Mask")
    texture = nodes.new("ShaderNodeTexImage")
    texture.image = image
    texture.interpolation = "Cubic"
    wear, dirt = nodes.new("ShaderNodeMapRange"), nodes.new("ShaderNodeMapRange")
    for node, low, high in ((wear, 0.35 * crest, crest), (dirt, 0.2 * hollow, 0.7 * hollow)):
        node.inputs["From Min"].default_value, node.inputs["From Max"].default_value = low, high
        links.new(texture.outputs["Color"], node.inputs["Value"])
    worn, dirty = nodes.new("ShaderNodeMix"), nodes.new("ShaderNodeMix")
    for mix in (worn, dirty):
        mix.data_type = "RGBA"
    worn.inputs["A"].default_value = (0.05, 0.16, 0.42, 1.0)  # paint
    worn.inputs["B"].default_value = (0.85, 0.82, 0.76, 1.0)  # bare metal
    links.new(wear.outputs["Result"], worn.inputs["Factor"])
    links.new(worn.outputs["Result"], dirty.inputs["A"])
    dirty.inputs["B"].default_value = (0.09, 0.06, 0.03, 1.0)  # dirt
    links.new(dirt.outputs["Result"], dirty.inputs["Factor"])
    links.new(dirty.outputs["Result"], principled.inputs["Base Color"])
    links.new(wear.outputs["Result"], principled.inputs["Metallic"])
    roughness = nodes.new("ShaderNodeMapRange")
    roughness.inputs["To Min"].default_value, roughness.inputs["To Max"].default_value = 0.45, 0.25
    links.new(wear.outputs["Result"], roughness.inputs["Value"])
    links.new(roughness.outputs["Result"], principled.inputs["Roughness"])
    return material


def render(bpy, image: Path, samples: int) -> None:
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples, scene.cycles.use_denoising = "CPU", samples, True
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 720, 360, 100
    settings = scene.render.image_settings
    settings.file_format, settings.color_mode, settings.compression = "PNG", "RGB", 100
    scene.render.filepath = str(image)
    print("Rendering with Cycles on the CPU ...", flush=True)
    bpy.ops.render.render(write_still=True)


if __name__ == "__main__":
    sys.exit(main())
