"""Child processes for the training tests that never outlive a failure: all of them are polled, and
when one exits non-zero the others are killed and the test fails at once with that child's own output
(a host whose peer died would otherwise wait for its coordinator until a long timeout)."""
from __future__ import annotations

import subprocess
import tempfile
import time
from typing import Mapping, Sequence

import pytest

TAIL = 4000   # characters of a failed child's output shown in the failure


def run_together(commands: Sequence[Sequence[str]], env: Mapping[str, str], timeout: float = 600,
                 poll_s: float = 0.2) -> list[str]:
    """Run `commands` concurrently (stdout + stderr of each to its own file); their outputs when all
    exit 0. The first child to exit non-zero (or the `timeout`, in seconds) kills the rest and fails
    the test with that child's exit code and the tail of its output."""
    logs = [tempfile.TemporaryFile("w+", encoding="utf-8") for _ in commands]
    procs = [subprocess.Popen(list(c), stdout=log, stderr=subprocess.STDOUT, env=dict(env), text=True)
             for c, log in zip(commands, logs)]
    deadline = time.monotonic() + timeout
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = next((i for i, c in enumerate(codes) if c not in (None, 0)), None)
            if failed is not None or time.monotonic() > deadline:
                _stop(procs)
                i = failed if failed is not None else next(i for i, c in enumerate(codes) if c is None)
                why = f"exited with {codes[i]}" if failed is not None else f"still running after {timeout} s"
                pytest.fail(f"child {i} ({' '.join(commands[i][:4])} ...) {why}; its output:\n"
                            f"{_read(logs[i])[-TAIL:]}", pytrace=False)
            if all(c == 0 for c in codes):
                return [_read(log) for log in logs]
            time.sleep(poll_s)
    finally:
        _stop(procs)
        for log in logs:
            log.close()


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def _read(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()
