"""The image morph's settings: loss weights, the training config saved in the morph file, and the presets."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from ..networks import SirenConfig
from ..settings import SavedSettings

WARP_SHAPE = (3, 2)
"""The warp network of a file: (u, v, t) -> a 2-vector."""


# --- settings -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageMorphWeights:
    """Loss weights, each on a mean over points and coordinates (morph units squared), at ifmorph's scale: its
    landmark term is 1e4 times 1e2 (ends), 5e1 (meeting at times between) and 2e1 (round trips); identity 1e3 is
    exact here (T(x, 0) = x by construction); inverse consistency 1e4; thin-plate 1e3."""

    landmarks: float = 1e6
    """|T(p, 1) - q|^2 + |T(q, -1) - p|^2."""
    meeting: float = 5e5
    """|T(p, tau) - T(q, tau - 1)|^2 at random times tau in [0, 1]."""
    round_trips: float = 2e5
    """|T(T(p, tau), -tau) - p|^2 + |T(T(q, tau - 1), 1 - tau) - q|^2."""
    inverse: float = 1e4
    """|T(T(x, t), -t) - x|^2 (t in [-1, 1]) + |T(T(x, t), 1 - t) - T(x, 1)|^2 (t in [0, 1]) over the image."""
    thin_plate: float = 1e3
    """Mean square of the second derivatives of T: the 18 in (u, v, t) (ifmorph's), or the 8 in (u, v) with
    ``thin_plate_in_time`` off."""
    fold: float = 1e3
    """max(0, 0.1 - det dT/dx)^2: keeps T(., t) one-to-one (not in ifmorph; zero unless the warp nearly folds)."""


@dataclass(frozen=True)
class ImageMorphConfig(SavedSettings):
    """How the warp of an image morph is trained (`PRESETS` holds the CPU and GPU settings)."""

    steps: int = 20_001
    """Optimizer steps after the start (ifmorph: 20,001)."""
    batch: int = 10_000
    """Points (u, v, t) of the image per step for inverse consistency (ifmorph: 20,000, half at t = 0 for its
    identity term, which is exact here)."""
    smoothness_batch: int = 10_000
    """Points per step for the thin-plate and fold terms (each needs the warp's Jacobian at two points)."""
    landmark_times: int = 4
    """Random times tau per landmark pair per step for the meeting and round-trip terms (ifmorph: 5 fixed ones)."""
    warp: SirenConfig = field(
        default_factory=lambda: SirenConfig(
            hidden_features=128, hidden_layers=1, first_omega=24.0, hidden_omega=24.0, in_features=3, out_features=2
        )
    )
    """The warp network w(u, v, t): ifmorph's two sine layers of 128 (hidden_layers counts the second), omega 24."""
    learning_rate: float = 1e-4
    """Adam learning rate at the start (after ``warmup_steps``; cosine decay to a tenth)."""
    warmup_steps: int = 100
    """Steps over which the learning rate rises from the start's to ``learning_rate``."""
    weights: ImageMorphWeights = field(default_factory=ImageMorphWeights)
    thin_plate_in_time: bool = True
    """The thin-plate term on the full Hessian in (u, v, t) (ifmorph's); off: on the Hessian in (u, v) at each t (the
    classical thin-plate energy, zero for every affine map: it does not pull the warp off an affine map between the
    landmarks, which the mixed derivatives d^2 T / dx dt do)."""
    smoothness_step: float = 0.02
    """Finite-difference step (morph units: 1 % of the long side) of the thin-plate estimate."""
    init: Literal["affine", "identity"] = "affine"
    """affine: the warp is the one-parameter group of the landmarks' best affine map plus the learned residual
    (module notes); identity: the learned part alone, starting at T(x, t) = x (ifmorph)."""
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self):
        self.require_counts("steps", "batch", "smoothness_batch", "landmark_times")
        if self.warp.in_features != WARP_SHAPE[0] or self.warp.out_features != WARP_SHAPE[1]:
            raise ValueError("ImageMorphConfig.warp must have in_features=3 and out_features=2 (w of (u, v, t))")
        if self.init not in ("affine", "identity"):
            raise ValueError(f"ImageMorphConfig.init must be 'affine' or 'identity', got {self.init!r}")
        if not (self.learning_rate > 0 and self.smoothness_step > 0):
            raise ValueError("ImageMorphConfig needs learning_rate > 0 and smoothness_step > 0")
        if self.warmup_steps < 0:
            raise ValueError(f"ImageMorphConfig.warmup_steps must be at least 0, got {self.warmup_steps}")
        if any(not (value >= 0 and math.isfinite(value)) for value in dataclasses.asdict(self.weights).values()):
            raise ValueError(f"ImageMorphConfig.weights must be finite and non-negative, got {self.weights}")


PRESETS: dict[str, ImageMorphConfig] = {
    "cpu": ImageMorphConfig(
        steps=600, batch=2000, smoothness_batch=1000, learning_rate=5e-4, warmup_steps=50,
        weights=ImageMorphWeights(inverse=1e5),
    ),
    "gpu": ImageMorphConfig(),
}
"""cpu: ~40 CPU-seconds (one thread; bench/results/image_morph_cpu.md): 600 steps of 2,000 + 1,000 samples, a
higher learning rate, and inverse consistency weighted 1e5 instead of 1e4: in 600 steps it halves the inverse error
of a hand-made pair (1.27 -> 0.49 px mean) and leaves the landmark and held-out errors as they were (1e6 costs
landmark accuracy: 0.52 -> 0.62 px on the stereo pair). gpu: ifmorph's settings (20,001 steps of 20,000 samples,
Adam 1e-4, its weights), with the affine start."""


def preset(name: str, *, steps: int | None = None, device: str = "auto", seed: int = 0) -> ImageMorphConfig:
    """The settings of preset ``name`` (a key of `PRESETS`), with ``steps`` if given."""
    if name not in PRESETS:
        raise ValueError(f"unknown image morph preset {name!r}; choose one of {', '.join(PRESETS)}")
    changes = {"device": device, "seed": seed, **({} if steps is None else {"steps": steps})}
    return dataclasses.replace(PRESETS[name], **changes)


