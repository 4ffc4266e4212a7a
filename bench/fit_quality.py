"""Fit quality benchmark: fit each mesh with a preset, extract, measure against the input; print a table + JSON.

    python bench/fit_quality.py ../shared/meshes/bunny.ply ../shared/meshes/knot2.ply [--preset fast] [--json out.json]
    python bench/fit_quality.py knot2.ply --set steps=2500 --set network.first_omega=60 --set weight_averaging=0.995

Metrics follow DESIGN.md §4 (ground truth scaled so its largest bounding-box side is 1). Train seconds are wall
time on this machine; on a shared machine compare them only within one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from engine.extraction import extract_mesh
from engine.fit import PRESETS, FitConfig, fit_sdf, preset
from engine.mesh_io import load_mesh
from engine.metrics import mesh_metrics

COLUMNS = ("mesh", "faces", "preset", "steps", "train_s", "extract_s", "chamfer_l1", "nc", "f@1%", "iou", "hausdorff")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("meshes", nargs="+", type=Path)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="fast")
    parser.add_argument("--steps", type=int, help="override the preset's steps")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--curvature-sampling", action="store_true", help="i3d curvature-band surface sampling")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="replace one FitConfig field of the preset (dotted for nested ones: network.first_omega=60); repeatable",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--save-models", type=Path, help="folder to save each fitted model in (MESH_STEM.pt)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    overrides = {"curvature_sampling": args.curvature_sampling}
    if args.steps:
        overrides["steps"] = args.steps
    config = with_overrides(preset(args.preset, **overrides), args.overrides)
    label = " ".join([args.preset] + (["+curv"] if args.curvature_sampling else []) + args.overrides)
    rows = []
    print(" | ".join(COLUMNS))
    for path in args.meshes:
        mesh = load_mesh(path)
        started = time.perf_counter()
        model = fit_sdf(mesh, config)
        train_seconds = time.perf_counter() - started
        if args.save_models:
            args.save_models.mkdir(parents=True, exist_ok=True)
            model.save(args.save_models / f"{path.stem}.pt")
        started = time.perf_counter()
        vertices, faces = extract_mesh(model, args.resolution)
        extract_seconds = time.perf_counter() - started
        metrics = mesh_metrics(vertices, faces, mesh.vertices, mesh.faces)
        row = {
            "mesh": path.name,
            "faces": len(mesh.faces),
            "preset": label,
            "steps": config.steps,
            "train_s": round(train_seconds, 1),
            "extract_s": round(extract_seconds, 1),
            "chamfer_l1": round(metrics.chamfer_l1, 6),
            "nc": round(metrics.normal_consistency, 4),
            "f@1%": round(metrics.fscore, 4),
            "iou": round(metrics.iou, 4),
            "hausdorff": round(metrics.hausdorff, 4),
        }
        rows.append(row)
        print(" | ".join(str(row[column]) for column in COLUMNS), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def with_overrides(config: FitConfig, assignments: list[str]) -> FitConfig:
    """The config with each ``dotted.key=value`` replaced (value read as JSON, else kept as a string)."""
    data = config.to_dict()
    for assignment in assignments:
        key, separator, text = assignment.partition("=")
        if not separator:
            raise SystemExit(f"--set needs KEY=VALUE, got {assignment!r}")
        *parents, name = key.split(".")
        target = data
        for parent in parents:
            target = target[parent]
        if name not in target:
            raise SystemExit(f"--set: FitConfig has no field {key!r}")
        try:
            target[name] = json.loads(text)
        except json.JSONDecodeError:
            target[name] = text
    return FitConfig.from_dict(data)


if __name__ == "__main__":
    sys.exit(main())
