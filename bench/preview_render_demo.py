#!/usr/bin/env python3
"""Demo picture of Preview Render (issue 15), headless: a fitted bunny rendered straight from its network beside
Cycles rendering the mesh extracted from the same model, from the same camera.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/preview_render_demo.py [-o out/preview_render_demo]
        [--preset tiny] [--steps N] [--size 480 360] [--samples 32] [--image bench/results/preview_render_vs_cycles.png]

1. ``python -m engine fit MESH -o OUT/fit --preset tiny --device cpu`` (model.pt, and mesh.ply extracted at 256³).
2. ``python -m engine render OUT/fit/model.pt --camera OUT/camera.json -o OUT/render --device cpu``: the Preview
   Render path (`engine.jobs.render`), plain shading (Lambert under a headlight).
3. Blender's Python module (background, Cycles on the CPU, one thread): mesh.ply with a grey diffuse material, a sun
   along the preview's headlight and a dim white world standing in for its ambient term, the camera built from the
   same camera.json (its rotation is Blender's world-from-camera matrix, its fov the horizontal angle); film
   transparent, 1-pixel box filter, so alpha is each pixel's covered share.
4. The picture: the preview, the Cycles render, and their silhouettes (alpha > 0.5) compared: grey where both
   cover a pixel, orange where only the preview does, blue where only Cycles does; printed: the silhouette IoU.

Both sides show the same model under the same light, so the silhouettes differ only by the marching-cubes
extraction (256³) against the exact zero set, and by sampling at pixel centres against Cycles' box filter; the
shading differs by Cycles' world light (occluded in hollows) against the preview's constant ambient term. Printed
as well: the mean sRGB difference where both cover a pixel. Seconds are CPU seconds (the engine commands as child
processes, Cycles in this one).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MESH = REPO.parent / "shared" / "meshes" / "bunny.ply"
LIGHT_IN_CAMERA = (-0.4, 0.6, 1.0)
"""`engine.render_output.LIGHT_IN_CAMERA`, copied: this process runs Blender and imports no torch."""
ALBEDO, AMBIENT = 0.8, 0.12
"""`engine.render_output.ALBEDO` and ``AMBIENT`` (the same reason)."""
BACKGROUND = (38, 41, 46)
"""sRGB of the picture behind the renders' transparent pixels."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mesh", nargs="?", type=Path, default=MESH)
    parser.add_argument("-o", "--output", type=Path, default=REPO / "out" / "preview_render_demo")
    parser.add_argument("--preset", default="tiny", help="fit preset (tiny: a 2x64 SIREN, 300 steps)")
    parser.add_argument("--steps", type=int, help="override the preset's steps")
    parser.add_argument("--size", type=int, nargs=2, default=(480, 360), metavar=("W", "H"))
    parser.add_argument("--samples", type=int, default=32, help="Cycles samples per pixel")
    parser.add_argument("--image", type=Path, default=REPO / "bench" / "results" / "preview_render_vs_cycles.png")
    args = parser.parse_args()
    output = args.output.resolve()
    output.mkdir(parents=True, exist_ok=True)

    fit_dir, render_dir, camera_path = output / "fit", output / "render", output / "camera.json"
    fit = ["fit", str(args.mesh), "-o", str(fit_dir), "--preset", args.preset, "--device", "cpu", "--no-metrics"]
    fit_s = engine_command(fit + (["--steps", str(args.steps)] if args.steps else []))
    vertices, faces = read_ply(fit_dir / "mesh.ply")
    camera = three_quarter_camera(vertices, tuple(args.size))
    camera_path.write_text(json.dumps(camera, indent=1) + "\n")
    render_s = engine_command(["render", str(fit_dir / "model.pt"), "--camera", str(camera_path), "-o",
                               str(render_dir), "--device", "cpu"])  # fmt: skip
    from PIL import Image

    preview = np.asarray(Image.open(render_dir / "render.png").convert("RGBA"), dtype=np.float32) / 255.0

    import bpy  # after the engine commands: this process holds Blender, they hold torch

    started = time.process_time()
    cycles = cycles_render(bpy, vertices, faces, camera, args.samples, output / "cycles.png")
    cycles_s = time.process_time() - started

    in_preview, in_cycles = preview[..., 3] > 0.5, cycles[..., 3] > 0.5
    union = int((in_preview | in_cycles).sum())
    iou = (in_preview & in_cycles).sum() / max(union, 1)
    only_preview, only_cycles = int((in_preview & ~in_cycles).sum()), int((in_cycles & ~in_preview).sum())
    both = in_preview & in_cycles
    shading_difference = float(np.abs(preview[both, :3] - cycles[both, :3]).mean()) * 255.0
    report = json.loads((render_dir / "render.json").read_text())
    captions = [
        f"Preview Render, sphere tracing the {args.preset} model's network: {report['cpu_seconds']:.1f} CPU s",
        f"Cycles, {args.samples} spp, mesh extracted at 256^3 ({len(faces):,} faces): {cycles_s:.1f} CPU s",
        f"silhouettes: IoU {iou:.4f}; only preview {only_preview} px (orange), only Cycles {only_cycles} px (blue)",
    ]
    picture(preview, cycles, in_preview, in_cycles, captions, args.image)
    print(f"fit ({args.preset}) {fit_s:.1f} CPU s, render command {render_s:.1f} CPU s "
          f"(render itself {report['cpu_seconds']:.2f}), Cycles {cycles_s:.1f} CPU s; {args.size[0]}x{args.size[1]}")
    print(f"silhouette IoU {iou:.4f} over {union} pixels; only in the preview {only_preview}, only in Cycles "
          f"{only_cycles}; mean |sRGB difference| where both cover {shading_difference:.1f} / 255")
    print(f"wrote {args.image}")
    return 0


def engine_command(arguments: list[str]) -> float:
    """Run ``python -m engine ARGUMENTS`` on one thread; its CPU seconds (user + system of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "engine", *arguments], cwd=REPO, env=environment,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"python -m engine {' '.join(arguments)} failed:\n{done.stdout}{done.stderr}")
    print(done.stdout.strip().splitlines()[-1])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    mesh = trimesh.load(path, process=False)
    return np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.faces, dtype=np.intc)


def three_quarter_camera(vertices: np.ndarray, resolution: tuple[int, int], fov: float = 40.0) -> dict:
    """A camera file (`engine.render_camera`) looking at the box of ``vertices`` from the front right, a little
    above (the bunny's up is +Y), framing most of the box's bounding sphere (the shape fills less of it)."""
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    target, radius = (low + high) / 2.0, float(np.linalg.norm(high - low)) / 2.0
    towards_camera = np.array([0.55, 0.35, 1.0]) / np.linalg.norm([0.55, 0.35, 1.0])
    narrowest = min(fov, math.degrees(2 * math.atan(math.tan(math.radians(fov) / 2) * resolution[1] / resolution[0])))
    distance = 0.8 * radius / math.sin(math.radians(narrowest) / 2)
    z = towards_camera  # the camera looks along its -Z
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    rotation = np.stack([x, y, z], axis=1)  # columns: the camera's axes in the world
    return {"location": (target + distance * z).tolist(), "rotation": rotation.tolist(), "type": "perspective",
            "fov": fov, "resolution": list(resolution)}  # fmt: skip


def cycles_render(bpy, vertices, faces, camera: dict, samples: int, path: Path) -> np.ndarray:
    """The mesh in Cycles from ``camera`` (a camera file's dict), lit as the preview is; (h, w, 4) sRGB in [0, 1]."""
    from mathutils import Matrix

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    mesh = bpy.data.meshes.new("Fitted")
    mesh.vertices.add(len(vertices))
    mesh.vertices.foreach_set("co", vertices.ravel())
    mesh.loops.add(faces.size)
    mesh.loops.foreach_set("vertex_index", faces.ravel())
    mesh.polygons.add(len(faces))
    mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.intc))
    mesh.polygons.foreach_set("loop_total", np.full(len(faces), 3, dtype=np.intc))
    mesh.update()
    mesh.validate()
    mesh.shade_smooth()
    fitted = bpy.data.objects.new("Fitted", mesh)
    scene.collection.objects.link(fitted)
    material = bpy.data.materials.new("Grey")
    if material.node_tree is None:
        material.use_nodes = True
    principled = next(node for node in material.node_tree.nodes if node.type == "BSDF_PRINCIPLED")
    principled.inputs["Base Color"].default_value = (ALBEDO, ALBEDO, ALBEDO, 1.0)
    principled.inputs["Roughness"].default_value = 1.0
    principled.inputs["Specular IOR Level"].default_value = 0.0
    mesh.materials.append(material)

    rotation = np.asarray(camera["rotation"])
    world_from_camera = Matrix([[*rotation[i], camera["location"][i]] for i in range(3)] + [[0.0, 0.0, 0.0, 1.0]])
    view = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    view.data.sensor_fit, view.data.angle = "HORIZONTAL", math.radians(camera["fov"])
    view.data.clip_end = 1000.0
    view.matrix_world = world_from_camera
    scene.collection.objects.link(view)
    scene.camera = view
    sun = bpy.data.objects.new("Headlight", bpy.data.lights.new("Headlight", "SUN"))
    light = rotation @ (np.asarray(LIGHT_IN_CAMERA) / np.linalg.norm(LIGHT_IN_CAMERA))
    sun.matrix_world = Matrix.Translation(light) @ light_rotation(light)
    sun.data.energy = (1.0 - AMBIENT) * math.pi  # a diffuse surface reflects irradiance / pi
    sun.data.angle = 0.0
    scene.collection.objects.link(sun)
    world = bpy.data.worlds.new("Ambient")
    if world.node_tree is None:
        world.use_nodes = True
    background = next(node for node in world.node_tree.nodes if node.type == "BACKGROUND")
    background.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    background.inputs["Strength"].default_value = AMBIENT
    scene.world = world

    render = scene.render
    render.engine, render.film_transparent, render.filepath = "CYCLES", True, str(path)
    render.resolution_x, render.resolution_y, render.resolution_percentage = *camera["resolution"], 100
    render.threads_mode, render.threads = "FIXED", 1
    scene.cycles.device, scene.cycles.samples = "CPU", samples
    scene.cycles.pixel_filter_type, scene.cycles.filter_width = "BOX", 1.0  # alpha: the pixel's covered share
    scene.view_settings.view_transform = "Standard"  # plain sRGB, as the preview's render.png
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(path))
    width, height = image.size
    pixels = np.empty(width * height * 4, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    return pixels.reshape(height, width, 4)[::-1]  # Blender's rows start at the bottom


def light_rotation(direction: np.ndarray):
    """A rotation whose +Z is ``direction`` (a sun shines along its -Z)."""
    from mathutils import Vector

    return Vector(direction.tolist()).to_track_quat("Z", "Y").to_matrix().to_4x4()


def picture(preview, cycles, in_preview, in_cycles, captions: list[str], path: Path) -> None:
    """The three panels side by side over a dark background, each captioned below."""
    from PIL import Image, ImageDraw, ImageFont

    background = np.asarray(BACKGROUND, dtype=np.float32) / 255.0

    def over_background(rgba):
        return (rgba[..., :3] * rgba[..., 3:] + background * (1.0 - rgba[..., 3:])) * 255.0

    silhouettes = np.broadcast_to(background * 255.0, in_preview.shape + (3,)).copy()
    silhouettes[in_preview & in_cycles] = (150, 150, 150)
    silhouettes[in_preview & ~in_cycles] = (255, 140, 0)
    silhouettes[in_cycles & ~in_preview] = (40, 140, 255)
    panels = [over_background(preview), over_background(cycles), silhouettes]
    height, width = in_preview.shape
    font = ImageFont.load_default(size=max(11, width // 34))
    caption_height, gap = 2 * font.size + 10, 6
    sheet = Image.new("RGB", (3 * width + 2 * gap, height + caption_height), (20, 20, 22))
    draw = ImageDraw.Draw(sheet)
    for index, (panel, caption) in enumerate(zip(panels, captions)):
        left = index * (width + gap)
        sheet.paste(Image.fromarray(np.clip(panel, 0, 255).astype(np.uint8)), (left, 0))
        first, _, rest = caption.partition(": ")
        draw.text((left + 6, height + 4), first, fill=(235, 235, 235), font=font)
        draw.text((left + 6, height + 6 + font.size), rest, fill=(180, 180, 180), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)


if __name__ == "__main__":
    sys.exit(main())
