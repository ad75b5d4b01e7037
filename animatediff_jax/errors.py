"""Errors a user can cause, and the one place the command-line tools turn them into a line.

Every error a user can fix (a bad flag or config value, a missing, corrupt or wrong-family file, an
unwritable output) is a `UserError`. Its message names the file or flag first and the problem second
(`"mm.ckpt: not a motion module (no motion_modules keys)"`). Each CLI's `main` runs its work through
`run_cli`, which prints `error: <message>` on stderr and returns the exit code: 2 for usage errors
(`UsageError`: flags, config values), 1 for failures (`InputError`: files read, `OutputError`: files
written). Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import difflib
import math
import re
import signal
import sys
import warnings
from typing import Callable

from animatediff_jax.interrupts import Terminated, stoppable
from animatediff_jax.start_up import MESSAGES


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


class ArgumentParser(argparse.ArgumentParser):
    """argparse for every CLI: a mistake on the command line raises one `UsageError` `<flag>: <problem>`
    (printed by `run_cli`, exit 2) instead of printing the whole usage block; parse inside `run_cli`.
    Subcommand parsers (`add_subparsers().add_parser`) are of this class too. An unknown flag names
    the closest known ones (`-W: unknown flag; did you mean --W?`)."""

    INT_MAX = 2**31 - 1  # counts (steps, frames, sizes, batches...) become int32 in JAX/XLA: larger ones overflow

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # a value starting with '-' and a digit is a value, never a flag (no flag of ours starts so):
        # argparse's own rule misses `-1e30` and `-1:x` and answered "expected one argument"
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    @staticmethod
    def integer(low: int, high: int = INT_MAX):
        """argparse `type=`: an integer in [low, high] (default high: int32's largest), else the flag's error
        (`--steps: must be ≤ 2147483647, got 99999999999`)."""
        def parse(text: str) -> int:
            try:
                value = int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
            if value < low:
                raise argparse.ArgumentTypeError(f"must be ≥ {low}, got {value}")
            if value > high:
                raise argparse.ArgumentTypeError(f"must be ≤ {high}, got {value}")
            return value
        return parse

    @staticmethod
    def number(low: float | None = None, high: float | None = None, above: float | None = None):
        """argparse `type=`: a finite float in [low, high] (or > above; None: unbounded), else the flag's
        error (`--strength: must be in (0, 1], got 1.5`)."""
        def parse(text: str) -> float:
            try:
                value = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
            if not math.isfinite(value):
                raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
            if (low is not None and value < low) or (above is not None and value <= above) \
                    or (high is not None and value > high):
                lo = f"[{low:g}" if low is not None else f"({above:g}"
                raise argparse.ArgumentTypeError(f"must be in {lo}, {'inf)' if high is None else f'{high:g}]'}, "
                                                 f"got {value:g}")
            return value
        return parse

    def error(self, message: str):
        raise UsageError(self._flag_first(message))

    def _flag_first(self, message: str) -> str:
        unknown = re.fullmatch(r"unrecognized arguments: (.*)", message, re.S)
        if unknown:
            token = unknown.group(1).split(" ")[0]
            if not token.startswith("-"):
                return f"{token}: unexpected argument (this command takes no more positional arguments)"
            flag = token.split("=")[0]
            known = [o for parser in self._parsers() for o in parser._option_string_actions if o.startswith("--")]
            spelled = "--" + flag.lstrip("-")
            close = [spelled] if spelled in known else difflib.get_close_matches(spelled, known, n=2, cutoff=0.6)
            chosen = self._chosen()
            return f"{flag}: unknown flag" + (f"; did you mean {' or '.join(dict.fromkeys(close))}?" if close else
                                              f" (see {(chosen or self).prog} --help)")
        required = re.fullmatch(r"the following arguments are required: (.*)", message)
        if required:
            return f"{required.group(1)}: required"
        return re.sub(r"^argument ([^:]+): ", r"\1: ", message)

    def parse_known_args(self, args=None, namespace=None):
        self._given = list(sys.argv[1:] if args is None else args)  # for `_parsers`: which subcommand ran
        return super().parse_known_args(args, namespace)

    def _parsers(self) -> list[argparse.ArgumentParser]:
        """This parser and the subcommand given (argparse reports its unknown flags from the top); every
        subcommand's when none was given. A flag of another subcommand is no suggestion
        (`convert lora ... -q` was 'did you mean --quiet?', a flag of merge only)."""
        chosen = self._chosen()
        subs = [a for a in self._actions if isinstance(a, argparse._SubParsersAction)]
        return [self] + ([chosen] if chosen else [p for a in subs for p in dict.fromkeys(a.choices.values())])

    def _chosen(self) -> argparse.ArgumentParser | None:
        """The subcommand's parser, when one was given."""
        subs = [a for a in self._actions if isinstance(a, argparse._SubParsersAction)]
        return next((a.choices[t] for t in getattr(self, "_given", []) for a in subs if t in a.choices), None)


def plain_warnings() -> None:
    """Show Python warnings to a CLI's user as `warning: <message>` lines (no file, line or source),
    for a command run as a program (`if __name__ == "__main__"`), not in-process callers."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=file or sys.stderr)
    warnings.showwarning = show


def run_cli(work: Callable[[], int | None]) -> int:
    """Run a CLI's work; a `UserError` becomes one `error: ...` line on stderr and its exit code.

    Returns the exit code: `work()`'s return value (None = 0), `e.exit_code` for a `UserError`,
    130 on Ctrl-C and 143 on SIGTERM: both unwind like an exception, so temporary outputs are removed,
    and a run that does not stop by itself (blocked inside XLA) is ended by `interrupts.stoppable`'s
    watchdog. A command may install its own SIGTERM handler inside `work` (training's final
    checkpoint). Other exceptions propagate with their traceback (they are bugs).
    """
    try:
        with stoppable():
            return int(work() or 0)
    except UserError as e:
        _end_progress_bars()
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except Terminated:
        _end_progress_bars()
        print(MESSAGES[signal.SIGTERM], file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        _end_progress_bars()
        print(MESSAGES[signal.SIGINT], file=sys.stderr)
        return 128 + signal.SIGINT


def _end_progress_bars() -> None:
    """Close the tqdm bars still on screen, so that the line printed next starts a line of its own: a
    bar in a generator that an error left suspended (convert merge's) is otherwise closed only when
    the generator is collected, after the `error:` line was printed onto the bar's. tqdm is not
    imported for this: a command that never imported it shows no bar."""
    module = sys.modules.get("tqdm.std")
    if module is not None:
        for bar in list(module.tqdm._instances):
            bar.close()
