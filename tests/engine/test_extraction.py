"""Extraction by slabs and sign proofs (issue 13) gives the dense grid's mesh, which is scikit-image's on the grid."""

import numpy as np
import pytest
import torch
from skimage import measure

from engine import extraction
from engine.conventions import Normalization
from engine.extraction import SLAB_CELLS, extract_mesh
from engine.model import SDFModel, load_model
from engine.networks import Siren, SirenConfig
from tests.engine.test_fit import fitted_sphere  # noqa: F401  (the fixture)

LEGACY_MODEL = "tests/data/legacy_v1_model.pt"


def _same_mesh(a, b, tolerance):
    """The same vertices (each matched to its nearest) and the same oriented faces, in any order."""
    from scipy.spatial import cKDTree

    assert a[0].shape == b[0].shape and a[1].shape == b[1].shape
    distance, match = cKDTree(b[0]).query(a[0])
    assert distance.max() <= tolerance and len(np.unique(match)) == len(match)

    def canonical(faces):
        faces = faces[np.arange(len(faces))[:, None], (np.argmin(faces, axis=1)[:, None] + np.arange(3)) % 3]
        return faces[np.lexsort(faces.T[::-1])]

    np.testing.assert_array_equal(canonical(match[a[1]]), canonical(b[1]))


def _random_siren_model(seed=3):
    torch.manual_seed(seed)
    network = Siren(SirenConfig(hidden_features=32, hidden_layers=2, first_omega=10.0))
    with torch.no_grad():
        network.output.bias.fill_(0.05)
    return SDFModel(network, Normalization((0.0, 0.0, 0.0), 1.0))


@pytest.mark.parametrize("resolution", [70, 97])
def test_slabs_give_the_whole_grids_marching_cubes(resolution):
    """Marching cubes by slabs of SLAB_CELLS, seams merged, is scikit-image's mesh of the whole grid."""
    assert resolution - 1 > 2 * SLAB_CELLS  # at least two seams
    model = load_model(LEGACY_MODEL)
    vertices, faces = extract_mesh(model, resolution, skip_empty_space=False)
    axis = np.linspace(-1.0, 1.0, resolution)
    points = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    with torch.no_grad():
        values = model.network(torch.from_numpy(points.astype(np.float32))).numpy().reshape((resolution,) * 3)
    whole_vertices, whole_faces, _, _ = measure.marching_cubes(values, 0.0, spacing=(2.0 / (resolution - 1),) * 3)
    whole = model.normalization.to_input(whole_vertices.astype(np.float64) - 1.0)
    cell = 2.0 / (resolution - 1) / model.normalization.scale
    _same_mesh((vertices, faces), (whole, whole_faces), 1e-3 * cell)


@pytest.mark.parametrize("resolution", [40, 70, 97])
def test_sparse_extraction_equals_the_dense_one_bit_for_bit(resolution):
    """The same slabs and the same values at the cells that straddle the surface: the same arrays."""
    for model in (load_model(LEGACY_MODEL), _random_siren_model()):
        sparse = extract_mesh(model, resolution)
        dense = extract_mesh(model, resolution, skip_empty_space=False)
        np.testing.assert_array_equal(sparse[1], dense[1])
        np.testing.assert_allclose(sparse[0], dense[0], atol=1e-6)


def test_sparse_extraction_evaluates_far_fewer_points(fitted_sphere):  # noqa: F811
    counts = {}
    for skip in (True, False):
        evaluator = extraction._Evaluator
        seen = []

        class Counting(evaluator):
            def __call__(self, indices):
                seen.append(len(indices))
                return super().__call__(indices)

        extraction._Evaluator = Counting
        try:
            extract_mesh(fitted_sphere, 129, skip_empty_space=skip)
        finally:
            extraction._Evaluator = evaluator
        counts[skip] = sum(seen)
    assert counts[False] == 129**3
    assert counts[True] < counts[False] / 8


def test_the_near_surface_bound_is_never_below_the_minimum():
    model = _random_siren_model()
    evaluate_at = extraction._Evaluator(model.network, 33, 2.0 / 32, 4096)
    _, _, _, lipschitz = extraction._coarse_lattice(model.network, 33, 2.0 / 32, evaluate_at)
    assert lipschitz >= extraction.MIN_LIPSCHITZ
