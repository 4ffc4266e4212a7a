"""Shared fixtures: small meshes built in code, and the path of the bundled demo mesh."""

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

REPO = Path(__file__).resolve().parent.parent
BUNDLED_MESH = REPO / "data" / "bunny.ply"


def pytest_configure(config):
    # Two cores on CI: more threads than cores makes every torch step slower.
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def sphere_mesh():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    return np.asarray(sphere.vertices), np.asarray(sphere.faces)
