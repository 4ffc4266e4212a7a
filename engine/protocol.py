"""The protocol between the Blender add-on and the engine worker (``python -m engine.worker``), version 1.

Transport: the add-on starts the worker as a child process; each side writes one JSON object per line (UTF-8) —
the add-on to the worker's stdin, the worker to its stdout. The worker's stderr is a free-form log. Arrays never
cross the pipe: they sit in ``.npz`` files in a job directory that the add-on creates and deletes, read with
``np.load(allow_pickle=False)``.

Worker to add-on:

- ``{"type": "hello", "protocol": 1, "engine": "0.1.0", "python": "3.11.9", "numpy": "1.26.4",
  "torch": "2.13.0+cpu", "cuda": "NVIDIA H100 ..." | null}``: sent once, when the worker is ready for jobs.
  ``cuda`` names the GPU PyTorch sees (null: none). The add-on refuses a worker with another protocol number.
- ``{"type": "alive"}``: every `HEARTBEAT_INTERVAL_S` seconds from the moment the worker starts, whatever it is
  doing, so the add-on can tell a long job from a hung process.
- ``{"type": "progress", "job": ID, "stage": "fit" | "extract" | "curvature" | "evolve" | "morph" | "frames", "step": 12,
  "total": 300, "loss": 0.31 | null, "eta": 14.2 | null}``: at least once a second during a fit; at the start and end of
  the other stages. ``eta`` is the seconds left in the stage.
- ``{"type": "result", "job": ID, "outputs": "outputs.npz", "files": {"model": "model.pt"}, "summary": {...}}``:
  the job succeeded; paths are relative to the job directory.
- ``{"type": "error", "job": ID | null, "message": "..."}``: the job (or, with a null job, the worker itself)
  failed. The message is meant for the user as it is: what went wrong and what to do
  ("Object 'Cube' has no faces ..."). A worker that cannot start sends this and exits.
- ``{"type": "cancelled", "job": ID, "message": "..."}``: the job stopped on request; nothing was written.

Add-on to worker:

- ``{"type": "job", "protocol": 1, "job": ID, "kind": KIND, "dir": "/abs/job/dir", "params": {...}}``: jobs run
  one at a time in the order received. Kinds, their inputs (``dir/inputs.npz``) and outputs
  (``dir/outputs.npz``):

  - ``fit``: params ``preset`` (a name in `engine.fit.PRESETS`), ``steps`` (int or null: the preset's),
    ``resolution``, ``device`` ("auto" | "cpu" | "cuda"), ``seed``, ``names`` (one per input mesh, used in
    messages). Inputs ``vertices_<i>`` (n, 3) and ``faces_<i>`` (m, 3) per mesh, fitted together as one shape.
    Outputs ``vertices`` (n, 3) float32 and ``faces`` (m, 3) int32 in the input's coordinates, and the model
    file ``model.pt``. Summary: ``train_seconds``, ``loss`` (best validation loss), ``device``, ``steps``.
  - ``extract``: params ``model`` (path of a model file), ``resolution``, ``device``. Outputs as for ``fit``.
  - ``curvature``: params ``model``, ``device``, ``quantity`` (a name in `engine.colormaps.QUANTITIES`),
    ``colormap`` ("auto" | "diverging" | "sequential"), ``range`` ([low, high] or null: robust automatic),
    ``project`` (move the points onto the surface first). Input ``points`` (n, 3). Outputs float32 (n,) arrays
    ``mean``, ``gaussian``, ``k1``, ``k2`` (`CURVATURE_FIELDS`, convention in the summary) and ``colors``
    (n, 4) float32 sRGB. Summary: ``quantity``, ``range`` [low, high], ``convention``.
  - ``evolve``: params ``model`` (a fitted model file), ``flow`` (`engine.evolution.Flow.to_dict`: ``mean_curvature``,
    ``normal_speed``, ``fields`` [{``kind``, ``center``, ``strength``, ``radius``, ``axis``}], input coordinates),
    ``times`` (list of floats, one per frame), ``steps`` (int or null: `EvolveConfig`'s), ``resolution``,
    ``device``, ``seed``, ``curvature`` (a name in `CURVATURE_FIELDS` or null). No inputs. Progress stages
    ``evolve`` (training) then ``frames`` (step = frames done). Outputs per frame i: ``vertices_<i>`` (n, 3)
    float32, ``faces_<i>`` (m, 3) int32 (both empty where the surface has vanished) and, with ``curvature``,
    ``colors_<i>`` (n, 4) float32 sRGB on one range shared by every frame; ``times`` (frames,) float64. File
    ``evolution.pt`` (the time-dependent model). Summary: ``train_seconds``, ``frame_seconds`` (list), ``device``,
    ``steps``, and with ``curvature`` the colour ``range`` [low, high].
  - ``morph``: params ``method`` (`MORPH_METHODS`), ``names`` [source, target] (used in messages), ``frames``
    (>= 2, t evenly from 0 to 1), ``preset`` and ``fit_steps`` (int or null) for the fits of both shapes (in one
    shared cube), ``steps`` (int or null: the method's), ``resolution``, ``device``, ``seed``, ``warp_source``
    (flow only: also move the source mesh's own vertices). Inputs ``vertices_0``/``faces_0`` (source, t = 0),
    ``vertices_1``/``faces_1`` (target, t = 1), optional ``landmarks_source``/``landmarks_target`` (k, 3) point
    pairs (flow only). Progress stages ``fit`` (both fits, step out of twice the fit steps), ``morph``, ``frames``.
    Outputs per frame i ``vertices_<i>``, ``faces_<i>`` and ``times``; with ``warp_source`` also
    ``source_positions`` (frames, n, 3) float32, the source's vertices at each time (same topology: shape keys).
    File ``morph.pt``. Summary: ``method``, ``fit_seconds``, ``train_seconds``, ``device``.
- ``{"type": "cancel", "job": ID}``: stop that job (running or queued) as soon as possible.
- End of input: the worker cancels what it is doing and exits.
"""

from __future__ import annotations

import json
import math

PROTOCOL_VERSION = 1
"""Bumped on any change a peer of the previous version would misread."""

HEARTBEAT_INTERVAL_S = 1.0
JOB_KINDS = ("fit", "extract", "curvature", "evolve", "morph")
STAGES = ("fit", "extract", "curvature", "evolve", "morph", "frames")
MORPH_METHODS = ("levelset", "flow")
INPUTS_FILENAME = "inputs.npz"
OUTPUTS_FILENAME = "outputs.npz"
MODEL_FILENAME = "model.pt"
EVOLUTION_MODEL_FILENAME = "evolution.pt"
MORPH_MODEL_FILENAME = "morph.pt"
CURVATURE_FIELDS = ("mean", "gaussian", "k1", "k2")
COLORMAPS = ("auto", "diverging", "sequential")


class ProtocolError(ValueError):
    """A line that is not a valid message of this protocol."""


def encode(message: dict) -> str:
    """One message as a line of JSON (with the newline); non-finite floats become null."""
    return json.dumps(_finite(message), allow_nan=False, separators=(",", ":")) + "\n"


def decode(line: str) -> dict:
    """The message on a line; raises `ProtocolError` when it is not a JSON object with a string ``type``."""
    try:
        message = json.loads(line)
    except json.JSONDecodeError as error:
        raise ProtocolError(f"not JSON: {line[:200]!r} ({error})") from error
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError(f"a message must be a JSON object with a string 'type', got {line[:200]!r}")
    return message


def hello(engine: str, python: str, numpy: str, torch: str, cuda: str | None) -> dict:
    return {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "engine": engine,
        "python": python,
        "numpy": numpy,
        "torch": torch,
        "cuda": cuda,
    }


def alive() -> dict:
    return {"type": "alive"}


def progress(job: str, stage: str, step: int, total: int, loss: float | None = None, eta: float | None = None) -> dict:
    return {"type": "progress", "job": job, "stage": stage, "step": step, "total": total, "loss": loss, "eta": eta}


def result(job: str, files: dict[str, str], summary: dict) -> dict:
    return {"type": "result", "job": job, "outputs": OUTPUTS_FILENAME, "files": files, "summary": summary}


def error(job: str | None, message: str) -> dict:
    return {"type": "error", "job": job, "message": message}


def cancelled(job: str, message: str) -> dict:
    return {"type": "cancelled", "job": job, "message": message}


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
