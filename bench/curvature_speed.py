"""Curvature at many points on a 3x256 Siren: the engine's method against the autograd double loop, in one run.

    PYTHONPATH=. python bench/curvature_speed.py [--points 100000] [--threads 2] [--candidates]

Every row computes the same thing (f, grad f, Hess f in batches of `HESSIAN_BATCH_SIZE`, then the curvatures) on
a randomly initialised float32 network, so only the Hessian method differs. The baseline is the per-component
loop of SIREN's ``diff_operators.hessian``: one ``create_graph`` backward pass per gradient component.
``--candidates`` adds the other generic forms that were measured before choosing. Both wall and CPU time are
reported because a shared machine makes wall time noisy; each is the best of ``--repeats`` rounds, the methods
taking turns within a round so that a burst of load from elsewhere hits them alike. Speed-ups are against the
baseline.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.func import hessian, jacrev, vmap

from engine.geometry import (
    HESSIAN_BATCH_SIZE,
    Curvatures,
    Derivatives,
    curvatures,
    curvatures_from_derivatives,
)
from engine.networks import Siren, SirenConfig


def double_loop(network, points: torch.Tensor) -> Derivatives:
    points = points.clone().requires_grad_(True)
    value = network(points)
    (gradient,) = torch.autograd.grad(value.sum(), points, create_graph=True)
    rows = [torch.autograd.grad(gradient[:, i].sum(), points, create_graph=True)[0] for i in range(3)]
    return Derivatives(value.detach(), gradient.detach(), torch.stack(rows, dim=1).detach())


def three_backward_passes(network, points: torch.Tensor) -> Derivatives:
    points = points.clone().requires_grad_(True)
    value = network(points)
    (gradient,) = torch.autograd.grad(value.sum(), points, create_graph=True)
    rows = [torch.autograd.grad(gradient[:, i].sum(), points, retain_graph=i < 2)[0] for i in range(3)]
    return Derivatives(value.detach(), gradient.detach(), torch.stack(rows, dim=1))


def func_transform(transform):
    def derivatives(network, points: torch.Tensor) -> Derivatives:
        def single(point):
            return network(point.unsqueeze(0)).squeeze(0)

        with torch.no_grad():
            value = network(points)
        gradient = vmap(jacrev(single))(points)
        return Derivatives(value, gradient, vmap(transform(single))(points))

    return derivatives


def in_batches(derivatives_of):
    def run(network, points: torch.Tensor) -> Curvatures:
        starts = range(0, len(points), HESSIAN_BATCH_SIZE)
        chunks = [derivatives_of(network, points[start : start + HESSIAN_BATCH_SIZE]) for start in starts]
        return curvatures_from_derivatives(points, Derivatives(*(torch.cat(parts) for parts in zip(*chunks))))

    return run


def timed(run, network, points):
    wall, cpu = time.perf_counter(), time.process_time()
    result = run(network, points)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (fixed, for comparable runs)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the best time of each method counts")
    parser.add_argument("--candidates", action="store_true", help="also time the other generic Hessian forms")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    network = Siren(SirenConfig(hidden_features=256, hidden_layers=3))
    points = torch.rand(args.points, 3) * 1.8 - 0.9

    methods = {
        "engine (auto -> siren)": lambda net, pts: curvatures(net, pts),
        "engine autograd (is_grads_batched)": lambda net, pts: curvatures(net, pts, method="autograd"),
    }
    if args.candidates:
        methods["3 backward passes (retain_graph)"] = in_batches(three_backward_passes)
        methods["torch.func vmap(jacrev(jacrev))"] = in_batches(func_transform(lambda g: jacrev(jacrev(g))))
        methods["torch.func vmap(hessian)"] = in_batches(func_transform(hessian))
    methods["autograd double loop (baseline)"] = in_batches(double_loop)

    for run in methods.values():
        run(network, points[:256])  # warm-up: first-call allocations and dispatch
    best = {name: (np.inf, np.inf, None) for name in methods}
    for _ in range(args.repeats):
        for name, run in methods.items():
            wall, cpu, result = timed(run, network, points)
            best[name] = (min(wall, best[name][0]), min(cpu, best[name][1]), result)
    rows = [(name, *times) for name, times in best.items()]
    base_wall, base_cpu, reference = rows[-1][1:]
    print(
        f"curvature at {args.points} points, 3x256 Siren float32, {args.threads} threads, "
        f"best of {args.repeats}, torch {torch.__version__}"
    )
    header = f"{'method':36s} {'wall s':>8s} {'cpu s':>8s} {'speed-up wall':>14s} {'speed-up cpu':>13s}"
    print(f"{header} {'max|dH|/max|H|':>15s}")
    scale = np.abs(reference.mean).max()
    for name, wall, cpu, result in rows:
        difference = np.abs(result.mean - reference.mean).max() / scale
        print(f"{name:36s} {wall:8.2f} {cpu:8.2f} {base_wall / wall:13.2f}x {base_cpu / cpu:12.2f}x {difference:15.1e}")


if __name__ == "__main__":
    main()
