"""The engine's jobs, one spec per kind, shared by the command line (`engine.cli`) and the worker
(`engine.worker`): each front end turns its input (options and files, or a job message and ``inputs.npz``) into
``JOBS[kind].from_params(params)`` and input arrays, calls ``spec.run(inputs, context)`` and writes the
`JobOutput` its own way. A new kind is one module here and one line in `JOBS` (and its row in the protocol's
documentation and `engine.protocol.JOB_KINDS`).
"""

from .bake import BakeJob
from .base import JobContext, JobOutput, JobParamError, JobSpec, field_docs
from .curvature import CurvatureJob
from .evolve import EvolveJob
from .fit import ExtractJob, FitJob
from .image_morph import ImageMorphJob
from .images import ImageFitJob, ImageRenderJob, ImageTileJob
from .morph import MorphJob
from .render import RenderJob
from .ridges import RidgesJob

JOBS: dict[str, type[JobSpec]] = {
    spec.kind: spec for spec in (FitJob, ExtractJob, CurvatureJob, EvolveJob, MorphJob, BakeJob,
                                 ImageFitJob, ImageRenderJob, ImageTileJob, ImageMorphJob, RenderJob, RidgesJob)
}
"""Every job kind by its protocol name."""

__all__ = ["JOBS", "JobContext", "JobOutput", "JobParamError", "JobSpec", "field_docs"]
