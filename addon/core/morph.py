"""Morph settings in the terms of the engine's ``morph`` job: the method's engine name, and the landmark empties
paired into the job's ``landmarks_source`` / ``landmarks_target`` inputs.

Both meshes go to the job in world space, so landmarks go in world space too and the frames come back in it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from .errors import EngineError

ENGINE_METHODS = {"LEVELSET": "levelset", "FLOW": "flow"}
"""The morph methods and the engine's name of each."""
LANDMARK_ROLES = ("SOURCE", "TARGET")
"""Where a landmark empty sits: on the source (t = 0) or on the target (t = 1)."""


@dataclass(frozen=True)
class Landmark:
    """A landmark empty as the scene places it, in world space."""

    name: str
    role: str
    """One of `LANDMARK_ROLES`."""
    pair: int
    """The source and target landmarks with the same pair id are one correspondence."""
    location: tuple[float, float, float]


def landmark_inputs(method: str, landmarks: list[Landmark]) -> dict[str, np.ndarray]:
    """The morph job's landmark inputs: ``landmarks_source`` and ``landmarks_target`` (k, 3), row i of each from
    the two empties of one pair id, in the order of the ids. Raises `EngineError` saying what to fix when the
    method takes no landmarks, there are none, or a pair id lacks a partner or has two of one role."""
    if method != "FLOW":
        raise EngineError("Landmarks guide the Flow method only: choose Flow, or turn Use Landmarks off")
    if not landmarks:
        raise EngineError(
            "Use Landmarks is on but the scene has no landmark empties: add a pair with Add Landmark Pair (Morph "
            "panel), or turn Use Landmarks off"
        )
    by_pair: dict[int, dict[str, list[Landmark]]] = defaultdict(lambda: {role: [] for role in LANDMARK_ROLES})
    for landmark in landmarks:
        by_pair[landmark.pair][landmark.role].append(landmark)
    sources, targets = [], []
    for pair in sorted(by_pair):
        roles = by_pair[pair]
        for role, partner in (("SOURCE", "TARGET"), ("TARGET", "SOURCE")):
            if len(roles[role]) > 1:
                names = ", ".join(f"'{landmark.name}'" for landmark in roles[role])
                raise EngineError(
                    f"Landmark pair {pair} has {len(roles[role])} {role.lower()} landmarks ({names}): give each pair "
                    "one source and one target landmark (change the pair id of the others)"
                )
            if not roles[partner]:
                (alone,) = roles[role]
                raise EngineError(
                    f"The {role.lower()} landmark '{alone.name}' (pair {pair}) has no {partner.lower()} partner: give "
                    f"a {partner.lower()} landmark the pair id {pair}, or delete '{alone.name}'"
                )
        sources.append(roles["SOURCE"][0].location)
        targets.append(roles["TARGET"][0].location)
    return {
        "landmarks_source": np.array(sources, dtype=np.float64).reshape(-1, 3),
        "landmarks_target": np.array(targets, dtype=np.float64).reshape(-1, 3),
    }


def free_pair_id(used: set[int]) -> int:
    """The smallest pair id (from 1) that no landmark uses."""
    pair = 1
    while pair in used:
        pair += 1
    return pair


def frame_list(frames: list[int]) -> str:
    """Scene frames as runs, e.g. ``[2, 3, 4, 7]`` -> ``"2–4, 7"``."""
    runs: list[list[int]] = []
    for frame in sorted(frames):
        if runs and frame == runs[-1][1] + 1:
            runs[-1][1] = frame
        else:
            runs.append([frame, frame])
    return ", ".join(str(start) if start == end else f"{start}\u2013{end}" for start, end in runs)


def empty_frames_text(method: str, empty_frames: list[int]) -> str:
    """What a morph's report adds when some frames (scene frame numbers) came back without a surface, and why: a
    level-set blend of two shapes that do not overlap is outside both in between, so it has no surface there."""
    if not empty_frames:
        return ""
    where = f"frame{'s' if len(empty_frames) > 1 else ''} {frame_list(empty_frames)}"
    if method == "LEVELSET":
        return (
            f"; the surface is empty in {len(empty_frames)} of them: the shapes do not overlap in {where}: "
            "move them together, or use the Flow method"
        )
    return f"; the surface is empty in {len(empty_frames)} of them ({where}): try more morph steps"


def morph_colors_text(sources: dict[str, str]) -> str:
    """What a coloured morph's report says about its colours: where each shape's came from (``sources``: by object
    name, what `addon.scene_io.source_color_inputs` says, "" for the materials' base colours)."""
    parts = [f"{what} of '{name}'" if what else f"the base colours of '{name}'" for name, what in sources.items()]
    return ", coloured from " + " and ".join(parts)
