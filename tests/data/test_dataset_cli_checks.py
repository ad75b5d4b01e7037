"""data.precompute and data.build check their input paths before any model loads or video is read (a
missing --source was a TFDS traceback after the base had loaded, a missing --csv a FileNotFoundError),
and refuse to build over an existing dataset unless --overwrite (TFDS skipped the build and the command
reported the old dataset as written); an --overwrite build replaces it whole, and a failed one leaves it."""
import importlib.util
import os
import shutil

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from animatediff_jax import loading
from animatediff_jax.data import build, precompute, procedural_tfds
from animatediff_jax.data.pipeline import VIDEO_FEATURES, load_source
from animatediff_jax.errors import InputError, run_cli
from animatediff_jax.miniature.shipped import MINIATURE

BASE = f"{MINIATURE}/base"


def _build(*argv) -> int:
    return run_cli(lambda: build.main(list(argv)) and 0)  # as its __main__ runs it


def _procedural(data_dir, name, n=3, *flags) -> int:
    return _build("procedural", "--num_examples", str(n), "--frames", "2", "--size", "16", "--data_dir", str(data_dir),
                  "--name", name, *flags)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("src")
    assert _procedural(data_dir, "src") == 0
    return str(data_dir / "procedural_videos" / "src" / "1.0.0")


@pytest.fixture
def no_loading(monkeypatch):
    monkeypatch.setattr(loading, "read_base", lambda *a, **k: pytest.fail("loaded a model"))
    monkeypatch.setattr(procedural_tfds.ProceduralVideos, "download_and_prepare", lambda *a, **k: pytest.fail("built"))


@pytest.mark.parametrize("flag,value,problem", [
    ("--source", "nowhere", "not found"),
    ("--source", "EMPTY", "not a built TFDS dataset (no dataset_info.json"),
    ("--pretrained_model_path", "nowhere", "not found"),
    ("--tokenizer_path", "nowhere", "not found"),
    ("--tokenizer_path", "EMPTY", "no CLIP tokenizer there"),
])
def test_precompute_input_paths_are_one_line_before_the_model_loads(tmp_path, capsys, no_loading, source, flag,
                                                                     value, problem):
    (tmp_path / "empty").mkdir()
    value = str(tmp_path / "empty") if value == "EMPTY" else value
    flags = {"--source": source, "--pretrained_model_path": BASE, flag: value}
    argv = [a for f, v in flags.items() for a in (f, v)]
    assert precompute.main([*argv, "--data_dir", str(tmp_path / "tfds"), "--name", "n"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag} {value}: {problem}") and err.count("\n") == 1, err
    assert not (tmp_path / "tfds").exists()


@pytest.mark.parametrize("flag", ["--pretrained_model_path", "--tokenizer_path"])
def test_precompute_refuses_a_corrupt_tokenizer_before_the_model_loads(tmp_path, capsys, no_loading, source, flag):
    base = tmp_path / "base"
    base.mkdir()
    for name in ("unet", "text_encoder", "vae"):
        os.link(f"{BASE}/{name}.safetensors", base / f"{name}.safetensors")
    shutil.copytree(f"{BASE}/tokenizer", base / "tokenizer")
    (base / "tokenizer" / "vocab.json").write_text("{")
    extra = ["--tokenizer_path", str(base / "tokenizer")] if flag == "--tokenizer_path" else []
    assert precompute.main(["--source", source, "--pretrained_model_path", str(base), *extra,
                            "--data_dir", str(tmp_path / "tfds"), "--name", "n"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag} {base}/tokenizer/vocab.json: not a readable tokenizer file: ")
    assert err.count("\n") == 1, err


@pytest.mark.parametrize("csv,video_dir,message", [
    ("nowhere.csv", "videos", "--csv nowhere.csv: not found"),
    ("videos", "videos", "--csv videos: not a file"),
    ("r.csv", "nowhere", "--video_dir nowhere: not found"),
    ("r.csv", "r.csv", "--video_dir r.csv: not a folder"),
    ("r.csv", "videos", "r.csv: no usable video in videos (skipped: the CSV has no rows)"),  # read: no leftovers
])
def test_build_input_paths_are_one_line_before_any_video_is_read(tmp_path, monkeypatch, capsys, csv, video_dir,
                                                                 message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "videos").mkdir()
    (tmp_path / "r.csv").write_text("videoid,name\n")
    assert _build("webvid", "--csv", csv, "--video_dir", video_dir, "--data_dir", "tfds", "--name", "w") == 1
    err = capsys.readouterr().err  # TFDS's progress bars before it, where the build started
    assert err.endswith(f"error: {message}\n") and err.count("error") == 1, err
    assert not (tmp_path / "tfds").exists()


def _leftovers(folder):
    return sorted(n for n in os.listdir(folder) if n != "1.0.0")


def test_build_refuses_an_existing_dataset_unless_overwrite(tmp_path, capsys, monkeypatch):
    dataset = tmp_path / "procedural_videos" / "shapes" / "1.0.0"
    assert _procedural(tmp_path, "shapes", 3) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"writing {dataset} ...\n") and out.endswith(f"dataset written to {dataset}\n"), out
    assert ".tfds" not in out and "prepared" not in out, out
    assert _procedural(tmp_path, "shapes", 4) == 1
    out, err = capsys.readouterr()
    assert err == f"error: {dataset}: already exists; pass --overwrite to replace it\n" and "written" not in out
    assert len(load_source(str(dataset))) == 3

    def fail(*a, **k):
        raise RuntimeError("the build broke")
    with monkeypatch.context() as m:  # a failed rebuild leaves the old dataset, and nothing beside it
        m.setattr(procedural_tfds.ProceduralVideos, "_generate_examples", fail)
        with pytest.raises(RuntimeError, match="the build broke"):
            _procedural(tmp_path, "shapes", 4, "--overwrite")
    assert len(load_source(str(dataset))) == 3 and not _leftovers(dataset.parent)
    assert _procedural(tmp_path, "shapes", 4, "--overwrite") == 0
    assert len(load_source(str(dataset))) == 4 and not _leftovers(dataset.parent)


def test_precompute_refuses_an_existing_dataset_unless_overwrite(tmp_path, capsys, source):
    other = tmp_path / "src"
    assert _procedural(other, "four", 4) == 0
    dataset = tmp_path / "tfds" / "precomputed_latents" / "p" / "1.0.0"

    def run(src, *flags):
        capsys.readouterr()
        rc = precompute.main(["--source", src, "--pretrained_model_path", BASE, "--data_dir", str(tmp_path / "tfds"),
                              "--name", "p", "--batch_size", "2", *flags])
        return (rc, *capsys.readouterr())
    assert run(source)[0] == 0 and len(load_source(str(dataset))) == 3
    rc, out, err = run(str(other / "procedural_videos" / "four" / "1.0.0"))
    assert rc == 1 and err == f"error: {dataset}: already exists; pass --overwrite to replace it\n", err
    assert "written" not in out and len(load_source(str(dataset))) == 3
    rc, out, _ = run(str(other / "procedural_videos" / "four" / "1.0.0"), "--overwrite")
    # only the dataset's own folder is named: not TFDS's lines naming the temporary one it is built in
    assert rc == 0 and out == f"writing {dataset} ...\npre-computed dataset written to {dataset}\n", out
    assert len(load_source(str(dataset))) == 4 and (dataset / "null_text_embedding.npy").is_file()
    assert not _leftovers(dataset.parent)
    # a stranger gave precompute its own output as --source: KeyError 'video' traceback
    rc = precompute.main(["--source", str(dataset), "--pretrained_model_path", BASE, "--data_dir",
                          str(tmp_path / "tfds"), "--name", "again"])
    err = capsys.readouterr().err
    assert rc == 1 and err == (f"error: --source {dataset}: its examples hold ['caption', 'input_ids', "
                               "'latent_logvar', 'latent_mean', 'source_index', 'text_embedding'], not video clips "
                               "(data.build)\n"), err
    assert not (tmp_path / "tfds" / "precomputed_latents" / "again").exists()
    with pytest.raises(InputError, match=r"'text_embedding'\], not video clips \(data.build\)"):
        load_source(str(dataset), needs=(VIDEO_FEATURES,))


@pytest.mark.parametrize("network,bad", [("vae", np.nan), ("text_encoder", np.inf)])
def test_precompute_refuses_a_base_holding_nonfinite_weights_before_writing(tmp_path, capsys, source, network, bad):
    """It only warned, then wrote an all-NaN dataset and exited 0; then the refusal came after that warning."""
    base = tmp_path / "base"
    shutil.copytree(BASE, base)
    file = str(base / f"{network}.safetensors")
    with safe_open(file, "np") as f:
        metadata = f.metadata()  # the converted base's configs
    weights = load_file(file)
    weights[sorted(weights)[0]].flat[0] = bad
    save_file(weights, file, metadata)
    rc = precompute.main(["--source", source, "--pretrained_model_path", str(base), "--data_dir",
                          str(tmp_path / "tfds"), "--name", "p"])
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err  # was preceded by the loader's warning naming the file (the cast's NaN report)
    err = err[0]
    assert rc == 1 and err.startswith(f"error: --pretrained_model_path {base} ({network}): 1 tensor holds NaN/Inf") \
        and err.endswith("; every latent or embedding pre-computed with it would come out NaN"), err
    assert not (tmp_path / "tfds").exists()


@pytest.mark.parametrize("flags,code,message", [
    (["--size", "7"], 2, "--size: must be ≥ 16, got 7"),
    (["--size", "33"], 2, "--size 33: must be a multiple of 8, the VAE's downsampling factor (as "
                          "train_data.sample_size must be), e.g. 32"),
    (["--style", "nope"], 2, "--style: invalid choice: 'nope'"),
    (["--num_examples", "2", "--num_shards", "8"], 2, "--num_shards 8: more than --num_examples 2"),
    (["--frames", "100000", "--size", "4096"], 2, "--frames 100000 --size 4096: one clip is 4687.5 GiB"),
    (["--data_dir", "gs://bucket/tfds"], 2, "--data_dir: gs://bucket/tfds: not a local path (a URL would be "
                                            "written here, as a folder named gs:); write locally, then copy it"),
])
def test_build_procedural_flags_are_one_line_before_any_work(tmp_path, monkeypatch, capsys, no_loading, flags, code,
                                                             message):
    """Were a ValueError / AssertionError (TFDS) / numpy ValueError / gcsfs ImportError traceback."""
    monkeypatch.chdir(tmp_path)
    assert _build("procedural", "--data_dir", "tfds", "--name", "p", *flags) == code
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert os.listdir(tmp_path) == []


NAME_RULE = "must be a TFDS config name: up to 100 ASCII letters, digits and _ . + -, starting with a letter, digit or _"


@pytest.mark.parametrize("command", ["webvid", "procedural", "precompute"])
@pytest.mark.parametrize("name", ["bad/name", "..", "", "bad name!", ".hidden", "+x", "a:b", "café", "n" * 101])
def test_name_must_be_a_tfds_config_name(tmp_path, monkeypatch, capsys, no_loading, command, name):
    """`--name bad/name` was accepted and wrote `<builder>/bad/name/1.0.0`; `--name 'bad name!'` wrote
    `procedural_videos/bad name!/1.0.0`, a config name TFDS cannot parse (`dataset/config` names are [\\w+.-])."""
    monkeypatch.chdir(tmp_path)
    outputs = ["--data_dir", "tfds", "--name", name]
    rc = (_build("procedural", *outputs) if command == "procedural" else
          _build("webvid", "--csv", "r.csv", "--video_dir", "v", *outputs) if command == "webvid" else
          precompute.main(["--source", "src", "--pretrained_model_path", BASE, *outputs]))
    err = capsys.readouterr().err
    assert rc == 2 and err == f"error: --name: {NAME_RULE}, got {name!r}\n"
    assert os.listdir(tmp_path) == []


def test_a_tfds_config_name_may_hold_dots_plus_and_dashes(tmp_path):
    assert _procedural(tmp_path, "_v1.0-a+b", 1) == 0
    assert len(load_source(str(tmp_path / "procedural_videos" / "_v1.0-a+b" / "1.0.0"))) == 1


@pytest.mark.parametrize("content,problem", [
    (b"videoid,name,page_dir\n1,caf\xe9 scene,x\n", "not UTF-8 text (byte 0xe9 at offset 27)"),
    (b"videoid,name\n" + b"1,a\n" * 5000 + b"2,\xff\n", "not UTF-8 text (byte 0xff at offset 20015)"),
    ("videoid,name\n1,a\n".encode("utf-16-le"), "not UTF-8 text (byte 0x00 at offset 1)"),
    (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "not UTF-8 text (byte 0x89 at offset 0)"),
    (b'videoid,name\n"' + b"x" * 200_000, "not a readable CSV (line 2: field larger than field limit (131072))"),
], ids=["latin-1", "latin-1 far in", "utf-16", "binary", "unclosed quote"])
def test_build_refuses_a_csv_that_is_not_utf8_csv_text(tmp_path, monkeypatch, capsys, no_loading, content, problem):
    """Were a UnicodeDecodeError (a csv.Error) traceback from webvid.read_csv; UTF-16 read as a CSV without columns."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "videos").mkdir()
    (tmp_path / "r.csv").write_bytes(content)
    assert _build("webvid", "--csv", "r.csv", "--video_dir", "videos", "--data_dir", "tfds", "--name", "w") == 1
    assert capsys.readouterr().err == f"error: --csv r.csv: {problem}\n"
    assert sorted(os.listdir(tmp_path)) == ["r.csv", "videos"]


@pytest.mark.parametrize("file", ["dataset_info.json", "features.json", "metadata.json"])
@pytest.mark.parametrize("content,problem", [
    (b'{"name": "caf\xe9"}', "not UTF-8 text (byte 0xe9 at offset 13)"),
    (b'{"name": ', "Expecting value: line 1 column 10 (char 9)"),
], ids=["latin-1", "truncated"])
def test_precompute_refuses_a_source_whose_json_files_are_unreadable(tmp_path, capsys, no_loading, source, file,
                                                                     content, problem):
    """Were a UnicodeDecodeError / protobuf ParseError traceback from TFDS (training reads its dataset_dir the same)."""
    copy = shutil.copytree(source, tmp_path / "src")
    (copy / file).write_bytes(content)
    assert precompute.main(["--source", str(copy), "--pretrained_model_path", BASE, "--data_dir",
                            str(tmp_path / "tfds"), "--name", "n"]) == 1
    assert capsys.readouterr().err == f"error: --source {copy / file}: not a readable TFDS dataset file: {problem}\n"
    assert not (tmp_path / "tfds").exists()


@pytest.mark.parametrize("file,content,problem", [
    ("merges.txt", b"#version: 0.2\ncaf\xe9 x\n", "byte 0xe9 at offset 17"),
    ("vocab.json", b"\x00\x01\x02", "byte 0x00 at offset 0"),
], ids=["latin-1 merges", "binary vocab"])
def test_precompute_names_a_tokenizer_file_that_is_not_text(tmp_path, capsys, no_loading, source, file, content,
                                                           problem):
    """merges.txt not UTF-8 was `<folder>: not a usable CLIP tokenizer: Error while initializing BPE: stream did
    not contain valid UTF-8`, not naming the file or where."""
    tokenizer = shutil.copytree(f"{BASE}/tokenizer", tmp_path / "tok")
    (tokenizer / file).write_bytes(content)
    assert precompute.main(["--source", source, "--pretrained_model_path", BASE, "--tokenizer_path", str(tokenizer),
                            "--data_dir", str(tmp_path / "tfds"), "--name", "n"]) == 1
    assert capsys.readouterr().err == (f"error: --tokenizer_path {tokenizer / file}: not a readable tokenizer file: "
                                       f"not UTF-8 text ({problem})\n")


OUT = ["--data_dir", "tfds", "--name", "w"]


@pytest.mark.parametrize("argv, line", [
    (["webvid", "--csv", "", "--video_dir", "v", *OUT], "--csv: empty path"),
    (["webvid", "--csv", "r.csv", "--video_dir", "", *OUT], "--video_dir: empty path"),
    (["webvid", "--csv", "r.csv", "--video_dir", "v", "--size", "20", *OUT], "--size 20: must be a multiple of 8"),
    (["procedural", "--data_dir", "", "--name", "w"], "--data_dir: empty path"),
])
def test_build_empty_paths_and_sizes_are_one_line(tmp_path, monkeypatch, capsys, no_loading, argv, line):
    """An empty --csv was '--csv : not found'; --size 33 built clips no model encodes whole."""
    monkeypatch.chdir(tmp_path)
    assert _build(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {line}") and err.count("\n") == 1, err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("flag", ["--source", "--pretrained_model_path", "--tokenizer_path"])
def test_precompute_empty_paths_are_one_line(tmp_path, capsys, no_loading, flag):
    flags = {"--source": "src", "--pretrained_model_path": BASE, flag: ""}
    argv = [a for f, v in flags.items() for a in (f, v)]
    assert precompute.main([*argv, "--data_dir", str(tmp_path / "tfds"), "--name", "n"]) == 2
    assert capsys.readouterr().err == f"error: {flag}: empty path\n"


@pytest.mark.parametrize("missing", ["tensorflow_datasets", "array_record"])
@pytest.mark.parametrize("command", ["build", "precompute"])
def test_without_the_data_extra_is_one_line_naming_it(tmp_path, monkeypatch, capsys, no_loading, command, missing):
    """Was a ModuleNotFoundError traceback (train said it in one line: the same check, data.require_data_extra)."""
    monkeypatch.chdir(tmp_path)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a))
    outputs = ["--data_dir", "tfds", "--name", "n"]
    rc = (_build("procedural", *outputs) if command == "build" else
          precompute.main(["--source", "src", "--pretrained_model_path", BASE, *outputs]))
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith(f"error: {missing}: not installed, but needed to ") \
        and err.endswith(' (pip install -e ".[data]")\n') and err.count("\n") == 1, err
    assert os.listdir(tmp_path) == []
