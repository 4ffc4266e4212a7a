"""Frequency Control (TUNER) in Blender's Fit (issue 15): the toggle reaches the engine (the model's network has
TUNER's frozen integer first layer and the hidden bounds), the fit's summary says so, and Fit refuses it with
Levels above 1 before any work, saying why. Fixtures: conftest.py."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("bpy") is None:
    pytest.skip("needs Blender's Python module: pip install bpy==5.0.1", allow_module_level=True)

from engine.model import load_model  # noqa: E402

from .blender_support import SPHERE_CENTER, SPHERE_RADIUS, add_sphere, addon_module, select_only  # noqa: E402


def test_fit_with_frequency_control_makes_a_tuner_network(scene, bpy):
    settings = scene.neural_sdf
    settings.tuner, settings.steps = True, 80
    select_only(bpy, add_sphere(bpy))
    assert bpy.ops.neural_sdf.fit() == {"FINISHED"}
    fitted = bpy.data.objects["Sphere SDF"]
    assert ", TUNER, " in fitted.neural_sdf.fit_summary
    network = load_model(addon_module("properties").model_file(fitted)).network
    assert network.config.first_layer == "integer" and network.config.hidden_bounds is not None
    points = np.array([fitted.matrix_world @ vertex.co for vertex in fitted.data.vertices])
    assert np.abs(np.linalg.norm(points - np.array(SPHERE_CENTER), axis=1) - SPHERE_RADIUS).max() < 0.1 * SPHERE_RADIUS


def test_frequency_control_with_levels_is_refused_before_any_work(scene, bpy):
    settings = scene.neural_sdf
    settings.tuner, settings.levels = True, 2
    select_only(bpy, add_sphere(bpy))
    with pytest.raises(RuntimeError, match=r"Frequency Control \(TUNER\) needs Levels 1"):
        bpy.ops.neural_sdf.fit()
    assert "Sphere SDF" not in bpy.data.objects
    settings.levels = 1
    assert bpy.ops.neural_sdf.fit.poll()
