"""Stage evaluations of a sphere trace (counted per stage, cancellable between batches) and the refinement of a
hit on its bracket (`engine.render`)."""

from __future__ import annotations

import math
from typing import Callable

import torch

from .render_levels import LevelStack

BATCH_SIZE = 65536
"""Points per network call: bounds the activations' memory (~70 MB a layer for a 256-wide SIREN)."""


class Evaluations(list):
    """Points evaluated per stage (a list), and the cancel check asked before every batch: a large render's
    iteration takes many batches, and Esc should not wait for it."""

    def __init__(self, stages: int, should_cancel: Callable[[], bool]):
        super().__init__([0] * stages)
        self.should_cancel = should_cancel


def evaluate(stack: LevelStack, index: int, points: torch.Tensor, evaluations: Evaluations) -> torch.Tensor:
    from .training import Cancelled

    batches = []
    for start in range(0, len(points), BATCH_SIZE):
        if evaluations.should_cancel():
            raise Cancelled("cancelled while rays were still marching")
        batches.append(stack.stage_value(index, points[start : start + BATCH_SIZE]))
    evaluations[index] += len(points)
    out = torch.cat(batches)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(
            f"the network's stage {index} gives NaN or infinite values inside its cube: the model is damaged"
        )
    return out.float()


def finest_value(stack: LevelStack, points: torch.Tensor, evaluations: Evaluations) -> torch.Tensor:
    used = range(len(stack.stages)) if stack.cumulative else (stack.finest,)
    total = torch.zeros(len(points), device=points.device)
    for k in used:
        total += evaluate(stack, k, points, evaluations)
    return total


def refine(stack, entry, direction, low, high, f_low, f_high, earlier, f_earlier, iterations, tolerance, evaluations):
    """Regula falsi (Illinois) on brackets [low, high], F_K(low) > 0 >= F_K(high), until the root is within
    ``tolerance`` (per bracket) of the best point along the ray; a NaN F_K(low) is evaluated first. The first guess
    is the inverse quadratic through (earlier, F_K(earlier)) too where that sample is known (earlier >= 0, F_K
    falling from it) and the guess stays in the bracket: the ray's profile is curved on a bracket a footprint or two
    wide, and a secant alone lands off by more than the tolerance. Returns the
    distances, the final brackets (low, high) and how many hits past their entry point had no bracket (they keep
    ``high``, and a bracket of zero width)."""
    unknown = torch.isnan(f_low)
    if bool(unknown.any()):
        f_low = f_low.clone()
        f_low[unknown] = finest_value(stack, entry[unknown] + low[unknown, None] * direction[unknown], evaluations)
    no_bracket = ~(f_low > 0.0) | (low >= high)
    unbracketed = int((no_bracket & (high > 0.0)).sum())
    low = torch.where(no_bracket, high, low)
    f_low = torch.where(no_bracket, f_high, f_low)
    closer_low = f_low.abs() < f_high.abs()
    best, best_f = torch.where(closer_low, low, high), torch.where(closer_low, f_low, f_high)
    kept = torch.zeros_like(low, dtype=torch.int8)  # which end the last iteration kept: 1 high, -1 low, 0 neither
    quadratic = inverse_quadratic(low, f_low, high, f_high, earlier, f_earlier)
    for iteration in range(iterations):
        # The root's distance along the ray, estimated by the secant of the bracket (the ends' values may be halved).
        width = high - low
        secant = (f_low - f_high) / torch.where(width > 0.0, width, 1.0)
        open_ = (width > 0.0) & (best_f.abs() > tolerance * secant)
        if not bool(open_.any()):
            break
        guess = high - f_high * (high - low) / torch.where(open_, f_high - f_low, 1.0)
        if iteration == 0:
            guess = torch.where(torch.isfinite(quadratic), quadratic, guess)
        guess = torch.where(open_, torch.minimum(torch.maximum(guess, low), high), high)
        f_guess = torch.zeros_like(low)
        f_guess[open_] = finest_value(stack, (entry + guess[:, None] * direction)[open_], evaluations)
        positive, negative = open_ & (f_guess > 0.0), open_ & (f_guess <= 0.0)
        closer = open_ & (f_guess.abs() < best_f.abs())
        best, best_f = torch.where(closer, guess, best), torch.where(closer, f_guess, best_f)
        # Illinois: the end kept twice in a row has its value halved, so the bracket shrinks from both sides.
        f_high = torch.where(positive & (kept == 1), f_high * 0.5, torch.where(negative, f_guess, f_high))
        f_low = torch.where(negative & (kept == -1), f_low * 0.5, torch.where(positive, f_guess, f_low))
        low, high = torch.where(positive, guess, low), torch.where(negative, guess, high)
        kept = torch.where(positive, 1, torch.where(negative, -1, 0)).to(torch.int8)
    return best, (low, high), unbracketed


def inverse_quadratic(low, f_low, high, f_high, earlier, f_earlier) -> torch.Tensor:
    """The root of the inverse quadratic s(F) through the three samples, NaN where it does not apply."""
    valid = (earlier >= 0.0) & (earlier < low) & (f_earlier > f_low) & (f_low > 0.0) & (f_high <= 0.0)
    d_lh, d_le, d_he = f_low - f_high, f_low - f_earlier, f_high - f_earlier
    safe = [torch.where(valid, d, 1.0) for d in (d_lh, d_le, d_he)]
    root = (low * f_high * f_earlier / (safe[0] * safe[1]) - high * f_low * f_earlier / (safe[0] * safe[2])
            + earlier * f_low * f_high / (safe[1] * safe[2]))  # fmt: skip
    return torch.where(valid & (root > low) & (root < high), root, math.nan)
