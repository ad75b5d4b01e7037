"""The child-process helper of the training tests fails at once, with the dead child's own output,
and kills the children still running (no wait for a timeout)."""
import os
import subprocess
import sys

import pytest

from tests.training.processes import run_together


def test_a_dying_child_fails_at_once_with_its_output_and_stops_the_others(tmp_path):
    pid_file = tmp_path / "sleeper.pid"
    sleeper = [sys.executable, "-c", f"import os, time; open('{pid_file}.tmp', 'w').write(str(os.getpid())); "
                                     f"os.rename('{pid_file}.tmp', {str(pid_file)!r}); time.sleep(600)"]
    dying = [sys.executable, "-c", f"import os, sys, time\nwhile not os.path.exists({str(pid_file)!r}): "
                                   "time.sleep(0.05)\nsys.exit('worker 1: coordinator unreachable')"]
    with pytest.raises(pytest.fail.Exception, match=r"(?s)child 1 .* exited with 1; its output:\n"
                                                    r"worker 1: coordinator unreachable"):
        run_together([sleeper, dying], os.environ, timeout=300)
    pid = int(pid_file.read_text())
    gone = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    assert gone in ("", "Z"), f"the sleeping child {pid} is still running ({gone})"


def test_children_that_succeed_return_their_outputs():
    outputs = run_together([[sys.executable, "-c", f"print({i})"] for i in range(2)], os.environ)
    assert outputs == ["0\n", "1\n"]
