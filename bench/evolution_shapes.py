"""Mean curvature flow on real fitted shapes, forwards (smoothing) and backwards (sharpening), with default settings.

    python bench/evolution_shapes.py MODEL [MODEL...] [--steps N] [--threads N] [--json out.json]

No analytic law holds for a bunny, so this checks what any mean curvature flow must do: the area and the enclosed
volume shrink as t grows (d area / dt = -lambda * integral of kappa^2 < 0 for a closed surface), the surface stays
one closed piece until it nears extinction, and sharpening (t < 0, down to `SHARPEN_LIMIT` of the extinction time)
stays bounded. lambda is set so that a sphere of the shape's half-size vanishes at t = 1; frames run from
-SHARPEN_LIMIT to 0.5. Times are wall seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import trimesh

from engine.conventions import UNIT_HALF_SIZE
from engine.evolution import EvolveConfig, evolve
from engine.fields import extract_frames
from engine.model import load_model
from engine.surface_flows import SHARPEN_LIMIT, Flow


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="fitted model files")
    parser.add_argument("--steps", type=int, help="override EvolveConfig.steps")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = EvolveConfig(**({"steps": args.steps} if args.steps else {}))
    rows = []
    for path in args.models:
        model = load_model(path)
        half_size = UNIT_HALF_SIZE / model.normalization.scale
        speed = half_size**2 / 4.0  # a sphere of the shape's half-size vanishes at t = 1
        started = time.perf_counter()
        evolved = evolve(model, Flow(mean_curvature=speed), (-SHARPEN_LIMIT, 0.5), config)
        train_seconds = time.perf_counter() - started
        times = [-SHARPEN_LIMIT, -SHARPEN_LIMIT / 2, 0.0, 0.125, 0.25, 0.375, 0.5]
        for frame in extract_frames(evolved, times, args.resolution):
            mesh = trimesh.Trimesh(frame.vertices, frame.faces, process=False)
            parts = mesh.split(only_watertight=False) if len(frame.faces) else []
            rows.append({
                "model": path.stem, "train_s": round(train_seconds, 1), "t": frame.time, "faces": len(frame.faces),
                "pieces": len(parts), "piece_faces": sorted((len(part.faces) for part in parts), reverse=True)[:4],
                "watertight": bool(mesh.is_watertight) if len(frame.faces) else None,
                "area": round(float(mesh.area), 5) if len(frame.faces) else 0.0,
                "volume": round(float(mesh.volume), 6) if len(frame.faces) else 0.0,
                "finite": bool(np.isfinite(frame.vertices).all()),
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)

    print("\n| model | train s | t | faces | pieces (largest faces) | watertight | area | volume |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        pieces = f"{row['pieces']} ({', '.join(map(str, row['piece_faces']))})"
        print(f"| {row['model']} | {row['train_s']} | {row['t']:+.3f} | {row['faces']} | {pieces} | "
              f"{row['watertight']} | {row['area']} | {row['volume']} |")  # fmt: skip
    for name in dict.fromkeys(row["model"] for row in rows):
        mine = [row for row in rows if row["model"] == name]
        shrinking = all(a["area"] > b["area"] and a["volume"] > b["volume"] for a, b in zip(mine, mine[1:]))
        print(f"{name}: area and volume shrink at every step of t: {shrinking}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
