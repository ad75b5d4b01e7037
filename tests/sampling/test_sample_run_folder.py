"""A sampling run's folder is complete or absent: failures leave nothing, output errors are one line.

The model is the shipped miniature (validation reads its real files); sampling itself is replaced by a
stand-in pipeline returning fixed frames, so each test takes seconds.
"""
import errno
import os
import shlex
import signal
import subprocess
import sys
import textwrap

import av
import numpy as np
import pytest

from animatediff_jax import run_folder, sample
from animatediff_jax.loading import LoadError
from animatediff_jax.sampling.pipeline import GenerationResult


class StandInPipeline:
    """Returns frames of one value (NaN to simulate a numerical blow-up) from finite (no) weights."""
    description = {"dtype": "float32"}
    unet_params = vae_params = text_params = {}

    def __init__(self, value=0.5):
        self.value = value

    def __call__(self, prompts, negs, seeds, *, width, height, frames, **_):
        video = np.full((len(prompts), frames, height, width, 3), self.value, np.float32)
        video[:, :, : height // 2] = 0.25  # not a flat image: MP4/GIF encoders see real content
        return GenerationResult(video, list(seeds), np.zeros(1))


@pytest.fixture
def out(tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "out"


def _main(out, *extra, prompt="a red circle moving right"):
    return sample.main(["--prompt", prompt, "--steps", "1", "--frames", "4", "--no-progress", "--out", str(out),
                        *extra])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_success_renames_the_partial_folder_into_place(out, monkeypatch, capsys):
    monkeypatch.setattr(sample, "load_pipeline", lambda *a, **k: StandInPipeline())
    assert _main(out, "--save-npy") == 0
    (run,) = os.listdir(out)
    assert run.startswith("sample-") and not run.startswith(".")
    assert sorted(os.listdir(out / run)) == ["command.txt", "config.yaml", "sample", "sample.gif"]
    assert sorted(os.listdir(out / run / "sample")) == ["0-a-red-circle-moving-right.gif",
                                                         "0-a-red-circle-moving-right.mp4",
                                                         "0-a-red-circle-moving-right.npy"]
    mask = os.umask(0o022)  # outputs get the umask's permissions, as `cp` gives them (not tempfile's 0o600)
    os.umask(mask)
    assert oct(os.stat(out / run).st_mode & 0o777) == oct(0o777 & ~mask)
    for path in [out / run / "sample.gif", out / run / "config.yaml", *(out / run / "sample").iterdir()]:
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~mask), path


def test_command_txt_is_the_command_shell_quoted(out, monkeypatch):
    monkeypatch.setattr(sample, "load_pipeline", lambda *a, **k: StandInPipeline())
    prompt = """日本語 a girl's "red" circle: #1 $HOME `x` \\ ; | & *"""
    assert _main(out, prompt=prompt) == 0
    (run,) = os.listdir(out)
    line = (out / run / "command.txt").read_text(encoding="utf-8")
    assert line.startswith(f"{sample.PROG} ") and line.endswith("\n")
    args = ["--prompt", prompt, "--steps", "1", "--frames", "4", "--no-progress", "--out", str(out)]
    assert shlex.split(line.removeprefix(sample.PROG)) == args
    echoed = subprocess.run(["bash", "-c", 'printf "%s\\n" ' + line.removeprefix(sample.PROG)],
                            capture_output=True, text=True, check=True).stdout  # what bash passes the command
    assert echoed.splitlines() == args


@pytest.mark.parametrize("failure", ["load", "nan", "enospc"])
def test_a_failed_run_leaves_no_folder(out, monkeypatch, capsys, failure):
    if failure == "load":  # e.g. a DreamBooth/LoRA that fails to load after validation passed
        def load(*a, **k):
            raise LoadError("style.safetensors: targets layers the model does not have")
        monkeypatch.setattr(sample, "load_pipeline", load)
    else:
        pipe = StandInPipeline(np.nan if failure == "nan" else 0.5)
        monkeypatch.setattr(sample, "load_pipeline", lambda *a, **k: pipe)
    calls = []
    if failure == "enospc":  # the disk fills while the MP4 is written (after the GIF)
        real = av.VideoFrame.from_ndarray

        def failing(array, format):  # noqa: A002 - PyAV's keyword
            calls.append(1)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(array, format=format)
        monkeypatch.setattr(av.VideoFrame, "from_ndarray", staticmethod(failing))
    assert _main(out) == 1
    err = _one_error_line(capsys)
    assert {"load": "targets layers", "nan": "NaN/inf", "enospc": "No space left on device"}[failure] in err
    assert not out.exists()  # no run folder, no hidden partial one, not even the --out folder the run made
    out.mkdir()
    calls.clear()
    assert _main(out) == 1
    assert os.listdir(out) == []  # an existing --out stays, empty


def test_out_that_is_a_file_is_refused_before_any_model_loads(out, monkeypatch, capsys):
    monkeypatch.setattr(sample, "load_pipeline", lambda *a, **k: pytest.fail("loaded a model"))
    out.parent.mkdir(exist_ok=True)
    out.write_text("not a folder")
    assert _main(out) == 1
    assert f"--out {out}: {out} is a file, not a folder" in _one_error_line(capsys)
    assert _main(out / "below") == 1
    assert "is a file, not a folder" in _one_error_line(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_refused(out, monkeypatch, capsys):
    monkeypatch.setattr(sample, "load_pipeline", lambda *a, **k: pytest.fail("loaded a model"))
    out.mkdir()
    out.chmod(0o555)
    try:
        assert _main(out) == 1
        assert "is not writable" in _one_error_line(capsys)
    finally:
        out.chmod(0o755)


def test_run_folder_that_cannot_be_created_is_one_line(out, monkeypatch, capsys):
    """A read-only mount (EROFS even for root): the folder check passes, creating the folder fails (after the
    first job's weights are loaded: a refused file is said before the run folder)."""
    monkeypatch.setattr(sample, "load_pipeline", lambda *a, **k: StandInPipeline())

    def read_only(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(run_folder, "temp_name", read_only)
    assert _main(out) == 1
    assert f"--out {out}: cannot create the run folder (Read-only file system)" in _one_error_line(capsys)


HANGING_RUN = textwrap.dedent("""
    import sys, time
    from animatediff_jax import sample
    class Hang:  # the run folder exists and holds command.txt; "sampling" never ends
        description = {"dtype": "float32"}
        def __call__(self, *a, **k):
            print("HANGING", flush=True)
            time.sleep(600)
    sample.load_pipeline = lambda *a, **k: Hang()
    sample.main(["--prompt", "a red circle", "--steps", "1", "--frames", "4", "--no-progress", "--out", sys.argv[1]])
""")


def _hidden(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


def test_a_run_killed_outright_is_cleaned_by_the_next_run(out, monkeypatch, capsys):
    """SIGKILL leaves the hidden .partial folder (nothing can run on the way out); the next run into the
    same --out removes it because its writer is gone, but leaves a live run's folder and others' names."""
    killed = subprocess.Popen([sys.executable, "-c", HANGING_RUN, str(out)], stdout=subprocess.PIPE, text=True)
    alive = subprocess.Popen([sys.executable, "-c", HANGING_RUN, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        for proc in (killed, alive):
            assert "HANGING\n" in iter(proc.stdout.readline, "")  # reads up to the marker (or fails at EOF)
        killed.send_signal(signal.SIGKILL)
        killed.wait(30)
        hidden = _hidden(out)
        assert len(hidden) == 2 and all(n.startswith(".sample-") and n.endswith(".partial") for n in hidden)
        assert all(os.path.isfile(out / n / "command.txt") for n in hidden)
        of_alive = [n for n in hidden if f".{alive.pid}-" in n]
        of_killed = [n for n in hidden if f".{killed.pid}-" in n]
        assert len(of_alive) == len(of_killed) == 1
        foreign = [".sample-2026-01-01T00-00-00.1-0123abcd@elsewhere.partial",  # another host's run
                   ".sample-2026-01-01T00-00-00.partial-x1y2z3"]  # not our naming: never ours to remove
        for n in foreign:
            (out / n).mkdir()
        monkeypatch.setattr(sample, "load_pipeline", lambda *a, **k: StandInPipeline())
        assert _main(out) == 0
        assert _hidden(out) == sorted(of_alive + foreign)
        assert len([n for n in os.listdir(out) if n.startswith("sample-")]) == 1
    finally:
        for proc in (killed, alive):
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)
            proc.stdout.close()


TAGS = ", ".join(f"masterpiece_{i}, best quality, ultra-detailed, 8k wallpaper" for i in range(18))  # ~900 chars


@pytest.mark.parametrize("prompt", [TAGS, "x" * 900, "猫が走る" * 200, "ünïcödé " * 150])
def test_file_names_from_long_prompts_are_bounded_in_bytes(out, monkeypatch, prompt):
    assert len(prompt) >= 800
    monkeypatch.setattr(sample, "load_pipeline", lambda *a, **k: StandInPipeline())
    assert sample.main(["--prompt", prompt, "--prompt", prompt, "--steps", "1", "--frames", "4", "--no-progress",
                        "--png", "--out", str(out)]) == 0
    (run,) = os.listdir(out)
    names = os.listdir(out / run / "sample")
    assert len(names) == 6 and len(set(names)) == 6  # gif, mp4, png folder per video; unique within the run
    assert all(len(n.encode()) <= len("0-") + run_folder.STEM_BYTES + len(".mp4") for n in names)
    stems = {n.rsplit(".", 1)[0] if "." in n else n for n in names}
    assert len(stems) == 2 and all(s.split("-", 1)[1] for s in stems)


def test_slug_cuts_at_a_character_boundary():
    assert run_folder.slug("é" * 100, max_bytes=7) == "ééé"
    assert run_folder.slug("!!!") == "sample"
    assert run_folder.slug({0: "a cat", 8: "a dog"}) == "a-cat-a-dog"
    assert run_folder.slug({"8": "a dog", 0: "a cat"}) == "a-cat-a-dog"  # frame order, as given or not
