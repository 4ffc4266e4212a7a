#!/usr/bin/env python3
"""Headless demo of colour fields (issue 17): coloured sources beside their fitted results, rendered with Cycles.

Builds and installs the extension in Blender's Python module, then makes two sources: a UV sphere whose material
shows skimage's astronaut through its UV map (an Image Texture into Base Color) and Suzanne with a corner colour
attribute painted by position. Each is fitted by *Fit Neural SDF* with *Colours* on (tiny preset); the results get
their colour attribute and material, are moved beside their sources and everything is rendered (Cycles, CPU, few
samples, denoised) to a small PNG.

    .venv/bin/python bench/colour_fit_demo.py [-o bench/results/colour_fit_demo.png] [--steps N] [--samples N]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
EXTENSIONS_REPO = "user_default"
PACKAGE = f"bl_ext.{EXTENSIONS_REPO}.neural_sdf"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=REPO / "bench" / "results" / "colour_fit_demo.png")
    parser.add_argument("--steps", type=int, default=600, help="shape training steps (default 600)")
    parser.add_argument("--resolution", type=int, default=128, help="marching-cubes resolution (default 128)")
    parser.add_argument("--samples", type=int, default=16, help="Cycles samples per pixel (default 16)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="colour_demo_"))
    built = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_extension.py"), "--output-dir", str(work / "dist")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    os.environ["BLENDER_USER_RESOURCES"] = str(work / "blender_user")  # before bpy is imported
    import bpy

    bpy.ops.extensions.package_install_files(
        filepath=built.stdout.strip(), repo=EXTENSIONS_REPO, enable_on_install=True
    )
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    prefs.cache_dir, prefs.threads = str(work / "cache"), 1

    bpy.ops.wm.read_homefile(use_empty=True)
    settings = bpy.context.scene.neural_sdf
    settings.preset, settings.use_custom_steps, settings.steps = "tiny", True, args.steps
    settings.resolution, settings.hide_sources, settings.fit_colors = args.resolution, False, True
    sources = [textured_sphere(bpy, work, (-2.1, 0.0, 0.0)), painted_suzanne(bpy, (0.5, 0.0, 0.0))]
    reports = []
    for source in sources:
        bpy.ops.object.select_all(action="DESELECT")
        source.select_set(True)
        bpy.context.view_layer.objects.active = source
        if bpy.ops.neural_sdf.fit() != {"FINISHED"}:
            raise SystemExit(f"Fit of {source.name} did not finish")
        fitted = bpy.context.active_object
        fitted.location.x += 1.2  # beside its source
        reports.append(f"{fitted.name}: {fitted.neural_sdf.fit_summary}")
    stage(bpy)
    render(bpy, args.output.resolve(), args.samples)
    print("\n".join(reports))
    print(f"wrote {args.output} ({args.output.stat().st_size // 1024} kB)")
    return 0


def textured_sphere(bpy, work: Path, location):
    from PIL import Image
    from skimage import data

    path = work / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    bpy.ops.mesh.primitive_uv_sphere_add(segments=64, ring_count=32, radius=0.5, location=location)
    sphere = bpy.context.active_object
    sphere.name = "Astronaut sphere"
    bpy.ops.object.shade_smooth()
    sphere.rotation_euler = (0.0, 0.0, math.radians(-90))  # her face towards the camera
    material = bpy.data.materials.new("Astronaut")
    if material.node_tree is None:
        material.use_nodes = True
    nodes = material.node_tree.nodes
    texture = nodes.new("ShaderNodeTexImage")
    texture.image = bpy.data.images.load(str(path))
    shader = next(node for node in nodes if node.type == "BSDF_PRINCIPLED")
    material.node_tree.links.new(texture.outputs["Color"], shader.inputs["Base Color"])
    sphere.data.materials.append(material)
    return sphere


def painted_suzanne(bpy, location):
    bpy.ops.mesh.primitive_monkey_add(size=0.9, location=location)
    monkey = bpy.context.active_object
    monkey.name = "Painted Suzanne"
    monkey.rotation_euler = (0.0, 0.0, math.radians(-20))
    monkey.modifiers.new("Smooth", "SUBSURF").levels = 1
    mesh = monkey.data
    corners = np.empty(len(mesh.loops), dtype=np.intc)
    mesh.loops.foreach_get("vertex_index", corners)
    positions = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", positions)
    p = positions.reshape(-1, 3)[corners]
    colors = np.ones((len(corners), 4), dtype=np.float32)
    colors[:, 0] = 0.5 + 0.5 * np.sin(6 * p[:, 0])
    colors[:, 1] = 0.5 + 0.5 * np.sin(5 * p[:, 2] + 1.0)
    colors[:, 2] = 0.5 + 0.5 * np.cos(4 * p[:, 1] + 0.5)
    mesh.color_attributes.new("Paint", "BYTE_COLOR", "CORNER").data.foreach_set("color", colors.ravel())
    material = bpy.data.materials.new("Paint")
    if material.node_tree is None:
        material.use_nodes = True
    nodes = material.node_tree.nodes
    attribute = nodes.new("ShaderNodeVertexColor")
    attribute.layer_name = "Paint"
    shader = next(node for node in nodes if node.type == "BSDF_PRINCIPLED")
    material.node_tree.links.new(attribute.outputs["Color"], shader.inputs["Base Color"])
    mesh.materials.append(material)
    return monkey


def stage(bpy):
    scene = bpy.context.scene
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    camera.location = (-0.2, -6.5, 0.0)
    camera.rotation_euler = (math.radians(90), 0.0, 0.0)
    camera.data.lens = 42
    scene.camera = camera
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (math.radians(50), math.radians(10), math.radians(-20))
    scene.collection.objects.link(sun)
    world = bpy.data.worlds.new("World")
    if world.node_tree is None:
        world.use_nodes = True
    background = next(node for node in world.node_tree.nodes if node.type == "BACKGROUND")
    background.inputs["Color"].default_value = (0.6, 0.62, 0.66, 1.0)
    background.inputs["Strength"].default_value = 0.8
    scene.world = world


def render(bpy, image: Path, samples: int) -> None:
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = True
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 960, 320, 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.compression = 100
    scene.render.filepath = str(image)
    bpy.ops.render.render(write_still=True)


if __name__ == "__main__":
    sys.exit(main())
