"""The kit every training loop of the engine shares (fit, evolution, morphs): progress reports, the one cancel
exception, the monitor that checks both each step, the learning-rate schedule, the device choice and seeding."""

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


class TrainingMonitor:
    """The cancel check and the progress reports of a training loop (fit, evolution, morph).

    ``on_progress`` gets a `Progress` at most every ``interval_s`` seconds and at the last step; the loss terms are
    read only then, since each read waits for the device. ``should_cancel`` is asked before every step.
    """

    def __init__(self, what: str, total: int, on_progress, should_cancel, interval_s: float = 0.5):
        self.what, self.total = what, total
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
        if self.on_progress is None or (now - self.last_report < self.interval_s and step != self.total):
            return
        self.last_report = now
        elapsed = now - self.started
        values = {name: term.item() for name, term in terms.items()}
        self.on_progress(Progress(step, self.total, loss.item(), values, elapsed, elapsed / step * (self.total - step)))


def cosine_schedule(optimizer: torch.optim.Optimizer, steps: int, final_factor: float):
    """The learning rate decays along a cosine from its start to ``final_factor`` times it at step ``steps``."""

    def factor(step: int) -> float:
        progress = min(step / max(steps, 1), 1.0)
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
