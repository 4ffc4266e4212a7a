"""The default fit meets the quality targets on a real mesh (issue 2's bar), through the fit job as both front ends
run it. Slow (the full `fast` preset: minutes on 2 CPU cores): ``./test.sh -m slow``."""

import pytest

from engine.jobs import JOBS, JobContext
from engine.mesh_io import load_mesh
from tests.conftest import BUNDLED_MESH


@pytest.mark.slow
def test_the_default_fit_of_the_bundled_bunny_meets_the_quality_targets(tmp_path):
    mesh = load_mesh(BUNDLED_MESH)
    spec = JOBS["fit"].from_params({"names": [BUNDLED_MESH.name], "device": "cpu"})
    output = spec.run({"vertices_0": mesh.vertices, "faces_0": mesh.faces}, JobContext(output_dir=tmp_path))
    metrics = output.summary["metrics"]
    assert metrics["iou"] >= 0.99 and metrics["fscore"] >= 0.99 and metrics["normal_consistency"] >= 0.98, metrics
    assert (tmp_path / output.files["model"]).is_file()
