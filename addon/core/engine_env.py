"""Where the engine source is, which Python runs it, and Set up engine (a virtual environment with the engine's
requirements) run as child processes that never block the caller."""

from __future__ import annotations

import collections
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Sequence

from .errors import EngineError
from .folders import CHOOSE_CACHE, make_folder, reason
from .worker_client import SessionState, describe_exit

ADDON_DIR = Path(__file__).resolve().parent.parent
REQUIREMENTS_FILENAME = "requirements.txt"
VENV_DIRNAME = "venv"
OUTPUT_TAIL_LINES = 20
SHOWN_OUTPUT_LINES = 3
"""How many lines of a failed command's output its message carries."""
ERROR_PREFIXES = ("ERROR:", "error:")
"""How pip starts the lines that say why it failed."""
NOISE_PREFIXES = ("hint:", "note:", "[notice]", "WARNING:")
"""Lines that never say why a command failed ("hint: See above for details.")."""
BOX_CHARACTERS = "×╰─>│ "
"""What pip draws around its error blocks."""


def failure_lines(output: Sequence[str], errors: Sequence[str]) -> list[str]:
    """The lines of a failed command's output that say why, for a one-line message: pip's ``ERROR:`` lines when it
    printed any (``errors``), else the last lines of ``output`` that are not empty, hints or notices; each stripped
    of pip's prefix, boxes and final punctuation, once, at most `SHOWN_OUTPUT_LINES`."""
    chosen = list(errors) or [line for line in output if not line.strip().startswith(NOISE_PREFIXES)]
    lines: list[str] = []
    for line in chosen:
        text = line.strip().lstrip(BOX_CHARACTERS)
        for prefix in ERROR_PREFIXES:
            text = text.removeprefix(prefix).strip()
        text = text.rstrip(" .:;,")
        if text and text not in lines:
            lines.append(text)
    return lines[-SHOWN_OUTPUT_LINES:]


def engine_root() -> Path:
    """The folder that holds the ``engine`` package and its requirements file: the extension's own folder once
    installed (the build puts ``engine/`` beside the add-on's modules), the repository root in a checkout."""
    for candidate in (ADDON_DIR, ADDON_DIR.parent):
        if (candidate / "engine" / "worker.py").is_file():
            return candidate
    raise EngineError(
        f"The engine (engine/worker.py) is missing beside the add-on in {ADDON_DIR}: reinstall the extension"
    )


def venv_python(venv_dir: Path) -> Path:
    return venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def choose_python(configured: str, venv_dir: Path) -> str:
    """The Python that runs the engine: the configured one; else the one Set up engine made; else the running
    interpreter (Blender's own Python, or the one that imported the bpy module)."""
    if configured:
        return configured
    made = venv_python(venv_dir)
    return str(made) if made.is_file() else sys.executable


def setup_commands(base_python: str, venv_dir: Path, requirements: Path) -> list[list[str]]:
    """Create a virtual environment with ``base_python`` and install ``requirements`` into it."""
    return [
        [base_python, "-m", "venv", str(venv_dir)],
        [str(venv_python(venv_dir)), "-m", "pip", "install", "--disable-pip-version-check", "-r", str(requirements)],
    ]


class CommandSequence:
    """Commands run one after another, each a child process whose output is read on a thread; `poll` never blocks."""

    def __init__(self, commands: Sequence[Sequence[str]]):
        self.commands = [list(command) for command in commands]
        self.index = 0
        self.state = SessionState.RUNNING
        self.message = ""
        self.last_line = ""
        self.process: subprocess.Popen | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._activity = threading.Event()
        self._tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        self._errors: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        """The current command's lines that start with one of `ERROR_PREFIXES`, however early they came."""
        self._cancelled = False

    @property
    def finished(self) -> bool:
        return self.state is not SessionState.RUNNING

    def start(self) -> None:
        self._start_current()

    def poll(self) -> None:
        self._activity.clear()
        while not self.finished:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return
            if line is not None:
                self._tail.append(line)
                if line.strip().lstrip(BOX_CHARACTERS).startswith(ERROR_PREFIXES):
                    self._errors.append(line)
                if line.strip():
                    self.last_line = line
                continue
            code = self.process.wait()
            if self._cancelled:
                self._end(SessionState.CANCELLED, "Cancelled")
            elif code != 0:
                shown = " ".join(
                    Path(part).name if index == 0 else part for index, part in enumerate(self.commands[self.index])
                )
                lines = failure_lines(self._tail, self._errors)
                self._end(
                    SessionState.FAILED,
                    f"'{shown}' failed ({describe_exit(code)})"
                    + (f": {'; '.join(lines)}" if lines else " without any output"),
                )
            elif self.index + 1 == len(self.commands):
                self._end(SessionState.SUCCEEDED, "")
            else:
                self.index += 1
                self._tail.clear()
                self._errors.clear()
                self._start_current()

    def wait(self, timeout_s: float) -> None:
        self._activity.wait(timeout_s)

    def cancel(self) -> None:
        self._cancelled = True
        if self.process is not None and self.process.poll() is None:
            self.process.kill()

    def close(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.cancel()
            self.process.wait()
            self.process.stdout.close()

    def _start_current(self) -> None:
        command = self.commands[self.index]
        try:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1
            )
        except OSError as error:
            self._end(SessionState.FAILED, f"Could not run {command[0]}: {error.strerror or error}")
            return
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self._lines.put(line.rstrip())
            self._activity.set()
        self._lines.put(None)
        self._activity.set()

    def _end(self, state: SessionState, message: str) -> None:
        self.state = state
        self.message = message
        self._activity.set()


class EnvironmentSetup:
    """Set up engine: a new virtual environment is built beside the current one and swapped in only when complete,
    so a failed or cancelled setup leaves the previous environment as it was. The folder that holds it is made (or
    found unusable, as an `EngineError`) before anything runs."""

    def __init__(self, base_python: str, venv_dir: Path, requirements: Path):
        if not requirements.is_file():
            raise EngineError(f"The engine's requirements file {requirements} is missing: reinstall the extension")
        make_folder(venv_dir.parent, "cache folder")
        self.venv_dir = venv_dir
        self.partial_dir = venv_dir.with_name(venv_dir.name + "-partial")
        shutil.rmtree(self.partial_dir, ignore_errors=True)
        self.commands = CommandSequence(setup_commands(base_python, self.partial_dir, requirements))

    def finish(self) -> None:
        """Swap the new environment in if every command succeeded; otherwise delete it. Raises `EngineError` when
        the swap fails (the new environment is then left in its ``-partial`` folder)."""
        self.commands.close()
        if self.commands.state is SessionState.SUCCEEDED:
            shutil.rmtree(self.venv_dir, ignore_errors=True)
            try:
                self.partial_dir.rename(self.venv_dir)
            except OSError as error:
                raise EngineError(
                    f"The new engine environment could not be moved to {self.venv_dir} ({reason(error)}): "
                    f"remove that folder by hand, or {CHOOSE_CACHE}"
                ) from error
        else:
            shutil.rmtree(self.partial_dir, ignore_errors=True)

    def failure_message(self) -> str:
        """Why the setup did not finish (cancelled, or which command failed and what it said), and, where there was
        one, that the previous environment is still there."""
        message = self.commands.message.rstrip(" .")
        if venv_python(self.venv_dir).is_file():
            message += f". The previous environment in {self.venv_dir} was kept"
        return message
