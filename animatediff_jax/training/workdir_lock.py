"""One training run per workdir: `hold(workdir)` takes an exclusive `fcntl.flock` on
`<workdir>/.train.lock` for the run's lifetime, so a second run started on the same workdir (whose
checkpoint saves would delete the first one's unfinished ones) is refused with one line naming the
process that holds it. The kernel drops a flock when its process ends however it ends (SIGKILL,
crash), so a dead run never keeps a workdir locked. The file stays (never unlinked while in use:
removing a flocked file lets two runs lock two different files), unless this run created the workdir
and nothing else was written there, so a run stopped before its first save leaves no folder behind —
also when the interrupt watchdog has to end the process (the lock and the folders made for it are
registered as its temporary outputs).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from typing import Iterator

from animatediff_jax import interrupts
from animatediff_jax.errors import OutputError
from animatediff_jax.cleanup import missing_folders, remove_empty
from animatediff_jax.outputs import is_url, write_failure

LOCK_NAME = ".train.lock"


@contextlib.contextmanager
def hold(workdir: str, flag: str = "--workdir") -> Iterator[None]:
    """Hold `workdir`'s training lock within the block; OutputError `<flag> <workdir>: another training
    run (pid N on host H) is using it` when a live process holds it. Call it on one process of a
    multi-host run (process 0: every host runs in the same workdir). `check_free` refuses early."""
    if is_url(workdir):  # a remote workdir (gs://...) cannot be flocked: such runs are not guarded
        yield
        return
    created = missing_folders(workdir)
    path = os.path.join(workdir, LOCK_NAME)
    try:
        os.makedirs(workdir, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        remove_empty(created)
        raise OutputError(f"{flag} {workdir}: cannot create {LOCK_NAME} ({write_failure(e, path)})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"{flag} {workdir}: another training run ({_holder(fd)}) is using it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        try:
            with interrupts.temporary(path, created) if created else contextlib.nullcontext():
                yield
        finally:
            if created and os.listdir(workdir) == [LOCK_NAME]:
                os.unlink(path)  # still locked: a run waiting on it is refused, a later one makes a new file
                remove_empty(created)
    finally:
        os.close(fd)


def check_free(workdir: str, flag: str = "--workdir") -> None:
    """The same refusal as `hold`'s, without taking the lock or writing anything: a single-host run
    calls it before its seconds of imports, so a second run is refused at once. `hold` stays the
    authority (a run starting between the two is refused there)."""
    if is_url(workdir):
        return
    path = os.path.join(workdir, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file (or none readable): `hold` decides
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"{flag} {workdir}: another training run ({_holder(fd)}) is using it") from None
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """'pid N on host H' from the lock file's content (what its holder wrote), or 'pid unknown' when
    the holder has not written it yet."""
    words = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
    return f"pid {words[0]} on host {words[1]}" if len(words) == 2 else "pid unknown"
