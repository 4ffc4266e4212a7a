"""Command line: ``python -m engine fit MESH [MESH...] -o OUTDIR``, ``extract``, ``curvature``, ``evolve``, ``morph``;
``serve``, ``batch`` and ``image``.

Each job command runs the job spec of its kind (`engine.jobs`), as the worker does: the options are the spec's fields
(help texts, defaults and choices come from there), files become the job's input arrays, and the job's outputs are
written as PLY and JSON files. ``serve`` (the remote engine server, `engine.remote.server`) and ``batch`` (many jobs,
locally or on Ray, `engine.batch`) are programs of their own with their own options: `main` hands them the rest of
the command line. The names of commands, options and output files are a stable interface: scripts
depend on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import shutil
import sys
import tempfile
import time
import types
import typing
from pathlib import Path

from ..jobs import JOBS, JobContext, JobParamError, JobSpec, field_docs
from ..protocol import TRAINING_STAGES
from .commands import (
    COMMANDS,
    FRAME_FILENAME,
    MESH_FILENAME,
    METRICS_FILENAME,
    SOURCE_FRAME_FILENAME,
    TIMES_FILENAME,
    Command,
    Option,
)


def _choices(name: str) -> dict:
    """Choices that live in a registry rather than in the field's type."""
    if name == "preset":
        from ..fit import PRESETS

        return {"choices": sorted(PRESETS)}
    if name in ("quantity", "curvature"):
        from ..colormaps import QUANTITIES

        return {"choices": list(QUANTITIES)}
    return {}


def add_options(parser: argparse.ArgumentParser, kind: str, options: tuple[Option, ...]) -> None:
    """The spec's fields as options: type, default, choices and help from the spec."""
    spec = JOBS[kind]
    docs, hints = field_docs(spec), typing.get_type_hints(spec)
    defaults = {f.name: f.default for f in dataclasses.fields(spec)}
    for option in options:
        hint, default = hints[option.field], defaults[option.field]
        settings = {"dest": option.field, "default": default, "help": docs[option.field]}
        if hint is bool:
            settings["action"] = "store_true" if default is False else argparse.BooleanOptionalAction
        else:
            optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
            base = next(arg for arg in typing.get_args(hint) if arg is not type(None)) if optional else hint
            if typing.get_origin(base) is typing.Literal:
                settings["choices"] = list(typing.get_args(base))
            else:
                settings["type"] = typing.get_args(base)[0] if typing.get_origin(base) is tuple else base
            settings.update(_choices(option.field))
            if default is not None:
                settings["help"] += f" (default: {default})"
        settings.update(option.extra)
        parser.add_argument(*option.flags, **settings)


PROGRAMS = {
    "serve": ("engine.remote.server", "Serve engine jobs to Blender add-ons over WebSocket (remote GPU engine)"),
    "batch": ("engine.batch", "Run many fit, evolve or morph jobs, one after another or as Ray tasks"),
    "image": ("engine.images.cli", "Image networks: fit, render at any size or level, seamless tiles, image morphs"),
}
"""Commands that are programs of their own: module (with ``main(argv) -> int``) and help."""


class UsageError(ValueError):
    """A command line that argparse refuses (unknown option, bad value), raised by `job_parser(raising=True)` where
    the command line's own parser prints its usage and exits."""


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(message)


def job_parser(raising: bool = False) -> argparse.ArgumentParser:
    """The parser of ``python -m engine``: the programs (by name only) and every job command with its options.

    ``raising``: refuse a bad command line with `UsageError` rather than printing the usage and exiting (batch
    checks its job lists with it)."""
    parser_class = _RaisingParser if raising else argparse.ArgumentParser
    parser = parser_class(prog="python -m engine", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (_module, text) in PROGRAMS.items():
        subparsers.add_parser(name, help=f"{text} (python -m engine {name} --help)", add_help=False)
    for name, command in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=command.help, description=command.help)
        command.arguments(subparser)
        add_options(subparser, command.kind, command.options)
        subparser.set_defaults(command=command)
    return parser


def parse_job_command(argv: list[str], raising: bool = False) -> argparse.Namespace:
    """The arguments of one job command line (``fit MESH -o OUT ...``), as the command line reads them."""
    return job_parser(raising).parse_args(_negative_times_joined(argv))


@dataclasses.dataclass
class PreparedCommand:
    """A job command whose arguments are checked: the command, its arguments and the job spec they make."""

    command: Command
    args: argparse.Namespace
    spec: JobSpec


def prepare(args: argparse.Namespace) -> PreparedCommand:
    """The job spec of parsed arguments (reading at most small JSON files such as ``--fields``); raises
    `JobParamError` or ValueError naming what is wrong, before any work."""
    command = args.command
    params = command.derive(args)
    params.update({option.field: getattr(args, option.field) for option in command.options})
    return PreparedCommand(command, args, JOBS[command.kind].from_params(params))


def run_prepared(prepared: PreparedCommand, inputs: dict | None = None, report=None) -> str:
    """Run a prepared job and write its outputs at ``-o`` as the command line does (in a staging folder first,
    published whole); returns the summary line.

    - ``inputs``: the job's input arrays, if already read (else they are read from the files of the arguments);
    - ``report``: the progress callback (default: `ProgressPrinter`).
    """
    command, args = prepared.command, prepared.args
    staging = _staging_folder(args.output, command.writes_folder)
    try:
        inputs = command.read_inputs(args) if inputs is None else inputs
        context = JobContext(
            output_dir=staging,
            report=ProgressPrinter() if report is None else report,
            input_name=lambda name: Path(name).name,
        )
        summary = command.write(args, inputs, prepared.spec.run(inputs, context), staging)
        _publish(staging, args.output, command.writes_folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def error_line(error: Exception, command: Command) -> str:
    """The one line the command line prints (after ``error: ``) for a refused job: a bad option named by its flag,
    a file that cannot be read, a bad mesh or value."""
    if isinstance(error, JobParamError):
        flags = {option.field: option.flags[0] for option in command.options}
        return f"{flags[error.param]} {error.problem}" if error.param in flags else str(error)
    if isinstance(error, OSError):
        return f"{error.strerror}: {error.filename}" if error.filename and error.strerror else str(error)
    return str(error)


def main(argv: list[str] | None = None) -> int:
    from ..mesh_io import MeshError
    from ..training import Cancelled

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PROGRAMS:
        return importlib.import_module(PROGRAMS[argv[0]][0]).main(argv[1:])
    args = parse_job_command(argv)
    try:
        print(run_prepared(prepare(args)))
        return 0
    except (OSError, MeshError, ValueError, RuntimeError) as error:
        print(f"error: {error_line(error, args.command)}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("\ncancelled", file=sys.stderr)
        return 130


def _negative_times_joined(argv: list[str]) -> list[str]:
    """``--times -0.5,0`` as ``--times=-0.5,0``: argparse takes a value that starts with '-' and is not one number
    for an option."""
    joined, index = [], 0
    while index < len(argv):
        if argv[index] == "--times" and index + 1 < len(argv) and argv[index + 1].startswith("-"):
            joined.append(f"--times={argv[index + 1]}")
            index += 2
        else:
            joined.append(argv[index])
            index += 1
    return joined


def _staging_folder(destination: Path, is_folder: bool) -> Path:
    """A fresh folder beside ``destination`` where the job writes; checked before any work, so that an unusable
    ``-o`` fails at once and a failed or interrupted run leaves what was there untouched."""
    if is_folder and destination.exists() and not destination.is_dir():
        raise ValueError(f"-o {destination} is a file; give a folder for the outputs")
    if not is_folder and destination.is_dir():
        raise ValueError(f"-o {destination} is a folder; give the path of the file to write")
    parent = destination.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=parent))


def _publish(staging: Path, destination: Path, is_folder: bool) -> None:
    """Move the finished outputs into place: a new folder as a whole, else file by file with the JSON report last
    (it lists the files of this run); a single-file output by one rename. Each gets the permissions a file or folder
    made by the user gets (the umask's): the staging folder and files written through temporary files are private."""
    umask = _umask()
    for path in staging.iterdir():
        path.chmod(0o666 & ~umask)
    if not is_folder:
        os.replace(staging / destination.name, destination)
        return
    if not destination.exists():
        staging.chmod(0o777 & ~umask)
        os.replace(staging, destination)
        return
    for path in sorted(staging.iterdir(), key=lambda path: (path.suffix == ".json", path.name)):
        os.replace(path, destination / path.name)


def _umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


class ProgressPrinter:
    """Progress on stderr: a bar for training stages, a line for each frame and for the other stages."""

    WIDTH = 30
    WORDS = {"extract": "extracting the surface ...", "measure": "measuring against the input ...",
             "curvature": "evaluating curvature ..."}  # fmt: skip

    def __init__(self):
        self.stage_started = time.perf_counter()

    def __call__(self, stage: str, step: int, total: int, loss: float | None, eta: float | None) -> None:
        if step == 0:
            self.stage_started = time.perf_counter()
            if stage in self.WORDS:
                print(self.WORDS[stage], file=sys.stderr, flush=True)
            return
        if stage == "frames":
            print(f"frame {step}/{total}", file=sys.stderr, flush=True)
        elif stage in TRAINING_STAGES:
            filled = int(self.WIDTH * step / total)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            elapsed = time.perf_counter() - self.stage_started
            loss_text = f" loss {loss:.4g}" if loss is not None else ""
            eta = elapsed / step * (total - step) if eta is None else eta
            line = f"\rtraining [{bar}] {step}/{total}{loss_text} elapsed {elapsed:.0f}s eta {eta:.0f}s"
            print(line, end="\n" if step == total else "", file=sys.stderr, flush=True)




__all__ = ["COMMANDS", "FRAME_FILENAME", "MESH_FILENAME", "METRICS_FILENAME", "SOURCE_FRAME_FILENAME", "TIMES_FILENAME",
           "PreparedCommand", "UsageError", "error_line", "job_parser", "main", "parse_job_command", "prepare",
           "run_prepared"]  # fmt: skip
