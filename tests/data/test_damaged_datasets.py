"""A built dataset that was damaged (an ArrayRecord shard deleted, truncated or overwritten with garbage, a
record corrupted inside its shard, features.json or dataset_info.json deleted) is one error line naming the
file, where data.precompute and training open it (before any model loads) and where a record is read; they
were array_record's RuntimeError, TFDS's ValueError or AssertionError tracebacks. And data.precompute's
--num_shards above the source's example count is refused before encoding (was TFDS's AssertionError after it)."""
import json
import os
import shutil

import pytest

from animatediff_jax import loading, train
from animatediff_jax.data import precompute
from animatediff_jax.data.pipeline import DAMAGED, InputPipeline, load_source
from animatediff_jax.errors import InputError
from animatediff_jax.training import trainer
from tests.data.test_dataset_cli_checks import BASE, _procedural
from tests.training import tiny

SHARD = "procedural_videos-train.array_record-{:05d}-of-00002"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """4 clips of 4 frames of 32² pixels (training's tiny clips) in 2 shards of 2."""
    data_dir = tmp_path_factory.mktemp("built")
    assert _procedural(data_dir, "d", 4, "--frames", "4", "--size", "32", "--num_shards", "2") == 0
    return data_dir / "procedural_videos" / "d" / "1.0.0"


def _truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)


def _corrupt_first_record(path):
    """Overwrite bytes inside the shard's first record (after the file's 64-byte signature block header and
    its first chunk's header): the shard still opens, that record fails its checksum when read."""
    with open(path, "r+b") as f:
        f.seek(200)
        f.write(b"\0" * 100)


DAMAGES = {  # name: (what to do to the dataset folder, the file the error names, its problem)
    "shard deleted": (lambda d: os.remove(d / SHARD.format(1)), SHARD.format(1),
                      "missing (one of the 2 shards dataset_info.json lists)"),
    "shard truncated to 1000 bytes": (lambda d: _truncate(d / SHARD.format(1), 1000), SHARD.format(1),
                                      "not a readable ArrayRecord shard (ArrayRecord file should be at least 64KB "
                                      "big)"),
    "shard's end cut off": (lambda d: _truncate(d / SHARD.format(0), os.path.getsize(d / SHARD.format(0)) - 100),
                            SHARD.format(0), "not a readable ArrayRecord shard ("),
    "shard overwritten with garbage": (lambda d: (d / SHARD.format(1)).write_bytes(
        bytes(range(256)) * (os.path.getsize(d / SHARD.format(1)) // 256)), SHARD.format(1),
        "not a readable ArrayRecord shard (Corrupted Riegeli/records file: "),
    "shard of another build": (lambda d: _another_build(d), SHARD.format(1),
                               "holds 2 records, dataset_info.json lists 3"),
    "features.json deleted": (lambda d: os.remove(d / "features.json"), "features.json", "missing"),
    "dataset_info.json deleted": (lambda d: os.remove(d / "dataset_info.json"), "dataset_info.json", "missing"),
}


def _another_build(folder):
    """dataset_info.json of a build of 5 examples (shards of 2 and 3) beside the shards of this one (2 and 2)."""
    info = json.loads((folder / "dataset_info.json").read_text())
    info["splits"][0]["shardLengths"] = ["2", "3"]
    (folder / "dataset_info.json").write_text(json.dumps(info))


def _damaged(built, tmp_path, damage):
    folder = shutil.copytree(built, tmp_path / "damaged")
    do, file, problem = DAMAGES[damage]
    do(folder)
    return folder, folder / file, problem


@pytest.fixture
def no_loading(monkeypatch):
    monkeypatch.setattr(loading, "read_base", lambda *a, **k: pytest.fail("loaded a model"))
    monkeypatch.setattr(trainer, "build_models", lambda *a, **k: pytest.fail("models built"))


@pytest.mark.parametrize("damage", DAMAGES)
def test_precompute_names_the_damaged_file_before_the_model_loads(built, tmp_path, capsys, no_loading, damage):
    folder, file, problem = _damaged(built, tmp_path, damage)
    capsys.readouterr()
    assert precompute.main(["--source", str(folder), "--pretrained_model_path", BASE, "--data_dir",
                            str(tmp_path / "tfds"), "--name", "n"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --source {file}: {problem}") and err.endswith(f"; {DAMAGED}\n"), err
    assert err.count("\n") == 1, err  # one line: no traceback
    assert not (tmp_path / "tfds").exists()


@pytest.mark.parametrize("damage", [*DAMAGES, "first record corrupted"])
def test_training_names_the_damaged_file_before_the_models_build(built, tmp_path, capsys, no_loading, damage):
    """The first record is read when the dataset is opened (its clip shape checked): a corrupt one is found then."""
    if damage == "first record corrupted":
        folder = shutil.copytree(built, tmp_path / "damaged")
        _corrupt_first_record(folder / SHARD.format(0))
        file, problem = folder / SHARD.format(0), "its record 0 (example 0) cannot be read (Corrupted Riegeli"
    else:
        folder, file, problem = _damaged(built, tmp_path, damage)
    train_data = {"source": "tfds", "dataset_dir": str(folder), "sample_size": 32, "sample_n_frames": 4}
    workdir = tmp_path / "w"
    capsys.readouterr()
    assert train.main(["--workdir", str(workdir), *tiny.overrides(tiny.write_tokenizer(tmp_path / "tok")),
                       f"train_data={json.dumps(train_data)}", "export_formats=[diffusers]"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: train_data.dataset_dir {file}: {problem}") and err.endswith(f"; {DAMAGED}\n"), err
    assert err.count("\n") == 1, err


def test_a_record_corrupted_inside_its_shard_is_named_when_read(built, tmp_path):
    """The shard opens (its index and footer are whole); the record's checksum fails only when the input
    pipeline (its prefetching thread) reads it."""
    folder = shutil.copytree(built, tmp_path / "damaged")
    _corrupt_first_record(folder / SHARD.format(1))
    source = load_source(str(folder), what="train_data.dataset_dir")
    assert len(source) == 4 and source[1]["index"] == 1
    pipeline = InputPipeline(source, batch_size=4, shuffle=False)
    shard = folder / SHARD.format(1)
    with pytest.raises(InputError, match=rf"^train_data.dataset_dir {shard}: its record 0 \(example 2\) cannot be "
                                         r"read \(Corrupted Riegeli/records file: .*\); the dataset is damaged"):
        next(pipeline)
    pipeline.close()
    with pytest.raises(IndexError):  # the end of the examples stays an IndexError, not a damaged shard
        source[4]


@pytest.mark.filterwarnings("ignore:prompt .* tokens long")
def test_precompute_names_a_record_corrupted_inside_its_shard_and_writes_nothing(built, tmp_path, capsys):
    folder = shutil.copytree(built, tmp_path / "damaged")
    _corrupt_first_record(folder / SHARD.format(1))
    capsys.readouterr()
    assert precompute.main(["--source", str(folder), "--pretrained_model_path", BASE, "--data_dir",
                            str(tmp_path / "tfds"), "--name", "n", "--batch_size", "2"]) == 1
    err = capsys.readouterr().err  # TFDS's progress bars before it
    line = err.splitlines()[-1]
    assert line.startswith(f"error: --source {folder / SHARD.format(1)}: its record 0 (example 2) cannot be read "
                           "(Corrupted Riegeli/records file: ") and line.endswith(f"; {DAMAGED}"), err
    assert err.count("error") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "tfds").exists(), "a half-written dataset was left"


def test_precompute_refuses_more_shards_than_examples_before_encoding(built, tmp_path, capsys, no_loading):
    """Encoded every clip, then failed with TFDS's AssertionError 'num_examples (4) < number_of_shards (5)'."""
    assert precompute.main(["--source", str(built), "--pretrained_model_path", BASE, "--data_dir",
                            str(tmp_path / "tfds"), "--name", "n", "--num_shards", "5"]) == 2
    assert capsys.readouterr().err == (f"error: --num_shards 5: more than the 4 examples of --source {built} "
                                       "(every ArrayRecord file needs an example)\n")
    assert not (tmp_path / "tfds").exists()
