"""``evolve --track-vertices`` on the command line: the tracked frames (the first frame's mesh carried along the flow,
engine.vertex_tracking) written beside the usual ones as ``tracked_NNNN.ply``, all on the first frame's faces."""

from __future__ import annotations

from pathlib import Path

from ..jobs import JobOutput

TRACKED_FRAME_FILENAME = "tracked_{:04d}.ply"


def write_tracked_frames(folder: Path, output: JobOutput) -> dict:
    """Write the evolve job's tracked frames (if it tracked) into ``folder``; returns what ``times.json`` says of
    them: ``{"tracking": {frames, stop, seconds, files}}``, or nothing when the job did not track."""
    from ..ply_io import write_ply

    if "tracking" not in output.summary:
        return {}
    arrays = output.arrays
    files = [TRACKED_FRAME_FILENAME.format(index) for index in range(len(arrays["tracked_positions"]))]
    for name, t, positions in zip(files, arrays["times"], arrays["tracked_positions"]):
        comments = [f"t = {float(t)!r}", "the first frame's mesh carried along the flow (vertex tracking)"]
        write_ply(folder / name, positions, arrays["tracked_faces"], comments=comments)
    return {"tracking": {**output.summary["tracking"], "files": files}}


def tracked_text(written: dict) -> str:
    """What the command's summary line adds about the tracked frames ("" when it did not track)."""
    if not written:
        return ""
    tracking = written["tracking"]
    stop = tracking["stop"]
    stopped = "" if stop is None else f" (tracking stopped {stop['message']})"
    return f", {len(tracking['files'])} tracked frames{stopped}"
