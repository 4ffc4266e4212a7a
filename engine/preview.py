"""Live previews of a surface while its network trains (issue 14): a low-resolution extraction of the current
weights every few seconds, within a budget of the training time.

- A preview reads the weights only (`engine.extraction.extract_mesh`: inference mode, one gradient pass for the
  Lipschitz bound, no random draws): the optimizer, the weights and every generator are left as they were, so a fit
  gives the same model, bit for bit, with previews or without.
- At most one preview per ``interval_s`` seconds (counted from the end of the last one), and none while the previews
  so far and one more (as costly as the last) would take more than ``budget`` of the elapsed time: after the first,
  their cost stays within ``budget`` of the fit's (bench/preview_cost.py measures it).
- A field with no zero level set yet (early in a fit), a broken one, or a preview that cannot be written is skipped:
  a preview never fails the fit.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

PREVIEW_RESOLUTION = 48
"""Marching-cubes grid points per axis of a preview: a 48^3 grid is about a tenth of a second on a CPU core."""
PREVIEW_BUDGET = 0.05
"""Share of the elapsed training time the previews may take: beyond it, previews wait."""


class LivePreview:
    """Previews of a training network for ``show(vertices, faces)``: vertices (n, 3) float64 in the input's
    coordinates, faces (m, 3) int32, as a fit's final surface.

    A training loop calls `due` after each step (cheap: one clock read) and, when it says so, `show_model` with the
    current weights as an `engine.model.SDFModel`.
    """

    def __init__(
        self,
        interval_s: float,
        show: Callable[[np.ndarray, np.ndarray], None],
        resolution: int = PREVIEW_RESOLUTION,
        budget: float = PREVIEW_BUDGET,
        clock: Callable[[], float] = time.perf_counter,
    ):
        if not interval_s > 0:
            raise ValueError(f"the preview interval must be more than 0 seconds, got {interval_s}")
        self.interval_s, self.show, self.resolution, self.budget, self.clock = interval_s, show, resolution, budget, clock
        self.started = self.last = clock()
        self.spent_s = 0.0
        """Seconds the previews took so far (extraction and writing), skipped ones included."""
        self.last_cost_s = 0.0
        """Seconds the last preview took: what the next one is expected to cost."""
        self.shown = 0
        """Previews handed to ``show``."""

    def due(self) -> bool:
        now = self.clock()
        return (
            now - self.last >= self.interval_s
            and self.spent_s + self.last_cost_s <= self.budget * (now - self.started)
        )

    def show_model(self, model) -> bool:
        """Extract ``model``'s surface at the preview resolution and show it; False when there was none to show
        (no zero level set yet, a broken field, or ``show`` failed to write it)."""
        from .extraction import extract_mesh

        began = self.clock()
        try:
            vertices, faces = extract_mesh(model, self.resolution)
            self.show(vertices.astype(np.float64), faces.astype(np.int32))
        except (ValueError, OSError):  # EmptySurfaceError is a ValueError; so is a non-finite field
            return False
        else:
            self.shown += 1
            return True
        finally:
            self.last = self.clock()
            self.last_cost_s = self.last - began
            self.spent_s += self.last_cost_s
