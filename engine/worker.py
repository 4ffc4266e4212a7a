"""The engine worker: ``python -m engine.worker`` serves the Blender add-on's jobs over stdin/stdout.

The messages are those of `engine.protocol`. Only the standard library is imported before the worker is running:
the heartbeat starts at once, and a Python that lacks the engine's requirements answers with one message saying
so instead of a traceback. The job functions import the engine's modules themselves for the same reason.
"""

from __future__ import annotations

import os
import platform
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import __version__, protocol

EXIT_MISSING_REQUIREMENTS = 3
CURVATURE_CHUNK = 32768
"""Points per curvature evaluation between progress reports and cancel checks."""


class JobError(ValueError):
    """A job message the worker cannot run (a bug in the sender, not in the user's input)."""


class JobCancelled(Exception):
    """The add-on cancelled the job between two stages."""


class Channel:
    """The protocol's output stream: whole lines, from any thread."""

    def __init__(self, stream):
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict) -> None:
        line = protocol.encode(message)
        with self._lock:
            try:
                self._stream.write(line)
                self._stream.flush()
            except OSError:
                # The add-on is gone (closed pipe): nobody is left to serve or to tell.
                os._exit(0)


class Inbox:
    """Reads the add-on's messages on a thread: jobs queue up, cancels mark jobs, end of input cancels everything."""

    def __init__(self, stream, channel: Channel):
        self._stream = stream
        self._channel = channel
        self._jobs: queue.Queue[dict | None] = queue.Queue()
        self._cancelled: set[str] = set()
        self._closed = threading.Event()
        threading.Thread(target=self._read, name="inbox", daemon=True).start()

    def next_job(self) -> dict | None:
        """The next job message, or None once the input has ended."""
        return self._jobs.get()

    def is_cancelled(self, job_id: str) -> bool:
        return self._closed.is_set() or job_id in self._cancelled

    def _read(self) -> None:
        for line in self._stream:
            if not line.strip():
                continue
            try:
                message = protocol.decode(line)
            except protocol.ProtocolError as error:
                self._channel.send(protocol.error(None, f"The engine worker got an invalid message: {error}"))
                continue
            if message["type"] == "job":
                self._jobs.put(message)
            elif message["type"] == "cancel":
                self._cancelled.add(str(message.get("job")))
            else:
                self._channel.send(
                    protocol.error(None, f"The engine worker got an unknown message type {message['type']!r}")
                )
        self._closed.set()
        self._jobs.put(None)


@dataclass
class Job:
    """One job being run: its message's fields and the ways to report back."""

    id: str
    kind: str
    dir: Path
    params: dict
    channel: Channel
    is_cancelled: Callable[[], bool]

    @classmethod
    def from_message(cls, message: dict, channel: Channel, inbox: Inbox) -> "Job":
        if message.get("protocol") != protocol.PROTOCOL_VERSION:
            raise JobError(
                f"The add-on speaks protocol {message.get('protocol')}, this engine speaks "
                f"{protocol.PROTOCOL_VERSION}: install the add-on and the engine from the same release"
            )
        job_id, kind = str(message.get("job")), message.get("kind")
        if kind not in protocol.JOB_KINDS:
            raise JobError(f"unknown job kind {kind!r}; expected one of {', '.join(protocol.JOB_KINDS)}")
        directory = Path(str(message.get("dir")))
        if not directory.is_dir():
            raise JobError(f"the job directory {directory} does not exist")
        params = message.get("params")
        if not isinstance(params, dict):
            raise JobError(f"job {job_id}: 'params' must be an object, got {params!r}")
        return cls(job_id, kind, directory, params, channel, lambda: inbox.is_cancelled(job_id))

    def param(self, name: str, kind: type | tuple[type, ...]):
        value = self.params.get(name)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise JobError(f"{self.kind} job: parameter {name!r} must be of type {kind}, got {value!r}")
        return value

    def report(self, stage: str, step: int, total: int, loss: float | None = None, eta: float | None = None) -> None:
        self.channel.send(protocol.progress(self.id, stage, step, total, loss, eta))

    def raise_if_cancelled(self, where: str) -> None:
        if self.is_cancelled():
            raise JobCancelled(f"{self.kind} cancelled {where}")


def main() -> int:
    channel = Channel(_claim_stdout())
    threading.Thread(target=_heartbeat, args=(channel,), name="heartbeat", daemon=True).start()
    try:
        import numpy
        import torch

        from . import extraction, fit, geometry  # noqa: F401  (imports every other requirement: checked at start)
    except ImportError as error:
        channel.send(
            protocol.error(
                None,
                f"The engine's Python ({sys.executable}) cannot import {error.name or error}: press 'Set up engine' "
                "in the add-on preferences, or choose a Python that has the engine's requirements",
            )
        )
        return EXIT_MISSING_REQUIREMENTS
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    channel.send(protocol.hello(__version__, platform.python_version(), numpy.__version__, torch.__version__, cuda))
    inbox = Inbox(sys.stdin, channel)
    while (message := inbox.next_job()) is not None:
        channel.send(run_job(message, channel, inbox))
    return 0


def run_job(message: dict, channel: Channel, inbox: Inbox) -> dict:
    """Run one job message; returns the message that ends it (result, error or cancelled)."""
    from .training import Cancelled
    from .mesh_io import MeshError

    job_id, kind = str(message.get("job")), message.get("kind")
    try:
        job = Job.from_message(message, channel, inbox)
        files, summary = JOB_FUNCTIONS[job.kind](job)
        return protocol.result(job.id, files, summary)
    except (Cancelled, JobCancelled) as stop:
        return protocol.cancelled(job_id, str(stop))
    except MemoryError:
        return protocol.error(
            job_id, f"The engine ran out of memory in the {kind} job: lower the resolution or choose a smaller preset"
        )
    except (MeshError, JobError, ValueError, FileNotFoundError, RuntimeError) as error:
        # The engine's own messages say what is wrong and what to do.
        return protocol.error(job_id, str(error))
    except Exception as error:
        traceback.print_exc()
        return protocol.error(
            job_id,
            f"Internal engine error in the {kind} job: {type(error).__name__}: {error} (traceback in the worker log)",
        )


def run_fit(job: Job) -> tuple[dict, dict]:
    from .fit import fit_sdf, preset
    from .mesh_io import check_mesh
    from .training import pick_device

    names = job.param("names", list)
    inputs = _load_inputs(job)
    meshes = []
    for index, name in enumerate(names):
        vertices, faces = (_input(inputs, f"{what}_{index}") for what in ("vertices", "faces"))
        meshes.append(check_mesh(vertices, faces, name=f"Object '{name}'"))
    overrides = {"device": job.param("device", str), "seed": job.param("seed", int)}
    if job.params.get("steps") is not None:
        overrides["steps"] = job.param("steps", int)
    config = preset(job.param("preset", str), **overrides)
    resolution = job.param("resolution", int)
    device = pick_device(config.device)

    job.report("fit", 0, config.steps)
    model = fit_sdf(
        meshes,
        config,
        on_progress=lambda p: job.report("fit", p.step, p.total, p.loss, p.eta_s),
        should_cancel=job.is_cancelled,
    )
    model.metadata["sources"] = names
    job.raise_if_cancelled("after training, before extraction")
    vertices, faces = _extract(job, model, resolution, device)
    model.save(job.dir / protocol.MODEL_FILENAME)
    summary = {
        "train_seconds": model.metadata["train_seconds"],
        "loss": model.metadata["best_validation_loss"],
        "device": model.metadata["device"],
        "steps": config.steps,
    }
    return {"model": protocol.MODEL_FILENAME}, summary


def run_extract(job: Job) -> tuple[dict, dict]:
    from .model import load_model
    from .training import pick_device

    model = load_model(job.param("model", str))
    vertices, _ = _extract(job, model, job.param("resolution", int), pick_device(job.param("device", str)))
    return {}, {"vertices": len(vertices)}


def run_curvature(job: Job) -> tuple[dict, dict]:
    import numpy as np

    from .colormaps import QUANTITIES, colorize
    from .conventions import CURVATURE_CONVENTION
    from .geometry import model_curvatures
    from .model import load_model
    from .training import pick_device

    quantity, colormap = job.param("quantity", str), job.param("colormap", str)
    if quantity not in QUANTITIES:
        raise JobError(f"unknown curvature quantity {quantity!r}; expected one of {', '.join(QUANTITIES)}")
    if colormap not in protocol.COLORMAPS:
        raise JobError(f"unknown colour map {colormap!r}; expected one of {', '.join(protocol.COLORMAPS)}")
    value_range = job.params.get("range")
    if value_range is not None and (not isinstance(value_range, list) or len(value_range) != 2):
        raise JobError(f"curvature job: 'range' must be [low, high] or null, got {value_range!r}")
    project = job.param("project", bool)
    model = load_model(job.param("model", str))
    model.network.to(pick_device(job.param("device", str)))
    points = np.asarray(_input(_load_inputs(job), "points"), dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise JobError(f"curvature job: points must be (n, 3), got shape {points.shape}")
    if len(points) == 0:
        raise ValueError("There are no points to colour: the mesh has no vertices")

    chunks = []
    total = len(points)
    job.report("curvature", 0, total)
    started = time.perf_counter()
    for start in range(0, total, CURVATURE_CHUNK):
        job.raise_if_cancelled(f"after {start} of {total} points")
        chunks.append(model_curvatures(model, points[start : start + CURVATURE_CHUNK], project=project))
        done = min(start + CURVATURE_CHUNK, total)
        elapsed = time.perf_counter() - started
        job.report("curvature", done, total, eta=elapsed / done * (total - done))
    fields = {
        name: np.concatenate([getattr(c, name) for c in chunks]).astype(np.float32)
        for name in protocol.CURVATURE_FIELDS
    }
    shown = np.concatenate([getattr(c, quantity) for c in chunks])
    kind = QUANTITIES[quantity] if colormap == "auto" else {"diverging": "signed", "sequential": "magnitude"}[colormap]
    colors, (low, high) = colorize(shown, kind, value_range=value_range)
    _save_outputs(job, colors=colors.astype(np.float32), **fields)
    summary = {"quantity": quantity, "range": [low, high], "convention": CURVATURE_CONVENTION}
    return {}, summary


def run_evolve(job: Job) -> tuple[dict, dict]:
    import dataclasses

    import numpy as np

    from .evolution import EvolveConfig, evolve, save_evolution
    from .fields import extract_frames, frame_curvatures
    from .surface_flows import Flow
    from .model import load_model

    flow = Flow.from_dict(job.param("flow", dict))
    times = [float(t) for t in job.param("times", list)]
    if not times:
        raise JobError("evolve job: 'times' must list at least one time")
    curvature = job.params.get("curvature")
    if curvature is not None and curvature not in protocol.CURVATURE_FIELDS:
        raise JobError(f"evolve job: unknown curvature {curvature!r}; expected one of {protocol.CURVATURE_FIELDS}")
    config = EvolveConfig(device=job.param("device", str), seed=job.param("seed", int))
    if job.params.get("steps") is not None:
        config = dataclasses.replace(config, steps=job.param("steps", int))
    model = load_model(job.param("model", str))

    job.report("evolve", 0, config.steps)
    evolved = evolve(
        model,
        flow,
        (min(0.0, *times), max(0.0, *times)),
        config,
        on_progress=lambda p: job.report("evolve", p.step, p.total, p.loss, p.eta_s),
        should_cancel=job.is_cancelled,
    )
    frame_seconds = []
    started = last = time.perf_counter()

    def report_frame(index: int, total: int, frame) -> None:
        nonlocal last
        now = time.perf_counter()
        frame_seconds.append(now - last)
        last = now
        done = index + 1
        job.report("frames", done, total, eta=(now - started) / done * (total - done))

    job.report("frames", 0, len(times))
    frames = extract_frames(evolved, times, job.param("resolution", int), on_frame=report_frame, should_cancel=job.is_cancelled)
    arrays = {"times": np.asarray(times, dtype=np.float64)}
    for index, frame in enumerate(frames):
        arrays[f"vertices_{index}"] = frame.vertices.astype(np.float32)
        arrays[f"faces_{index}"] = frame.faces.astype(np.int32)
    summary = {
        "train_seconds": evolved.metadata["evolution"]["train_seconds"],
        "frame_seconds": frame_seconds,
        "device": evolved.metadata["evolution"]["device"],
        "steps": config.steps,
    }
    if curvature is not None:
        job.raise_if_cancelled("before the curvature colours")
        curvatures, summary["range"] = frame_curvatures(evolved, frames, curvature)
        for index, values in enumerate(curvatures):
            arrays[f"colors_{index}"] = values.colors.astype(np.float32)
    save_evolution(evolved, job.dir / protocol.EVOLUTION_MODEL_FILENAME)
    _save_outputs(job, **arrays)
    return {"model": protocol.EVOLUTION_MODEL_FILENAME}, summary


def run_morph(job: Job) -> tuple[dict, dict]:
    import numpy as np

    from .fields import even_times, extract_frames
    from .fit import preset
    from .mesh_io import check_mesh
    from .morph import fit_pair, morph, morph_config, save_morph, warp_points

    method = job.param("method", str)
    if method not in protocol.MORPH_METHODS:
        raise JobError(f"morph job: unknown method {method!r}; expected one of {', '.join(protocol.MORPH_METHODS)}")
    names = job.param("names", list)
    if len(names) != 2:
        raise JobError(f"morph job: 'names' must name the source and the target, got {names!r}")
    times = even_times(job.param("frames", int))
    inputs = _load_inputs(job)
    meshes = [
        check_mesh(_input(inputs, f"vertices_{i}"), _input(inputs, f"faces_{i}"), name=f"Object '{name}'")
        for i, name in enumerate(names)
    ]
    landmarks = None
    if "landmarks_source" in inputs:
        if method != "flow":
            raise JobError("morph job: landmarks apply to the flow method only")
        landmarks = (_input(inputs, "landmarks_source"), _input(inputs, "landmarks_target"))
    warp_source = job.param("warp_source", bool)
    if warp_source and method != "flow":
        raise JobError("morph job: warping the source mesh needs the flow method")
    fit_overrides = {"device": job.param("device", str), "seed": job.param("seed", int)}
    if job.params.get("fit_steps") is not None:
        fit_overrides["steps"] = job.param("fit_steps", int)
    fit_config = preset(job.param("preset", str), **fit_overrides)

    job.report("fit", 0, 2 * fit_config.steps)
    model_a, model_b = fit_pair(
        *meshes,
        fit_config,
        on_progress=lambda index, p: job.report("fit", index * p.total + p.step, 2 * p.total, p.loss),
        should_cancel=job.is_cancelled,
    )
    steps = job.param("steps", int) if job.params.get("steps") is not None else None
    config = morph_config(method, steps=steps, device=job.param("device", str), seed=job.param("seed", int))
    job.report("morph", 0, config.steps)
    morphed = morph(
        model_a,
        model_b,
        config,
        landmarks=landmarks,
        on_progress=lambda p: job.report("morph", p.step, p.total, p.loss, p.eta_s),
        should_cancel=job.is_cancelled,
    )

    arrays = {"times": np.asarray(times, dtype=np.float64)}
    started = time.perf_counter()

    def keep_frame(index: int, total: int, frame) -> None:
        arrays[f"vertices_{index}"] = frame.vertices.astype(np.float32)
        arrays[f"faces_{index}"] = frame.faces.astype(np.int32)
        done = index + 1
        job.report("frames", done, total, eta=(time.perf_counter() - started) / done * (total - done))

    job.report("frames", 0, len(times))
    extract_frames(morphed, times, job.param("resolution", int), on_frame=keep_frame, should_cancel=job.is_cancelled)
    if warp_source:
        source_vertices = meshes[0].vertices
        arrays["source_positions"] = np.stack([warp_points(morphed, source_vertices, t) for t in times]).astype(np.float32)
    save_morph(morphed, job.dir / protocol.MORPH_MODEL_FILENAME)
    _save_outputs(job, **arrays)
    summary = {
        "method": method,
        "fit_seconds": model_a.metadata["train_seconds"] + model_b.metadata["train_seconds"],
        "train_seconds": morphed.metadata["morph"]["train_seconds"],
        "device": morphed.metadata["morph"]["device"],
    }
    return {"model": protocol.MORPH_MODEL_FILENAME}, summary


JOB_FUNCTIONS: dict[str, Callable[[Job], tuple[dict, dict]]] = {
    "fit": run_fit,
    "extract": run_extract,
    "curvature": run_curvature,
    "evolve": run_evolve,
    "morph": run_morph,
}


def _extract(job: Job, model, resolution: int, device) -> tuple:
    import numpy as np

    from .extraction import extract_mesh

    job.report("extract", 0, 1)
    model.network.to(device)
    vertices, faces = extract_mesh(model, resolution)
    model.network.cpu()
    _save_outputs(job, vertices=vertices.astype(np.float32), faces=faces.astype(np.int32))
    job.report("extract", 1, 1)
    return vertices, faces


def _load_inputs(job: Job) -> dict:
    import numpy as np

    with np.load(job.dir / protocol.INPUTS_FILENAME, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def _input(inputs: dict, name: str):
    if name not in inputs:
        raise JobError(
            f"the job's {protocol.INPUTS_FILENAME} has no array {name!r} (it has {', '.join(inputs) or 'none'})"
        )
    return inputs[name]


def _save_outputs(job: Job, **arrays) -> None:
    import numpy as np

    np.savez(job.dir / protocol.OUTPUTS_FILENAME, **arrays)


def _claim_stdout():
    """The protocol's own handle on stdout; fd 1 and sys.stdout then point at stderr, so a stray print (from Python
    or from a C library) lands in the log instead of corrupting the message stream."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "w", encoding="utf-8", newline="\n")


def _heartbeat(channel: Channel) -> None:
    while True:
        time.sleep(protocol.HEARTBEAT_INTERVAL_S)
        channel.send(protocol.alive())


if __name__ == "__main__":
    sys.exit(main())
