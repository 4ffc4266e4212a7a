"""Baked animations as frames: a range of scene frames, the meshes of every frame stacked into one (each vertex
tagged with its frame, for the Geometry Nodes frame switch), which frame shows at a scene frame, and the keyframes
that play frames of one topology as shape keys."""

from __future__ import annotations

import math

import numpy as np

from .errors import EngineError


def frame_count(frame_start: int, frame_end: int) -> int:
    """How many frames the range ``frame_start`` to ``frame_end`` (both included) holds; an animation needs two."""
    if frame_end <= frame_start:
        raise EngineError(
            f"The frame range {frame_start} to {frame_end} holds no animation: set an end frame after the start frame"
        )
    return frame_end - frame_start + 1


def stack_frames(frames: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every frame's vertices (n_i, 3) and faces (m_i, 3) as one mesh: the vertices one after the other, the faces
    renumbered to match, and each vertex's frame index (0 for the first frame)."""
    counts = [len(vertices) for vertices, _ in frames]
    firsts = np.cumsum([0, *counts[:-1]])
    vertices = np.concatenate([vertices for vertices, _ in frames])
    faces = np.concatenate([faces + first for (_, faces), first in zip(frames, firsts, strict=True)]).astype(np.intc)
    return vertices, faces, np.repeat(np.arange(len(frames)), counts)


def shown_frame(scene_frame: float, frame_start: int, frame_count: int) -> int:
    """Which baked frame shows at a scene frame: the frame switch's node group rounds the same way (halves up) and
    holds the first and last frames outside the range."""
    return min(max(math.floor(scene_frame - frame_start + 0.5), 0), frame_count - 1)


def shape_key_keyframes(frame_start: int, frame_count: int) -> list[list[tuple[float, float]]]:
    """(scene frame, value) keyframes of relative shape keys 1 to ``frame_count`` - 1 (the basis is frame 0), to be
    interpolated linearly: key k is 1 at frame_start + k and falls to 0 at the neighbouring frames, so between two
    frames the mesh blends linearly from one to the next. The last key stays at 1 after the end (and every key at 0
    before the start, which shows the basis)."""
    keyframes = []
    for index in range(1, frame_count):
        frame = float(frame_start + index)
        keys = [(frame - 1.0, 0.0), (frame, 1.0)]
        if index < frame_count - 1:
            keys.append((frame + 1.0, 0.0))
        keyframes.append(keys)
    return keyframes
