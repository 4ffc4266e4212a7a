"""Network curvature of a fitted model against libigl's discrete curvature on the input mesh.

    python bench/curvature_vs_libigl.py MODEL MESH

At the input mesh's vertices (projected onto the model's zero level set), compares the network's mean curvature
H = kappa/2 with libigl's cotangent-Laplacian mean curvature (signed by the vertex normal), and the network's
Gaussian curvature with libigl's angle defect over the Voronoi area. Prints Pearson and Spearman correlations and
the median absolute difference relative to the median |reference|, all in the mesh's units.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import igl
import numpy as np
from scipy.stats import spearmanr

from engine.geometry import model_curvatures
from engine.mesh_io import load_mesh
from engine.model import load_model


def discrete_curvatures(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    laplacian = igl.cotmatrix(vertices, faces)
    area = igl.massmatrix(vertices, faces, igl.MASSMATRIX_TYPE_VORONOI).diagonal()
    mean_curvature_normal = -(laplacian @ vertices) / area[:, None] / 2.0
    mean = np.einsum("ij,ij->i", mean_curvature_normal, igl.per_vertex_normals(vertices, faces))
    return mean, igl.gaussian_curvature(vertices, faces) / area


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("mesh", type=Path)
    args = parser.parse_args()
    mesh = load_mesh(args.mesh)
    network = model_curvatures(load_model(args.model), mesh.vertices, project=True)
    mean, gaussian = discrete_curvatures(mesh.vertices, mesh.faces)
    print("quantity | pearson | spearman | median |diff| / median |libigl|")
    for name, ours, reference in (("mean H", network.mean, mean), ("gaussian K", network.gaussian, gaussian)):
        finite = np.isfinite(ours) & np.isfinite(reference)
        ours, reference = ours[finite], reference[finite]
        pearson = np.corrcoef(ours, reference)[0, 1]
        spearman = spearmanr(ours, reference).statistic
        relative = np.median(np.abs(ours - reference)) / np.median(np.abs(reference))
        print(f"{name} | {pearson:.3f} | {spearman:.3f} | {relative:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
