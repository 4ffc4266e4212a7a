"""Where the engine source is, which Python runs it, and Set up engine (a virtual environment with the engine's
requirements) run as child processes that never block the caller.

Which PyTorch build Set up engine installs is chosen on purpose (`choose_torch_build`, from what `probe_machine`
found), because the default index gives each platform one build whatever the machine has:
- Linux: PyPI's ``torch`` is the CUDA build and pulls the ``nvidia-*`` runtime wheels, about 3 GB for torch 2.13
  (kyutai-labs/pocket-tts#219: 3.07 GB, 15 ``nvidia-*`` wheels; owid/etl#6530: 4.12 GB) against one 192 MB
  ``+cpu`` wheel from PyTorch's CPU index. A machine without an NVIDIA driver gets the CPU build from
  `PYTORCH_INDEX` ``/cpu``, one with a driver the `CUDA_BUILD` from its index.
- Windows: PyPI's ``torch`` is CPU-only (pytorch/pytorch.github.io#757); CUDA builds come only from PyTorch's index.
- macOS: PyPI's wheel is the only build (CPU and the Apple GPU, MPS); Intel Macs have none since torch 2.3.

Only the torch step names an index (``--index-url``, as PyTorch's own install commands do): the CPU and CUDA builds
carry local versions (``2.13.0+cpu``) that PyPI cannot hold, and with ``--extra-index-url`` pip would pick between
PyPI's CUDA wheel and them by version order. The other requirements come from the default index, so a user's pip
configuration (``index-url``, ``find-links``, ``extra-index-url``) applies to them, and to torch all but its
``index-url``; ``requirements.txt``'s pin of torch is then already satisfied by the build installed."""

from __future__ import annotations

import collections
import dataclasses
import os
import platform
import queue
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
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

PYTORCH_INDEX = "https://download.pytorch.org/whl"
"""PyTorch's own package index: one sub-index per build (``/cpu``, ``/cu128``)."""
CUDA_BUILD = "cu128"
"""The CUDA build Set up engine installs (CUDA 12.8): the newest CUDA 12 build PyTorch's install matrix offered for
the 2.x releases this project followed; it runs on any driver of CUDA 12 (minor version compatibility), unlike a
CUDA 13 build (driver 580 or newer)."""
CUDA_BUILD_NAME = "CUDA 12.8"
MIN_CUDA_DRIVER = {"Linux": 525, "Windows": 527}
"""The oldest NVIDIA driver (major version) that runs CUDA 12 builds (NVIDIA's CUDA compatibility guide: 525.60.13
on Linux, 527.41 on Windows); an older one gets the CPU build."""
DOWNLOAD_SIZES = {"cpu": "~200 MB", "cuda": "~3 GB", "macos": "~80 MB"}
"""Roughly what each build downloads, torch and its dependencies (see the module docstring)."""
TORCH_BUILD_CHOICES = ("AUTO", "CPU", "CUDA")
"""The preference "PyTorch Build" (`addon.core.items.TORCH_BUILD_ITEMS`)."""
NVIDIA_PROC_FILE = Path("/proc/driver/nvidia/version")
DRIVER_VERSION = re.compile(r"\b(\d{3,}\.\d+(?:\.\d+)?)\b")
TORCH_PIN = re.compile(r"^torch\s*==\s*([0-9][0-9A-Za-z.]*)\s*(?:;.*)?$", re.IGNORECASE)
PROBE_TIMEOUT_S = 10.0


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


@dataclass(frozen=True)
class Machine:
    """What decides the PyTorch build: the system, the processor, and the NVIDIA driver."""

    system: str
    """``platform.system()``: "Linux", "Windows", "Darwin"."""
    arch: str
    """``platform.machine()``, lower case: "x86_64", "amd64", "aarch64", "arm64"."""
    nvidia_driver: str | None
    """The NVIDIA driver's version ("550.54.14"); None where none was found."""


@dataclass(frozen=True)
class TorchBuild:
    """The PyTorch build Set up engine installs, and why."""

    name: str
    """"CPU", "CUDA 12.8", "CPU and Apple GPU"."""
    download: str
    """Roughly how much it downloads ("~200 MB")."""
    index_url: str | None
    """Where pip gets torch; None: the default index (PyPI, or what the user's pip configuration names)."""
    reason: str
    """Why this build ("no NVIDIA driver found")."""

    def pip_args(self) -> list[str]:
        return ["--index-url", self.index_url] if self.index_url else []

    def describe(self, version: str) -> str:
        """"PyTorch 2.13.0, CPU build (~200 MB download; no NVIDIA driver found)"."""
        return f"PyTorch {version}, {self.name} build ({self.download} download; {self.reason})"


def nvidia_driver_version(system: str) -> str | None:
    """The NVIDIA driver's version, read from ``/proc/driver/nvidia/version`` on Linux, else asked of ``nvidia-smi``
    on the PATH; None where neither answers. Never imports torch."""
    if system == "Linux":
        try:
            found = DRIVER_VERSION.search(NVIDIA_PROC_FILE.read_text(errors="replace"))
        except OSError:
            found = None
        if found:
            return found.group(1)
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        answer = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, errors="replace", timeout=PROBE_TIMEOUT_S,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    found = DRIVER_VERSION.search(answer.stdout) if answer.returncode == 0 else None
    return found.group(1) if found else None


def probe_machine() -> Machine:
    system = platform.system()
    return Machine(system, platform.machine().lower(), nvidia_driver_version(system))


def choose_torch_build(machine: Machine, wanted: str = "AUTO") -> TorchBuild:
    """The build for ``machine``: ``wanted`` "CPU" or "CUDA" (the preference), else ("AUTO") CUDA where an NVIDIA
    driver that runs `CUDA_BUILD` was found, the CPU otherwise. Raises `EngineError` where PyTorch has no such build
    (CUDA on macOS, any build on an Intel Mac)."""
    if wanted not in TORCH_BUILD_CHOICES:
        raise ValueError(f"wanted must be one of {TORCH_BUILD_CHOICES}, got {wanted!r}")
    if machine.system == "Darwin":
        if machine.arch not in ("arm64", "aarch64"):
            raise EngineError(
                "PyTorch has no build for Intel Macs since 2.3: the engine needs a Mac with Apple silicon, or set "
                "the Python preference to an interpreter that has torch"
            )
        if wanted == "CUDA":
            raise EngineError("PyTorch has no CUDA build for macOS: set PyTorch Build to Automatic")
        return TorchBuild("CPU and Apple GPU", DOWNLOAD_SIZES["macos"], None, "the only build for macOS")
    cpu_index = None if machine.system == "Windows" else f"{PYTORCH_INDEX}/cpu"
    cpu = TorchBuild("CPU", DOWNLOAD_SIZES["cpu"], cpu_index, "")
    cuda = TorchBuild(CUDA_BUILD_NAME, DOWNLOAD_SIZES["cuda"], f"{PYTORCH_INDEX}/{CUDA_BUILD}", "")
    if wanted != "AUTO":
        return dataclasses.replace(cuda if wanted == "CUDA" else cpu, reason="chosen in the preferences")
    driver = machine.nvidia_driver
    if driver is None:
        return dataclasses.replace(cpu, reason="no NVIDIA driver found")
    oldest = MIN_CUDA_DRIVER.get(machine.system, 0)
    if int(driver.split(".")[0]) < oldest:
        return dataclasses.replace(
            cpu,
            reason=f"NVIDIA driver {driver} is older than {oldest}, which {CUDA_BUILD_NAME} needs: update it for the GPU",
        )
    return dataclasses.replace(cuda, reason=f"NVIDIA driver {driver} found")


def torch_pin(requirements: Path) -> str:
    """The torch version ``requirements`` pins (its line ``torch==2.13.0``): the one place that names it."""
    try:
        lines = requirements.read_text().splitlines()
    except OSError as error:
        raise EngineError(f"The engine's requirements file {requirements} cannot be read ({reason(error)})") from error
    for line in lines:
        found = TORCH_PIN.match(line.split(" #")[0].strip())
        if found:
            return found.group(1)
    raise EngineError(f"The engine's requirements file {requirements} pins no torch version: reinstall the extension")


def setup_commands(
    base_python: str, venv_dir: Path, requirements: Path, build: TorchBuild | None = None
) -> list[list[str]]:
    """Create a virtual environment with ``base_python``; install torch as ``requirements`` pins it, in ``build``
    (from its index); then the rest of ``requirements`` from the default index (torch is then already satisfied).
    Without ``build``, ``requirements`` alone."""
    pip = [str(venv_python(venv_dir)), "-m", "pip", "install", "--disable-pip-version-check"]
    commands = [[base_python, "-m", "venv", str(venv_dir)]]
    if build is not None:
        commands.append(pip + [f"torch=={torch_pin(requirements)}", *build.pip_args()])
    commands.append(pip + ["-r", str(requirements)])
    return commands


def setup_step_names(build: TorchBuild | None, version: str = "") -> list[str]:
    """What each of `setup_commands` does, for the progress."""
    torch_step = [f"Installing PyTorch {version} ({build.name}, {build.download})"] if build is not None else []
    return ["Making the environment", *torch_step, "Installing the other requirements"]


def setup_progress(commands: "CommandSequence", step_names: Sequence[str]) -> tuple[str, str, float]:
    """The progress of a running setup: (whole line, short line, fraction). The short line names the step ("Installing
    PyTorch 2.13.0 (CPU, ~200 MB) (2/3)"), the whole line adds the command's last output line, or "starting…"."""
    count = len(commands.commands)
    step = step_names[commands.index] if len(step_names) == count else "Setting up the engine"
    short = f"{step} ({commands.index + 1}/{count})"
    last = commands.last_line.strip()[-90:] or "starting…"
    return f"{short}: {last}", short, commands.index / count


def progress_detail(text: str, short_text: str) -> str:
    """What the whole progress line adds to the short one (a setup's last output line); the whole line where it does
    not start with the short one."""
    return text.removeprefix(short_text).removeprefix(": ") if text.startswith(short_text) else text


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

    def __init__(self, base_python: str, venv_dir: Path, requirements: Path, build: TorchBuild | None = None):
        if not requirements.is_file():
            raise EngineError(f"The engine's requirements file {requirements} is missing: reinstall the extension")
        self.build = build
        self.torch_version = torch_pin(requirements) if build is not None else ""
        make_folder(venv_dir.parent, "cache folder")
        self.venv_dir = venv_dir
        self.partial_dir = venv_dir.with_name(venv_dir.name + "-partial")
        shutil.rmtree(self.partial_dir, ignore_errors=True)
        self.commands = CommandSequence(setup_commands(base_python, self.partial_dir, requirements, build))
        self.step_names = setup_step_names(build, self.torch_version)

    def describe(self) -> str:
        """What it installs: "PyTorch 2.13.0, CPU build (~200 MB download; no NVIDIA driver found)"."""
        return self.build.describe(self.torch_version) if self.build is not None else "the engine's requirements"

    def progress(self) -> tuple[str, str, float]:
        return setup_progress(self.commands, self.step_names)

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
