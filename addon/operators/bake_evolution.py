import bpy
import numpy as np
from mathutils import Matrix

from .. import frame_switch, model_store, preferences, scene_io
from ..core import job_files
from ..core.colors import srgb_to_linear
from ..core.evolution import FieldEmpty, evolution_colors_text, tracked_frames, tracking_text
from ..core.params import evolve_params
from ..core.text import format_duration
from ..core.worker_client import JobRequest
from ..engine_jobs import EngineJobOperator
from ..properties import model_file
from ..shape_key_frames import add_shape_key_frames
from . import checks

MODIFIER_NAME = "Surface Evolution"
"""The baked evolution's frame switch modifier."""


class NEURALSDF_OT_bake_evolution(EngineJobOperator, bpy.types.Operator):
    """Evolve the active fitted surface by a flow and bake every frame of the range into a new animated object"""

    bl_idname = "neural_sdf.bake_evolution"
    bl_label = "Bake Surface Evolution"
    bl_options = {"REGISTER", "UNDO"}
    makes_model = True

    @classmethod
    def poll(cls, context):
        return checks.no_job_running(cls) and checks.in_object_mode(cls, context) and checks.active_model(cls, context)

    def requests(self, context):
        settings = context.scene.neural_sdf_evolution
        source = context.active_object
        frame_start, frame_end = settings.frame_range(context.scene)
        speed = settings.curvature_speed if settings.flow == "MCF" else settings.offset_speed
        fields = scene_io.field_empties(context.scene) if settings.flow == "FIELDS" else []
        # The model's coordinates are world space at fit time; the fitted object may have moved since.
        model_world = source.matrix_world @ source.neural_sdf.model_to_object
        params = evolve_params(
            model=model_file(source),
            flow=settings.flow,
            speed=speed,
            fields=fields,
            world_to_model=scene_io.matrix_array(model_world.inverted()),
            frame_start=frame_start,
            frame_end=frame_end,
            time_end=settings.time_end,
            steps=settings.steps if settings.use_custom_steps else None,
            resolution=settings.resolution,
            device=preferences.get(context).device,
            seed=context.scene.neural_sdf.seed,
            curvature=settings.curvature,
        )
        params["track_vertices"] = settings.track_vertices
        self.source_name, self.frame_start = source.name, frame_start
        self.placement = source.matrix_world.copy()
        self.model_to_object = Matrix(source.neural_sdf.model_to_object)
        self.flow_text = describe_flow(settings.flow, speed, fields)
        return [JobRequest("evolve", params, {}, f"evolving '{source.name}'")]

    def apply(self, context, results):
        (result,) = results
        params = result.request.params
        times = params["times"]
        curvature_colored = params["curvature"] is not None
        frames = job_files.evolution_frames(result.outputs, len(times), curvature_colored)
        meshes = [(vertices, faces) for vertices, faces, _ in frames]
        surface_colors = job_files.frame_surface_colors(result.outputs, [len(vertices) for vertices, _ in meshes])
        tracked = None
        if params.get("track_vertices"):
            tracked = tracked_frames(result.outputs, len(times), len(meshes[0][0]), meshes[0][1])

        name = f"{self.source_name} Evolution"
        model_path = model_store.keep_model(context, result.files["model"], name)
        keyed = None
        if tracked is not None:
            first_colors = None if surface_colors is None else surface_colors[0]
            keyed = self.add_tracked(context, f"{name} Tracked", tracked, meshes[0][1], times, first_colors)
        mesh = frame_switch.frames_mesh(name, meshes, scene_io.matrix_array(self.model_to_object))
        if surface_colors is not None:  # written first: curvature colours, where asked for, are the ones shown
            scene_io.write_surface_colors(mesh, np.concatenate(surface_colors))
        if curvature_colored:
            scene_io.write_curvature_colors(mesh, srgb_to_linear(np.concatenate([c for _, _, c in frames])))
        obj = scene_io.add_object(context, name, mesh, self.placement)
        frame_switch.add_frame_switch(obj, MODIFIER_NAME, self.frame_start, len(frames))
        if curvature_colored:
            scene_io.show_curvature(context, obj)
        elif surface_colors is not None:
            scene_io.show_surface_colors(mesh)
        evolution = obj.neural_sdf_evolution
        evolution.model_path, evolution.time_end, evolution.frame_count = model_path, times[-1], len(frames)
        summary = result.summary
        evolution.summary = (
            f"{self.flow_text} to t = {times[-1]:.4g}, {summary.get('steps')} steps, "
            f"{format_duration(summary.get('train_seconds', 0.0))} on {summary.get('device')}, from {self.source_name}"
        )
        tracked_text = ""
        if keyed is not None:
            keyed.select_set(True)
            keyed.neural_sdf_evolution.summary = evolution.summary
            tracked_text = tracking_text(summary["tracking"], self.frame_start, keyed.name)
        frame_end = self.frame_start + len(frames) - 1
        vanished = sum(len(vertices) == 0 for vertices, _ in meshes)
        colored = evolution_colors_text(surface_colors is not None, curvature_colored, scene_io.SOURCE_COLOR_ATTRIBUTE)
        return (
            f"Baked frames {self.frame_start} to {frame_end} (t = 0 to {times[-1]:.4g}) of '{self.source_name}' into "
            f"'{obj.name}'{colored}" + (f"; the surface has vanished in {vanished} of them" if vanished else "")
            + tracked_text
        ) + scene_io.hide_sources(context, [self.source_name])

    def add_tracked(
        self,
        context,
        name: str,
        positions: np.ndarray,
        faces: np.ndarray,
        times: list[float],
        first_colors: np.ndarray | None,
    ):
        """The first frame's mesh with one shape key per tracked frame (``positions`` in model coordinates), placed
        like the frames object, its vertices keeping the first frame's surface colours ``first_colors`` (None: a
        model without colours); its evolution facts say how many frames it holds (no model: the panel's baked
        evolution is the frames object)."""
        to_local = scene_io.matrix_array(self.model_to_object)
        local = np.stack([scene_io.transform_points(to_local, frame) for frame in positions])
        mesh = scene_io.new_mesh(name, local[0], faces)
        if first_colors is not None:
            scene_io.write_surface_colors(mesh, first_colors)
            scene_io.show_surface_colors(mesh)
        keyed = scene_io.add_object(context, name, mesh, self.placement)
        names = ["Basis", *(f"t = {t:.4g}" for t in times[1 : len(local)])]
        add_shape_key_frames(keyed, local, names, self.frame_start)
        keyed.neural_sdf_evolution.frame_count, keyed.neural_sdf_evolution.time_end = len(local), times[len(local) - 1]
        return keyed


def describe_flow(flow: str, speed: float, fields: list[FieldEmpty]) -> str:
    if flow == "MCF":
        return f"Mean curvature flow at {speed:.4g}"
    if flow == "OFFSET":
        return f"Offset at {speed:.4g} per unit of time"
    return "Fields " + ", ".join(f"'{field.name}'" for field in fields)
