"""Morph benchmark: fit each pair in one cube with the default preset, morph it, mesh the frames, measure them.

    python bench/morph_pairs.py ../shared/meshes/bunny.ply:../shared/meshes/knot2.ply data/suzanne.ply:sphere
        [--methods levelset flow] [--frames 9] [--fit-steps N] [--cache DIR] [--json out.json]

``sphere`` stands for an icosphere of radius 1. The target is first moved and scaled onto the source's bounding box,
as ``python -m engine morph`` does by default. Per frame: Chamfer-L1 (DESIGN.md §4: in units of the reference's
largest bounding-box side) to the source and to the target; the ends should match their inputs within the fit
error, the frames between move from one to the other. Times are wall seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import trimesh

from engine.fields import even_times, extract_frames
from engine.fit import preset
from engine.mesh_io import check_mesh, load_mesh
from engine.metrics import mesh_metrics
from engine.model import load_model
from engine.morph import align_bounds, fit_pair, morph, morph_config


def load(name: str):
    if name == "sphere":
        sphere = trimesh.creation.icosphere(subdivisions=5, radius=1.0)
        return check_mesh(sphere.vertices, sphere.faces, name="sphere")
    return load_mesh(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="+", help="SOURCE:TARGET mesh paths (or 'sphere')")
    parser.add_argument("--methods", nargs="+", choices=("levelset", "flow"), default=["levelset", "flow"])
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--fit-steps", type=int, help="override the fast preset's steps")
    parser.add_argument("--morph-steps", type=int, help="override each method's steps")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--cache", type=Path, help="keep each pair's two fits here and reuse them on the next run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fit_config = preset("fast", **({"steps": args.fit_steps} if args.fit_steps else {}))
    rows = []
    for pair in args.pairs:
        source_name, target_name = pair.split(":")
        source, target = load(source_name), load(target_name)
        target, _, _ = align_bounds(target, source)  # as the CLI does by default
        stem = f"{Path(source_name).stem}_to_{Path(target_name).stem}"
        cached = [] if args.cache is None else [args.cache / f"{stem}_{end}.pt" for end in "ab"]
        if cached and all(path.is_file() for path in cached):
            model_a, model_b = (load_model(path) for path in cached)
        else:
            model_a, model_b = fit_pair(source, target, fit_config)
            for path, model in zip(cached, (model_a, model_b)):
                path.parent.mkdir(parents=True, exist_ok=True)
                model.save(path)
        fit_seconds = model_a.metadata["train_seconds"] + model_b.metadata["train_seconds"]
        for method in args.methods:
            config = morph_config(method, steps=args.morph_steps)
            started = time.perf_counter()
            morphed = morph(model_a, model_b, config)
            train_seconds = time.perf_counter() - started
            started = time.perf_counter()
            frames = extract_frames(morphed, even_times(args.frames), args.resolution)
            frame_seconds = (time.perf_counter() - started) / len(frames)
            to_source, to_target = [], []
            for frame in frames:
                for reference, column in ((source, to_source), (target, to_target)):
                    if len(frame.faces) == 0:
                        column.append(None)
                        continue
                    metrics = mesh_metrics(
                        frame.vertices, frame.faces, reference.vertices, reference.faces, iou_points=10_000
                    )
                    column.append(round(metrics.chamfer_l1, 5))
            row = {
                "pair": f"{Path(source_name).stem} -> {Path(target_name).stem}",
                "method": method,
                "fit_s": round(fit_seconds, 1),
                "train_s": round(train_seconds, 1),
                "frame_s": round(frame_seconds, 2),
                "times": [round(f.time, 3) for f in frames],
                "chamfer_to_source": to_source,
                "chamfer_to_target": to_target,
                "faces": [len(f.faces) for f in frames],
            }
            if method == "flow":
                row["inverse_consistency"] = morphed.metadata["morph"]["inverse_consistency"]
                row["inverse_consistency"].pop("per_time", None)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| pair | method | fit s | morph train s | s/frame | t | Chamfer to source | Chamfer to target |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        for i, t in enumerate(row["times"]):
            head = (row["pair"], row["method"], row["fit_s"], row["train_s"], row["frame_s"]) if i == 0 else ("",) * 5
            print("| " + " | ".join(map(str, (*head, t, row["chamfer_to_source"][i], row["chamfer_to_target"][i]))) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
