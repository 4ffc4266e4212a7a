#!/usr/bin/env python3
"""The GUI test harness: the add-on's scenarios in a real, interactive Blender (see ./gui_test.sh).

    .venv/bin/python tests/gui/run_gui.py [SCENARIO ...]

Needs the Debian 13 chroot that scripts/gui_setup.sh makes (Blender 4.3 with numpy, xdotool, ImageMagick) and
root (for chroot and bind mounts). Builds the extension zip, bind-mounts this checkout and the Python that its
``.venv`` was made from into the chroot at the same paths (the engine runs from ``.venv``, as a user's Set up
Engine environment would), starts Xvfb, and runs each scenario of tests/gui/in_blender.py in a fresh Blender with
fresh preferences. Writes ``out/gui/SCENARIO/`` (result.json, screenshots, blender.log) and ``out/gui/report.md``;
exits 1 when a check failed or a scenario did not finish.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROOT = Path(os.environ.get("NEURAL_SDF_GUI_ROOT", "/opt/neural-sdf-gui/trixie"))
OUT = REPO / "out" / "gui"
DISPLAY = ":77"
X11_SOCKETS = Path("/tmp/.X11-unix")
"""Where Xvfb puts its socket; bind-mounted into the chroot so Blender there reaches the display."""
SCREEN = "1600x1000x24"
SCENARIO_TIMEOUT_S = 900
SCENARIOS = ("fit_then_esc", "fit_preview_undo", "file_new_during_job", "failed_job", "close_preferences_during_check",
             "image_landmarks_click")


@contextlib.contextmanager
def bind_mounts(paths: list[Path]):
    """Each path bind-mounted at the same place inside the chroot (and /proc, /sys, /dev); unmounted afterwards."""
    mounted: list[Path] = []
    try:
        for source in [Path("/proc"), Path("/sys"), Path("/dev"), *paths]:
            target = CHROOT / source.relative_to("/")
            target.mkdir(parents=True, exist_ok=True)
            if subprocess.run(["mountpoint", "-q", str(target)]).returncode == 0:
                continue
            subprocess.run(["mount", "--rbind", str(source), str(target)], check=True)
            mounted.append(target)
        yield
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-R", "-l", str(target)], check=False)


@contextlib.contextmanager
def xvfb():
    server = subprocess.Popen(["Xvfb", DISPLAY, "-screen", "0", SCREEN, "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        socket = X11_SOCKETS / f"X{DISPLAY[1:]}"
        for _ in range(100):
            if socket.exists():
                break
            time.sleep(0.1)
        else:
            raise SystemExit(f"Xvfb did not start on {DISPLAY}")
        yield
    finally:
        server.terminate()
        server.wait()


def build_zip() -> Path:
    dist = OUT / "dist"
    output = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_extension.py"), "--output-dir", str(dist)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return Path(output.strip().splitlines()[-1])


def run_scenario(name: str, zip_path: Path, engine_python: Path) -> dict:
    out = OUT / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    home = out / "home"
    command = [
        "chroot", str(CHROOT), "env", f"DISPLAY={DISPLAY}", f"HOME={home}", "LANG=C.UTF-8",
        "blender", "--factory-startup", "--python", str(REPO / "tests" / "gui" / "in_blender.py"), "--",
        "--scenario", name, "--zip", str(zip_path), "--engine-python", str(engine_python), "--out", str(out),
    ]  # fmt: skip
    started = time.monotonic()
    with (out / "blender.log").open("w") as log:
        try:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=SCENARIO_TIMEOUT_S).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    result_file = out / "result.json"
    result = json.loads(result_file.read_text()) if result_file.is_file() else {"checks": [], "error": "no result"}
    result["wall_s"] = time.monotonic() - started
    result["exit"] = code
    return result


def passed(result: dict) -> bool:
    return bool(result["checks"]) and all(c["ok"] for c in result["checks"]) and not result.get("error")


def report(results: dict[str, dict]) -> str:
    lines = ["# GUI scenarios in Blender 4.3 (Debian 13 chroot, Xvfb, llvmpipe)", ""]
    for name, result in results.items():
        verdict = "passed" if passed(result) else "FAILED"
        lines += [f"## {name}: {verdict} ({result['wall_s']:.0f} s with Blender's start)", ""]
        lines += [f"- {'ok' if c['ok'] else 'FAIL'}: {c['check']}" + (f" ({c['detail']})" if c["detail"] else "")
                  for c in result["checks"]]
        lines += [f"- timing: {what}: {seconds:.1f} s" for what, seconds in result.get("timings_s", {}).items()]
        lines += [f"- screenshot `{name}/{s['file']}`: {s['shows']}" for s in result.get("screenshots", [])]
        if result.get("error"):
            lines += ["", "```", result["error"].rstrip(), "```"]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"some of {', '.join(SCENARIOS)}; default all")
    args = parser.parse_args()
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    args.scenarios = args.scenarios or list(SCENARIOS)
    if os.geteuid() != 0:
        raise SystemExit("The GUI harness needs root (chroot and bind mounts)")
    if not (CHROOT / "usr" / "bin" / "blender").is_file():
        raise SystemExit(f"No Blender in {CHROOT}: run scripts/gui_setup.sh first (or ./gui_test.sh)")
    venv = (REPO / ".venv").resolve()  # a checkout may link its .venv from elsewhere
    engine_python = venv / "bin" / "python"
    X11_SOCKETS.mkdir(exist_ok=True)  # before it is bind-mounted: a fresh machine may not have it yet
    X11_SOCKETS.chmod(0o1777)
    mounts = [REPO, Path(sys.base_prefix), X11_SOCKETS]
    if not venv.is_relative_to(REPO):
        mounts.insert(1, venv)
    OUT.mkdir(parents=True, exist_ok=True)
    zip_path = build_zip()
    results = {}
    with bind_mounts(mounts), xvfb():
        for name in args.scenarios:
            results[name] = run_scenario(name, zip_path, engine_python)
            print(f"{name}: {'passed' if passed(results[name]) else 'FAILED'} in {results[name]['wall_s']:.0f} s",
                  flush=True)
    (OUT / "report.md").write_text(report(results), encoding="utf-8")
    print(f"report: {OUT / 'report.md'}")
    return 0 if all(passed(r) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
