"""The jobs of a batch, built and checked before any work: one command line of ``python -m engine`` each (its
arguments exactly as the command line reads them), its folder under the output folder, and what a rerun finds
there.

- ``batch fit``: one fit per mesh file (a folder stands for the mesh files in it), every job with the same options.
- ``batch evolve`` and ``batch morph``: a JSON list of entries, each an object with the command's positional
  arguments (``model``; ``source`` and ``target``) and options by their long names (``"fit-steps": 200`` or
  ``"fit_steps": 200``, ``"warp-source": true``, ``"times": [0, 0.5]`` or ``"0,0.5"``), plus an optional ``name``
  for its folder. Relative paths are relative to the JSON file's folder. Errors name the entry (counted from 1) and
  the key.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from .. import protocol
from ..cli import (
    COMMANDS,
    METRICS_FILENAME,
    TIMES_FILENAME,
    PreparedCommand,
    UsageError,
    add_options,
    error_line,
    parse_job_command,
    prepare,
)
from ..cli.commands import _read_json
from ..jobs import JobParamError
from ..mesh_io import SUPPORTED_SUFFIXES

SUMMARY_FILENAME = "summary.json"
"""The batch's report in its output folder: one entry per job (`engine.batch.run`)."""
REPORT_FILENAMES = {"fit": METRICS_FILENAME, "evolve": TIMES_FILENAME, "morph": TIMES_FILENAME}
"""The JSON report each kind's command writes last into its folder: a folder with it is a finished job."""
ENTRY_POSITIONALS = {"evolve": ("model",), "morph": ("source", "target")}
"""The positional arguments of the commands a JSON entry describes, by their keys."""
LIST_OPTIONS = ("times",)
"""Options whose command-line value is comma-separated: an entry may give them as a JSON list."""


class BatchError(ValueError):
    """Arguments or a job list that cannot run (a missing file, a bad entry, an unusable output folder): the batch
    exits with code 2 before any work; the message names the file, the entry and the key."""


@dataclass
class BatchJob:
    """One job of a batch: its command checked and ready, where its outputs go and what its summary entry shows."""

    name: str
    """Its folder under the output folder."""
    input: str | list[str]
    """What the summary shows as its input: the mesh or model file, or the source and target meshes."""
    prepared: PreparedCommand
    """The command, its arguments (``-o`` is the job's folder) and its spec."""

    @property
    def kind(self) -> str:
        return self.prepared.command.kind

    @property
    def folder(self) -> Path:
        return self.prepared.args.output

    def finished(self) -> dict | None:
        """The report of a finished earlier run of this job, else None. The command line publishes a new folder
        whole, its report file last, so a folder with a readable report holds every output of the job."""
        path = self.folder / REPORT_FILENAMES[self.kind]
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return report if isinstance(report, dict) else None

    def settings(self) -> dict:
        """The spec's params but the input paths (a rerun from another folder names them otherwise): a rerun that
        finds this job finished with other settings refuses to mix its results with the new ones."""
        params = self.prepared.spec.to_params()
        return {name: value for name, value in params.items() if name not in ("names", *_file_params(self.kind))}


def _file_params(kind: str) -> tuple[str, ...]:
    return protocol.MODEL_FILE_PARAMS.get(kind, ())


def mesh_files(paths: list[Path]) -> list[Path]:
    """The mesh files of ``paths``: a file as it is, a folder as its mesh files (by suffix, sorted; hidden files
    skipped); each file once, in order. Raises `BatchError` for a missing path, a folder without meshes or a file
    the engine does not read."""
    found, seen = [], set()
    for path in paths:
        if path.is_dir():
            inside = sorted(
                child
                for child in path.iterdir()
                if child.is_file() and child.suffix.lower() in SUPPORTED_SUFFIXES and not child.name.startswith(".")
            )
            if not inside:
                raise BatchError(f"{path} holds no mesh files ({', '.join(SUPPORTED_SUFFIXES)})")
        elif path.is_file():
            if path.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise BatchError(f"{path}: unsupported format {path.suffix!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}")
            inside = [path]
        else:
            raise BatchError(f"{path} does not exist")
        for mesh in inside:
            if mesh.resolve() not in seen:
                seen.add(mesh.resolve())
                found.append(mesh)
    return found


def fit_jobs(args: argparse.Namespace, output: Path) -> list[BatchJob]:
    """One fit per mesh file of ``args.meshes``, each with the fit options of ``args``, into ``output/<stem>``."""
    command = COMMANDS["fit"]
    meshes = mesh_files(args.meshes)
    names = unique_names([None] * len(meshes), [mesh.stem for mesh in meshes])
    jobs = []
    for mesh, name in zip(meshes, names):
        options = {option.field: getattr(args, option.field) for option in command.options}
        job_args = argparse.Namespace(meshes=[mesh], output=output / name, command=command, **options)
        try:
            prepared = prepare(job_args)
        except ValueError as error:  # the options are the same for every mesh: the first one tells
            raise BatchError(error_line(error, command)) from None
        jobs.append(BatchJob(name, str(mesh), prepared))
    return jobs


def entry_jobs(kind: str, path: Path, output: Path) -> list[BatchJob]:
    """The jobs of a JSON list of ``kind`` entries (the module's docstring), each checked as its command line."""
    if not path.exists():
        raise BatchError(f"jobs file {path} does not exist")
    try:
        entries = _read_json(path, f"{kind} jobs")
    except (OSError, ValueError) as error:
        raise BatchError(error_line(error, COMMANDS[kind])) from None
    if not isinstance(entries, list) or not entries:
        raise BatchError(f"{path} must hold a JSON list of {kind} job objects, got {_json_kind(entries)}")
    parser = _command_parser(kind)
    positionals = ENTRY_POSITIONALS[kind]
    argvs, given, inputs = [], [], []
    for number, entry in enumerate(entries, start=1):
        where = f"{path}, entry {number}"
        if not isinstance(entry, dict):
            raise BatchError(f"{where}: must be an object like {{{', '.join(f'{name!r}: ...' for name in positionals)}}}")
        argvs.append(_entry_argv(kind, entry, parser, path.parent, where))
        given.append(_entry_name(entry, where))
        files = argvs[-1][-len(positionals):]
        inputs.append(files[0] if kind == "evolve" else files)
    names = unique_names(given, [_default_name(kind, files) for files in inputs], path)
    jobs = []
    for number, (argv, name, shown, entry) in enumerate(zip(argvs, names, inputs, entries), start=1):
        where = f"{path}, entry {number}"
        prepared = _prepared_entry(kind, argv, output / name, entry, where)
        for argument in positionals:
            file = getattr(prepared.args, argument)
            key = f"{where}, {argument!r}"
            if not file.is_file():
                raise BatchError(f"{key}: {file} {'is a folder, not a file' if file.is_dir() else 'does not exist'}")
            if kind == "morph" and file.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise BatchError(f"{key}: unsupported format {file.suffix!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}")
        jobs.append(BatchJob(name, shown, prepared))
    return jobs


def _json_kind(value) -> str:
    if isinstance(value, list):
        return "an empty list"
    return {dict: "an object", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _command_parser(kind: str) -> argparse.ArgumentParser:
    """A parser with the command's arguments and options, to read the kind of each (positional, flag, path)."""
    parser = argparse.ArgumentParser(add_help=False)
    COMMANDS[kind].arguments(parser)
    add_options(parser, kind, COMMANDS[kind].options)
    return parser


def _entry_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """A command's arguments by an entry's keys: positionals by name, options by their long name without ``--``
    (``-o`` is the batch's)."""
    actions = {}
    for action in parser._actions:
        if not action.option_strings:
            actions[action.dest] = action
        elif "--output" not in action.option_strings:
            actions[next(flag for flag in action.option_strings if flag.startswith("--"))[2:]] = action
    return actions


def _entry_key(entry: dict, option: str) -> str:
    """The entry's own spelling of an option's key (``fit_steps`` or ``fit-steps``)."""
    return next((key for key in entry if key.replace("_", "-") == option), option)


def _entry_argv(kind: str, entry: dict, parser: argparse.ArgumentParser, base: Path, where: str) -> list[str]:
    """The command line of an entry: ``KIND --option=value ... -- POSITIONAL...`` (``-o`` comes later)."""
    actions = _entry_actions(parser)
    options = {key: key.replace("_", "-") for key in entry if key != "name"}
    unknown = [key for key, option in options.items() if option not in actions]
    if unknown:
        raise BatchError(f"{where}: unknown key {unknown[0]!r}; an entry of batch {kind} takes "
                         f"{', '.join(['name', *actions])}")  # fmt: skip
    missing = [name for name, action in actions.items() if action.required and name not in options.values()]
    if missing:
        raise BatchError(f"{where}: {missing[0]!r} is missing ({actions[missing[0]].help})")
    flags, positionals = [], {}
    for key, option in options.items():
        action, value = actions[option], entry[key]
        if action.nargs == 0:  # store_true, or --x / --no-x
            if not isinstance(value, bool):
                raise BatchError(f"{where}, {key!r}: must be true or false, got {json.dumps(value)}")
            if value or action.default is not False:
                flags.append(f"--{option}" if value else f"--no-{option}")
            continue
        if isinstance(value, list) and option in LIST_OPTIONS:
            if not all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in value):
                raise BatchError(f"{where}, {key!r}: must be a list of numbers, got {json.dumps(value)}")
            value = ",".join(map(repr, value))
        elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise BatchError(f"{where}, {key!r}: must be a string or a number, got {json.dumps(value)}")
        text = str(value)
        if action.type is Path and not Path(text).is_absolute():
            text = str(base / text)
        if action.option_strings:
            flags.append(f"--{option}={text}")
        else:
            positionals[option] = text
    return [kind, *flags, "--", *(positionals[name] for name in ENTRY_POSITIONALS[kind])]


def _prepared_entry(kind: str, argv: list[str], folder: Path, entry: dict, where: str) -> PreparedCommand:
    """An entry's command line parsed and its spec made, as the command line does; errors name the entry and the
    key."""
    command = COMMANDS[kind]
    try:
        return prepare(parse_job_command([argv[0], "-o", str(folder), *argv[1:]], raising=True))
    except UsageError as error:
        flag, _, problem = str(error).partition(": ")
        if flag.startswith("argument --"):  # "argument --steps: invalid int value: 'x'"
            key = _entry_key(entry, flag.split("/")[-1].removeprefix("argument --"))
            raise BatchError(f"{where}, {key!r}: {problem}") from None
        raise BatchError(f"{where}: {error}") from None
    except JobParamError as error:
        options = {option.field: option.flags[0][2:] for option in command.options}
        if error.param in options:
            raise BatchError(f"{where}, {_entry_key(entry, options[error.param])!r}: {error.problem}") from None
        raise BatchError(f"{where}: {error_line(error, command)}") from None
    except (OSError, ValueError) as error:
        raise BatchError(f"{where}: {error_line(error, command)}") from None


def _entry_name(entry: dict, where: str) -> str | None:
    """An entry's own folder name, checked: one plain path component."""
    if "name" not in entry:
        return None
    name = entry["name"]
    if not isinstance(name, str) or not name.strip():
        raise BatchError(f"{where}, 'name': must be a folder name, got {json.dumps(name)}")
    if "/" in name or "\\" in name or name.startswith(".") or name == SUMMARY_FILENAME:
        raise BatchError(
            f"{where}, 'name': {name!r} must be a plain folder name (no '/' or '\\', not starting with '.', not "
            f"{SUMMARY_FILENAME})"
        )
    return name


def _default_name(kind: str, inputs: str | list[str]) -> str:
    """The folder of an entry without a name: evolve: the model file's stem (its folder's name for the model.pt of a
    fit); morph: ``SOURCE-to-TARGET`` (the stems)."""
    if kind == "evolve":
        model = Path(inputs)
        if model.name == protocol.MODEL_FILENAME:
            return model.resolve().parent.name or model.stem
        return model.stem
    return f"{Path(inputs[0]).stem}-to-{Path(inputs[1]).stem}"


def unique_names(given: list[str | None], defaults: list[str], jobs_file: Path | None = None) -> list[str]:
    """One folder name per job: its given name (each must differ from the others), else its default, numbered
    (``bunny-2``, ``bunny-3``) after the first that takes it; in order, so that a rerun gives the same names. Names
    differ also where a file system ignores case."""
    taken = {SUMMARY_FILENAME.lower()}
    for number, name in enumerate(given, start=1):
        if name is not None:
            if name.lower() in taken:
                raise BatchError(f"{jobs_file}, entry {number}, 'name': {name!r} is the name of another entry")
            taken.add(name.lower())
    names = []
    for name, default in zip(given, defaults):
        if name is None:
            base = default.lstrip(".") or "job"
            name, count = base, 1
            while name.lower() in taken:
                count += 1
                name = f"{base}-{count}"
            taken.add(name.lower())
        names.append(name)
    return names
