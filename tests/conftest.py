"""Shared fixtures: small meshes built in code, and the path of the bundled demo mesh."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

REPO = Path(__file__).resolve().parent.parent
BUNDLED_MESH = REPO / "data" / "bunny.ply"


def pytest_configure(config):
    # The test networks are small; one thread avoids the 3-8x slow-down of two spinning threads when another
    # process holds a core.
    torch.set_num_threads(1)


@pytest.fixture
def sphere_mesh():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    return np.asarray(sphere.vertices), np.asarray(sphere.faces)


def interruptible_child() -> None:
    """A subprocess's ``preexec_fn``: Ctrl-C's SIGINT back to its default in the child, as in a terminal. A test run
    started in the background by a non-interactive shell inherits SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler, so a test that presses Ctrl-C would wait on a child that never hears it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_engine_cli(*args) -> subprocess.CompletedProcess:
    """``python -m engine ARGS`` in a separate process, as a user runs it (one torch thread, as in these tests)."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "engine", *map(str, args)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=environment)
