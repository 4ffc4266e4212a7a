"""Wrote the legacy_v1_* files with engine 0.1.0 at commit adee436, before the network kind entered the model
file header (issue 11). Kept to show how they were made; it no longer runs against the current engine."""
import json, numpy as np, torch, trimesh
from pathlib import Path
from engine.mesh_io import check_mesh
from engine.fit import fit_sdf, preset
from engine.evolution import Flow, EvolveConfig, evolve, save_evolution, at_time
from engine.morph import fit_pair, morph_levelset, LevelSetMorphConfig, save_morph
from engine.model import SirenConfig
torch.set_num_threads(1)
out = Path("tests/data")
sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
mesh = check_mesh(sphere.vertices, sphere.faces, name="sphere")
config = preset("tiny", steps=60, pool_size=5000, surface_batch=500, volume_batch=500, device="cpu",
                network=SirenConfig(hidden_features=16, hidden_layers=1, first_omega=15.0))
model = fit_sdf(mesh, config)
model.save(out / "legacy_v1_model.pt")
evolved = evolve(model, Flow(normal_speed=0.1), (0.0, 1.0), EvolveConfig(steps=3, spacetime_batch=200, pool_size=2000, device="cpu"))
save_evolution(evolved, out / "legacy_v1_evolution.pt")
box = check_mesh(*(lambda b: (b.vertices, b.faces))(trimesh.creation.box(extents=(0.8, 0.8, 0.8))), name="box")
a, b = fit_pair(mesh, box, config)
morphed = morph_levelset(a, b, LevelSetMorphConfig(steps=3, batch=200, device="cpu",
    correction=SirenConfig(hidden_features=16, hidden_layers=1, first_omega=8.0, in_features=4)))
save_morph(morphed, out / "legacy_v1_morph.pt")
points = np.random.default_rng(0).uniform(-0.6, 0.6, (16, 3))
expected = {
    "points": points.tolist(),
    "model_sdf": model.sdf(points).tolist(),
    "evolution_sdf_t0.5": at_time(evolved, 0.5).sdf(points).tolist(),
    "morph_sdf_t0.5": at_time(morphed, 0.5).sdf(points).tolist(),
}
(out / "legacy_v1_expected.json").write_text(json.dumps(expected, indent=1) + "\n")
