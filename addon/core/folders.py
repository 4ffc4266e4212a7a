"""Folders the add-on writes (the cache folder, its jobs and models folders, the environment of Set up engine, the
models folder beside a .blend): each one is made or checked here, and any OSError becomes the one `EngineError`,
naming the path and what to do, before a job starts."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import EngineError

CHOOSE_CACHE = "choose a writable Cache Folder in the add-on preferences (or leave it empty for the default)"
"""What to do when the cache folder, or a folder in it, cannot be written."""
SAVE_ELSEWHERE = "save the .blend in a writable folder"
"""What to do when the models folder beside the .blend cannot be written."""


def make_folder(path: Path, what: str, remedy: str = CHOOSE_CACHE) -> Path:
    """``path`` as a folder, made with its parents if missing; raises `EngineError` ("The <what> <path> cannot be
    created (<reason>): <remedy>") when it cannot be (a file is in the way, a read-only place ...)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not path.is_dir():
            raise NotADirectoryError(f"{path} is not a folder")
    except OSError as error:
        raise EngineError(f"The {what} {path} cannot be created ({reason(error)}): {remedy}") from error
    return path


def check_folder_can_be_made(path: Path, what: str, remedy: str) -> None:
    """Raise `EngineError` unless ``path`` is a writable folder or could be made as one (its nearest existing parent
    is a writable folder). Makes nothing: for folders that should appear only when something goes into them."""
    existing = path
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        problem = f"{existing} is not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable"
    else:
        return
    raise EngineError(f"The {what} {path} cannot be created ({problem}): {remedy}")


def reason(error: OSError) -> str:
    """An OSError in a few words: "Not a directory", "Permission denied", "Read-only file system"."""
    return error.strerror or str(error) or type(error).__name__
