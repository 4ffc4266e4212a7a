"""Kept for one release: the flow morph moved to `engine.morph.flow` (import it from `engine.morph`)."""

from .morph.flow import FlowMorph, FlowMorphConfig, inverse_consistency_error, morph_flow, warp_points  # noqa: F401
