"""Outputs of `python -m convert` (issue 13, kind 4; issue 11, part 4): an existing output is replaced
only with --overwrite (refused before any work otherwise), folders are swapped in whole and files
renamed into place, a SIGKILL mid-write leaves the old output or the new one (never a mix), unwritable
outputs are one `error:` line naming the path with nothing left behind, temp leftovers of killed
runs are cleaned, and files get the umask's permissions."""
import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from animatediff_jax import evaluate, sample
from animatediff_jax.outputs import atomic_folder, atomic_path, check_output, clean_stale
from animatediff_jax.run_folder import check_writable_parent
from convert.__main__ import main
from tests.robustness.convert_fixtures import flax_file, leftovers, snapshot, tiny_ldm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Runs `python -m convert ARGS` with each tensor write slowed down (a test harness, not product code),
# so that a SIGKILL reliably lands in the middle of writing.
SLOW_DRIVER = """
import sys, time
import animatediff_jax.safetensors_file as f
write = f._write_at
def slow(*a):
    time.sleep(0.02)
    write(*a)
f._write_at = slow
from convert.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return tiny_ldm(str(tmp_path_factory.mktemp("src") / "model.safetensors"))


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("argv", [
    ["base", "{missing}", "{out}"], ["merge", "{out}", "{missing}", "{missing}"], ["motion", "{missing}", "{out}"],
    ["lora", "{missing}", "{out}", "--lora", "{missing}"], ["motion-lora", "{missing}", "{out}", "--lora", "{missing}"],
    ["export-motion", "{missing}", "{out}.ckpt"], ["export-motion", "{missing}", "{out}", "--format", "diffusers"],
    ["export-motion-lora", "{missing}", "{out}.ckpt"], ["export-unet", "{missing}", "{out}"]])
def test_existing_output_is_refused_before_any_work(tmp_path, capsys, argv):
    out = tmp_path / "existing"
    folder = argv[0] in ("base", "export-unet") or "diffusers" in argv
    target = tmp_path / ("existing.ckpt" if argv[2:3] == ["{out}.ckpt"] else "existing")
    if folder:
        target.mkdir()
        (target / "old.txt").write_text("old")
    else:
        target.write_text("old")
    before = snapshot(str(tmp_path))
    args = [a.format(missing=str(tmp_path / "missing.ckpt"), out=str(out)) for a in argv]
    assert main(args) == 1
    assert _error_line(capsys) == f"error: {target}: already exists; pass --overwrite to replace it"
    assert snapshot(str(tmp_path)) == before


def test_output_kinds_and_places_that_cannot_work(tmp_path, src, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert main(["base", src, str(a_file), "-q"]) == 1
    assert _error_line(capsys) == f"error: {a_file}: exists and is not a folder (the output is a folder)"
    assert main(["base", src, str(a_file / "out"), "-q"]) == 1
    assert _error_line(capsys) == f"error: {a_file / 'out'}: cannot be created: {a_file} is a file, not a folder"
    assert main(["merge", str(tmp_path), src, src]) == 1
    assert _error_line(capsys) == f"error: {tmp_path}: is a folder (the output is a file)"
    assert sorted(os.listdir(tmp_path)) == ["a_file"]
    broken = tmp_path / "broken"
    broken.symlink_to(tmp_path / "nowhere")
    assert sample.main(["--out", str(broken), "--prompt", "x"]) == 1    # a run folder's parent: named as a link
    assert _error_line(capsys) == (f"error: --out {broken}: {broken} is a broken symbolic link "
                                   f"(to {tmp_path / 'nowhere'}), not a folder")
    assert sorted(os.listdir(tmp_path)) == ["a_file", "broken"]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_a_place_whose_permissions_lie_is_refused_before_any_work(tmp_path, src, capsys):
    """/proc passes `os.access(W_OK)` for root but takes no new file: the check tries one (and removes it)."""
    assert main(["base", src, "/proc/animatediff-out", "-q"]) == 1
    assert _error_line(capsys) == ("error: /proc/animatediff-out: cannot be created: /proc is not writable "
                                   "(a file system that takes no new files: creating one said 'No such file or "
                                   "directory')")
    assert evaluate.main(["--results", "/proc/results.md", "--samples", "1"]) == 1
    assert _error_line(capsys).startswith("error: /proc/results.md: cannot be created: /proc is not writable")
    assert sample.main(["--out", "/proc/samples"]) == 1
    assert _error_line(capsys) == ("error: --out /proc/samples: /proc is not writable (a file system that takes "
                                   "no new files: creating one said 'No such file or directory')")
    check_output(str(tmp_path / "fine.md"), name="x")               # a writable place passes and keeps nothing
    check_writable_parent(str(tmp_path / "runs"))
    assert os.listdir(tmp_path) == []


def test_disk_full_is_one_line_and_leaves_nothing(tmp_path, src, capsys, monkeypatch):
    out = tmp_path / "deep" / "er" / "out"
    old = flax_file(str(tmp_path / "old.safetensors"), 1.0)
    other = flax_file(str(tmp_path / "other.safetensors"), 2.0)  # merged into old (not old into itself)
    before = snapshot(old)
    real = os.pwrite

    def full(fd, data, offset):
        if len(data) > 1000:  # the tensor writes (not pytest's own small ones)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full)
    assert main(["base", src, str(out), "-q"]) == 1
    assert _error_line(capsys) == f"error: {out / 'unet.safetensors'}: cannot write (disk full: No space left on device)"
    assert sorted(os.listdir(tmp_path)) == ["old.safetensors", "other.safetensors"]  # no temp folder; the parents made for it are gone
    assert main(["merge", old, other, other, "--overwrite", "-q"]) == 1
    assert _error_line(capsys) == f"error: {old}: cannot write (disk full: No space left on device)"
    assert snapshot(old) == before and sorted(os.listdir(tmp_path)) == ["old.safetensors", "other.safetensors"]


def _slow_convert(args, parent, kill_after_files: int):
    """Start a slowed `python -m convert ARGS`, SIGKILL it once its temp output holds that many
    files (or as soon as a temp file exists); True if it was killed mid-write."""
    proc = subprocess.Popen([sys.executable, "-c", SLOW_DRIVER, *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        temps = [os.path.join(parent, n) for n in leftovers(parent)]
        files = sum(len(os.listdir(t)) if os.path.isdir(t) else 1 for t in temps if os.path.exists(t))
        if temps and files >= kill_after_files:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.kill()
    raise AssertionError(f"the conversion ended before it could be killed: {proc.stderr.read()[-2000:]}")


@pytest.mark.parametrize("kill_after_files", [1, 3])
def test_convert_base_killed_mid_write_leaves_old_or_new_folder(tmp_path, src, kill_after_files):
    out, ref = str(tmp_path / "out"), str(tmp_path / "ref")
    assert main(["base", src, out, "--dtype", "bfloat16", "-q"]) == 0
    assert main(["base", src, ref, "-q"]) == 0
    old, new = snapshot(out), snapshot(ref)
    assert old != new and set(old) == set(new)
    assert _slow_convert(["base", src, out, "--overwrite", "-q"], str(tmp_path), kill_after_files)
    assert snapshot(out) in (old, new)
    assert leftovers(str(tmp_path))  # the killed run's temp folder, until the next run cleans it
    assert main(["base", src, out, "--overwrite", "-q"]) == 0
    assert snapshot(out) == new and leftovers(str(tmp_path)) == []


def test_convert_merge_killed_mid_write_leaves_old_or_new_file(tmp_path):
    a = flax_file(str(tmp_path / "a.safetensors"), 1.0)
    b = flax_file(str(tmp_path / "b.safetensors"), 2.0)
    out, ref = str(tmp_path / "merged.safetensors"), str(tmp_path / "ref.safetensors")
    assert main(["merge", out, a, b, "--weights", "0.3", "0.7", "-q"]) == 0
    assert main(["merge", ref, a, b, "-q"]) == 0
    old = snapshot(out)
    assert _slow_convert(["merge", out, a, b, "--overwrite", "-q"], str(tmp_path), 1)
    assert snapshot(out) == old  # a single file: os.replace at the very end
    assert main(["merge", out, a, b, "--overwrite", "-q"]) == 0
    assert snapshot(out) == snapshot(ref) != old and leftovers(str(tmp_path)) == []


def test_outputs_get_the_umask_permissions(tmp_path, src):
    old = os.umask(0o027)
    try:
        with atomic_path(str(tmp_path / "f.txt")) as tmp, open(tmp, "w") as f:
            f.write("x")
        with atomic_folder(str(tmp_path / "d")) as tmp:
            open(os.path.join(tmp, "inside.txt"), "w").close()
        assert main(["base", src, str(tmp_path / "conv"), "-q"]) == 0
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "f.txt").st_mode & 0o777 == 0o640
    assert os.stat(tmp_path / "d").st_mode & 0o777 == 0o750
    assert os.stat(tmp_path / "conv").st_mode & 0o777 == 0o750
    for name in os.listdir(tmp_path / "conv"):
        assert os.stat(tmp_path / "conv" / name).st_mode & 0o777 == 0o640, name


def test_stale_leftovers_cleaned_only_when_safe(tmp_path):
    import socket
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {"dead": f".out.{dead.pid}-0123abcd@{host}.partial",
                 "alive": f".out.{alive.pid}-0123abcd@{host}.partial",
                 "other host": f".out.{dead.pid}-0123abcd@elsewhere.partial",
                 "other output": f".other.{dead.pid}-0123abcd@{host}.partial",
                 "dead old": f".out.{dead.pid}-89abcdef@{host}.old"}
        for n in names.values():
            (tmp_path / n).mkdir()
        removed = clean_stale(str(tmp_path / "out"))
        assert sorted(os.path.basename(r) for r in removed) == sorted([names["dead"], names["dead old"]])
        assert sorted(os.listdir(tmp_path)) == sorted([names["alive"], names["other host"], names["other output"]])
    finally:
        alive.kill()
        alive.wait()


def test_folder_swap_without_renameat2(tmp_path, monkeypatch):
    """Where the kernel cannot exchange two paths, the swap falls back to two renames: same result."""
    import animatediff_jax.outputs as outputs
    monkeypatch.setattr(outputs, "_renameat2", None)
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_folder(str(target)) as tmp:
        open(os.path.join(tmp, "new.txt"), "w").close()
    assert os.listdir(target) == ["new.txt"] and sorted(os.listdir(tmp_path)) == ["out"]
    with pytest.raises(KeyError), atomic_folder(str(target)) as tmp:  # a failing block: nothing changes
        open(os.path.join(tmp, "half.txt"), "w").close()
        raise KeyError("boom")
    assert os.listdir(target) == ["new.txt"] and sorted(os.listdir(tmp_path)) == ["out"]
