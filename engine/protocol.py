"""The protocol between the Blender add-on and the engine worker (``python -m engine.worker``), version 2.

Transport: the add-on starts the worker as a child process; each side writes one JSON object per line (UTF-8) —
the add-on to the worker's stdin, the worker to its stdout. The worker's stderr is a free-form log. Arrays never
cross the pipe: they sit in ``.npz`` files in a job directory that the add-on creates and deletes, read with
``np.load(allow_pickle=False)``.

Worker to add-on:

- ``{"type": "hello", "protocol": 2, "engine": "0.1.0", "python": "3.11.9", "numpy": "1.26.4",
  "torch": "2.13.0+cpu", "cuda": "NVIDIA H100 ..." | null}``: sent once, when the worker is ready for jobs.
  ``cuda`` names the GPU PyTorch sees (null: none). The add-on refuses a worker with another protocol number.
- ``{"type": "alive"}``: every `HEARTBEAT_INTERVAL_S` seconds from the moment the worker starts, whatever it is
  doing, so the add-on can tell a long job from a hung process.
- ``{"type": "progress", "job": ID, "stage": STAGE, "step": 12, "total": 300, "loss": 0.31 | null,
  "eta": 14.2 | null}``: at least once a second while a stage in `TRAINING_STAGES` trains; at the start and end of
  the other stages. ``stage`` is one of `STAGES` (each kind's, in order: ``engine.jobs.JOBS[kind].stages``);
  ``eta`` is the seconds left in the stage. Optional ``"preview": N`` (1, 2, ...): present from the first preview
  on, the number of the latest preview the job has written to ``dir/preview.npz`` (`PREVIEW_FILENAME`, replaced
  whole: ``vertices`` (n, 3) float64 and ``faces`` (m, 3) int32 in the input's coordinates, as the final surface,
  at a low resolution). Every later progress message of the job repeats the number, so a reader that sees only
  some messages still sees each change; a new number means a new file. Only a fit with a ``preview_interval``
  writes previews, and none before its surface has a zero level set.
- ``{"type": "result", "job": ID, "outputs": "outputs.npz", "files": {"model": "model.pt"}, "summary": {...}}``:
  the job succeeded; ``outputs`` and each of ``files`` are plain file names of regular files (no folders, no links)
  in the job directory, and the add-on refuses anything else.
- ``{"type": "error", "job": ID | null, "message": "..."}``: the job (or, with a null job, the worker itself)
  failed. The message is meant for the user as it is: what went wrong and what to do
  ("Object 'Cube' has no faces ..."). A worker that cannot start sends this and exits.
- ``{"type": "cancelled", "job": ID, "message": "..."}``: the job stopped on request; nothing was written.

Add-on to worker:

- ``{"type": "job", "protocol": 2, "job": ID, "kind": KIND, "dir": "/abs/job/dir", "params": {...}}``: jobs run
  one at a time in the order received. ``kind`` is one of `JOB_KINDS`. Its params are the fields of its spec in
  `engine.jobs` (``JOBS[kind]``: each field's type, default and docstring; a missing param takes its default, an
  unknown or mistyped one fails the job with a message naming it). Its input arrays (``dir/inputs.npz``, absent
  when a kind takes none), output arrays (``dir/outputs.npz``), files and summary are described in the spec's
  docstring: ``fit`` (meshes or point clouds in; surface, model.pt), ``extract`` (a model's surface), ``curvature``
  (points or the model's surface in; curvature fields and colours), ``evolve`` (frames, evolution.pt), ``morph``
  (two meshes in; frames, morph.pt), ``bake`` (a UV-mapped mesh in; float and 8-bit curvature images),
  ``image_fit`` (an image in; its render, model.pt), ``image_render`` (an image model's render at any size and level),
  ``image_tile`` (an image in; a seamless tile, model.pt), ``image_morph`` (two images and landmark pairs in;
  frames, morph.pt), ``render`` (a model's preview render from the camera in its params, no inputs; rgba, depth and
  normal passes, the evaluations per level in the summary), ``ridges`` (a mesh or the model's own surface; ridge and
  valley polylines as points and offsets). Images are float32 arrays (height, width, channels),
  the top row first, encoded as the job's ``encoding`` says on the way in and in linear light on the way out
  (`engine.jobs.images`).
- ``{"type": "cancel", "job": ID}``: stop that job (running or queued) as soon as possible.
- End of input: the worker cancels what it is doing and exits.

Coordinates (vertices, positions) come back as float64, as the engine computed them, so that a mesh far from the
origin keeps its precision until the add-on moves it into its object's frame; colours and curvature fields are
float32.

Over WebSocket (`engine.remote`): ``python -m engine serve`` runs workers on a server and relays this protocol to
clients; ``python -m engine.remote.relay`` speaks it on stdin/stdout to the add-on exactly as a worker does, so the
add-on cannot tell the difference but for the hello's ``"remote": URL``. Text messages carry these JSON messages;
binary messages carry the files of the job folder (`engine.remote.frames`: a 4-byte header length, a JSON header
naming the job, the role and the size, then the bytes). The client uploads a job's ``inputs.npz`` and the model file
of each of its file params (`MODEL_FILE_PARAMS`) before the job message; the server sends a result's files and each
new preview before the message that names them. The server opens no path a client names: it runs each job in a
folder of its own, with the uploaded copies. The server's hello adds ``"server": true``, ``"workers": N`` and its
size limits; its ``alive`` heartbeats reach the add-on through the relay.

The ``preview`` field needs no new version: it is optional, and an add-on that ignores it (or the file) works as
before.

Version 2 (from 1): jobs take the params of the `engine.jobs` specs; missing params take their defaults (a morph
without ``align`` is aligned by bounding boxes, as on the command line), unknown ones are refused. New: fit's
``curvature_sampling`` and ``metrics`` (stage ``measure``), curvature's ``resolution`` (no points: the model's own
surface), evolve's ``colormap`` and per-frame curvature fields (stage ``curvature``), morph's ``align``.
"""

from __future__ import annotations

import json
import math

PROTOCOL_VERSION = 2
"""Bumped on any change a peer of the previous version would misread."""

HEARTBEAT_INTERVAL_S = 1.0
JOB_KINDS = (
    "fit", "extract", "curvature", "evolve", "morph", "bake", "image_fit", "image_render", "image_tile", "image_morph",
    "render", "ridges",
)  # fmt: skip
STAGES = ("fit", "extract", "measure", "curvature", "evolve", "morph", "frames", "render", "track")
TRAINING_STAGES = ("fit", "evolve", "morph")
"""Stages whose steps are optimizer steps (with a loss), prepared by sampling before step 1."""
MORPH_METHODS = ("levelset", "flow")
"""Tested equal to `engine.morph.METHODS`, as `JOB_KINDS` is to `engine.jobs.JOBS`: this module imports nothing heavy."""
INPUTS_FILENAME = "inputs.npz"
OUTPUTS_FILENAME = "outputs.npz"
MODEL_FILENAME = "model.pt"
EVOLUTION_MODEL_FILENAME = "evolution.pt"
MORPH_MODEL_FILENAME = "morph.pt"
PREVIEW_FILENAME = "preview.npz"
"""The latest preview surface of a training job (``vertices``, ``faces``), replaced whole each time."""
CURVATURE_FIELDS = ("mean", "gaussian", "k1", "k2")
"""Per-point curvature arrays (input units; ``mean`` is H = kappa / 2); `engine.fields` takes them from here."""
MODEL_FILE_PARAMS = {
    "extract": ("model",), "curvature": ("model",), "evolve": ("model",), "bake": ("model",),
    "image_render": ("model",), "image_morph": ("model",), "render": ("model",), "ridges": ("model",),
}  # fmt: skip
"""The params of each kind that name a file the job reads (a model file written by a fit): a remote engine gets a copy
of each uploaded with the job (tested equal to the spec fields documented as "Path of ...")."""
REMOTE_URL_VARIABLE = "NEURAL_SDF_REMOTE_URL"
"""The environment variable that gives the relay (`engine.remote.relay`) the server's ws:// or wss:// address."""
REMOTE_TOKEN_VARIABLE = "NEURAL_SDF_REMOTE_TOKEN"
"""The environment variable that gives the relay the server's token (empty or absent: none)."""
REMOTE_CAFILE_VARIABLE = "NEURAL_SDF_REMOTE_CAFILE"
"""Optional: a PEM file of the certificate authority that signed a wss:// server's certificate (a private CA)."""
COLORMAPS = ("auto", "diverging", "sequential")
"""Colour map choices (tested equal to `engine.colormaps.COLORMAPS`)."""


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


def progress(
    job: str,
    stage: str,
    step: int,
    total: int,
    loss: float | None = None,
    eta: float | None = None,
    preview: int | None = None,
) -> dict:
    message = {"type": "progress", "job": job, "stage": stage, "step": step, "total": total, "loss": loss, "eta": eta}
    if preview is not None:
        message["preview"] = preview
    return message


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
