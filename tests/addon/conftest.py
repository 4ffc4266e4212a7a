"""Fixtures of the bpy-module tests. bpy can be imported once per process, so one session-wide fixture imports it
(with Blender's user folders in a temporary directory) and installs the extension built into a zip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .blender_support import (
    EXTENSIONS_REPO,
    REPO,
    add_sphere,
    addon_module,
    empty_scene_with_tiny_fit,
    select_only,
)


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_extension.py"), "--output-dir", str(output)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return Path(built.stdout.strip())


@pytest.fixture(scope="session")
def bpy(extension_zip, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        # Blender's user folders (extensions, preferences) go to a temporary directory, not the user's home.
        patch.setenv("BLENDER_USER_RESOURCES", str(tmp_path_factory.mktemp("blender_user")))
        bpy = pytest.importorskip("bpy")
        result = bpy.ops.extensions.package_install_files(
            filepath=str(extension_zip), repo=EXTENSIONS_REPO, enable_on_install=True
        )
        assert result == {"FINISHED"}
        yield bpy


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def scene(bpy, cache_dir):
    """An empty scene with tiny fit settings, and the test preferences."""
    empty_scene_with_tiny_fit(bpy, cache_dir)
    yield bpy.context.scene
    addon_module("engine_jobs").stop_all()
    bpy.context.window_manager.neural_sdf_job.is_running = False


@pytest.fixture(scope="session")
def fitted_sphere_blend(bpy, cache_dir, tmp_path_factory) -> Path:
    """A saved .blend holding a sphere and its fitted object (fitted once for the session)."""
    empty_scene_with_tiny_fit(bpy, cache_dir)
    select_only(bpy, add_sphere(bpy))
    assert bpy.ops.neural_sdf.fit() == {"FINISHED"}
    bpy.data.objects["Sphere"].hide_set(False)  # Hide Sources hid it; the tests colour it and select it
    path = tmp_path_factory.mktemp("project") / "sphere.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    return path
