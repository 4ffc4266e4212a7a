"""Cost of one fit step (issue 13): autograd's double backward against the explicit derivative pass, eager and
compiled (`FitConfig.compiled_step`), on the default network and batches.

    PYTHONPATH=. python bench/fit_step.py [--device cpu|cuda] [--threads 1] [--steps 20]

Per variant: seconds to compile (the first step), then the mean wall and CPU seconds of a step (loss, backward,
Adam) over --steps steps after two warm-up steps, and the loss after the same steps from the same start (the
variants compute the same loss; float rounding differs). On CUDA every step's timing ends with a synchronize.
"""

from __future__ import annotations

import argparse
import time

import torch

from engine.fit import FitConfig, LossWeights, explicit_fitting_loss, fitting_loss
from engine.networks import Siren


def batch(config: FitConfig, device: torch.device, generator: torch.Generator):
    surface = torch.rand(config.surface_batch, 3, generator=generator) * 2 - 1
    normals = torch.nn.functional.normalize(torch.randn(config.surface_batch, 3, generator=generator), dim=1)
    volume = torch.rand(config.volume_batch, 3, generator=generator) * 2 - 1
    distances = volume.norm(dim=1) - 0.5
    return [t.to(device) for t in (surface, normals, volume, distances)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, config = torch.device(args.device), FitConfig()
    inputs = batch(config, device, torch.Generator().manual_seed(0))
    variants = {
        "autograd (default)": fitting_loss,
        "explicit, eager": explicit_fitting_loss,
        "explicit, compiled": torch.compile(explicit_fitting_loss, dynamic=False),
    }
    print(f"3x{config.network.hidden_features} SIREN, {config.surface_batch} surface + {config.volume_batch} volume "
          f"points a step, {args.device}, {args.threads} thread(s)\n")  # fmt: skip
    print("| variant | first step s | wall s a step | CPU s a step | loss after the steps |")
    print("|---|---|---|---|---|")
    for name, loss_function in variants.items():
        torch.manual_seed(0)
        network = Siren(config.network).to(device)
        optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate)

        def step():
            loss, _ = loss_function(network, *inputs, LossWeights(), config.eikonal_share)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            return loss

        started = time.perf_counter()
        step()
        first = time.perf_counter() - started
        step()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            loss = step()
        wall, cpu = (time.perf_counter() - wall) / args.steps, (time.process_time() - cpu) / args.steps
        print(f"| {name} | {first:.2f} | {wall:.4f} | {cpu:.4f} | {loss.item():.4f} |")


if __name__ == "__main__":
    main()
