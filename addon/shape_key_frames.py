"""Playing back baked frames of one topology (a flow morph of the source's own mesh) as shape keys: the basis is
the first frame, and relative key k, keyframed to 1 at its scene frame and 0 at its neighbours', blends the mesh
linearly from frame to frame. Keyframes need no Python to play, render and survive save and reload (DESIGN.md,
section 5); relative keys rather than absolute ones on an evaluation time, because exporters such as glTF's take
relative keys and their animated values as morph targets."""

import bpy
import numpy as np

from .core.frames import shape_key_keyframes


def add_shape_key_frames(obj: bpy.types.Object, positions: np.ndarray, names: list[str], frame_start: int) -> None:
    """Shape keys on a mesh object, one per frame of ``positions`` (frames, n, 3) in the mesh's own space, named
    ``names``: the first frame is the basis and shows at ``frame_start``, frame k at ``frame_start`` + k."""
    for frame_positions, name in zip(positions, names, strict=True):
        key_block = obj.shape_key_add(name=name, from_mix=False)
        key_block.data.foreach_set("co", np.ascontiguousarray(frame_positions, dtype=np.float32).ravel())
    key = obj.data.shape_keys
    animation = key.animation_data_create()
    animation.action = bpy.data.actions.new(f"{obj.name} Shape Keys")
    for key_block, keyframes in zip(key.key_blocks[1:], shape_key_keyframes(frame_start, len(positions)), strict=True):
        data_path = f'key_blocks["{bpy.utils.escape_identifier(key_block.name)}"].value'
        fcurve = _new_fcurve(animation.action, key, data_path)
        fcurve.keyframe_points.add(len(keyframes))
        fcurve.keyframe_points.foreach_set("co", np.array(keyframes, dtype=np.float32).ravel())
        for point in fcurve.keyframe_points:
            point.interpolation = "LINEAR"
        fcurve.update()
    obj.data.update()


def _new_fcurve(action: bpy.types.Action, key: bpy.types.Key, data_path: str) -> bpy.types.FCurve:
    if hasattr(action, "fcurve_ensure_for_datablock"):  # Blender 4.4 and later: F-curves live in an action slot
        return action.fcurve_ensure_for_datablock(key, data_path)
    return action.fcurves.new(data_path)
