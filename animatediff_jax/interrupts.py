"""Stopping a command-line run on Ctrl-C or SIGTERM, including while it is inside XLA.

Python runs a signal handler only between bytecodes of the main thread. While the main thread is
inside one long XLA compilation or computation (minutes, for a large video) the handler does not run;
and an exception raised by a handler that happens to run inside a garbage-collection callback is
swallowed ("Exception ignored in ..."), so the run would go on and finish. Inside `stoppable()` a
SIGINT or SIGTERM therefore does three things (and a swallowed one is not printed):

1. it raises where the main thread is (`KeyboardInterrupt`, or `Terminated` for SIGTERM), so the
   outputs being written unwind and remove themselves: the usual path (not inside an import, where
   C extensions' initialisation cannot take an exception: there only 2 and 3 apply);
2. it is remembered: `raise_if_signalled()` raises it again where a run is about to make its output
   final (`run_folder`, `outputs.atomic_path`), so a swallowed raise cannot complete a run;
3. it wakes a watchdog thread (through `signal.set_wakeup_fd`, which works while the main thread is
   blocked in C++): if the process still runs `GRACE_S` seconds later, or at a second signal, the
   watchdog removes the temporary outputs registered with `temporary()`, prints one line and ends the
   process with `os._exit(128 + signal)`.
A program ends through `exit_cli`, which, after a signal, skips the interpreter's teardown (it waits
for XLA computations still in flight and can crash mid-compilation).

A signal whose handler is not ours when it arrives (training installs its own SIGTERM handler to write
a final checkpoint on preemption) is left to that handler: the watchdog ignores it.
"""
from __future__ import annotations

import contextlib
import functools
import os
import select
import signal
import sys
import threading
import time
from typing import Iterator, Sequence

from animatediff_jax.cleanup import remove_empty, remove_path

GRACE_S = 5.0  # seconds a signalled run gets to unwind by itself before the watchdog ends it
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_lock = threading.Lock()
_temporaries: dict[str, tuple[str, ...]] = {}  # temporary output -> the folders made for it
_signalled: list[int] = []
_deferred: list[int] = []  # signals received inside an import, remembered instead of raised


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that outputs being written are cleaned up on the way out."""


def _exception(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _importing(frame) -> bool:
    """Whether the Python frame `frame` runs inside an import (its callers include importlib's)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _handler(signum, frame):
    _signalled.append(signum)
    if _importing(frame):
        # Inside an import a C extension's initialisation may be running this Python code under it
        # (jaxlib's, through nanobind): an exception raised here is std::terminate in C++, an abort
        # (exit -6) with a C++ message. Remembered instead: the run stops at its next
        # `raise_if_signalled`, at the end of `stoppable`'s block, or by the watchdog.
        _deferred.append(signum)
        return
    raise _exception(signum)


def _unraisable(previous, info) -> None:
    # our interrupt raised where Python cannot propagate it (a garbage-collection callback): it is
    # remembered (`raise_if_signalled`, the watchdog), so not printed as "Exception ignored in ..."
    if not (isinstance(info.exc_value, KeyboardInterrupt) and _signalled):
        previous(info)


def raise_if_signalled() -> None:
    """Raise the first SIGINT/SIGTERM received inside `stoppable()` (KeyboardInterrupt or Terminated)
    if there was one: call it before making an output final."""
    if _signalled:
        raise _exception(_signalled[0])


@contextlib.contextmanager
def temporary(path: str, created: Sequence[str] = ()) -> Iterator[str]:
    """Register `path` (a temporary file or folder being written) and `created` (the folders made to
    hold it, deepest first) for removal — `created` while empty — should the watchdog have to end the
    process; unregistered when the block ends."""
    with _lock:
        _temporaries[path] = tuple(created)
    try:
        yield path
    finally:
        with _lock:
            _temporaries.pop(path, None)


def _remove_temporaries() -> None:
    with _lock:
        registered = list(_temporaries.items())
    for path, created in registered:
        remove_path(path)
        remove_empty(created)


def _force_exit(signum: int, why: str) -> None:
    _remove_temporaries()
    name = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
    os.write(2, f"error: {name}: {why}; ended it, its temporary outputs removed\n".encode())
    os._exit(128 + signum)


def _watch(read_fd: int, stop: threading.Event) -> None:
    first, deadline = None, None
    while not stop.is_set():
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([read_fd], [], [], wait)
        if stop.is_set():
            break
        if not ready:
            _force_exit(first, f"the run did not stop within {GRACE_S:.0f} s of the signal")
        for signum in os.read(read_fd, 64):
            if signum not in SIGNALS or signal.getsignal(signum) is not _handler:
                continue  # the wake-up byte of `stoppable`'s exit, or a signal some other handler owns
            if deadline is None:
                first, deadline = signum, time.monotonic() + GRACE_S
            else:
                _force_exit(signum, "a second signal")


@contextlib.contextmanager
def stoppable() -> Iterator[None]:
    """Within the block (in the main thread) SIGINT and SIGTERM stop the run as the module docstring
    says. Outside the main thread it does nothing (signals are the main thread's)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    stop = threading.Event()
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(_unraisable, previous_hook)
    watchdog = threading.Thread(target=_watch, args=(read_fd, stop), name="interrupt-watchdog", daemon=True)
    watchdog.start()
    try:
        yield
        if _deferred:  # not raised when it came (inside an import): the run ends as signalled all the same
            raise _exception(_deferred[0])
    except Exception:
        # our raise turned into another error by C code it passed through (numpy's import of `datetime`
        # made it an ImportError): still the signal, ending the run as one
        raise_if_signalled()
        raise
    finally:
        signal.set_wakeup_fd(previous_fd)
        sys.unraisablehook = previous_hook
        for s, h in previous.items():
            signal.signal(s, h)
        stop.set()
        with contextlib.suppress(BlockingIOError):  # a full pipe wakes the watchdog as well
            os.write(write_fd, b"\0")
        watchdog.join()
        os.close(read_fd)
        os.close(write_fd)
        _signalled.clear()
        _deferred.clear()


def exit_cli(code: int) -> None:
    """End a command-line program with `code` (its `__main__`: `exit_cli(main())`). After Ctrl-C or
    SIGTERM (130 / 143) the run has unwound and removed its outputs, so the process ends at once,
    streams flushed, without the interpreter's teardown: that waits for XLA computations still in
    flight (minutes) and can crash while a compilation is half-done in another thread. Any other code
    is the end of a finished run: SIGINT / SIGTERM are then ignored for the teardown (a fraction of a
    second), which Python runs after resetting its handlers: a Ctrl-C there ended the process silently
    with 130 although the run had completed and its outputs were whole."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        os._exit(code)
    for signum in SIGNALS:  # the run is over, its outputs whole and its lines printed
        signal.signal(signum, signal.SIG_IGN)
    sys.exit(code)
