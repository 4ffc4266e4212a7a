"""Known answers for the quality metrics of DESIGN.md section 4 (distances in units of the largest GT side)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import trimesh

from engine.metrics import (
    MeshMetrics,
    far_surface,
    ground_truth_normalization,
    mesh_components,
    mesh_metrics,
    sample_surface,
    voxel_size,
    volume_iou,
)

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


def test_a_shape_modelled_in_overlapping_parts_is_measured_on_its_surface_not_its_buried_faces():
    def box(size_x, center_x):
        return trimesh.creation.box((size_x, 1, 1), trimesh.transformations.translation_matrix((center_x, 0, 0)))

    parts, union = trimesh.util.concatenate([box(1, 0), box(1, 0.5)]), box(1.5, 0.25)
    metrics = mesh_metrics(
        union.vertices, union.faces, parts.vertices, parts.faces, samples=SAMPLES, iou_points=IOU_POINTS
    )
    assert metrics.chamfer_l1 < 1e-9 and metrics.hausdorff < 1e-9, metrics  # the buried faces are 0.25 inside
    assert metrics.normal_consistency > 1 - 1e-9 and metrics.iou == 1.0
    assert far_surface(union.vertices, union.faces, parts.vertices, parts.faces, 0.01).hausdorff < 1e-9


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


# Strays and topology (issue 13): one-sided distance result -> input, voxel size, pieces and genus.


def marched(sdf, resolution: int = 64, half_side: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The zero level set of ``sdf`` (points (..., 3) -> (...)) on a grid over [-half_side, half_side]^3."""
    from skimage import measure

    axis = np.linspace(-half_side, half_side, resolution)
    values = sdf(np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1))
    vertices, faces, _, _ = measure.marching_cubes(values, 0.0, spacing=(axis[1] - axis[0],) * 3)
    return vertices - half_side, faces


def torus_sdf(points, center=(0.0, 0.0, 0.0), major=0.45, minor=0.18):
    p = points - np.asarray(center)
    return np.hypot(np.hypot(p[..., 0], p[..., 1]) - major, p[..., 2]) - minor


def lattice_sdf(points, lines=3, radius=0.12):
    """Tubes along the lines x lines grid lines of each axis: genus 3 lines^2 (lines - 1) - lines^3 + 1."""
    positions = np.linspace(-0.7, 0.7, lines)
    nearest = np.abs(points[..., None] - positions).min(axis=-1)
    along = np.maximum(np.abs(points) - 0.7, 0.0)
    tubes = [np.sqrt(nearest[..., a] ** 2 + nearest[..., b] ** 2 + along[..., k] ** 2) for k, a, b in
             ((0, 1, 2), (1, 0, 2), (2, 0, 1))]
    return np.minimum.reduce(tubes) - radius


def genera(mesh) -> list[float]:
    return [component.genus for component in mesh_components(*mesh)[1]]


def test_genus_of_a_sphere_a_torus_a_double_torus_and_a_lattice():
    torus = trimesh.creation.torus(major_radius=1.0, minor_radius=0.3)
    assert genera(icosphere(3)) == [0.0]
    assert genera((torus.vertices, torus.faces)) == [1.0]
    double = marched(lambda p: np.minimum(torus_sdf(p, (-0.4, 0, 0)), torus_sdf(p, (0.4, 0, 0))))
    assert genera(double) == [2.0]
    assert genera(marched(lattice_sdf)) == [3 * 9 * 2 - 27 + 1]  # 28 handles
    [piece] = mesh_components(*icosphere(3))[1]
    assert (piece.closed, piece.euler_characteristic, piece.edges) == (True, 2, 1920)


def test_genus_counts_boundaries_and_split_vertices_are_welded():
    tube = trimesh.creation.cylinder(radius=1.0, height=2.0, sections=32)
    keep = np.abs(tube.face_normals[:, 2]) < 0.5  # the side only: an open tube with two boundary loops
    [side] = mesh_components(tube.vertices, tube.faces[keep])[1]
    assert (side.boundary_loops, side.closed, side.genus) == (2, False, 0.0)
    torus = trimesh.creation.torus(major_radius=1.0, minor_radius=0.3)
    split = torus.vertices[torus.faces].reshape(-1, 3), np.arange(3 * len(torus.faces)).reshape(-1, 3)  # as in STL
    [piece] = mesh_components(*split)[1]
    assert (piece.vertices, piece.genus) == (len(torus.vertices), 1.0)


def test_components_find_a_stray_triangle_and_zero_area_faces():
    vertices, faces = icosphere(2)
    n = len(vertices)
    extra = np.array([[3.0, 0.0, 0.0], [3.0, 1.0, 0.0], [3.0, 0.0, 1.0], [0.0, 0.0, 0.5]])
    vertices = np.concatenate([vertices, extra, [[9.0, 9.0, 9.0]]])  # the last one no face uses
    sliver = [faces[0][0], faces[0][0], faces[0][1]]  # a zero-area face on the sphere
    faces = np.concatenate([faces, [[n + 1, n, n + 2]], [sliver]])
    labels, components = mesh_components(vertices, faces)
    assert [(c.faces, c.vertices, c.zero_area_faces) for c in components] == [(len(faces) - 1, n, 1), (1, 3, 0)]
    assert labels[-2] == 1 and (labels[:-2] == 0).all() and labels[-1] == 0
    assert sum(c.faces == 1 for c in components) == 1


def test_the_one_sided_distance_of_a_mesh_to_itself_is_zero_and_to_a_shifted_copy_the_shift():
    sphere = icosphere(3)
    same = far_surface(*sphere, *sphere, 0.001, samples=SAMPLES)
    assert (same.hausdorff < 1e-12, same.far_share, same.far_components) == (True, 0.0, 0)
    square = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    top = square.faces[square.face_normals[:, 2] > 0.5]  # a flat unit square: every point of a copy shifted along
    vertices = np.asarray(square.vertices)  # its normal by d is d from it, and the largest GT side is 1
    shifted = vertices + [0.0, 0.0, 0.05]
    result = far_surface(shifted, top, vertices, top, 0.025, samples=SAMPLES)
    assert result.hausdorff == pytest.approx(0.05, abs=1e-12) and result.far_share == 1.0
    assert result.far_components == 1
    assert far_surface(shifted, top, vertices, top, 0.1, samples=SAMPLES).far_share == 0.0


def test_a_floater_is_a_far_component_and_its_area_share_is_measured():
    vertices, faces = icosphere(3)  # bounding box 2: the GT-normalized units are half the input's
    floater = np.array([[2.0, 0.0, 0.0], [2.0, 0.1, 0.0], [2.0, 0.0, 0.1]])
    pred = np.concatenate([vertices, floater]), np.concatenate([faces, [[len(vertices), len(vertices) + 1,
                                                                        len(vertices) + 2]]])
    result = far_surface(*pred, vertices, faces, 0.05, samples=SAMPLES)
    area_share = 0.005 / (4.0 * np.pi * 0.995)  # the floater's area over the total, about
    assert result.far_components == 1
    assert result.far_share == pytest.approx(area_share, abs=binomial_tolerance(area_share, SAMPLES) + 2e-5)
    assert result.hausdorff == pytest.approx((np.hypot(2.0, 0.1) - 1.0) / 2.0, abs=0.002)


class _SphereField(torch.nn.Module):
    """|x| - 0.5 in the model's unit cube."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # the extraction reads the device from a parameter

    def forward(self, points):
        return points.norm(dim=-1) - 0.5


def test_voxel_size_is_the_spacing_of_the_extraction_grid_in_ground_truth_units():
    from engine.conventions import Normalization
    from engine.extraction import extract_mesh
    from engine.model import SDFModel

    gt = box((4.0, 2.0, 1.0), offset=(10.0, -3.0, 1.0))
    normalization = Normalization.fit_bounds(gt[0])  # as a fit does: the largest half-side 2 becomes 0.9
    assert voxel_size(65, normalization, *gt) == pytest.approx(1.0 / (0.9 * 64))
    vertices, _ = extract_mesh(SDFModel(_SphereField(), normalization), 24)
    voxel = voxel_size(24, normalization, *gt)
    # Marching-cubes vertices lie on grid edges: two of their three coordinates are on grid planes, which are
    # whole voxels away from the grid's corner (-1, -1, -1) of the unit cube.
    gt_normalization = ground_truth_normalization(*gt)
    corner = gt_normalization.to_unit(normalization.to_input(np.full((1, 3), -1.0)))
    steps = (gt_normalization.to_unit(vertices) - corner) / voxel
    on_planes = np.abs(steps - np.round(steps)) < 1e-6
    assert (on_planes.sum(axis=1) >= 2).all()
    wrong = (gt_normalization.to_unit(vertices) - corner) / (voxel * 0.9)  # the cube's margin forgotten
    assert ((np.abs(wrong - np.round(wrong)) < 1e-6).sum(axis=1) >= 2).mean() < 0.5
