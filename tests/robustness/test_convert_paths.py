"""`python -m convert`'s paths: an output that is not a regular file or folder (a FIFO here, standing in
for /dev/full), an output that is one of the inputs, a name whose suffix contradicts what is written, a
mistyped local path taken for a hub id, flags a converted file cannot use. Each is one `error:` line
before any work, nothing written."""
import os
import time

import pytest

from animatediff_jax.hub_ids import is_hub_id
from animatediff_jax.miniature.shipped import MINIATURE, motion_path
from convert.__main__ import main
from tests.convert.motion_helpers import original_state_dict, random_adapter, write_original
from tests.robustness.convert_fixtures import flax_file, snapshot

MOTION = motion_path(MINIATURE, "B")
BASE = os.path.join(MINIATURE, "base")
UNET = os.path.join(BASE, "unet.safetensors")
LORA = os.path.join(MINIATURE, "lora_checker.safetensors")


def _line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_fifo_output_is_refused_and_kept(tmp_path, capsys, overwrite):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert main(["motion", MOTION, str(fifo), *overwrite]) == 1
    assert _line(capsys) == (f"error: {fifo}: exists and is not a regular file or folder (a device, FIFO or "
                             "socket); refusing to write over it")
    assert fifo.is_fifo() and os.listdir(tmp_path) == ["fifo"]


def test_a_symlinked_output_is_written_through(tmp_path, capsys):
    """The link is kept and its target replaced (as `cp` and `>` do), not the link replaced by a file."""
    real = tmp_path / "real.safetensors"
    real.write_text("old")
    link = tmp_path / "link.safetensors"
    link.symlink_to(real)
    assert main(["motion", MOTION, str(link)]) == 1
    assert _line(capsys) == f"error: {link}: already exists; pass --overwrite to replace it"
    assert main(["motion", MOTION, str(link), "--overwrite"]) == 0
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes()[:8] != b"old" and sorted(os.listdir(tmp_path)) == ["link.safetensors", "real.safetensors"]


@pytest.mark.parametrize("argv,message", [
    (["motion", "{mm}", "{mm}", "--overwrite"], "{mm} (output): is the input {mm} (source)"),
    (["merge", "{a}", "{a}", "{b}", "--overwrite"], "{a} (output): is the input {a} (inputs)"),
    (["lora", "{base}", "{base}", "--lora", "{b}", "--overwrite"], "{base} (output): is the input {base} (base)"),
    (["lora", "{a}", "{base}", "--lora", "{c}:0.5", "--overwrite"], "{base} (output): holds the input {c} (--lora)"),
    (["export-unet", "{unet}", "{base}", "--overwrite"], "{base} (out_dir): holds the input {unet} (params)"),
    (["export-motion", "{mm}", "{d}", "--format", "diffusers", "--overwrite"],
     "{d} (output): holds the input {mm} (params)"),
    (["lora", "{base}", "{base}/sub", "--lora", "{b}"], "{base}/sub (output): is inside the input folder {base} (base)"),
    (["lora", "{base}", "{base}/unet", "--lora", "{b}"], "{base}/unet (output): is inside the input folder {base} (base)"),
    (["base", "{base}", "{base}/flax"], "{base}/flax (out_dir): is inside the input folder {base} (source)"),
])
def test_an_output_that_is_an_input_is_refused(tmp_path, capsys, argv, message):
    d = tmp_path / "d"
    base = d / "base"
    base.mkdir(parents=True)
    names = {"d": str(d), "base": str(base), "unet": flax_file(str(base / "unet.safetensors"), 1.0),
             "a": flax_file(str(d / "a.safetensors"), 1.0), "b": flax_file(str(d / "b.safetensors"), 2.0),
             "c": flax_file(str(base / "c.safetensors"), 2.0)}
    names["mm"] = str(d / "mm.safetensors")
    with open(MOTION, "rb") as src, open(names["mm"], "wb") as dst:
        dst.write(src.read())
    before = snapshot(str(tmp_path))
    assert main([a.format(**names) for a in argv]) == 1
    assert _line(capsys) == f"error: {message.format(**names)}; write the output elsewhere"
    assert snapshot(str(tmp_path)) == before


@pytest.mark.parametrize("argv,message", [
    (["export-motion", MOTION, "e4.bin"], "e4.bin: the output is a folder, but the name ends in .bin like a weights "
     "file; give a folder name without that suffix, or a name ending in .ckpt, .pt, .pth, .safetensors for a file"),
    (["export-unet", UNET, "eu5.safetensors"], "eu5.safetensors: the output is a folder, but the name ends in "
     ".safetensors like a weights file; give a folder name without that suffix"),
    (["base", "model.ckpt", "out.ckpt"], "out.ckpt: the output is a folder, but the name ends in .ckpt like a weights "
     "file; give a folder name without that suffix"),
    (["export-motion", MOTION, "out.txt"], "out.txt: the output is a folder, but the name ends in .txt like a file; "
     "give a folder name without that suffix, or a name ending in .ckpt, .pt, .pth, .safetensors for a file"),
    (["base", "model.ckpt", "out.json"], "out.json: the output is a folder, but the name ends in .json like a file; "
     "give a folder name without that suffix"),
    (["motion", MOTION, "o7.txt"], "o7.txt: the output is a .safetensors file; give a name ending in .safetensors"),
    (["lora", UNET, "o.txt", "--lora", LORA], "o.txt: the output is a .safetensors file; give a name ending in "
     ".safetensors"),
    (["merge", "m.bin", UNET, UNET], "m.bin: the output is a .safetensors file; give a name ending in .safetensors"),
    (["controlnet", UNET, "c.ckpt"], "c.ckpt: the output is a .safetensors file; give a name ending in .safetensors"),
    (["export-motion", MOTION, "e.txt", "--format", "original"],
     "e.txt: the output is a .ckpt or .pt or .pth or .safetensors file; give a name ending in one of .ckpt, .pt, "
     ".pth, .safetensors"),
])
def test_an_output_name_contradicting_what_is_written_is_refused(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    assert _line(capsys) == f"error: {message}"
    assert os.listdir(tmp_path) == []


def test_a_mistyped_local_path_is_not_a_hub_id(tmp_path, monkeypatch, capsys):
    """`runs/mini_typo` with a local `runs/` folder: 'no such file' at once, the hub never asked."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert not is_hub_id("runs/mini_typo") and not is_hub_id("~/mini_typo") and is_hub_id("owner/name")

    def no_hub(*a, **k):
        raise AssertionError("the hub was contacted")
    monkeypatch.setattr("huggingface_hub.snapshot_download", no_hub)
    monkeypatch.setattr("huggingface_hub.HfApi.model_info", no_hub)
    start = time.monotonic()
    assert main(["inspect", "runs/mini_typo"]) == 1
    assert _line(capsys) == "error: runs/mini_typo: no such file"
    assert main(["motion", "runs/mini_typo", "out.safetensors"]) == 1
    assert _line(capsys) == "error: runs/mini_typo: no such file or folder (and not a hub id 'owner/name')"
    assert time.monotonic() - start < 10 and os.listdir(tmp_path) == ["runs"]


def test_config_flags_on_converted_motion_params_are_refused(tmp_path, capsys):
    out = tmp_path / "e.ckpt"
    assert main(["export-motion", MOTION, str(out), "--heads", "8", "--norm-groups", "32"]) == 2
    assert _line(capsys) == (f"error: --heads, --norm-groups: not used: {MOTION} holds converted motion params "
                             "whose config sets them (heads 4, norm groups 16, max_seq_length 24)")
    assert not out.exists()


def test_indivisible_channels_name_only_what_does_not_divide(tmp_path, capsys):
    src = tmp_path / "e1.ckpt"
    write_original(original_state_dict(random_adapter(channels=(32, 64), heads=2, groups=8)), src)
    assert main(["motion", str(src), str(tmp_path / "x.safetensors"), "--heads", "3", "-q"]) == 1
    assert _line(capsys) == f"error: {src}: 32 channels are not divisible by heads=3"
    assert main(["motion", str(src), str(tmp_path / "x.safetensors"), "--heads", "3", "--norm-groups", "5", "-q"]) == 1
    assert _line(capsys) == f"error: {src}: 32 channels are not divisible by heads=3 or norm_num_groups=5"


def test_a_folder_given_for_a_params_file_says_what_was_expected(tmp_path, capsys):
    assert main(["export-unet", BASE, str(tmp_path / "eu")]) == 1
    assert _line(capsys) == f"error: {BASE}: is a folder; expected a .safetensors file"


@pytest.mark.parametrize("base,what", [
    (MOTION, "a converted motion module (v2)"),
    (os.path.join(BASE, "vae.safetensors"), "a converted VAE alone (Flax params)"),
    (LORA, "not a file written by `python -m convert`"),
])
def test_lora_names_a_base_that_is_no_unet_not_the_lora(tmp_path, capsys, base, what):
    """Found by a stranger: a motion module or a VAE given as BASE was reported as '70 LoRA modules target
    layers the model does not have', blaming the LoRA."""
    assert main(["lora", base, str(tmp_path / "o.safetensors"), "--lora", LORA]) == 1
    assert _line(capsys) == (f"error: {base}: {what}, not a converted UNet; BASE is a folder written by `python -m "
                             "convert base`, or the unet.safetensors in one")
    assert os.listdir(tmp_path) == []


def test_lora_names_a_base_folder_network_of_the_wrong_kind(tmp_path, capsys):
    folder = tmp_path / "base"
    folder.mkdir()
    for name in ("unet", "vae", "text_encoder"):
        os.link(os.path.join(BASE, f"{name}.safetensors"), folder / f"{name}.safetensors")
    (folder / "text_encoder.safetensors").unlink()
    os.link(os.path.join(BASE, "vae.safetensors"), folder / "text_encoder.safetensors")
    assert main(["lora", str(folder), str(tmp_path / "out"), "--lora", LORA]) == 1
    assert _line(capsys) == (f"error: {folder}/text_encoder.safetensors: a converted VAE alone (Flax params), not a "
                             "converted text encoder; BASE is a folder written by `python -m convert base`, or the "
                             "unet.safetensors in one")
    assert sorted(os.listdir(tmp_path)) == ["base"]


def test_lora_shows_its_writing_progress_unless_quiet(tmp_path, capsys):
    """-q was taken by merge, motion and export-motion but refused by lora (whose writes of a full base
    take a while and showed nothing)."""
    assert main(["lora", BASE, str(tmp_path / "loud"), "--lora", LORA]) == 0
    assert "writing unet" in capsys.readouterr().err
    assert main(["lora", BASE, str(tmp_path / "quiet"), "--lora", LORA, "-q"]) == 0
    assert capsys.readouterr().err == ""
