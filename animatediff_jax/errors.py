"""Errors a user can cause, and the one place the command-line tools turn them into a line.

Every error a user can fix (a bad flag or config value, a missing, corrupt or wrong-family file, an
unwritable output) is a `UserError`. Its message names the file or flag first and the problem second
(`"mm.ckpt: not a motion module (no motion_modules keys)"`). Each CLI's `main` runs its work through
`run_cli`, which prints `error: <message>` on stderr and returns the exit code: 2 for usage errors
(`UsageError`: flags, config values), 1 for failures (`InputError`: files read, `OutputError`: files
written). Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """Something the user can fix; `str(e)` is `<file or flag>: <problem>`."""

    exit_code = 1


class UsageError(UserError, ValueError):
    """A flag, config key or value that is never valid (type, range, finiteness, unknown name)."""

    exit_code = 2


class InputError(UserError, ValueError):
    """A file that cannot be used: missing, corrupt, truncated, wrong model family, missing keys."""


class OutputError(UserError, OSError):
    """An output that cannot be written: exists without `--overwrite`, read-only, disk full."""


def run_cli(work: Callable[[], int | None]) -> int:
    """Run a CLI's work; a `UserError` becomes one `error: ...` line on stderr and its exit code.

    Returns the exit code: `work()`'s return value (None = 0), `e.exit_code` for a `UserError`,
    130 on Ctrl-C. Other exceptions propagate with their traceback (they are bugs).
    """
    try:
        return int(work() or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
