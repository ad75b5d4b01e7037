"""A gs:// --workdir: a TPU slice's workers share it. It failed with an ImportError traceback (gcsfs) at the
first checkpoint lookup, and the exports, GIFs and TensorBoard events went to a local folder named `gs:`
(os.makedirs of the URL). Now the scheme and its package are checked first, and every file other than the
checkpoints is staged locally and copied up (training/remote_workdir.py)."""
import os
import uuid

import fsspec
import pytest

from animatediff_jax import train
from animatediff_jax.training import remote_workdir, trainer
from animatediff_jax.training.config import load_config
from tests.training import tiny


@pytest.fixture
def memory_url():
    url = f"memory://run-{uuid.uuid4().hex}"
    yield url
    fs, root = fsspec.core.url_to_fs(url)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _files(url: str) -> list[str]:
    fs, root = fsspec.core.url_to_fs(url)
    return sorted(os.path.relpath(p, root) for p in fs.find(root))


@pytest.mark.parametrize("workdir, problem", [
    ("s3://bucket/run", "--workdir s3://bucket/run: a workdir is a local folder or a gs:// (Cloud Storage) path"),
    ("gs://bucket/run", "--workdir gs://bucket/run: writing to Cloud Storage needs gcsfs, which is not installed "
                        "(pip install -e \".[gcs]\"; tpu/install.sh installs it)"),
    ("gs:/bucket/run", "--workdir gs:/bucket/run: starts like a URL but is not one (scheme://...): a '/' missing? "
                       "A Cloud Storage workdir is gs://bucket/path; name a local folder without a ':'"),
    ("GS://bucket/run", "--workdir GS://bucket/run: a workdir is a local folder or a gs:// (Cloud Storage) path"),
    ("gs://", "--workdir gs://: names no bucket (gs://bucket/path)"),
])
def test_a_url_workdir_it_cannot_write_is_one_line_before_any_work(workdir, problem, tmp_path, monkeypatch, capsys):
    real_find_spec = remote_workdir.importlib.util.find_spec
    monkeypatch.setattr(remote_workdir.importlib.util, "find_spec",
                        lambda name: None if name == "gcsfs" else real_find_spec(name))
    monkeypatch.setattr(trainer, "train", lambda *a, **k: pytest.fail("training started"))
    overrides = tiny.overrides(tiny.write_tokenizer(tmp_path / "tok"))
    assert train.main(["--workdir", workdir, *overrides]) == 2
    assert capsys.readouterr().err == f"error: {problem}\n"
    assert not any(os.path.exists(name) for name in ("gs:", "s3:", "GS:"))


def test_local_workdirs_pass_and_are_not_staged(tmp_path):
    remote_workdir.check_workdir(str(tmp_path / "run"))
    staging = remote_workdir.Staging(str(tmp_path / "run"))
    assert staging.local == str(tmp_path / "run") and staging.upload() == []
    assert staging.remote(str(tmp_path / "run" / "x")) == str(tmp_path / "run" / "x")
    staging.close()
    assert not (tmp_path / "run").exists()  # close never removes a local workdir (it was never made here)


def test_staging_copies_new_and_changed_files_only(memory_url, monkeypatch):
    staging = remote_workdir.Staging(memory_url)
    assert staging.staged and os.path.isdir(staging.local)
    os.makedirs(os.path.join(staging.local, "samples", "step-1"))
    for name, text in (("config.json", "{}"), ("samples/step-1/00.gif", "gif")):
        with open(os.path.join(staging.local, name), "w") as f:
            f.write(text)
    assert sorted(staging.upload()) == [f"{memory_url}/config.json", f"{memory_url}/samples/step-1/00.gif"]
    assert staging.upload() == []
    with open(os.path.join(staging.local, "config.json"), "w") as f:
        f.write('{"changed": 1}')
    assert staging.upload() == [f"{memory_url}/config.json"]
    fs, root = fsspec.core.url_to_fs(memory_url)
    assert fs.cat_file(f"{root}/config.json") == b'{"changed": 1}'
    local = staging.local
    staging.close()
    assert not os.path.exists(local)


def test_a_failed_copy_names_the_workdir_and_the_file(memory_url, monkeypatch):
    staging = remote_workdir.Staging(memory_url)
    with open(os.path.join(staging.local, "config.json"), "w") as f:
        f.write("{}")
    fs, _ = fsspec.core.url_to_fs(memory_url)

    def denied(*a, **k):
        raise PermissionError("403 Forbidden")
    monkeypatch.setattr(type(fs), "put_file", denied)
    with pytest.raises(remote_workdir.OutputError, match=f"^--workdir {memory_url}: copying config.json there "
                                                         "failed: 403 Forbidden$"):
        staging.upload()
    staging.close()


def test_a_run_writes_everything_but_checkpoints_through_the_staging_folder(memory_url, tmp_path, monkeypatch, capsys):
    """The trainer end to end with its staged files going to an in-memory filesystem (orbax cannot write
    one, so the checkpoints stay in a local workdir): TensorBoard events, validation GIFs, the exports and
    config.json all arrive in the remote folder; nothing but the checkpoints (and the lock) is local."""
    real = remote_workdir.Staging
    monkeypatch.setattr(remote_workdir, "Staging", lambda workdir: real(memory_url))
    workdir = tmp_path / "run"
    overrides = tiny.overrides(tiny.write_tokenizer(tmp_path / "tok"))
    cfg = load_config(None, overrides + [
        "max_train_steps=2", "export_formats=[diffusers]", "validation_steps_tuple=[1]",
        'validation_data={"prompts": ["a b"], "num_inference_steps": 1, "video_length": 4}'])
    result = trainer.train(cfg, str(workdir))
    files = _files(memory_url)
    assert "config.json" in files and any(f.startswith("tensorboard/events.") for f in files), files
    assert trainer.exports_current(cfg, memory_url, 2) and not trainer.exports_current(cfg, memory_url, 1)
    assert any(f.startswith("samples/step-1/") and f.endswith(".gif") for f in files), files
    assert any(f.startswith("motion_adapter/") for f in files), files
    assert result["exported"] == [f"{memory_url}/motion_adapter"]
    assert sorted(p for p in os.listdir(workdir) if not p.startswith(".")) == ["checkpoints"]
    assert f"GIFs in {memory_url}/samples/step-1" in capsys.readouterr().out
