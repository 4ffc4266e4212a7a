import bpy
from mathutils import Matrix

from .. import model_store, preferences, preview, scene_io
from ..core import job_files
from ..core.errors import EngineError
from ..core.params import fit_params
from ..core.text import estimated_normals_text, format_duration
from ..core.worker_client import JobRequest
from ..engine_jobs import EngineJobOperator
from . import checks


class NEURALSDF_OT_fit(EngineJobOperator, bpy.types.Operator):
    """Fit a neural SDF to the selected meshes or point clouds (modifiers applied, world space) and add its surface as
    a new object"""

    bl_idname = "neural_sdf.fit"
    bl_label = "Fit Neural SDF"
    bl_options = {"REGISTER", "UNDO"}
    makes_model = True

    @classmethod
    def poll(cls, context):
        return (
            checks.no_job_running(cls)
            and checks.in_object_mode(cls, context)
            and checks.selected_fit_sources(cls, context)
            and _tuner_with_one_level(cls, context)
        )

    def requests(self, context):
        settings = context.scene.neural_sdf
        device = preferences.get(context).device
        depsgraph = context.evaluated_depsgraph_get()
        sources = checks.fit_source_objects(context)
        groups = [sources] if settings.fit_mode == "JOINED" else [[obj] for obj in sources]
        requests = []
        self._color_sources = {}
        for group in groups:
            inputs = {}
            for index, obj in enumerate(group):
                for name, array in scene_io.fit_source(obj, depsgraph).items():
                    inputs[f"{name}_{index}"] = array
            names = [obj.name for obj in group]
            colored = settings.fit_colors and self._add_colors(group, inputs, depsgraph, settings.seed)
            params = fit_params(
                preset=settings.preset,
                steps=settings.steps if settings.use_custom_steps else None,
                resolution=settings.resolution,
                device=device,
                seed=settings.seed,
                names=names,
                preview_interval=preview.INTERVAL_S if settings.live_preview else 0.0,
                levels=settings.levels,
                tuner=settings.tuner,
                colors=colored,
            )
            requests.append(JobRequest("fit", params, inputs, f"fitting {_quoted(names)}"))
        return requests

    def _add_colors(self, group, inputs: dict, depsgraph, seed: int) -> bool:
        """The colours of every object of ``group`` into ``inputs`` where at least one has colours of its own
        (`scene_io.source_color_inputs`); returns whether."""
        found = scene_io.source_color_inputs(group, depsgraph, seed)
        if found is None:
            return False
        color_inputs, sources = found
        inputs.update(color_inputs)
        self._color_sources.update(sources)
        return True

    def _show_progress(self, context) -> None:
        """The progress, and the live preview whenever the engine has written a new one (`preview`): one preview
        object, replaced by the next job's (Objects: Each) and removed at the end (`_let_go`)."""
        EngineJobOperator._show_progress(self, context)  # not super(): test twins are siblings, not subclasses
        session, job = self.session, self.session.job_index
        shown = getattr(self, "_preview_shown", None)  # (job index, preview number) on show
        if shown is not None and shown[0] != job:
            preview.remove_all()  # the last job's: not this one's surface
            self._preview_shown = shown = None
        progress = session.progress
        if progress is None or progress.preview is None or job >= len(session.requests):
            return
        if shown == (job, progress.preview):
            return
        try:
            path = session.preview_file()
        except EngineError:
            return  # announced but not readable as a file: the next progress message repeats the number
        self._preview_shown = (job, progress.preview)
        names = session.requests[job].params["names"]
        preview.show(context, names[0] if len(names) == 1 else "Neural SDF", path, _frame_of(names))

    def _let_go(self, context) -> None:
        """Every end of the fit removes the live preview first: before the result is written (so the fit's undo
        step holds only the result), on cancel and failure, and when Blender drops the operator."""
        preview.remove_all()
        EngineJobOperator._let_go(self, context)

    def apply(self, context, results):
        planned = []
        for result in results:
            vertices, faces = job_files.mesh_arrays(result.outputs)
            colors = job_files.surface_colors(result.outputs, len(vertices))
            names = result.request.params["names"]
            planned.append((result, f"{names[0]} SDF" if len(names) == 1 else "Neural SDF", vertices, faces, colors))
        stored = [model_store.keep_model(context, result.files["model"], name) for result, name, *_ in planned]
        created, colored = [], []
        for (result, name, vertices, faces, colors), model_path in zip(planned, stored, strict=True):
            names = result.request.params["names"]
            frame = _frame_of(names)
            local = scene_io.transform_points(scene_io.matrix_array(frame.inverted()), vertices)
            obj = scene_io.add_object(context, name, scene_io.new_mesh(name, local, faces), frame)
            if colors is not None:
                scene_io.write_surface_colors(obj.data, colors)
                scene_io.show_surface_colors(obj.data)
                colored.extend(self._color_sources.get(source, "") for source in names)
            link = obj.neural_sdf
            link.model_path = model_path
            link.model_to_object = frame.inverted()
            summary = result.summary
            levels = int(summary.get("levels", 1))
            link.levels, link.level = levels, levels - 1  # Re-extract takes the finest level until the slider moves
            shape = f" x {levels} levels" if levels > 1 else ""
            tuner = ", TUNER" if result.request.params["tuner"] else ""
            link.fit_summary = (
                f"{result.request.params['preset']}, {summary.get('steps')} steps{shape}{tuner}, "
                f"{format_duration(summary.get('train_seconds', 0.0))} on {summary.get('device')}, "
                f"from {', '.join(names)}"
            )
            created.append((obj, len(faces)))
        for obj, _ in created:
            obj.select_set(True)
        context.scene.neural_sdf.model_object = created[-1][0]
        resolution = results[0].request.params["resolution"]
        made = ", ".join(f"'{obj.name}' ({faces:,} faces)" for obj, faces in created)
        sources = [name for result in results for name in result.request.params["names"]]
        estimated = [name for result in results for name in result.summary.get("normals_estimated_for", [])]
        noted = estimated_normals_text(estimated, len(sources))
        colors = f", with colours from {', '.join(dict.fromkeys(c for c in colored if c))}" if colored else ""
        interior = "".join(
            f"; {result.summary['interior_area_share']:.1%} of the surface of {_quoted(result.request.params['names'])}"
            " lies inside the shape (parts modelled into each other) and was fitted as its inside"
            for result in results if "interior_area_share" in result.summary
        )  # fmt: skip
        return f"Fitted {made} at resolution {resolution}{noted}{colors}{interior}" + scene_io.hide_sources(
            context, sources
        )


def _tuner_with_one_level(cls, context) -> bool:
    settings = context.scene.neural_sdf
    if settings.tuner and settings.levels > 1:
        cls.poll_message_set("Frequency Control (TUNER) needs Levels 1 (each level sets its own frequencies)")
        return False
    return True


def _frame_of(names: list[str]) -> Matrix:
    """Where the new object sits: a single source's transform (so it shares its origin and axes), else the world."""
    source = bpy.data.objects.get(names[0]) if len(names) == 1 else None
    if source is None or abs(source.matrix_world.determinant()) < 1e-12:
        return Matrix.Identity(4)
    return source.matrix_world.copy()


def _quoted(names: list[str]) -> str:
    shown = ", ".join(f"'{name}'" for name in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")
