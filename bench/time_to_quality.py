"""Time to quality: how soon a fit reaches a good surface, ours against a re-implementation of i3d's training loop.

    python bench/time_to_quality.py ../shared/meshes/bunny.ply [MESH ...] [--every 100] [--baseline-limit-s 1800]
           [--set steps=600 --set learning_rate=1e-3 ...] [--no-baseline] [--threads 2] [--json out.json]

Per mesh, in one process and on the same threads: the default fit (`engine.fit`, preset ``fast`` with the --set
overrides) and the i3d baseline (`bench/i3d_baseline.py`), each with the weights copied at checkpoints (every
--every steps and at the last; the copies' cost is left out of the timed part). After each training the checkpoints
are extracted at --resolution and measured against the input (DESIGN §4: Chamfer-L1, NC, F@1 %, IoU). Printed:
- the curve, per checkpoint: step, seconds of training so far (wall and CPU, sample preparation included: it counts)
  and the metrics;
- per trainer: the seconds of sample preparation, and the seconds (wall, CPU) to reach IoU 0.99 and to reach the
  target quality (every one of IoU, NC and Chamfer at least as good as the target: today's final default quality on
  the shared meshes, `TARGETS`; elsewhere the default fit's own final checkpoint);
- the ratio baseline / ours of those times (">" when the baseline never got there: its limit bounds the ratio).
Numbers are for comparing within one run: the machine is shared (read DESIGN's benchmark traps).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fit_quality import with_overrides  # noqa: E402
from i3d_baseline import I3DSettings, train_i3d  # noqa: E402

from engine.extraction import extract_mesh  # noqa: E402
from engine.fit import fit_sdf, preset  # noqa: E402
from engine.mesh_io import load_mesh  # noqa: E402
from engine.metrics import far_surface, mesh_components, mesh_metrics, voxel_size  # noqa: E402
from engine.model import SDFModel  # noqa: E402

TARGETS = {
    "bunny.ply": {"iou": 0.9977, "nc": 0.9947, "chamfer_l1": 2.1e-4},
    "bunny00.ply": {"iou": 0.9981, "nc": 0.9985, "chamfer_l1": 1.7e-4},
    "knot2.ply": {"iou": 0.991, "nc": 0.984, "chamfer_l1": 2.6e-4},
}
"""Today's final quality of the default fit (bench/results/fit_quality_cpu.md), rounded as issue 13 states it."""
IOU_MILESTONE = 0.99


@dataclass
class Checkpoint:
    step: int
    wall_s: float
    """Seconds from the start of the fit (sample preparation included) to this step, checkpoint copies left out."""
    cpu_s: float
    """CPU seconds of this process over the same span."""
    state: dict
    metrics: dict = field(default_factory=dict)


class Checkpoints:
    """An ``on_step(step, model)`` that copies the weights every ``every`` steps (and at ``last``), timing the fit
    without the copies."""

    def __init__(self, every: int, last: int):
        self.every, self.last = every, last
        self.saved: list[Checkpoint] = []
        self.started_wall = self.started_cpu = 0.0
        self.spent_wall = self.spent_cpu = 0.0
        self.first_step_wall: float | None = None

    def start(self) -> None:
        self.started_wall, self.started_cpu = time.perf_counter(), time.process_time()

    def __call__(self, step: int, model: SDFModel) -> None:
        if self.first_step_wall is None:
            self.first_step_wall = time.perf_counter() - self.started_wall
        if step % self.every == 0 or step == self.last:
            self.save(step, model)

    def save(self, step: int, model: SDFModel) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        elapsed_wall = wall - self.started_wall - self.spent_wall
        elapsed_cpu = cpu - self.started_cpu - self.spent_cpu
        state = copy.deepcopy(model.network.state_dict())
        self.saved.append(Checkpoint(step, elapsed_wall, elapsed_cpu, state))
        self.spent_wall += time.perf_counter() - wall
        self.spent_cpu += time.process_time() - cpu


def measure(checkpoints: Checkpoints, network_of, normalization, mesh, resolution: int) -> None:
    """The metrics of every checkpoint; besides DESIGN §4's, the one-sided Hausdorff distance from the result to the
    input in voxels of the extraction and the result's pieces (the input's are one per closed part)."""
    voxel = voxel_size(resolution, normalization, mesh.vertices, mesh.faces)
    for checkpoint in checkpoints.saved:
        network = network_of(checkpoint.state)
        vertices, faces = extract_mesh(SDFModel(network, normalization), resolution)
        result = mesh_metrics(vertices, faces, mesh.vertices, mesh.faces)
        far = far_surface(vertices, faces, mesh.vertices, mesh.faces, 2.0 * voxel)
        checkpoint.metrics = {
            "chamfer_l1": result.chamfer_l1, "nc": result.normal_consistency, "f1": result.fscore, "iou": result.iou,
            "hd_voxels": far.hausdorff / voxel, "pieces": len(mesh_components(vertices, faces)[1]),
        }  # fmt: skip


def meets(metrics: dict, target: dict) -> bool:
    return (
        metrics["iou"] >= target["iou"]
        and metrics["nc"] >= target["nc"]
        and metrics["chamfer_l1"] <= target["chamfer_l1"]
    )


def first(checkpoints: Checkpoints, condition) -> Checkpoint | None:
    return next((c for c in checkpoints.saved if condition(c.metrics)), None)


def run_ours(mesh, config, every: int):
    recorder = Checkpoints(every, config.steps)
    recorder.start()
    model = fit_sdf(mesh, config, on_step=recorder)
    prep_s = recorder.first_step_wall - model.metadata["train_seconds"] / config.steps
    return recorder, loader(model.network), model.normalization, prep_s


def loader(network):
    """``network_of(state)``: a copy of ``network`` holding the weights ``state`` (one copy, reloaded each time)."""
    template = copy.deepcopy(network)

    def network_of(state):
        template.load_state_dict(state)
        return template

    return network_of


def run_baseline(mesh, every: int, limit_s: float, seed: int):
    settings = I3DSettings(seed=seed)
    recorder = Checkpoints(every, settings.steps)
    recorder.start()
    model, last_step, prep_s = train_i3d(mesh, settings, on_step=recorder, time_limit_s=limit_s)
    if not recorder.saved or recorder.saved[-1].step != last_step:  # the time limit stopped it between checkpoints
        recorder.save(last_step, model)
    return recorder, loader(model.network), model.normalization, prep_s


def describe(checkpoint: Checkpoint | None) -> str:
    return "never" if checkpoint is None else f"{checkpoint.wall_s:.0f} s ({checkpoint.cpu_s:.0f} CPU s, step {checkpoint.step})"


def ratio(baseline: Checkpoint | None, ours: Checkpoint | None, baseline_span: float) -> str:
    if ours is None:
        return "n/a (ours never got there)"
    if baseline is None:
        return f"> {baseline_span / ours.wall_s:.1f}x"
    return f"{baseline.wall_s / ours.wall_s:.1f}x"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("meshes", nargs="+", type=Path)
    parser.add_argument("--every", type=int, default=100, help="steps between checkpoints")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="replace a FitConfig field of the default preset (as in bench/fit_quality.py)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--baseline-limit-s", type=float, default=1800.0, help="stop the baseline after this long")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = with_overrides(preset("fast"), args.overrides)
    rows = []
    for path in args.meshes:
        mesh = load_mesh(path)
        runs = {"ours": run_ours(mesh, config, args.every)}
        if not args.no_baseline:
            runs["i3d"] = run_baseline(mesh, args.every, args.baseline_limit_s, config.seed)
        for name, (recorder, network_of, normalization, _) in runs.items():
            measure(recorder, network_of, normalization, mesh, args.resolution)
        ours = runs["ours"][0]
        target = TARGETS.get(path.name) or ours.saved[-1].metrics
        print(f"\n## {path.name} ({len(mesh.faces)} faces, {len(mesh.vertices)} vertices); target: "
              + ", ".join(f"{key} {value:.4g}" for key, value in target.items())
              + ("" if args.no_baseline else f"; i3d's own step count here: {I3DSettings().i3d_steps(mesh)}"))
        print("\n| trainer | step | wall s | CPU s | Chamfer-L1 | NC | F@1% | IoU | Hausdorff to input, voxels | pieces |"
              "\n|---|---|---|---|---|---|---|---|---|---|")
        for name, (recorder, *_rest) in runs.items():
            for c in recorder.saved:
                m = c.metrics
                print(f"| {name} | {c.step} | {c.wall_s:.1f} | {c.cpu_s:.1f} | {m['chamfer_l1']:.3g} | {m['nc']:.4f} "
                      f"| {m['f1']:.4f} | {m['iou']:.4f} | {m['hd_voxels']:.1f} | {m['pieces']} |")
        print("\n| trainer | sample prep s | to IoU 0.99 | to target |\n|---|---|---|---|")
        reached = {}
        for name, (recorder, _, _, prep_s) in runs.items():
            milestone = first(recorder, lambda m: m["iou"] >= IOU_MILESTONE)
            goal = first(recorder, lambda m: meets(m, target))
            reached[name] = (milestone, goal, recorder.saved[-1].wall_s)
            print(f"| {name} | {prep_s:.1f} | {describe(milestone)} | {describe(goal)} |")
            rows.append({
                "mesh": path.name, "trainer": name, "prep_s": prep_s, "target": target,
                "to_iou_0.99": None if milestone is None else milestone.wall_s,
                "to_target": None if goal is None else goal.wall_s,
                "curve": [{"step": c.step, "wall_s": c.wall_s, "cpu_s": c.cpu_s, **c.metrics} for c in recorder.saved],
            })  # fmt: skip
        if "i3d" in reached:
            (om, og, _), (bm, bg, span) = reached["ours"], reached["i3d"]
            print(f"\nbaseline / ours: to IoU 0.99 {ratio(bm, om, span)}, to target {ratio(bg, og, span)}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
