import bpy
import numpy as np
from mathutils import Matrix

from .. import frame_switch, model_store, preferences, scene_io
from ..core import job_files
from ..core.errors import EngineError
from ..core.items import MORPH_METHOD_ITEMS, item_names
from ..core.morph import empty_frames_text, landmark_inputs, morph_colors_text
from ..core.params import morph_params
from ..core.text import format_duration
from ..core.worker_client import JobRequest
from ..engine_jobs import EngineJobOperator
from ..shape_key_frames import add_shape_key_frames
from . import checks

MODIFIER_NAME = "Morph"
"""The morph's frame switch modifier."""
METHOD_NAMES = item_names(MORPH_METHOD_ITEMS)


class NEURALSDF_OT_morph(EngineJobOperator, bpy.types.Operator):
    """Morph the selected mesh (source) into the active one (target): fit both, train the morph and bake every frame
    of the range into a new animated object (coloured where either has colours and Colours is on); the selected
    objects are not changed"""

    bl_idname = "neural_sdf.morph"
    bl_label = "Morph"
    bl_options = {"REGISTER", "UNDO"}
    makes_model = True

    @classmethod
    def poll(cls, context):
        return checks.no_job_running(cls) and checks.in_object_mode(cls, context) and checks.morph_pair(cls, context)

    def requests(self, context):
        scene = context.scene
        settings, fit = scene.neural_sdf_morph, scene.neural_sdf
        source, target = checks.source_and_target(context)
        frame_start, frame_end = settings.frame_range(scene)
        inputs = landmark_inputs(settings.method, scene_io.landmark_empties(scene)) if settings.use_landmarks else {}
        depsgraph = context.evaluated_depsgraph_get()
        for index, obj in enumerate((source, target)):
            inputs[f"vertices_{index}"], inputs[f"faces_{index}"] = scene_io.evaluated_world_mesh(obj, depsgraph)
        found = scene_io.source_color_inputs([source, target], depsgraph, fit.seed) if fit.fit_colors else None
        color_inputs, self.color_sources = found if found is not None else ({}, {})
        inputs.update(color_inputs)
        params = morph_params(
            method=settings.method,
            names=(source.name, target.name),
            frame_start=frame_start,
            frame_end=frame_end,
            preset=fit.preset,
            fit_steps=fit.steps if fit.use_custom_steps else None,
            steps=settings.steps if settings.use_custom_steps else None,
            resolution=settings.resolution,
            device=preferences.get(context).device,
            seed=fit.seed,
            animate_source=settings.animate_source,
            colors=bool(color_inputs),
        )
        # The shape-keyed copy keeps the source's polygons (quads stay quads) around the vertices sent.
        self.source_polygons = scene_io.evaluated_polygons(source, depsgraph) if params["warp_source"] else None
        self.frame_start, self.method = frame_start, settings.method
        return [JobRequest("morph", params, inputs, f"morphing '{source.name}' into '{target.name}'")]

    def apply(self, context, results):
        (result,) = results
        params = result.request.params
        source_name, target_name = params["names"]
        count = params["frames"]
        frames = job_files.frame_meshes(result.outputs, count)
        if not any(len(vertices) for vertices, _ in frames):
            raise EngineError("The morph's surface is empty in every frame: the fits failed; try more fit steps")
        surface_colors = job_files.frame_surface_colors(result.outputs, [len(vertices) for vertices, _ in frames])
        positions = None
        if params["warp_source"]:
            vertex_count = len(result.request.inputs["vertices_0"])
            positions = job_files.source_positions(result.outputs, count, vertex_count)

        name = f"{source_name} to {target_name} Morph"
        model_path = model_store.keep_model(context, result.files["model"], name)
        made = []
        if positions is not None:
            keys_name = f"{source_name} to {target_name} Shape Keys"
            keyed_mesh = scene_io.new_polygon_mesh(keys_name, positions[0], *self.source_polygons)
            keyed = scene_io.add_object(context, keys_name, keyed_mesh, Matrix.Identity(4))
            key_names = ["Basis", *(f"t = {t:.4g}" for t in result.outputs["times"][1:])]
            add_shape_key_frames(keyed, positions, key_names, self.frame_start)
            carried = job_files.source_colors(result.outputs, len(positions[0]))
            if carried is not None:  # a flow carries each vertex's colour along with it
                scene_io.write_surface_colors(keyed_mesh, carried)
                scene_io.show_surface_colors(keyed_mesh)
            made.append((keyed, "SHAPE_KEYS"))
        # The job got world-space meshes, so its frames are in world space: the object sits at the origin.
        mesh = frame_switch.frames_mesh(name, frames, np.eye(4))
        if surface_colors is not None:
            scene_io.write_surface_colors(mesh, np.concatenate(surface_colors))
            scene_io.show_surface_colors(mesh)
        obj = scene_io.add_object(context, name, mesh, Matrix.Identity(4))
        frame_switch.add_frame_switch(obj, MODIFIER_NAME, self.frame_start, count)
        obj.neural_sdf_morph.model_path = model_path
        made.insert(0, (obj, "FRAMES"))

        summary = result.summary
        method_name = METHOD_NAMES[self.method]
        text = (
            f"{method_name} from '{source_name}' to '{target_name}': {params['preset']} fits "
            f"{format_duration(summary.get('fit_seconds', 0.0))}, morph "
            f"{format_duration(summary.get('train_seconds', 0.0))} on {summary.get('device')}"
        )
        for made_obj, holds in made:
            morph = made_obj.neural_sdf_morph
            morph.holds, morph.method, morph.summary = holds, self.method, text
            morph.frame_start, morph.frame_count = self.frame_start, count
            made_obj.select_set(True)

        names = " and ".join(f"'{made_obj.name}'" for made_obj, _ in made)
        empty = [self.frame_start + index for index, (vertices, _) in enumerate(frames) if len(vertices) == 0]
        return (
            f"Morphed '{source_name}' into '{target_name}' ({method_name}) over frames {self.frame_start} to "
            f"{self.frame_start + count - 1}: {names}"
            + (morph_colors_text(self.color_sources) if surface_colors is not None else "")
            + empty_frames_text(self.method, empty)
            + scene_io.hide_sources(context, [source_name, target_name])
        )
