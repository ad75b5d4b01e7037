"""The folder one sampling run writes: complete or absent, never half-written, never an earlier run's.

A run writes into a hidden temporary folder next to its final place
(`<parent>/.<name>-<time>.<pid>-<token>@<host>.partial`, `outputs.temp_name`) and renames it to
`<parent>/<name>-<time>` (suffixed `-1`, `-2`, ... if taken) only when every file is written. On any
failure the temporary folder is removed; a run killed outright (SIGKILL, power loss) leaves its hidden
`.partial` folder, which no later run reads or reuses, and the next run into the same `parent` removes
it by the rule `outputs.py` uses for its temporary files: named like ours, made on this host by this
user, and its writer process gone (anything else is left alone). File names derived from prompts are
bounded in UTF-8 bytes (file systems limit names to 255 bytes, not characters) and made unique within
a run by their index prefix.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import re
import shutil
from dataclasses import dataclass
from typing import Iterator, Mapping

from animatediff_jax.cleanup import missing_folders, remove_empty
from animatediff_jax.errors import OutputError
from animatediff_jax.interrupts import raise_if_signalled, temporary
from animatediff_jax.outputs import (clean_stale_matching, nearest_existing, not_a_folder, temp_name, write_failure,
                                     write_problem)
from animatediff_jax.video import default_mode

STAMP_FORMAT = "%Y-%m-%dT%H-%M-%S"
_RUN_NAME = r".+-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d"  # `<name>-<time>` of any run's folder
STEM_BYTES = 120  # a prompt-derived file stem, at most (leaves room for suffixes and temp names in 255)


def check_writable_parent(parent: str, flag: str = "--out") -> None:
    """`parent` is (or can be created as) a writable folder; else an OutputError naming it. Leaves
    nothing behind (the probe file of `outputs.write_problem` is removed)."""
    probe = nearest_existing(parent)
    if not os.path.isdir(probe):
        raise OutputError(f"{flag} {parent}: {probe} is {not_a_folder(probe)}, not a folder")
    why = write_problem(probe)
    if why:
        raise OutputError(f"{flag} {parent}: {probe} is not writable ({why})")


@dataclass
class RunFolder:
    """Where a run writes (`partial`, hidden) and, once it succeeded, where its files are (`final`)."""
    partial: str
    final: str | None = None


@contextlib.contextmanager
def run_folder(parent: str, name: str, flag: str = "--out") -> Iterator[RunFolder]:
    """Yield a `RunFolder` whose hidden `partial` folder the run writes into; on success it is renamed
    to a fresh `parent/name-<time>` (then `final`), on failure removed. Killed runs' leftovers in
    `parent` are removed first (module docstring).

    Raises OutputError naming `parent` when it cannot be created or written."""
    created = missing_folders(parent)
    try:
        os.makedirs(parent, exist_ok=True)
        clean_stale_matching(parent, _RUN_NAME)  # hidden folders of runs that were killed outright
        stamp = datetime.datetime.now().strftime(STAMP_FORMAT)
        tmp = temp_name(os.path.join(parent, f"{name}-{stamp}"))
        os.mkdir(tmp)
        os.chmod(tmp, default_mode(folder=True))
    except OSError as e:
        remove_empty(created)
        raise OutputError(f"{flag} {parent}: cannot create the run folder ({write_failure(e, parent)})") from None
    folder = RunFolder(tmp)
    try:
        with temporary(tmp, created):
            yield folder
            raise_if_signalled()  # a Ctrl-C/SIGTERM whose exception was swallowed never completes a run
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty(created)
        raise
    try:
        folder.final = _rename_fresh(tmp, os.path.join(parent, f"{name}-{stamp}"))
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"{flag} {parent}: cannot move the finished run into place "
                          f"({write_failure(e, parent)})") from None


def _rename_fresh(tmp: str, target: str) -> str:
    """Rename `tmp` to `target`, or `target-1`, `target-2`, ... whichever is free first."""
    k = 0
    while True:
        path = target + (f"-{k}" if k else "")
        if not os.path.lexists(path):
            try:
                os.rename(tmp, path)  # fails (ENOTEMPTY/EEXIST) if a run took the name meanwhile
                return path
            except OSError:
                if not os.path.lexists(path):
                    raise
        k += 1


def slug(prompt: str | Mapping[int, str], max_bytes: int = STEM_BYTES) -> str:
    """A file-name stem from a prompt (or a prompt-travel map, its prompts in frame order): its first words
    joined by `-`, without punctuation, at most `max_bytes` UTF-8 bytes (cut at a character boundary);
    "sample" if empty."""
    text = prompt if isinstance(prompt, str) else " ".join(p for _, p in sorted(dict(prompt).items(),
                                                                                key=lambda kv: int(kv[0])))
    stem = "-".join(re.sub(r"[^\w\s-]", "", text).split()[:10])
    stem = stem.encode("utf-8")[:max_bytes].decode("utf-8", "ignore").strip("-")
    return stem or "sample"
