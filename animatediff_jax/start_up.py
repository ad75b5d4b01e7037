"""Ctrl-C and SIGTERM while a command starts: its package's `__init__` installs these handlers first.

For `python -m <package>.<command>`, the command's module imports (numpy, yaml, JAX: seconds on a busy
machine) run before any handler of its own, and a Ctrl-C there ended in a KeyboardInterrupt traceback.
Until `errors.run_cli` takes over (`interrupts.stoppable`), SIGINT / SIGTERM end the process with the
line and the exit code (130 / 143) `run_cli` would give; nothing has been written yet to clean up. This
module imports only what the interpreter has loaded before any user code (os, signal, sys), so the
window before the handlers exist is as short as the interpreter's own start.
"""
import os
import signal
import sys

MESSAGES = {signal.SIGINT: "error: interrupted", signal.SIGTERM: "error: terminated (SIGTERM)"}


def stop_cleanly_during_start_up() -> None:
    """Install the start-up handlers for SIGINT and SIGTERM (see the module docstring)."""
    for signum in MESSAGES:
        signal.signal(signum, _stop_at_start_up)


def _stop_at_start_up(signum, frame):
    print(MESSAGES[signum], file=sys.stderr, flush=True)
    os._exit(128 + signum)
