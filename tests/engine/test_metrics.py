"""Known answers for the quality metrics of DESIGN.md section 4 (distances in units of the largest GT side)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import trimesh

from engine.metrics import MeshMetrics, ground_truth_normalization, mesh_metrics, sample_surface, volume_iou

SAMPLES = 20_000
IOU_POINTS = 200_000


def icosphere(subdivisions: int, radius: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return np.asarray(sphere.vertices), np.asarray(sphere.faces)


def box(extents, offset=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    mesh = trimesh.creation.box(extents=extents)
    return np.asarray(mesh.vertices) + np.asarray(offset), np.asarray(mesh.faces)


def two_boxes() -> tuple[np.ndarray, np.ndarray]:
    """A unit cube (faces 0..11, area 6, volume 1) and, 2 apart, a 1 x 1 x 2 box (area 10, volume 2)."""
    cube_vertices, cube_faces = box((1.0, 1.0, 1.0))
    long_vertices, long_faces = box((1.0, 1.0, 2.0), offset=(3.0, 0.0, 0.0))
    return np.concatenate([cube_vertices, long_vertices]), np.concatenate([cube_faces, long_faces + len(cube_vertices)])


def metrics(pred, gt, **options) -> MeshMetrics:
    options = {"samples": SAMPLES, "iou_points": IOU_POINTS} | options
    return mesh_metrics(*pred, *gt, **options)


def binomial_tolerance(share: float, count: float) -> float:
    """Three standard errors of a Monte Carlo share estimated from ``count`` independent draws."""
    return 3.0 * math.sqrt(share * (1.0 - share) / count)


def test_identical_meshes_score_perfectly():
    torus = trimesh.creation.torus(major_radius=1.0, minor_radius=0.3)
    mesh = (np.asarray(torus.vertices), np.asarray(torus.faces))
    result = metrics(mesh, mesh)
    assert result.chamfer_l1 < 1e-12
    assert result.hausdorff < 1e-12
    assert result.normal_consistency == pytest.approx(1.0, abs=1e-12)
    assert (result.fscore, result.precision, result.recall, result.iou) == (1.0, 1.0, 1.0, 1.0)


def test_ground_truth_normalization_makes_the_largest_side_one_and_centres_the_box():
    vertices, faces = box((2.0, 4.0, 1.0), offset=(1.0, 2.0, 3.0))
    stray = np.array([[100.0, 100.0, 100.0]])
    normalization = ground_truth_normalization(np.concatenate([vertices, stray]), faces)
    assert normalization.scale == pytest.approx(0.25)
    np.testing.assert_allclose(normalization.center, (1.0, 2.0, 3.0))
    unit = normalization.to_unit(vertices)
    np.testing.assert_allclose(unit.max(axis=0), (0.25, 0.5, 0.125))
    np.testing.assert_allclose(unit.min(axis=0), (-0.25, -0.5, -0.125))


class TestConcentricSpheres:
    """GT radius 1 and pred radius 1 + delta, the same icosphere scaled: the surfaces are delta apart, up to facets.

    Each face of the scaled copy is parallel to its original, and both polyhedra are convex, so every distance from
    a point on one to the other surface lies in [delta h_min, delta], with h_min the smallest distance of a face
    plane from the centre on the unit icosphere (0.9989 at 4 subdivisions).
    """

    gt = icosphere(4)
    side = 2.0  # icosphere vertices include (0, 0, +-1), so the bounding box is 2 x 2 x 2

    def pred(self, delta: float) -> tuple[np.ndarray, np.ndarray]:
        vertices, faces = self.gt
        return vertices * (1.0 + delta), faces

    def smallest_face_plane_distance(self) -> float:
        vertices, faces = self.gt
        return float(np.einsum("ij,ij->i", trimesh.Trimesh(vertices, faces).face_normals, vertices[faces[:, 0]]).min())

    def test_chamfer_and_hausdorff_equal_the_normalized_gap(self):
        delta = 0.01
        result = metrics(self.pred(delta), self.gt, iou_points=1)
        gap = delta / self.side
        lower = gap * self.smallest_face_plane_distance()
        assert lower - 1e-12 <= result.chamfer_l1 <= gap + 1e-12
        assert lower - 1e-12 <= result.hausdorff <= gap + 1e-12
        assert result.normal_consistency > 0.999

    @pytest.mark.parametrize(("gap", "expected_fscore"), [(0.005, 1.0), (0.02, 0.0)])
    def test_fscore_is_one_below_tau_and_zero_above(self, gap, expected_fscore):
        result = metrics(self.pred(gap * self.side), self.gt, iou_points=1, tau=0.01)
        assert (result.fscore, result.precision, result.recall) == (expected_fscore,) * 3

    def test_iou_is_the_volume_ratio(self):
        pred = self.pred(0.1)
        expected = trimesh.Trimesh(*self.gt).volume / trimesh.Trimesh(*pred).volume  # about (1 / 1.1)^3 = 0.75
        # Points inside either sphere: the outer polyhedron's share of the box, which is at most 2% wider than it.
        inside_either = IOU_POINTS * trimesh.Trimesh(*pred).volume / (1.02 * 2.2) ** 3
        result = metrics(pred, self.gt)
        assert result.iou == pytest.approx(expected, abs=binomial_tolerance(expected, inside_either))


def test_hausdorff_of_a_translated_box_is_the_normalized_shift():
    gt = box((2.0, 2.0, 2.0))
    pred = box((2.0, 2.0, 2.0), offset=(0.3, 0.0, 0.0))
    result = metrics(pred, gt, iou_points=1)
    # Every point of the pred's +x face is exactly the shift away from the GT's +x face; nothing is farther.
    assert result.hausdorff == pytest.approx(0.3 / 2.0, abs=1e-12)
    assert 0.0 < result.chamfer_l1 < result.hausdorff


def test_normal_consistency_ignores_face_orientation():
    vertices, faces = icosphere(3)
    result = metrics((vertices, faces[:, ::-1]), (vertices, faces), iou_points=1)
    assert result.normal_consistency == pytest.approx(1.0, abs=1e-12)
    assert result.chamfer_l1 < 1e-12


def test_normal_consistency_drops_for_a_coarsely_faceted_sphere():
    result = metrics(icosphere(1), icosphere(4), iou_points=1)
    assert 0.9 < result.normal_consistency < 0.99


def test_partial_reconstruction_has_full_precision_and_recall_equal_to_its_area_share():
    vertices, faces = two_boxes()
    result = metrics((vertices, faces[:12]), (vertices, faces))
    assert result.precision == 1.0
    area_share = 6.0 / 16.0
    assert result.recall == pytest.approx(area_share, abs=binomial_tolerance(area_share, SAMPLES))
    assert result.fscore == pytest.approx(2.0 * result.recall / (1.0 + result.recall))
    volume_share = 1.0 / 3.0
    # The union box is 4.08 x 1.08 x 2.08 and 3 of its volume units are inside the ground truth.
    inside_either = IOU_POINTS * 3.0 / (4.08 * 1.08 * 2.08)
    assert result.iou == pytest.approx(volume_share, abs=binomial_tolerance(volume_share, inside_either))


def test_metrics_do_not_change_when_both_meshes_move_and_scale_together():
    pred, gt = icosphere(2, radius=1.05), icosphere(3)
    moved_pred = (pred[0] * 7.5 + (10.0, -3.0, 2.0), pred[1])
    moved_gt = (gt[0] * 7.5 + (10.0, -3.0, 2.0), gt[1])
    original, moved = metrics(pred, gt).to_dict(), metrics(moved_pred, moved_gt).to_dict()
    # A closest point on an edge or vertex belongs to several faces, and rounding may pick another one's normal.
    assert moved.pop("normal_consistency") == pytest.approx(original.pop("normal_consistency"), abs=1e-4)
    assert moved == pytest.approx(original, rel=1e-9, abs=1e-12)


def test_the_seed_makes_results_reproducible():
    pred, gt = icosphere(2, radius=1.05), icosphere(3)
    first, again = metrics(pred, gt, seed=3), metrics(pred, gt, seed=3)
    assert first == again
    assert metrics(pred, gt, seed=4).chamfer_l1 != first.chamfer_l1


def test_to_dict_holds_every_field():
    result = metrics(icosphere(2), icosphere(2), iou_points=1, tau=0.02)
    assert set(result.to_dict()) == {
        "chamfer_l1", "normal_consistency", "fscore", "precision", "recall", "iou", "hausdorff", "tau"
    }
    assert result.to_dict()["tau"] == 0.02


def test_sample_surface_is_on_the_mesh_and_weighted_by_area():
    vertices, faces = two_boxes()
    degenerate_face = np.array([[0, 0, 1]])
    points, face_indices = sample_surface(vertices, np.concatenate([faces, degenerate_face]), SAMPLES, seed=1)
    assert points.shape == (SAMPLES, 3)
    assert len(faces) not in face_indices
    barycentric = trimesh.triangles.points_to_barycentric(vertices[faces[face_indices]], points)
    assert barycentric.min() > -1e-12
    np.testing.assert_allclose(np.einsum("ij,ijk->ik", barycentric, vertices[faces[face_indices]]), points, atol=1e-12)
    cube_share = float(np.mean(face_indices < 12))
    assert cube_share == pytest.approx(6.0 / 16.0, abs=binomial_tolerance(6.0 / 16.0, SAMPLES))
    again, _ = sample_surface(vertices, faces, SAMPLES, seed=1)
    np.testing.assert_array_equal(points, again)


def test_volume_iou_of_meshes_that_enclose_nothing_is_nan():
    patch = (np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), np.array([[0, 1, 2]]))
    assert math.isnan(volume_iou(*patch, *patch, points=10_000))


GOOD = icosphere(1)
FOUR_COLUMNS = np.zeros((len(GOOD[0]), 4))
WITH_NAN = GOOD[0].copy()
WITH_NAN[3, 1] = np.nan
FLAT = (np.zeros((3, 3)), np.array([[0, 1, 2]]))
OUT_OF_RANGE = GOOD[1].copy()
OUT_OF_RANGE[5, 2] = 99


@pytest.mark.parametrize(
    ("arguments", "options", "message"),
    [
        ((FOUR_COLUMNS, GOOD[1], *GOOD), {}, f"pred_vertices must be (n, 3), got shape ({len(GOOD[0])}, 4)"),
        ((np.zeros((0, 3)), GOOD[1], *GOOD), {}, "pred_vertices is empty"),
        ((*GOOD, WITH_NAN, GOOD[1]), {}, "gt_vertices has NaN or infinite coordinates"),
        ((*GOOD, GOOD[0], np.zeros((0, 3), dtype=int)), {}, "gt_faces is empty"),
        ((*GOOD, GOOD[0], GOOD[1][:, :2]), {}, "gt_faces must be (m, 3) triangles, got shape"),
        ((GOOD[0], GOOD[1].astype(float), *GOOD), {}, "pred_faces must hold integer vertex indices"),
        ((*GOOD, GOOD[0], OUT_OF_RANGE), {}, "gt_faces: face 5 refers to vertex 99, but gt_vertices has only 42"),
        ((*FLAT, *GOOD), {}, "pred_faces: all 1 faces have zero area"),
        ((*GOOD, *GOOD), {"samples": 0}, "samples must be a positive integer, got 0"),
        ((*GOOD, *GOOD), {"iou_points": 2.5}, "iou_points must be a positive integer, got 2.5"),
        ((*GOOD, *GOOD), {"tau": 0.0}, "tau must be a positive finite distance, got 0.0"),
        ((*GOOD, *GOOD), {"tau": float("nan")}, "tau must be a positive finite distance, got nan"),
    ],
)
def test_bad_inputs_raise_value_errors_that_name_the_argument(arguments, options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        mesh_metrics(*arguments, **options)


def test_the_separate_pieces_name_their_own_arguments():
    with pytest.raises(ValueError, match=re.escape("vertices must be (n, 3), got shape (42, 2)")):
        sample_surface(GOOD[0][:, :2], GOOD[1], 10)
    with pytest.raises(ValueError, match=re.escape("count must be a positive integer, got -1")):
        sample_surface(*GOOD, -1)
    with pytest.raises(ValueError, match=re.escape("points must be a positive integer, got 0")):
        volume_iou(*GOOD, *GOOD, points=0)
