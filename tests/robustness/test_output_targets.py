"""An output path that resolves to the current folder, or to a folder holding it, is never written:
a converter given an empty output path once swapped its export in for the whole checkout it ran in.
Every test runs inside its own scratch folder (monkeypatch.chdir), so a regression destroys only that."""
import errno
import os
import shutil

import numpy as np
import pytest

from animatediff_jax import evaluate, video
from animatediff_jax.errors import OutputError
from animatediff_jax.outputs import atomic_folder, atomic_path, check_output


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A folder standing in for a checkout, with a file that must survive; the current folder is inside it."""
    root = tmp_path / "checkout"
    (root / "sub").mkdir(parents=True)
    (root / "precious.txt").write_text("keep")
    monkeypatch.chdir(root / "sub")
    return root


@pytest.mark.parametrize("target", ["", " ", ".", "..", "./", "CHECKOUT"])
def test_folder_outputs_refuse_the_current_folder_and_its_parents(checkout, target):
    target = str(checkout) if target == "CHECKOUT" else target
    with pytest.raises(OutputError):
        with atomic_folder(target) as tmp:
            open(os.path.join(tmp, "x"), "w").close()
    with pytest.raises(OutputError):
        check_output(target, name="out", overwrite=True, folder=True)
    assert (checkout / "precious.txt").read_text() == "keep" and (checkout / "sub").is_dir()


def test_an_empty_file_output_is_refused(checkout):
    with pytest.raises(OutputError, match="empty path"):
        with atomic_path(""):
            pass
    with pytest.raises(OutputError, match="empty path"):
        check_output("", name="--results")


def test_an_empty_results_path_names_the_flag(checkout, capsys):
    """evaluate's refusal names --results, as sample's names --out (not a generic `output`)."""
    assert evaluate.main(["--results", ""]) == 1
    assert capsys.readouterr().err == "error: --results: empty path\n"


def test_a_sibling_folder_is_still_written(checkout):
    with atomic_folder(str(checkout / "out")) as tmp:
        open(os.path.join(tmp, "x"), "w").close()
    assert (checkout / "out" / "x").exists()


def test_convert_with_an_empty_output_leaves_the_folder_alone(checkout, capsys):
    from convert.__main__ import main
    from animatediff_jax.miniature.shipped import paths, MINIATURE
    assert main(["export-unet", paths(MINIATURE)["base"], ""]) in (1, 2)
    assert capsys.readouterr().err.count("\n") == 1
    assert (checkout / "precious.txt").read_text() == "keep" and (checkout / "sub").is_dir()


DATASET_CLIS = {"precompute": ["--source", "s", "--pretrained_model_path", "p"], "build": ["procedural"]}


def _dataset_cli(cli: str, data_dir: str, name: str) -> int:
    """`python -m animatediff_jax.data.<cli>` with these outputs (its `__main__`'s run_cli)."""
    from animatediff_jax.data import build, precompute
    from animatediff_jax.errors import run_cli
    argv = [*DATASET_CLIS[cli], "--data_dir", data_dir, "--name", name]
    return precompute.main(argv) if cli == "precompute" else run_cli(lambda: build.main(argv) and 0)


@pytest.mark.parametrize("cli", DATASET_CLIS)
def test_dataset_outputs_are_refused_before_any_work(checkout, monkeypatch, capsys, cli):
    """An empty --data_dir wrote into the current folder (an empty --name: a dataset without a config name),
    and one below a file failed with a traceback after the models were loaded (or the videos read)."""
    from animatediff_jax import loading
    from animatediff_jax.data import procedural_tfds
    monkeypatch.setattr(loading, "read_base", lambda *a, **k: pytest.fail("loaded a model"))
    monkeypatch.setattr(procedural_tfds.ProceduralVideos, "download_and_prepare",
                        lambda *a, **k: pytest.fail("built"))
    assert _dataset_cli(cli, "", "n") == 2
    assert capsys.readouterr().err == "error: --data_dir: empty path\n"
    assert _dataset_cli(cli, "out", "") == 2
    assert capsys.readouterr().err == ("error: --name: must be a TFDS config name: up to 100 ASCII letters, "
                                       "digits and _ . + -, starting with a letter, digit or _, got ''\n")
    (checkout / "afile").write_text("x")
    below = checkout / "afile" / "tfds"
    assert _dataset_cli(cli, str(below), "n") == 1
    assert capsys.readouterr().err == f"error: --data_dir {below}: {checkout / 'afile'} is a file, not a folder\n"
    assert sorted(os.listdir(checkout)) == ["afile", "precious.txt", "sub"] and not os.listdir(checkout / "sub")


def test_a_fifo_is_never_written_over(tmp_path):
    """A device, FIFO or socket (a FIFO stands in for /dev/full) is refused by every writer, with
    overwrite too: the temporary file renamed onto it once replaced /dev/full by a regular file."""
    fifo = tmp_path / "out.gif"
    os.mkfifo(fifo)
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    for refuse in (lambda: check_output(str(fifo), name="out", overwrite=True),
                   lambda: check_output(str(fifo), name="out", overwrite=True, folder=True),
                   lambda: atomic_path(str(fifo)).__enter__(), lambda: atomic_folder(str(fifo)).__enter__(),
                   lambda: video.write_gif(fifo, frames, overwrite=True),
                   lambda: video.write_png_frames(fifo, frames, overwrite=True)):
        with pytest.raises(OutputError, match="not a regular file or folder"):
            refuse()
    assert fifo.is_fifo() and os.listdir(tmp_path) == ["out.gif"]


def _link(tmp_path, name: str, folder: bool = False):
    real, link = tmp_path / f"real-{name}", tmp_path / name
    real.mkdir() if folder else real.write_bytes(b"old")
    link.symlink_to(real)
    return real, link


def test_a_symlinked_output_is_written_through_by_every_writer(tmp_path):
    """The link is kept and its target replaced (`outputs.target`), by outputs.py and video.py alike."""
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    real, link = _link(tmp_path, "a.bin")
    with atomic_path(str(link)) as tmp:
        open(tmp, "wb").write(b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"
    real, link = _link(tmp_path, "b.gif")
    video.write_gif(link, frames, overwrite=True)
    assert link.is_symlink() and real.read_bytes()[:3] == b"GIF"
    real, link = _link(tmp_path, "frames", folder=True)
    video.write_png_frames(link, frames, overwrite=True)
    assert link.is_symlink() and sorted(os.listdir(real)) == ["00000.png", "00001.png"]


@pytest.mark.parametrize("free, expected", [(0, "cannot write (disk full, 0 bytes left: 49152 requested and 38880 "
                                                "written)"),
                                            (10 << 30, "cannot write (49152 requested and 38880 written)")])
def test_a_short_write_without_errno_says_disk_full_when_the_disk_is(tmp_path, monkeypatch, free, expected):
    """numpy's tofile and other libraries report a short write as a bare OSError (no errno): a stranger
    saw '49152 requested and 38880 written' on a full disk. The free space where the output lives decides."""
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=free))
    out = tmp_path / "video.npy"
    with pytest.raises(OutputError) as e:
        with atomic_path(str(out)):
            raise OSError("49152 requested and 38880 written")
    assert str(e.value) == f"{out}: {expected}"
    assert os.listdir(tmp_path) == []


def test_enospc_says_disk_full(tmp_path):
    with pytest.raises(OutputError, match=r"cannot write \(disk full: No space left on device\)"):
        with atomic_path(str(tmp_path / "x.bin")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
