"""Removing what a run made when it fails or is stopped: its temporary file or folder, and the folders
it created to hold it, so a failed run leaves nothing behind (`outputs`, `run_folder`, `interrupts`,
`training.workdir_lock`)."""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterable


def missing_folders(path: str) -> list[str]:
    """The folders `os.makedirs(path)` would create, deepest first (absolute paths)."""
    out, path = [], os.path.abspath(path)
    while not os.path.lexists(path):
        out.append(path)
        path = os.path.dirname(path)
    return out


def remove_empty(folders: Iterable[str]) -> None:
    """Remove `folders` (deepest first, as `missing_folders` lists them) while they are empty; stops
    at the first that is not (or cannot be removed)."""
    for path in folders:
        try:
            os.rmdir(path)
        except OSError:
            return


def remove_path(path: str) -> None:
    """Remove a file, a link (not what it points to) or a folder tree; errors ignored (best effort)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        with contextlib.suppress(OSError):
            os.unlink(path)
