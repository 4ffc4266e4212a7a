"""What every job kind shares: the spec base class with its one typed parameter checker, the context a front end
hands a job (progress, cancel, where files go, how inputs are named), the job's output, and the helpers several
kinds use (input arrays, meshes, surface extraction, frames).

Only the standard library and numpy are imported here: the worker reads a job's parameters before torch loads.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import math
import textwrap
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Literal

import numpy as np


class JobParamError(ValueError):
    """A job parameter that is missing, unknown, of the wrong type or out of range; the message names it.

    ``param`` is the parameter's name (None for unknown ones) and ``problem`` the rest of the message, so that a
    front end can name the parameter its own way (the CLI says ``--steps must be at least 1, got 0``)."""

    def __init__(self, kind: str, param: str | None, problem: str):
        self.kind, self.param, self.problem = kind, param, problem
        super().__init__(f"{kind} job: " + (problem if param is None else f"parameter {param!r} {problem}"))


class _Mismatch(ValueError):
    """A value that does not fit its type: the problem, without the parameter's name."""


@dataclass(frozen=True)
class JobSpec:
    """The parameters of one job kind (the dataclass fields, each with a docstring) and how it runs.

    - ``kind``: the protocol's job kind; ``stages``: the progress stages it reports, in order.
    - Both the command line and the worker build a spec with `from_params` and call `run`.
    """

    kind: ClassVar[str]
    stages: ClassVar[tuple[str, ...]]

    @classmethod
    def from_params(cls, params: dict) -> "JobSpec":
        """The spec of a params dict (JSON types: lists for tuples); missing parameters take their defaults.

        Raises `JobParamError` naming the first unknown, missing, mistyped or out-of-range parameter.
        """
        if not isinstance(params, dict):
            raise JobParamError(cls.kind, None, f"params must be an object, got {params!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - set(fields))
        if unknown:
            raise JobParamError(
                cls.kind, None, f"unknown parameter(s) {', '.join(map(repr, unknown))}; it takes {', '.join(fields)}"
            )
        hints = typing.get_type_hints(cls)
        values = {}
        for name, spec_field in fields.items():
            if name in params:
                try:
                    values[name] = checked_value(params[name], hints[name])
                except _Mismatch as mismatch:
                    raise JobParamError(cls.kind, name, str(mismatch)) from None
            elif spec_field.default is dataclasses.MISSING:
                raise JobParamError(cls.kind, name, f"is missing: {field_docs(cls).get(name, '')}")
        return cls(**values)

    def to_params(self) -> dict:
        """The params dict of this spec (JSON types), as `from_params` reads it."""
        return {name: _to_json(value) for name, value in dataclasses.asdict(self).items()}

    def __post_init__(self):
        check_common(self)
        self.check()

    def check(self) -> None:
        """Checks across fields and of ranges (run on construction); raises `JobParamError`."""

    def run(self, inputs: dict[str, np.ndarray], context: "JobContext") -> "JobOutput":
        raise NotImplementedError

    def fail(self, name: str, problem: str) -> None:
        raise JobParamError(self.kind, name, problem)


@dataclass
class JobContext:
    """What a front end gives a running job."""

    output_dir: Path
    """Where the job writes its files (the model); the front end moves or keeps them."""
    report: Callable[[str, int, int, float | None, float | None], None] = lambda *progress: None
    """report(stage, step, total, loss, eta_s): at least once a second while training, at each stage's ends."""
    should_cancel: Callable[[], bool] = lambda: False
    """Asked between steps and stages; True stops the job with `engine.training.Cancelled`."""
    input_name: Callable[[str], str] = lambda name: f"'{name}'"
    """How messages call an input mesh given its name (the worker: "Object 'Cube'"; the CLI: the file's name)."""
    show_preview: Callable[[np.ndarray, np.ndarray], None] | None = None
    """show_preview(vertices, faces): a surface while it trains (float64 vertices in the input's coordinates, int32
    faces), for a front end that shows one (the worker writes the protocol's preview file); None: no previews (the
    command line), and a job makes none."""

    def raise_if_cancelled(self, where: str) -> None:
        from ..training import Cancelled

        if self.should_cancel():
            raise Cancelled(f"cancelled {where}")

    def training_progress(self, stage: str) -> Callable:
        """An ``on_progress`` for a training loop that reports its `engine.training.Progress` as ``stage``."""
        return lambda progress: self.report(stage, progress.step, progress.total, progress.loss, progress.eta_s)


@dataclass
class JobOutput:
    """What a job made: arrays (the protocol's ``outputs.npz``), files in the context's output folder and a JSON
    summary (timings, settings used, measurements)."""

    arrays: dict[str, np.ndarray]
    files: dict[str, str] = field(default_factory=dict)
    """Role ("model") to file name inside the output folder."""
    summary: dict = field(default_factory=dict)


def checked_value(value, hint, where: str = ""):
    """``value`` checked against the type ``hint`` (bool, int, float, str, Literal, X | None, tuple[X, ...],
    tuple[X, Y], dict) and converted to it (JSON lists become tuples, ints become floats); raises `_Mismatch`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return checked_value(value, inner, where)
    if origin is Literal:
        if value not in args:
            raise _Mismatch(f"{where}must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch(f"{where}must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(checked_value(item, args[0], f"{where}[{i}] ") for i, item in enumerate(value))
        if len(value) != len(args):
            raise _Mismatch(f"{where}must be a list of {len(args)} values, got {value!r}")
        return tuple(checked_value(item, arg, f"{where}[{i}] ") for i, (item, arg) in enumerate(zip(value, args)))
    expected = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string", dict: "an object"}
    fits = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        str: lambda v: isinstance(v, str),
        dict: lambda v: isinstance(v, dict),
    }
    kind = origin or hint
    if kind not in fits:
        raise TypeError(f"no checker for the parameter type {hint!r}")
    if not fits[kind](value):
        raise _Mismatch(f"{where}must be {expected[kind]}, got {value!r}")
    return float(value) if kind is float else value


@functools.cache
def field_docs(spec: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (the CLI's help texts), read from its source."""
    docs = {}
    for klass in reversed(spec.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is JobSpec:
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for statement, following in zip(body, body[1:]):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def _to_json(value):
    if isinstance(value, tuple):
        return [_to_json(item) for item in value]
    return value


def input_array(inputs: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in inputs:
        raise ValueError(f"the job's inputs have no array {name!r} (they have {', '.join(inputs) or 'none'})")
    return inputs[name]


def input_meshes(inputs: dict[str, np.ndarray], names: tuple[str, ...], context: JobContext) -> list:
    """The checked meshes ``vertices_<i>`` / ``faces_<i>``, one per name."""
    from ..mesh_io import check_mesh

    arrays = [(input_array(inputs, f"vertices_{i}"), input_array(inputs, f"faces_{i}")) for i in range(len(names))]
    return [check_mesh(*mesh, name=context.input_name(name)) for mesh, name in zip(arrays, names)]


def input_shapes(inputs: dict[str, np.ndarray], names: tuple[str, ...], context: JobContext) -> list:
    """One checked shape per name: the mesh ``vertices_<i>`` / ``faces_<i>`` or the point cloud ``points_<i>``
    (with ``normals_<i>`` where given; `engine.point_clouds.PointCloud`, normals None when not given)."""
    from ..mesh_io import check_mesh
    from ..point_clouds import check_point_cloud

    shapes = []
    for i, name in enumerate(names):
        shown = context.input_name(name)
        if f"points_{i}" in inputs:
            if f"vertices_{i}" in inputs or f"faces_{i}" in inputs:
                raise ValueError(f"the job's inputs give {shown} both as points_{i} and as a mesh: send one of them")
            shapes.append(check_point_cloud(inputs[f"points_{i}"], inputs.get(f"normals_{i}"), name=shown))
        elif f"normals_{i}" in inputs:
            raise ValueError(f"the job's inputs have normals_{i} without points_{i} for {shown}")
        else:
            arrays = input_array(inputs, f"vertices_{i}"), input_array(inputs, f"faces_{i}")
            shapes.append(check_mesh(*arrays, name=shown))
    return shapes


def extract_surface(model, resolution: int, device: str, context: JobContext) -> tuple[np.ndarray, np.ndarray, float]:
    """The model's zero level set (input coordinates, float64 vertices and int32 faces) and the seconds it took,
    reported as the ``extract`` stage."""
    from ..extraction import extract_mesh
    from ..training import pick_device

    context.report("extract", 0, 1, None, None)
    started = time.perf_counter()
    model.network.to(pick_device(device))
    vertices, faces = extract_mesh(model, resolution)
    model.network.cpu()
    context.report("extract", 1, 1, None, None)
    return vertices.astype(np.float64), faces.astype(np.int32), time.perf_counter() - started


def frame_arrays(model, times: tuple[float, ...], resolution: int, context: JobContext) -> tuple[dict, list, list]:
    """The meshes of a time-dependent model at ``times`` as ``vertices_<i>`` (float64), ``faces_<i>`` (int32) and
    ``times``, reported as the ``frames`` stage; also the frames themselves and the seconds each took."""
    from ..fields import extract_frames

    arrays = {"times": np.asarray(times, dtype=np.float64)}
    seconds = []
    started = last = time.perf_counter()

    def keep(index: int, total: int, frame) -> None:
        nonlocal last
        arrays[f"vertices_{index}"] = frame.vertices.astype(np.float64)
        arrays[f"faces_{index}"] = frame.faces.astype(np.int32)
        now = time.perf_counter()
        seconds.append(round(now - last, 3))
        last = now
        done = index + 1
        context.report("frames", done, total, None, (now - started) / done * (total - done))

    context.report("frames", 0, len(times), None, None)
    frames = extract_frames(model, list(times), resolution, on_frame=keep, should_cancel=context.should_cancel)
    return arrays, frames, seconds


Device = Literal["auto", "cpu", "cuda"]
Colormap = Literal["auto", "diverging", "sequential"]


MIN_RESOLUTION = 8
"""The smallest marching-cubes grid (`engine.extraction.extract_mesh` refuses smaller)."""
MAX_RESOLUTION = 1024
"""Marching-cubes grid points per axis at most: the grid is one float32 array, 4.3 GB at 1024^3."""
MAX_STEPS = 1_000_000
"""Training steps at most: a million steps of the fast preset take about two days on a GPU."""
MAX_FRAMES = 1000
"""Frames (or evolution times) at most: every frame's mesh comes back in one result."""
MAX_SEED = 2**32 - 1
"""Seeds are what numpy's and torch's generators both take: 0 to 2^32 - 1."""


def check_bounds(spec: JobSpec, name: str, low: int, high: int | None = None, why: str = "") -> None:
    """``spec.<name>`` (unless None) in [low, high]; the message gives the limit and ``why``."""
    value = getattr(spec, name)
    if value is not None and value < low:
        spec.fail(name, f"must be at least {low}, got {value}")
    if value is not None and high is not None and value > high:
        spec.fail(name, f"must be at most {high}, got {value}" + (f" ({why})" if why else ""))


def check_common(spec: JobSpec) -> None:
    """The bounds of the fields many kinds share (resolution, steps, seed, names), where the spec has them."""
    fields = {f.name for f in dataclasses.fields(spec)}
    if "resolution" in fields:
        check_bounds(spec, "resolution", MIN_RESOLUTION, MAX_RESOLUTION, "a 1024^3 grid of floats takes 4.3 GB")
    for name in ("steps", "fit_steps"):
        if name in fields:
            check_bounds(spec, name, 1, MAX_STEPS, "a million steps of the fast preset take days")
    if "seed" in fields:
        check_bounds(spec, "seed", 0, MAX_SEED, "numpy's and torch's generators take 0 to 2^32 - 1")
    if "names" in fields and not all(name.strip() for name in spec.names):
        spec.fail("names", f"must not be empty, got {list(spec.names)}")
