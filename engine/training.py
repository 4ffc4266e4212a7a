"""The kit every training loop of the engine shares (fit, evolution, morphs): progress reports, the one cancel
exception, the monitor that checks both each step and stops a loop whose loss or weights turn NaN or infinite
(`Diverged`), the learning-rate schedule, the device choice and seeding."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Progress:
    """One progress report of a training loop."""

    step: int
    total: int
    loss: float
    terms: dict[str, float]
    elapsed_s: float
    eta_s: float


class Cancelled(Exception):
    """The caller asked a training loop (or a frame extraction) to stop."""


class Diverged(RuntimeError):
    """A training loop's loss or weights turned NaN or infinite: its result would be garbage, so it stops. The
    message says what diverged, where, and what to change."""


class TrainingMonitor:
    """The cancel check, the progress reports and the divergence check of a training loop (fit, evolution, morph).

    - ``on_progress`` gets a `Progress` at most every ``interval_s`` seconds and at the last step; the loss is read
      only then (with or without ``on_progress``), since each read waits for the device.
    - A loss read as NaN or infinite raises `Diverged` naming the step and ``advice`` (what to change); so do NaN or
      infinite weights at the end (`check_weights`).
    - ``should_cancel`` is asked before every step.
    """

    def __init__(
        self, what: str, total: int, on_progress, should_cancel, interval_s: float = 0.5, advice: str = ""
    ):
        self.what, self.total, self.advice = what, total, advice or "lower the learning rate"
        self.on_progress, self.should_cancel, self.interval_s = on_progress, should_cancel, interval_s
        self.started = self.last_report = time.perf_counter()

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    def before_step(self, step: int) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled(f"{self.what} cancelled at step {step - 1} of {self.total}")

    def after_step(self, step: int, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        now = time.perf_counter()
        if now - self.last_report < self.interval_s and step != self.total:
            return
        self.last_report = now
        value = loss.item()
        if not math.isfinite(value):
            values = {name: term.item() for name, term in terms.items()}
            bad = [name for name, term in values.items() if not math.isfinite(term)]
            which = f", in the term{'s' if len(bad) > 1 else ''} {', '.join(bad)}" if bad and len(bad) < len(values) else ""
            raise Diverged(f"the {self.what} diverged (loss {value} at step {step}{which}): {self.advice}")
        if self.on_progress is None:
            return
        elapsed = now - self.started
        values = {name: term.item() for name, term in terms.items()}
        self.on_progress(Progress(step, self.total, value, values, elapsed, elapsed / step * (self.total - step)))

    def check_weights(self, *networks: torch.nn.Module) -> None:
        """`Diverged` unless every weight of ``networks`` is finite (once, after the last step)."""
        for network in networks:
            if not all(bool(torch.isfinite(p).all()) for p in network.parameters()):
                raise Diverged(
                    f"the {self.what} diverged (its weights hold NaN or infinite values after {self.total} steps): "
                    f"{self.advice}"
                )


def cosine_schedule(optimizer: torch.optim.Optimizer, steps: int, final_factor: float, warmup_steps: int = 0):
    """The learning rate rises linearly over ``warmup_steps`` (none by default), then decays along a cosine from its
    start to ``final_factor`` times it at step ``steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min((step - warmup_steps) / max(steps - warmup_steps, 1), 1.0)
        return final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def pick_device(choice: str) -> torch.device:
    """The device of a config's ``device`` field: ``auto`` takes CUDA when PyTorch sees a GPU."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for, but PyTorch sees no CUDA GPU (install a CUDA build of torch)")
    return torch.device(choice)


def seeded(seed: int) -> tuple[np.random.Generator, torch.Generator]:
    """Seed torch's global generator (network initialization) and return a numpy and a torch generator with the same
    seed (sampling): the same inputs and config then give the same result on the same device."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed), torch.Generator().manual_seed(seed)
