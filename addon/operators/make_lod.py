"""Make LOD Objects: one object per level of detail of the active object's model, named as game pipelines expect
(<name>_LOD0 the finest ... <name>_LODn the coarsest), in one new collection <name>_LOD."""

import bpy

from .. import preferences, scene_io
from ..core import job_files
from ..core.errors import EngineError
from ..core.params import extract_params
from ..core.worker_client import JobRequest
from ..engine_jobs import EngineJobOperator
from ..properties import model_file
from . import checks

MIN_LOD_RESOLUTION = 32
"""Coarsest grid an LOD is extracted at (each LOD halves the panel's resolution, down to this)."""


def lod_names(name: str, levels: int) -> tuple[str, list[str]]:
    """The collection's name and the objects' names, finest first."""
    return f"{name}_LOD", [f"{name}_LOD{index}" for index in range(levels)]


def lod_resolution(resolution: int, index: int) -> int:
    """LOD ``index``'s grid: the panel's resolution halved ``index`` times, at least `MIN_LOD_RESOLUTION`."""
    return max(min(resolution, MIN_LOD_RESOLUTION), resolution >> index)


def has_levels(cls, context) -> bool:
    obj = context.active_object
    if obj.neural_sdf.levels < 2:
        cls.poll_message_set(
            f"The model of '{obj.name}' has one level of detail: fit it with Levels 2 or more to make LOD objects"
        )
        return False
    return True


def names_free(obj) -> None:
    """An EngineError when the collection or an object Make LOD Objects would write already exists: Blender would
    rename the new ones (<name>_LOD0.001), which no game pipeline reads."""
    collection, objects = lod_names(obj.name, obj.neural_sdf.levels)
    taken = [name for name in objects if name in bpy.data.objects]
    taken += [collection] if collection in bpy.data.collections else []
    if taken:
        shown = ", ".join(f"'{name}'" for name in taken[:3]) + (" ..." if len(taken) > 3 else "")
        raise EngineError(f"{shown} already exist{'s' if len(taken) == 1 else ''}: rename or delete them first")


class NEURALSDF_OT_make_lod(EngineJobOperator, bpy.types.Operator):
    """Extract every level of detail of the active object's model into a new collection <name>_LOD: <name>_LOD0 the
    finest level at the panel's resolution, each coarser level at half the previous resolution (coloured where the
    model has colours)"""

    bl_idname = "neural_sdf.make_lod"
    bl_label = "Make LOD Objects"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return (
            checks.no_job_running(cls)
            and checks.in_object_mode(cls, context)
            and checks.active_model(cls, context)
            and has_levels(cls, context)
        )

    def requests(self, context):
        obj = context.active_object
        names_free(obj)
        self.object_name = obj.name
        levels, resolution = obj.neural_sdf.levels, context.scene.neural_sdf.resolution
        device = preferences.get(context).device
        requests = []
        for index in range(levels):
            level = float(levels - 1 - index)
            params = extract_params(
                model=model_file(obj), resolution=lod_resolution(resolution, index), device=device, level=level
            )
            requests.append(JobRequest("extract", params, {}, f"extracting LOD{index} of '{obj.name}'"))
        return requests

    def apply(self, context, results):
        obj = bpy.data.objects.get(self.object_name)
        if obj is None:
            raise EngineError(f"'{self.object_name}' was deleted while its levels of detail were extracted")
        names_free(obj)
        meshes = [job_files.mesh_arrays(result.outputs) for result in results]  # every array checked first
        colors = [
            job_files.surface_colors(result.outputs, len(vertices))
            for result, (vertices, _) in zip(results, meshes, strict=True)
        ]
        collection_name, names = lod_names(obj.name, len(results))
        collection = bpy.data.collections.new(collection_name)
        context.collection.children.link(collection)
        transform = scene_io.matrix_array(obj.neural_sdf.model_to_object)
        made = []
        for name, result, (vertices, faces), lod_colors in zip(names, results, meshes, colors, strict=True):
            mesh = scene_io.new_mesh(name, scene_io.transform_points(transform, vertices), faces)
            for material in getattr(obj.data, "materials", []):
                mesh.materials.append(material)
            if lod_colors is not None:
                scene_io.write_surface_colors(mesh, lod_colors)
                scene_io.show_surface_colors(mesh)
            lod = bpy.data.objects.new(name, mesh)
            collection.objects.link(lod)
            lod.matrix_world = obj.matrix_world.copy()
            link, source = lod.neural_sdf, obj.neural_sdf
            link.model_path, link.model_to_object = source.model_path, source.model_to_object
            link.fit_summary, link.levels = source.fit_summary, source.levels
            link.level = result.request.params["level"]
            made.append(f"{name} ({len(faces):,} faces)")
        colored = " with colours" if colors[0] is not None else ""
        return f"Made {len(made)} LOD objects{colored} in '{collection.name}': " + ", ".join(made)
