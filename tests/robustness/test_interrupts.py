"""Ctrl-C and SIGTERM stop a command-line run and leave no temporary output, even when the run is
blocked inside an XLA computation or the exception was swallowed (a user found both: a TERM ignored
for minutes during a large compile, and a Ctrl-C in the first second raised inside a garbage-collection
callback, after which the run finished with exit code 0)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from animatediff_jax.errors import run_cli
from animatediff_jax.interrupts import GRACE_S
from animatediff_jax.run_folder import run_folder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PRELUDE = """
import signal, sys, time
from animatediff_jax.errors import run_cli
from animatediff_jax.interrupts import exit_cli
from animatediff_jax.run_folder import run_folder
"""

BLOCKED_IN_XLA = PRELUDE + """
import jax, jax.numpy as jnp
loop = jax.jit(lambda x: jax.lax.while_loop(lambda v: v[0] < 1e15, lambda v: (v[0] + 1.0, v[1] * 0.5 + 1.0),
                                            (jnp.zeros(()), x))[1]).lower(jnp.ones(())).compile()
def work():
    with run_folder(sys.argv[1], "run"):
        print("ready", flush=True)
        loop(jnp.ones(())).block_until_ready()  # hours: the main thread never returns to Python
exit_cli(run_cli(work))
"""

SWALLOWING = PRELUDE + """
{imports}
def work():
    with {output}:
        for i in range(600):  # like a callback that catches the interrupt and goes on
            try:
                if i == 0:
                    print("ready", flush=True)
                time.sleep(0.05)
            except KeyboardInterrupt:
                pass
exit_cli(run_cli(work))
"""
SWALLOWS = SWALLOWING.format(imports="", output='run_folder(sys.argv[1], "run")')
# training's start: the workdir made for its lock, nothing else in it yet
SWALLOWS_HOLDING_A_WORKDIR = SWALLOWING.format(imports="from animatediff_jax.training import workdir_lock",
                                               output="workdir_lock.hold(sys.argv[1])")

OWN_HANDLER = PRELUDE + """
def work():
    seen = []
    signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))  # as training's preemption flag does
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(float(sys.argv[2]))  # the final checkpoint, longer than the watchdog's grace
    print("saved", flush=True)
    return 0 if seen else 3
exit_cli(run_cli(work))
"""


def start(tmp_path, script: str, *args: str) -> subprocess.Popen:
    path = tmp_path / "script.py"
    path.write_text(script)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, str(path), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def stop(proc: subprocess.Popen, *signals: int, gap: float = 0.5) -> tuple[int, float, str]:
    """Send `signals` (`gap` s apart); the exit code, seconds from the first signal to the exit, stderr."""
    t0 = time.monotonic()
    for i, s in enumerate(signals):
        if i:
            time.sleep(gap)
        proc.send_signal(s)
    try:
        rc = proc.wait(timeout=GRACE_S + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the run did not stop")
    return rc, time.monotonic() - t0, proc.stderr.read()


def test_sigterm_ends_a_run_blocked_in_xla_and_removes_its_folder(tmp_path):
    out = tmp_path / "out"
    rc, seconds, err = stop(start(tmp_path, BLOCKED_IN_XLA, str(out)), signal.SIGTERM)
    assert rc == 143 and seconds < 2 * GRACE_S + 30
    # the watchdog's line if the handler never ran; the usual one if it ran (then the exit, which waits
    # for the computation in flight, is ended by the exit watchdog)
    assert err.strip().splitlines()[-1] in ("error: terminated (SIGTERM)", "error: terminated (SIGTERM): the run "
                                            f"did not stop within {GRACE_S:.0f} s of the signal; ended it, its "
                                            "temporary outputs removed")
    assert not out.exists()  # the hidden .partial run folder, and --out the run created for it, were removed


def test_second_ctrl_c_ends_it_at_once(tmp_path):
    out = tmp_path / "out"
    rc, seconds, err = stop(start(tmp_path, SWALLOWS, str(out)), signal.SIGINT, signal.SIGINT)
    assert rc == 130 and seconds < GRACE_S
    assert "error: interrupted: a second signal" in err
    assert not out.exists()  # nor the --out folder the run created


def test_swallowed_ctrl_c_still_ends_the_run(tmp_path):
    out = tmp_path / "out"
    rc, seconds, err = stop(start(tmp_path, SWALLOWS, str(out)), signal.SIGINT)
    assert rc == 130 and GRACE_S - 1 < seconds < GRACE_S + 30
    assert not out.exists()  # nor the --out folder the run created


def test_a_training_workdir_made_for_its_lock_is_removed_when_the_watchdog_ends_the_run(tmp_path):
    """Ctrl-C in a training run's first seconds, ended by the watchdog: the workdir and its .train.lock
    stayed, under a line saying the temporary outputs were removed."""
    workdir = tmp_path / "runs" / "new"
    rc, seconds, err = stop(start(tmp_path, SWALLOWS_HOLDING_A_WORKDIR, str(workdir)), signal.SIGINT)
    assert rc == 130 and "its temporary outputs removed" in err
    assert not (tmp_path / "runs").exists()


def test_a_command_with_its_own_handler_is_left_to_finish(tmp_path):
    proc = start(tmp_path, OWN_HANDLER, "-", str(GRACE_S + 2))
    rc, seconds, err = stop(proc, signal.SIGTERM)
    assert rc == 0 and seconds > GRACE_S + 1, err
    assert proc.stdout.read().strip() == "saved"


def test_swallowed_interrupt_never_completes_the_run_folder(tmp_path, capsys):
    out = tmp_path / "out"

    def work():
        with run_folder(str(out), "run") as folder:
            (tmp_path / "written").write_text(folder.partial)
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                pass  # swallowed, as inside a garbage-collection callback
        return 0

    assert run_cli(work) == 130
    assert capsys.readouterr().err.strip() == "error: interrupted"
    assert not out.exists()  # the run folder and the --out folder it made are gone


@pytest.mark.parametrize("signum, code, line", [(signal.SIGINT, 130, "error: interrupted"),
                                               (signal.SIGTERM, 143, "error: terminated (SIGTERM)")])
def test_a_signal_turned_into_another_error_still_ends_the_run_as_the_signal(signum, code, line, capsys):
    """Found by the CI: a Ctrl-C landing in numpy's C import of `datetime` came out as an ImportError
    ('PyCapsule_Import could not import module "datetime"'): a traceback and exit 1."""
    def work():
        try:
            signal.raise_signal(signum)
        except KeyboardInterrupt as e:  # what the C code did with our raise
            raise ImportError('PyCapsule_Import could not import module "datetime"') from e

    assert run_cli(work) == code
    assert capsys.readouterr().err.strip() == line


def test_an_error_without_a_signal_is_still_a_bug():
    def work():
        raise ImportError("a real one")
    with pytest.raises(ImportError, match="a real one"):
        run_cli(work)


@pytest.mark.parametrize("command", [["animatediff_jax.sample", "--steps", "2"], ["convert", "inspect", "absent"]])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_command_imports_its_modules_is_one_line(tmp_path, command, signum):
    """Found by the CI on a busy machine (load 6): `sample`'s module imports took 0.7-1.5 s, before any
    handler of its own, and a Ctrl-C there ended in a KeyboardInterrupt traceback (exit -2). The signal
    is sent once the `animatediff_jax` package's `__init__` has run, which installs the handlers (`-X
    importtime` prints the package's line when its import ends), while the command's own imports run: a
    fixed 0.15 s after the start, a CI at load 7 signalled an interpreter still starting, before any code
    of ours (the traceback is Python's own there)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
           "ANIMATEDIFF_JAX_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", *command], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    for line in proc.stderr:
        if line.split("|")[-1].strip() == "animatediff_jax":
            break
    rc, _, err = stop(proc, signum)
    err = "\n".join(line for line in err.splitlines() if not line.startswith("import time:"))
    assert rc == 128 + signum and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("error: "), err


@pytest.mark.parametrize("delay", [0.5, 1.0, 1.6])
def test_ctrl_c_early_in_a_sample_run_is_a_clean_130(tmp_path, delay):
    """At these delays the signal lands in JAX's import, a garbage-collection callback or the start-up
    (a user saw a BrokenPipeError traceback and exit 1, and an 'Exception ignored' traceback)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
           "ANIMATEDIFF_JAX_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "animatediff_jax.sample", "--steps", "2", "--no-progress",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(delay)
    rc, seconds, err = stop(proc, signal.SIGINT)
    if rc == 0:  # it finished before the signal (a fast machine): nothing to check
        return
    assert rc == 130 and "Traceback" not in err and "Exception ignored" not in err, err
    assert err.strip().splitlines()[-1].startswith("error: interrupted"), err
    assert not out.exists() or os.listdir(out) == []


FINISHED_THEN_SIGNALLED = PRELUDE + """
import atexit, os


class Late:
    def __del__(self):  # a module global: collected in the teardown, after Python has reset its handlers
        os.kill(os.getpid(), SIGNUM)
        time.sleep(0.2)


late = Late()
atexit.register(lambda: (os.kill(os.getpid(), SIGNUM), time.sleep(0.2)))  # before the reset
exit_cli(run_cli(lambda: print("done", flush=True)))
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_after_the_run_finished_keeps_its_exit_code_and_says_nothing(signum):
    """A stranger's Ctrl-C just after `convert lora` had written its output: exit 130 and no line (the
    process killed by the signal in the interpreter's teardown), the output complete."""
    done = subprocess.run([sys.executable, "-c", FINISHED_THEN_SIGNALLED.replace("SIGNUM", str(int(signum)))],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert (done.returncode, done.stdout, done.stderr) == (0, "done\n", "")


SIGNAL_DURING_IMPORT = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from animatediff_jax.interrupts import raise_if_signalled, stoppable
with open(os.path.join(sys.argv[1], "slow_module.py"), "w") as f:
    f.write("import os, signal\\nos.kill(os.getpid(), signal.SIGINT)\\nfor _ in range(10**6): pass\\nDONE = True\\n")
try:
    with stoppable():
        import slow_module
        print("imported", slow_module.DONE, flush=True)
        raise_if_signalled()
        print("not stopped", flush=True)
except KeyboardInterrupt:
    print("stopped after the import", flush=True)
"""


def test_a_signal_inside_an_import_is_raised_after_it(tmp_path):
    """Found by a run under load: a Ctrl-C landing in jaxlib's initialisation (Python code run by C++ through
    nanobind) raised KeyboardInterrupt there, which C++ cannot take: `terminate called after throwing an
    instance of 'nanobind::python_error'`, exit -6. Inside an import the signal is remembered, not raised."""
    (tmp_path / "script.py").write_text(SIGNAL_DURING_IMPORT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, str(tmp_path / "script.py"), str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.splitlines() == ["imported True", "stopped after the import"], \
        (proc.stdout, proc.stderr)


SIGNAL_DURING_IMPORT_THEN_RETURN = """
import os, sys
sys.path.insert(0, sys.argv[1])
from animatediff_jax.errors import run_cli
with open(os.path.join(sys.argv[1], "slow_module2.py"), "w") as f:
    f.write("import os, signal\\nos.kill(os.getpid(), signal.SIGTERM)\\nfor _ in range(10**6): pass\\n")
def work():
    import slow_module2  # noqa: F401
    print("error: absent: no such file", file=sys.stderr)  # a command that reports its own error
    return 1
print("exit", run_cli(work), flush=True)
"""


def test_a_signal_inside_an_import_still_ends_a_run_that_returns(tmp_path):
    """The deferred signal is not lost when the command then returns by itself (`convert inspect absent`,
    SIGTERM while it imported: it printed its own error and exited 1)."""
    (tmp_path / "script.py").write_text(SIGNAL_DURING_IMPORT_THEN_RETURN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, str(tmp_path / "script.py"), str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.stdout.splitlines() == ["exit 143"], (proc.stdout, proc.stderr)
    assert proc.stderr.splitlines()[-1] == "error: terminated (SIGTERM)", proc.stderr
