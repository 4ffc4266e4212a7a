"""Colours of point clouds (issue 17): a PLY of points with ``red green blue`` (and normals) fitted with
``fit --colors`` gives its colours to the fitted surface, and the fit job checks point colours before it trains."""

import numpy as np
import pytest
import torch

from engine.cli import main as cli_main
from engine.color_samples import linear_to_srgb8, srgb8_to_linear
from engine.jobs import JOBS, JobContext
from engine.ply_io import read_ply_vertex_properties

RADIUS = 0.5
COUNT = 3000


def sphere_points(count: int = COUNT, seed: int = 0) -> np.ndarray:
    directions = np.random.default_rng(seed).normal(size=(count, 3))
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def red_to_blue(directions: np.ndarray) -> np.ndarray:
    """Linear RGB by the x of the unit direction: red at +x, blue at -x, a ramp between."""
    share = (1.0 + directions[:, :1]) / 2.0
    return np.hstack([share, np.zeros_like(share), 1.0 - share])


def write_ascii_points(path, points: np.ndarray, normals: np.ndarray, codes: np.ndarray) -> None:
    """An ASCII PLY of points with normals and 8-bit red green blue (no alpha, no faces), as scanners write them."""
    header = ["ply", "format ascii 1.0", f"element vertex {len(points)}"]
    header += [f"property float {name}" for name in ("x", "y", "z", "nx", "ny", "nz")]
    header += [f"property uchar {name}" for name in ("red", "green", "blue")]
    rows = [" ".join([*(f"{v:.6f}" for v in (*p, *n)), *(str(int(c)) for c in rgb)])
            for p, n, rgb in zip(points, normals, codes)]  # fmt: skip
    path.write_text("\n".join([*header, "end_header", *rows]) + "\n")


def test_cli_fit_colors_on_a_ply_of_points_colours_the_surface(tmp_path):
    torch.set_num_threads(1)
    directions = sphere_points()
    codes = linear_to_srgb8(red_to_blue(directions))
    write_ascii_points(tmp_path / "scan.ply", RADIUS * directions, directions, codes)
    code = cli_main(["fit", str(tmp_path / "scan.ply"), "-o", str(tmp_path / "out"), "--preset", "tiny", "--steps",
                     "200", "--color-steps", "200", "--resolution", "32", "--colors", "--no-metrics", "--device", "cpu"])  # fmt: skip
    assert code == 0
    written = read_ply_vertex_properties(tmp_path / "out" / "mesh.ply")
    vertices = np.column_stack([written[axis] for axis in "xyz"]).astype(np.float64)
    colors = srgb8_to_linear(np.column_stack([written[channel] for channel in ("red", "green", "blue")]))
    truth = red_to_blue(vertices / np.linalg.norm(vertices, axis=1, keepdims=True))
    assert np.abs(colors - truth).mean() < 0.03
    east, west = vertices[:, 0] > 0.3, vertices[:, 0] < -0.3
    assert colors[east, 0].mean() > 0.8 and colors[east, 2].mean() < 0.2
    assert colors[west, 2].mean() > 0.8 and colors[west, 0].mean() < 0.2


def test_the_fit_job_refuses_point_colours_of_another_count_before_training(tmp_path):
    directions = sphere_points(500)
    inputs = {"points_0": RADIUS * directions, "normals_0": directions, "vertex_colors_0": red_to_blue(directions)[:-1]}
    params = {"names": ["scan"], "preset": "tiny", "steps": 10, "resolution": 16, "device": "cpu", "metrics": False,
              "colors": True}  # fmt: skip
    reports = []
    with pytest.raises(ValueError, match=r"'scan''s point colours must be \(500, 3\) RGB"):
        JOBS["fit"].from_params(params).run(inputs, JobContext(tmp_path, report=lambda *r: reports.append(r)))
    assert not any(report[1] > 0 for report in reports)  # no training step ran
