"""Point clouds in (issue 17): normals estimated and oriented, fits of noisy sampled spheres and tori against their
analytic shapes, the input checks, point metrics, the command line and the worker on point inputs."""

import json

import numpy as np
import pytest
import trimesh

from engine import protocol
from engine.extraction import extract_mesh
from engine.fit import fit_sdf, preset
from engine.jobs import JOBS, JobContext, JobParamError
from engine.mesh_io import MeshError, TriangleMesh, check_mesh
from engine.metrics import point_metrics
from engine.ply_io import write_ply
from engine.point_clouds import (
    MIN_POINTS, PointCloud, PointSource, check_point_cloud, estimate_normals, load_shape,
)  # fmt: skip
from engine.sampling import MeshQueries, SamplePool, VolumeSampling
from tests.conftest import run_engine_cli
from tests.engine.test_worker import job

RADIUS = 0.8
CENTER = np.array([2.0, -1.0, 0.5])
TORUS_R, TORUS_A = 0.6, 0.25
NOISE = 0.005
"""Gaussian noise along each axis, as a share of the radius (sphere) or the tube radius (torus)."""
COUNT = 2000
STEPS = 300


def noisy_sphere(count=COUNT, seed=0):
    """Points on the sphere (RADIUS, CENTER) with noise, and the true outward normals."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(count, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return CENTER + RADIUS * directions + rng.normal(size=(count, 3)) * NOISE * RADIUS, directions


def noisy_torus(count=COUNT, seed=0):
    """Points drawn uniformly by area on the torus (TORUS_R, TORUS_A) about z, with noise, and the true normals."""
    rng = np.random.default_rng(seed)
    u, v = rng.uniform(0, 2 * np.pi, (2, 4 * count))
    kept = rng.uniform(size=4 * count) < (TORUS_R + TORUS_A * np.cos(v)) / (TORUS_R + TORUS_A)
    u, v = u[kept][:count], v[kept][:count]
    normals = np.stack([np.cos(v) * np.cos(u), np.cos(v) * np.sin(u), np.sin(v)], axis=1)
    centres = np.stack([TORUS_R * np.cos(u), TORUS_R * np.sin(u), np.zeros_like(u)], axis=1)
    return centres + TORUS_A * normals + rng.normal(size=(count, 3)) * NOISE * TORUS_A, normals


def sphere_sdf(points):
    return np.linalg.norm(points - CENTER, axis=1) - RADIUS


def torus_sdf(points):
    rho = np.linalg.norm(points[:, :2], axis=1)
    return np.hypot(rho - TORUS_R, points[:, 2]) - TORUS_A


def iou_with_analytic(vertices, faces, sdf, low, high, count=200_000):
    """Volume IoU of the extracted mesh's inside (winding number) and the analytic inside, on uniform points."""
    points = np.random.default_rng(1).uniform(low, high, size=(count, 3))
    inside = MeshQueries(TriangleMesh(vertices, faces.astype(np.int64))).winding_number(points) > 0.5
    truth = sdf(points) < 0
    return (inside & truth).sum() / (inside | truth).sum()


@pytest.mark.parametrize("shape", [noisy_sphere, noisy_torus])
def test_estimated_normals_agree_with_the_true_outward_normals(shape):
    points, truth = shape()
    normals = estimate_normals(points)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0)
    assert (np.einsum("ij,ij->i", normals, truth) > 0).mean() >= 0.99


def test_a_patch_of_flipped_normals_is_turned_back_and_a_shape_turned_inside_out_is_turned_outward():
    from engine.point_clouds import _flipped_by_winding, _orient_along_spanning_tree

    points, truth = noisy_sphere()
    patch = (points - CENTER)[:, 2] > 0.6 * RADIUS  # a cap of about a fifth of the points, flipped as a whole
    flipped = np.where(patch[:, None], -truth, truth)
    assert (np.einsum("ij,ij->i", _flipped_by_winding(points, flipped), truth) > 0).mean() >= 0.99
    neighbours = np.argsort(np.linalg.norm(points[:, None] - points[None], axis=2), axis=1)[:, :9]
    turned = _orient_along_spanning_tree(points, -truth, neighbours)
    assert (np.einsum("ij,ij->i", turned, truth) > 0).all()


@pytest.mark.parametrize("given", [True, False], ids=["given normals", "estimated normals"])
def test_a_noisy_sphere_of_points_fits_its_radius(given):
    points, normals = noisy_sphere()
    model = fit_sdf(check_point_cloud(points, normals if given else None), preset("tiny", steps=STEPS))
    vertices, faces = extract_mesh(model, 64)
    radius_error = np.abs(np.linalg.norm(vertices - CENTER, axis=1) - RADIUS).mean()
    assert radius_error < 0.01 * RADIUS
    iou = iou_with_analytic(vertices, faces, sphere_sdf, CENTER - 1.1 * RADIUS, CENTER + 1.1 * RADIUS)
    assert iou > 0.98
    assert trimesh.Trimesh(vertices, faces).volume > 0, "faces must point outward"


@pytest.mark.parametrize("given", [True, False], ids=["given normals", "estimated normals"])
def test_a_noisy_torus_of_points_fits_its_analytic_sdf(given):
    points, normals = noisy_torus()
    model = fit_sdf(check_point_cloud(points, normals if given else None), preset("tiny", steps=STEPS))
    vertices, faces = extract_mesh(model, 64)
    assert np.abs(torus_sdf(vertices)).mean() < 0.04 * TORUS_A
    reach = np.array([TORUS_R + TORUS_A, TORUS_R + TORUS_A, TORUS_A]) * 1.1
    assert iou_with_analytic(vertices, faces, torus_sdf, -reach, reach) > 0.95


def test_the_siren_loss_fits_without_distances_from_uniform_volume_samples():
    points, normals = noisy_sphere()
    unit = (points - CENTER) / RADIUS * 0.9
    pool = SamplePool(PointSource(PointCloud(unit, normals), "siren"), 500, 500, VolumeSampling(), False,
                      np.random.default_rng(0))  # fmt: skip
    assert pool.volume_sdf is None and pool.batch(__import__("torch").Generator(), 10, 10)[3] is None
    model = fit_sdf(check_point_cloud(points, normals), preset("tiny", steps=60, point_method="siren"))
    assert np.isfinite(model.metadata["best_validation_loss"])


def test_point_signed_distances_are_negative_inside_and_near_the_truth():
    points, normals = noisy_sphere()
    source = PointSource(PointCloud((points - CENTER) / RADIUS * 0.9, normals))
    rng = np.random.default_rng(2)
    directions = rng.normal(size=(4000, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    queries = directions * rng.uniform(0.3, 1.5, size=(4000, 1))
    truth = np.linalg.norm(queries, axis=1) - 0.9
    found = source.signed_distance(queries)
    clear = np.abs(truth) > 0.02  # beyond the noise band
    assert (np.sign(found[clear]) == np.sign(truth[clear])).mean() > 0.995
    assert np.median(np.abs(found - truth)) < 0.01


@pytest.mark.parametrize(
    "points, normals, problem",
    [
        (np.zeros((MIN_POINTS - 1, 3)), None, f"has {MIN_POINTS - 1} points; at least {MIN_POINTS}"),
        (np.full((40, 3), np.nan), None, "40 points with NaN or infinite coordinates"),
        (np.ones((40, 3)), None, "all 40 points are at one place"),
        (np.outer(np.arange(40.0), [1.0, 2.0, 3.0]), None, "lie on one line"),
        (noisy_sphere(40)[0], np.ones((39, 3)), r"normals must be \(40, 3\), one per point, got shape \(39, 3\)"),
        (noisy_sphere(40)[0], np.zeros((40, 3)), "40 normals of zero length"),
        (np.ones((40, 2)), None, r"points must be \(n, 3\)"),
    ],
)
def test_bad_point_clouds_are_refused_with_what_is_wrong(points, normals, problem):
    with pytest.raises(MeshError, match=f"^Scan.*{problem}"):
        check_point_cloud(points, normals, name="Scan")


def fit_job(**params):
    return JOBS["fit"].from_params({"preset": "tiny", "steps": 40, "resolution": 24, "device": "cpu", **params})


def test_the_fit_job_refuses_mixed_inputs_and_curvature_sampling_on_points(tmp_path):
    points, normals = noisy_sphere(200)
    sphere = trimesh.creation.icosphere(subdivisions=2)
    mixed = {"points_0": points, "vertices_1": sphere.vertices, "faces_1": sphere.faces}
    context = JobContext(output_dir=tmp_path)
    with pytest.raises(ValueError, match="meshes or point clouds, not both: 'Ball' is a mesh, 'Scan' is a point"):
        fit_job(names=["Scan", "Ball"]).run(mixed, context)
    with pytest.raises(JobParamError, match="'curvature_sampling' needs meshes"):
        fit_job(names=["Scan"], curvature_sampling=True).run({"points_0": points}, context)
    with pytest.raises(ValueError, match="normals_0 without points_0"):
        fit_job(names=["Scan"]).run({"normals_0": normals, "vertices_0": points, "faces_0": sphere.faces}, context)
    assert list(tmp_path.iterdir()) == []


def test_the_fit_job_merges_clouds_says_which_normals_were_estimated_and_measures_against_the_points(tmp_path):
    points, normals = noisy_sphere()
    inputs = {"points_0": points[:1000], "normals_0": normals[:1000] * 3.0, "points_1": points[1000:]}
    output = fit_job(names=["Left", "Right"], steps=STEPS, resolution=48).run(inputs, JobContext(output_dir=tmp_path))
    summary = output.summary
    assert summary["normals"] == "partly estimated" and summary["normals_estimated_for"] == ["Right"]
    assert "'Right'" in summary["warnings"][0] and "estimated" in summary["warnings"][0]
    assert summary["input_points"] == 2000 and "input_faces" not in summary
    assert summary["metrics_reference"].startswith("the input points") and "iou" not in summary["metrics"]
    assert summary["metrics"]["normal_consistency"] > 0.95 and summary["metrics"]["recall"] > 0.95
    radius = np.linalg.norm(output.arrays["vertices"] - CENTER, axis=1)
    assert np.abs(radius - RADIUS).mean() < 0.01 * RADIUS
    assert (tmp_path / protocol.MODEL_FILENAME).is_file()


def test_point_metrics_of_a_mesh_against_its_own_dense_samples():
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=RADIUS)
    points, faces = trimesh.sample.sample_surface(sphere, 50_000, seed=0)
    measured = point_metrics(sphere.vertices, sphere.faces, points, sphere.face_normals[faces], samples=20_000)
    assert measured.chamfer_l1 < 2e-3 and measured.normal_consistency > 0.999 and measured.fscore > 0.99
    shifted = point_metrics(sphere.vertices * 1.1, sphere.faces, points, sphere.face_normals[faces], samples=20_000)
    assert shifted.chamfer_l1 == pytest.approx(0.05, rel=0.05)  # 0.1 R off, in a box of side 2 R: 0.05 both ways


def test_a_ply_of_points_reads_as_a_point_cloud_with_its_normals_and_one_with_faces_as_a_mesh(tmp_path):
    points, normals = noisy_sphere(100)
    write_ply(tmp_path / "scan.ply", points, np.zeros((0, 3), int),
              vertex_properties=dict(zip(("nx", "ny", "nz"), normals.T)))  # fmt: skip
    cloud = load_shape(tmp_path / "scan.ply")
    assert isinstance(cloud, PointCloud)
    np.testing.assert_allclose(cloud.normals, normals, atol=1e-6)
    np.testing.assert_allclose(cloud.points, points, atol=1e-6)
    write_ply(tmp_path / "part.ply", points, np.zeros((0, 3), int), vertex_properties={"nx": normals[:, 0]})
    with pytest.raises(MeshError, match="part.ply: .* only some of the normal properties"):
        load_shape(tmp_path / "part.ply")
    sphere = trimesh.creation.icosphere(subdivisions=1)
    write_ply(tmp_path / "mesh.ply", sphere.vertices, sphere.faces)
    assert isinstance(load_shape(tmp_path / "mesh.ply"), TriangleMesh)
    (tmp_path / "points.obj").write_text("".join(f"v {x} {y} {z}\n" for x, y, z in points))
    assert load_shape(tmp_path / "points.obj").normals is None


@pytest.mark.parametrize("with_normals", [True, False], ids=["nx ny nz", "no normals"])
def test_the_command_line_fits_a_ply_of_points(tmp_path, with_normals):
    points, normals = noisy_sphere()
    extra = {"vertex_properties": dict(zip(("nx", "ny", "nz"), normals.T))} if with_normals else {}
    write_ply(tmp_path / "scan.ply", points, np.zeros((0, 3), int), **extra)
    out = tmp_path / "out"
    result = run_engine_cli("fit", tmp_path / "scan.ply", "-o", out, "--preset", "tiny", "--steps", "100",
                            "--resolution", "32")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "metrics.json").read_text())
    assert report["input_points"] == COUNT and report["point_method"] == "winding"
    assert report["normals"] == ("given" if with_normals else "estimated")
    assert ("(normals estimated)" in result.stdout) is not with_normals
    assert ("warning: normals of scan.ply were estimated" in result.stderr) is not with_normals
    assert (out / "mesh.ply").is_file() and report["metrics"]["recall"] > 0.9


def test_the_worker_fits_points_sent_as_arrays(worker, tmp_path):
    points, _ = noisy_sphere()
    np.savez(tmp_path / protocol.INPUTS_FILENAME, points_0=points.astype(np.float32))
    params = {"preset": "tiny", "steps": 100, "resolution": 32, "device": "cpu", "names": ["Scan"], "metrics": False}
    worker.send(job("points", "fit", tmp_path, **params))
    end, _ = worker.until_end_of_job("points")
    assert end["type"] == "result", end
    assert end["summary"]["normals"] == "estimated" and "Object 'Scan'" in end["summary"]["warnings"][0]
    with np.load(tmp_path / end["outputs"], allow_pickle=False) as outputs:
        radius = np.linalg.norm(outputs["vertices"] - CENTER, axis=1)
    assert np.abs(radius - RADIUS).mean() < 0.03 * RADIUS
    np.savez(tmp_path / protocol.INPUTS_FILENAME, points_0=points[:10])
    worker.send(job("few", "fit", tmp_path, **params))
    end = worker.next()
    assert end["type"] == "error" and end["message"].startswith("Object 'Scan' has 10 points; at least 32")


def test_a_mesh_fit_is_unchanged_by_the_sample_sources():
    # The mesh path draws the same samples in the same order as before the sources (bit-identical fits).
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    mesh = check_mesh(sphere.vertices, sphere.faces)
    pool = SamplePool(mesh, 300, 300, VolumeSampling(), False, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    from engine.sampling import SurfaceSampler

    points, _ = SurfaceSampler(mesh).sample(rng, 300)
    np.testing.assert_array_equal(pool.surface_points.numpy(), points.astype(np.float32))
