#!/usr/bin/env python3
"""Build the Blender extension zip: the add-on (addon/) with the engine source (engine/) and its requirements,
checked and packed by Blender's own extension tool (found inside the bpy module; it runs under plain Python).

    python scripts/build_extension.py [--output-dir dist]

Prints the path of the zip. In the zip the add-on's modules sit at the top and engine/ beside them: the add-on
starts the worker with the extension's folder on PYTHONPATH. Tests and benchmarks stay out.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MANIFEST = "blender_manifest.toml"
TOP_LEVEL_FILES = (MANIFEST, "requirements.txt")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


def find_blender_ext() -> Path:
    try:
        # The installed distribution, not the imported module: once imported, bpy is Blender's scripts/modules/bpy.
        package = Path(importlib.metadata.distribution("bpy").locate_file("bpy"))
    except importlib.metadata.PackageNotFoundError:
        package = None
    tools = sorted(package.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py")) if package is not None else []
    if not tools:
        raise SystemExit(
            "Blender's extension tool (bl_pkg/cli/blender_ext.py) was not found: install the bpy module "
            "(pip install -r requirements-dev.txt) or pass --blender-ext PATH"
        )
    return tools[-1]


def stage(staging: Path) -> None:
    """Lay out the extension's files as Blender installs them."""
    shutil.copytree(REPO / "addon", staging, ignore=IGNORED)
    shutil.copytree(REPO / "engine", staging / "engine", ignore=IGNORED)
    for name in TOP_LEVEL_FILES:
        shutil.copy2(REPO / name, staging / name)


def build(output_dir: Path, blender_ext: Path) -> Path:
    manifest = tomllib.loads((REPO / MANIFEST).read_text())
    output = output_dir.resolve() / f"{manifest['id']}-{manifest['version']}.zip"
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as temporary:
        staging = Path(temporary) / manifest["id"]
        stage(staging)
        for command in (
            ["validate", str(staging)],
            ["build", "--source-dir", str(staging), "--output-filepath", str(output)],
        ):
            completed = subprocess.run([sys.executable, str(blender_ext), *command], capture_output=True, text=True)
            if completed.returncode != 0:
                raise SystemExit(f"blender_ext {command[0]} failed:\n{completed.stdout}{completed.stderr}")
    return output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=REPO / "dist", help="where the zip goes (default: dist/)")
    parser.add_argument(
        "--blender-ext", type=Path, help="Blender's blender_ext.py (default: the one in the bpy module)"
    )
    args = parser.parse_args()
    print(build(args.output_dir, args.blender_ext or find_blender_ext()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
