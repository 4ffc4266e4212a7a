"""Words for the UI: job progress with ETA, durations, the engine's self-description."""

from __future__ import annotations


from .worker_client import TRAINING_STAGES, Progress

STAGE_VERBS = {
    "extract": "extracting the surface",
    "curvature": "evaluating curvature",
    "measure": "measuring the surface",
    "render": "rendering",
}
"""Stages shown by what they do."""
STEP_NAMES = {
    "fit": "step", "evolve": "training step", "morph": "step", "frames": "frame", "track": "tracking vertices",
}  # fmt: skip
"""Stages shown by their count, e.g. "step 120/300"; a fit's training is its main work, so its steps go unnamed."""
JOB_PHASES = {"morph": {"fit": "fitting both shapes", "morph": "training the morph"}}
"""Training stages named before their count, by job kind, in jobs that train more than one thing."""
JOB_STAGE_SPANS = {
    "fit": {"fit": (0.0, 0.95), "extract": (0.95, 1.0), "measure": (1.0, 1.0)},
    "evolve": {"evolve": (0.0, 0.9), "frames": (0.9, 1.0), "track": (1.0, 1.0), "curvature": (1.0, 1.0)},
    "morph": {"fit": (0.0, 0.5), "morph": (0.5, 0.9), "frames": (0.9, 1.0)},
    "image_fit": {"fit": (0.0, 0.98), "render": (0.98, 1.0)},
    "image_tile": {"fit": (0.0, 0.98), "render": (0.98, 1.0)},
    "image_morph": {"morph": (0.0, 0.9), "frames": (0.9, 1.0)},
}
"""The part of a job's progress bar each of its stages fills, by job kind, in the order the engine reports them
(`engine.jobs.JOBS[kind].stages`; a kind not listed: each stage all of it). Two stages fill none of it: a fit's
``measure`` (the add-on asks for no metrics, so it never runs) and an evolution's ``track`` and ``curvature`` (the
tracked vertices and the colours of the frames already meshed: the bar stays full while the text says so, frame by
frame with its ETA)."""


def estimated_normals_text(estimated: list[str], sources: int) -> str:
    """What a fit's report adds when the engine estimated the normals of point clouds: " (normals estimated)" when
    it did for every source, " (normals of 'A', 'B' estimated)" for some, "" for none."""
    if not estimated:
        return ""
    if len(estimated) == sources:
        return " (normals estimated)"
    return " (normals of " + ", ".join(f"'{name}'" for name in estimated) + " estimated)"


def format_duration(seconds: float) -> str:
    """``"8 s"``, ``"2 min 05 s"``, ``"1 h 02 min"``."""
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_text(
    kind: str, label: str, progress: Progress | None, job_index: int, job_count: int, *, engine_started: bool = False
) -> str:
    """One line for the status bar and the panel, e.g. "Fitting 'Sphere' (1/2): step 120/300, loss 0.0123, ETA 14 s",
    or with a job ``kind`` of several training stages "Morphing 'A' into 'B': training the morph, step 20/500, ...".
    Before the job's first progress it says the engine is starting, or only "starting" once the engine runs (a warm
    one, or the job after the first)."""
    head = label[:1].upper() + label[1:]
    if job_count > 1:
        head += f" ({job_index + 1}/{job_count})"
    if progress is None:
        return f"{head}: starting" if engine_started else f"{head}: starting the engine"
    phase = JOB_PHASES.get(kind, {}).get(progress.stage)
    parts = [phase] if phase else []
    if progress.stage in TRAINING_STAGES and progress.step == 0:
        parts.append("preparing samples")
    elif progress.stage in STEP_NAMES:
        parts.append(f"{STEP_NAMES[progress.stage]} {progress.step}/{progress.total}")
    else:
        parts.append(STAGE_VERBS.get(progress.stage, progress.stage))
    if progress.stage in TRAINING_STAGES and progress.loss is not None:
        parts.append(f"loss {progress.loss:.4g}")
    if progress.eta_s is not None and progress.step < progress.total:
        parts.append(f"ETA {format_duration(progress.eta_s)}")
    return f"{head}: {', '.join(parts)}"


def hidden_sources_text(names: list[str]) -> str:
    """What a report adds when Hide Sources hid the objects a result was made from, e.g. "; 'Sphere' is hidden
    (Hide Sources)"; "" when none was hidden."""
    if not names:
        return ""
    quoted = [f"'{name}'" for name in names]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"
    return f"; {listed} {'is' if len(quoted) == 1 else 'are'} hidden (Hide Sources)"


SHORT_STEP_NAMES = {
    "fit": "Step", "evolve": "Step", "morph": "Step", "frames": "Frame", "track": "Tracking",
}  # fmt: skip
"""How the panel names a counted stage ("Step 77/300"), by stage."""
SHORT_JOB_PHASES = {"morph": {"fit": "Fitting", "morph": "Morph"}}
"""How the panel names a training stage in jobs that train more than one thing, by job kind."""


def short_progress_text(
    kind: str, progress: Progress | None, job_index: int, job_count: int, *, engine_started: bool = False
) -> str:
    """What the panel's progress bar shows, short enough for the default sidebar width, e.g. "Step 77/300 · ETA
    22 s", "Fitting 40/600 · ETA 1 min 05 s" (a morph's fits), "Starting the engine…" until the first progress
    comes; the whole line (`progress_text`) goes to the status bar."""
    head = f"{job_index + 1}/{job_count} · " if job_count > 1 else ""
    if progress is None:
        return f"{head}Starting\u2026" if engine_started else f"{head}Starting the engine\u2026"
    phase = SHORT_JOB_PHASES.get(kind, {}).get(progress.stage)
    if progress.stage in TRAINING_STAGES and progress.step == 0:
        text = f"{phase}: preparing samples\u2026" if phase else "Preparing samples\u2026"
    elif progress.stage in SHORT_STEP_NAMES:
        text = f"{phase or SHORT_STEP_NAMES[progress.stage]} {progress.step}/{progress.total}"
    else:
        verb = STAGE_VERBS.get(progress.stage, progress.stage)
        text = f"{verb[:1].upper()}{verb[1:]}\u2026"
    if progress.eta_s is not None and progress.step < progress.total:
        text += f" · ETA {format_duration(progress.eta_s)}"
    return head + text


def overall_fraction(kind: str, progress: Progress | None, job_index: int, job_count: int) -> float:
    """How much of a session is done, in [0, 1], for a progress bar."""
    within = 0.0
    if progress is not None:
        start, end = JOB_STAGE_SPANS.get(kind, {}).get(progress.stage, (0.0, 1.0))
        within = start + (end - start) * progress.fraction
    return min((job_index + within) / max(job_count, 1), 1.0)


def curvature_unit(quantity: str, length_unit: str) -> str:
    """Unit of a curvature quantity: 1/length, and 1/length^2 for the Gaussian curvature."""
    return f"1/{length_unit}\u00b2" if quantity == "gaussian" else f"1/{length_unit}"


def describe_engine(hello: dict) -> str:
    """What Check engine shows: versions and the device the worker found, and the server's address when the engine
    is remote (its hello names it)."""
    device = f"CUDA GPU: {hello['cuda']}" if hello.get("cuda") else "CPU only (PyTorch sees no CUDA GPU)"
    where = f"Remote engine at {hello['remote']}: " if hello.get("remote") else ""
    return (
        f"{where}Engine {hello.get('engine')} (protocol {hello.get('protocol')}), Python {hello.get('python')}, "
        f"torch {hello.get('torch')}, numpy {hello.get('numpy')}; {device}"
    )
